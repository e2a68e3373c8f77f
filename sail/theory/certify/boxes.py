"""Verified bounds of λ_max(Uᵀ(a∇²J + b∇²KL)U) over boxes of identifiable coordinates v.

For a box with float centre c and half-widths h (every v of the box has |v − c| ≤ h), write
S(v) = Uᵀ(a∇²J + b∇²KL)U, T_l = ∂S/∂v_l and Q_lm = ∂²S/∂v_l∂v_m. By Taylor's theorem with the
Lagrange remainder, entry by entry along the segment from c,

    S(c + t) = S(c) + Σ_l t_l T_l(c) + R(t),   |R_ij| ≤ E_ij = ½ Σ_{l,m} h_l h_m · max|[Q_lm](box)|_ij,

where [Q](box) encloses the fourth derivative of J and KL over the box (:mod:`.enclosure`). λ_max of the
affine part is convex in t, so its maximum over the box is attained at one of the 2ᵏ vertices
t ∈ {−h, h}ᵏ; Weyl's inequality and ‖R‖₂ ≤ ‖E‖₂ ≤ min(‖E‖_F, max row sum of E) then give

    max_box λ_max(S) ≤ max_vertices λ_max(S(c) + Σ_l t_l T_l(c)) + ‖E‖₂,

with each vertex term bounded by :func:`.eigen.lambda_max_upper`. Boxes that cross the sphere
replace the vertices by points whose hull contains only box ∩ ball (:func:`evaluation_points`). The error of this bound over
the true maximum shrinks like h² (E is h² times the size of the fourth derivative), which is what
lets the branch and bound stop. The derivative enclosures do not depend on a and b, so one
evaluation serves every γ.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np

from sail.theory.certify import intervals as ia
from sail.theory.certify.eigen import lambda_max_lower, lambda_max_upper
from sail.theory.certify.enclosure import CertifiedProblem, objective_jets
from sail.theory.certify.intervals import Interval


BATCH = 1024
"""Boxes evaluated per vectorised call."""


@dataclass
class BoxData:
    """Cached per-box enclosures (arrays over boxes)."""

    centre: np.ndarray  # [n, k]
    half: np.ndarray  # [n, k]
    sail_hess: Interval  # S_J(c) [n, k, k]
    kl_hess: Interval
    sail_third: Interval  # T_J(c) [n, k, k, k] (last index l: ∂/∂v_l)
    kl_third: Interval
    sail_rest: np.ndarray  # E_J [n, k, k] (E for J alone)
    kl_rest: np.ndarray

    def __len__(self) -> int:
        return self.centre.shape[0]

    def take(self, index) -> "BoxData":
        return BoxData(*(getattr(self, f)[index] for f in self.__dataclass_fields__))


def concat_box_data(parts: list[BoxData]) -> BoxData:
    def join(name):
        values = [getattr(p, name) for p in parts]
        return ia.concatenate(values) if hasattr(values[0], "lo") else np.concatenate(values)

    return BoxData(*(join(f) for f in BoxData.__dataclass_fields__))


def box_centres(lo: np.ndarray, hi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Float centres and half-widths h with [lo, hi] ⊆ [c − h, c + h] (h rounded up)."""
    centre = 0.5 * lo + 0.5 * hi
    half = ia.up(np.maximum(ia.up(hi - centre), ia.up(centre - lo)))
    return centre, half


def evaluate_boxes(problem: CertifiedProblem, lo: np.ndarray, hi: np.ndarray, consts: dict | None = None) -> BoxData:
    consts = consts or problem.constants()
    centre, half = box_centres(lo, hi)
    k = problem.k
    sail_c, kl_c = objective_jets(problem, centre, centre, 3, consts)
    sail_b, kl_b = objective_jets(problem, lo, hi, 4, consts)
    hh = half[:, :, None] * half[:, None, :]  # h_l h_m: [n, k, k]

    def rest(d4: Interval) -> np.ndarray:
        terms = d4.magnitude() * hh[:, None, None, :, :]
        return ia.float_upper(0.5 * terms.sum((-1, -2)), 2 * k * k + 2)

    return BoxData(centre, half, sail_c.d[2], kl_c.d[2], sail_c.d[3], kl_c.d[3], rest(sail_b.d[4]), rest(kl_b.d[4]))


def _combine(a: float, b: float, x: Interval, y: Interval) -> Interval:
    if b == 0:
        return x * a
    if a == 0:
        return y * b
    return x * a + y * b


def _norm_upper(E: np.ndarray) -> np.ndarray:
    """An upper bound of ‖E‖₂ for non-negative E [..., k, k]."""
    k = E.shape[-1]
    frob = ia.float_upper(np.sqrt(ia.float_upper((E * E).sum((-1, -2)), k * k + 1)), k * k + 3)
    rows = ia.float_upper(E.sum(-1).max(-1), k + 1)
    return np.minimum(frob, rows)


