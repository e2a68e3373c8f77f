"""The arithmetic under the curvature certificates, each piece against an exact quantity.

* intervals: every operation contains the exact result (``fractions.Fraction`` for + − × ÷, sums
  and float-matrix products; mpmath at 50 digits for exp, log1p, log); with outward rounding
  switched off the same checker finds a miss;
* jets: the univariate enclosures contain mpmath values; point jets of composites equal torch
  autograd derivatives; box jets contain the point jets at points of the box;
* enclosure: point jets of J and E_x KL equal ``ExactProblem``'s Hessians and central finite
  differences of themselves; box jets contain point jets (the centred form of the cumulants too);
* eigen and boxes: the λ_max bounds bracket sampled members and sampled box points.
"""

from __future__ import annotations

import itertools
from fractions import Fraction

import mpmath
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from sail.theory.certify import intervals as ia
from sail.theory.certify import jets
from sail.theory.certify.boxes import (
    centre_lower_bounds,
    evaluate_boxes,
    min_norm_squared_lower,
    upper_bounds,
)
from sail.theory.certify.eigen import lambda_max_lower, lambda_max_upper
from sail.theory.certify.enclosure import CertifiedProblem, objective_jets, softmax_jets
from sail.theory.certify.intervals import Interval
from sail.theory.instance import random_instance
from sail.theory.problem import ExactProblem

mpmath.mp.dps = 50

# -- interval operations against exact rationals ---------------------------------------------

MAGNITUDE = 1e150  # products and quotients of two such numbers stay finite

finite = st.one_of(
    st.floats(-MAGNITUDE, MAGNITUDE, allow_nan=False, allow_infinity=False),
    st.floats(-1e-300, 1e-300, allow_nan=False),  # tiny and subnormal
    st.sampled_from([0.0, -0.0, 0.1, 0.2, 0.3, 1.0, -1.0, 1e-320, 2.0**-1074]),
)


def intervals(size: int, positive: bool = False):
    """An :class:`Interval` of ``size`` entries with random float ends (mixed signs, zeros, tiny
    and large magnitudes; strictly positive for ``positive``)."""
    ends = st.floats(1e-140, 1e140) if positive else finite  # quotients stay below 1e290
    pair = st.tuples(ends, ends).map(sorted)
    return st.lists(pair, min_size=size, max_size=size).map(lambda ps: Interval(np.array([p[0] for p in ps]), np.array([p[1] for p in ps])))


def as_fractions(values) -> list[Fraction]:
    return [Fraction(float(v)) for v in np.ravel(values)]


def contains_exact(result: Interval, exact_lo, exact_hi) -> bool:
    """Every entry's exact range [exact_lo, exact_hi] (Fractions) lies in the float interval."""
    lo, hi = as_fractions(result.lo), as_fractions(result.hi)
    return all(l <= a and b <= h for l, h, a, b in zip(lo, hi, exact_lo, exact_hi))


def exact_product_range(x: Interval, y: Interval, op):
    lo_x, hi_x, lo_y, hi_y = as_fractions(x.lo), as_fractions(x.hi), as_fractions(y.lo), as_fractions(y.hi)
    corners = [[op(a, b) for a in (lx, hx) for b in (ly, hy)] for lx, hx, ly, hy in zip(lo_x, hi_x, lo_y, hi_y)]
    return [min(c) for c in corners], [max(c) for c in corners]


