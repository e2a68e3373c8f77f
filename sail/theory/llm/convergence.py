"""θ*, the PL ratio μ̂, the smoothness L̂ and the rate of exact projected ascent on the transformer.

The definitions are those of ``sail check pl`` (:mod:`sail.theory.pl`), on Θ = {‖θ − θ₀‖ ≤ R}:

* L̂ = max ‖∇²J_γ‖ over the sampled ball points (refined by local search) and the ascent path;
* θ*, J_γ* = max_Θ J_γ: multi-start accelerated projected ascent (θ₀ and random ball points), the
  best two polished by trust-region Newton steps with the exact Hessian — below γ_c the problem is
  not concave, so one start is not enough (``local_maxima_values`` lists where each start ended);
* μ̂ = min over the sampled points and the path of ½D_L(θ)/(J_γ* − J_γ(θ)), D_L = 2⟨∇J_γ, G_L⟩ −
  ‖G_L‖², G_L = L̂(P_Θ(θ + ∇J_γ/L̂) − θ) (the proximal-PL form; ½‖G_L‖²/gap is reported beside it);
* the rate: θ_{k+1} = P_Θ(θ_k + ∇J_γ(θ_k)/L̂) from the sphere point opposite θ*; ``rate_slope`` is the
  least-squares slope of log(J_γ* − J_γ(θ_k)), to compare with log(1 − μ̂/L̂);
* ``gradient_mapping_norm_star`` = ‖G(θ*)‖ with G = (P(θ* + t∇J_γ) − θ*)/t, t = 1/L̂ (0 at a
  stationary point of the constrained problem).
"""

from __future__ import annotations

import math

import numpy as np

from sail.theory.ascent import accelerated_ascent, projected_ascent
from sail.theory.llm.curvature import with_points
from sail.theory.llm.trust_region import trust_region_ascent
from sail.theory.pl import GAP_FLOOR, fit_rate_slope, prox_pl_ratio, rate_start
from sail.theory.search import HessianSamples, extreme, hessian_samples, spectral_norm


def smoothness(problem, samples: HessianSamples, rng: np.random.Generator, iterations: int) -> float:
    """L̂ = max ‖Uᵀ(∇²J − γ∇²KL)U‖ over the samples, refined by ``iterations`` local-search steps."""
    gamma = problem.gamma
    value, _ = extreme(problem, samples, lambda s, k: spectral_norm(s - gamma * k), rng, n_refine=2, iterations=iterations)
    return max(value, 1e-12)


def global_max(
    problem, lipschitz: float, starts: np.ndarray, iterations: int, polish: int = 2, polish_iterations: int = 20
) -> tuple[np.ndarray, float, list[float]]:
    """(θ*, J_γ*, the value reached from each start): accelerated projected ascent from every start,
    then trust-region Newton polish (:mod:`sail.theory.llm.trust_region`) of the ``polish`` best."""
    ascended = [accelerated_ascent(problem, start, lipschitz, max_iterations=iterations, tol=1e-12) for start in starts]
    for i in np.argsort([-value for _, value in ascended])[:polish]:
        ascended[i] = trust_region_ascent(problem, ascended[i][0], iterations=polish_iterations)
    values = [float(value) for _, value in ascended]
    best = int(np.argmax(values))
    return ascended[best][0], values[best], values


def path_samples(problem, thetas: np.ndarray, count: int) -> HessianSamples:
    """Hessians at ``count`` points spread along an ascent path (its start included)."""
    idx = np.unique(np.linspace(0, len(thetas) - 1, min(count, len(thetas))).round().astype(int))
    return hessian_samples(problem, thetas[idx])


def convergence_check(
    problem,
    samples: HessianSamples,
    rng: np.random.Generator,
    n_starts: int = 4,
    ascent_iterations: int = 300,
    rate_iterations: int = 150,
    refine_iterations: int = 10,
    path_points: int = 8,
    polish_iterations: int = 20,
) -> tuple[dict, HessianSamples, np.ndarray]:
    """(the PL/rate report, the samples extended by the ascent path's Hessians, θ*)."""
    gamma = problem.gamma
    lipschitz = smoothness(problem, samples, rng, refine_iterations)
    starts = problem.sample_ball(n_starts, rng)[::-1]  # θ₀ first, then random ball points
    theta_star, max_value, finals = global_max(problem, lipschitz, starts, ascent_iterations, polish_iterations=polish_iterations)
    for _ in range(2):  # redo once if the path shows a larger curvature than the search
        trajectory = projected_ascent(problem, rate_start(problem, theta_star, rng), 1.0 / lipschitz, rate_iterations)
        path = path_samples(problem, trajectory.thetas, path_points)
        path_lipschitz = max(spectral_norm(s - gamma * k) for s, k in zip(path.sail, path.kl))
        if path_lipschitz <= lipschitz * (1 + 1e-9):
            break
        lipschitz = path_lipschitz
    if trajectory.values.max() > max_value:  # the path found a better point: polish from there
        theta, value = global_max(problem, lipschitz, trajectory.thetas[-1:], ascent_iterations, polish_iterations=polish_iterations)[:2]
        if value > max_value:
            theta_star, max_value = theta, value
    max_value = max(max_value, float(trajectory.values.max()))
    all_samples = with_points(samples, path.thetas, path.sail, path.kl)

    mu_hat, mu_hat_g, n_used = math.inf, math.inf, 0
    floor = GAP_FLOOR * max(1.0, abs(max_value))
    for theta in np.concatenate([all_samples.thetas, trajectory.thetas]):
        ratio, ratio_g, gap = prox_pl_ratio(problem, theta, max_value, lipschitz)
        if gap > floor:
            mu_hat, mu_hat_g, n_used = min(mu_hat, ratio), min(mu_hat_g, ratio_g), n_used + 1
    slope, n_fit = fit_rate_slope(trajectory.values, max_value)
    bound = math.log1p(-min(mu_hat, lipschitz) / lipschitz) if math.isfinite(mu_hat) and mu_hat > 0 else math.nan
    grad = problem.value_and_grad(theta_star)[1]
    mapping = problem.gradient_mapping(theta_star, grad, lipschitz)
    report = {
        "objective_star": max_value,
        "max_objective": max_value,
        "theta_star_on_boundary": bool(np.linalg.norm(theta_star - problem.theta_ref) > problem.radius * (1 - 1e-6)),
        "theta_star_distance": float(np.linalg.norm(theta_star - problem.theta_ref)),
        "local_maxima_values": [float(v) for v in finals],
        "gradient_mapping_norm_star": float(np.linalg.norm(mapping)),
        "pl_mu_hat": mu_hat,
        "pl_mu_hat_gradient_mapping": mu_hat_g,
        "pl_points": n_used,
        "smoothness_hat": lipschitz,
        "rate_slope": slope,
        "rate_slope_bound": bound,
        "rate_points": n_fit,
        "gap_trajectory": (max_value - trajectory.values).tolist(),
    }
    return report, all_samples, theta_star
