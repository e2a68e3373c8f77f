"""Rigorous enclosures of the derivatives of J and of E_x KL for a log-linear instance, over boxes
of identifiable coordinates v (θ = θ_ref + U v) or at points.

For context x with relative logits δ_y(v) = φ(x, y)ᵀU v, the per-context terms are

    J_x  = Σ_{y₁,y₂} π_{y₁} π_{y₂} ℓ(δ_{y₁} − δ_{y₂}),   ℓ(Δ) = p*·βΔ − softplus(βΔ),
         = 2Σ_{y₁<y₂} π_{y₁} π_{y₂} ℓ(δ_{y₁} − δ_{y₂}) − log 2·Σ_y π_y²   (ℓ is symmetric, ℓ(0) = −log 2),
    KL_x = −Σ_y π_ref(y) log π_y + const         (``ref_to_policy``, KL(π_ref‖π_θ)),
    KL_x = Σ_y π_y (log π_y − log π_ref(y))       (``policy_to_ref``, KL(π_θ‖π_ref)),

with log π_y = (a_y − s) − log Σ_z e^{a_z − s} (a = θᵀφ, s any constant), and
ℓ = p* log σ(βΔ) + (1 − p*) log σ(−βΔ) rewritten with softplus(z) − softplus(−z) = z
(proofs/certify_jets.py). The same objective as :meth:`sail.policies.loglinear.LogLinearPolicy.population`;
the tests compare the two. Every quantity is an interval :class:`~sail.theory.certify.jets.Jet`,
so the second and third derivatives returned enclose the true ones over the whole box.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sail.theory.certify import intervals as ia
from sail.theory.certify.intervals import Interval
from sail.theory.certify.jets import Jet, outer_product, placements_sum, scale_tensor, sigmoid, softplus_derivatives
from sail.theory.instance import Instance


@dataclass(frozen=True)
class CertifiedProblem:
    """The exact floats a certificate speaks about: the instance's arrays (its γ and radius are the
    certificate's to vary) and the basis U [d, k]."""

    instance: Instance
    basis: np.ndarray

    @property
    def k(self) -> int:
        return self.basis.shape[1]

    def constants(self) -> dict:
        """Box-independent enclosures: P = Uᵀφ, a_ref = θ_refᵀφ, π_ref, log π_ref, p*."""
        phi = Interval.point(self.instance.features)
        P = ia.matmul_float(self.basis.T, phi, axis=-1)  # [X, Y, k]
        a_ref = ia.matmul_float(self.instance.theta_ref[None, :], phi, axis=-1)[..., 0]  # [X, Y]
        shift = a_ref.mid().max(axis=1, keepdims=True)
        e_ref = ia.exp(a_ref - shift)
        z_ref = e_ref.sum(1)
        log_pi_ref = (a_ref - shift) - ia.log(z_ref).expand(1)
        pi_ref = e_ref * z_ref.reciprocal().expand(1)
        r = Interval.point(self.instance.reward)
        diff = r.expand(2) - r.expand(1)  # r*(y₁) − r*(y₂): [X, Y, Y]
        p_star = sigmoid(diff)
        return {"P": P, "a_ref": a_ref, "pi_ref": pi_ref, "log_pi_ref": log_pi_ref, "p_star": p_star}


def _values(P: Interval, a_ref: Interval, V: Interval) -> tuple[Interval, Interval]:
    """(π_y, log π_y) over the boxes V: π_y = 1/Σ_z exp(d_zy) with d_zy = a_z − a_y affine in v,
    so each d_zy's range over a box is exact (each appears once)."""
    diff_grad = P.expand(1) - P.expand(2)  # P_z − P_y: [X, y, z, k]
    diff_ref = a_ref.expand(1) - a_ref.expand(2)  # [X, y, z]
    d = diff_ref.expand(0) + (diff_grad.expand(0) * V.expand(1).expand(1).expand(1)).sum(-1)  # [N, X, y, z]
    partition = ia.exp(d).sum(3)
    return partition.reciprocal(), -ia.log(partition)


def cumulants(pi: Interval, P: Interval, order: int) -> list[Interval]:
    """[m, κ₂, …, κ_order]: the mean and cumulant tensors of P_y under π (per box and context),

    m = Σ π_z P_z,  κ₂ = ½Σ_{z,w} π_z π_w (P_z − P_w)^{⊗2},  κ₃ = Σ π_z u_z^{⊗3},
    κ₄ = Σ π_z u_z^{⊗4} − Σ₃ κ₂⊗κ₂,  κ₅ = Σ π_z u_z^{⊗5} − Σ₁₀ κ₃⊗κ₂,  u_z = P_z − m.
    """
    w = pi.expand(3)  # [N, X, Y, 1]
    mean = (w * P.expand(0)).sum(2)  # [N, X, k]
    out = [mean]
    if order < 2:
        return out
    diff = P.expand(1) - P.expand(2)
    pair_w = pi.expand(3) * pi.expand(2)  # [N, X, y, z]
    cov = (pair_w.expand(-1).expand(-1) * (diff.expand(-1) * diff.expand(-2)).expand(0)).sum(3).sum(2) * 0.5
    out.append(cov)
    u = P.expand(0) - mean.expand(2)  # [N, X, Y, k]
    u_power = outer_product(u, 1, u, 1)
    for j in range(3, order + 1):
        u_power = outer_product(u_power, j - 1, u, 1)
        moment = scale_tensor(pi, u_power, j).sum(2)  # Σ_z π_z u_z^{⊗j}
        if j == 4:
            moment = moment - placements_sum(outer_product(cov, 2, cov, 2), 2, 4) * 0.5
        if j == 5:
            moment = moment - placements_sum(outer_product(out[2], 3, cov, 2), 3, 5)
        out.append(moment)
    return out


