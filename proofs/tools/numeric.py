"""Numeric side of the cross-checks: random log-linear worlds and per-context logit quantities.

Cross-checks evaluate a lambdified symbolic result in logit coordinates for each context and map
it to θ with the chain rule, ∇_θ = Φ_xᵀ∇_u and ∇²_θ = Φ_xᵀ∇²_uΦ_x, then compare with the
library (``sail.policies.loglinear.LogLinearPolicy.population`` and friends).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import sympy as sp
import torch

from sail.objectives import implicit_reward_diff, pair_term_derivatives
from sail.policies.loglinear import DTYPE, LogLinearPolicy
from sail.theory.instance import Instance, random_instance

__all__ = [
    "ContextQuantities",
    "World",
    "context_quantities",
    "lambdify",
    "max_abs_diff",
    "random_world",
    "scaled_diff",
]


@dataclass
class World:
    """A random instance, its policy and a random θ near θ_ref."""

    instance: Instance
    policy: LogLinearPolicy
    theta: np.ndarray

    def population(self, direction: str | None = None, gamma: float | None = None, theta=None, order: int = 2):
        """``LogLinearPolicy.population`` at θ (default: this world's) with the instance's γ and
        KL direction unless given: the library's J_γ, its gradient and, for ``order=2``, Hessian."""
        i = self.instance
        return self.policy.population(
            i.reward,
            i.context_probs,
            i.beta,
            i.gamma if gamma is None else gamma,
            direction or i.kl,
            theta=torch.as_tensor(self.theta if theta is None else theta, dtype=DTYPE),
            order=order,
        )


def random_world(
    seed: int, n_contexts: int = 3, n_responses: int = 4, dim: int = 3, spread: float = 0.8, **kw
) -> World:
    """``random_instance`` (keyword overrides ``kw``) with θ = θ_ref + spread·N(0, I)."""
    inst = random_instance(seed, n_contexts, n_responses, dim, **kw)
    rng = np.random.default_rng(seed + 1000)
    theta = inst.theta_ref + spread * rng.standard_normal(inst.theta_ref.shape[0])
    return World(inst, LogLinearPolicy(inst.features, inst.theta_ref), theta)


@dataclass
class ContextQuantities:
    """Per-context logit-coordinate numbers at θ (arrays over contexts x)."""

    p: np.ndarray  # π_θ(i|x), [X, K]
    q: np.ndarray  # π_ref(i|x), [X, K]
    logp: np.ndarray
    logq: np.ndarray
    ell: np.ndarray  # ℓ_ij and its Δ-derivatives, [3, X, K, K]


def context_quantities(world: World, theta=None) -> ContextQuantities:
    """π, π_ref and (ℓ, ℓ', ℓ'') at Δ_ij from the library's own functions."""
    inst = world.instance
    theta = world.theta if theta is None else theta
    logp = world.policy.log_probs(torch.as_tensor(theta, dtype=DTYPE)).detach()
    logq = world.policy.ref_log_probs
    delta = implicit_reward_diff(logp[:, :, None], logp[:, None, :], logq[:, :, None], logq[:, None, :])
    reward = torch.as_tensor(inst.reward, dtype=DTYPE)
    p_star = torch.sigmoid(reward[:, :, None] - reward[:, None, :])
    d = pair_term_derivatives(delta, p_star, inst.beta)
    ell = torch.stack([d.value, d.d1, d.d2]).numpy()
    return ContextQuantities(logp.exp().numpy(), logq.exp().numpy(), logp.numpy(), logq.numpy(), ell)


def lambdify(args, expr):
    """``sympy.lambdify`` to numpy; ``args`` may nest lists of symbols."""
    return sp.lambdify(args, expr, modules="numpy")


def max_abs_diff(a, b) -> float:
    """max |a − b| over all entries (0 for empty arrays)."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    return float(np.max(np.abs(a - b))) if a.size else 0.0


def scaled_diff(reference, value) -> float:
    """max |reference − value| / max(1, max |reference|): absolute for O(1) numbers, relative beyond."""
    reference = np.asarray(reference, dtype=np.float64)
    return max_abs_diff(reference, value) / max(1.0, float(np.abs(reference).max()) if reference.size else 1.0)
