"""Which parameters Muon takes: the 2-D LoRA factors of a PEFT model, or every 2-D tensor.

PEFT names a LoRA factor ``….<module>.lora_A.<adapter>.weight`` (A: r × d_in) and
``….<module>.lora_B.<adapter>.weight`` (B: d_out × r); embedding adapters use
``lora_embedding_A`` / ``lora_embedding_B``. Rules, for the trainable parameters:

* some LoRA factor present (a PEFT model): Muon takes the 2-D LoRA factors, both A and B
  (``muon_on="both"``) or B only (``muon_on="B"``); everything else — A under ``"B"``, LoRA
  biases, ``modules_to_save``, 4-D conv factors — goes to AdamW;
* no LoRA factor: Muon takes every 2-D tensor and AdamW the rest (``muon_on`` must be
  ``"both"``).
"""

from __future__ import annotations

from typing import Iterable

import torch

MUON_ON = ("both", "B")
_A_NAMES = ("lora_A", "lora_embedding_A")
_B_NAMES = ("lora_B", "lora_embedding_B")


def lora_role(name: str) -> str | None:
    """``"A"``, ``"B"`` or None, from a parameter's qualified name."""
    parts = name.split(".")
    if any(part in _A_NAMES for part in parts):
        return "A"
    if any(part in _B_NAMES for part in parts):
        return "B"
    return None


def route_parameters(
    named_params: Iterable[tuple[str, torch.Tensor]], muon_on: str = "both"
) -> tuple[list[tuple[str, torch.Tensor]], list[tuple[str, torch.Tensor]]]:
    """Split trainable (name, parameter) pairs into (Muon, AdamW) lists by the rules above."""
    if muon_on not in MUON_ON:
        raise ValueError(f"muon_on must be one of {MUON_ON}, got {muon_on!r}")
    named = [(n, p) for n, p in named_params if p.requires_grad]
    peft = any(lora_role(n) is not None for n, _ in named)
    if not peft and muon_on != "both":
        raise ValueError(f"muon_on={muon_on!r} needs LoRA factors, but no parameter name contains lora_A/lora_B")
    muon, other = [], []
    for name, p in named:
        role = lora_role(name)
        if peft:
            take = p.ndim == 2 and role is not None and (muon_on == "both" or role == "B")
        else:
            take = p.ndim == 2
        (muon if take else other).append((name, p))
    return muon, other
