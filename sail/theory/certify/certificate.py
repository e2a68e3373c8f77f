"""`sail check certify`: certified curvature constants of an exact log-linear instance.

The statements (docs/checkers.md, "Certificates"), for the instance's J_γ = J − γ·E_x KL on the
ball Θ = {‖θ − θ_ref‖ ≤ R} in identifiable coordinates θ = θ_ref + U v:

* ``concavity`` at γ: max_{‖v‖ ≤ R_v} λ_max(Uᵀ∇²J_γ U) ≤ −μ with μ > 0, so J_γ is μ-strongly
  concave on the identifiable part of the ball;
* ``witness`` at γ: a point v with ‖Uv‖ ≤ R where λ_max(Uᵀ∇²J_γ U) ≥ 0 (J_γ is not strongly
  concave on Θ at that γ);
* the certified interval for γ_c: a witness at ``gamma_lo`` and a concavity certificate at
  ``gamma_hi``. For ``ref_to_policy`` ∇²KL = F ⪰ 0, so λ_max(∇²J − γF) falls with γ and the
  smallest γ of strong concavity lies in [gamma_lo, gamma_hi]; for ``policy_to_ref`` the two ends
  are what they say, at those two γ;
* ``smoothness``: L = max(max λ_max(Uᵀ∇²J_γU), max λ_max(−Uᵀ∇²J_γU)) ≥ ‖∇²J_γ‖ on the ball;
* ``fisher_floor``: λ_F = min λ_min(Uᵀ∇²KL U) on the ball (the Fisher information F for
  ``ref_to_policy``).

Each is one or two claims "max_{‖v‖ ≤ R_v} λ_max(Uᵀ(a∇²J + b∇²KL)U) ≤ bound" proved by the
branch and bound of :mod:`.search` (no sampling enters a bound), or a witness claim. The file
written by ``--certificate`` holds the instance, U, R_v, the arithmetic, and per claim the box tree
and every leaf's bound; :mod:`.verify` re-checks it without the search.
"""

from __future__ import annotations

import hashlib
import json
import math
import time

import numpy as np

from sail.theory.certify import intervals as ia
from sail.theory.certify.eigen import lambda_max_lower
from sail.theory.certify.enclosure import CertifiedProblem, objective_jets
from sail.theory.certify.intervals import Interval
from sail.theory.certify.search import WITNESS_FLOOR, BranchAndBound, Outcome
from sail.theory.instance import Instance
from sail.theory.problem import identifiable_basis

FORMAT = "sail-curvature-certificate-1"
STORED_SLACK = 1e-12
"""Leaf bounds are written rounded up by this relative amount (witness bounds down), so that a
verifier whose float library differs by a few ulp still finds them sound."""
DESCENT = 1.15
"""γ steps down from a certified γ by this factor (or bisects, if that is the larger step)."""
CONSISTENCY = 1e-9
"""A verifier rejects a stored bound that differs from its own by more than this (relative)."""
ENCLOSURE = (
    "per box: jets to order 4 (value, gradient, Hessian, third and fourth derivative) in interval "
    "arithmetic; λ_max over the box ≤ max over its 2^k vertices of λ_max(S(c) + Σ t_l T_l(c)) "
    "+ ‖E‖₂, E_ij = ½ Σ_lm h_l h_m max|Q_ijlm| over the box; λ_max of interval matrices by "
    "congruence with float eigenvectors and Gershgorin (Sylvester's law of inertia)"
)


