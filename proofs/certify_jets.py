"""Lemma: the derivative rules behind the interval Taylor jets of the curvature certificates.

``sail.theory.certify.jets`` and ``sail.theory.certify.enclosure`` enclose ∇ʲJ and ∇ʲKL (j ≤ 4)
with formulas written as sums over *placements*: a tensor T with p indices and a tensor S with
n − p indices are combined as Σ_{P ⊆ {1..n}, |P| = p} T_{i_P} S_{i_{Pᶜ}} ("Σ_C(n,p)"). Checked here:

1. **Leibniz.** Dⁿ(fg)_{i₁…iₙ} = Σ_{P ⊆ {1..n}} D^{|P|}f_{i_P} · D^{n−|P|}g_{i_{Pᶜ}} (n ≤ 4).
2. **Faà di Bruno** for φ∘g, g: ℝᵏ → ℝ, in the form of ``Jet.compose`` (n ≤ 4):
   D(φ∘g) = φ'g₁, D² = φ''g₁g₁ + φ'g₂, D³ = φ'''g₁g₁g₁ + φ''Σ₃ g₁g₂ + φ'g₃,
   D⁴ = φ''''g₁⁴ + φ'''Σ₆ g₂g₁g₁ + φ''(½Σ₆ g₂g₂ + Σ₄ g₁g₃) + φ'g₄: the 6 placements of g₂⊗g₂
   count each of the 3 pairings twice, hence the ½.
3. **Pair term.** ℓ = p log σ(βΔ) + (1 − p) log σ(−βΔ) = pβΔ − softplus(βΔ),
   softplus(z) − softplus(−z) = z and softplus' = σ.
4. **Sigmoid.** σ' = s − s², σ'' = s − 3s² + 2s³, σ''' = s − 7s² + 12s³ − 6s⁴ (s = σ), and the
   derivatives in s of these polynomials vanish exactly at the points listed in
   ``jets.SIGMOID_POLYNOMIALS``: ½; (3 ± √3)/6; ½ and ½ ± √6/6.
5. **Cumulants.** For A(v) = log Σ_z exp(a_z + P_z·v), π = softmax(a + Pv), m = Σπ_zP_z and
   u_z = P_z − m: DA = m, D²A = ½Σ_{z,w}π_zπ_w(P_z − P_w)^{⊗2} = κ₂, D³A = Σπu^{⊗3} = κ₃,
   D⁴A = Σπu^{⊗4} − ½Σ₆ κ₂κ₂, D⁵A = Σπu^{⊗5} − Σ₁₀ κ₃κ₂ (``enclosure.cumulants``).

Method. 1 and 2 use undefined sympy functions f, g, φ, so every derivative is an independent atom
and the difference of both sides cancels to 0 as a polynomial in those atoms. An entry of order n
involves at most n distinct coordinates, and both sides commute with fixing the other coordinates
and renaming these, so an entry's identity is that of the entry with the same pattern of repeated
indices among k = n coordinates (:func:`index_patterns`: 1, 2, 5, 15 patterns for n = 1..4); each
pattern is checked, hence every entry for every k. 3 and 4 substitute z = log t (t > 0), after
which both sides are rational in t (logarithms of positive factors expanded). The critical points
are proved by factoring: each derivative polynomial equals its leading coefficient times Π(s − c)
over the listed points. 5 writes t_z = exp(a_z + P_z·v) > 0, so that ∂/∂v_l acts as the derivation
Σ_z P_zl t_z ∂/∂t_z (:class:`CumulantAlgebra`); both sides, multiplied by a power of T = Σ_z t_z,
are polynomials in t and P and are compared exactly, for Z = 2, 3 support points and k = 1, 2
dimensions (what is shown; other Z and k are not swept).

Negative control: the order-4 Faà di Bruno term with the g₂g₂ placements not halved (6 ordered
placements taken as 6 pairings); the checker finds a certified counterexample at φ = exp and a
polynomial g. Cross-check: ``jets.Jet`` evaluated on degenerate intervals for a composite
f(v) = softplus(e^{a₁(v)}·a₂(v))·e^{a₂(v)} (a₁, a₂ affine), and ``enclosure.cumulants`` at a point,
against the sympy derivatives lambdified; ℓ against ``sail.objectives.pair_term``; the library's
sigmoid polynomials and critical points against the exact ones.
"""

