"""Lemma: the derivative of the label-smoothed pair term.

With label smoothing at rate ε the label is trusted with probability 1 − ε:

    ℓ_ε(Δ; p) = (1 − ε)·ℓ(Δ; p) + ε·ℓ(Δ; 1 − p),    ℓ(Δ; p) = p log σ(βΔ) + (1 − p) log σ(−βΔ).

Claim: ℓ_ε is the pair term at the smoothed label p_ε = p + ε(1 − 2p), so
dℓ_ε/dΔ = β(p_ε − σ(βΔ)) and d²ℓ_ε/dΔ² = d²ℓ/dΔ². Proof: substitute Δ = log(t)/β (t = e^{βΔ});
the differences become rational in t, with the log σ atoms independent, and cancel to 0.
"""

import numpy as np
import sympy as sp
import torch

from proofs.tools.identity import check_zero, sigmoid
from proofs.tools.lemma import Lemma, all_of
from proofs.tools.numeric import lambdify
from sail.objectives import pair_term

beta = sp.Symbol("beta", positive=True)
eps = sp.Symbol("epsilon", nonnegative=True)
p = sp.Symbol("p", real=True)
Delta = sp.Symbol("Delta", real=True)
t = sp.Symbol("t", positive=True)

SMOOTHED_LABEL = p + eps * (1 - 2 * p)
# The plausible mistake: the smoothed label of the other convention, (1 − ε)p + ε/2, which
# smooths towards ½ at half the rate of ℓ_ε above.
OTHER_CONVENTION = (1 - eps) * p + eps / 2


def ell(label):
    return label * sp.log(sigmoid(beta * Delta)) + (1 - label) * sp.log(sigmoid(-beta * Delta))


def smoothed():
    return (1 - eps) * ell(p) + eps * ell(1 - p)


def claimed_d1(label=SMOOTHED_LABEL):
    return beta * (label - sigmoid(beta * Delta))


WITNESSES = (
    {beta: 2, eps: sp.Rational(1, 10), p: sp.Rational(1, 3), Delta: sp.log(3) / 2},
    {beta: sp.Rational(1, 2), eps: sp.Rational(1, 4), p: 1, Delta: 2 * sp.log(5)},
)


def check(label=SMOOTHED_LABEL):
    to_t = {Delta: sp.log(t) / beta}
    d1 = sp.diff(smoothed(), Delta)
    return all_of(
        [
            check_zero(sp.expand(smoothed() - ell(label)), "ℓ_ε(Δ;p) = ℓ(Δ;p_ε)", None, WITNESSES),
            check_zero(d1 - claimed_d1(label), "dℓ_ε/dΔ = β(p_ε − σ(βΔ))", to_t, WITNESSES),
            check_zero(sp.diff(d1, Delta) - sp.diff(ell(p), Delta, 2), "ℓ_ε'' = ℓ''", to_t, WITNESSES),
        ]
    )


def cross_check():
    """ℓ_ε built from sail's pair_term and differentiated by torch autograd, against the
    lambdified ℓ(Δ; p_ε) and claimed derivative, at random (β, ε, p, Δ)."""
    rng = np.random.default_rng(0)
    value_fn = lambdify([beta, eps, p, Delta], ell(SMOOTHED_LABEL))
    d1_fn = lambdify([beta, eps, p, Delta], claimed_d1())
    err = 0.0
    for b, e in zip(rng.uniform(0.05, 3.0, 8), rng.uniform(0.0, 0.5, 8)):
        prob = rng.uniform(0.0, 1.0, 64)
        delta = torch.tensor(rng.uniform(-6.0, 6.0, 64), dtype=torch.float64, requires_grad=True)
        value = (1 - e) * pair_term(delta, torch.as_tensor(prob), b) + e * pair_term(delta, torch.as_tensor(1 - prob), b)
        (grad,) = torch.autograd.grad(value.sum(), delta)
        d = delta.detach().numpy()
        err = max(err, np.abs(value.detach().numpy() - value_fn(b, e, prob, d)).max())
        err = max(err, np.abs(grad.numpy() - d1_fn(b, e, prob, d)).max())
    return float(err)


LEMMA = Lemma(
    name="label_smoothing",
    statement="ℓ_ε = (1−ε)ℓ(Δ;p) + εℓ(Δ;1−p) = ℓ(Δ;p+ε(1−2p)): ℓ_ε' = β(p+ε(1−2p) − σ(βΔ)), ℓ_ε'' = ℓ''",
    prove=check,
    negative_control=lambda: check(OTHER_CONVENTION),
    cross_check=cross_check,
    control="smoothed label (1−ε)p + ε/2 (the other convention's rate)",
)
