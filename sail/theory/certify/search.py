"""Branch and bound over the ball for max_v λ_max(Uᵀ(a∇²J + b∇²KL)U).

Leaves of a :class:`~.tree.BoxTree` are evaluated once (:func:`.boxes.evaluate_boxes`, independent
of a and b) and split where their bound is not good enough. :meth:`BranchAndBound.refine` splits
every leaf whose upper bound reaches a level until none does (the claim holds), a box centre
is shown in interval arithmetic to reach it (the claim is false: a witness), or the budget ends.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from sail.theory.certify.boxes import BATCH, BoxData, centre_lower_bounds, concat_box_data, evaluate_boxes, min_norm_squared_lower, upper_bounds
from sail.theory.certify.enclosure import CertifiedProblem
from sail.theory.certify.tree import BoxTree

WITNESS_FLOOR = 1e-10
"""A box centre is a witness against a level only with a verified margin of this much (relative
to 1 + |level|): far above rounding noise, so that it verifies on any machine."""


@dataclass
class Outcome:
    """``status``: ``holds`` (every leaf's bound is below the level), ``fails`` (a verified point
    reaches it: ``witness``) or ``budget``. ``upper_bound`` is the largest leaf bound and
    ``lower_bound`` the best verified value at a box centre inside the ball."""

    status: str
    level: float
    upper_bound: float
    lower_bound: float
    witness: np.ndarray | None = None
    boxes: int = 0
    seconds: float = 0.0
    codes: list[int] = field(default_factory=list)
    bounds: list[float] = field(default_factory=list)


class BranchAndBound:
    """One box tree over the ball ‖v‖ ≤ radius, refined as the claims asked of it require; box
    centres within ``witness_radius`` may serve as witnesses."""

    def __init__(self, problem: CertifiedProblem, radius: float, witness_radius: float | None = None):
        self.problem = problem
        self.radius = radius
        self.witness_radius = radius if witness_radius is None else witness_radius
        self.consts = problem.constants()
        self.tree = BoxTree(radius, problem.k)
        self.leaves = np.array([0])
        self.data = self._evaluate(self.leaves)

    def _evaluate(self, ids: np.ndarray) -> BoxData:
        parts = []
        for start in range(0, len(ids), BATCH):
            lo, hi = self.tree.boxes(ids[start : start + BATCH])
            parts.append(evaluate_boxes(self.problem, lo, hi, self.consts))
        return concat_box_data(parts)

    def _centres_inside(self) -> np.ndarray:
        return np.linalg.norm(self.data.centre, axis=1) <= self.witness_radius * (1.0 - 1e-12)

    def refine(self, a: float, b: float, level: float, deadline: float, max_boxes: int, stop_on_witness: bool = True) -> Outcome:
        """Split leaves whose bound of max λ_max(Uᵀ(a∇²J + b∇²KL)U) is ≥ ``level`` until none is."""
        start = time.perf_counter()
        ub = upper_bounds(self.data, a, b, self.radius)
        lower, witness = -np.inf, None
        while True:
            inside = self._centres_inside()
            centre_lb = centre_lower_bounds(self.data, a, b)
            best = int(np.argmax(np.where(inside, centre_lb, -np.inf)))
            if inside[best] and centre_lb[best] > lower:
                lower, witness = float(centre_lb[best]), self.data.centre[best].copy()
            status = None
            if stop_on_witness and lower >= level + WITNESS_FLOOR * (1.0 + abs(level)):
                status = "fails"
            bad = np.flatnonzero(ub >= level)
            if status is None and bad.size == 0:
                status = "holds"
            if status is None and (time.perf_counter() > deadline or len(self.tree) + 2 * bad.size > max_boxes):
                status = "budget"
            if status is not None:
                return self._outcome(status, level, ub, lower, witness, time.perf_counter() - start)
            ub = self._split(bad[np.argsort(-ub[bad])][: max(BATCH, 1)], ub, a, b)

    def _split(self, bad: np.ndarray, ub: np.ndarray, a: float, b: float) -> np.ndarray:
        children, kept = [], np.ones(len(self.leaves), dtype=bool)
        for index in bad:
            pair = self.tree.split(int(self.leaves[index]))
            if pair is None:
                continue
            kept[index] = False
            children.extend(pair)
        children = np.array(children, dtype=int)
        lo, hi = self.tree.boxes(children)
        outside = min_norm_squared_lower(lo, hi) > self.radius**2
        for node in children[outside]:
            self.tree.mark_outside(int(node))
        new = children[~outside]
        if new.size == 0:
            self.leaves, self.data = self.leaves[kept], self.data.take(kept)
            return ub[kept]
        new_data = self._evaluate(new)
        self.leaves = np.concatenate([self.leaves[kept], new])
        self.data = concat_box_data([self.data.take(kept), new_data])
        return np.concatenate([ub[kept], upper_bounds(new_data, a, b, self.radius)])

    def _outcome(self, status, level, ub, lower, witness, seconds) -> Outcome:
        position = {int(node): i for i, node in enumerate(self.leaves)}
        codes, bounds = [], []
        for node in self.tree.preorder():
            codes.append(self.tree.code[node])
            if node in position:
                bounds.append(float(ub[position[node]]))
        return Outcome(
            status, level, float(ub.max()), lower, witness, len(self.tree), seconds, codes, bounds
        )
