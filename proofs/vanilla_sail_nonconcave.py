"""Lemma (witness): vanilla SAIL (γ = 0) is not concave.

Instance: one context, two responses, tabular features φ(y) = e_y, θ_ref = 0 (π_ref uniform),
β = 1, true reward r* = (log 3, 0) so p*(y₁ ≻ y₂) = σ(log 3) = 3/4. At θ = (−log 2, 0), where
π_θ = (1/3, 2/3) and ‖θ − θ_ref‖ = log 2 < 1, the direction v = (1, −1) has

    vᵀ∇²J(θ)v > 0,

so ∇²J(θ) has the positive eigenvalue vᵀ∇²Jv/‖v‖² (J depends on θ only through θ₁ − θ₂, so
∇²J = c·vvᵀ and its eigenvalues are 0 and 2c). J is built from the exponential definition of
π_θ and σ, differentiated by sympy, evaluated exactly (π and σ are rational there, ℓ is a
rational combination of logarithms of rationals), and the sign is certified by interval
arithmetic. Without the score terms — sampling weights frozen at π_θ, as in DPO on a fixed
dataset — the same check certifies the opposite sign (the negative control).
"""

from __future__ import annotations

from functools import partial

import numpy as np
import sympy as sp

from proofs.tools.exact import certified_sign
from proofs.tools.identity import sigmoid
from proofs.tools.lemma import Lemma, Verdict
from sail.policies.loglinear import LogLinearPolicy

BETA = sp.Integer(1)
REWARD = (sp.log(3), sp.Integer(0))
THETA = (-sp.log(2), sp.Integer(0))
DIRECTION = (1, -1)

u = sp.symbols("u1 u2", real=True)


def policy(logits):
    Z = sum(sp.exp(x) for x in logits)
    return [sp.exp(x) / Z for x in logits]


def pair_term(i: int, j: int) -> sp.Expr:
    delta = u[i] - u[j]  # θ_ref = 0, tabular features
    p_star = sigmoid(REWARD[i] - REWARD[j])
    return p_star * sp.log(sigmoid(BETA * delta)) + (1 - p_star) * sp.log(sigmoid(-BETA * delta))


def objective(frozen_sampling: bool = False) -> sp.Expr:
    pi = policy(u)
    if frozen_sampling:
        pi = [w.subs(dict(zip(u, THETA))) for w in pi]
    return sum(pi[i] * pi[j] * pair_term(i, j) for i in range(2) for j in range(2))


def curvature(frozen_sampling: bool = False) -> sp.Expr:
    """vᵀ∇²J(θ)v = d²/ds² J(θ + s·v) at s = 0, exactly."""
    s = sp.Symbol("s", real=True)
    J = objective(frozen_sampling)
    line = J.subs({u[a]: THETA[a] + s * DIRECTION[a] for a in range(2)}, simultaneous=True)
    value = sp.diff(line, s, 2).subs(s, 0)
    return sp.expand(sp.expand_log(value, force=True))


def check(frozen_sampling: bool = False) -> Verdict:
    value = curvature(frozen_sampling)
    sign = certified_sign(value)
    if sign > 0:
        return Verdict(True, f"vᵀ∇²J v = {value} ≈ {float(value):.6f} > 0 (certified): λ_max ≈ {float(value) / 2:.6f}")
    return Verdict(False, f"vᵀ∇²J v ≈ {float(value):.6f}: positive curvature not certified (sign {sign})")


def cross_check() -> float:
    """vᵀ∇²J v exact vs vᵀ(``LogLinearPolicy.population(...).sail_hess``)v at the witness."""
    policy_ = LogLinearPolicy.tabular(1, 2)
    reward = [[float(r) for r in REWARD]]
    theta = [float(x) for x in THETA]
    lib = policy_.population(reward, [1.0], float(BETA), 0.0, "ref_to_policy", theta=theta).sail_hess.numpy()
    v = np.array(DIRECTION, dtype=np.float64)
    return abs(float(v @ lib @ v) - float(curvature()))


LEMMA = Lemma(
    name="vanilla_sail_nonconcave",
    statement="witness: 2 responses, β=1, p*=3/4, θ=(−log 2, 0): ∇²J has a positive eigenvalue",
    prove=check,
    negative_control=partial(check, frozen_sampling=True),
    cross_check=cross_check,
    control="sampling weights frozen at π_θ (no score terms, DPO-like)",
)
