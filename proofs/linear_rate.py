"""Lemma: projected gradient ascent with step 1/L contracts the gap by (1 − μ/L).

Let J be L-smooth (‖∇²J‖ ≤ L on Θ) and satisfy the proximal-PL inequality ½D_L ≥ μ(J* − J)
(lemma ``strong_concavity_pl``). The iteration x⁺ = P_Θ(x + ∇J(x)/L) = x + G/L gives

1. (ascent lemma) J(x⁺) ≥ J(x) + ⟨g, G/L⟩ − (L/2)‖G/L‖² = J(x) + D_L(x)/(2L)   [identity, n = 1..4];
2. gap⁺ ≤ gap − D_L/(2L) ≤ gap − (μ/L)·gap = (1 − μ/L)·gap;
3. unrolled: a_k = (1 − μ/L)^k a_0 solves a_{k+1} = (1 − μ/L)a_k (induction, symbolic k), so
   J* − J(θ_k) ≤ (1 − μ/L)^k (J* − J(θ_0)); log of the rate is log(1 − μ/L) per step.

The factor is checked against the exactly solvable case J = −(μ/2)x² with 0 < μ ≤ L, where one
step gives gap⁺/gap = (1 − μ/L)²: a claimed factor c is consistent iff c ≥ (1 − μ/L)² for all
0 < μ ≤ L (substitute L = μ + ν, ν ≥ 0, and read off the sign). (1 − μ/L) passes; the negative
control 1 − 2μ/L fails by exactly μ²/L².
"""

from __future__ import annotations

from functools import partial

import numpy as np
import sympy as sp

from proofs.tools.exact import certified_sign, manifestly_nonnegative
from proofs.tools.identity import check_zero, dot, symbol_vector
from proofs.tools.lemma import Lemma, Verdict, all_of
from proofs.tools.numeric import lambdify
from sail.theory.ascent import projected_ascent
from sail.theory.constants import explicit_constants
from sail.theory.instance import random_instance
from sail.theory.pl import fit_rate_slope
from sail.theory.problem import ExactProblem

DIMS = (1, 2, 3, 4)
mu, L, gap = sp.symbols("mu L gap", positive=True)
nu = sp.Symbol("nu", nonnegative=True)
k = sp.Symbol("k", integer=True, nonnegative=True)
RATE = 1 - mu / L


def ascent_step_identity() -> Verdict:
    checks = []
    for n in DIMS:
        g = symbol_vector("g", n)
        G = symbol_vector("G", n)
        step = G / L
        lower = dot(g, step) - L / 2 * dot(step, step)
        checks.append(check_zero(sp.expand(lower - (2 * dot(g, G) - dot(G, G)) / (2 * L)), f"ascent lemma n={n}"))
    return all_of(checks, f"⟨g,G/L⟩ − (L/2)‖G/L‖² = D_L/(2L) for n in {DIMS}")


def recursion() -> Verdict:
    D = sp.Symbol("D", positive=True)
    contraction = check_zero(sp.expand((gap - mu * gap / L) - RATE * gap), "gap − (μ/L)gap = (1 − μ/L)gap")
    closed = RATE**k * D  # induction: a_0 = D and a_{k+1} = (1 − μ/L)·a_k
    base = check_zero(closed.subs(k, 0) - D, "a_0 = D")
    step = check_zero(sp.powsimp(closed.subs(k, k + 1) - RATE * closed), "a_{k+1} = (1 − μ/L)a_k")
    unrolled = all_of([base, step])
    return all_of([contraction, unrolled], "gap_{k+1} ≤ (1−μ/L)gap_k ⇒ gap_k ≤ (1−μ/L)^k gap_0")


def factor_consistent(factor) -> Verdict:
    """c ≥ (1 − μ/L)² for all 0 < μ ≤ L, and c < 1 (a contraction)."""
    x = sp.Symbol("x", real=True)
    J = -mu / 2 * x**2
    x_next = x + sp.diff(J, x) / L
    exact_ratio = sp.cancel((0 - J.subs(x, x_next)) / (0 - J))
    ident = check_zero(exact_ratio - RATE**2, "one step on −(μ/2)x²: gap⁺/gap = (1 − μ/L)²")
    residual = sp.together((factor - exact_ratio).subs(L, mu + nu))
    num, den = sp.fraction(residual)
    if ident.holds and manifestly_nonnegative(num, [mu, nu]) and manifestly_nonnegative(den, [mu, nu]):
        below_one = sp.together((1 - factor).subs(L, mu + nu))
        n1, d1 = sp.fraction(below_one)
        if manifestly_nonnegative(n1, [mu, nu]) and manifestly_nonnegative(d1, [mu, nu]):
            return Verdict(True, f"factor {factor} ≥ exact quadratic ratio (1−μ/L)² and < 1")
    witness = (factor - exact_ratio).subs({mu: 1, L: 2})
    if certified_sign(witness) < 0:
        return Verdict(False, f"factor {factor} < exact ratio on −(μ/2)x² at μ=1, L=2 (by {witness})")
    return Verdict(False, f"factor {factor} not established")


def check(factor=RATE) -> Verdict:
    return all_of([ascent_step_identity(), recursion(), factor_consistent(factor)])


def cross_check() -> float:
    """(a) the ascent-lemma bound J(x⁺) − J(x) ≥ D_L/(2L) (lambdified) along the library's
    ``projected_ascent`` with L = the explicit smoothness bound — the largest violation;
    (b) the library's ``fit_rate_slope`` on an exact geometric gap sequence vs log(1 − μ/L)."""
    inst = random_instance(9, 3, 4, 3, beta=1.0, gamma=3.0, radius=0.6)
    problem = ExactProblem(inst)
    lipschitz = explicit_constants(problem)["L"]
    n = problem.dim
    g = sp.symbols(f"g1:{n + 1}", real=True)
    G = sp.symbols(f"G1:{n + 1}", real=True)
    bound = lambdify([g, G, L], (2 * dot(sp.Matrix(g), sp.Matrix(G)) - dot(sp.Matrix(G), sp.Matrix(G))) / (2 * L))
    start = problem.project(inst.theta_ref + 10.0 * np.ones(n))
    traj = projected_ascent(problem, start, 1.0 / lipschitz, 25)
    err = 0.0
    for theta, value, next_value in zip(traj.thetas[:-1], traj.values[:-1], traj.values[1:]):
        _, grad = problem.value_and_grad(theta)
        mapping = problem.gradient_mapping(theta, grad, lipschitz)
        err = max(err, float(bound(grad, mapping, lipschitz)) - (next_value - value), 0.0)
    rate = lambdify([mu, L], sp.log(RATE))
    for m, lip in ((0.1, 1.0), (0.02, 3.0)):
        gaps = 2.0 * (1 - m / lip) ** np.arange(40)
        slope, _ = fit_rate_slope(-gaps, 0.0)
        err = max(err, abs(slope - rate(m, lip)))
    return err


LEMMA = Lemma(
    name="linear_rate",
    statement="projected ascent, η = 1/L, prox-PL μ: J* − J(θ_k) ≤ (1 − μ/L)^k (J* − J(θ_0))",
    prove=check,
    negative_control=partial(check, 1 - 2 * mu / L),
    cross_check=cross_check,
    control="contraction factor 1 − 2μ/L (factor 2)",
)
