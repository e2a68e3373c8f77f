"""The exact problem max_{‖θ − θ₀‖ ≤ R} J_γ(θ) on the tiny transformer, in float64.

With ℓ_θ(x, y) = log π_θ(y|x) over the listed responses (:class:`Parametrisation`), ℓ_ref = ℓ_θ₀,
Δ(y₁, y₂) = (ℓ_θ − ℓ_ref)(y₁) − (ℓ_θ − ℓ_ref)(y₂) and the soft Bradley–Terry label
p = σ(r*(y₁) − r*(y₂)),

    J_x      = Σ_{y₁, y₂} π_θ(y₁|x) π_θ(y₂|x) [p log σ(βΔ) + (1 − p) log σ(−βΔ)]   (y₁ = y₂ included)
    J_γ(θ)  = Σ_x ρ(x) [J_x − γ KL_dir(x)],

the KL taken exactly over the listed responses. The pair term and the KL are
:func:`sail.objectives.pair_term` and :func:`sail.objectives.kl_exact`, the functions the training
loss uses. Gradients and Hessians of (J, KL) come from ``torch.func`` (reverse mode for the
gradient, forward-over-reverse for the Hessian), exact up to float64 round-off.

The class reuses :class:`sail.theory.problem.ExactProblem`'s ball geometry (projection, gradient
mapping, sampling on the identifiable subspace, restriction of Hessians), so the log-linear
checkers' searches (:mod:`sail.theory.ascent`, :mod:`sail.theory.search`) run on it unchanged.

Curvature statements are made on the parametrisation's identifiable subspace U
(``param.identifiable_basis()``, see :mod:`sail.theory.llm.parametrisation`), along whose
complement J_γ is constant.
"""

from __future__ import annotations

import numpy as np
import torch
from torch.func import jacfwd, jacrev

from sail.objectives import kl_exact, pair_term
from sail.policies.loglinear import PopulationTerms
from sail.theory.llm.parametrisation import DTYPE, Parametrisation
from sail.theory.problem import ExactProblem


class TransformerProblem(ExactProblem):
    """J_γ, its parts and derivatives on the ball ‖θ − θ₀‖ ≤ R of one parametrisation."""

    def __init__(self, param: Parametrisation, gamma: float | None = None, kl_direction: str | None = None):
        inst = param.instance
        self.param = param
        self.instance = inst
        self.gamma = inst.gamma if gamma is None else float(gamma)
        self.kl_direction = kl_direction or inst.kl_direction
        self.radius = float(inst.radius)
        self.beta = float(inst.beta)
        self.theta_ref = param.theta0.numpy().copy()
        self.context_probs = torch.as_tensor(inst.context_probs, dtype=DTYPE)
        rewards = torch.as_tensor(inst.rewards, dtype=DTYPE)
        self.p_star = torch.sigmoid(rewards[:, :, None] - rewards[:, None, :])
        with torch.no_grad():
            self.ref_log_probs = param.log_probs(param.theta0)
        self.basis = param.identifiable_basis()

    # --- the objective ---------------------------------------------------------------------
    def parts_from_log_probs(self, log_probs: torch.Tensor, kl_direction: str | None = None) -> torch.Tensor:
        """(J, E_ρ KL) from log π_θ [X, N] (differentiable)."""
        ratio = log_probs - self.ref_log_probs
        delta = ratio[:, :, None] - ratio[:, None, :]
        probs = log_probs.exp()
        weights = probs[:, :, None] * probs[:, None, :]
        per_prompt = (weights * pair_term(delta, self.p_star, self.beta)).sum((1, 2))
        kl = kl_exact(log_probs, self.ref_log_probs, kl_direction or self.kl_direction)
        return torch.stack([self.context_probs @ per_prompt, self.context_probs @ kl])

    def parts(self, theta: torch.Tensor, kl_direction: str | None = None) -> torch.Tensor:
        return self.parts_from_log_probs(self.param.log_probs(theta), kl_direction)

    def terms(self, theta, order: int = 2, gamma: float | None = None, kl_direction: str | None = None) -> PopulationTerms:
        """J_γ = J − γ·KL with its parts, and their gradients (order ≥ 1) and Hessians (order 2)."""
        gamma = self.gamma if gamma is None else gamma
        theta = torch.as_tensor(np.asarray(theta), dtype=DTYPE)

        def with_value(th):
            value = self.parts(th, kl_direction)
            return value, value.detach()

        if order == 0:
            with torch.no_grad():
                sail, kl = self.parts(theta, kl_direction)
            return PopulationTerms(sail - gamma * kl, sail, kl)
        if order == 1:
            grads, (sail, kl) = jacrev(with_value, has_aux=True)(theta)
            return PopulationTerms(sail - gamma * kl, sail, kl, grads[0] - gamma * grads[1], grads[0], grads[1])

        def gradient_with_value(th):
            grads, value = jacrev(with_value, has_aux=True)(th)
            return grads, (grads.detach(), value)

        hess, (grads, (sail, kl)) = jacfwd(gradient_with_value, has_aux=True)(theta)
        hess = 0.5 * (hess + hess.transpose(1, 2))
        return PopulationTerms(
            sail - gamma * kl,
            sail,
            kl,
            grads[0] - gamma * grads[1],
            grads[0],
            grads[1],
            hess[0] - gamma * hess[1],
            hess[0],
            hess[1],
        )

    def gradient(self, theta, gamma: float | None = None, kl_direction: str | None = None) -> np.ndarray:
        return self.terms(theta, order=1, gamma=gamma, kl_direction=kl_direction).grad.numpy()

    def log_probs(self, theta) -> torch.Tensor:
        with torch.no_grad():
            return self.param.log_probs(torch.as_tensor(np.asarray(theta), dtype=DTYPE))

    def random_point(self, rng: np.random.Generator) -> np.ndarray:
        """A point drawn uniformly from the ball θ₀ + U·B_R."""
        coords = rng.standard_normal(self.rank)
        coords *= self.radius * rng.uniform() ** (1.0 / self.rank) / np.linalg.norm(coords)
        return self.from_coords(coords)
