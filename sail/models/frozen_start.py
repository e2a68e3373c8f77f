"""The reference of a run that starts from a given adapter: the policy at the frozen starting point.

When training starts at θ₀ with π_θ₀ ≠ the base model (a LoRA adapter with B ≠ 0, e.g. loaded from a
checkpoint: ``model.init_adapter`` with ``model.reference: start`` in ``sail train``), the KL may
anchor to π_ref = π_θ₀ rather than to the base. :func:`frozen_start_reference`
keeps a frozen copy of θ₀ and returns a context factory under which the model computes π_θ₀: the
trainable tensors' storage is swapped for the copy on entry and swapped back on exit (no values are
written, so an autograd graph built outside the context stays valid).
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Callable, ContextManager, Sequence

import torch


@contextmanager
def _swapped(params: Sequence[torch.nn.Parameter], values: Sequence[torch.Tensor]):
    current = [p.data for p in params]
    try:
        for p, v in zip(params, values):
            p.data = v
        yield
    finally:
        for p, c in zip(params, current):
            p.data = c


def frozen_start_reference(model) -> Callable[[], ContextManager]:
    """A zero-argument callable returning a context under which ``model`` is at its current
    trainable parameters (captured now, frozen): pass it as ``reference=`` to the policy. The copy
    follows the model to another device (``model.to(device)`` after this call) on first use there."""
    params = [p for p in model.parameters() if p.requires_grad]
    start = [p.detach().clone() for p in params]

    def reference() -> ContextManager:
        for i, (p, v) in enumerate(zip(params, start)):
            if v.device != p.device:
                start[i] = v.to(p.device)
        return _swapped(params, start)

    return reference
