"""Lemma: the Hessian decomposition of SAIL-RevKL for log-linear policies.

For one context, pairs (y₁, y₂) ~ π_θ ⊗ π_θ, s = ∇log π_θ(y) and F = Cov_{π_θ}(φ):

    ∇²J_γ = E[∇²ℓ + (s₁+s₂)∇ℓᵀ + ∇ℓ(s₁+s₂)ᵀ + ℓ(s₁+s₂)(s₁+s₂)ᵀ − 2ℓF] − γF     (KL(π_ref‖π_θ)).

The −2ℓF term comes from ∇s = −F (the score's own derivative) in the two score factors; since
ℓ ≤ 0 it is positive semidefinite, which is what can make vanilla SAIL non-concave (lemma
``vanilla_sail_nonconcave``). The −γF term is the Fisher identity (lemma ``fisher_identity``).
Proof: second total derivatives in the softmax differential algebra, arbitrary ℓ_ij, symbolic γ,
compared entrywise with the claim for every K in the sweep; ∇²_θ = Φᵀ∇²_uΦ.
"""

from __future__ import annotations

from functools import partial

from proofs.tools import objectives as obj
from proofs.tools.lemma import Lemma, Verdict, all_of
from proofs.tools.numeric import context_quantities, random_world, scaled_diff
from proofs.tools.softmax import SoftmaxAlgebra, lambdify_logits

SWEEP = (2, 3, 4)


def claimed_hessian(S: SoftmaxAlgebra, fisher_term: bool = True) -> list[list]:
    K, F, gamma = S.K, S.fisher(), S.params["gamma"]
    out = [[-gamma * F[a][b] for b in range(K)] for a in range(K)]
    for i, j in S.pairs():
        w, l0 = S.p[i] * S.p[j], S.ell[0][i, j]
        g, h, s = obj.pair_gradient(S, i, j), obj.pair_hessian(S, i, j), obj.score_sum(S, i, j)
        for a in range(K):
            for b in range(K):
                term = h[a][b] + s[a] * g[b] + g[a] * s[b] + l0 * s[a] * s[b]
                if fisher_term:
                    term -= 2 * l0 * F[a][b]
                out[a][b] += w * term
    return out


def check_at(K: int, fisher_term: bool) -> Verdict:
    S = SoftmaxAlgebra(K, params=("gamma",))
    H = S.hessian(obj.sail_revkl(S, "ref_to_policy"))
    claim = claimed_hessian(S, fisher_term)
    return S.check_matrix_zero([[H[a][b] - claim[a][b] for b in range(K)] for a in range(K)], "∇²J_γ")


def check(fisher_term: bool = True) -> Verdict:
    summary = f"∇²J_γ decomposition identical entrywise for K in {SWEEP}, symbolic γ"
    return all_of((check_at(K, fisher_term) for K in SWEEP), summary)


def cross_check() -> float:
    """Lambdified decomposition, Φ_xᵀ(·)Φ_x summed over ρ, vs ``population(...).hess``."""
    world = random_world(seed=41, n_contexts=3, n_responses=4, dim=3, kl="ref_to_policy", gamma=0.5)
    inst = world.instance
    K = inst.features.shape[1]
    S = SoftmaxAlgebra(K, params=("gamma",))
    fn = lambdify_logits(S, claimed_hessian, params=("gamma",))
    c = context_quantities(world)
    hess = sum(
        inst.context_probs[x]
        * inst.features[x].T
        @ fn(c.p[x], c.q[x], c.logp[x], c.logq[x], c.ell[:, x], inst.gamma)
        @ inst.features[x]
        for x in range(len(inst.context_probs))
    )
    return scaled_diff(world.population(order=2).hess.numpy(), hess)


LEMMA = Lemma(
    name="loglinear_hessian",
    statement="∇²J_γ = E[∇²ℓ + (s₁+s₂)∇ℓᵀ + ∇ℓ(s₁+s₂)ᵀ + ℓ(s₁+s₂)(s₁+s₂)ᵀ − 2ℓF] − γF",
    prove=check,
    negative_control=partial(check, fisher_term=False),
    cross_check=cross_check,
    control="the −2ℓF term dropped",
)
