"""Trust-region Newton ascent on the ball ‖θ − θ₀‖ ≤ R, to polish a maximiser to float64 accuracy.

Below γ_c the Hessian is indefinite and first-order ascent with η = 1/L̂ crawls along flat
directions (e.g. LoRA's rescaling orbits), so θ* is polished with exact Hessians. In the
coordinates v = Uᵀ(θ − θ₀) of the identifiable subspace, with g = Uᵀ∇J_γ, H = Uᵀ∇²J_γ U:

* on the sphere ‖v‖ = R with λ = ⟨v, g⟩/R² ≥ 0 (the gradient points outward), the model is the
  Riemannian one on the sphere: tangent basis T (⊥ v), g_T = Tᵀg, B = Tᵀ(H − λI)T; a step s = Tŝ
  is retracted by v ↦ R(v + s)/‖v + s‖;
* otherwise the model is g, B = H in the full space, and the step is projected onto the ball.

The subproblem max_{‖ŝ‖ ≤ Δ} g_Tᵀŝ + ½ŝᵀBŝ is solved exactly through the eigen-decomposition of B
(ŝ = (μI − B)⁻¹g_T with μ ≥ max(λ_max(B), 0) and ‖ŝ‖ = Δ unless the Newton step fits), and Δ
follows the usual ratio test ρ = actual / predicted increase.
"""

from __future__ import annotations

import numpy as np


def subproblem_step(g: np.ndarray, hess: np.ndarray, radius: float) -> np.ndarray:
    """argmax_{‖s‖ ≤ radius} gᵀs + ½sᵀHs, exactly, by eigen-decomposition H = QΛQᵀ.

    s(μ) = Q(μ − Λ)⁻¹Qᵀg for μ ≥ μ₀ = max(λ_max, 0): the Newton step (μ = 0) when H ≺ 0 and it
    fits; else the μ > μ₀ with ‖s(μ)‖ = radius (bisection; ‖s(μ)‖ decreases in μ); in the hard case
    (‖s(μ₀)‖ < radius with g ⊥ the top eigenvectors) s(μ₀) plus a top-eigenvector component."""
    eig, vec = np.linalg.eigh(hess)
    gq = vec.T @ g
    if eig[-1] < 0:
        newton = -gq / eig
        if np.linalg.norm(newton) <= radius:
            return vec @ newton
    low = max(eig[-1], 0.0)
    gap = low - eig
    top = gap <= 1e-12 * max(1.0, abs(low))
    scale = max(np.linalg.norm(g), 1e-300)
    if np.any(np.abs(gq[top]) > 1e-12 * scale) or np.linalg.norm(gq[~top] / gap[~top]) > radius:
        lo, hi = low, low + scale / radius
        for _ in range(200):
            mid = 0.5 * (lo + hi)
            if not lo < mid < hi:
                break
            lo, hi = (mid, hi) if np.linalg.norm(gq / (mid - eig)) > radius else (lo, mid)
        return vec @ (gq / (hi - eig))
    step = np.zeros_like(gq)
    step[~top] = gq[~top] / gap[~top]
    step[np.nonzero(top)[0][-1]] = np.sqrt(max(radius**2 - step @ step, 0.0))
    return vec @ step


def tangent_basis(v: np.ndarray) -> np.ndarray:
    """Orthonormal basis [k, k−1] of the complement of v."""
    q, _ = np.linalg.qr(np.column_stack([v, np.eye(v.size)]))
    return q[:, 1 : v.size]


def trust_region_ascent(problem, theta: np.ndarray, iterations: int = 30, tol: float = 1e-11) -> tuple[np.ndarray, float]:
    """Polish θ towards a local maximiser of J_γ on the ball; returns (θ, J_γ(θ))."""
    basis, radius = problem.basis, problem.radius
    if basis.shape[1] == 0:
        return theta, problem.value(theta)
    v = basis.T @ (theta - problem.theta_ref)
    value = problem.value(theta)
    delta = 0.1 * radius
    derivatives = None
    for _ in range(iterations):
        if derivatives is None:  # recomputed only after an accepted step
            t = problem.terms(problem.from_coords(v), order=2)
            derivatives = basis.T @ t.grad.numpy(), problem.restrict(t.hess)
        g, hess = derivatives
        lam = float(v @ g) / radius**2
        on_sphere = np.linalg.norm(v) >= radius * (1 - 1e-9) and lam >= 0
        if on_sphere:
            tangent = tangent_basis(v)
            g_model, b_model = tangent.T @ g, tangent.T @ (hess - lam * np.eye(v.size)) @ tangent
        else:
            tangent, g_model, b_model = None, g, hess
        if np.linalg.norm(g_model) <= tol * max(1.0, np.linalg.norm(g)):
            break
        step = subproblem_step(g_model, b_model, delta)
        predicted = float(g_model @ step + 0.5 * step @ b_model @ step)
        if on_sphere:
            candidate = (v + tangent @ step) * (radius / np.linalg.norm(v + tangent @ step))
        else:
            candidate = v + step
            if np.linalg.norm(candidate) > radius:
                candidate = candidate * (radius / np.linalg.norm(candidate))
        candidate_value = problem.value(problem.from_coords(candidate))
        ratio = (candidate_value - value) / predicted if predicted > 0 else -1.0
        if ratio < 0.25:
            delta *= 0.25
        elif ratio > 0.75 and np.linalg.norm(step) >= 0.99 * delta:
            delta = min(2 * delta, 2 * radius)
        if candidate_value > value:
            moved = np.linalg.norm(candidate - v)
            v, value, derivatives = candidate, candidate_value, None
            if moved <= tol * max(1.0, radius):
                break
        if delta < 1e-14 * radius:
            break
    return problem.from_coords(v), value
