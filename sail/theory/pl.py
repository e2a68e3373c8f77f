"""The PL check: μ̂, L̂, curvature and the linear rate, beside the template's constants.

Definitions (maximisation; G_L(θ) = L(P_Θ(θ + ∇J_γ/L) − θ) is the gradient mapping):

* ``pl_mu_hat`` = min_θ ½D_L(θ)/(J_γ* − J_γ(θ)) with D_L = 2⟨∇J_γ, G_L⟩ − ‖G_L‖², the proximal-PL
  quantity of Karimi, Nutini & Schmidt (2016). D_L ≥ ‖G_L‖², with equality ‖∇J_γ‖² in the
  interior. μ-strong concavity implies ½D_L ≥ μ(J_γ* − J_γ) for every L ≥ μ, and projected
  ascent with η = 1/L then contracts the gap by (1 − μ/L) per step.
* ``pl_mu_hat_gradient_mapping`` = min_θ ½‖G_L‖²/(J_γ* − J_γ): the same with ‖G_L‖² (the two
  agree when the maximiser is interior). When the maximiser lies on the sphere this ratio → 0 at
  points approaching it from inside (G_L shrinks like the distance, the gap does not), so it is
  reported but the rate is predicted from ``pl_mu_hat``.
* ``smoothness_hat`` L̂ = max ‖∇²J_γ‖ and ``max_hessian_eig`` = max λ_max(∇²J_γ) on the
  identifiable subspace, searched over the ball and the ascent trajectory.
* ``rate_slope``: least-squares slope of log(J_γ* − J_γ(θ_k)) under projected ascent with
  η = 1/L̂, to compare with ``rate_slope_bound`` = log(1 − μ̂/L̂).

``theory`` holds the template constants evaluated on the ball (λ_F = min λ_min E_x∇²KL,
M = max λ_max ∇²J, γ_c = M/λ_F, μ = γλ_F − M, L = max‖∇²J‖ + γ max‖∇²KL‖) and, under
``theory.explicit``, the closed-form bounds of :mod:`sail.theory.constants`.
"""

from __future__ import annotations

import math

import numpy as np

from sail.theory.ascent import Trajectory, global_max, projected_ascent
from sail.theory.constants import explicit_constants, template_from
from sail.theory.problem import ExactProblem
from sail.theory.search import HessianSamples, extreme, hessian_samples, lambda_max, lambda_min, spectral_norm

GAP_FLOOR = 1e-9


def template_constants(problem: ExactProblem, samples: HessianSamples, rng: np.random.Generator) -> dict:
    """The PL template's λ_F, M and norm bounds, searched over the ball (see module docstring)."""
    neg_lambda_kl, _ = extreme(problem, samples, lambda s, k: -lambda_min(k), rng)
    curvature, _ = extreme(problem, samples, lambda s, k: lambda_max(s), rng)
    sail_norm, _ = extreme(problem, samples, lambda s, k: spectral_norm(s), rng)
    kl_norm, _ = extreme(problem, samples, lambda s, k: spectral_norm(k), rng)
    out = template_from(-neg_lambda_kl, curvature, sail_norm, kl_norm, problem.gamma)
    out["explicit"] = explicit_constants(problem)
    return out


def prox_pl_ratio(problem: ExactProblem, theta, max_value: float, lipschitz: float) -> tuple[float, float, float]:
    """(½D_L/gap, ½‖G_L‖²/gap, gap) at θ."""
    value, grad = problem.value_and_grad(theta)
    gap = max_value - value
    mapping = problem.gradient_mapping(theta, grad, lipschitz)
    d_value = 2.0 * float(grad @ mapping) - float(mapping @ mapping)
    if gap <= 0:
        return math.inf, math.inf, gap
    return 0.5 * d_value / gap, 0.5 * float(mapping @ mapping) / gap, gap


def fit_rate_slope(values: np.ndarray, max_value: float, floor: float | None = None) -> tuple[float, int]:
    """Least-squares slope of log gap over the iterates whose gap is above the numerical floor."""
    gaps = max_value - np.asarray(values)
    if floor is None:
        floor = max(1e-10 * gaps[0], 1e-12 * max(1.0, abs(max_value)))
    keep = np.nonzero(gaps > floor)[0]
    if keep.size < 3:
        return math.nan, int(keep.size)
    # Only the leading run above the floor: later points bounce around the floor.
    run_end = keep[np.argmax(np.diff(np.append(keep, keep[-1] + 2)) > 1)]
    idx = np.arange(0, run_end + 1)
    if idx.size < 3:
        return math.nan, int(idx.size)
    slope = np.polyfit(idx, np.log(gaps[idx]), 1)[0]
    return float(slope), int(idx.size)


