"""The ``spectral.*`` config block the trainer reads."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Literal

from sail.config import FieldError, check_choices
from sail.spectral.penalty import penalty


@dataclass
class SpectralConfig:
    """Spectral penalty and logging of the LoRA adapter."""

    penalty_weight: float = 0.0
    """λ in loss + λ·penalty; 0 disables the penalty (the spectra are still logged)."""
    penalty_kind: Literal["pr", "renyi", "entropy", "fro_nuclear"] = "pr"
    """``pr`` (k/PR − 1 from traces), ``renyi``, ``entropy`` or ``fro_nuclear`` (√k·‖ΔW‖_F/‖ΔW‖_* − 1 on a
    spectrum lifted by δ² = (1e-6·Σσ² + eps·s²)/k); see :mod:`sail.spectral.penalty`."""
    reduction: Literal["mean", "sum"] = "mean"
    """``mean`` or ``sum`` over modules."""
    eps: float = 1e-12
    """Switch-off scale: the penalty vanishes for Σσ²/s² ≲ √eps (e.g. at B = 0)."""
    renyi_order: int = 2
    """α for ``renyi`` (an integer ≥ 2)."""
    log_every: int = 50
    """Log per-module-type spectra and flatness every N steps (0 disables)."""

    def __post_init__(self):
        check_choices(self)
        if self.penalty_weight < 0:
            raise FieldError("penalty_weight", f"must be >= 0, got {self.penalty_weight}")
        if self.log_every < 0:
            raise FieldError("log_every", f"must be >= 0, got {self.log_every}")
        if self.renyi_order < 2:
            raise FieldError("renyi_order", f"must be an integer >= 2, got {self.renyi_order}")

    def penalty_term(self, model):
        """λ·penalty(model), or None when λ = 0."""
        if self.penalty_weight == 0:
            return None
        value = penalty(model, self.penalty_kind, self.reduction, self.eps, self.renyi_order)
        return self.penalty_weight * value

    def to_dict(self) -> dict:
        return asdict(self)
