"""Lemma: the elementary bounds behind the explicit constants M and λ_F.

On Θ = {‖θ − θ_ref‖ ≤ R} with ‖φ‖ ≤ B and t = ‖θ_ref‖ (z = βΔ, σ = σ(z)):

1. 1 + e^{±z} ≤ 2e^{|z|}, hence 0 ≤ −ℓ = p log(1 + e^{−z}) + (1 − p) log(1 + e^{z}) ≤ log 2 + β|Δ|;
2. Cauchy–Schwarz (Lagrange's identity), hence |Δ| = |(θ − θ_ref)ᵀ(φ₁ − φ₂)| ≤ 2RB and
   ℓ_max = log 2 + 2βRB; likewise ‖s‖ ≤ 2B, ‖F‖ ≤ B², |θᵀφ| ≤ (R + t)B;
3. |ℓ'| = β|p − σ| ≤ β and |ℓ''| = β²σ(1 − σ) ≤ β²/4 (¼ − σ(1 − σ) = (σ − ½)²), hence
   ‖∇ℓ‖ ≤ 2βB and ‖∇²ℓ‖ ≤ β²B²;
4. π_θ(y) ≥ π_min = e^{−2(R+t)B}/|Y|: π_y increases in its own logit and decreases in the others
   (lemma ``softmax_derivatives``), so over logits in [−a, a] (a = (R + t)B) its minimum is the
   corner e^{−a}/(e^{−a} + (K − 1)e^{a}) = 1/(1 + (K − 1)E²) with E = e^{a} ≥ 1, and
   corner − e^{−2a}/K = (E² − 1)/(KE²(1 + (K − 1)E²)) ≥ 0.

Positivity is shown by substituting E = 1 + ε (ε ≥ 0) and exhibiting non-negative coefficients;
failures are turned into certified counterexamples at E = e. Sweep K = 2..6 for item 4.
"""

from __future__ import annotations

import math
from functools import partial

import numpy as np
import sympy as sp
import torch

from proofs.tools.exact import certified_sign, manifestly_nonnegative
from proofs.tools.identity import check_zero, sigmoid
from proofs.tools.lemma import Lemma, Verdict, all_of
from proofs.tools.numeric import lambdify
from sail.objectives import pair_term
from sail.theory.constants import explicit_constants
from sail.theory.instance import random_instance
from sail.theory.problem import ExactProblem

E = sp.Symbol("E", positive=True)  # e^{|z|} or e^{a}, ≥ 1
eps = sp.Symbol("epsilon", nonnegative=True)  # E = 1 + ε
beta, R, B, t_ref = sp.symbols("beta R B t", positive=True)
n_resp = sp.Symbol("K", positive=True, integer=True)
PI_SWEEP = (2, 3, 4, 5, 6)


def ell_max():
    return sp.log(2) + beta * 2 * R * B


def pi_min(exponent_factor=2):
    return sp.exp(-exponent_factor * (R + t_ref) * B) / n_resp


def _nonnegative_for_E_ge_1(expr) -> bool:
    num, den = sp.fraction(sp.together(expr))
    shift = {E: 1 + eps}
    return manifestly_nonnegative(num.subs(shift), [eps]) and manifestly_nonnegative(den.subs(shift), [eps])


def softplus_bounds() -> Verdict:
    # z ≥ 0: 2e^{z} − (1 + e^{z});  z < 0 (e^{z} = 1/E): 2E − (1 + 1/E)
    ok = _nonnegative_for_E_ge_1(2 * E - (1 + E)) and _nonnegative_for_E_ge_1(2 * E - (1 + 1 / E))
    z, p = sp.symbols("z p", real=True)
    neg_ell = -(p * sp.log(sigmoid(z)) + (1 - p) * sp.log(sigmoid(-z)))
    split = p * sp.log(1 + sp.exp(-z)) + (1 - p) * sp.log(1 + sp.exp(z))
    ident = check_zero(sp.expand_log(neg_ell - split, force=True), "−ℓ = p log(1+e^{−z}) + (1−p) log(1+e^{z})")
    # convex combination of two quantities bounded by log 2 + |z|: p·a + (1 − p)·b with a, b, p, 1−p ≥ 0
    a, b, P, Q = sp.symbols("a b P Q", nonnegative=True)
    combo = manifestly_nonnegative(P * a + Q * b, [a, b, P, Q])
    if ok and ident.holds and combo:
        return Verdict(True, "1+e^{±z} ≤ 2e^{|z|}; |ℓ| ≤ log 2 + β|Δ|")
    return Verdict(False, "softplus bound not established")