def rate_start(problem: ExactProblem, theta_star: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A start on the sphere opposite θ* (far from the maximiser), or a random sphere point."""
    offset = theta_star - problem.theta_ref
    norm = np.linalg.norm(offset)
    if norm > 1e-8 * problem.radius:
        return problem.theta_ref - problem.radius * offset / norm
    coords = rng.standard_normal(problem.rank)
    return problem.from_coords(problem.radius * coords / max(np.linalg.norm(coords), 1e-300))


def pl_check(
    problem: ExactProblem, seed: int = 0, n_samples: int = 200, n_starts: int = 8, max_iterations: int = 3000
) -> dict:
    """Run the whole PL check on one instance and return a JSON-ready report."""
    rng = np.random.default_rng(seed)
    samples = hessian_samples(problem, problem.sample_ball(n_samples, rng))
    gamma = problem.gamma
    smoothness, _ = extreme(problem, samples, lambda s, k: spectral_norm(s - gamma * k), rng)
    theta_star, max_value, local_maxima = global_max(problem, max(smoothness, 1e-12), rng, n_starts)

    trajectory: Trajectory | None = None
    for _ in range(2):  # re-run once if the trajectory shows a larger curvature than the search
        start = rate_start(problem, theta_star, rng)
        trajectory = projected_ascent(problem, start, 1.0 / smoothness, max_iterations)
        max_value = max(max_value, float(trajectory.values.max()))
        gaps = max_value - trajectory.values
        converged = np.nonzero(gaps <= max(1e-13 * max(1.0, abs(max_value)), 1e-14))[0]
        end = int(converged[0]) + 1 if converged.size else len(gaps)
        path = hessian_samples(problem, trajectory.thetas[: max(end, 2)])
        path_smoothness = max(spectral_norm(s - gamma * k) for s, k in zip(path.sail, path.kl))
        if path_smoothness <= smoothness * (1 + 1e-9):
            break
        smoothness = path_smoothness
    trajectory.thetas, trajectory.values = trajectory.thetas[:end], trajectory.values[:end]

    all_samples = HessianSamples(
        np.concatenate([samples.thetas, path.thetas]),
        np.concatenate([samples.sail, path.sail]),
        np.concatenate([samples.kl, path.kl]),
    )
    max_eig, _ = extreme(problem, all_samples, lambda s, k: lambda_max(s - gamma * k), rng)
    mu_hat, mu_hat_g, n_used = math.inf, math.inf, 0
    for theta in all_samples.thetas:
        ratio, ratio_g, gap = prox_pl_ratio(problem, theta, max_value, smoothness)
        if gap > GAP_FLOOR * max(1.0, abs(max_value)):
            mu_hat, mu_hat_g, n_used = min(mu_hat, ratio), min(mu_hat_g, ratio_g), n_used + 1
    slope, n_fit = fit_rate_slope(trajectory.values, max_value)
    bound = math.log1p(-min(mu_hat, smoothness) / smoothness) if math.isfinite(mu_hat) else math.nan
    theory = template_constants(problem, all_samples, rng)
    return {
        "max_objective": max_value,
        "theta_star": theta_star.tolist(),
        "theta_star_on_boundary": bool(np.linalg.norm(theta_star - problem.theta_ref) > problem.radius * (1 - 1e-6)),
        "n_local_maxima_distinct": int(np.unique(np.round(local_maxima, 9)).size),
        "pl_mu_hat": mu_hat,
        "pl_mu_hat_gradient_mapping": mu_hat_g,
        "pl_points": n_used,
        "smoothness_hat": smoothness,
        "max_hessian_eig": max_eig,
        "rate_slope": slope,
        "rate_slope_bound": bound,
        "rate_points": n_fit,
        "gap_trajectory": (max_value - trajectory.values).tolist(),
        "theory": theory,
        "checks": {
            "mu_hat_positive": bool(mu_hat > 0),
            "mu_hat_ge_theory_mu": bool(mu_hat >= theory["mu"]),
            "mu_hat_ge_explicit_mu": bool(mu_hat >= theory["explicit"]["mu"]),
            "rate_within_bound": bool(slope <= bound + 1e-3) if math.isfinite(slope) else False,
            "smoothness_within_theory_L": bool(smoothness <= theory["explicit"]["L"]),
        },
    }