from __future__ import annotations

import itertools
from functools import partial

import numpy as np
import sympy as sp
import torch
from sympy import QQ
from sympy.polys.rings import ring

from proofs.tools.exact import certified_sign
from proofs.tools.identity import check_zero, sigmoid
from proofs.tools.lemma import Lemma, Verdict, all_of
from proofs.tools.numeric import lambdify, max_abs_diff, scaled_diff
from sail.objectives import pair_term
from sail.theory.certify import jets as jet_module
from sail.theory.certify.enclosure import cumulants
from sail.theory.certify.intervals import Interval

ORDER = 4
CUMULANT_ORDER = 5
CUMULANT_SWEEP = ((2, 1), (3, 1), (2, 2), (3, 2))  # (support points Z, dimension k)
PAIR_WEIGHT = sp.Rational(1, 2)

z = sp.Symbol("z", real=True)
t = sp.Symbol("t", positive=True)
s = sp.Symbol("s", real=True)


# -- placement sums ------------------------------------------------------------------------


def placements(n: int, first: int):
    """(P, Pᶜ) for every P ⊆ {0..n−1} with |P| = first, as sorted tuples of positions."""
    for chosen in itertools.combinations(range(n), first):
        yield chosen, tuple(p for p in range(n) if p not in chosen)


def placement_sum(n: int, first: int, term) -> sp.Expr:
    """Σ_{|P| = first} term(P, Pᶜ)."""
    return sp.Add(*(term(chosen, rest) for chosen, rest in placements(n, first)))


def index_patterns(n: int):
    """One index tuple of length n per pattern of coincidences (which positions carry the same
    index): the restricted growth strings, i₁ = 0 and i_r ≤ 1 + max(i₁, …, i_{r−1}); 1, 2, 5, 15
    of them for n = 1..4. Both sides of rules 1 and 2 commute with renaming the coordinates, so
    an entry's difference equals that of its pattern's representative."""
    if n == 0:
        yield ()
        return
    for head in index_patterns(n - 1):
        for last in range(max(head, default=-1) + 2):
            yield (*head, last)


def _deriv(expr, xs, idx, positions):
    """∂^{|positions|} expr / ∂x_{idx[p]} for p in positions (expr itself for none)."""
    return sp.diff(expr, *(xs[idx[p]] for p in positions)) if positions else expr


# -- 1. Leibniz ----------------------------------------------------------------------------


def leibniz_claim(f, g, xs, idx) -> sp.Expr:
    n = len(idx)
    return sp.Add(*(
        _deriv(f, xs, idx, chosen) * _deriv(g, xs, idx, rest)
        for first in range(n + 1)
        for chosen, rest in placements(n, first)
    ))


def check_leibniz() -> Verdict:
    for n in range(1, ORDER + 1):
        xs = sp.symbols(f"x1:{n + 1}", real=True)
        f, g = sp.Function("f")(*xs), sp.Function("g")(*xs)
        for idx in index_patterns(n):
            truth = _deriv(f * g, xs, idx, range(n))
            v = check_zero(sp.expand(truth - leibniz_claim(f, g, xs, idx)), f"Leibniz D^{n}(fg){idx}")
            if not v.holds:
                return v
    return Verdict(True, f"Leibniz subset form: every index pattern of D^n(fg), n ≤ {ORDER}")


# -- 2. Faà di Bruno -----------------------------------------------------------------------


