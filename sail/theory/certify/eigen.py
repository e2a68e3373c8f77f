"""Verified bounds on the largest eigenvalue of symmetric matrices known up to intervals.

Upper bound (:func:`lambda_max_upper`). For an interval matrix [A] with float midpoint M, take
float eigenvectors Q of M (any nonsingular Q will do) and enclose B = QᵀAQ and G = QᵀQ in interval
arithmetic. For c ∈ ℝ, A − cI is congruent to B − cG, so by Sylvester's law of inertia A − cI is
negative definite iff B − cG is. If every row of the interval matrix D = B − cG satisfies
max Dᵢᵢ + Σ_{j≠i} max|Dᵢⱼ| < 0, every eigenvalue of every symmetric member is negative
(Gershgorin), hence λ_max(A) < c for every symmetric A in [A]. Q nonsingular is itself checked by
Gershgorin on G (min Gᵢᵢ − Σ_{j≠i} max|Gᵢⱼ| > 0). Because B is nearly diagonal, c is within a few
units of the intervals' widths of the true maximum.

Lower bound (:func:`lambda_max_lower`): λ_max(A) ≥ xᵀAx / xᵀx for any x ≠ 0 (Rayleigh), with x
the float top eigenvector of M and both quadratic forms enclosed in interval arithmetic.
"""

from __future__ import annotations

import numpy as np

from sail.theory.certify import intervals as ia
from sail.theory.certify.intervals import Interval


def _congruence(Q: np.ndarray, A: Interval) -> Interval:
    """An enclosure of QᵀAQ for float Q [..., k, k] and an interval A [..., k, k]."""
    mid, rad = A.mid(), A.radius()
    k = Q.shape[-1]
    Qt = np.swapaxes(Q, -1, -2)
    absQ, absQt = np.abs(Q), np.abs(Qt)
    centre = Qt @ mid @ Q
    # |fl(Qᵀ M Q) − QᵀMQ| ≤ γ_{2k+1}·|Q|ᵀ|M||Q| (two products of inner length k), and the
    # radius term |Q|ᵀ R |Q| computed in floats is inflated by its own rounding bound.
    rounding = ia.gamma_n(2 * k + 1) * (absQt @ np.abs(mid) @ absQ)
    spread = ia.float_upper(absQt @ rad @ absQ + rounding, 2 * k + 4)
    return Interval(ia.down(centre - spread), ia.up(centre + spread))


def _gram(Q: np.ndarray) -> Interval:
    k = Q.shape[-1]
    Qt = np.swapaxes(Q, -1, -2)
    centre = Qt @ Q
    spread = ia.float_upper(ia.gamma_n(k) * (np.abs(Qt) @ np.abs(Q)), k + 2)
    return Interval(ia.down(centre - spread), ia.up(centre + spread))


def _off_diagonal_sum(mag: np.ndarray) -> np.ndarray:
    k = mag.shape[-1]
    off = mag * (1.0 - np.eye(k))
    return ia.float_upper(off.sum(-1), k)


def _rows_negative(D: Interval) -> np.ndarray:
    """Every row of D strictly diagonally dominant with a negative diagonal (per matrix)."""
    diag_hi = np.diagonal(D.hi, axis1=-2, axis2=-1)
    bound = ia.up(diag_hi + _off_diagonal_sum(D.magnitude()))
    return np.all(bound < 0, axis=-1)


def lambda_max_upper(A: Interval) -> np.ndarray:
    """A verified upper bound of λ_max over the symmetric matrices in A [..., k, k] (+inf where
    the verification fails, e.g. for NaN input)."""
    mid = A.mid()
    mid = 0.5 * (mid + np.swapaxes(mid, -1, -2))
    _, Q = np.linalg.eigh(mid)
    B = _congruence(Q, A)
    G = _gram(Q)
    g_ok = np.all(np.diagonal(G.lo, axis1=-2, axis2=-1) - _off_diagonal_sum(G.magnitude()) > 0, axis=-1)
    gersh = np.max(np.diagonal(B.hi, axis1=-2, axis2=-1) + _off_diagonal_sum(B.magnitude()), axis=-1)
    scale = 1.0 + np.abs(gersh)
    result = np.full(gersh.shape, np.inf)
    pending = g_ok & np.isfinite(gersh)
    for slack in (1e-13, 1e-10, 1e-7):
        c = ia.up(gersh + slack * scale)
        ok = pending & _rows_negative(B - Interval.point(c[..., None, None]) * G)
        result = np.where(ok, c, result)
        pending &= ~ok
        if not pending.any():
            break
    return result


def lambda_max_lower(A: Interval) -> tuple[np.ndarray, np.ndarray]:
    """(a verified lower bound of λ_max over the symmetric matrices in A, the vector x used)."""
    mid = A.mid()
    mid = 0.5 * (mid + np.swapaxes(mid, -1, -2))
    _, Q = np.linalg.eigh(mid)
    x = Q[..., :, -1]
    quad = (Interval.point(x[..., :, None] * x[..., None, :]) * A).sum(-1).sum(-1)
    norm = (Interval.point(x) * Interval.point(x)).sum(-1)
    return (quad * norm.reciprocal()).lo, x
