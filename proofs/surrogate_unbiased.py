"""Lemma: the SAIL surrogate is an unbiased gradient estimator, whatever pair-independent baseline.

For one sampled pair (y₁, y₂) ~ π_θ ⊗ π_θ with h = ℓ(Δ_θ(y₁, y₂)) the library maximises

    surrogate = h + sg(h − b)·(log π_θ(y₁) + log π_θ(y₂)),      sg = stop-gradient,

whose gradient is ∇h + (h − b)(s₁ + s₂). Claims (one context; contexts add with weights ρ):

    E_π[s] = Σ_y π_y s_y = 0,  hence  E[b(s₁ + s₂)] = 0  and  E[∇surrogate] = ∇J

for every b that does not depend on the pair. Labels: ℓ is affine in p (lemma
``pair_derivative``), so a sampled Bernoulli(p*) label gives E_label[h] = ℓ(Δ; p*).
Proof in the softmax differential algebra, symbolic baseline b, arbitrary ℓ_ij, K in the sweep.
"""

from __future__ import annotations

from functools import partial

import numpy as np
import torch

from proofs.tools import objectives as obj
from proofs.tools.lemma import Lemma, Verdict, all_of
from proofs.tools.numeric import context_quantities, random_world, scaled_diff
from proofs.tools.softmax import SoftmaxAlgebra, lambdify_logits
from sail.objectives import sail_surrogate
from sail.policies.loglinear import DTYPE

SWEEP = (2, 3, 4, 5)


def expected_surrogate_gradient(S: SoftmaxAlgebra, baseline) -> list:
    """Σ_ij π_iπ_j [∇ℓ_ij + (ℓ_ij − b_ij)·∇(log π_i + log π_j)], the coefficient held fixed (sg)."""
    out = [S.zero] * S.K
    for i, j in S.pairs():
        coeff = S.p[i] * S.p[j]
        for a in range(S.K):
            score_part = S.d(S.lp[i] + S.lp[j], a)
            out[a] += coeff * (S.d(S.ell[0][i, j], a) + (S.ell[0][i, j] - baseline(S, i, j)) * score_part)
    return out


def constant_baseline(S, i, j):
    return S.params["b"]


def response_baseline(S, i, j):
    """A baseline that depends on the sampled first response (the wrong variant)."""
    return S.params[f"c{i + 1}"]


def check_at(K: int, baseline) -> Verdict:
    S = SoftmaxAlgebra(K, params=("b", *[f"c{i + 1}" for i in range(K)]))
    mean_score = [sum((S.p[y] * S.score(y)[a] for y in range(K)), S.zero) for a in range(K)]
    J, est = obj.sail(S), expected_surrogate_gradient(S, baseline)
    return all_of([
        S.check_vector_zero(mean_score, "E[s]"),
        S.check_vector_zero([est[a] - S.d(J, a) for a in range(K)], "E[∇surrogate] − ∂J/∂u"),
    ])


def check(baseline=constant_baseline) -> Verdict:
    summary = f"E[s] = 0 and E[∇surrogate] = ∇J for a symbolic baseline b, K in {SWEEP}"
    return all_of((check_at(K, baseline) for K in SWEEP), summary)


def cross_check() -> float:
    """E[∇ sail_surrogate] by enumerating every pair (autograd through the library's surrogate,
    baseline b = 0.37) vs ``population(...).sail_grad`` and vs the lambdified expectation."""
    world = random_world(seed=31, n_contexts=3, n_responses=4, dim=3)
    inst = world.instance
    X, K, _ = inst.features.shape
    theta = torch.tensor(world.theta, dtype=DTYPE, requires_grad=True)
    logp = world.policy.log_probs(theta)
    logq = world.policy.ref_log_probs
    reward = torch.as_tensor(inst.reward, dtype=DTYPE)
    p_star = torch.sigmoid(reward[:, :, None] - reward[:, None, :])
    lp1, lp2 = logp[:, :, None].expand(X, K, K), logp[:, None, :].expand(X, K, K)
    lq1, lq2 = logq[:, :, None].expand(X, K, K), logq[:, None, :].expand(X, K, K)
    surrogate = sail_surrogate(lp1, lp2, lq1, lq2, p_star, inst.beta, baseline=0.37)
    pi = logp.detach().exp()
    weights = torch.as_tensor(inst.context_probs, dtype=DTYPE)[:, None, None] * pi[:, :, None] * pi[:, None, :]
    (grad,) = torch.autograd.grad((weights * surrogate).sum(), theta)
    lib = world.population(order=1).sail_grad.numpy()

    S = SoftmaxAlgebra(K, params=("b",))
    fn = lambdify_logits(S, expected_surrogate_gradient(S, constant_baseline), params=("b",))
    c = context_quantities(world)
    sym = sum(
        inst.context_probs[x] * inst.features[x].T @ fn(c.p[x], c.q[x], c.logp[x], c.logq[x], c.ell[:, x], 0.37)
        for x in range(X)
    )
    return max(scaled_diff(lib, grad.numpy()), scaled_diff(lib, np.asarray(sym)))


LEMMA = Lemma(
    name="surrogate_unbiased",
    statement="E[s] = 0, so E[∇(h + sg(h−b)(log π₁+log π₂))] = ∇J for any pair-independent baseline b",
    prove=check,
    negative_control=partial(check, response_baseline),
    cross_check=cross_check,
    control="baseline that depends on the sampled response y₁",
)