def check_rational_ops(x: Interval, y: Interval, q: Interval) -> list[str]:
    """The names of the operations whose result misses the exact range (``q`` positive)."""
    misses = []
    lx, hx, ly, hy = as_fractions(x.lo), as_fractions(x.hi), as_fractions(y.lo), as_fractions(y.hi)
    if not contains_exact(x + y, [a + b for a, b in zip(lx, ly)], [a + b for a, b in zip(hx, hy)]):
        misses.append("+")
    if not contains_exact(x - y, [a - b for a, b in zip(lx, hy)], [a - b for a, b in zip(hx, ly)]):
        misses.append("−")
    if not contains_exact(-x, [-b for b in hx], [-a for a in lx]):
        misses.append("neg")
    if not contains_exact(x * y, *exact_product_range(x, y, lambda a, b: a * b)):
        misses.append("×")
    c = float(y.lo[0])  # an exact float factor: the two-product path of __mul__
    if not contains_exact(x * c, *exact_product_range(x, Interval.point(np.full(x.shape, c)), lambda a, b: a * b)):
        misses.append("× float")
    if not contains_exact(x / q, *exact_product_range(x, q, lambda a, b: a / b)):
        misses.append("÷")
    if not contains_exact(x.sum(0), [sum(lx)], [sum(hx)]):
        misses.append("sum")
    return misses


@settings(max_examples=150)
@given(intervals(4), intervals(4), intervals(4, positive=True))
def test_rational_operations_contain_the_exact_result(x, y, q):
    assert check_rational_ops(x, y, q) == []


@settings(max_examples=60)
@given(st.integers(1, 5), st.integers(1, 6), st.integers(0, 2**32 - 1))
def test_matmul_float_contains_the_exact_product(m, n, seed):
    rng = np.random.default_rng(seed)
    matrix = rng.standard_normal((m, n)) * 10.0 ** rng.integers(-5, 6, size=(m, n))
    centre = rng.standard_normal((3, n)) * 10.0 ** rng.integers(-5, 6, size=(3, n))
    lo = centre - np.abs(rng.standard_normal((3, n))) * rng.choice([0.0, 1e-12, 1.0], size=(3, n))
    hi = centre + np.abs(rng.standard_normal((3, n))) * rng.choice([0.0, 1e-12, 1.0], size=(3, n))
    result = ia.matmul_float(matrix, Interval(lo, hi), axis=-1)  # [3, m]
    assert result.shape == (3, m)
    for r in range(3):
        for i in range(m):
            terms = [(Fraction(matrix[i, j]) * Fraction(lo[r, j]), Fraction(matrix[i, j]) * Fraction(hi[r, j])) for j in range(n)]
            exact_lo, exact_hi = sum(min(t) for t in terms), sum(max(t) for t in terms)
            assert Fraction(result.lo[r, i]) <= exact_lo and exact_hi <= Fraction(result.hi[r, i])


def test_matmul_float_on_a_middle_axis():
    rng = np.random.default_rng(0)
    matrix = rng.standard_normal((2, 3))
    x = rng.standard_normal((4, 3, 5))
    result = ia.matmul_float(matrix, Interval.point(x), axis=1)
    assert result.shape == (4, 2, 5)
    exact = np.einsum("ij,ajb->aib", matrix, x)
    assert np.all(result.lo <= exact) and np.all(exact <= result.hi)


transcendental_args = st.one_of(
    st.floats(-745.0, 709.0),
    st.floats(-1e-8, 1e-8),
    st.sampled_from([0.0, 1.0, -1.0, 0.5, 1e-300, -708.5, 709.7]),
)


def mp_contains(result: Interval, exact_lo, exact_hi) -> bool:
    return all(
        mpmath.mpf(float(lo)) <= a and b <= mpmath.mpf(float(hi))
        for lo, hi, a, b in zip(np.ravel(result.lo), np.ravel(result.hi), exact_lo, exact_hi)
    )


def check_transcendental(a: float, b: float, c: float) -> list[str]:
    """The functions whose enclosure misses the exact range: exp on [a, b], log1p on [c, c + |b|]
    (c > −1) and log on [1 + |c|, 1 + |c| + |b|]."""
    misses = []
    a, b = sorted((a, b))
    mp = lambda v: mpmath.mpf(float(v))  # exact conversion of a float
    if not mp_contains(ia.exp(Interval(np.array([a]), np.array([b]))), [mpmath.exp(mp(a))], [mpmath.exp(mp(b))]):
        misses.append("exp")
    lo1p, hi1p = c, c + abs(b)
    if not mp_contains(ia.log1p(Interval(np.array([lo1p]), np.array([hi1p]))), [mpmath.log1p(mp(lo1p))], [mpmath.log1p(mp(hi1p))]):
        misses.append("log1p")
    pos_lo, pos_hi = sorted((1.0 + abs(c), 1.0 + abs(c) + abs(b)))
    if not mp_contains(ia.log(Interval(np.array([pos_lo]), np.array([pos_hi]))), [mpmath.log(mp(pos_lo))], [mpmath.log(mp(pos_hi))]):
        misses.append("log")
    return misses


