"""Taylor jets to fourth order with interval coefficients: enclosures of f and of its derivative
tensors ∇f, …, ∇ⁿf (n ≤ 4) of a function of v ∈ ℝᵏ over a box of v (or at a point).

A :class:`Jet` holds intervals ``d[0]`` [...], ``d[1]`` [..., k], …, ``d[n]`` [..., k × n]
(full symmetric tensors). The rules are Leibniz's for products and Faà di Bruno's for
compositions, both sums over the ways of distributing the n derivative indices:

    Dⁿ(fg)  = Σ_{S ⊆ {1..n}} D^{|S|}f_S · D^{n−|S|}g_{Sᶜ},
    Dⁿ(φ∘g) = Σ_{partitions π of {1..n}} φ^{(|π|)}(g) · Π_{B ∈ π} D^{|B|}g_B,

so for n = 3: φ'''·g₁g₁g₁ + φ''·Σ₃ g₁g₂ + φ'·g₃, and for n = 4: φ''''·g₁⁴ + φ'''·Σ₆ g₂g₁g₁
+ φ''·(Σ₃ g₂g₂ + Σ₄ g₁g₃) + φ'·g₄ (proofs/certify_jets.py checks these). Evaluated in
:mod:`interval arithmetic <sail.theory.certify.intervals>` with φ⁽ʲ⁾ enclosed over the enclosure of g,
every coefficient encloses the true derivative at every point of the set (the natural interval
extension of the derivative formulas).
"""

from __future__ import annotations

import itertools
from functools import lru_cache

import numpy as np

from sail.theory.certify import intervals as ia
from sail.theory.certify.intervals import Interval


def outer_product(a: Interval, p: int, b: Interval, q: int) -> Interval:
    """a[..., k×p] ⊗ b[..., k×q] → [..., k×(p+q)] (a's indices first)."""
    return a.reshape(*a.shape, *([1] * q)) * b.reshape(*b.shape[: b.lo.ndim - q], *([1] * p), *b.shape[b.lo.ndim - q :])


@lru_cache(maxsize=None)
def _placements(first: int, order: int) -> tuple[tuple[int, ...], ...]:
    """Axis permutations that put a tensor's first ``first`` indices (one symmetric group) at
    every choice of ``first`` of the ``order`` positions, and its other indices (another
    symmetric group) at the rest."""
    perms = []
    for chosen in itertools.combinations(range(order), first):
        rest = [p for p in range(order) if p not in chosen]
        source = [0] * order
        for i, p in enumerate(chosen):
            source[p] = i
        for i, p in enumerate(rest):
            source[p] = first + i
        perms.append(tuple(source))
    return tuple(perms)


def placements_sum(t: Interval, first: int, order: int) -> Interval:
    """Σ over the placements of :func:`_placements` of t's last ``order`` axes."""
    batch = t.lo.ndim - order
    total = None
    for perm in _placements(first, order):
        term = t.transpose(*range(batch), *(batch + p for p in perm))
        total = term if total is None else total + term
    return total


def scale_tensor(c: Interval, t: Interval, order: int) -> Interval:
    """c[...]·t[..., k × order]."""
    if c.lo.ndim == 0:
        return t * c
    return c.reshape(*c.shape, *([1] * order)) * t


