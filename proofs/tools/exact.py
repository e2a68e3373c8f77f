"""Exact arithmetic helpers: certified signs of closed-form numbers and polynomial positivity.

* :func:`certified_sign` decides the sign of a constant sympy expression built from rationals,
  ``log``, ``exp``, ``sqrt`` and integer powers by *interval* arithmetic (``mpmath.iv``): every
  operation returns an interval guaranteed to contain the exact value, so a sign read off an
  interval that excludes 0 is a proof, not a floating-point estimate.
* :func:`manifestly_nonnegative` proves p ≥ 0 for a polynomial in variables that are known to be
  ≥ 0 by exhibiting that every coefficient of its expansion is ≥ 0.
* :func:`is_psd_2x2` decides positive semidefiniteness of a symmetric 2×2 matrix of
  expressions in positive symbols by its principal minors.
"""

from __future__ import annotations

import sympy as sp
from mpmath import iv
from mpmath.libmp import to_float

__all__ = [
    "UncertifiableError",
    "certified_nonzero",
    "certified_sign",
    "enclosure",
    "is_psd_2x2",
    "manifestly_nonnegative",
]

_PRECISIONS = (60, 120, 300, 1000)


class UncertifiableError(ValueError):
    """The expression contains something the interval evaluator does not handle."""


def _interval(expr: sp.Expr):
    if expr.is_Integer:
        return iv.mpf(int(expr))
    if expr.is_Rational:
        return iv.mpf(int(expr.p)) / iv.mpf(int(expr.q))
    if expr is sp.E:
        return iv.e
    if expr is sp.pi:
        return iv.pi
    if expr.is_Add:
        total = iv.mpf(0)
        for arg in expr.args:
            total += _interval(arg)
        return total
    if expr.is_Mul:
        total = iv.mpf(1)
        for arg in expr.args:
            total *= _interval(arg)
        return total
    if expr.is_Pow:
        base, exponent = expr.args
        if exponent.is_Integer:
            value = _interval(base)
            n = int(exponent)
            out = iv.mpf(1)
            for _ in range(abs(n)):
                out *= value
            return out if n >= 0 else 1 / out
        if exponent == sp.Rational(1, 2):
            return iv.sqrt(_interval(base))
        return iv.exp(_interval(exponent) * iv.log(_interval(base)))
    if isinstance(expr, sp.log):
        return iv.log(_interval(expr.args[0]))
    if isinstance(expr, sp.exp):
        return iv.exp(_interval(expr.args[0]))
    raise UncertifiableError(f"cannot enclose {expr!r} in an interval")


def enclosure(expr) -> tuple[float, float]:
    """A rigorous interval [lo, hi] containing the constant ``expr``: the 60-bit interval
    enclosure, its endpoints rounded outwards to doubles (lo down, hi up)."""
    expr = sp.sympify(expr)
    old = iv.prec
    try:
        iv.prec = _PRECISIONS[0]
        lo, hi = _interval(expr)._mpi_
    finally:
        iv.prec = old
    return to_float(lo, rnd="f"), to_float(hi, rnd="c")


def certified_sign(expr) -> int:
    """+1 or −1 if the interval enclosure of the constant ``expr`` excludes 0, else 0.

    0 means "exactly zero" when sympy already reduced ``expr`` to 0, and "undecided" otherwise
    (the caller must treat undecided as a failure to certify).
    """
    expr = sp.sympify(expr)
    if expr.free_symbols:
        raise UncertifiableError(f"expression has free symbols {expr.free_symbols}")
    if expr == 0:
        return 0
    old = iv.prec
    try:
        for prec in _PRECISIONS:
            iv.prec = prec
            value = _interval(expr)
            if value.a > 0:
                return 1
            if value.b < 0:
                return -1
        return 0
    finally:
        iv.prec = old


def certified_nonzero(expr) -> bool:
    """``certified_sign(expr) != 0``: True is a proof that ``expr`` ≠ 0, False proves nothing."""
    return certified_sign(expr) != 0


def manifestly_nonnegative(expr, nonnegative_symbols) -> bool:
    """True if ``expr`` expands to a polynomial in ``nonnegative_symbols`` (whose coefficients may
    involve other positive parameters) with every coefficient manifestly ≥ 0."""
    poly = sp.Poly(sp.expand(expr), *nonnegative_symbols)
    for coeff in poly.coeffs():
        coeff = sp.factor(coeff)
        if coeff.is_nonnegative is not True:
            return False
    return True


def is_psd_2x2(matrix: sp.Matrix) -> bool | None:
    """PSD test of a symmetric 2×2 matrix by its principal minors (a ≥ 0, c ≥ 0, ac − b² ≥ 0).

    Returns True/False when sympy's assumptions decide every minor, None when one is undecided.
    """
    a, b, c = matrix[0, 0], matrix[0, 1], matrix[1, 1]
    minors = [sp.factor(a), sp.factor(c), sp.factor(a * c - b * b)]
    verdicts = [m.is_nonnegative for m in minors]
    if any(v is False for v in verdicts):
        return False
    if all(v is True for v in verdicts):
        return True
    return None
