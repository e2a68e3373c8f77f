"""Checking identities between closed-form expressions that contain exponentials and logarithms.

The pattern: substitute positive symbols for the exponentials (t = e^z, so e^{−z} = 1/t and
σ(z) = t/(1 + t)), after which the difference of the two sides is a rational function in t
whose coefficients may contain logarithms, kept as independent atoms. ``sympy.cancel`` brings a
rational function to a canonical p/q form, so a zero result is a proof of the identity. When it
is not zero, the original difference is evaluated exactly at witness points and its sign is
certified by interval arithmetic, which turns the failure into a counterexample.
"""

from __future__ import annotations

import sympy as sp

from proofs.tools.exact import certified_sign
from proofs.tools.lemma import Verdict

__all__ = ["canonical", "check_zero", "dot", "sigmoid", "symbol_vector"]


def symbol_vector(name: str, n: int) -> sp.Matrix:
    """The column vector (name1, …, name_n) of real symbols."""
    return sp.Matrix(sp.symbols(f"{name}1:{n + 1}", real=True))


def dot(a, b):
    """⟨a, b⟩ of two sympy column vectors."""
    return (a.T * b)[0, 0]


def sigmoid(z):
    """σ(z) = 1/(1 + e^{−z}) as a sympy expression."""
    return 1 / (1 + sp.exp(-z))


def canonical(expr, substitution: dict | None = None) -> sp.Expr:
    """``sympy.cancel`` of ``expr`` after ``substitution``: a p/q form in which exponentials and
    logarithms that remain are independent atoms, so 0 means identically 0."""
    expr = sp.sympify(expr)
    if substitution:
        expr = expr.subs(substitution)
    return sp.cancel(expr)


def check_zero(expr, label: str, substitution: dict | None = None, witnesses: tuple[dict, ...] = ()) -> Verdict:
    """Holds iff ``expr`` cancels to 0 after ``substitution``; otherwise look for a witness point
    (a dict of exact values for every free symbol) at which ``expr`` is certifiably non-zero."""
    if canonical(expr, substitution) == 0:
        return Verdict(True, f"{label}: cancels to 0")
    for n, point in enumerate(witnesses):
        value = sp.sympify(expr).subs(point)
        if not value.free_symbols and certified_sign(value) != 0:
            return Verdict(False, f"{label}: counterexample (witness {n}): value ≈ {float(value):.6g} ≠ 0")
    return Verdict(False, f"{label}: does not cancel to 0 (no certified witness)")