def cauchy_schwarz() -> Verdict:
    for n in (2, 3):
        a = sp.symbols(f"a1:{n + 1}", real=True)
        b = sp.symbols(f"b1:{n + 1}", real=True)
        lhs = sum(x * x for x in a) * sum(y * y for y in b) - sum(x * y for x, y in zip(a, b)) ** 2
        rhs = sum((a[i] * b[j] - a[j] * b[i]) ** 2 for i in range(n) for j in range(i + 1, n))
        v = check_zero(sp.expand(lhs - rhs), f"Lagrange identity n={n}")
        if not v.holds:
            return v
    return Verdict(True, "‖a‖²‖b‖² − ⟨a,b⟩² is a sum of squares (n = 2, 3)")


def derivative_bounds() -> Verdict:
    s = sp.Symbol("sigma", real=True)
    v = check_zero(sp.expand(sp.Rational(1, 4) - s * (1 - s) - (s - sp.Rational(1, 2)) ** 2), "¼ − σ(1−σ) = (σ−½)²")
    return Verdict(v.holds, "|ℓ''| ≤ β²/4" if v.holds else v.detail)


def pi_floor(exponent_factor=2) -> Verdict:
    for K in PI_SWEEP:
        corner = (1 / E) / (1 / E + (K - 1) * E)
        closed = 1 / (1 + (K - 1) * E**2)
        v = check_zero(corner - closed, f"corner value K={K}")
        if not v.holds:
            return v
        residual = closed - E ** (-exponent_factor) / K
        if not _nonnegative_for_E_ge_1(residual):
            value = residual.subs(E, sp.E)
            if certified_sign(value) < 0:
                detail = f"π floor fails at K={K}, a=1: corner − bound = {float(value):.6g} < 0 (certified)"
                return Verdict(False, detail)
            return Verdict(False, f"π floor not established at K={K}")
    return Verdict(True, f"π_θ(y) ≥ e^{{−{exponent_factor}(R+t)B}}/|Y| for K in {PI_SWEEP}")


def check(exponent_factor=2) -> Verdict:
    return all_of([softplus_bounds(), cauchy_schwarz(), derivative_bounds(), pi_floor(exponent_factor)])


def cross_check() -> float:
    """ℓ_max and π_min lambdified vs ``explicit_constants``; plus the largest violation of
    |ℓ| ≤ ℓ_max and π ≥ π_min over ball points of a random instance (library code throughout)."""
    inst = random_instance(7, 3, 5, 3, beta=1.3, gamma=1.0, radius=1.5)
    problem = ExactProblem(inst)
    consts = explicit_constants(problem)
    args = [beta, R, B, t_ref, n_resp]
    t_value = float(np.linalg.norm(inst.theta_ref))
    values = [inst.beta, inst.radius, problem.feature_bound, t_value, inst.features.shape[1]]
    err = max(
        abs(lambdify(args, ell_max())(*values) - consts["ell_max"]),
        abs(lambdify(args, pi_min())(*values) - consts["pi_min"]) / consts["pi_min"],
    )
    rng = np.random.default_rng(0)
    thetas = problem.sample_ball(64, rng)
    reward = torch.as_tensor(inst.reward)
    p_star = torch.sigmoid(reward[:, :, None] - reward[:, None, :])
    for theta in thetas:
        logp = problem.policy.log_probs(torch.as_tensor(theta)).detach()
        delta = (logp - problem.policy.ref_log_probs)
        delta = delta[:, :, None] - delta[:, None, :]
        ell = pair_term(delta, p_star, inst.beta)
        err = max(err, float(ell.abs().max()) - consts["ell_max"], math.log(consts["pi_min"]) - float(logp.min()), 0.0)
    return err


LEMMA = Lemma(
    name="elementary_bounds",
    statement="|ℓ| ≤ log 2 + β|Δ| ≤ ℓ_max, |ℓ'| ≤ β, |ℓ''| ≤ β²/4, Cauchy–Schwarz, π_θ(y) ≥ e^{−2(R+‖θ_ref‖)B}/|Y|",
    prove=check,
    negative_control=partial(check, exponent_factor=1),
    cross_check=cross_check,
    control="π floor with e^{−(R+t)B} (factor 2 missing)",
)
