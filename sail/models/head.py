"""A dense delta on a causal LM's output head: the head-only parametrisation.

The output head becomes W + Δ, logits_t = (W + Δ) h_t, with everything else frozen — the decoder,
the final norm, and W itself (for Qwen3's small models W *is* the input embedding matrix, tied;
it stays frozen, so the hidden states h_t never move). Only Δ ∈ ℝ^{V×d} trains, and Δ = 0 at θ₀.
Then

    log π_Δ(y|x) = Σ_t [(W + Δ)_{y_t}·h_t − logsumexp((W + Δ) h_t)]

is concave in Δ (a sum of log-linear terms, one per position), so KL(π_ref‖π_Δ) is convex in Δ
and the log-linear argument of the convergence theorem applies position by position. The delta is
dense on purpose: a low-rank delta Δ = BA would be bilinear again (see docs/check_llm.md).

The reference π_ref is the base model: :meth:`DeltaHead.disabled` is a context under which the
head computes W h (pass ``reference=head.disabled`` to :class:`~sail.policies.causal_lm.CausalLMPolicy`).
"""

from __future__ import annotations

from contextlib import contextmanager

import torch
import torch.nn.functional as F


class DeltaHead(torch.nn.Module):
    """logits = h (W + Δ)ᵀ (+ bias), W frozen (possibly tied to the input embeddings), Δ trainable.

    ``weight`` is the effective matrix W + Δ (shape [V, d], what code that reads the head's weight
    expects); ``base`` is the original head module, ``delta`` the trainable Δ.
    """

    def __init__(self, base: torch.nn.Module):
        super().__init__()
        if not isinstance(getattr(base, "weight", None), torch.Tensor) or base.weight.dim() != 2:
            raise TypeError("the output head must have a 2-D weight [V, d]")
        self.base = base
        for p in base.parameters():
            p.requires_grad_(False)
        self.delta = torch.nn.Parameter(torch.zeros_like(base.weight))
        self.enabled = True

    @property
    def weight(self) -> torch.Tensor:
        return self.base.weight + self.delta if self.enabled else self.base.weight

    @property
    def out_features(self) -> int:
        return self.base.weight.shape[0]

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return F.linear(hidden, self.weight, getattr(self.base, "bias", None))

    @contextmanager
    def disabled(self):
        """Inside this context the head is W (Δ ignored): the model computes π_ref."""
        previous, self.enabled = self.enabled, False
        try:
            yield
        finally:
            self.enabled = previous


def attach_delta_head(model) -> DeltaHead:
    """Freeze every parameter of ``model`` and replace its output head by a :class:`DeltaHead`.

    Returns the new head; its ``delta`` (zeros) is then the model's only trainable parameter.
    """
    for p in model.parameters():
        p.requires_grad_(False)
    head = DeltaHead(model.get_output_embeddings())
    model.set_output_embeddings(head)
    return head


def delta_head_of(model) -> DeltaHead | None:
    """The model's :class:`DeltaHead`, or None if its head is a plain one."""
    head = model.get_output_embeddings()
    return head if isinstance(head, DeltaHead) else None