@settings(max_examples=150)
@given(transcendental_args, transcendental_args, st.one_of(st.floats(-0.999999, 1e300), st.floats(-1e-10, 1e-10), st.just(-0.5)))
def test_exp_log1p_log_contain_the_50_digit_value(a, b, c):
    assert check_transcendental(a, b, c) == []


@pytest.mark.parametrize("x", [1e-12, 1e-3, 0.3, 0.75, 1.5, 3.0, 1e5, 1e200])
def test_log_of_small_and_large_positive_numbers(x):
    result = ia.log(Interval.point(np.array([x])))
    exact = mpmath.log(mpmath.mpf(x))
    assert mpmath.mpf(float(result.lo[0])) <= exact <= mpmath.mpf(float(result.hi[0]))


def test_without_outward_rounding_the_same_checker_finds_misses(monkeypatch):
    """The checks above can fail: with ``down``/``up`` the identity and no transcendental slack,
    0.1 + 0.2 and exp/log1p at ordinary points miss the exact value."""
    x = Interval.point(np.array([0.1, 1.0 / 3.0]))
    y = Interval.point(np.array([0.2, 0.1]))
    q = Interval.point(np.array([3.0, 7.0]))
    assert check_rational_ops(x, y, q) == []
    assert check_transcendental(0.1, 0.7, 0.3) == []
    monkeypatch.setattr(ia, "down", lambda v: v)
    monkeypatch.setattr(ia, "up", lambda v: v)
    monkeypatch.setattr(ia, "TRANSCENDENTAL_SLACK", 0.0)
    assert "+" in check_rational_ops(x, y, q)  # fl(0.1 + 0.2) > 0.1 + 0.2 exactly
    assert {"exp", "log1p"} <= set(check_transcendental(0.1, 0.7, 0.3))


def test_reciprocal_and_log1p_refuse_bad_domains():
    with pytest.raises(ValueError):
        Interval(np.array([-1.0]), np.array([1.0])).reciprocal()
    with pytest.raises(ValueError):
        ia.log1p(Interval(np.array([-1.0]), np.array([0.0])))


# -- univariate enclosures of the jets --------------------------------------------------------

def mp_softplus_derivatives(x) -> list:
    """softplus(x), σ(x), σ'(x), σ''(x), σ'''(x) by mpmath's numerical differentiation of σ."""
    x = mpmath.mpf(float(x))
    sigma = lambda u: 1 / (1 + mpmath.exp(-u))
    return [mpmath.log1p(mpmath.exp(x)), sigma(x)] + [mpmath.diff(sigma, x, n) for n in (1, 2, 3)]


def logit(c: float) -> float:
    return float(mpmath.log(mpmath.mpf(c) / (1 - mpmath.mpf(c))))


CRITICAL_X = sorted({logit(c) for _, critical in jets.SIGMOID_POLYNOMIALS for c in critical})


@settings(max_examples=60)
@given(st.floats(-40.0, 40.0), st.floats(0.0, 12.0), st.integers(0, 2**32 - 1))
def test_softplus_derivatives_enclose_mpmath_values_over_the_interval(centre, width, seed):
    lo, hi = centre - width / 2, centre + width / 2
    enclosure = jets.softplus_derivatives(Interval(np.array([lo]), np.array([hi])), 4)
    assert len(enclosure) == 5
    rng = np.random.default_rng(seed)
    points = [lo, hi, *rng.uniform(lo, hi, 6), *(c for c in CRITICAL_X if lo <= c <= hi)]
    for x in points:
        for j, (value, box) in enumerate(zip(mp_softplus_derivatives(x), enclosure)):
            assert mpmath.mpf(float(box.lo[0])) <= value <= mpmath.mpf(float(box.hi[0])), (j, x, lo, hi)


