"""Flatness of a singular-value spectrum σ₁ ≥ … ≥ σ_k (k = min(r, d_in, d_out)).

With energies e_i = σ_i² and p_i = e_i / Σe:

* participation ratio   PR = (Σσ²)² / Σσ⁴ = 1 / Σp²  ∈ [1, k]  (k = perfectly flat);
  log PR is the Rényi-2 entropy of p;
* normalised entropy    H = −Σ p log p / log k  ∈ [0, 1]  (1 = flat; k = 1 gives 1);
* stable rank           Σσ² / σ₁² = ‖ΔW‖²_F / ‖ΔW‖²₂  ∈ [1, k];
* condition number      σ₁ / σ_k  ∈ [1, ∞]  (∞ for a rank-deficient ΔW).

An all-zero spectrum (B = 0, the LoRA initialisation) has PR = H = stable rank = 0 and an
infinite condition number. Everything is batched over leading dimensions.
"""

from __future__ import annotations

import math

import torch

METRICS = ("participation_ratio", "normalised_entropy", "stable_rank", "condition_number")


def _safe(x: torch.Tensor) -> torch.Tensor:
    return torch.where(x > 0, x, torch.ones_like(x))


def _unit(sigma: torch.Tensor) -> torch.Tensor:
    """σ/σ₁ in float64 (every metric is scale-invariant; this avoids under- and overflow)."""
    s = sigma.double().abs()
    return s / _safe(s.max(-1, keepdim=True).values)


def participation_ratio(sigma: torch.Tensor) -> torch.Tensor:
    e = _unit(sigma) ** 2
    t2, t4 = e.sum(-1), (e * e).sum(-1)
    return torch.where(t4 > 0, t2 * t2 / _safe(t4), torch.zeros_like(t2))


def normalised_entropy(sigma: torch.Tensor) -> torch.Tensor:
    e = _unit(sigma) ** 2
    total = e.sum(-1, keepdim=True)
    p = e / _safe(total)
    h = -(torch.where(p > 0, p * torch.log(_safe(p)), torch.zeros_like(p))).sum(-1)
    k = sigma.shape[-1]
    norm = h / math.log(k) if k > 1 else torch.ones_like(h)
    return torch.where(total[..., 0] > 0, norm, torch.zeros_like(h))


def stable_rank(sigma: torch.Tensor) -> torch.Tensor:
    e = _unit(sigma) ** 2
    top = e.max(-1).values
    return torch.where(top > 0, e.sum(-1) / _safe(top), torch.zeros_like(top))


def condition_number(sigma: torch.Tensor) -> torch.Tensor:
    s = sigma.double()
    top, low = s.max(-1).values, s.min(-1).values
    return torch.where(low > 0, top / _safe(low), torch.full_like(top, math.inf))


def flatness(sigma: torch.Tensor) -> dict[str, torch.Tensor]:
    """All four metrics of a (batch of) spectra, in float64."""
    return {
        "participation_ratio": participation_ratio(sigma),
        "normalised_entropy": normalised_entropy(sigma),
        "stable_rank": stable_rank(sigma),
        "condition_number": condition_number(sigma),
    }
