"""`sail check verify CERT`: re-check a curvature certificate without the search.

For every bound claim the verifier rebuilds the box tree from its codes (so the leaves cover the
root box [−R_v, R_v]ᵏ by construction), checks that every leaf marked outside lies outside the
ball ‖v‖ ≤ R_v, recomputes every other leaf's bound with the same verified enclosure
(:func:`.boxes.upper_bounds`), and requires the stored bound to be sound (≥ its own) and
consistent (within a relative 10⁻⁹), and the claimed maximum to be the largest leaf bound. A
witness claim is recomputed at its point, which must lie in the ball. The instance's hash, U's
orthonormality bound and R_v are recomputed as well. Any difference rejects the certificate.
"""

from __future__ import annotations

import math

import numpy as np

from sail.theory.certify.boxes import BATCH, BoxData, concat_box_data, evaluate_boxes, min_norm_squared_lower, upper_bounds
from sail.theory.certify.certificate import (
    CONSISTENCY,
    FORMAT,
    cover_radius,
    instance_digest,
    orthonormality_error,
    point_hessians,
)
from sail.theory.certify.eigen import lambda_max_lower
from sail.theory.certify.enclosure import CertifiedProblem
from sail.theory.certify.tree import rebuild
from sail.theory.instance import instance_from_dict


class CertificateError(ValueError):
    """The certificate is malformed or does not verify."""


def _close(stored: float, recomputed: float) -> bool:
    return abs(stored - recomputed) <= CONSISTENCY * (1.0 + abs(recomputed))


def verify(cert: dict) -> dict:
    """Check ``cert``; return a summary per claim, or raise :class:`CertificateError` naming the
    first failure."""
    if not isinstance(cert, dict) or cert.get("format") != FORMAT:
        raise CertificateError(f"not a certificate of format {FORMAT!r}")
    try:
        instance = instance_from_dict(cert["instance"])
        basis = np.asarray(cert["basis"], dtype=np.float64)
        claims = cert["claims"]
        radius_v = float(cert["radius_v"])
    except (KeyError, TypeError, ValueError) as exc:
        raise CertificateError(f"malformed certificate: {exc}") from None
    if instance_digest(instance) != cert.get("instance_sha256"):
        raise CertificateError("instance_sha256 does not match the instance")
    d = instance.features.shape[2]
    if basis.ndim != 2 or basis.shape[0] != d or not np.all(np.isfinite(basis)):
        raise CertificateError(f"basis must be a finite [{d}, k] matrix")
    eps_u = 0.0 if basis.shape[0] == basis.shape[1] and np.array_equal(basis, np.eye(d)) else orthonormality_error(basis)
    if radius_v < cover_radius(instance.radius, eps_u):
        raise CertificateError(f"radius_v {radius_v!r} does not cover the ball (needs ≥ {cover_radius(instance.radius, eps_u)!r})")
    problem = CertifiedProblem(instance, basis)
    boxes = _BoxCache(problem)
    summary = []
    for index, claim in enumerate(claims):
        try:
            kind = claim["claim"]
            a, b = float(claim["a"]), float(claim["b"])
            result = _witness(problem, instance, eps_u, claim, a, b) if kind == "witness" else _bound(problem, boxes, radius_v, claim, a, b)
        except CertificateError as exc:
            raise CertificateError(f"claim {index} ({claim.get('claim', '?')}): {exc}") from None
        except (KeyError, TypeError, ValueError) as exc:
            raise CertificateError(f"claim {index}: malformed ({exc})") from None
        summary.append({"claim": kind, "a": a, "b": b, **result})
    return {"verified": True, "claims": summary}