class Jet:
    """Enclosures ``d[j]`` of ∇ʲf, j = 0..order, over one set of v (batched on leading axes)."""

    __slots__ = ("d",)

    def __init__(self, d: list[Interval]):
        self.d = list(d)

    @property
    def order(self) -> int:
        return len(self.d) - 1

    @classmethod
    def affine(cls, value: Interval, gradient: Interval, order: int) -> "Jet":
        """f(v) = c + gᵀv: ``value`` encloses f over the set, ``gradient`` encloses g [..., k]."""
        k = gradient.shape[-1]
        d = [value, gradient.broadcast_to((*value.shape, k))]
        d += [Interval.point(np.zeros((*value.shape, *([k] * j)))) for j in range(2, order + 1)]
        return cls(d[: order + 1])

    def take(self, indices, axis: int) -> "Jet":
        """The entries ``indices`` along the batch axis ``axis`` (≥ 0)."""
        return Jet([a.take(indices, axis) for a in self.d])

    def expand(self, axis: int) -> "Jet":
        """A new length-1 batch axis at ``axis`` (counted among the batch axes, ≥ 0)."""
        return Jet([d.expand(axis) for d in self.d])

    def __add__(self, other) -> "Jet":
        if isinstance(other, Jet):
            return Jet([a + b for a, b in zip(self.d, other.d)])
        return Jet([self.d[0] + other, *self.d[1:]])

    def __neg__(self) -> "Jet":
        return Jet([-a for a in self.d])

    def __sub__(self, other) -> "Jet":
        return self + (-other if isinstance(other, Jet) else -ia.as_interval(other))

    def scale(self, c) -> "Jet":
        """c·f for a constant c (a float array or an :class:`Interval` on the batch axes)."""
        c = ia.as_interval(c)
        return Jet([scale_tensor(c, a, j) for j, a in enumerate(self.d)])

    def __mul__(self, other: "Jet") -> "Jet":
        f, g = self.d, other.d
        out = []
        for n in range(len(f)):
            total = scale_tensor(f[0], g[n], n) + scale_tensor(g[0], f[n], n) if n else f[0] * g[0]
            for s in range(1, n):
                total = total + placements_sum(outer_product(f[s], s, g[n - s], n - s), s, n)
            out.append(total)
        return Jet(out)

    def compose(self, phi: tuple[Interval, ...]) -> "Jet":
        """φ∘f given enclosures (φ, φ', …, φ⁽ⁿ⁾) over the enclosure ``self.d[0]``."""
        g = self.d
        n = self.order
        out = [phi[0]]
        if n >= 1:
            out.append(scale_tensor(phi[1], g[1], 1))
        if n >= 2:
            g11 = outer_product(g[1], 1, g[1], 1)
            out.append(scale_tensor(phi[2], g11, 2) + scale_tensor(phi[1], g[2], 2))
        if n >= 3:
            g111 = outer_product(g[1], 1, g11, 2)
            third = scale_tensor(phi[3], g111, 3) + scale_tensor(phi[2], placements_sum(outer_product(g[1], 1, g[2], 2), 1, 3), 3)
            out.append(third + scale_tensor(phi[1], g[3], 3))
        if n >= 4:
            fourth = scale_tensor(phi[4], outer_product(g[1], 1, g111, 3), 4)
            fourth = fourth + scale_tensor(phi[3], placements_sum(outer_product(g[2], 2, g11, 2), 2, 4), 4)
            pairs = placements_sum(outer_product(g[2], 2, g[2], 2), 2, 4) * 0.5  # 6 ordered placements = 2 × 3 pairings
            fourth = fourth + scale_tensor(phi[2], pairs + placements_sum(outer_product(g[1], 1, g[3], 3), 1, 4), 4)
            out.append(fourth + scale_tensor(phi[1], g[4], 4))
        if n > 4:
            raise ValueError("jets are implemented to order 4")
        return Jet(out)

    def sum(self, axis: int) -> "Jet":
        """Σ along the batch axis ``axis`` (≥ 0)."""
        return Jet([a.sum(axis) for a in self.d])


# -- univariate functions: (φ, φ', …, φ⁽ⁿ⁾) enclosed over an interval ---------------------------


def exp_derivatives(x: Interval, order: int) -> tuple[Interval, ...]:
    e = ia.exp(x)
    return (e,) * (order + 1)


def sigmoid(x: Interval) -> Interval:
    """σ(x) = 1/(1 + e^{−x}), monotone increasing."""
    return (ia.exp(-x) + 1.0).reciprocal()


SIGMOID_POLYNOMIALS = (
    (np.array([0.0, 1.0, -1.0]), (0.5,)),
    (np.array([0.0, 1.0, -3.0, 2.0]), ((3 - 3**0.5) / 6, (3 + 3**0.5) / 6)),
    (np.array([0.0, 1.0, -7.0, 12.0, -6.0]), (0.5, 0.5 - 6**0.5 / 6, 0.5 + 6**0.5 / 6)),
)
"""σ', σ'', σ''' as polynomials in s = σ (coefficients of s⁰, s¹, …) and the points where their
derivative in s vanishes: σ' = s − s², σ'' = s − 3s² + 2s³, σ''' = s − 7s² + 12s³ − 6s⁴."""


def softplus_derivatives(x: Interval, order: int) -> tuple[Interval, ...]:
    """softplus(x) = log(1 + eˣ), σ, σ', σ'' …, each enclosed by its exact range over the
    interval of σ (polynomials in s = σ with known critical points)."""
    s = sigmoid(x)
    out = [ia.log1p(ia.exp(x)), s]
    for coefficients, critical in SIGMOID_POLYNOMIALS[: max(order - 1, 0)]:
        out.append(_poly_range(s, coefficients, critical))
    return tuple(out[: order + 1])


def _poly(s: Interval, coefficients: np.ndarray) -> Interval:
    """Σ c_j s^j by Horner's rule in interval arithmetic."""
    total = Interval.point(np.full(s.shape, coefficients[-1]))
    for c in coefficients[-2::-1]:
        total = total * s + float(c)
    return total


def _poly_range(s: Interval, coefficients: np.ndarray, critical: tuple[float, ...]) -> Interval:
    """The range of the polynomial over s: hull of its values at the ends of s and at the
    critical points inside, each evaluated in interval arithmetic. A float critical point is
    within 10⁻¹⁶ of the true one, where the polynomial is flat to first order, so the slack of
    10⁻¹⁵ covers the difference."""
    ends = [_poly(Interval.point(s.lo), coefficients), _poly(Interval.point(s.hi), coefficients)]
    lo = np.minimum(ends[0].lo, ends[1].lo)
    hi = np.maximum(ends[0].hi, ends[1].hi)
    for c in critical:
        inside = (s.lo <= c) & (c <= s.hi)
        if np.any(inside):
            v = _poly(Interval.point(np.full(s.shape, c)), coefficients)
            lo = np.where(inside, np.minimum(lo, v.lo - 1e-15), lo)
            hi = np.where(inside, np.maximum(hi, v.hi + 1e-15), hi)
    return Interval(lo, hi)
