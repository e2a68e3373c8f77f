"""Lemma: μ-strong concavity implies the (proximal) PL inequality with the same μ.

Maximisation of J over a closed convex Θ; g = ∇J(x); for λ > 0 the proximal-PL quantity of
Karimi, Nutini & Schmidt (2016) is

    D_λ(x) = 2λ·max_{y∈Θ} [⟨g, y − x⟩ − (λ/2)‖y − x‖²] = 2⟨g, G⟩ − ‖G‖²,   G = λ(P_Θ(x + g/λ) − x).

Claim: if J is μ-strongly concave on Θ and L ≥ μ, then ½D_L(x) ≥ μ(J* − J(x)); in the interior
(G = g) this is ½‖∇J‖² ≥ μ(J* − J). Steps, each an identity for symbolic vectors (n = 1..4):

1. with d = λ(y − x):  2λ[⟨g, y − x⟩ − (λ/2)‖y − x‖²] = 2⟨g, d⟩ − ‖d‖² = ‖g‖² − ‖g − d‖²;
2. strong concavity at y = θ*: J* − J(x) ≤ ⟨g, θ* − x⟩ − (μ/2)‖θ* − x‖² ≤ D_μ(x)/(2μ) by step 1;
3. D_λ is non-decreasing in λ: d ranges over λ(Θ − x), and for μ ≤ L the point
   y' = (1 − μ/L)x + (μ/L)y ∈ Θ (convexity) has L(y' − x) = μ(y − x), so μ(Θ − x) ⊂ L(Θ − x);
4. the constant: ½‖g‖² − c·μ·[⟨g, d⟩ − (μ/2)‖d‖²] ≥ 0 for all g, d iff its 2×2 Gram matrix
   [[½, −cμ/2], [−cμ/2, cμ²/2]] (per coordinate) is PSD, i.e. iff c ∈ [0, 1]: c = 1 is valid
   and tight (equality on J = −(μ/2)‖θ − θ*‖²).

The checker takes the claimed left-hand side Q(g, G) as input. Steps 2–3 give μ·gap ≤ ½D_L, so Q
is established when (a) in the interior Q(g, g) = ½‖g‖² (where step 4 fixes the constant) and
(b) on the boundary Q(g, G) = ½D_L(g, G) identically. When (b) fails, the checker evaluates the
claim exactly on a one-dimensional instance with an active constraint: Θ = [0, 1],
J(θ) = 3θ − θ²/2 (μ = 1, 1-smooth), x ∈ {0, ½}, L ∈ {1, 2}; there ½D_L = μ(J* − J) at L = 1, so
the claim is tight on the boundary as well.

The negative control feeds in Q = ½‖G_L‖², the gradient-mapping analogue of ½‖∇J‖², which agrees
with ½D_L in the interior; on the instance, at x = 0 and L = 1, ½‖G_L‖² = ½ < 5/2 = μ(J* − J),
certified.
"""

from __future__ import annotations

from functools import partial

import numpy as np
import sympy as sp

from proofs.tools.exact import certified_sign, is_psd_2x2
from proofs.tools.identity import check_zero, dot, symbol_vector
from proofs.tools.lemma import Lemma, Verdict, all_of
from proofs.tools.numeric import lambdify
from sail.theory.instance import random_instance
from sail.theory.pl import prox_pl_ratio
from sail.theory.problem import ExactProblem

DIMS = (1, 2, 3, 4)
mu, L, lam = sp.symbols("mu L lambda", positive=True)


def _vectors(n: int):
    return tuple(symbol_vector(name, n) for name in ("g", "x", "y"))


def prox_pl_value(g, G):
    """D = 2⟨g, G⟩ − ‖G‖² (the library's definition)."""
    return 2 * dot(g, G) - dot(G, G)


def half_prox_pl(g, G):
    """The claim's left-hand side, ½D_L."""
    return prox_pl_value(g, G) / 2


def half_mapping_norm(g, G):
    """The plausible wrong left-hand side, ½‖G_L‖² (equal to ½D_L only where G_L = g)."""
    return dot(G, G) / 2


def identities() -> Verdict:
    checks = []
    for n in DIMS:
        g, x, y = _vectors(n)
        d = lam * (y - x)
        quad = 2 * lam * (dot(g, y - x) - lam / 2 * dot(y - x, y - x))
        checks.append(check_zero(sp.expand(quad - prox_pl_value(g, d)), f"step 1a n={n}"))
        checks.append(check_zero(sp.expand(prox_pl_value(g, d) - (dot(g, g) - dot(g - d, g - d))), f"step 1b n={n}"))
        y_mid = (1 - mu / L) * x + (mu / L) * y
        for k, entry in enumerate(L * (y_mid - x) - mu * (y - x)):
            checks.append(check_zero(sp.expand(entry), f"step 3 n={n} [{k + 1}]"))
    return all_of(checks, f"steps 1 and 3 are identities for n in {DIMS}")


