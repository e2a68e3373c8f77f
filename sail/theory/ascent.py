"""Deterministic projected gradient ascent on the exact J_γ, and the global maximum on the ball.

* :func:`projected_ascent` is the algorithm the linear-rate theorem is about:
  θ_{k+1} = P_Θ(θ_k + η∇J_γ(θ_k)) with η = 1/L, for which a PL constant μ of the gradient-mapping
  (proximal-PL) form gives J_γ* − J_γ(θ_k) ≤ (1 − μ/L)^k (J_γ* − J_γ(θ_0)).
* :func:`global_max` finds J_γ* = max_Θ J_γ by multi-start accelerated projected ascent
  (FISTA with adaptive restart) followed by Newton polishing where the maximiser is interior.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sail.theory.problem import ExactProblem


@dataclass
class Trajectory:
    thetas: np.ndarray  # [K+1, d]
    values: np.ndarray  # [K+1]


def projected_ascent(problem: ExactProblem, theta0: np.ndarray, step: float, iterations: int) -> Trajectory:
    """θ_{k+1} = P_Θ(θ_k + step·∇J_γ(θ_k)), for ``iterations`` steps."""
    theta = problem.project(np.asarray(theta0, dtype=np.float64))
    thetas, values = [theta], []
    for _ in range(iterations):
        value, grad = problem.value_and_grad(theta)
        values.append(value)
        theta = problem.project(theta + step * grad)
        thetas.append(theta)
    values.append(problem.value(theta))
    return Trajectory(np.array(thetas), np.array(values))


def accelerated_ascent(
    problem: ExactProblem, theta0: np.ndarray, lipschitz: float, max_iterations: int = 20_000, tol: float = 1e-12
) -> tuple[np.ndarray, float]:
    """FISTA with function-value restart, stopped when ‖G_L‖ ≤ tol·max(1, L)."""
    theta = problem.project(np.asarray(theta0, dtype=np.float64))
    value = problem.value(theta)
    anchor, momentum = theta.copy(), 1.0
    for _ in range(max_iterations):
        _, grad = problem.value_and_grad(anchor)
        candidate = problem.project(anchor + grad / lipschitz)
        candidate_value = problem.value(candidate)
        if candidate_value < value:  # restart: drop momentum, take a plain projected step
            anchor, momentum = theta.copy(), 1.0
            _, grad = problem.value_and_grad(theta)
            candidate = problem.project(theta + grad / lipschitz)
            candidate_value = problem.value(candidate)
        next_momentum = 0.5 * (1.0 + np.sqrt(1.0 + 4.0 * momentum**2))
        anchor = problem.project(candidate + ((momentum - 1.0) / next_momentum) * (candidate - theta))
        done = np.linalg.norm(candidate - theta) * lipschitz <= tol * max(1.0, lipschitz)
        theta, value, momentum = candidate, max(candidate_value, value), next_momentum
        if done:
            break
    return theta, problem.value(theta)


def newton_polish(problem: ExactProblem, theta: np.ndarray, steps: int = 8) -> tuple[np.ndarray, float]:
    """Newton steps on the identifiable subspace, kept only while inside Θ and not worse."""
    value = problem.value(theta)
    for _ in range(steps):
        t = problem.terms(theta, order=2)
        hess = problem.restrict(t.hess)
        if hess.size == 0 or np.linalg.eigvalsh(hess)[-1] >= 0:
            break
        step = problem.basis @ np.linalg.solve(hess, -(problem.basis.T @ t.grad.numpy()))
        candidate = theta + step
        if np.linalg.norm(candidate - problem.theta_ref) > problem.radius:
            break
        candidate_value = problem.value(candidate)
        if candidate_value < value - 1e-15 * max(1.0, abs(value)):
            break
        theta, value = candidate, candidate_value
        if np.linalg.norm(step) < 1e-14:
            break
    return theta, value


def global_max(
    problem: ExactProblem, lipschitz: float, rng: np.random.Generator, n_starts: int = 8
) -> tuple[np.ndarray, float, np.ndarray]:
    """J_γ* by multi-start: θ_ref plus random ball points. Returns (θ*, J_γ*, all local maxima)."""
    starts = problem.sample_ball(max(n_starts, 1), rng)
    best_theta, best_value, finals = None, -np.inf, []
    for start in starts:
        theta, value = accelerated_ascent(problem, start, lipschitz)
        theta, value = newton_polish(problem, theta)
        finals.append(value)
        if value > best_value:
            best_theta, best_value = theta, value
    return best_theta, best_value, np.array(finals)