def vertex_signs(k: int) -> np.ndarray:
    return np.array(list(itertools.product((-1.0, 1.0), repeat=k)))


def _edges(k: int) -> np.ndarray:
    """Pairs of vertex indices (of :func:`vertex_signs`) that differ in one coordinate."""
    return np.array([(i, i | (1 << (k - 1 - j))) for i in range(2**k) for j in range(k) if not i & (1 << (k - 1 - j))])


CROSSING_MARGIN = 1e-9
"""Crossing points are moved this far (as a fraction of their edge) past the plane, outwards."""


def evaluation_points(centre: np.ndarray, half: np.ndarray, radius: float) -> tuple[np.ndarray, np.ndarray]:
    """Offsets t [n, P, k] from the centre whose convex hull contains box ∩ ball, and a mask of
    the ones to use.

    A box that crosses the sphere ‖v‖ = radius is cut by the half-space H = {v : c·v ≤ radius·‖c‖},
    which contains the ball (Cauchy–Schwarz). The hull of the box's vertices inside H and of the
    points where its edges cross the plane (each moved slightly past it along its edge, so the
    hull still contains the exact crossing) contains box ∩ H ⊇ box ∩ ball. A convex function —
    λ_max of the affine model — attains its maximum over that hull at one of these points, so the
    box's overhang beyond the sphere does not enter the bound. Other boxes use their 2ᵏ vertices."""
    k = centre.shape[1]
    signs = vertex_signs(k)
    vertices = signs[None] * half[:, None, :]  # [n, V, k]
    edges = _edges(k)
    norm_c = np.linalg.norm(centre, axis=1)
    threshold = radius * norm_c * (1.0 + 1e-12)  # ≥ radius·‖c‖ despite rounding
    dots = np.einsum("nk,nvk->nv", centre, centre[:, None, :] + vertices)  # c·v at each vertex
    inside = dots <= threshold[:, None]
    cut = (~inside).any(1) & inside.any(1) & (norm_c > 0)
    i, j = edges[:, 0], edges[:, 1]
    crossing = inside[:, i] != inside[:, j]  # [n, E]
    a = np.where(inside[:, i], i[None], j[None])  # the edge end inside H
    b = np.where(inside[:, i], j[None], i[None])
    da = np.take_along_axis(dots, a, 1)
    db = np.take_along_axis(dots, b, 1)
    with np.errstate(divide="ignore", invalid="ignore"):
        frac = np.clip((threshold[:, None] - da) / (db - da) + CROSSING_MARGIN, 0.0, 1.0)
    frac = np.where(np.isfinite(frac), frac, 1.0)
    va = np.take_along_axis(vertices, a[..., None], 1)
    vb = np.take_along_axis(vertices, b[..., None], 1)
    points = np.concatenate([vertices, va + frac[..., None] * (vb - va)], axis=1)
    use_vertex = np.where(cut[:, None], inside, True)
    use_edge = cut[:, None] & crossing
    return points, np.concatenate([use_vertex, use_edge], axis=1)


def upper_bounds(data: BoxData, a: float, b: float, radius: float) -> np.ndarray:
    """A verified upper bound of max over box ∩ {‖v‖ ≤ radius} of λ_max(Uᵀ(a∇²J + b∇²KL)U) per box."""
    S = _combine(a, b, data.sail_hess, data.kl_hess)  # [n, k, k]
    T = _combine(a, b, data.sail_third, data.kl_third)  # [n, k, k, k]
    t, use = evaluation_points(data.centre, data.half, radius)  # [n, P, k]
    t = np.clip(t, -data.half[:, None, :], data.half[:, None, :])  # within the box (the remainder's h)
    linear = (T.expand(1) * Interval.point(t[:, :, None, None, :])).sum(-1)  # [n, P, k, k]
    values = lambda_max_upper(S.expand(1) + linear)
    vertex = np.where(use, values, -np.inf).max(-1)
    rest = _norm_upper(ia.float_upper(abs(a) * data.sail_rest + abs(b) * data.kl_rest, 3))
    return ia.up(vertex + rest)


def centre_lower_bounds(data: BoxData, a: float, b: float) -> np.ndarray:
    """A verified lower bound of λ_max(Uᵀ(a∇²J + b∇²KL)U) at each box centre."""
    return lambda_max_lower(_combine(a, b, data.sail_hess, data.kl_hess))[0]


def min_norm_squared_lower(lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """A lower bound of min_{v ∈ [lo, hi]} ‖v‖² per box."""
    gap = np.where(lo > 0, lo, np.where(hi < 0, -hi, 0.0))
    sq = ia.down(gap * gap)
    k = lo.shape[-1]
    return np.maximum(0.0, ia.down(sq.sum(-1) * (1.0 - ia.gamma_n(k))))