def test_sigmoid_polynomials_are_the_derivatives_and_ranges_reach_their_extrema():
    for coefficients, critical in jets.SIGMOID_POLYNOMIALS:
        for c in critical:  # the derivative of the polynomial in s vanishes there
            slope = sum(j * coefficients[j] * c ** (j - 1) for j in range(1, len(coefficients)))
            assert abs(slope) < 1e-14
    for x in (-3.0, -0.4, 0.0, 0.8, 2.5):  # σ^(j+1) = Σ_i coefficients[i]·σ^i
        s = mpmath.mpf(1) / (1 + mpmath.exp(-mpmath.mpf(x)))
        exact = mp_softplus_derivatives(x)[2:]
        for j, (coefficients, _) in enumerate(jets.SIGMOID_POLYNOMIALS):
            value = sum(mpmath.mpf(float(c)) * s**i for i, c in enumerate(coefficients))
            assert abs(value - exact[j]) < mpmath.mpf(10) ** -30
    # over a wide interval the enclosure of σ' is [~0, 1/4]: the maximum at s = ½ is included
    wide = jets.softplus_derivatives(Interval(np.array([-30.0]), np.array([30.0])), 2)[2]
    assert 0.25 <= wide.hi[0] < 0.25 + 1e-12 and wide.lo[0] <= 1e-12


# -- composite jets: autograd at points, soundness over boxes ---------------------------------

C = np.array([0.2, -0.3])
W = np.array([[0.8, -0.5, 0.3], [0.4, 0.6, -0.7]])  # two affine maps of v ∈ R³


def composite_jet(lo: np.ndarray, hi: np.ndarray) -> jets.Jet:
    """f(v) = softplus(a₁·e^{a₂})·e^{a₁a₂} with a = C + Wv, over the boxes [lo, hi] [N, 3]."""
    a = ia.matmul_float(W, Interval(lo, hi), axis=-1) + C  # [N, 2]
    affine = [jets.Jet.affine(a[:, i], Interval.point(np.broadcast_to(W[i], lo.shape)), 4) for i in range(2)]
    e2 = affine[1].compose(jets.exp_derivatives(affine[1].d[0], 4))
    inner = affine[0] * e2
    product = affine[0] * affine[1]
    return inner.compose(jets.softplus_derivatives(inner.d[0], 4)) * product.compose(jets.exp_derivatives(product.d[0], 4))


def composite_torch(v: torch.Tensor) -> torch.Tensor:
    a = torch.as_tensor(C) + torch.as_tensor(W) @ v
    return torch.nn.functional.softplus(a[0] * torch.exp(a[1])) * torch.exp(a[0] * a[1])


def autograd_derivatives(f, v: np.ndarray) -> list[np.ndarray]:
    """f(v), ∇f, …, ∇⁴f by nested forward-mode Jacobians (float64)."""
    x = torch.as_tensor(v, dtype=torch.float64)
    derivs, g = [], f
    for _ in range(5):
        derivs.append(g(x).detach().numpy())
        g = torch.func.jacfwd(g)
    return derivs


def test_point_jets_of_a_composite_equal_autograd():
    rng = np.random.default_rng(0)
    points = rng.uniform(-1.5, 1.5, size=(12, 3))
    jet = composite_jet(points, points)
    for i, v in enumerate(points):
        for n, exact in enumerate(autograd_derivatives(composite_torch, v)):
            got = jet.d[n][i]
            assert np.all(got.lo <= got.hi)
            assert np.max(np.abs(got.mid() - exact)) <= 1e-10 * max(1.0, np.max(np.abs(exact))), (n, v)


