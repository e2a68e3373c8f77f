"""Curvature of J_γ = J − γ·KL on the ball: λ_max per γ, the empirical γ_c, and the template's M/λ_F.

All on the identifiable subspace U, from exact Hessians ∇²J and ∇²KL at sampled ball points
(:func:`sail.theory.search.hessian_samples`; held, so that any γ costs one eigen-decomposition):

* ``curvature``: max over the samples of λ_max(Uᵀ(∇²J − γ∇²KL)U), for each γ of a grid;
* ``gamma_c_hat``: the smallest γ with that maximum ≤ 0 (:func:`concave_gamma_interval`, then local
  search for a worse point at that γ, as :mod:`sail.theory.gamma_scan` does); infinite (null, with
  ``gamma_c_infinite``) when no γ ≤ 10⁸ works on the samples;
* ``template``: λ_F = min λ_min(∇²KL), M = max λ_max(∇²J), γ_c = M/λ_F (the log-linear template's
  sufficient condition, evaluated with the searched constants; infinite when λ_F ≤ 0);
* :func:`zero_block_certificate`: for LoRA at B = 0, an exact reason why γ_c = ∞. ΔW = s·B·A, so at
  B = 0 every second derivative in A alone vanishes, for J and for the KL: the Hessian has the
  block form [[0, C], [Cᵀ, D_γ]] (A first, B second) with C = ∂²J/∂A∂B ≠ 0 (it carries ∇_W J)
  and C_γ = C_J − γC_KL ≠ 0 for every γ (C_KL = 0 as ∇_W KL = 0 at π_θ = π_ref; in general it
  suffices that C_J is not parallel to C_KL). For v = (a, εb) with aᵀC_γ b > 0,
  vᵀHv = 2ε aᵀC_γ b + ε² bᵀD_γ b > 0 for small ε > 0: ∇²J_γ(θ₀) is indefinite for every γ.
"""

from __future__ import annotations

import math

import numpy as np

from sail.theory.gamma_scan import worst_curvature
from sail.theory.search import HessianSamples, lambda_max, lambda_min, refine_max, restricted_hessians

GAMMA_GRID = (0.0, 0.01, 0.1, 1.0, 10.0, 100.0, 1e3, 1e4)
GAMMA_MAX = 1e8


def with_points(samples: HessianSamples, thetas, sail, kl) -> HessianSamples:
    return HessianSamples(
        np.concatenate([samples.thetas, np.asarray(thetas)]),
        np.concatenate([samples.sail, np.asarray(sail)]),
        np.concatenate([samples.kl, np.asarray(kl)]),
    )


def curvature_curve(samples: HessianSamples, gammas) -> list[dict]:
    """[{gamma, max_hessian_eig}] over the samples."""
    return [{"gamma": float(g), "max_hessian_eig": worst_curvature(samples, g)} for g in sorted(set(gammas))]


def concave_gamma_interval(samples: HessianSamples, tol: float = 1e-6) -> tuple[float, float, float, float]:
    """The γ for which every sample has λ_max(∇²J − γ∇²KL) ≤ 0: (low, high, γ̂, f(γ̂)).

    f(γ) = max over samples of λ_max(Uᵀ(∇²J − γ∇²KL)U) is convex in γ (a maximum of the affine
    functions γ ↦ uᵀ(∇²J − γ∇²KL)u), so {f ≤ 0} is an interval: empty (low = high = ∞) when
    min_γ f > 0, which happens for every γ as soon as one sample has ∇²KL with a negative
    eigenvalue and another has ∇²J with a positive one. γ̂ minimises f on [0, 10⁸] (log grid, then
    golden section to 10⁻⁴ relative); the ends are found by bisection to ``tol``. high = ∞ when f(10⁸) ≤ 0."""

    def f(g):
        return float(np.linalg.eigvalsh(samples.sail - g * samples.kl)[..., -1].max()) if samples.sail.size else 0.0

    if f(0.0) <= 0 and f(GAMMA_MAX) <= 0:
        return 0.0, math.inf, 0.0, f(0.0)
    grid = np.concatenate([[0.0], np.logspace(-3, math.log10(GAMMA_MAX), 34)])
    values = np.array([f(g) for g in grid])
    i = int(np.argmin(values))
    a, b = grid[max(i - 1, 0)], grid[min(i + 1, grid.size - 1)]
    ratio = (math.sqrt(5) - 1) / 2
    while b - a > 1e-4 * max(b, 1e-12):
        c, d = b - ratio * (b - a), a + ratio * (b - a)
        a, b = (a, d) if f(c) <= f(d) else (c, b)
    best = min((values[i], grid[i]), (f(0.5 * (a + b)), 0.5 * (a + b)))
    best_value, best_gamma = float(best[0]), float(best[1])
    if best_value > 0:
        return math.inf, math.inf, best_gamma, best_value

    def boundary(inside, outside):
        while abs(outside - inside) > tol * max(abs(inside), abs(outside), 1e-12):
            mid = 0.5 * (inside + outside)
            inside, outside = (mid, outside) if f(mid) <= 0 else (inside, mid)
        return inside

    low = 0.0 if f(0.0) <= 0 else boundary(best_gamma, 0.0)
    high = math.inf if f(GAMMA_MAX) <= 0 else boundary(best_gamma, GAMMA_MAX)
    return low, high, best_gamma, best_value


