"""Lemma: the implicit reward difference of a log-linear policy is linear in θ.

With log π_θ(y) = θᵀφ_y − log Σ_{y'} e^{θᵀφ_{y'}} and π_ref = π_{θ_ref},

    Δ_θ(y₁, y₂) = log π_θ(y₁)/π_ref(y₁) − log π_θ(y₂)/π_ref(y₂) = (θ − θ_ref)ᵀ(φ₁ − φ₂),

because both log-partition functions cancel. Hence ∇Δ = φ₁ − φ₂, ∇²Δ = 0, |Δ| ≤ ‖θ − θ_ref‖·‖φ₁ − φ₂‖,
and the chain rule gives ∇ℓ = ℓ'(Δ)(φ₁ − φ₂), ∇²ℓ = ℓ''(Δ)(φ₁ − φ₂)(φ₁ − φ₂)ᵀ.

Checked with fully symbolic θ, θ_ref ∈ R² and symbolic features φ_y ∈ R² for K responses.
"""

from __future__ import annotations

from functools import partial

import numpy as np
import sympy as sp
import torch

from proofs.tools.identity import check_zero
from proofs.tools.lemma import Lemma, Verdict, all_of
from proofs.tools.numeric import lambdify, max_abs_diff, random_world
from sail.objectives import implicit_reward_diff
from sail.policies.loglinear import DTYPE

SWEEP = (2, 3, 4)
DIM = 2


def _model(K: int):
    theta = sp.symbols(f"theta1:{DIM + 1}", real=True)
    theta_ref = sp.symbols(f"thetaref1:{DIM + 1}", real=True)
    phi = [sp.symbols(f"phi{i}_1:{DIM + 1}", real=True) for i in range(1, K + 1)]

    def log_pi(th, i):
        score = lambda y: sum(a * b for a, b in zip(th, phi[y]))  # noqa: E731
        return score(i) - sp.log(sum(sp.exp(score(y)) for y in range(K)))

    return theta, theta_ref, phi, log_pi


def claimed_delta(theta, theta_ref, phi, i, j, drop_reference: bool = False):
    offset = theta if drop_reference else [a - b for a, b in zip(theta, theta_ref)]
    return sum(o * (a - b) for o, a, b in zip(offset, phi[i], phi[j]))


def check(drop_reference: bool = False) -> Verdict:
    verdicts = []
    for K in SWEEP:
        theta, theta_ref, phi, log_pi = _model(K)
        witness = {s: sp.Rational(n % 5 - 2, 3) for n, s in enumerate(sorted(
            set(theta) | set(theta_ref) | {x for row in phi for x in row}, key=str))}
        for i, j in [(0, 1), (K - 1, 0)]:
            delta = log_pi(theta, i) - log_pi(theta_ref, i) - log_pi(theta, j) + log_pi(theta_ref, j)
            claim = claimed_delta(theta, theta_ref, phi, i, j, drop_reference)
            verdicts.append(check_zero(sp.expand(delta - claim), f"Δ{i + 1}{j + 1} (K={K})", witnesses=(witness,)))
            for a in range(DIM):
                grad = sp.diff(claim, theta[a])
                verdicts.append(check_zero(grad - (phi[i][a] - phi[j][a]), f"∂Δ/∂θ{a + 1}", witnesses=(witness,)))
                verdicts.append(check_zero(sp.diff(grad, theta[0]), "∂²Δ", witnesses=(witness,)))
            if not all(v.holds for v in verdicts):
                return all_of(verdicts)
    return Verdict(True, f"Δ = (θ−θ_ref)ᵀ(φ₁−φ₂), ∇Δ = φ₁−φ₂, ∇²Δ = 0 for K in {SWEEP}, d = {DIM}")


def cross_check() -> float:
    """The library's Δ from log-probabilities vs (θ − θ_ref)ᵀ(φ₁ − φ₂) lambdified."""
    world = random_world(seed=12, n_contexts=3, n_responses=4, dim=DIM)
    theta, theta_ref, phi, _ = _model(2)
    fn = lambdify([theta, theta_ref, phi[0], phi[1]], claimed_delta(theta, theta_ref, phi, 0, 1))
    logp = world.policy.log_probs(torch.as_tensor(world.theta, dtype=DTYPE)).detach()
    logq = world.policy.ref_log_probs
    lib = implicit_reward_diff(logp[:, :, None], logp[:, None, :], logq[:, :, None], logq[:, None, :]).numpy()
    feats = world.instance.features
    X, K, _ = feats.shape
    theta, theta_ref = world.theta, world.instance.theta_ref
    sym = np.array(
        [[[fn(theta, theta_ref, feats[x, i], feats[x, j]) for j in range(K)] for i in range(K)] for x in range(X)]
    )
    return max_abs_diff(lib, sym)


LEMMA = Lemma(
    name="implicit_reward",
    statement="Δ_θ(y₁,y₂) = (θ − θ_ref)ᵀ(φ₁ − φ₂): partition functions cancel, ∇Δ = φ₁ − φ₂, ∇²Δ = 0",
    prove=check,
    negative_control=partial(check, drop_reference=True),
    cross_check=cross_check,
    control="reference dropped: Δ = θᵀ(φ₁ − φ₂)",
)