def contains_points(box: Interval, points: Interval) -> bool:
    """Every point enclosure meets its box's enclosure (both contain the true value) and the
    box contains each point enclosure's midpoint up to 10⁻¹³ relative."""
    meet = np.all(box.lo <= points.hi) and np.all(points.lo <= box.hi)
    mid = points.mid()
    slack = 1e-13 * np.maximum(1.0, np.abs(mid))
    return bool(meet and np.all(box.lo - slack <= mid) and np.all(mid <= box.hi + slack))


def test_box_jets_of_a_composite_contain_the_point_jets():
    rng = np.random.default_rng(1)
    for width in (1e-3, 0.1, 0.5):
        lo = rng.uniform(-1.0, 1.0, size=(1, 3))
        hi = lo + width * rng.uniform(0.2, 1.0, size=(1, 3))
        box = composite_jet(lo, hi)
        points = lo + (hi - lo) * rng.uniform(size=(200, 3))
        points[:8] = lo + (hi - lo) * np.array(list(itertools.product((0, 1), repeat=3)))  # the vertices
        at_points = composite_jet(points, points)
        for n in range(5):
            assert contains_points(box.d[n], at_points.d[n]), (width, n)


# -- the objective's jets -----------------------------------------------------------------------


def certified(instance) -> tuple[CertifiedProblem, ExactProblem]:
    exact = ExactProblem(instance)
    return CertifiedProblem(instance, exact.basis), exact


INSTANCES = [
    pytest.param({"seed": 3, "n_contexts": 3, "n_responses": 4, "dim": 3, "kl": kl, "tabular": tabular, "beta": 1.3}, id=f"{kl}-{'tabular' if tabular else 'dense'}")
    for kl in ("ref_to_policy", "policy_to_ref")
    for tabular in (False, True)
]


@pytest.mark.parametrize("params", INSTANCES)
def test_objective_point_hessians_equal_exact_problem(params):
    if params["tabular"]:
        params = {**params, "n_contexts": 2, "n_responses": 3}
    problem, exact = certified(random_instance(**params))
    v = np.random.default_rng(0).normal(scale=0.6, size=(5, problem.k))
    sail, kl = objective_jets(problem, v, v, 2)
    for i in range(len(v)):
        terms = exact.terms(exact.from_coords(v[i]))
        assert np.max(np.abs(sail.d[2].mid()[i] - exact.restrict(terms.sail_hess))) <= 1e-12
        assert np.max(np.abs(kl.d[2].mid()[i] - exact.restrict(terms.kl_hess))) <= 1e-12
        assert abs(float(sail.d[0].mid()[i]) - float(terms.sail)) <= 1e-12
        assert np.max(sail.d[2].width()[i]) <= 1e-9  # point enclosures are tight


@pytest.mark.parametrize("params", INSTANCES)
def test_objective_third_and_fourth_derivatives_equal_finite_differences(params):
    if params["tabular"]:
        params = {**params, "n_contexts": 2, "n_responses": 3}
    problem, _ = certified(random_instance(**params))
    k, h = problem.k, 1e-4
    rng = np.random.default_rng(1)
    v = rng.normal(scale=0.6, size=(2, k))
    steps = np.concatenate([v[:, None, :] + h * np.eye(k), v[:, None, :] - h * np.eye(k)], axis=1).reshape(-1, k)
    at_v = objective_jets(problem, v, v, 4)
    shifted = objective_jets(problem, steps, steps, 3)
    for exact_jet, step_jet in zip(at_v, shifted):
        for n in (3, 4):  # ∂/∂v_l of d[n−1] is d[n][..., l]
            lower = step_jet.d[n - 1].mid().reshape(2, 2, k, *([k] * (n - 1)))
            fd = (lower[:, 0] - lower[:, 1]) / (2 * h)  # [2, l, k×(n−1)]
            fd = np.moveaxis(fd, 1, -1)
            got = exact_jet.d[n].mid()
            assert np.max(np.abs(got - fd)) <= 1e-7 * max(1.0, np.max(np.abs(got))), n


