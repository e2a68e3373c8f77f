"""Generation settings for on-policy pairs (shared by every sampler)."""

from __future__ import annotations

from dataclasses import dataclass

from sail.config import FieldError
from sail.sampling.registry import SAMPLERS


@dataclass
class SamplingConfig:
    """Generation settings for on-policy pairs."""

    max_new_tokens: int = 128
    """Longest response; sequences stop earlier at EOS when ``stop_at_eos``."""
    temperature: float = 1.0
    """Softmax temperature; 1 samples from π_θ itself (see :mod:`sail.policies.causal_lm`)."""
    top_p: float = 1.0
    """Nucleus sampling mass; 1 disables truncation."""
    stop_at_eos: bool = True
    """End a response at its first EOS token (kept as the response's last token)."""
    engine: str = "hf"
    """``hf`` (``model.generate`` with the adapter active), ``fast`` (merged-weight copy + static
    KV cache, refreshed whenever the adapter changes), or an engine added with
    ``sail.sampling.register_sampler``; see :mod:`sail.sampling`."""

    compile: bool = False
    """``fast`` engine only: run the merged model's forward through ``torch.compile`` (fixed
    shapes; on CUDA with ``mode="reduce-overhead"``, i.e. CUDA graphs). The first call per
    shape compiles (minutes on a CPU); weights refreshed in place stay visible to the graphs."""

    def __post_init__(self):
        if self.max_new_tokens < 1:
            raise FieldError("max_new_tokens", f"must be >= 1, got {self.max_new_tokens}")
        if not self.temperature > 0:
            raise FieldError("temperature", f"must be > 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise FieldError("top_p", f"must be in (0, 1], got {self.top_p}")
        if self.engine not in SAMPLERS:
            raise FieldError("engine", f"expected one of {', '.join(map(repr, sorted(SAMPLERS)))}, got {self.engine!r}")
        if self.compile and self.engine != "fast":
            raise FieldError("compile", "needs engine: fast")
