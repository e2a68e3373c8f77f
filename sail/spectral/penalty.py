"""``penalty(model)``: a differentiable spectral-flatness penalty over all LoRA modules.

Per module, with t₂ = tr(G_A G_B) = Σσ²/s², t₄ = tr((G_A G_B)²) = Σσ⁴/s⁴ (scale-free, so s does
not matter), k = min(r, d_in, d_out) and PR = t₂²/t₄ ∈ [1, k]:

``pr`` (default)   (k·t₄ − t₂²) / (t₂² + ε)  =  g·(k/PR − 1),   g = t₂²/(t₂² + ε)
``renyi``          1 − H_α/log k, H_α = log(Σp^α)/(1 − α) the Rényi entropy of p_i = σ_i²/Σσ²,
                   with Σp^α = (tr P^α + ε k^{1−α}) / ((tr P)^α + ε); α = 2 gives H₂ = log PR
``entropy``        g·(1 − H/log k), H = −Σ p log max(p, τ) the Shannon entropy of p, from the
                   exact eigenvalues of the Gram core (:func:`sail.spectral.gram.gram_eigenvalues`)
``fro_nuclear``    g·(√k·‖ΔW‖_F/‖ΔW‖_* − 1), the Frobenius-to-nuclear ratio, on the lifted spectrum
                   σ̃_i = √(σ_i² + δ²) (below), from the same exact eigenvalues; ∈ [0, √k − 1]

All four are ≥ 0, vanish for a perfectly flat spectrum and at B = 0 (the LoRA initialisation),
and have finite gradients everywhere: the trace forms are rational in the Grams with a positive
denominator, and the eigenvalue form has a backward free of 1/(λ_i − λ_j), so repeated or zero
singular values are harmless. (An SVD backward returns NaN exactly there.) ε only switches the
penalty off below Σσ²/s² ≈ √ε; it does not bias it above. PR is scale-invariant, so the
gradient is orthogonal to (A, B) and grows like 1/‖B‖ for small adapters.

**The smoothing of** ``fro_nuclear``. ‖ΔW‖_* = Σσ_i is not differentiable where ΔW is rank-deficient
(√λ has an infinite slope at λ = σ² = 0) and the ratio is 0/0 at B = 0. So the ratio is taken of the
lifted spectrum σ̃_i² = σ_i² + δ² (i = 1 … k, in the scale-free units of t₂):

    R_δ = √k·√(Σσ̃²) / Σσ̃ = √k·√(t₂ + kδ²) / Σ_i √(λ_i + δ²),    kδ² = η·t₂ + ε,  η = ``NUCLEAR_LIFT`` = 1e-6

R_δ is the exact ratio of a spectrum, so 1 ≤ R_δ ≤ √k (Cauchy–Schwarz) and R_δ = 1 when σ is flat.
The slope of √(λ + δ²) is at most 1/(2δ), so every gradient is finite; δ² ∝ t₂ (above ε) keeps R_δ
scale-invariant like PR. η bounds the curvature relative to the spectrum's scale, which keeps float32
gradients accurate: for r = 64 and σ spanning six decades the float32 gradient is within 1e-3 of the
float64 one (a test), where η = 0 leaves a 1–6 % error. The bias against the exact
R₀ = √k‖ΔW‖_F/‖ΔW‖_* (ΔW ≠ 0) is bounded, with ρ = kδ²/t₂ = η + ε/t₂ (Σσ̃² = t₂(1 + ρ),
Σσ ≤ Σσ̃ ≤ Σσ + kδ and Σσ ≥ √t₂):

    R₀ / (1 + √(kρ))  ≤  R_δ  ≤  R₀·√(1 + ρ)

i.e. for t₂ ≫ ε at most 5e-7 relative upward and √(k·η) relative downward (0.57 % at k = 32); the
downward bound is approached only by a nearly rank-1 spectrum with k − 1 vanishing σ_i. The gate
g = t₂²/(t₂² + ε) makes the value exactly 0 at B = 0 (where R_δ = 1 up to rounding).

``reduction`` is ``mean`` (default) or ``sum`` over the selected modules (``kinds`` filters by
module type, e.g. ``{"q_proj", "v_proj"}``).
"""

from __future__ import annotations

from typing import Iterable

import torch

from sail.spectral.factors import group_indices, lora_factors
from sail.spectral.gram import factor_grams, gram_eigenvalues, trace_moments, trace_product

PENALTY_KINDS = ("pr", "renyi", "entropy", "fro_nuclear")
REDUCTIONS = ("mean", "sum")
ENTROPY_FLOOR = 1e-12
NUCLEAR_LIFT = 1e-6
"""η: ``fro_nuclear`` lifts each of the k σ_i² by δ² = (η·Σσ² + ε·s²)/k (module docstring)."""


def _pr_penalty(G_A, G_B, t2, k, eps, order):
    t4 = trace_moments(G_A, G_B)[1]
    return (k * t4 - t2 * t2) / (t2 * t2 + eps)


def _renyi_penalty(G_A, G_B, t2, k, eps, order):
    P = G_A @ G_B
    t1 = P.diagonal(dim1=-2, dim2=-1).sum(-1)
    t_alpha = torch.linalg.matrix_power(P, order).diagonal(dim1=-2, dim2=-1).sum(-1)
    power_sum = (t_alpha + eps * k ** (1.0 - order)) / (t1**order + eps)
    h = torch.log(power_sum) / (1.0 - order)
    log_k = torch.log(k)
    safe = torch.where(k > 1, log_k, torch.ones_like(log_k))
    return torch.where(k > 1, 1.0 - h / safe, torch.zeros_like(h))


def _entropy_penalty(G_A, G_B, t2, k, eps, order):
    lam = gram_eigenvalues(G_A, G_B)
    total = lam.sum(-1, keepdim=True)
    p = lam / torch.where(total > 0, total, torch.ones_like(total))
    h = -(p * torch.log(p.clamp(min=ENTROPY_FLOOR))).sum(-1)
    log_k = torch.log(k)
    safe = torch.where(k > 1, log_k, torch.ones_like(log_k))
    flat_gap = torch.where(k > 1, 1.0 - h / safe, torch.zeros_like(h))
    return _gate(t2, eps) * flat_gap


def _gate(t2, eps):
    return t2 * t2 / (t2 * t2 + eps)


def _fro_nuclear_penalty(G_A, G_B, t2, k, eps, order):
    lam = gram_eigenvalues(G_A, G_B)  # ascending; the top k are the σ² of B·A
    r = lam.shape[-1]
    top = torch.arange(r, device=lam.device) >= (r - k)[:, None]
    lift = (NUCLEAR_LIFT * t2 + eps) / k
    lifted = torch.where(top, lam + lift[:, None], torch.zeros_like(lam))
    nuclear = torch.where(top, lifted.sqrt(), torch.zeros_like(lam)).sum(-1)
    frobenius = lifted.sum(-1).sqrt()
    return _gate(t2, eps) * (k.sqrt() * frobenius / nuclear - 1.0)


_PENALTIES = {"pr": _pr_penalty, "renyi": _renyi_penalty, "entropy": _entropy_penalty, "fro_nuclear": _fro_nuclear_penalty}
"""kind → f(G_A, G_B, t₂, k, ε, α) → per-module penalties; the keys are :data:`PENALTY_KINDS`."""


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
        t2 = trace_product(G_A, G_B)
        values.append(_PENALTIES[kind](G_A, G_B, t2, k, eps, int(order)))
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

