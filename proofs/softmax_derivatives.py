"""Lemma: derivatives of the softmax.

For π = softmax(u) over K responses (π_i = e^{u_i}/Σ_j e^{u_j}):

    ∂π_i/∂u_k = π_i(δ_ik − π_k),        ∂log π_i/∂u_k = δ_ik − π_k.

For a log-linear policy u = Φθ this is the score s_i = ∇_θ log π_θ(i) = φ_i − E_{π_θ}φ. These
two rules seed the differential algebra (:mod:`proofs.tools.softmax`) that the gradient,
Hessian and KL lemmas use, so they are proved here from the exponential definition: after
substituting t_j = e^{u_j} both sides are rational functions of t, and their difference cancels
to 0 for every K in the sweep.
"""

from __future__ import annotations

from functools import partial

import numpy as np
import sympy as sp
import torch

from proofs.tools.identity import check_zero
from proofs.tools.lemma import Lemma, Verdict, all_of
from proofs.tools.numeric import lambdify, max_abs_diff, random_world
from sail.policies.loglinear import DTYPE

SWEEP = (2, 3, 4)


def _softmax(K: int):
    u = sp.symbols(f"u1:{K + 1}", real=True)
    t = sp.symbols(f"t1:{K + 1}", positive=True)
    Z = sum(sp.exp(x) for x in u)
    pi = [sp.exp(x) / Z for x in u]
    return u, t, pi


def claimed_rules(pi, drop_normaliser: bool = False):
    """The claimed Jacobians of π and log π (optionally the wrong variant without −π_k)."""
    K = len(pi)
    c = 0 if drop_normaliser else 1
    d_pi = [[pi[i] * ((1 if i == k else 0) - c * pi[k]) for k in range(K)] for i in range(K)]
    d_logpi = [[(1 if i == k else 0) - c * pi[k] for k in range(K)] for i in range(K)]
    return d_pi, d_logpi


def check(drop_normaliser: bool = False) -> Verdict:
    verdicts = []
    for K in SWEEP:
        u, t, pi = _softmax(K)
        to_t = {sp.exp(x): ti for x, ti in zip(u, t)}
        witness = {x: sp.log(sp.Integer(n + 2)) for n, x in enumerate(u)}
        d_pi, d_logpi = claimed_rules(pi, drop_normaliser)
        for i in range(K):
            for k in range(K):
                label = f"{i + 1}/∂u{k + 1}"
                verdicts.append(check_zero(sp.diff(pi[i], u[k]) - d_pi[i][k], f"∂π{label}", to_t, (witness,)))
                d_log = sp.diff(sp.log(pi[i]), u[k]) - d_logpi[i][k]
                verdicts.append(check_zero(d_log, f"∂logπ{label}", to_t, (witness,)))
                if not verdicts[-1].holds or not verdicts[-2].holds:
                    return all_of(verdicts)
    return Verdict(True, f"π and log π Jacobians identical for K in {SWEEP}")


def cross_check() -> float:
    """∇_θ log π_θ(i|x) from autograd on the library's policy vs Φ_xᵀ(e_i − π) lambdified."""
    world = random_world(seed=11, n_contexts=3, n_responses=4, dim=3)
    K = world.instance.features.shape[1]
    u, _, pi = _softmax(K)
    _, d_logpi = claimed_rules(pi)
    jac_u = lambdify([u], sp.Matrix(d_logpi))
    theta = torch.as_tensor(world.theta, dtype=DTYPE)
    jac_lib = torch.autograd.functional.jacobian(lambda th: world.policy.log_probs(th), theta).numpy()  # [X, K, d]
    phi = world.instance.features
    logits = phi @ world.theta
    jac_sym = np.stack([np.asarray(jac_u(logits[x]), dtype=np.float64) @ phi[x] for x in range(phi.shape[0])])
    return max_abs_diff(jac_lib, jac_sym)


LEMMA = Lemma(
    name="softmax_derivatives",
    statement="∂π_i/∂u_k = π_i(δ_ik − π_k), ∂log π_i/∂u_k = δ_ik − π_k (score s = φ − E_πφ)",
    prove=check,
    negative_control=partial(check, drop_normaliser=True),
    cross_check=cross_check,
    control="normaliser term −π_k dropped",
)