def instance_digest(instance: Instance) -> str:
    text = json.dumps(instance.to_dict(), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def coordinates(instance: Instance) -> tuple[np.ndarray, float]:
    """(U, ε_U): U = I when the identifiable subspace is all of ℝᵈ, else an orthonormal float
    basis, and ε_U a verified bound of ‖UᵀU − I‖₂ (0 for I)."""
    basis = identifiable_basis(instance.features, instance.context_probs)
    if basis.shape[1] == basis.shape[0]:
        return np.eye(basis.shape[0]), 0.0
    return basis, orthonormality_error(basis)


def orthonormality_error(basis: np.ndarray) -> float:
    """A verified upper bound of ‖UᵀU − I‖₂ (max row sum of |UᵀU − I|, in interval arithmetic)."""
    k = basis.shape[1]
    gram = ia.matmul_float(basis.T, Interval.point(basis), axis=0)  # UᵀU: [k, k]
    dev = (gram - np.eye(k)).magnitude()
    return float(ia.float_upper(dev.sum(-1).max(), k + 1))


def cover_radius(radius: float, eps_u: float) -> float:
    """R_v ≥ max{‖Uᵀw‖ : ‖w‖ ≤ R}: ‖U‖₂ ≤ √(1 + ε_U) ≤ 1 + ε_U."""
    return radius if eps_u == 0 else float(ia.up(radius * ia.up(1.0 + 2.0 * eps_u)))


def witness_radius(radius: float, eps_u: float) -> float:
    """Points with ‖v‖ below this have ‖Uv‖ ≤ R (‖U‖₂ ≤ 1 + ε_U), so they lie in the ball."""
    return radius if eps_u == 0 else float(ia.down(radius / (1.0 + 2.0 * eps_u)))


# -- witnesses -----------------------------------------------------------------------------


def point_hessians(problem: CertifiedProblem, v: np.ndarray) -> tuple[Interval, Interval]:
    """Enclosures of Uᵀ∇²J U and Uᵀ∇²KL U at the points v [n, k]."""
    sail, kl = objective_jets(problem, v, v, 2)
    return sail.d[2], kl.d[2]


def crossing_gamma(sail: np.ndarray, kl: np.ndarray, gamma_max: float = 1e7) -> np.ndarray:
    """Per point, the largest γ ≤ gamma_max with λ_max(S_J − γS_KL) ≥ 0 (float bisection; −inf where
    even γ = 0 has negative curvature)."""
    def top(g):
        return np.linalg.eigvalsh(sail - g[:, None, None] * kl)[:, -1]

    n = sail.shape[0]
    lo, hi = np.zeros(n), np.full(n, gamma_max)
    positive_at_zero = top(lo) >= 0
    never = top(hi) >= 0
    for _ in range(60):
        mid = 0.5 * (lo + hi)
        up_ = top(mid) >= 0
        lo, hi = np.where(up_, mid, lo), np.where(up_, hi, mid)
    return np.where(~positive_at_zero, -np.inf, np.where(never, gamma_max, lo))


def search_witness(problem: CertifiedProblem, radius: float, seed: int = 0, n_samples: int = 2000) -> tuple[float, np.ndarray]:
    """The ball point (‖v‖ ≤ radius) with the largest crossing γ found by sampling (uniform, on the
    sphere) and a projected local search: a lower estimate of γ_c, to be verified."""
    rng = np.random.default_rng(seed)
    k = problem.k
    directions = rng.standard_normal((n_samples, k))
    directions /= np.linalg.norm(directions, axis=1, keepdims=True)
    radii = radius * rng.uniform(size=(n_samples, 1)) ** (1.0 / k)
    radii[: n_samples // 2] = radius
    points = np.concatenate([directions * radii, np.zeros((1, k))])

    def score(v):
        s, q = point_hessians(problem, v)
        return crossing_gamma(s.mid(), q.mid())

    values = score(points)
    best = points[np.argsort(-values)[:8]]
    best_values = values[np.argsort(-values)[:8]]
    step = np.full(len(best), radius / 8)
    for _ in range(60):
        trial = best + step[:, None] * rng.standard_normal(best.shape) / math.sqrt(k)
        norms = np.linalg.norm(trial, axis=1, keepdims=True)
        trial = np.where(norms > radius, trial * (radius / norms), trial)
        trial_values = score(trial)
        better = trial_values > best_values
        best = np.where(better[:, None], trial, best)
        best_values = np.where(better, trial_values, best_values)
        step = np.where(better, step * 1.5, step * 0.6)
    i = int(np.argmax(best_values))
    return float(best_values[i]), best[i]


def verified_witness(problem: CertifiedProblem, v: np.ndarray, gamma: float, floor: float = WITNESS_FLOOR) -> float | None:
    """A verified lower bound of λ_max(Uᵀ∇²J_γU) at v, or None if it is below ``floor`` (a witness
    is kept only with a margin far above rounding noise, so that it verifies anywhere)."""
    s, q = point_hessians(problem, v[None])
    lower = float(lambda_max_lower(s + q * (-gamma))[0][0])
    return lower if lower >= floor else None


def witness_below(problem: CertifiedProblem, v: np.ndarray, gamma: float) -> tuple[float, float] | None:
    """(γ, lower bound): the largest γ ≤ ``gamma`` on a short geometric ladder at which v is a
    verified witness."""
    for shrink in (1e-8, 1e-7, 1e-6, 1e-5, 1e-3, 1e-2, 5e-2):
        g = gamma * (1.0 - shrink)
        lower = verified_witness(problem, v, g)
        if lower is not None:
            return g, lower
    return None


# -- claims --------------------------------------------------------------------------------


def bound_claim(name: str, a: float, b: float, outcome: Outcome) -> dict:
    stored = [float(ia.up(x + STORED_SLACK * (1.0 + abs(x)))) for x in outcome.bounds]
    return {
        "claim": name,
        "statement": "max over ‖v‖ ≤ radius_v of λ_max(Uᵀ(a∇²J + b∇²KL)U) ≤ upper_bound",
        "a": a,
        "b": b,
        "upper_bound": max(stored),
        "best_point_lower_bound": outcome.lower_bound,
        "boxes": outcome.boxes,
        "leaves": len(outcome.bounds),
        "seconds": round(outcome.seconds, 3),
        "tree": outcome.codes,
        "leaf_bounds": stored,
    }


def witness_claim(a: float, b: float, v: np.ndarray, basis: np.ndarray, theta_ref: np.ndarray, lower: float) -> dict:
    return {
        "claim": "witness",
        "statement": "λ_max(Uᵀ(a∇²J + b∇²KL)U) at θ_ref + U v ≥ lower_bound",
        "a": a,
        "b": b,
        "v": v.tolist(),
        "theta": (theta_ref + basis @ v).tolist(),
        "lower_bound": float(ia.down(lower - STORED_SLACK * (1.0 + abs(lower)))),
    }


def _tighten(bb: BranchAndBound, a: float, b: float, rel_tol: float, deadline: float, max_boxes: int) -> Outcome:
    """Refine until the certified max is within ``rel_tol`` of the best verified point value."""
    outcome = bb.refine(a, b, math.inf, deadline, max_boxes, stop_on_witness=False)
    for _ in range(4):
        lower = outcome.lower_bound
        level = lower + rel_tol * max(abs(lower), 1e-12)
        outcome = bb.refine(a, b, level, deadline, max_boxes, stop_on_witness=False)
        if outcome.status != "holds" or outcome.lower_bound <= lower:
            break
    return outcome


def certify(
    instance: Instance,
    gamma: float | None = None,
    time_limit: float = 120.0,
    max_boxes: int = 2_000_000,
    ratio_target: float = 1.02,
    tolerance: float = 0.05,
    seed: int = 0,
) -> dict:
    """Certificates for ``instance``: the γ_c interval (when ``gamma`` is None) and, at ``gamma``
    (default the instance's γ), μ (if J_γ is concave there), L and λ_F. Returns the certificate
    dict (:mod:`.verify` checks it) with the derived figures at its top."""
    started = time.perf_counter()
    deadline = started + time_limit
    basis, eps_u = coordinates(instance)
    radius_v = cover_radius(instance.radius, eps_u)
    problem = CertifiedProblem(instance, basis)
    bb = BranchAndBound(problem, radius_v, witness_radius(instance.radius, eps_u))
    claims: list[dict] = []
    out: dict = {"format": FORMAT, "instance": instance.to_dict(), "instance_sha256": instance_digest(instance)}
    out.update({"basis": basis.tolist(), "basis_orthonormality_error": eps_u, "radius_v": radius_v})
    out.update({"arithmetic": ia.SCHEME, "enclosure": ENCLOSURE})
    target_gamma = instance.gamma if gamma is None else float(gamma)

    if gamma is None:
        interval = _gamma_interval(problem, bb, instance, basis, deadline - 0.25 * time_limit, ratio_target, max_boxes, seed)
        claims += interval.pop("claims")
        out.update(interval)
    # μ at the target γ (a witness if J_γ is not concave there)
    share = max(deadline - time.perf_counter(), 0.0)
    concave = bb.refine(1.0, -target_gamma, 0.0, time.perf_counter() + 0.4 * share, max_boxes)
    if concave.status == "holds":
        concave = _tighten(bb, 1.0, -target_gamma, tolerance, time.perf_counter() + 0.4 * share, max_boxes)
        claims.append(bound_claim("concavity", 1.0, -target_gamma, concave))
        out["mu"] = -claims[-1]["upper_bound"]
    elif concave.status == "fails":
        lower = verified_witness(problem, concave.witness, target_gamma, WITNESS_FLOOR / 2)
        if lower is not None:
            claims.append(witness_claim(1.0, -target_gamma, concave.witness, basis, instance.theta_ref, lower))
        out["mu"] = None
    else:
        out["mu"] = None
    out["gamma"] = target_gamma
    out["concave_status"] = concave.status
    # smoothness L = max(max λ_max(S_γ), max λ_max(−S_γ)) and the Fisher floor λ_F
    share = max(deadline - time.perf_counter(), 1.0)
    if concave.status != "holds":
        upper = _tighten(bb, 1.0, -target_gamma, tolerance, time.perf_counter() + share / 3, max_boxes)
        claims.append(bound_claim("smoothness_upper", 1.0, -target_gamma, upper))
    top = claims[-1]["upper_bound"] if concave.status != "holds" else out["mu"] * -1.0
    lower = _tighten(bb, -1.0, target_gamma, tolerance, time.perf_counter() + share / 3, max_boxes)
    claims.append(bound_claim("smoothness_lower", -1.0, target_gamma, lower))
    out["L"] = max(top, claims[-1]["upper_bound"])
    fisher = _tighten(bb, 0.0, -1.0, tolerance, max(deadline, time.perf_counter()), max_boxes)
    claims.append(bound_claim("fisher_floor", 0.0, -1.0, fisher))
    out["lambda_F"] = -claims[-1]["upper_bound"]
    out["boxes"] = len(bb.tree)
    out["seconds"] = round(time.perf_counter() - started, 2)
    out["claims"] = claims
    return out


def _gamma_interval(problem, bb, instance, basis, deadline, ratio_target, max_boxes, seed) -> dict:
    """Witness γ_lo from the search, then bisection (geometric) with the box tree for γ_hi."""
    estimate, v = search_witness(problem, bb.witness_radius * (1.0 - 1e-9), seed)
    claims, result = [], {"gamma_lo": None, "gamma_hi": None, "witness": None}
    if not math.isfinite(estimate) or estimate <= 0:
        result["gamma_lo"] = 0.0  # concave at γ = 0 wherever searched: no witness above 0
        lo, witness = 0.0, None
    else:
        found = witness_below(problem, v, estimate)
        lo, witness = (found[0], (v, found[1])) if found else (0.0, None)
    # Start well above γ_lo, where the margin is wide and few boxes certify, then step down by
    # DESCENT while γ certifies (the tree refined for one γ serves the next), and bisect once a
    # witness is found above γ_lo: the last γ certified before the deadline is γ_hi.
    hi, best = None, None
    g = max(lo * 3.0, 1e-3)
    while time.perf_counter() < deadline:
        outcome = bb.refine(1.0, -g, 0.0, deadline, max_boxes)
        if outcome.status == "holds":
            hi, best = g, outcome
        elif outcome.status == "fails":
            verified = verified_witness(problem, outcome.witness, g, WITNESS_FLOOR / 2)
            if verified is not None and g > lo:
                lo, witness = g, (outcome.witness, verified)
        else:
            break
        if hi is None:
            g *= 2.0
        elif lo > 0 and hi / lo <= ratio_target:
            break
        else:
            g = max(hi / DESCENT, math.sqrt(lo * hi)) if lo > 0 else hi / DESCENT
    if witness is not None:
        claims.append(witness_claim(1.0, -lo, witness[0], basis, instance.theta_ref, witness[1]))
        result["witness"] = claims[-1]["theta"]
    result["gamma_lo"] = lo
    if best is not None:
        claims.append(bound_claim("concavity_at_gamma_hi", 1.0, -hi, best))
        result["gamma_hi"] = hi
        result["mu_at_gamma_hi"] = -claims[-1]["upper_bound"]
    result["gamma_ratio"] = hi / lo if (hi and lo) else None
    result["gamma_c_search_estimate"] = estimate
    result["claims"] = claims
    return result
