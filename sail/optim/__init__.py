"""The inner update: AdamW, Adam (coupled L2), SGD, Lion and a batched Gram-space Muon for LoRA adapters.

* :func:`make_optimizer` — the factory (:mod:`sail.optim.factory`);
* :class:`Lion` — sign of interpolated momentum (:mod:`sail.optim.lion`);
* :class:`Muon` — ``torch.optim.Muon``'s update, batched across equal-shape factors with the
  Newton–Schulz iteration run in the r × r Gram space (:mod:`sail.optim.muon`,
  :mod:`sail.optim.newton_schulz`);
* :func:`route_parameters` — which parameters Muon takes (:mod:`sail.optim.routing`).
"""

from sail.optim.config import OptimizerConfig
from sail.optim.factory import OPTIMIZERS, make_optimizer
from sail.optim.lion import Lion
from sail.optim.muon import Muon, adjusted_lr
from sail.optim.newton_schulz import orthogonalize
from sail.optim.routing import lora_role, route_parameters

__all__ = [
    "OPTIMIZERS",
    "Lion",
    "Muon",
    "OptimizerConfig",
    "adjusted_lr",
    "lora_role",
    "make_optimizer",
    "orthogonalize",
    "route_parameters",
]