class _BoxCache:
    """Box enclosures by box, so that claims sharing leaves evaluate each box once."""

    def __init__(self, problem):
        self.problem = problem
        self.consts = problem.constants()
        self.index: dict[bytes, int] = {}
        self.parts: list[BoxData] = []
        self.data: BoxData | None = None

    def get(self, lo: np.ndarray, hi: np.ndarray) -> BoxData:
        keys = [np.concatenate([low, high]).tobytes() for low, high in zip(lo, hi)]
        first_row = {}
        for row, key in enumerate(keys):
            if key not in self.index:
                first_row.setdefault(key, row)
        fresh = list(first_row)
        if fresh:
            rows = [first_row[k] for k in fresh]
            for start in range(0, len(rows), BATCH):
                part = rows[start : start + BATCH]
                self.parts.append(evaluate_boxes(self.problem, lo[part], hi[part], self.consts))
            for k in fresh:
                self.index[k] = len(self.index)
            self.data = concat_box_data(self.parts)
            self.parts = [self.data]
        return self.data.take(np.array([self.index[k] for k in keys]))


def _bound(problem, boxes: _BoxCache, radius_v: float, claim: dict, a: float, b: float) -> dict:
    codes = [int(c) for c in claim["tree"]]
    stored = np.asarray(claim["leaf_bounds"], dtype=np.float64)
    try:
        inside, outside = rebuild(codes, radius_v, problem.k)
    except ValueError as exc:
        raise CertificateError(f"tree: {exc}") from None
    if len(inside) != stored.size:
        raise CertificateError(f"{len(inside)} leaves to bound but {stored.size} bounds")
    if outside:
        lo = np.array([box[0] for box in outside])
        hi = np.array([box[1] for box in outside])
        if not np.all(min_norm_squared_lower(lo, hi) > radius_v**2):
            raise CertificateError("a leaf marked outside meets the ball")
    worst = -math.inf
    lo_all = np.array([box[0] for box in inside]).reshape(-1, problem.k)
    hi_all = np.array([box[1] for box in inside]).reshape(-1, problem.k)
    data = boxes.get(lo_all, hi_all)
    for start in range(0, len(inside), BATCH):
        recomputed = upper_bounds(data.take(slice(start, start + BATCH)), a, b, radius_v)
        mine = stored[start : start + BATCH]
        if not np.all(np.isfinite(mine)) or np.any(recomputed > mine):
            i = int(np.argmax(~np.isfinite(mine) | (recomputed > mine)))
            raise CertificateError(f"leaf {start + i}: stored bound {mine[i]!r} is below the verified {recomputed[i]!r}")
        far = ~np.array([_close(s, r) for s, r in zip(mine, recomputed)])
        if far.any():
            i = int(np.argmax(far))
            raise CertificateError(f"leaf {start + i}: stored bound {mine[i]!r} differs from the verified {recomputed[i]!r}")
        worst = max(worst, float(mine.max()))
    if float(claim["upper_bound"]) != worst:
        raise CertificateError(f"upper_bound {claim['upper_bound']!r} is not the largest leaf bound {worst!r}")
    return {"upper_bound": worst, "leaves": int(stored.size), "outside": len(outside)}


def _witness(problem, instance, eps_u: float, claim: dict, a: float, b: float) -> dict:
    v = np.asarray(claim["v"], dtype=np.float64)
    if v.shape != (problem.k,) or not np.all(np.isfinite(v)):
        raise CertificateError(f"v must be {problem.k} finite numbers")
    norm_bound = float(np.linalg.norm(v)) * (1.0 + 1e-15) * (1.0 + 2.0 * eps_u)
    if norm_bound > instance.radius:
        raise CertificateError(f"the witness lies outside the ball (‖v‖ ≈ {np.linalg.norm(v):.17g} > R)")
    s, q = point_hessians(problem, v[None])
    combined = (s * a + q * b) if b != 0 else s * a
    lower = float(lambda_max_lower(combined)[0][0])
    stored = float(claim["lower_bound"])
    if lower < stored or not _close(stored, lower):
        raise CertificateError(f"stored lower_bound {stored!r} does not match the verified {lower!r}")
    return {"lower_bound": stored}
