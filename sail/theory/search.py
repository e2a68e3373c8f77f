"""Search over the ball Θ for extreme curvature: sampled Hessians plus a local refinement.

Minima and maxima over Θ of λ_min, λ_max and norms of Hessians are not available in closed form;
they are estimated by evaluating exact Hessians at many ball points (uniform, on the sphere, θ_ref
and any extra points such as the optimiser's trajectory) and refining the best candidates by a
projected random search with shrinking steps. The estimates approach the true extremes from the
inside (a searched max is ≤ the true max).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from sail.theory.problem import ExactProblem


@dataclass
class HessianSamples:
    """Restricted Hessians Uᵀ∇²J U and Uᵀ∇²KL U at sampled points."""

    thetas: np.ndarray  # [n, d]
    sail: np.ndarray  # [n, k, k]
    kl: np.ndarray  # [n, k, k]

    def combined(self, gamma: float) -> np.ndarray:
        return self.sail - gamma * self.kl


def restricted_hessians(problem: ExactProblem, theta) -> tuple[np.ndarray, np.ndarray]:
    t = problem.terms(theta, order=2)
    return problem.restrict(t.sail_hess), problem.restrict(t.kl_hess)


def hessian_samples(problem: ExactProblem, thetas: np.ndarray) -> HessianSamples:
    pairs = [restricted_hessians(problem, th) for th in thetas]
    return HessianSamples(np.asarray(thetas), np.stack([p[0] for p in pairs]), np.stack([p[1] for p in pairs]))


def refine_max(
    problem: ExactProblem,
    score: Callable[[np.ndarray], float],
    starts: np.ndarray,
    rng: np.random.Generator,
    iterations: int = 40,
) -> tuple[float, np.ndarray]:
    """Maximise ``score`` over θ_ref + U·B_R by projected random search from each start."""
    best_value, best_theta = -np.inf, starts[0]
    k = problem.rank
    for theta in starts:
        value = score(theta)
        step = problem.radius / 4.0
        for _ in range(iterations):
            if k == 0:
                break
            direction = problem.basis @ rng.standard_normal(k)
            candidate = problem.project(theta + step * direction / max(np.linalg.norm(direction), 1e-300))
            candidate_value = score(candidate)
            if candidate_value > value:
                theta, value = candidate, candidate_value
                step *= 1.5
            else:
                step *= 0.7
            if step < 1e-6 * problem.radius:
                break
        if value > best_value:
            best_value, best_theta = value, theta
    return best_value, best_theta


def extreme(
    problem: ExactProblem,
    samples: HessianSamples,
    quantity: Callable[[np.ndarray, np.ndarray], float],
    rng: np.random.Generator,
    n_refine: int = 3,
    iterations: int = 40,
) -> tuple[float, np.ndarray]:
    """max over Θ of quantity(Uᵀ∇²J U, Uᵀ∇²KL U): best sample, then refined (min: negate)."""
    values = np.array([quantity(s, k) for s, k in zip(samples.sail, samples.kl)])
    order = np.argsort(values)[::-1][:n_refine]
    refined_value, refined_theta = refine_max(
        problem, lambda th: quantity(*restricted_hessians(problem, th)), samples.thetas[order], rng, iterations
    )
    if values[order[0]] >= refined_value:
        return float(values[order[0]]), samples.thetas[order[0]]
    return float(refined_value), refined_theta


def lambda_max(matrix: np.ndarray) -> float:
    return float(np.linalg.eigvalsh(matrix)[-1]) if matrix.size else 0.0


def lambda_min(matrix: np.ndarray) -> float:
    return float(np.linalg.eigvalsh(matrix)[0]) if matrix.size else 0.0


def spectral_norm(matrix: np.ndarray) -> float:
    return float(np.abs(np.linalg.eigvalsh(matrix)).max()) if matrix.size else 0.0
