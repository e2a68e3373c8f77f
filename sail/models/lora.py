"""LoRA adapters on causal LMs (PEFT): ΔW = s·B·A with s = α/r, or α/√r under rsLoRA."""

from __future__ import annotations

from dataclasses import dataclass, field

from sail.config import FieldError

LORA_TARGETS_ALL_LINEAR = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
"""The seven linear projections of a Qwen3 (Llama-style) decoder block."""


@dataclass
class LoraAdapterConfig:
    """The adapter; by default it covers all 7 linear projections of a Qwen3 block."""

    rank: int = 16
    """r, the inner dimension of B (d_out × r) and A (r × d_in)."""
    alpha: float = 32.0
    """α in the scaling s = α/r (α/√r with ``rslora``)."""
    rslora: bool = False
    """Rank-stabilised scaling α/√r."""
    dropout: float = 0.0
    """Dropout on the adapter's input (0 keeps the policy deterministic given θ)."""
    target_modules: list[str] = field(default_factory=lambda: list(LORA_TARGETS_ALL_LINEAR))
    """Module names that get an adapter."""

    def __post_init__(self):
        if self.rank < 1:
            raise FieldError("rank", f"must be >= 1, got {self.rank}")
        if not self.alpha > 0:
            raise FieldError("alpha", f"must be > 0, got {self.alpha}")
        if not 0 <= self.dropout < 1:
            raise FieldError("dropout", f"must be in [0, 1), got {self.dropout}")


def attach_lora(model, settings: LoraAdapterConfig, seed: int | None = None):
    """Wrap ``model`` in a ``peft.PeftModel`` with a fresh adapter (B = 0) and frozen base weights.

    A is initialised randomly by PEFT from torch's global generator; with ``seed`` the adapter is
    drawn from a generator seeded with it instead (the global state is left untouched).
    """
    import torch
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(
        r=settings.rank,
        lora_alpha=settings.alpha,
        lora_dropout=settings.dropout,
        use_rslora=settings.rslora,
        target_modules=list(settings.target_modules),
        task_type="CAUSAL_LM",
    )
    if seed is None:
        return get_peft_model(model, config)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return get_peft_model(model, config)
