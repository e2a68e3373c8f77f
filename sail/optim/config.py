"""The ``optimizer.*`` config block the trainer reads; :meth:`OptimizerConfig.build` calls
:func:`sail.optim.make_optimizer`."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Literal

from sail.config import check_choices
from sail.optim.factory import make_optimizer


@dataclass
class OptimizerConfig:
    """The inner-update optimiser."""

    name: Literal["adamw", "sgd", "lion", "muon"] = "adamw"
    """The optimiser of the adapter (:mod:`sail.optim`)."""
    lr: float | None = None
    """Learning rate; None keeps the optimiser's default (AdamW 1e-3, SGD 1e-3, Lion 1e-4, Muon 1e-3)."""
    weight_decay: float | None = None
    """Decoupled weight decay; None keeps the default (AdamW 1e-2, SGD 0, Lion 0, Muon 0.1)."""
    options: dict = field(default_factory=dict)
    """Further keyword arguments, e.g. ``betas``, ``momentum`` or, for Muon, ``adjust_lr_fn``
    (``original`` | ``match_rms_adamw``), ``muon_on`` (``both`` | ``B``), ``precision``
    (``auto`` | ``fp32`` | ``bf16``), ``adamw_lr``, ``adamw_weight_decay``."""
    def __post_init__(self):
        check_choices(self)

    def hparams(self) -> dict:
        out = dict(self.options)
        if self.lr is not None:
            out["lr"] = self.lr
        if self.weight_decay is not None:
            out["weight_decay"] = self.weight_decay
        return out

    def build(self, model_or_params):
        return make_optimizer(self.name, model_or_params, **self.hparams())

    def to_dict(self) -> dict:
        return asdict(self)
