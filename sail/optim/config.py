"""The ``optimizer.*`` config block the trainer reads; :meth:`OptimizerConfig.build` calls
:func:`sail.optim.make_optimizer`."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Literal

import torch

from sail.config import FieldError, check_choices
from sail.optim.factory import make_optimizer, option_names


@dataclass
class OptimizerConfig:
    """The inner-update optimiser."""

    name: Literal["adamw", "adam", "sgd", "lion", "muon"] = "adamw"
    """The optimiser of the adapter (:mod:`sail.optim`): ``adamw`` (decoupled weight decay), ``adam``
    (weight decay as coupled L2, g + λθ), ``sgd``, ``lion`` or ``muon``."""
    lr: float | None = None
    """Learning rate; None keeps the optimiser's default (AdamW 1e-3, Adam 1e-3, SGD 1e-3, Lion 1e-4, Muon 1e-3)."""
    weight_decay: float | None = None
    """Weight decay λ; None keeps the default (AdamW 1e-2, Adam 1e-2, SGD 0, Lion 0, Muon 0.1). Decoupled,
    θ ← (1 − ηλ)θ, for AdamW, Lion and Muon; coupled L2, g ← g + λθ, for Adam and SGD."""
    options: dict = field(default_factory=dict)
    """Further keyword arguments, e.g. ``betas``, ``momentum`` or, for Muon, ``adjust_lr_fn``
    (``original`` | ``match_rms_adamw``), ``muon_on`` (``both`` | ``B``), ``precision``
    (``auto`` | ``fp32`` | ``bf16``), ``adamw_lr``, ``adamw_weight_decay``."""
    def __post_init__(self):
        check_choices(self)
        if self.lr is not None and not 0 < self.lr < math.inf:
            raise FieldError("lr", f"must be a finite number > 0 (or null), got {self.lr}")
        if self.weight_decay is not None and not 0 <= self.weight_decay < math.inf:
            raise FieldError("weight_decay", f"must be a finite number >= 0 (or null), got {self.weight_decay}")
        known = option_names(self.name)
        unknown = [key for key in self.options if key not in known]
        if unknown:
            raise FieldError(f"options.{unknown[0]}", f"not an option of {self.name} (its options: {', '.join(sorted(known))})")
        try:  # the values, on stand-in LoRA factors: a bad one fails here, naming the key, not at the first step
            self.build([(f"lora_{f}.weight", torch.zeros(2, 2, requires_grad=True)) for f in "AB"])
        except (TypeError, ValueError) as exc:
            raise FieldError("options", f"{self.name} does not take them: {' '.join(str(exc).split())}") from None

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