def faa_di_bruno_claim(phi, g, xs, idx, pair_weight=PAIR_WEIGHT) -> sp.Expr:
    """The entry ``idx`` of Dⁿ(φ∘g) as ``Jet.compose`` writes it; ``phi[j]`` = φ⁽ʲ⁾(g)."""
    n = len(idx)

    def d(*positions):
        return _deriv(g, xs, idx, positions)

    def product_of_gradients(positions):
        return sp.Mul(*(d(p) for p in positions))

    if n == 1:
        return phi[1] * d(0)
    if n == 2:
        return phi[2] * d(0) * d(1) + phi[1] * d(0, 1)
    if n == 3:
        middle = placement_sum(3, 1, lambda P, Q: d(*P) * d(*Q))
        return phi[3] * product_of_gradients(range(3)) + phi[2] * middle + phi[1] * d(0, 1, 2)
    if n == 4:
        g2g11 = placement_sum(4, 2, lambda P, Q: d(*P) * product_of_gradients(Q))
        g2g2 = placement_sum(4, 2, lambda P, Q: d(*P) * d(*Q))
        g1g3 = placement_sum(4, 1, lambda P, Q: d(*P) * d(*Q))
        return phi[4] * product_of_gradients(range(4)) + phi[3] * g2g11 + phi[2] * (pair_weight * g2g2 + g1g3) + phi[1] * d(0, 1, 2, 3)
    raise ValueError("orders 1..4 only")


def _phi_derivatives(phi, inner, n: int):
    """(φ(inner), φ'(inner), …, φ⁽ⁿ⁾(inner)) for a sympy function or Lambda φ."""
    y = sp.Dummy("y")
    return [sp.diff(phi(y), y, j).subs(y, inner) for j in range(n + 1)]


def _faa_di_bruno_witness(n: int, pair_weight) -> Verdict | None:
    """A certified non-zero entry of the difference at φ = exp, g = Σ_i x_i + ½Σ_{i,j} x_i x_j, x = 0."""
    xs = sp.symbols(f"x1:{n + 1}", real=True)
    g = sum(xs) + sp.Rational(1, 2) * sum(a * b for a in xs for b in xs)
    phi = _phi_derivatives(sp.exp, g, n)
    at_zero = {x: 0 for x in xs}
    for idx in index_patterns(n):
        value = (_deriv(sp.exp(g), xs, idx, range(n)) - faa_di_bruno_claim(phi, g, xs, idx, pair_weight)).subs(at_zero)
        if certified_sign(sp.nsimplify(value) if value.is_Float else value) != 0:
            return Verdict(False, f"Faà di Bruno D^{n}{idx}: counterexample at φ = exp, g = Σx + ½(Σx)², x = 0: value = {value} ≠ 0")
    return None


def check_faa_di_bruno(pair_weight=PAIR_WEIGHT) -> Verdict:
    phi_function = sp.Function("phi")
    for n in range(1, ORDER + 1):
        xs = sp.symbols(f"x1:{n + 1}", real=True)
        g = sp.Function("g")(*xs)
        phi = _phi_derivatives(phi_function, g, n)
        for idx in index_patterns(n):
            truth = _deriv(phi_function(g), xs, idx, range(n))
            v = check_zero(sp.expand(truth - faa_di_bruno_claim(phi, g, xs, idx, pair_weight)), f"Faà di Bruno D^{n}(φ∘g){idx}")
            if not v.holds:
                witness = _faa_di_bruno_witness(n, pair_weight)
                return v if witness is None else witness
    return Verdict(True, f"Faà di Bruno placement form: every index pattern of D^n(φ∘g), n ≤ {ORDER}")


# -- 3. the pair term and softplus ----------------------------------------------------------


def softplus(x):
    return sp.log(1 + sp.exp(x))


def _in_t(expr):
    """expr at z = log t with logarithms of positive factors expanded (sound: t > 0)."""
    in_t = expr.subs(z, sp.log(t)).replace(sp.log, lambda a: sp.log(sp.factor(a)))
    return sp.expand_log(in_t, force=True)


