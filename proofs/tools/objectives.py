"""SAIL-RevKL for one context, written in the softmax differential algebra (logit coordinates).

    J     = Σ_ij π_i π_j ℓ_ij(Δ_ij)                    (pairs drawn from π_θ itself)
    KL_rp = KL(π_ref‖π_θ) = Σ_i q_i (log q_i − log π_i)   (``ref_to_policy``)
    KL_pr = KL(π_θ‖π_ref) = Σ_i π_i (log π_i − log q_i)   (``policy_to_ref``)
    J_γ   = J − γ·KL

ℓ_ij is an arbitrary smooth function of Δ_ij (see :mod:`proofs.tools.softmax`).
"""

from __future__ import annotations

from proofs.tools.softmax import SoftmaxAlgebra, kron

__all__ = ["kl", "kl_gradient", "kl_hessian", "pair_gradient", "pair_hessian", "sail", "sail_revkl", "score_sum"]


def sail(S: SoftmaxAlgebra):
    return S.expectation_pairs(lambda i, j: S.ell[0][i, j])


def kl(S: SoftmaxAlgebra, direction: str):
    K, zero = S.K, S.zero
    if direction == "ref_to_policy":
        return sum((S.q[i] * (S.lq[i] - S.lp[i]) for i in range(K)), zero)
    if direction == "policy_to_ref":
        return sum((S.p[i] * (S.lp[i] - S.lq[i]) for i in range(K)), zero)
    raise ValueError(direction)


def sail_revkl(S: SoftmaxAlgebra, direction: str = "ref_to_policy"):
    return sail(S) - S.params["gamma"] * kl(S, direction)


def pair_gradient(S: SoftmaxAlgebra, i: int, j: int) -> list:
    """∇_u ℓ_ij = ℓ'_ij (e_i − e_j)  (lemma implicit_reward: ∇Δ = φ_i − φ_j)."""
    return [S.ell[1][i, j] * (kron(i, a) - kron(j, a)) for a in range(S.K)]


def pair_hessian(S: SoftmaxAlgebra, i: int, j: int) -> list[list]:
    """∇²_u ℓ_ij = ℓ''_ij (e_i − e_j)(e_i − e_j)ᵀ."""
    e = [kron(i, a) - kron(j, a) for a in range(S.K)]
    return [[S.ell[2][i, j] * e[a] * e[b] for b in range(S.K)] for a in range(S.K)]


def score_sum(S: SoftmaxAlgebra, i: int, j: int) -> list:
    """s_i + s_j with s_i = e_i − π."""
    si, sj = S.score(i), S.score(j)
    return [si[a] + sj[a] for a in range(S.K)]


def kl_gradient(S: SoftmaxAlgebra, direction: str) -> list:
    """``ref_to_policy``: π − π_ref;  ``policy_to_ref``: Σ_y π_y g_y s_y with g = log π − log π_ref."""
    K = S.K
    if direction == "ref_to_policy":
        return [S.p[a] - S.q[a] for a in range(K)]
    g = [S.lp[y] - S.lq[y] for y in range(K)]
    return [sum((S.p[y] * g[y] * S.score(y)[a] for y in range(K)), S.zero) for a in range(K)]


def kl_hessian(S: SoftmaxAlgebra, direction: str) -> list[list]:
    """``ref_to_policy``: F;  ``policy_to_ref``: Σ_y π_y g_y s_y s_yᵀ + F − (Σ_y π_y g_y) F."""
    K, F = S.K, S.fisher()
    if direction == "ref_to_policy":
        return F
    g = [S.lp[y] - S.lq[y] for y in range(K)]
    gbar = sum((S.p[y] * g[y] for y in range(K)), S.zero)
    out = [[F[a][b] - gbar * F[a][b] for b in range(K)] for a in range(K)]
    for y in range(K):
        s = S.score(y)
        for a in range(K):
            for b in range(K):
                out[a][b] += S.p[y] * g[y] * s[a] * s[b]
    return out
