"""The LoRA factors of a model: ΔW = s·B·A for every adapted module.

PEFT's LoRA layers hold, per adapter, ``lora_A[adapter]`` (a Linear with weight A: r × d_in),
``lora_B[adapter]`` (weight B: d_out × r) and ``scaling[adapter]`` = s, which is α/r, or α/√r
with rsLoRA (``use_rslora=True``); embedding layers use ``lora_embedding_A`` (r × vocab) and
``lora_embedding_B`` (d × r), whose ΔW = s·(B·A)ᵀ has the same singular values. Conv factors
(4-D) are skipped. For DoRA the spectra are those of the low-rank part s·B·A.

Every function in :mod:`sail.spectral` takes either a model or a list of :class:`LoraFactor`, so
the benchmark and tests can pass bare factor tensors.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Iterable

import torch


@dataclass(frozen=True)
class LoraFactor:
    """One adapted module: ΔW = scaling · B @ A."""

    name: str
    A: torch.Tensor
    """r × d_in."""
    B: torch.Tensor
    """d_out × r."""
    scaling: float = 1.0
    kind: str = ""
    """Module type used to aggregate logs, e.g. ``q_proj`` (the module name's last part)."""

    @property
    def rank(self) -> int:
        return self.A.shape[0]

    @property
    def max_rank(self) -> int:
        """k = min(r, d_in, d_out): the number of singular values and the largest possible PR."""
        return min(self.A.shape[0], self.A.shape[1], self.B.shape[0])


def module_kind(name: str) -> str:
    """The module type of a qualified module name: its last component (``…q_proj`` → ``q_proj``)."""
    return name.rsplit(".", 1)[-1]


def _pairs(module) -> Iterable[tuple[str, torch.Tensor, torch.Tensor]]:
    for a_attr, b_attr in (("lora_A", "lora_B"), ("lora_embedding_A", "lora_embedding_B")):
        a_dict, b_dict = getattr(module, a_attr, None), getattr(module, b_attr, None)
        if a_dict is None or b_dict is None:
            continue
        for adapter in a_dict.keys():
            if adapter not in b_dict:
                continue
            a, b = a_dict[adapter], b_dict[adapter]
            A = a.weight if isinstance(a, torch.nn.Module) else a
            B = b.weight if isinstance(b, torch.nn.Module) else b
            yield adapter, A, B


def lora_factors(model, adapter: str | None = None) -> list[LoraFactor]:
    """Every 2-D LoRA factor pair of ``model`` (all adapters, or only ``adapter``).

    Names are the module's qualified name; with several adapters on one module the adapter name
    is appended (``name.adapter``). A list of :class:`LoraFactor` is returned unchanged.
    """
    if not isinstance(model, torch.nn.Module):
        factors = list(model)
        if not all(isinstance(f, LoraFactor) for f in factors):
            raise TypeError("expected a torch.nn.Module or an iterable of LoraFactor")
        return factors
    out = []
    for name, module in model.named_modules():
        scaling = getattr(module, "scaling", None)
        if not isinstance(scaling, dict):
            continue
        pairs = [(ad, A, B) for ad, A, B in _pairs(module) if adapter is None or ad == adapter]
        for ad, A, B in pairs:
            if A.ndim != 2 or B.ndim != 2:
                continue
            if A.shape[0] != B.shape[1]:
                raise ValueError(f"{name}: lora_A {tuple(A.shape)} and lora_B {tuple(B.shape)} disagree on r")
            key = name if len(pairs) == 1 else f"{name}.{ad}"
            out.append(LoraFactor(key, A, B, float(scaling[ad]), module_kind(name)))
    return out


def group_indices(keys: Iterable) -> dict:
    """{key: [positions]} preserving first-seen order."""
    groups: dict = defaultdict(list)
    for i, key in enumerate(keys):
        groups[key].append(i)
    return dict(groups)