def check_pair_term() -> Verdict:
    p = sp.Symbol("p", real=True)
    ell = p * sp.log(sigmoid(z)) + (1 - p) * sp.log(sigmoid(-z))
    return all_of([
        check_zero(_in_t(ell - (p * z - softplus(z))), "p log σ(z) + (1 − p) log σ(−z) = pz − softplus(z)"),
        check_zero(_in_t(softplus(z) - softplus(-z) - z), "softplus(z) − softplus(−z) = z"),
        check_zero(sp.diff(softplus(z), z) - sigmoid(z), "softplus' = σ", {z: sp.log(t)}),
    ], "ℓ = pβΔ − softplus(βΔ) (z = βΔ), softplus(z) − softplus(−z) = z, softplus' = σ")


# -- 4. sigmoid derivatives as polynomials in s = σ, and their critical points ---------------

SIGMOID_POLYNOMIALS = (
    (s - s**2, (sp.Rational(1, 2),)),
    (s - 3 * s**2 + 2 * s**3, ((3 - sp.sqrt(3)) / 6, (3 + sp.sqrt(3)) / 6)),
    (s - 7 * s**2 + 12 * s**3 - 6 * s**4, (sp.Rational(1, 2), sp.Rational(1, 2) - sp.sqrt(6) / 6, sp.Rational(1, 2) + sp.sqrt(6) / 6)),
)
"""σ⁽ʲ⁾ = polynomial(σ), j = 1, 2, 3, and the roots of the polynomial's derivative in s."""


def check_sigmoid() -> Verdict:
    verdicts = []
    for j, (poly, critical) in enumerate(SIGMOID_POLYNOMIALS, start=1):
        truth = sp.diff(sigmoid(z), z, j)
        verdicts.append(check_zero(truth - poly.subs(s, sigmoid(z)), f"σ^({j}) = {poly}", {z: sp.log(t)}))
        slope = sp.Poly(sp.diff(poly, s), s)
        factored = slope.LC() * sp.Mul(*(s - c for c in critical))
        verdicts.append(check_zero(sp.expand(slope.as_expr() - factored), f"d/ds({poly}) = {slope.LC()}·Π(s − c), c ∈ {critical}"))
        inside = all(0 < c < 1 for c in critical)
        verdicts.append(Verdict(inside, f"critical points of σ^({j}) in (0, 1)"))
    return all_of(verdicts, "σ', σ'', σ''' as polynomials in σ; their critical points are exactly the listed ones")


# -- 5. cumulants of an exponential family ---------------------------------------------------


class CumulantAlgebra:
    """Polynomials over Q in t_z = exp(a_z + P_z·v) > 0 and P_zl (Z points, k dimensions).

    Since ∂t_z/∂v_l = P_zl t_z, the derivative ∂/∂v_l acts on them as the derivation
    D_l = Σ_z P_zl t_z ∂/∂t_z. With T = Σ_z t_z, A = log T and DⁱA = Nᵢ/Tⁱ where N₁ = D_lT and
    N_{i+1} = T·D_l Nᵢ − i·Nᵢ·D_lT (the quotient rule). The claimed cumulants are rational in t
    with π_z = t_z/T and are written as numerators over a power of T; both sides are compared as
    polynomials, a canonical form."""

    def __init__(self, Z: int, k: int):
        names = [f"t{z_ + 1}" for z_ in range(Z)] + [f"P{z_ + 1}_{l + 1}" for z_ in range(Z) for l in range(k)]
        self.ring, *gens = ring(",".join(names), QQ)
        self.Z, self.k = Z, k
        self.t = gens[:Z]
        self.P = [gens[Z + z_ * k : Z + (z_ + 1) * k] for z_ in range(Z)]
        self.T = sum(self.t)

    def D(self, f, l: int):
        return sum(self.P[z_][l] * self.t[z_] * f.diff(self.t[z_]) for z_ in range(self.Z))

    def derivatives(self, order: int) -> list[dict]:
        """[{idx: Nᵢ(idx)} for i = 1..order]: DⁱA at idx is Nᵢ(idx)/Tⁱ."""
        out = [{(l,): self.D(self.T, l) for l in range(self.k)}]
        for i in range(1, order):
            out.append({
                (*idx, l): self.T * self.D(N, l) - i * N * self.D(self.T, l)
                for idx, N in out[-1].items()
                for l in range(self.k)
            })
        return out

    def witness(self) -> dict:
        """An exact point with t > 0 (t_z = z + 1, P_zl = (z + 2l + 1)²/7 − 1)."""
        point = {sp.Symbol(f"t{z_ + 1}"): z_ + 1 for z_ in range(self.Z)}
        point.update({
            sp.Symbol(f"P{z_ + 1}_{l + 1}"): sp.Rational((z_ + 2 * l + 1) ** 2, 7) - 1 for z_ in range(self.Z) for l in range(self.k)
        })
        return point


