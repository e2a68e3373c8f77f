"""Lemma: the Fisher identity for KL(π_ref‖π_θ), and why it fails for KL(π_θ‖π_ref).

For one context, F = Cov_{π_θ}(φ) and g = log π_θ − log π_ref:

    KL(π_ref‖π_θ):  ∇ = E_{π_θ}φ − E_{π_ref}φ,      ∇² = F            for every θ;
    KL(π_θ‖π_ref):  ∇ = E_{π_θ}[g·s],               ∇² = E_{π_θ}[g·ssᵀ] + F − E_{π_θ}[g]·F,

and the second Hessian equals F at θ = θ_ref (g ≡ 0) but not in general: it is F plus
E_{π_θ}[(g − ḡ)ssᵀ], a term of either sign. Proof: total derivatives in the softmax differential
algebra for every K in the sweep (∇²_θ = Φᵀ∇²_uΦ, and ΦᵀFΦ = Cov(φ)); the reduction at θ_ref
substitutes π = π_ref, log π = log π_ref. The negative control claims the Fisher identity for the
swapped direction and is refuted by an exact counterexample.
"""

from __future__ import annotations

from functools import partial

from proofs.tools import objectives as obj
from proofs.tools.lemma import Lemma, Verdict
from proofs.tools.numeric import context_quantities, random_world, scaled_diff
from proofs.tools.softmax import SoftmaxAlgebra, lambdify_logits

SWEEP = (2, 3, 4, 5)


def _difference(S: SoftmaxAlgebra, direction: str, claimed_hessian) -> list[list]:
    H = S.hessian(obj.kl(S, direction))
    return [[H[a][b] - claimed_hessian[a][b] for b in range(S.K)] for a in range(S.K)]


def check(swap_direction: bool = False) -> Verdict:
    for K in SWEEP:
        S = SoftmaxAlgebra(K)
        F = S.fisher()
        if swap_direction:  # claim ∇²KL(π_θ‖π_ref) = F for every θ
            v = S.check_matrix_zero(_difference(S, "policy_to_ref", F), "∇²KL(π_θ‖π_ref) − F")
            if not v.holds:
                return v
            continue
        for direction in ("ref_to_policy", "policy_to_ref"):
            kl = obj.kl(S, direction)
            grad = obj.kl_gradient(S, direction)
            for a in range(K):
                v = S.check_zero(S.d(kl, a) - grad[a], f"∇KL {direction} [{a + 1}]")
                if not v.holds:
                    return v
            v = S.check_matrix_zero(_difference(S, direction, obj.kl_hessian(S, direction)), f"∇²KL {direction}")
            if not v.holds:
                return v
        # policy_to_ref at θ_ref: substitute π = π_ref, log π = log π_ref; the Hessian becomes F(π_ref)
        H = obj.kl_hessian(S, "policy_to_ref")
        to_ref = [(S.p[i], S.q[i]) for i in range(K)]
        at_ref = [[h.compose(to_ref + [(S.lp[i], S.lq[i]) for i in range(K)]) for h in row] for row in H]
        F_ref = [[f.compose(to_ref) for f in row] for row in F]
        diff = [[at_ref[a][b] - F_ref[a][b] for b in range(K)] for a in range(K)]
        v = S.check_matrix_zero(diff, "∇²KL(π_θ‖π_ref) at θ_ref − F")
        if not v.holds:
            return v
    return Verdict(True, f"∇²KL(π_ref‖π_θ) = F; KL(π_θ‖π_ref) Hessian formula, = F at θ_ref; K in {SWEEP}")


def cross_check() -> float:
    """Lambdified KL gradients and Hessians (both directions), mapped by Φ_x, vs the library's
    ``kl_grad`` and ``kl_hess``."""
    world = random_world(seed=51, n_contexts=3, n_responses=4, dim=3)
    inst = world.instance
    K = inst.features.shape[1]
    S = SoftmaxAlgebra(K)
    c = context_quantities(world)
    err = 0.0
    for direction in ("ref_to_policy", "policy_to_ref"):
        fg = lambdify_logits(S, lambda V: obj.kl_gradient(V, direction))
        fh = lambdify_logits(S, lambda V: obj.kl_hessian(V, direction))
        grad = hess = 0.0
        for x, rho in enumerate(inst.context_probs):
            phi = inst.features[x]
            args = (c.p[x], c.q[x], c.logp[x], c.logq[x], c.ell[:, x])
            grad = grad + rho * phi.T @ fg(*args)
            hess = hess + rho * phi.T @ fh(*args) @ phi
        lib = world.population(direction=direction, order=2)
        err = max(err, scaled_diff(lib.kl_grad.numpy(), grad), scaled_diff(lib.kl_hess.numpy(), hess))
    return err


LEMMA = Lemma(
    name="fisher_identity",
    statement="∇²KL(π_ref‖π_θ) = F = Cov_θ(φ) for all θ; ∇²KL(π_θ‖π_ref) = F + E[(g−ḡ)ssᵀ], = F only at θ_ref",
    prove=check,
    negative_control=partial(check, swap_direction=True),
    cross_check=cross_check,
    control="KL direction swapped: ∇²KL(π_θ‖π_ref) = F claimed for all θ",
)
