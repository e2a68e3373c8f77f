"""Lemma: the KL-optimal policy π* ∝ π_ref·exp(r*/β) and θ* = θ_ref + w*/β.

For one context, any π on the simplex, reward r, β > 0, Z = Σ_y π_ref(y)e^{r(y)/β} and
π*(y) = π_ref(y)e^{r(y)/β}/Z (Gibbs' variational identity):

    E_π[r] − β·KL(π‖π_ref) = β log Z − β·KL(π‖π*).

Since KL(π‖π*) ≥ 0 with equality iff π = π* (log x ≤ x − 1, i.e. x − 1 − log x ≥ 0: zero value
and slope at 1, positive second derivative 1/x²), π* is the unique maximiser. For a log-linear
policy and a realisable reward r* = w*ᵀφ, π* = π_{θ*} with θ* = θ_ref + w*/β (softmax of
logits θ_refᵀφ + r*/β). θ* is also where every pair term peaks: ℓ'(Δ) = β(σ(r₁ − r₂) − σ(βΔ)) = 0
at βΔ* = r₁ − r₂ = βΔ_{θ*}, with ℓ'' < 0 (lemma ``pair_derivative``) — the DPO/BT optimum.

Proof: the identity in the softmax differential algebra with w = r/β, symbolic β and log Z
(K sweep); the log-linear form by cancelling rational functions of t_y = e^{θ_refᵀφ_y},
e_y = e^{r_y/β}. Negative control: the same identity with the KL direction swapped.
"""

from __future__ import annotations

from functools import partial

import numpy as np
import sympy as sp
import torch

from proofs.tools.identity import check_zero, sigmoid
from proofs.tools.lemma import Lemma, Verdict, all_of
from proofs.tools.numeric import lambdify, scaled_diff
from proofs.tools.softmax import SoftmaxAlgebra
from sail.objectives import kl_exact
from sail.policies.loglinear import DTYPE, LogLinearPolicy

SWEEP = (2, 3, 4, 5)


def gibbs_identity(direction: str = "policy_to_ref") -> Verdict:
    for K in SWEEP:
        S = SoftmaxAlgebra(K, max_derivative=1, params=("beta", "logZ", *[f"w{i + 1}" for i in range(K)]))
        beta, log_z = S.params["beta"], S.params["logZ"]
        w = [S.params[f"w{i + 1}"] for i in range(K)]
        if direction == "policy_to_ref":
            kl = sum((S.p[i] * (S.lp[i] - S.lq[i]) for i in range(K)), S.zero)
        else:
            kl = sum((S.q[i] * (S.lq[i] - S.lp[i]) for i in range(K)), S.zero)
        lhs = sum((S.p[i] * beta * w[i] for i in range(K)), S.zero) - beta * kl
        log_pi_star = [S.lq[i] + w[i] - log_z for i in range(K)]
        rhs = beta * log_z - beta * sum((S.p[i] * (S.lp[i] - log_pi_star[i]) for i in range(K)), S.zero)
        v = S.check_zero(lhs - rhs, f"Gibbs identity ({direction})")
        if not v.holds:
            return v
    return Verdict(True, f"E_π r − βKL(π‖π_ref) = β log Z − βKL(π‖π*) for K in {SWEEP}")


def gibbs_inequality() -> Verdict:
    x = sp.Symbol("x", positive=True)
    f = x - 1 - sp.log(x)
    ok = f.subs(x, 1) == 0 and sp.diff(f, x).subs(x, 1) == 0 and sp.diff(f, x, 2).is_positive
    return Verdict(bool(ok), "x − 1 − log x ≥ 0 with equality only at 1 (KL ≥ 0)")


def pi_star(t, e):
    """π*_y = π_ref(y)e_y / Σ π_ref e, with π_ref = t/Σt."""
    q = [ti / sum(t) for ti in t]
    z = sum(qi * ei for qi, ei in zip(q, e))
    return [qi * ei / z for qi, ei in zip(q, e)]


def loglinear_form() -> Verdict:
    checks = []
    for K in SWEEP:
        t = sp.symbols(f"t1:{K + 1}", positive=True)  # e^{θ_refᵀφ_y}
        e = sp.symbols(f"e1:{K + 1}", positive=True)  # e^{r_y/β}
        shifted = [ti * ei / sum(tj * ej for tj, ej in zip(t, e)) for ti, ei in zip(t, e)]  # softmax(θ_refᵀφ + r/β)
        checks += [check_zero(a - b, f"π_θ* = π* (K={K})") for a, b in zip(shifted, pi_star(t, e))]
    beta, r1, r2 = sp.Symbol("beta", positive=True), *sp.symbols("r1 r2", real=True)
    delta_star = (r1 - r2) / beta
    checks.append(check_zero(beta * (sigmoid(r1 - r2) - sigmoid(beta * delta_star)), "ℓ'(Δ*) = 0"))
    return all_of(checks, f"π_{{θ_ref + w*/β}} = π* for K in {SWEEP}; ℓ'(Δ_θ*) = 0")


def check(direction: str = "policy_to_ref") -> Verdict:
    return all_of([gibbs_identity(direction), gibbs_inequality(), loglinear_form()])


def cross_check() -> float:
    """π* lambdified vs the library's π_{θ_ref + w*/β}; and both sides of the Gibbs identity with
    the library's ``kl_exact`` at random policies."""
    rng = np.random.default_rng(8)
    X, K, d, beta = 3, 4, 3, 0.7
    features = rng.standard_normal((X, K, d))
    theta_ref, w_star = rng.standard_normal(d), rng.standard_normal(d)
    policy = LogLinearPolicy(features, theta_ref)
    t = sp.symbols(f"t1:{K + 1}", positive=True)
    e = sp.symbols(f"e1:{K + 1}", positive=True)
    fn = lambdify([t, e], sp.Matrix(pi_star(t, e)))
    reward = features @ w_star
    q = policy.ref_log_probs.exp().numpy()
    ours = np.stack([np.asarray(fn(q[x], np.exp(reward[x] / beta)), dtype=float).ravel() for x in range(X)])
    lib = policy.log_probs(torch.as_tensor(theta_ref + w_star / beta, dtype=DTYPE)).exp().detach().numpy()
    err = scaled_diff(lib, ours)
    log_q = policy.ref_log_probs
    log_pi_star = torch.log(torch.as_tensor(ours, dtype=DTYPE))
    log_z = torch.logsumexp(log_q + torch.as_tensor(reward / beta), dim=-1)
    for _ in range(5):
        log_pi = torch.log_softmax(torch.as_tensor(rng.standard_normal((X, K)) * 2.0), dim=-1)
        lhs = (log_pi.exp() * torch.as_tensor(reward)).sum(-1) - beta * kl_exact(log_pi, log_q, "policy_to_ref")
        rhs = beta * log_z - beta * kl_exact(log_pi, log_pi_star, "policy_to_ref")
        err = max(err, scaled_diff(lhs.numpy(), rhs.numpy()))
    return err


LEMMA = Lemma(
    name="kl_optimal_policy",
    statement="argmax_π E_π r − βKL(π‖π_ref) = π* ∝ π_ref e^{r/β}; realisable r* = w*ᵀφ: π* = π_{θ_ref + w*/β}",
    prove=check,
    negative_control=partial(check, "ref_to_policy"),
    cross_check=cross_check,
    control="KL direction swapped: KL(π_ref‖π) in the Gibbs identity",
)