def _intersect(a: Interval, b: Interval) -> Interval:
    return Interval(np.maximum(a.lo, b.lo), np.minimum(a.hi, b.hi))


def softmax_jets(P: Interval, a_ref: Interval, lo: np.ndarray, hi: np.ndarray, order: int) -> tuple[Jet, Jet]:
    """log π_y and π_y over the boxes [lo, hi] [N, k], with a_y = a_ref,y + P_y·v.

    log π_y = a_y − A(v) with A = log Σ_z e^{a_z}, whose derivatives are the cumulants of P under
    π (:func:`cumulants`): D log π_y = P_y − m, Dʲ log π_y = −κⱼ (j ≥ 2); then π_y = exp(log π_y).
    Over a box each of m, κ₂, …, κ₄ is the intersection of its natural enclosure with the centred
    form κⱼ(c) + Σ_l [−h_l, h_l]·[κⱼ₊₁](box)_l, valid because ∂κⱼ/∂v_l = (κⱼ₊₁)_l (the cumulants of
    an exponential family are the derivatives of A); the centred form shrinks like h where the
    natural one carries the dependency between the π_z.
    """
    V = Interval(lo, hi)
    pi_value, log_pi_value = _values(P, a_ref, V)
    n, n_ctx, n_resp = pi_value.shape
    k = P.shape[-1]
    natural = cumulants(pi_value, P, order + 1)
    if np.any(lo != hi):
        centre = 0.5 * lo + 0.5 * hi
        half = ia.up(np.maximum(ia.up(hi - centre), ia.up(centre - lo)))
        t = Interval(-half, half)  # [N, k]
        at_centre = cumulants(_values(P, a_ref, Interval.point(centre))[0], P, order)
        for j in range(order):
            spread = natural[j + 1] * t.reshape(n, 1, *([1] * (j + 1)), k)
            natural[j] = _intersect(natural[j], at_centre[j] + spread.sum(-1))
    derivs = [log_pi_value, P.expand(0) - natural[0].expand(2)]
    for j in range(2, order + 1):
        c = -natural[j - 1]
        derivs.append(c.expand(2).broadcast_to((n, n_ctx, n_resp, *([k] * j))))
    log_pi = Jet(derivs)
    pi = log_pi.compose((pi_value,) * (order + 1))
    return log_pi, pi


def objective_jets(
    problem: CertifiedProblem, lo: np.ndarray, hi: np.ndarray, order: int, consts: dict | None = None
) -> tuple[Jet, Jet]:
    """(J, E_x KL) as jets of the given order enclosing value and derivatives in v over the boxes
    [lo, hi] [N, k] (lo = hi: at points)."""
    c = consts or problem.constants()
    P = c["P"]
    V = Interval(lo, hi)  # [N, k]
    delta = (P.expand(0) * V.expand(1).expand(1)).sum(-1)  # [N, X, Y]
    log_pi, pi = softmax_jets(P, c["a_ref"], lo, hi, order)

    # ℓ is symmetric in (y₁, y₂) (p*(y₂, y₁) = 1 − p*(y₁, y₂) and softplus(−z) = softplus(z) − z)
    # and ℓ(Δ = 0) = −log 2, so J_x = 2Σ_{y₁<y₂} π_{y₁}π_{y₂} ℓ − log 2 · Σ_y π_y².
    first, second = np.triu_indices(P.shape[1], 1)
    gap = delta.take(first, 2) - delta.take(second, 2)  # δ_{y₁} − δ_{y₂}: [N, X, M]
    gap_grad = P.take(first, 1) - P.take(second, 1)  # [X, M, k]
    scaled = Jet.affine(gap * problem.instance.beta, (gap_grad * problem.instance.beta).expand(0), order)
    p_star = Interval(c["p_star"].lo[:, first, second], c["p_star"].hi[:, first, second])
    ell = scaled.scale(p_star.expand(0)) - scaled.compose(softplus_derivatives(scaled.d[0], order))
    pair_log = log_pi.take(first, 2) + log_pi.take(second, 2)  # log π_{y₁}π_{y₂}
    pair_value = pi.d[0].take(first, 2) * pi.d[0].take(second, 2)
    pair = pair_log.compose((pair_value,) * (order + 1))
    square = log_pi.scale(2.0).compose((pi.d[0] * pi.d[0],) * (order + 1))  # π_y²
    log_two = ia.log(Interval.point(np.array(2.0)))
    per_context = (pair * ell).sum(2).scale(2.0) + square.sum(2).scale(-log_two)  # [N, X]
    rho = problem.instance.context_probs[None, :]
    sail = per_context.scale(rho).sum(1)

    if problem.instance.kl == "ref_to_policy":
        kl_context = log_pi.scale(-c["pi_ref"].expand(0)).sum(2)
    else:
        kl_context = (pi * (log_pi - c["log_pi_ref"].expand(0))).sum(2)
    kl = kl_context.scale(rho).sum(1)
    return sail, kl
