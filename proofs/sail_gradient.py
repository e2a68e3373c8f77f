"""Lemma: the gradient of SAIL-RevKL, with the score-function term.

For one context (the population objective is the ρ-weighted sum over contexts), pairs
(y₁, y₂) ~ π_θ ⊗ π_θ and s = ∇log π_θ(y):

    ∇J_γ = E[∇ℓ] + E[ℓ·(s₁ + s₂)] − γ·(E_{π_θ}φ − E_{π_ref}φ)        (KL = KL(π_ref‖π_θ)).

The middle term — the score-function term — exists because the pairs are sampled from the policy
being optimised; online DPO drops it. Proof: in logit coordinates (∇_θ = Φᵀ∇_u) the total
derivative of J_γ = Σ_ij π_iπ_jℓ_ij − γΣ q(log q − log π) is computed by the chain rule in the
softmax differential algebra, for arbitrary pair functions ℓ_ij and symbolic γ, and compared
with the claim (∇_uℓ_ij = ℓ'_ij(e_i − e_j), s_i = e_i − π) for every K in the sweep.
"""

from __future__ import annotations

from functools import partial

from proofs.tools import objectives as obj
from proofs.tools.lemma import Lemma, Verdict, all_of
from proofs.tools.numeric import context_quantities, random_world, scaled_diff
from proofs.tools.softmax import SoftmaxAlgebra, lambdify_logits

SWEEP = (2, 3, 4, 5)


def claimed_gradient(S: SoftmaxAlgebra, score_term: bool = True) -> list:
    gamma = S.params["gamma"]
    out = [-gamma * g for g in obj.kl_gradient(S, "ref_to_policy")]
    for i, j in S.pairs():
        w = S.p[i] * S.p[j]
        grad_l, s = obj.pair_gradient(S, i, j), obj.score_sum(S, i, j)
        for a in range(S.K):
            out[a] += w * grad_l[a]
            if score_term:
                out[a] += w * S.ell[0][i, j] * s[a]
    return out


def check_at(K: int, score_term: bool) -> Verdict:
    S = SoftmaxAlgebra(K, params=("gamma",))
    J = obj.sail_revkl(S, "ref_to_policy")
    claim = claimed_gradient(S, score_term)
    return S.check_vector_zero([S.d(J, a) - claim[a] for a in range(K)], "∂J_γ/∂u")


def check(score_term: bool = True) -> Verdict:
    summary = f"∇J_γ = E[∇ℓ] + E[ℓ(s₁+s₂)] − γ(E_θφ − E_refφ) for K in {SWEEP}, symbolic γ"
    return all_of((check_at(K, score_term) for K in SWEEP), summary)


def cross_check() -> float:
    """Lambdified claim, mapped to θ by Φ_xᵀ and summed over ρ, vs ``population(...).grad``."""
    world = random_world(seed=21, n_contexts=3, n_responses=4, dim=3, kl="ref_to_policy", gamma=0.7)
    K = world.instance.features.shape[1]
    S = SoftmaxAlgebra(K, params=("gamma",))
    fn = lambdify_logits(S, claimed_gradient, params=("gamma",))
    c = context_quantities(world)
    inst = world.instance
    grad = sum(
        inst.context_probs[x] * inst.features[x].T @ fn(c.p[x], c.q[x], c.logp[x], c.logq[x], c.ell[:, x], inst.gamma)
        for x in range(len(inst.context_probs))
    )
    lib = world.population(order=1).grad.numpy()
    return scaled_diff(lib, grad)


LEMMA = Lemma(
    name="sail_gradient",
    statement="∇J_γ = E[∇ℓ] + E[ℓ(s₁+s₂)] − γ(E_θφ − E_refφ): the score-function term is part of the gradient",
    prove=check,
    negative_control=partial(check, score_term=False),
    cross_check=cross_check,
    control="score-function term E[ℓ(s₁+s₂)] dropped (online DPO)",
)
