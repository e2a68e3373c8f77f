"""Lemma (witness): the penalty KL(π_θ‖π_ref) (``policy_to_ref``) is not convex in θ.

Instance: one context, two responses, tabular features, θ_ref = 0 (π_ref uniform). At
θ = (log 9, 0), where π_θ = (9/10, 1/10), the direction v = (1, −1) has

    vᵀ∇²KL(π_θ‖π_ref)v = 4·(9/100)·(1 − (4/5)·log 9) < 0,

a negative eigenvalue (KL depends on θ₁ − θ₂ only). In one variable x = θ₁ − θ₂ the curvature is
σ'(x)(1 + x(1 − 2σ(x))), negative once |x| is large enough: the exponential-family identity
∇²KL(π_θ‖π_ref) = F + E[(g − ḡ)ssᵀ] of lemma ``fisher_identity`` with a large |g − ḡ|. The PL
template therefore only uses this direction where RB < 1/2 (lemma ``pl_template``); here
R = log 9 with B = 1. The negative control runs the same check on KL(π_ref‖π_θ), whose Hessian
is the Fisher information F ⪰ 0: negative curvature is then refuted (certified positive).
"""

from __future__ import annotations

from functools import partial

import numpy as np
import sympy as sp

from proofs.tools.exact import certified_sign
from proofs.tools.lemma import Lemma, Verdict
from sail.policies.loglinear import LogLinearPolicy

THETA = (sp.log(9), sp.Integer(0))
DIRECTION = (1, -1)
u = sp.symbols("u1 u2", real=True)


def _log_softmax(logits):
    log_z = sp.log(sum(sp.exp(x) for x in logits))
    return [x - log_z for x in logits]


def kl(direction: str) -> sp.Expr:
    logp = _log_softmax(u)
    logq = _log_softmax((sp.Integer(0), sp.Integer(0)))
    if direction == "policy_to_ref":
        return sum(sp.exp(a) * (a - b) for a, b in zip(logp, logq))
    return sum(sp.exp(b) * (b - a) for a, b in zip(logp, logq))


def curvature(direction: str) -> sp.Expr:
    """vᵀ∇²KL v = d²/ds² KL(θ + s·v) at s = 0, exactly."""
    s = sp.Symbol("s", real=True)
    line = kl(direction).subs({u[a]: THETA[a] + s * DIRECTION[a] for a in range(2)}, simultaneous=True)
    value = sp.diff(line, s, 2).subs(s, 0)
    return sp.expand(sp.expand_log(value, force=True))


def check(direction: str = "policy_to_ref") -> Verdict:
    value = curvature(direction)
    sign = certified_sign(value)
    if sign < 0:
        return Verdict(True, f"vᵀ∇²KL v = {value} ≈ {float(value):.6f} < 0 (certified)")
    return Verdict(False, f"vᵀ∇²KL v ≈ {float(value):.6f}: negative curvature not certified (sign {sign})")


def cross_check() -> float:
    """Exact curvature vs vᵀ(``population(...).kl_hess``)v at the witness, both directions."""
    policy = LogLinearPolicy.tabular(1, 2)
    theta = [float(x) for x in THETA]
    v = np.array(DIRECTION, dtype=np.float64)
    err = 0.0
    for direction in ("policy_to_ref", "ref_to_policy"):
        lib = policy.population([[0.0, 0.0]], [1.0], 1.0, 1.0, direction, theta=theta).kl_hess.numpy()
        err = max(err, abs(float(v @ lib @ v) - float(curvature(direction))))
    return err


LEMMA = Lemma(
    name="policy_to_ref_nonconvex",
    statement="witness: 2 responses, θ_ref=0, θ=(log 9, 0): ∇²KL(π_θ‖π_ref) has a negative eigenvalue",
    prove=partial(check, "policy_to_ref"),
    negative_control=partial(check, "ref_to_policy"),
    cross_check=cross_check,
    control="same check on KL(π_ref‖π_θ) (Hessian F ⪰ 0)",
)
