"""Closed-form constants of the PL template (docs/theory.md §5).

On Θ = {‖θ − θ_ref‖ ≤ R} with B = max ‖φ(x, y)‖ and t = ‖θ_ref‖:

* |Δ| ≤ 2RB,   |ℓ| ≤ ℓ_max = log 2 + 2βRB,   ‖∇ℓ‖ ≤ 2βB,   ∇²ℓ = ℓ''(φ₁−φ₂)(φ₁−φ₂)ᵀ ⪯ 0,
  ‖∇²ℓ‖ ≤ β²B²,   ‖s‖ ≤ 2B,   F ⪯ E φφᵀ so ‖F‖ ≤ B²;
* π_θ(y|x) ≥ π_min = e^{−2(R+t)B}/|Y|, hence Cov_{π_θ}(φ) ⪰ (π_min|Y|)²·Cov_unif(φ) and
  λ_F ≥ e^{−4(R+t)B} λ_min(E_x Cov_unif,x φ) on the identifiable subspace;
* M = max λ_max(∇²J) ≤ 16βB² + 2ℓ_max B²  (cross terms ≤ 2‖s₁+s₂‖‖∇ℓ‖, ℓ(s₁+s₂)(s₁+s₂)ᵀ ⪯ 0,
  −2ℓF ⪯ 2ℓ_max F);
* ‖∇²J‖ ≤ β²B² + 16βB² + 18 ℓ_max B²;
* KL curvature: ``ref_to_policy`` ∇²KL = F exactly; ``policy_to_ref`` ∇²KL = F + Σπ(g − ḡ)SSᵀ
  with |g − ḡ| ≤ 2RB, so (1 − 2RB)F ⪯ ∇²KL ⪯ (1 + 2RB)F (λ_KL = (1 − 2RB)λ_F is positive only when RB < 1/2);
* γ_c = M/λ_KL,  μ = γλ_KL − M (strong concavity, hence PL, when positive),
  L = ‖∇²J‖_max + γ‖∇²KL‖_max.

These bounds are rigorous and loose; :mod:`sail.theory.pl` reports them beside the same
template quantities evaluated by search over the ball.
"""

from __future__ import annotations

import math

import numpy as np

from sail.theory.problem import ExactProblem


def template_from(lambda_kl: float, sail_curvature: float, sail_norm: float, kl_norm: float, gamma: float) -> dict:
    """γ_c = M/λ, μ = γλ − M, L = ‖∇²J‖ + γ‖∇²KL‖ from the four template quantities."""
    if sail_curvature <= 0:
        gamma_c = 0.0
    elif lambda_kl > 0:
        gamma_c = sail_curvature / lambda_kl
    else:
        gamma_c = math.inf
    return {
        "lambda_F": lambda_kl,
        "M": sail_curvature,
        "gamma_c": gamma_c,
        "mu": gamma * lambda_kl - sail_curvature,
        "L": sail_norm + gamma * kl_norm,
    }


def explicit_constants(problem: ExactProblem, gamma: float | None = None) -> dict:
    """The closed-form bounds above for the problem's instance (``gamma`` overrides its γ)."""
    inst = problem.instance
    gamma = inst.gamma if gamma is None else gamma
    B, R, beta = problem.feature_bound, problem.radius, inst.beta
    t = float(np.linalg.norm(problem.theta_ref))
    n_resp = inst.features.shape[1]
    ell_max = math.log(2.0) + 2.0 * beta * R * B
    pi_min = math.exp(-2.0 * (R + t) * B) / n_resp
    centred = inst.features - inst.features.mean(axis=1, keepdims=True)
    cov_uniform = np.einsum("x,xyd,xye->de", inst.context_probs, centred, centred) / n_resp
    restricted = problem.restrict(cov_uniform)
    lambda_uniform = float(np.linalg.eigvalsh(restricted)[0]) if restricted.size else 0.0
    lambda_fisher = (pi_min * n_resp) ** 2 * lambda_uniform
    if inst.kl == "ref_to_policy":
        lambda_kl, kl_norm = lambda_fisher, B**2
    else:
        lambda_kl, kl_norm = (1.0 - 2.0 * R * B) * lambda_fisher, (1.0 + 2.0 * R * B) * B**2
    sail_curvature = 16.0 * beta * B**2 + 2.0 * ell_max * B**2
    sail_norm = beta**2 * B**2 + 16.0 * beta * B**2 + 18.0 * ell_max * B**2
    out = template_from(lambda_kl, sail_curvature, sail_norm, kl_norm, gamma)
    out.update({"pi_min": pi_min, "ell_max": ell_max, "feature_bound": B})
    return out