CUMULANT_DENOMINATORS = (1, 2, 4, 5, 6)
"""The claimed κⱼ (j = 1..5) are numerators over T^e with these e: m = M/T, κ₂ ∝ 1/T²,
Σπu^{⊗j} = Σ t_z U_z^{⊗j}/T^{j+1} with U_z = T·P_z − M, and κ₃κ₂ ∝ 1/T⁶."""


def claimed_cumulant_numerators(alg: CumulantAlgebra, order: int, pair_weight=PAIR_WEIGHT) -> list[dict]:
    """[{idx: Cⱼ(idx)} for j = 1..order] with κⱼ = Cⱼ/T^{e_j} as ``enclosure.cumulants`` writes
    κⱼ: m, ½ΣΣπ_zπ_w(P_z − P_w)^{⊗2}, Σπu^{⊗3}, Σπu^{⊗4} − ½Σ₆κ₂κ₂, Σπu^{⊗5} − Σ₁₀κ₃κ₂."""
    Z, k, t, P, T = alg.Z, alg.k, alg.t, alg.P, alg.T
    weight = QQ(int(sp.numer(pair_weight)), int(sp.denom(pair_weight)))
    M = [sum(t[z_] * P[z_][l] for z_ in range(Z)) for l in range(k)]
    U = [[T * P[z_][l] - M[l] for l in range(k)] for z_ in range(Z)]

    def moment(idx):
        total = alg.ring.zero
        for z_ in range(Z):
            term = t[z_]
            for i in idx:
                term *= U[z_][i]
            total += term
        return total

    cov = {
        idx: QQ(1, 2) * sum(t[a] * t[b] * (P[a][idx[0]] - P[b][idx[0]]) * (P[a][idx[1]] - P[b][idx[1]]) for a in range(Z) for b in range(Z))
        for idx in itertools.product(range(k), repeat=2)
    }
    out = [{(l,): M[l] for l in range(k)}, cov]
    for j in range(3, order + 1):
        claim = {}
        for idx in itertools.product(range(k), repeat=j):
            c = moment(idx)
            if j == 4:  # Σπu⁴ over T⁵, κ₂κ₂ over T⁴
                pairs = sum(cov[tuple(idx[p] for p in A_)] * cov[tuple(idx[p] for p in B_)] for A_, B_ in placements(4, 2))
                c -= weight * T * pairs
            if j == 5:  # Σπu⁵ and κ₃κ₂ over T⁶
                c -= sum(out[2][tuple(idx[p] for p in A_)] * cov[tuple(idx[p] for p in B_)] for A_, B_ in placements(5, 3))
            claim[idx] = c
        out.append(claim)
    return out


def check_cumulants(pair_weight=PAIR_WEIGHT) -> Verdict:
    for Z, k in CUMULANT_SWEEP:
        alg = CumulantAlgebra(Z, k)
        truth = alg.derivatives(CUMULANT_ORDER)
        claims = claimed_cumulant_numerators(alg, CUMULANT_ORDER, pair_weight)
        for j, (N, C, e) in enumerate(zip(truth, claims, CUMULANT_DENOMINATORS), start=1):
            for idx, numerator in N.items():
                difference = (numerator * alg.T ** (e - j) - C[idx]).as_expr()
                verdict = check_zero(difference, f"T^{e}·(D^{j}A − κ_{j}){idx} (Z={Z}, k={k})", witnesses=(alg.witness(),))
                if not verdict.holds:
                    return verdict
    return Verdict(True, f"DA = m, D^jA = κ_j (j ≤ {CUMULANT_ORDER}) for (Z, k) in {CUMULANT_SWEEP}")


