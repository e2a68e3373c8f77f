"""``make_optimizer(name, model_or_params, **hparams)``: AdamW, Adam, SGD, Lion or Muon.

``model_or_params`` is an ``nn.Module`` (its trainable parameters, with names), an iterable of
tensors, of (name, tensor) pairs, or of parameter-group dicts (passed through unchanged; for
Muon a group may set ``use_muon=False``).

Defaults (any can be overridden through ``hparams``):

======  ======================================================================================
adamw   ``torch.optim.AdamW`` defaults: lr 1e-3, betas (0.9, 0.999), weight_decay 1e-2 (decoupled:
        θ ← (1 − η·λ)θ before the Adam step)
adam    ``torch.optim.Adam`` with lr 1e-3, betas (0.9, 0.999) and weight_decay 1e-2 as coupled L2
        (g ← g + λ·θ, which then passes through the moments), the same default λ as AdamW so the
        two compare at the same decay value; ``decoupled_weight_decay`` is refused (that is adamw)
sgd     ``torch.optim.SGD`` with lr 1e-3, momentum 0, weight_decay 0 (coupled L2, which equals
        decoupled decay when momentum is 0)
lion    :class:`sail.optim.lion.Lion`: lr 1e-4, betas (0.9, 0.99), weight_decay 0
muon    :class:`sail.optim.muon.Muon` with ``torch.optim.Muon``'s defaults (lr 1e-3,
        weight_decay 0.1, momentum 0.95, Nesterov, adjust_lr_fn ``original``) for the
        parameters :func:`sail.optim.routing.route_parameters` selects (``muon_on`` = ``both``
        or ``B``); the rest get AdamW with ``adamw_lr`` (default: lr), ``adamw_weight_decay``
        (default: weight_decay), ``adamw_betas`` (0.9, 0.999) and ``adamw_eps`` (1e-8)
======  ======================================================================================

So ``make_optimizer("muon", params, lr=η, weight_decay=λ)`` on 2-D tensors takes the same steps
as ``torch.optim.Muon(params, lr=η, weight_decay=λ)`` (to within torch's bfloat16 rounding).
"""

from __future__ import annotations

import inspect
from typing import Iterable

import torch

from sail.optim.lion import Lion
from sail.optim.muon import Muon
from sail.optim.routing import route_parameters

OPTIMIZERS = ("adamw", "adam", "sgd", "lion", "muon")
ADAM_DEFAULTS = {"lr": 1e-3, "weight_decay": 1e-2}
"""Adam's defaults: AdamW's lr and decay value (torch.optim.Adam's own weight_decay default is 0)."""
_MUON_ONLY_KEYS = ("muon_on", "adamw_lr", "adamw_weight_decay", "adamw_betas", "adamw_eps")


def option_names(name: str) -> frozenset[str]:
    """The keyword arguments ``make_optimizer(name, …)`` takes: its optimiser's constructor's (the
    parameters aside), and for Muon the keys of its AdamW group."""
    classes = {"adamw": torch.optim.AdamW, "adam": torch.optim.Adam, "sgd": torch.optim.SGD, "lion": Lion, "muon": Muon}
    cls = classes[name.lower()]
    keywords = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    names = {p.name for p in inspect.signature(cls.__init__).parameters.values() if p.kind in keywords}
    names -= {"self", "params", "decoupled_weight_decay"}
    return frozenset(names | set(_MUON_ONLY_KEYS) if name.lower() == "muon" else names)


def _named(model_or_params) -> list | list[dict]:
    """(name, tensor) pairs, or the list of group dicts when groups were given."""
    if isinstance(model_or_params, torch.nn.Module):
        return [(n, p) for n, p in model_or_params.named_parameters() if p.requires_grad]
    if isinstance(model_or_params, torch.Tensor):
        return [("0", model_or_params)]
    items = list(model_or_params)
    if not items:
        raise ValueError("make_optimizer got an empty parameter list")
    if all(isinstance(x, dict) for x in items):
        return items
    if all(isinstance(x, torch.Tensor) for x in items):
        return [(str(i), p) for i, p in enumerate(items)]
    if all(isinstance(x, tuple) and len(x) == 2 and isinstance(x[1], torch.Tensor) for x in items):
        return items
    raise TypeError("params must be a module, tensors, (name, tensor) pairs or parameter-group dicts")


def _groups(named) -> list:
    if named and isinstance(named[0], dict):
        return named
    return [{"params": [p for _, p in named], "param_names": [n for n, _ in named]}]


def muon_param_groups(named: Iterable[tuple[str, torch.Tensor]], muon_on: str = "both", **adamw) -> list[dict]:
    """Muon / AdamW groups for (name, tensor) pairs; ``adamw`` holds the AdamW group's keys."""
    muon, other = route_parameters(named, muon_on)
    groups = []
    if muon:
        groups.append({"params": [p for _, p in muon], "param_names": [n for n, _ in muon], "use_muon": True})
    if other:
        group = {"params": [p for _, p in other], "param_names": [n for n, _ in other], "use_muon": False}
        group.update({k: v for k, v in adamw.items() if v is not None})
        groups.append(group)
    return groups


def make_optimizer(name: str, model_or_params, **hparams) -> torch.optim.Optimizer:
    """Build the optimiser ``name`` (adamw, adam, sgd, lion, muon); see the module docstring."""
    key = name.lower()
    if key not in OPTIMIZERS:
        raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {name!r}")
    named = _named(model_or_params)
    if key != "muon":
        stray = [k for k in _MUON_ONLY_KEYS if k in hparams]
        if stray:
            raise TypeError(f"{stray} are Muon options, not {key}'s")
    if key == "adamw":
        return torch.optim.AdamW(_groups(named), **hparams)
    if key == "adam":
        if "decoupled_weight_decay" in hparams:
            raise TypeError("adam's weight decay is coupled L2; decoupled decay is the optimiser adamw")
        return torch.optim.Adam(_groups(named), **{**ADAM_DEFAULTS, **hparams})
    if key == "sgd":
        return torch.optim.SGD(_groups(named), **{"lr": 1e-3, **hparams})
    if key == "lion":
        return Lion(_groups(named), **hparams)
    muon_on = hparams.pop("muon_on", "both")
    adamw = {
        "lr": hparams.pop("adamw_lr", None),
        "weight_decay": hparams.pop("adamw_weight_decay", None),
        "betas": hparams.pop("adamw_betas", None),
        "adam_eps": hparams.pop("adamw_eps", None),
    }
    if named and isinstance(named[0], dict):
        return Muon(named, **hparams)
    return Muon(muon_param_groups(named, muon_on, **adamw), **hparams)