def constant_is_valid(c) -> Verdict:
    """½‖g‖² ≥ c·μ·max_d[⟨g,d⟩ − (μ/2)‖d‖²] for all g: PSD test of the residual's Gram matrix."""
    c = sp.sympify(c)
    gram = sp.Matrix([[sp.Rational(1, 2), -c * mu / 2], [-c * mu / 2, c * mu**2 / 2]])
    psd = is_psd_2x2(gram)
    if psd:
        # tightness: J = −(μ/2)x² has ½J'² = μ(J* − J) exactly
        z = sp.Symbol("z", real=True)
        J = -mu / 2 * z**2
        tight = check_zero(sp.expand(sp.diff(J, z) ** 2 / 2 - mu * (0 - J)), "tight on −(μ/2)‖θ−θ*‖²")
        return all_of([tight], f"constant c = {c}: Gram matrix PSD (det = {sp.factor(gram.det())}), tight")
    # counterexample: g = 1, d = 1/μ (the maximiser of ⟨g,d⟩ − (μ/2)d²) at μ = 1
    residual = (sp.Rational(1, 2) - c * mu * (1 / mu - mu / 2 / mu**2)).subs(mu, 1)
    if certified_sign(residual) < 0:
        det = sp.factor(gram.det())
        return Verdict(False, f"constant c = {c}: Gram det = {det} < 0; at g = 1, d = 1/μ: residual = {residual}")
    return Verdict(False, f"constant c = {c}: PSD undecided")


def interior(lhs) -> Verdict:
    """Where the constraint is inactive (G = g) the left-hand side must be ½‖g‖²."""
    checks = []
    for n in DIMS:
        g = symbol_vector("g", n)
        checks.append(check_zero(sp.expand(lhs(g, g) - dot(g, g) / 2), f"interior n={n}"))
    return all_of(checks, f"interior: Q(g, g) = ½‖g‖² for n in {DIMS}")


# Θ = [0, 1], J(θ) = 3θ − θ²/2: μ = 1, J' = 3 − θ > 0 on Θ, so θ* = 1 is on the boundary.
WITNESS_MU = sp.Integer(1)


def _witness_objective(theta):
    return 3 * theta - theta**2 / 2


def boundary_witness(lhs) -> Verdict:
    """Q(g, G_L) − μ(J* − J(x)) at exact points of the one-dimensional instance; every value must
    be ≥ 0 (certified sign), and a negative one is a counterexample to the claim itself."""
    z = sp.Symbol("z", real=True)
    j_star = _witness_objective(sp.Integer(1))
    values = []
    for x in (sp.Integer(0), sp.Rational(1, 2)):
        g = sp.diff(_witness_objective(z), z).subs(z, x)
        for lipschitz in (sp.Integer(1), sp.Integer(2)):
            G = lipschitz * (sp.Min(1, sp.Max(0, x + g / lipschitz)) - x)
            residual = sp.simplify(lhs(sp.Matrix([g]), sp.Matrix([G])) - WITNESS_MU * (j_star - _witness_objective(x)))
            sign = certified_sign(residual)
            if sign < 0:
                return Verdict(
                    False,
                    f"Θ = [0, 1], J = 3θ − θ²/2, x = {x}, L = {lipschitz}: G_L = {G}, "
                    f"Q − μ(J* − J) = {residual} < 0 (certified)",
                )
            if sign == 0 and residual != 0:
                return Verdict(False, f"witness x = {x}, L = {lipschitz}: sign undecided")
            values.append(residual)
    tight = any(v == 0 for v in values)
    listed = ", ".join(map(str, values))
    return Verdict(True, f"boundary witness: Q − μ·gap ∈ {{{listed}}} ≥ 0" + (", tight" if tight else ""))


def boundary(lhs) -> Verdict:
    """With the constraint active, steps 2–3 bound μ·gap by ½D_L: Q must equal ½D_L identically."""
    reductions = []
    for n in DIMS:
        g = symbol_vector("g", n)
        G = symbol_vector("G", n)
        reductions.append(check_zero(sp.expand(lhs(g, G) - half_prox_pl(g, G)), f"boundary Q = ½D_L n={n}"))
    reduced = all_of(reductions, f"boundary: Q(g, G) = ½D_L(g, G) for n in {DIMS}")
    witness = boundary_witness(lhs)
    if not witness.holds:
        return witness
    if not reduced.holds:
        return Verdict(False, f"{reduced.detail}; the witness does not refute it either: undecided")
    return all_of([reduced, witness], f"{reduced.detail}; {witness.detail}")


def check(lhs=half_prox_pl, c=1) -> Verdict:
    return all_of([identities(), interior(lhs), constant_is_valid(c), boundary(lhs)])


def cross_check() -> float:
    """The library's proximal-PL numerator (``prox_pl_ratio`` with a unit gap) vs the lambdified
    D = ‖g‖² − ‖g − G‖² built from the library's gradient and gradient mapping, at ball points
    including sphere points where the projection is active."""
    inst = random_instance(5, 3, 4, 3, beta=1.0, gamma=2.0, radius=0.5)
    problem = ExactProblem(inst)
    n = problem.dim
    g, _, _ = _vectors(n)
    G = symbol_vector("G", n)
    d_fn = lambdify([list(g), list(G)], dot(g, g) - dot(g - G, g - G))
    err = 0.0
    for theta in problem.sample_ball(12, np.random.default_rng(1), surface_fraction=0.5):
        value, grad = problem.value_and_grad(theta)
        for lipschitz in (0.5, 10.0):
            ratio, _, gap = prox_pl_ratio(problem, theta, value + 1.0, lipschitz)
            mapping = problem.gradient_mapping(theta, grad, lipschitz)
            err = max(err, abs(2.0 * ratio * gap - float(d_fn(grad, mapping))))
    return err


LEMMA = Lemma(
    name="strong_concavity_pl",
    statement="μ-strongly concave on convex Θ, L ≥ μ ⇒ ½D_L ≥ μ(J* − J) (interior: ½‖∇J‖² ≥ μ gap), constant tight",
    prove=partial(check, half_prox_pl),
    negative_control=partial(check, half_mapping_norm),
    cross_check=cross_check,
    control="½‖G_L‖² ≥ μ(J* − J) (gradient-mapping norm in place of ½D_L on the boundary)",
)
