"""Memory-lean per-token log-probabilities (and per-position KL) from a causal LM's final hidden states.

For N·T response positions with final hidden states h_i and targets y_i, the policy head W (the
LM head, V rows) gives

    log p(y_i) = (W h_i)[y_i] − logsumexp(W h_i),
    KL_i = KL_dir(softmax(W h_i), softmax(W_ref h_ref,i))         (for the exact KL penalty),

Only positions inside responses (mask = 1) are computed, in chunks of at most ``chunk`` positions;
each chunk runs under activation checkpointing, so the forward keeps no logits at all and the
backward recomputes one chunk's [chunk, V] float32 logits at a time. Peak memory for the head is
O(chunk·V) instead of O(N·T·V) (the HF forward with ``logits_to_keep = T`` materialises [N, T, V]
logits, and their float32 log-softmax for the backward). The reference head runs without a graph;
for the exact KL its logits are recomputed inside the chunk (also in the backward) rather than
stored, for the same reason.
"""

from __future__ import annotations

from contextlib import nullcontext

import torch
from torch.utils.checkpoint import checkpoint

from sail.objectives import kl_exact

DEFAULT_BUDGET = 2**24
"""Float32 logit entries per chunk when ``chunk`` is not given (64 MB per [chunk, V] tensor; a
chunk's forward and backward hold a handful of them): ⌊2²⁴ / V⌋ positions, 110 for Qwen3."""


def default_chunk(vocab_size: int) -> int:
    return max(1, DEFAULT_BUDGET // max(1, vocab_size))


def at_least_float32(x: torch.Tensor) -> torch.Tensor:
    """float32 for half-precision logits, unchanged for float32 and float64 (the exact checkers)."""
    return x.to(torch.promote_types(x.dtype, torch.float32))


def _policy_chunk(head, h, targets, h_ref, direction, ref_context):
    logits = at_least_float32(head(h))
    lse = torch.logsumexp(logits, dim=-1)
    lp = logits.gather(-1, targets[:, None]).squeeze(-1) - lse
    if direction is None:
        return lp, None
    with torch.no_grad(), ref_context():
        ref_log_probs = torch.log_softmax(at_least_float32(head(h_ref)), dim=-1)
    return lp, kl_exact(logits - lse[:, None], ref_log_probs, direction)


def response_terms(
    head,
    hidden: torch.Tensor,
    targets: torch.Tensor,
    mask: torch.Tensor,
    ref_hidden: torch.Tensor | None = None,
    kl_direction: str | None = None,
    ref_context=nullcontext,
    chunk: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """(log p_θ(y_t) [N, T], log p_ref(y_t) [N, T] or None, KL_t [N, T] or None), zero where mask = 0.

    ``hidden``/``ref_hidden`` [N, T, H] are the final hidden states at the positions predicting
    ``targets`` [N, T]; ``ref_context`` is a context manager under which ``head`` acts as the
    reference's head (e.g. ``model.disable_adapter``), needed when the head itself is adapted.
    The reference terms are computed when ``ref_hidden`` is given; the KL when ``kl_direction`` is.
    """
    n, t, width = hidden.shape
    keep = mask.reshape(-1).bool()
    h = hidden.reshape(-1, width)[keep]
    y = targets.reshape(-1)[keep]
    h_ref = None if ref_hidden is None else ref_hidden.reshape(-1, width)[keep]
    size = chunk or default_chunk(head.weight.shape[0] if hasattr(head, "weight") else head.out_features)
    use_checkpoint = torch.is_grad_enabled() and h.requires_grad
    lps, kls, ref_lps = [], [], []
    for start in range(0, h.shape[0], size):
        part = slice(start, start + size)
        if h_ref is not None:
            with torch.no_grad(), ref_context():
                ref_logits = at_least_float32(head(h_ref[part]))
                ref_lps.append(ref_logits.gather(-1, y[part, None]).squeeze(-1) - torch.logsumexp(ref_logits, dim=-1))
                del ref_logits
        args = (head, h[part], y[part], None if h_ref is None else h_ref[part], kl_direction, ref_context)
        if use_checkpoint:
            lp, kl = checkpoint(_policy_chunk, *args, use_reentrant=False)
        else:
            lp, kl = _policy_chunk(*args)
        lps.append(lp)
        if kl is not None:
            kls.append(kl)

    def spread(values):
        out = torch.zeros(n * t, dtype=torch.promote_types(hidden.dtype, torch.float32), device=hidden.device)
        if values:
            out = out.index_put((keep.nonzero().squeeze(-1),), torch.cat(values))
        return out.reshape(n, t)

    return spread(lps), spread(ref_lps) if h_ref is not None else None, spread(kls) if kl_direction is not None else None
