"""The empirical γ_c: the smallest γ for which J_γ = J − γ·KL is concave at every searched ball point.

For each ball point θ, λ_max(∇²J(θ) − γ∇²KL(θ)) is evaluated on the identifiable subspace; the
curve max_θ λ_max(∇²J_γ) against γ is what the scan plots, beside the template's M − γλ_F: with
the explicit constants (an upper bound) and with the searched ones (an estimate, not a bound).
γ_c is found by bisection on the sampled curve, then the worst point at that γ is refined by local
search; if refinement finds positive curvature, the point joins the sample set and the bisection
is repeated. Like every searched figure it is an estimate (a search can miss the worst point).
"""

from __future__ import annotations

import math

import numpy as np

from sail.theory.pl import template_constants
from sail.theory.problem import ExactProblem
from sail.theory.search import HessianSamples, hessian_samples, lambda_max, refine_max, restricted_hessians


def worst_curvature(samples: HessianSamples, gamma: float) -> float:
    """max over samples of λ_max(Uᵀ(∇²J − γ∇²KL)U)."""
    return max(lambda_max(m) for m in samples.combined(gamma))


def bisect_gamma(samples: HessianSamples, gamma_max: float = 1e8, tol: float = 1e-6) -> float:
    """Smallest γ ≥ 0 with worst_curvature ≤ 0 on the samples (inf if none below gamma_max)."""
    if worst_curvature(samples, 0.0) <= 0:
        return 0.0
    lo, hi = 0.0, 1.0
    while worst_curvature(samples, hi) > 0:
        lo, hi = hi, 2.0 * hi
        if hi > gamma_max:
            return math.inf
    while hi - lo > tol * hi:
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if worst_curvature(samples, mid) > 0 else (lo, mid)
    return hi


def gamma_scan(problem: ExactProblem, seed: int = 0, n_samples: int = 200, n_gammas: int = 25, rounds: int = 3) -> dict:
    rng = np.random.default_rng(seed)
    samples = hessian_samples(problem, problem.sample_ball(n_samples, rng))
    gamma_c = bisect_gamma(samples)
    for _ in range(rounds):
        if not math.isfinite(gamma_c):
            break
        top = np.argsort([lambda_max(m) for m in samples.combined(gamma_c)])[::-1][:3]

        def curvature(theta, g=gamma_c):
            s, k = restricted_hessians(problem, theta)
            return lambda_max(s - g * k)

        value, theta = refine_max(problem, curvature, samples.thetas[top], rng)
        if value <= 1e-12:
            break
        s, k = restricted_hessians(problem, theta)
        samples = HessianSamples(
            np.concatenate([samples.thetas, theta[None]]),
            np.concatenate([samples.sail, s[None]]),
            np.concatenate([samples.kl, k[None]]),
        )
        gamma_c = bisect_gamma(samples)
    theory = template_constants(problem, samples, rng)
    explicit = theory["explicit"]
    top_gamma = max(1.25 * problem.gamma, 1.0)
    if math.isfinite(gamma_c) and gamma_c > 0:
        top_gamma = max(top_gamma, 3.0 * gamma_c)
        if math.isfinite(theory["gamma_c"]):  # show where the template's bound crosses zero
            top_gamma = max(top_gamma, 1.25 * min(theory["gamma_c"], 20.0 * gamma_c))
    gammas = np.linspace(0.0, top_gamma, n_gammas)
    curve = {
        "gamma": gammas.tolist(),
        "max_hessian_eig": [worst_curvature(samples, g) for g in gammas],
        "template_bound": [theory["M"] - g * theory["lambda_F"] for g in gammas],
        "explicit_bound": [explicit["M"] - g * explicit["lambda_F"] for g in gammas],
    }
    return {
        "gamma_c_empirical": gamma_c,
        "gamma_c_theory": theory["gamma_c"],
        "gamma_c_explicit": explicit["gamma_c"],
        "max_hessian_eig_vanilla": curve["max_hessian_eig"][0],
        "gamma": problem.gamma,
        "concave_at_instance_gamma": bool(worst_curvature(samples, problem.gamma) < 0),
        "theory": theory,
        "curve": curve,
    }

