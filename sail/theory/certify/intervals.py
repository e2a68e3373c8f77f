"""Outward-rounded interval arithmetic on numpy arrays (float64).

An :class:`Interval` holds arrays ``lo`` ≤ ``hi`` of one shape; every operation returns an
interval that contains every exact real result of the operation on members of its operands.

How rounding is made safe (the "arithmetic" field of every certificate names this scheme):

* ``+ − ×`` and ``÷``: IEEE round-to-nearest is off by at most half an ulp (2⁻⁵³ relative), so
  the computed lower end is moved down by 2⁻⁵¹ of its magnitude plus two subnormals (:func:`down`)
  and the upper end up by as much.
* ``exp``, ``log`` and ``log1p``: numpy's float64 versions are not correctly rounded; their error
  is a few ulp (≤ 4 ulp on the platforms numpy supports). The ends are widened by the relative
  amount :data:`TRANSCENDENTAL_SLACK` = 2⁻⁴⁰ ≈ 9·10⁻¹³, some 2,000 times that, plus one float.
* sums of n terms and products with exact float matrices: the float result is off by at most
  γ_n·Σ|terms| with γ_n = n·u/(1 − n·u), u = 2⁻⁵³, for any order of summation (Higham,
  *Accuracy and Stability of Numerical Algorithms*, §3.1 and §4.2); the ends are moved by that
  bound (computed with n + 2 in place of n, and rounded up) plus the smallest subnormal per term.

Exact float inputs (features, θ_ref, box ends) are taken as exact reals: the statements the
certificates make are about the float numbers written in the instance and certificate files.
"""

from __future__ import annotations

import numpy as np

UNIT_ROUNDOFF = 2.0**-53
TRANSCENDENTAL_SLACK = 2.0**-40
TINY = 5e-324

SCHEME = (
    "float64 intervals; + − × ÷ rounded outward by 2^-51 relative + 2^-1073 per operation; exp, log and log1p widened by "
    "2^-40 relative plus one ulp; sums and float-matrix products widened by γ_(n+2)·Σ|terms| + n·2^-1074"
)


OUTWARD = 2.0**-51
"""down(x) = x − (2⁻⁵¹|x| + 2·2⁻¹⁰⁷⁴): for a float x = fl(r) of an exact real r (|x − r| ≤ 2⁻⁵³|x|
to first order) the computed result is ≤ r, since the subtraction itself rounds by at most 2⁻⁵³
of |x| (a margin of 2⁻⁵² of |x| is left); the subnormal term covers underflow. Two multiply-adds
instead of ``nextafter``, at the price of about two ulp of width per operation."""


def down(x):
    return x - (np.abs(x) * OUTWARD + 2 * TINY)


def up(x):
    return x + (np.abs(x) * OUTWARD + 2 * TINY)


def gamma_n(n: int) -> float:
    """γ_n = n·u/(1 − n·u), rounded up (Higham's constant for n rounding errors)."""
    m = (n + 2) * UNIT_ROUNDOFF
    return float(up(np.float64(m / (1.0 - m)) * (1.0 + 4.0 * UNIT_ROUNDOFF)))


class Interval:
    """Arrays ``lo`` ≤ ``hi`` enclosing an array of reals."""

    __slots__ = ("lo", "hi")

    def __init__(self, lo, hi=None):
        self.lo = np.asarray(lo, dtype=np.float64)
        self.hi = self.lo if hi is None else np.asarray(hi, dtype=np.float64)

    @classmethod
    def point(cls, x) -> "Interval":
        """The degenerate interval of exact float values ``x``."""
        x = np.asarray(x, dtype=np.float64)
        return cls(x, x)

    @property
    def shape(self) -> tuple:
        return self.lo.shape

    def __getitem__(self, index) -> "Interval":
        return Interval(self.lo[index], self.hi[index])

    def take(self, indices, axis: int) -> "Interval":
        return Interval(np.take(self.lo, indices, axis), np.take(self.hi, indices, axis))

    def reshape(self, *shape) -> "Interval":
        return Interval(self.lo.reshape(*shape), self.hi.reshape(*shape))

    def expand(self, axis) -> "Interval":
        return Interval(np.expand_dims(self.lo, axis), np.expand_dims(self.hi, axis))

    def broadcast_to(self, shape) -> "Interval":
        return Interval(np.broadcast_to(self.lo, shape), np.broadcast_to(self.hi, shape))

    def transpose(self, *axes) -> "Interval":
        return Interval(self.lo.transpose(*axes), self.hi.transpose(*axes))

    # -- arithmetic -------------------------------------------------------------------------
    def __add__(self, other) -> "Interval":
        o = as_interval(other)
        return Interval(down(self.lo + o.lo), up(self.hi + o.hi))

    __radd__ = __add__

    def __neg__(self) -> "Interval":
        return Interval(-self.hi, -self.lo)

    def __sub__(self, other) -> "Interval":
        o = as_interval(other)
        return Interval(down(self.lo - o.hi), up(self.hi - o.lo))

    def __rsub__(self, other) -> "Interval":
        return as_interval(other) - self

    def __mul__(self, other) -> "Interval":
        o = as_interval(other)
        if o.lo is o.hi and self.lo is not self.hi:  # exact float factor: two products suffice
            a, b = self.lo * o.lo, self.hi * o.lo
            return Interval(down(np.minimum(a, b)), up(np.maximum(a, b)))
        p1, p2, p3, p4 = self.lo * o.lo, self.lo * o.hi, self.hi * o.lo, self.hi * o.hi
        lo = np.minimum(np.minimum(p1, p2), np.minimum(p3, p4))
        hi = np.maximum(np.maximum(p1, p2), np.maximum(p3, p4))
        return Interval(down(lo), up(hi))

    __rmul__ = __mul__

    def reciprocal(self) -> "Interval":
        """1/x for intervals of positive numbers."""
        if np.any(self.lo <= 0):
            raise ValueError("reciprocal of an interval that is not positive")
        return Interval(down(1.0 / self.hi), up(1.0 / self.lo))

    def __truediv__(self, other) -> "Interval":
        return self * as_interval(other).reciprocal()

    # -- reductions -------------------------------------------------------------------------
    def sum(self, axis) -> "Interval":
        """Σ along ``axis`` (any float summation order), widened by γ_n·Σ|·|."""
        n = self.lo.shape[axis]
        g = gamma_n(n)
        lo = np.sum(self.lo, axis=axis)
        hi = np.sum(self.hi, axis=axis)
        lo_err = g * np.sum(np.abs(self.lo), axis=axis) + n * TINY
        hi_err = g * np.sum(np.abs(self.hi), axis=axis) + n * TINY
        return Interval(down(lo - up(lo_err)), up(hi + up(hi_err)))

    # -- queries ----------------------------------------------------------------------------
    def mid(self) -> np.ndarray:
        return 0.5 * self.lo + 0.5 * self.hi

    def radius(self) -> np.ndarray:
        """An upper bound of the half-width about :meth:`mid`."""
        m = self.mid()
        return up(np.maximum(self.hi - m, m - self.lo))

    def magnitude(self) -> np.ndarray:
        """max |x| over the interval."""
        return np.maximum(np.abs(self.lo), np.abs(self.hi))

    def width(self) -> np.ndarray:
        return up(self.hi - self.lo)

    def contains(self, x, slack: float = 0.0) -> np.ndarray:
        x = np.asarray(x)
        return (self.lo - slack <= x) & (x <= self.hi + slack)

    def __repr__(self) -> str:  # pragma: no cover - debugging aid
        return f"Interval(lo={self.lo!r}, hi={self.hi!r})"


