"""The ``spectral.*`` config block the trainer reads."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from sail.spectral.penalty import PENALTY_KINDS, REDUCTIONS, penalty


@dataclass
class SpectralConfig:
    """Spectral penalty and logging of the LoRA adapter."""

    penalty_weight: float = 0.0
    """λ in loss + λ·penalty; 0 disables the penalty (the spectra are still logged)."""
    penalty_kind: str = "pr"
    """``pr`` (k/PR − 1 from traces), ``renyi`` or ``entropy``; see :mod:`sail.spectral.penalty`."""
    reduction: str = "mean"
    """``mean`` or ``sum`` over modules."""
    eps: float = 1e-12
    """Switch-off scale: the penalty vanishes for Σσ²/s² ≲ √eps (e.g. at B = 0)."""
    renyi_order: int = 2
    """α for ``renyi`` (an integer ≥ 2)."""
    log_every: int = 50
    """Log per-module-type spectra and flatness every N steps (0 disables)."""

    def __post_init__(self):
        if self.penalty_kind not in PENALTY_KINDS:
            raise ValueError(f"spectral.penalty_kind must be one of {PENALTY_KINDS}, got {self.penalty_kind!r}")
        if self.reduction not in REDUCTIONS:
            raise ValueError(f"spectral.reduction must be one of {REDUCTIONS}, got {self.reduction!r}")
        if self.penalty_weight < 0:
            raise ValueError(f"spectral.penalty_weight must be >= 0, got {self.penalty_weight}")
        if self.log_every < 0:
            raise ValueError(f"spectral.log_every must be >= 0, got {self.log_every}")

    def penalty_term(self, model):
        """λ·penalty(model), or None when λ = 0."""
        if self.penalty_weight == 0:
            return None
        value = penalty(model, self.penalty_kind, self.reduction, self.eps, self.renyi_order)
        return self.penalty_weight * value

    def to_dict(self) -> dict:
        return asdict(self)
