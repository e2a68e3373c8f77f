"""The exact problem max_{θ ∈ Θ} J_γ(θ) for one instance, in the form the checkers use.

Θ = {‖θ − θ_ref‖ ≤ R}. Everything is evaluated by :meth:`LogLinearPolicy.population`, the
same code path whose objective functions the training loop uses.

Identifiable subspace. J_γ depends on θ only through the centred scores
(θ − θ_ref)ᵀ(φ(x, y) − φ(x, y')), so it is constant along directions n with
nᵀ(φ(x, y) − φ(x, y')) = 0 for all x with ρ(x) > 0 (tabular features have one per context).
Hessians vanish on those directions; curvature statements (λ_F, M, strong concavity) are made
on the complement U = span{φ(x, y) − φ(x, y')}, and ball points are drawn in θ_ref + U, which
loses nothing because dropping a null component only shortens θ − θ_ref.
"""

from __future__ import annotations

import numpy as np
import torch

from sail.policies.loglinear import DTYPE, LogLinearPolicy, PopulationTerms
from sail.theory.instance import Instance


def identifiable_basis(features: np.ndarray, context_probs: np.ndarray, rtol: float = 1e-10) -> np.ndarray:
    """Orthonormal basis [d, k] of span{φ(x, y) − φ(x, y') : ρ(x) > 0}."""
    centred = features - features.mean(axis=1, keepdims=True)
    rows = centred[context_probs > 0].reshape(-1, features.shape[2])
    _, sing, vt = np.linalg.svd(rows, full_matrices=False)
    if sing.size == 0 or sing[0] == 0:
        return np.zeros((features.shape[2], 0))
    k = int(np.sum(sing > rtol * sing[0]))
    return vt[:k].T


class ExactProblem:
    """J_γ, its derivatives, the ball projection and the gradient mapping for an instance."""

    def __init__(self, instance: Instance):
        self.instance = instance
        self.policy = LogLinearPolicy(instance.features, instance.theta_ref)
        self.reward = torch.as_tensor(instance.reward, dtype=DTYPE)
        self.context_probs = torch.as_tensor(instance.context_probs, dtype=DTYPE)
        self.theta_ref = np.asarray(instance.theta_ref, dtype=np.float64)
        self.radius = instance.radius
        self.gamma = instance.gamma
        self.basis = identifiable_basis(instance.features, instance.context_probs)
        self.feature_bound = float(np.linalg.norm(instance.features, axis=-1).max())

    @property
    def dim(self) -> int:
        return self.theta_ref.shape[0]

    @property
    def rank(self) -> int:
        return self.basis.shape[1]

    def terms(self, theta, order: int = 2, gamma: float | None = None) -> PopulationTerms:
        gamma = self.gamma if gamma is None else gamma
        i = self.instance
        return self.policy.population(
            self.reward, self.context_probs, i.beta, gamma, i.kl, theta=torch.as_tensor(theta, dtype=DTYPE), order=order
        )

    def value(self, theta) -> float:
        return float(self.terms(theta, order=0).value)

    def value_and_grad(self, theta) -> tuple[float, np.ndarray]:
        t = self.terms(theta, order=1)
        return float(t.value), t.grad.numpy()

    def restrict(self, matrix) -> np.ndarray:
        """Uᵀ H U: a Hessian on the identifiable subspace."""
        m = matrix.numpy() if isinstance(matrix, torch.Tensor) else np.asarray(matrix)
        return self.basis.T @ m @ self.basis

    def project(self, theta: np.ndarray) -> np.ndarray:
        """Euclidean projection onto the ball ‖θ − θ_ref‖ ≤ R."""
        offset = np.asarray(theta) - self.theta_ref
        norm = np.linalg.norm(offset)
        if norm <= self.radius:
            return np.array(theta, dtype=np.float64)
        return self.theta_ref + offset * (self.radius / norm)

    def gradient_mapping(self, theta: np.ndarray, grad: np.ndarray, lipschitz: float) -> np.ndarray:
        """G_L(θ) = L·(P_Θ(θ + ∇J_γ(θ)/L) − θ); equals ∇J_γ(θ) where the step stays inside Θ."""
        return lipschitz * (self.project(theta + grad / lipschitz) - theta)

    def from_coords(self, coords: np.ndarray) -> np.ndarray:
        """θ = θ_ref + U v for coordinates v (batched on the leading axes)."""
        return self.theta_ref + np.asarray(coords) @ self.basis.T

    def sample_ball(self, n: int, rng: np.random.Generator, surface_fraction: float = 0.25) -> np.ndarray:
        """n points of θ_ref + U·B_R: uniform in the ball, a fraction on its sphere, and θ_ref."""
        k = self.rank
        if k == 0 or n <= 0:
            return np.repeat(self.theta_ref[None], max(n, 1), axis=0)
        directions = rng.standard_normal((n, k))
        directions /= np.linalg.norm(directions, axis=1, keepdims=True)
        radii = self.radius * rng.uniform(size=(n, 1)) ** (1.0 / k)
        n_surface = int(surface_fraction * n)
        radii[:n_surface] = self.radius
        coords = directions * radii
        coords[-1] = 0.0
        return self.from_coords(coords)