def as_interval(x) -> Interval:
    return x if isinstance(x, Interval) else Interval.point(x)


def stack(items, axis: int = 0) -> Interval:
    return Interval(np.stack([i.lo for i in items], axis), np.stack([i.hi for i in items], axis))


def concatenate(items, axis: int = 0) -> Interval:
    return Interval(np.concatenate([i.lo for i in items], axis), np.concatenate([i.hi for i in items], axis))


def exp(x: Interval) -> Interval:
    lo = np.exp(x.lo) * (1.0 - TRANSCENDENTAL_SLACK)
    hi = np.exp(x.hi) * (1.0 + TRANSCENDENTAL_SLACK)
    return Interval(down(lo), up(hi))


def log1p(x: Interval) -> Interval:
    """log(1 + x) for x > −1."""
    if np.any(x.lo <= -1):
        raise ValueError("log1p of an interval reaching -1")
    lo, hi = np.log1p(x.lo), np.log1p(x.hi)
    lo = lo - np.abs(lo) * TRANSCENDENTAL_SLACK
    hi = hi + np.abs(hi) * TRANSCENDENTAL_SLACK
    return Interval(down(lo), up(hi))


def log(x: Interval) -> Interval:
    """log x for x > 0 (numpy's log, widened like :func:`exp`)."""
    if np.any(x.lo <= 0):
        raise ValueError("log of an interval that is not positive")
    lo, hi = np.log(x.lo), np.log(x.hi)
    lo = lo - np.abs(lo) * TRANSCENDENTAL_SLACK
    hi = hi + np.abs(hi) * TRANSCENDENTAL_SLACK
    return Interval(down(lo), up(hi))


def matmul_float(matrix: np.ndarray, x: Interval, axis: int = -1) -> Interval:
    """Σ_j matrix[i, j]·x[..., j] along ``axis`` of ``x`` for an exact float ``matrix`` [m, n]: the
    result has ``m`` in place of that axis. Mid-radius form with the dot-product error bound."""
    matrix = np.asarray(matrix, dtype=np.float64)
    xl, xh = np.moveaxis(x.lo, axis, -1), np.moveaxis(x.hi, axis, -1)
    mid = 0.5 * xl + 0.5 * xh
    rad = up(np.maximum(xh - mid, mid - xl))
    n = matrix.shape[1]
    absm = np.abs(matrix)
    centre = mid @ matrix.T
    spread = (rad @ absm.T) * (1.0 + gamma_n(n)) + gamma_n(n + 1) * (np.abs(mid) @ absm.T) + n * TINY
    spread = up(spread * (1.0 + gamma_n(n + 2)))
    lo, hi = down(centre - spread), up(centre + spread)
    return Interval(np.moveaxis(lo, -1, axis), np.moveaxis(hi, -1, axis))


def float_upper(x: np.ndarray, terms: int) -> np.ndarray:
    """An upper bound of an exact non-negative quantity computed in floats as ``x`` from
    ``terms`` rounded operations on non-negative numbers (a sum of products, a square root)."""
    return up(np.asarray(x) * (1.0 + gamma_n(terms)) + terms * TINY)
