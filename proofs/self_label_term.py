"""Lemma: self-labelling adds the gradient of E[½ℓ²].

In the self-labelling variants (SAIL-PP/DP) the oracle is replaced by the policy's own
Bradley–Terry probability q_θ = σ(βΔ_θ): y₁ is labelled the winner with probability q_θ. Per
pair, with h₁ = log σ(βΔ) (y₁ wins) and h₂ = log σ(−βΔ) (y₂ wins), the labelled objective is

    m(Δ) = q h₁ + (1 − q) h₂,       q = σ(βΔ) depending on Δ as well,

and its derivative splits into the frozen-label part and the label-distribution part:

    m'(Δ) = [q h₁' + (1 − q) h₂']  +  [q (½h₁²)' + (1 − q)(½h₂²)'],

i.e. ∇E_label[h] = E_label[∇h] + E_label[∇½h²]. The reason: the label's log-likelihood is
h itself (log q = h₁, log(1 − q) = h₂), so the score of the label distribution is ∇h and
E[h·∇h] = E[∇½h²]. Summed over pairs from π_θ (lemma ``sail_gradient`` with ℓ → m) this is the
extra term ∇E[½ℓ²]. Proof: Δ = log(t)/β, symbolic β; the log σ atoms stay independent.
"""

from __future__ import annotations

from functools import partial

import numpy as np
import sympy as sp
import torch

from proofs.tools.identity import check_zero, sigmoid
from proofs.tools.lemma import Lemma, Verdict, all_of
from proofs.tools.numeric import lambdify
from sail.objectives import pair_term

beta = sp.Symbol("beta", positive=True)
Delta = sp.Symbol("Delta", real=True)
t = sp.Symbol("t", positive=True)

q = sigmoid(beta * Delta)
h1 = sp.log(sigmoid(beta * Delta))
h2 = sp.log(sigmoid(-beta * Delta))


def claimed_derivative(half: sp.Expr = sp.Rational(1, 2)) -> sp.Expr:
    """Frozen-label derivative plus the derivative of E_label[half·h²] (frozen label)."""
    frozen = q * sp.diff(h1, Delta) + (1 - q) * sp.diff(h2, Delta)
    extra = q * sp.diff(half * h1**2, Delta) + (1 - q) * sp.diff(half * h2**2, Delta)
    return frozen + extra


WITNESSES = ({beta: 1, Delta: sp.log(3)}, {beta: 2, Delta: -sp.log(5) / 2})


def check(half: sp.Expr = sp.Rational(1, 2)) -> Verdict:
    to_t = {Delta: sp.log(t) / beta}
    full = sp.diff(q * h1 + (1 - q) * h2, Delta)
    return all_of(
        [
            check_zero(sp.diff(sp.log(q), Delta) - sp.diff(h1, Delta), "∇log q = ∇h₁", to_t, WITNESSES),
            check_zero(sp.diff(sp.log(1 - q), Delta) - sp.diff(h2, Delta), "∇log(1−q) = ∇h₂", to_t, WITNESSES),
            check_zero(full - claimed_derivative(half), "m' = E[∇h] + E[∇½h²]", to_t, WITNESSES),
        ]
    )


def cross_check() -> float:
    """Autograd through the library's ``pair_term`` with p_win = σ(βΔ) kept in the graph vs the
    lambdified right-hand side."""
    rng = np.random.default_rng(4)
    rhs = lambdify([beta, Delta], claimed_derivative())
    err = 0.0
    for _ in range(200):
        b = float(rng.uniform(0.05, 3.0))
        d = torch.tensor(float(rng.uniform(-5.0, 5.0)), dtype=torch.float64, requires_grad=True)
        value = pair_term(d, torch.sigmoid(b * d), b)
        (grad,) = torch.autograd.grad(value, d)
        err = max(err, abs(float(grad) - float(rhs(b, float(d.detach())))))
    return err


LEMMA = Lemma(
    name="self_label_term",
    statement="self-labelling with q = σ(βΔ): ∇E_label[h] = E[∇h] + E[∇½h²] (label score = ∇h)",
    prove=check,
    negative_control=partial(check, half=sp.Integer(1)),
    cross_check=cross_check,
    control="extra term ∇E[ℓ²] (factor ½ missing)",
)