def empirical_gamma_c(problem, samples: HessianSamples, rng: np.random.Generator, rounds: int = 2, iterations: int = 10):
    """(interval report, samples with refined points): :func:`concave_gamma_interval`, then local
    search at γ_c for a point of positive curvature, which joins the samples (as
    :mod:`sail.theory.gamma_scan` does)."""
    low, high, best_gamma, best_value = concave_gamma_interval(samples)
    for _ in range(rounds):
        if not math.isfinite(low) or iterations <= 0:
            break
        top = np.argsort([lambda_max(m) for m in samples.combined(low)])[::-1][:2]

        def curvature(theta, g=low):
            s, k = restricted_hessians(problem, theta)
            return lambda_max(s - g * k)

        value, theta = refine_max(problem, curvature, samples.thetas[top], rng, iterations)
        if value <= 1e-12:
            break
        s, k = restricted_hessians(problem, theta)
        samples = with_points(samples, theta[None], s[None], k[None])
        low, high, best_gamma, best_value = concave_gamma_interval(samples)
    report = {
        "gamma_c_hat": low if math.isfinite(low) else None,
        "gamma_c_infinite": not math.isfinite(low),
        "concave_gamma_interval": [low, high] if math.isfinite(low) else None,
        "least_curvature_over_gamma": {"gamma": best_gamma, "max_hessian_eig": best_value},
    }
    return report, samples


def curvature_at(problem, theta, gammas) -> list[dict]:
    """[{gamma, max_hessian_eig}] at the single point θ (e.g. θ₀)."""
    s, k = restricted_hessians(problem, theta)
    return [{"gamma": float(g), "max_hessian_eig": lambda_max(s - g * k)} for g in sorted(set(gammas))]


def template_constants(samples: HessianSamples) -> dict:
    """λ_F = min λ_min(∇²KL), M = max λ_max(∇²J) over the samples, and γ_c = M/λ_F."""
    lambda_f = min(lambda_min(k) for k in samples.kl)
    big_m = max(lambda_max(s) for s in samples.sail)
    gamma_c = big_m / lambda_f if lambda_f > 0 else math.inf
    return {"lambda_F": lambda_f, "M": big_m, "gamma_c": max(gamma_c, 0.0)}


def kl_null_certificate(problem, rtol: float = 1e-10) -> dict:
    """At θ₀ (the minimiser of the KL, so ∇²KL(θ₀) ⪰ 0): N = null space of ∇²KL(θ₀) on U. Along N
    the γ-term vanishes, so ∇²J_γ(θ₀) is indefinite for every γ if Nᵀ∇²J N has a positive
    eigenvalue, or if it is 0 while the cross block Nᵀ∇²J N⊥ is not (block argument above). LoRA's
    rescaling orbits (cB, A/c) and, at B = 0, all of A lie in N."""
    sail, kl = restricted_hessians(problem, problem.theta_ref)
    eig, vec = np.linalg.eigh(kl)
    scale = max(np.abs(eig).max() if eig.size else 0.0, np.abs(sail).max() if sail.size else 0.0, 1e-300)
    null = np.abs(eig) <= rtol * scale
    n_basis, rest = vec[:, null], vec[:, ~null]
    on_null = n_basis.T @ sail @ n_basis
    top = lambda_max(on_null) if null.any() else -math.inf
    cross = float(np.linalg.norm(n_basis.T @ sail @ rest)) if null.any() and (~null).any() else 0.0
    zero_block = null.any() and np.abs(on_null).max() <= 1e3 * rtol * scale
    return {
        "kl_hessian_null_dim": int(null.sum()),
        "sail_hessian_on_null_max_eig": top if null.any() else None,
        "sail_hessian_cross_norm": cross,
        "indefinite_for_every_gamma": bool(top > 1e3 * rtol * scale or (zero_block and cross > 1e3 * rtol * scale)),
    }


def zero_block_certificate(problem, block: np.ndarray, rtol: float = 1e-12) -> dict:
    """At θ₀: the largest |entries| of the ``block``–``block`` and cross blocks of ∇²J and ∇²KL,
    and whether they prove ∇²J_γ indefinite for every γ (zero blocks, non-zero cross block of J)."""
    t = problem.terms(problem.theta_ref, order=2)
    sail, kl = t.sail_hess.numpy(), t.kl_hess.numpy()
    rest = ~block
    out = {
        "a_block_max_abs_sail": float(np.abs(sail[np.ix_(block, block)]).max()),
        "a_block_max_abs_kl": float(np.abs(kl[np.ix_(block, block)]).max()),
        "cross_block_max_abs_sail": float(np.abs(sail[np.ix_(block, rest)]).max()),
        "cross_block_max_abs_kl": float(np.abs(kl[np.ix_(block, rest)]).max()),
    }
    scale = max(np.abs(sail).max(), np.abs(kl).max(), 1e-300)
    cross_sail, cross_kl = sail[np.ix_(block, rest)].ravel(), kl[np.ix_(block, rest)].ravel()
    if np.linalg.norm(cross_kl) > 0:  # C_γ = C_J − γC_KL vanishes for some γ only if C_J ∥ C_KL
        cross_sail = cross_sail - (cross_sail @ cross_kl) / (cross_kl @ cross_kl) * cross_kl
    out["indefinite_for_every_gamma"] = bool(
        out["a_block_max_abs_sail"] <= rtol * scale
        and out["a_block_max_abs_kl"] <= rtol * scale
        and np.abs(cross_sail).max() > 1e3 * rtol * scale
    )
    return out