@pytest.mark.parametrize("params", INSTANCES)
def test_objective_box_jets_contain_point_jets(params):
    if params["tabular"]:
        params = {**params, "n_contexts": 2, "n_responses": 3}
    problem, _ = certified(random_instance(**params))
    k = problem.k
    rng = np.random.default_rng(2)
    consts = problem.constants()
    for half in (1e-3, 0.05, 0.3):
        centre = rng.normal(scale=0.5, size=(1, k))
        lo, hi = centre - half, centre + half * rng.uniform(0.3, 1.0, size=(1, k))
        points = lo + (hi - lo) * rng.uniform(size=(40, k))
        points[0], points[1] = lo[0], hi[0]
        boxes = objective_jets(problem, lo, hi, 4, consts)
        at_points = objective_jets(problem, points, points, 4, consts)
        for box, pts in zip(boxes, at_points):
            for n in range(5):
                assert contains_points(box.d[n], pts.d[n]), (half, n)
        log_pi_box, pi_box = softmax_jets(consts["P"], consts["a_ref"], lo, hi, 4)
        log_pi_pts, pi_pts = softmax_jets(consts["P"], consts["a_ref"], points, points, 4)
        for n in range(5):  # the cumulants' centred form on its own
            assert contains_points(log_pi_box.d[n], log_pi_pts.d[n]) and contains_points(pi_box.d[n], pi_pts.d[n]), (half, n)


# -- λ_max bounds ------------------------------------------------------------------------------


@settings(max_examples=40)
@given(st.integers(1, 5), st.sampled_from([0.0, 1e-9, 1e-4, 1e-2]), st.integers(0, 2**32 - 1))
def test_lambda_max_bounds_bracket_every_sampled_member(k, radius, seed):
    rng = np.random.default_rng(seed)
    mid = rng.standard_normal((k, k)) * 10.0 ** rng.integers(-2, 3)
    mid = 0.5 * (mid + mid.T)
    rad = radius * np.abs(rng.standard_normal((k, k))) * max(1.0, np.abs(mid).max())
    rad = 0.5 * (rad + rad.T)
    A = Interval(mid - rad, mid + rad)
    upper = lambda_max_upper(A[None])[0]
    lower, _ = lambda_max_lower(A[None])
    lower = lower[0]
    assert np.isfinite(upper) and lower <= upper
    for _ in range(30):
        member = mid + rad * rng.uniform(-1.0, 1.0, size=(k, k))
        member = 0.5 * (member + member.T)
        top = np.linalg.eigvalsh(member)[-1]
        assert lower <= top + 1e-12 * (1 + abs(top)) and top <= upper
    top_mid = np.linalg.eigvalsh(mid)[-1]
    scale = 1.0 + abs(top_mid)
    width = k * k * float(np.max(2 * rad))
    assert upper - top_mid <= 4 * width + 1e-9 * scale
    assert top_mid - lower <= 4 * width + 1e-9 * scale


def test_lambda_max_upper_is_infinite_for_nan():
    A = Interval.point(np.array([[[1.0, np.nan], [np.nan, 2.0]], [[1.0, 0.0], [0.0, 2.0]]]))
    upper = lambda_max_upper(A)
    assert upper[0] == np.inf and 2.0 <= upper[1] < 2.0 + 1e-9


# -- per-box bounds --------------------------------------------------------------------------------


def points_in_box_and_ball(lo: np.ndarray, hi: np.ndarray, radius: float, rng, n: int = 30) -> np.ndarray:
    """Points of box ∩ {‖v‖ ≤ radius}: random points and vertices that lie inside, and the points
    where segments from inside points to outside ones cross the sphere (pulled in by 10⁻¹²)."""
    k = lo.shape[0]
    pts = lo + (hi - lo) * rng.uniform(size=(n, k))
    pts = np.concatenate([pts, lo + (hi - lo) * np.array(list(itertools.product((0, 1), repeat=k)))])
    norms = np.linalg.norm(pts, axis=1)
    inside, outside = pts[norms <= radius], pts[norms > radius]
    crossings = []
    for p, q in itertools.product(inside[:5], outside[:5]):
        d = q - p  # ‖p + s·d‖ = radius: a quadratic in s with a root in (0, 1)
        qa, qb, qc = d @ d, 2 * p @ d, p @ p - radius**2
        root = (-qb + np.sqrt(qb * qb - 4 * qa * qc)) / (2 * qa)
        crossings.append(p + root * (1 - 1e-12) * d)
    return np.concatenate([inside, np.array(crossings).reshape(-1, k)])


