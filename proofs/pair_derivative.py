"""Lemma: derivatives of the per-pair SAIL term.

With σ(z) = 1/(1 + e^{−z}), β > 0, p ∈ [0, 1] and

    ℓ(Δ; p) = p log σ(βΔ) + (1 − p) log σ(−βΔ),

    dℓ/dΔ   = β(p − σ(βΔ)),
    d²ℓ/dΔ² = −β² σ(βΔ) σ(−βΔ),

and two structural facts used elsewhere: ℓ(−Δ; 1 − p) = ℓ(Δ; p) (swapping the pair changes
nothing), and ℓ is affine in p, so E_{Y~Bernoulli(p*)} ℓ(Δ; Y) = ℓ(Δ; p*) (sampled hard labels are
unbiased). Proof: substitute Δ = log(t)/β (t = e^{βΔ} > 0); the derivatives become rational in t
and the differences cancel; the log σ atoms cancel in the structural identities. Symbolic β, p, Δ.
"""

from __future__ import annotations

from functools import partial

import numpy as np
import sympy as sp
import torch

from proofs.tools.identity import check_zero, sigmoid
from proofs.tools.lemma import Lemma, Verdict, all_of
from proofs.tools.numeric import lambdify
from sail.objectives import pair_term, pair_term_derivatives

beta = sp.Symbol("beta", positive=True)
p = sp.Symbol("p", real=True)
Delta = sp.Symbol("Delta", real=True)
t = sp.Symbol("t", positive=True)


def ell(delta=Delta, prob=p):
    return prob * sp.log(sigmoid(beta * delta)) + (1 - prob) * sp.log(sigmoid(-beta * delta))


def claimed_d1(missing_beta: bool = False):
    return (1 if missing_beta else beta) * (p - sigmoid(beta * Delta))


def claimed_d2():
    return -(beta**2) * sigmoid(beta * Delta) * sigmoid(-beta * Delta)


WITNESSES = (
    {beta: 2, p: sp.Rational(1, 3), Delta: sp.log(3) / 2},
    {beta: sp.Rational(1, 2), p: 0, Delta: 2 * sp.log(5)},
)


def check(missing_beta: bool = False) -> Verdict:
    to_t = {Delta: sp.log(t) / beta}
    value = ell()
    d1 = sp.diff(value, Delta)
    return all_of(
        [
            check_zero(d1 - claimed_d1(missing_beta), "dℓ/dΔ", to_t, WITNESSES),
            check_zero(sp.diff(d1, Delta) - claimed_d2(), "d²ℓ/dΔ²", to_t, WITNESSES),
            check_zero(sp.expand(ell(-Delta, 1 - p) - value), "ℓ(−Δ;1−p) = ℓ(Δ;p)", witnesses=WITNESSES),
            check_zero(sp.expand(p * ell(Delta, 1) + (1 - p) * ell(Delta, 0) - value), "affine in p", None, WITNESSES),
        ]
    )


def cross_check() -> float:
    """ℓ, ℓ', ℓ'' lambdified vs ``pair_term`` and ``pair_term_derivatives`` at random (β, p, Δ),
    soft and hard labels."""
    rng = np.random.default_rng(3)
    fns = [lambdify([beta, p, Delta], e) for e in (ell(), claimed_d1(), claimed_d2())]
    err = 0.0
    for b in rng.uniform(0.05, 3.0, 8):
        delta = rng.uniform(-6.0, 6.0, 64)
        prob = rng.uniform(0.0, 1.0, 64)
        prob[:8] = np.round(prob[:8])  # hard labels
        lib = pair_term_derivatives(torch.as_tensor(delta), torch.as_tensor(prob), float(b))
        value = pair_term(torch.as_tensor(delta), torch.as_tensor(prob), float(b))
        for ours, theirs in zip((f(b, prob, delta) for f in fns), (lib.value, lib.d1, lib.d2)):
            err = max(err, float(np.abs(ours - theirs.numpy()).max()))
        err = max(err, float(np.abs(fns[0](b, prob, delta) - value.numpy()).max()))
    return err


LEMMA = Lemma(
    name="pair_derivative",
    statement="ℓ = p log σ(βΔ) + (1−p) log σ(−βΔ): ℓ' = β(p − σ(βΔ)), ℓ'' = −β²σ(βΔ)σ(−βΔ); affine in p",
    prove=check,
    negative_control=partial(check, missing_beta=True),
    cross_check=cross_check,
    control="factor β missing: ℓ' = p − σ(βΔ)",
)