def check(pair_weight=PAIR_WEIGHT) -> Verdict:
    checks = (
        check_leibniz,
        partial(check_faa_di_bruno, pair_weight),
        check_pair_term,
        check_sigmoid,
        partial(check_cumulants, pair_weight),
    )
    return all_of((c() for c in checks), "Leibniz and Faà di Bruno (placement form, n ≤ 4); ℓ = pβΔ − softplus(βΔ); σ⁽ʲ⁾ polynomials and critical points; cumulants κ₁..κ₅")


def negative_control() -> Verdict:
    """The same Faà di Bruno checker with the g₂g₂ placements counted without the ½."""
    return check_faa_di_bruno(pair_weight=sp.Integer(1))


# -- cross-check ---------------------------------------------------------------------------

_C = (0.3, -0.2)
_W = ((0.7, -0.4), (0.5, 0.9))


def _composite_sympy(v):
    """f(v) = softplus(e^{a₁}·a₂)·e^{a₂}, a_i = c_i + w_iᵀv (float constants taken exactly)."""
    C = [sp.Rational(c) for c in _C]
    W = [[sp.Rational(w) for w in row] for row in _W]
    a1 = C[0] + W[0][0] * v[0] + W[0][1] * v[1]
    a2 = C[1] + W[1][0] * v[0] + W[1][1] * v[1]
    return softplus(sp.exp(a1) * a2) * sp.exp(a2)


def _composite_jet(points: np.ndarray) -> jet_module.Jet:
    """The same f as :func:`_composite_sympy` as a jet at the points [N, 2]."""
    C, W = np.array(_C), np.array(_W)
    value = points @ W.T + C  # [N, 2]
    affine = [
        jet_module.Jet.affine(Interval.point(value[:, i]), Interval.point(np.broadcast_to(W[i], points.shape)), ORDER)
        for i in range(2)
    ]
    e1 = affine[0].compose(jet_module.exp_derivatives(affine[0].d[0], ORDER))
    e2 = affine[1].compose(jet_module.exp_derivatives(affine[1].d[0], ORDER))
    inner = e1 * affine[1]
    return inner.compose(jet_module.softplus_derivatives(inner.d[0], ORDER)) * e2


def _sympy_tensors(f, v, orders) -> dict:
    """{idx: ∂^{|idx|}f/∂v_idx} for the non-decreasing index tuples of the given lengths, each by
    one more derivative of its prefix, and a numpy function of ``args`` returning them in order."""
    out = {(): f}
    for n in range(1, max(orders) + 1):
        for idx in itertools.combinations_with_replacement(range(len(v)), n):
            out[idx] = sp.diff(out[idx[:-1]], v[idx[-1]])
    return {idx: e for idx, e in out.items() if len(idx) in orders}


def _tensor_error(exact: dict, values, library: list, batch: int, scaled: bool = True) -> float:
    """Max error over every entry of the library's tensors ``library[n]`` [batch, k×n] against
    the exact value of its sorted index (so the library's tensors must be symmetric too)."""
    value_of = {idx: np.broadcast_to(np.asarray(value, dtype=np.float64), (batch,)) for idx, value in zip(exact, values)}
    err = 0.0
    for idx in value_of:
        n = len(idx)
        k = library[n].shape[-1] if n else 0
        for entry in itertools.product(range(k), repeat=n):
            reference = value_of[tuple(sorted(entry))]
            got = library[n].mid()[(slice(None), *entry)]
            err = max(err, scaled_diff(reference, got) if scaled else max_abs_diff(reference, got))
    return err