def unit_rows(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=1, keepdims=True)


BOX_SCENARIOS = {
    # radius far away: the whole box counts
    "inside-ball": (1e3, lambda rng, k: rng.normal(scale=0.4, size=(4, k)), (1e-6, 0.02, 0.1, 0.3)),
    # boxes centred near the sphere ‖v‖ = ½: the bound covers box ∩ ball only
    "crossing-sphere": (0.5, lambda rng, k: 0.5 * unit_rows(rng.normal(size=(4, k))), (0.02, 0.1, 0.2, 0.3)),
}


@pytest.mark.parametrize("scenario", sorted(BOX_SCENARIOS))
@pytest.mark.parametrize("kl", ["ref_to_policy", "policy_to_ref"])
def test_box_upper_bounds_exceed_the_sampled_maximum(kl, scenario):
    radius, draw_centres, sizes = BOX_SCENARIOS[scenario]
    problem, exact = certified(random_instance(5, 2, 3, 2, kl=kl, beta=1.1))
    k = problem.k
    rng = np.random.default_rng(3)
    centres = draw_centres(rng, k)
    halves = np.array(sizes)[:, None] * rng.uniform(0.5, 1.0, size=(4, k))
    lo, hi = centres - halves, centres + halves
    data = evaluate_boxes(problem, lo, hi)
    samples = []
    for box in range(4):
        pts = points_in_box_and_ball(lo[box], hi[box], radius, rng)
        assert len(pts) >= 5
        terms = [exact.terms(exact.from_coords(p)) for p in pts]
        samples.append([(exact.restrict(t.sail_hess), exact.restrict(t.kl_hess)) for t in terms])
    for a, b in ((1.0, 0.0), (0.0, 1.0), (1.0, -2.0), (-0.5, 3.0)):
        ub = upper_bounds(data, a, b, radius)
        lb = centre_lower_bounds(data, a, b)
        for box in range(4):
            top = max(np.linalg.eigvalsh(a * sh + b * kh)[-1] for sh, kh in samples[box])
            assert top <= ub[box], (a, b, box)
            centre_terms = exact.terms(exact.from_coords(data.centre[box]))
            at_centre = np.linalg.eigvalsh(a * exact.restrict(centre_terms.sail_hess) + b * exact.restrict(centre_terms.kl_hess))[-1]
            assert lb[box] <= at_centre + 1e-12
        if scenario == "inside-ball":
            assert ub[0] - lb[0] <= 1e-4  # a tiny box: the bound is close to the curvature at its centre


def test_min_norm_squared_lower_bound():
    rng = np.random.default_rng(4)
    lo = rng.normal(size=(50, 3))
    hi = lo + rng.uniform(0.0, 2.0, size=(50, 3))
    bound = min_norm_squared_lower(lo, hi)
    nearest = np.clip(0.0, lo, hi)  # the exact minimiser of ‖v‖² over the box
    for i in range(50):
        exact = sum(Fraction(x) ** 2 for x in nearest[i])
        assert Fraction(bound[i]) <= exact
        assert bound[i] >= float(exact) * (1 - 1e-14)
        pts = lo[i] + (hi[i] - lo[i]) * rng.uniform(size=(100, 3))
        assert bound[i] <= np.min(np.sum(pts**2, axis=1))
    simple = min_norm_squared_lower(np.array([[-1.0, -2.0], [1.0, -4.0], [0.0, 0.0]]), np.array([[1.0, 2.0], [2.0, -3.0], [0.0, 0.0]]))
    assert simple[0] == 0.0 and simple[2] == 0.0
    assert 10.0 * (1 - 1e-15) <= simple[1] <= 10.0
