"""``penalty(model)``: a differentiable spectral-flatness penalty over all LoRA modules.

Per module, with t₂ = tr(G_A G_B) = Σσ²/s², t₄ = tr((G_A G_B)²) = Σσ⁴/s⁴ (scale-free, so s does
not matter), k = min(r, d_in, d_out) and PR = t₂²/t₄ ∈ [1, k]:

``pr`` (default)   (k·t₄ − t₂²) / (t₂² + ε)  =  g·(k/PR − 1),   g = t₂²/(t₂² + ε)
``renyi``          1 − H_α/log k, H_α = log(Σp^α)/(1 − α) the Rényi entropy of p_i = σ_i²/Σσ²,
                   with Σp^α = (tr P^α + ε k^{1−α}) / ((tr P)^α + ε); α = 2 gives H₂ = log PR
``entropy``        g·(1 − H/log k), H = −Σ p log max(p, τ) the Shannon entropy of p, from the
                   exact eigenvalues of the Gram core (:func:`sail.spectral.gram.gram_eigenvalues`)

All three are ≥ 0, vanish for a perfectly flat spectrum and at B = 0 (the LoRA initialisation),
and have finite gradients everywhere: the trace forms are rational in the Grams with a positive
denominator, and the eigenvalue form has a backward free of 1/(λ_i − λ_j), so repeated or zero
singular values are harmless. (An SVD backward returns NaN exactly there.) ε only switches the
penalty off below Σσ²/s² ≈ √ε; it does not bias it above. PR is scale-invariant, so the
gradient is orthogonal to (A, B) and grows like 1/‖B‖ for small adapters.

``reduction`` is ``mean`` (default) or ``sum`` over the selected modules (``kinds`` filters by
module type, e.g. ``{"q_proj", "v_proj"}``).
"""

from __future__ import annotations

from typing import Iterable

import torch

from sail.spectral.factors import group_indices, lora_factors
from sail.spectral.gram import factor_grams, gram_eigenvalues, trace_moments

PENALTY_KINDS = ("pr", "renyi", "entropy")
REDUCTIONS = ("mean", "sum")
ENTROPY_FLOOR = 1e-12


def _pr_penalty(t2, t4, k, eps):
    return (k * t4 - t2 * t2) / (t2 * t2 + eps)


def _renyi_penalty(G_A, G_B, k, eps, order):
    P = G_A @ G_B
    t1 = P.diagonal(dim1=-2, dim2=-1).sum(-1)
    t_alpha = torch.linalg.matrix_power(P, order).diagonal(dim1=-2, dim2=-1).sum(-1)
    power_sum = (t_alpha + eps * k ** (1.0 - order)) / (t1**order + eps)
    h = torch.log(power_sum) / (1.0 - order)
    log_k = torch.log(k)
    safe = torch.where(k > 1, log_k, torch.ones_like(log_k))
    return torch.where(k > 1, 1.0 - h / safe, torch.zeros_like(h))


def _entropy_penalty(G_A, G_B, t2, k, eps):
    lam = gram_eigenvalues(G_A, G_B)
    total = lam.sum(-1, keepdim=True)
    p = lam / torch.where(total > 0, total, torch.ones_like(total))
    h = -(p * torch.log(p.clamp(min=ENTROPY_FLOOR))).sum(-1)
    log_k = torch.log(k)
    safe = torch.where(k > 1, log_k, torch.ones_like(log_k))
    flat_gap = torch.where(k > 1, 1.0 - h / safe, torch.zeros_like(h))
    gate = t2 * t2 / (t2 * t2 + eps)
    return gate * flat_gap


def module_penalties(
    model,
    kind: str = "pr",
    eps: float = 1e-12,
    order: int = 2,
    adapter: str | None = None,
    kinds: Iterable[str] | None = None,
    batching: str = "auto",
) -> tuple[list[str], torch.Tensor]:
    """(names, per-module penalties [n]) in the order of :func:`lora_factors`."""
    if kind not in PENALTY_KINDS:
        raise ValueError(f"kind must be one of {PENALTY_KINDS}, got {kind!r}")
    if kind == "renyi" and (int(order) != order or order < 2):
        raise ValueError(f"renyi order must be an integer >= 2, got {order}")
    factors = lora_factors(model, adapter)
    if kinds is not None:
        wanted = set(kinds)
        factors = [f for f in factors if f.kind in wanted]
    names, values = [], []
    for idx in group_indices((f.rank, f.A.device) for f in factors).values():
        group = [factors[i] for i in idx]
        G_A, G_B = factor_grams(group, batching=batching)
        k = torch.tensor([float(f.max_rank) for f in group], dtype=G_A.dtype, device=G_A.device)
        t2, t4 = trace_moments(G_A, G_B)
        if kind == "pr":
            values.append(_pr_penalty(t2, t4, k, eps))
        elif kind == "renyi":
            values.append(_renyi_penalty(G_A, G_B, k, eps, int(order)))
        else:
            values.append(_entropy_penalty(G_A, G_B, t2, k, eps))
        names.extend(f.name for f in group)
    if not values:
        return [], torch.zeros(0)
    return names, torch.cat([v.to(values[0].device) for v in values])


def penalty(
    model,
    kind: str = "pr",
    reduction: str = "mean",
    eps: float = 1e-12,
    order: int = 2,
    adapter: str | None = None,
    kinds: Iterable[str] | None = None,
    batching: str = "auto",
) -> torch.Tensor:
    """The flatness penalty (a 0-dim tensor; 0 when the model has no LoRA factor)."""
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")
    _, values = module_penalties(model, kind, eps, order, adapter, kinds, batching)
    if values.numel() == 0:
        return values.sum()
    return values.mean() if reduction == "mean" else values.sum()