def _jet_error(rng) -> float:
    """Point jets of the composite vs its sympy derivatives, scaled per entry by max(1, |exact|)."""
    v = sp.symbols("v1:3", real=True)
    tensors = _sympy_tensors(_composite_sympy(v), v, range(ORDER + 1))
    exact = sp.lambdify([v], list(tensors.values()), modules="numpy", cse=True)
    points = rng.uniform(-1.5, 1.5, size=(16, 2))
    jet = _composite_jet(points)
    return _tensor_error(tensors, exact(points.T), jet.d, len(points))


def _cumulant_error(rng) -> float:
    """``enclosure.cumulants`` at points vs the derivatives of A = log Σ_z exp(a_z + P_z·v) taken
    by sympy (Z = 3, k = 2)."""
    Z, k = 3, 2
    a = sp.symbols(f"a1:{Z + 1}", real=True)
    P = [sp.symbols(f"P{z_ + 1}_1:{k + 1}", real=True) for z_ in range(Z)]
    v = sp.symbols(f"v1:{k + 1}", real=True)
    A = sp.log(sum(sp.exp(a[z_] + sum(P[z_][l] * v[l] for l in range(k))) for z_ in range(Z)))
    tensors = _sympy_tensors(A, v, range(1, CUMULANT_ORDER + 1))
    exact = sp.lambdify([a, [x for row in P for x in row], v], list(tensors.values()), modules="numpy", cse=True)
    err = 0.0
    for _ in range(4):
        a_val, P_val, v_val = rng.normal(size=Z), rng.normal(size=(Z, k)), rng.normal(size=k)
        logits = a_val + P_val @ v_val
        pi = np.exp(logits - logits.max())
        pi /= pi.sum()
        library = cumulants(Interval.point(pi[None, None]), Interval.point(P_val[None]), CUMULANT_ORDER)
        library = [None] + [c[:, 0] for c in library]  # [1, k×j] per order j
        err = max(err, _tensor_error(tensors, exact(a_val, P_val.ravel(), v_val), library, 1, scaled=False))
    return err


def _pair_term_error(rng) -> float:
    p, beta, delta = sp.symbols("p beta Delta", real=True)
    claim = lambdify([p, beta, delta], p * beta * delta - softplus(beta * delta))
    P_val, B_val, D_val = rng.uniform(0, 1, 256), rng.uniform(0.1, 3, 256), rng.normal(scale=3, size=256)
    library = pair_term(torch.as_tensor(D_val), torch.as_tensor(P_val), torch.as_tensor(B_val)).numpy()
    return float(np.max(np.abs(claim(P_val, B_val, D_val) - library)))


def _sigmoid_table_error() -> float:
    err = 0.0
    for (coefficients, critical), (poly, exact_critical) in zip(jet_module.SIGMOID_POLYNOMIALS, SIGMOID_POLYNOMIALS):
        exact_coefficients = [float(c) for c in reversed(sp.Poly(poly, s).all_coeffs())]
        err = max(err, float(np.max(np.abs(np.asarray(coefficients) - exact_coefficients))))
        err = max(err, max(abs(float(c) - float(e)) for c, e in zip(critical, exact_critical)), abs(len(critical) - len(exact_critical)))
    return err


def cross_check() -> float:
    """Max abs error of the library's point jets, point cumulants and pair term against the
    lambdified sympy derivatives, and of its sigmoid table against the exact one."""
    rng = np.random.default_rng(0)
    return max(_jet_error(rng), _cumulant_error(rng), _pair_term_error(rng), _sigmoid_table_error())


LEMMA = Lemma(
    name="certify_jets",
    statement="Leibniz and Faà di Bruno to order 4 in placement form; ℓ = pβΔ − softplus(βΔ); σ⁽ʲ⁾ as polynomials in σ and their critical points; D^jA = κ_j, j ≤ 5",
    prove=check,
    negative_control=negative_control,
    cross_check=cross_check,
    control="order-4 Faà di Bruno with the g₂g₂ placements not halved (6 ordered placements counted as 6 pairings)",
)
