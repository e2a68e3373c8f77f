"""The box tree of a certificate: the ball's bounding box, bisected along widest sides.

A tree is written in preorder as one integer per node: ``-1`` a leaf whose bound is claimed,
``-2`` a leaf that lies outside the ball (nothing to bound), ``j ≥ 0`` a node split along
coordinate j at the float midpoint ``0.5·lo_j + 0.5·hi_j`` into its lower and upper halves. The
verifier rebuilds every box from these codes alone, so the leaves cover the root box by
construction.
"""

from __future__ import annotations

import numpy as np

LEAF, OUTSIDE = -1, -2


def split_point(lo: float, hi: float) -> float:
    return 0.5 * lo + 0.5 * hi


class BoxTree:
    """A growing tree of boxes in v-coordinates; leaves are the current cover."""

    def __init__(self, radius: float, k: int):
        self.k = k
        self.lo: list[np.ndarray] = [np.full(k, -radius)]
        self.hi: list[np.ndarray] = [np.full(k, radius)]
        self.code: list[int] = [LEAF]
        self.children: list[tuple[int, int] | None] = [None]

    def __len__(self) -> int:
        return len(self.code)

    def boxes(self, ids) -> tuple[np.ndarray, np.ndarray]:
        return np.array([self.lo[i] for i in ids]).reshape(-1, self.k), np.array([self.hi[i] for i in ids]).reshape(-1, self.k)

    def split(self, node: int) -> tuple[int, int] | None:
        """Bisect a leaf along its widest side; None if it is too narrow to split in floats."""
        lo, hi = self.lo[node], self.hi[node]
        dim = int(np.argmax(hi - lo))
        m = split_point(lo[dim], hi[dim])
        if not lo[dim] < m < hi[dim]:
            return None
        lower_hi, upper_lo = hi.copy(), lo.copy()
        lower_hi[dim], upper_lo[dim] = m, m
        ids = []
        for a, b in ((lo, lower_hi), (upper_lo, hi)):
            self.lo.append(a)
            self.hi.append(b)
            self.code.append(LEAF)
            self.children.append(None)
            ids.append(len(self.code) - 1)
        self.code[node] = dim
        self.children[node] = (ids[0], ids[1])
        return ids[0], ids[1]

    def mark_outside(self, node: int) -> None:
        self.code[node] = OUTSIDE

    def preorder(self) -> list[int]:
        """Node ids in preorder (the order of the written codes and leaf bounds)."""
        order, stack = [], [0]
        while stack:
            node = stack.pop()
            order.append(node)
            if self.children[node] is not None:
                left, right = self.children[node]
                stack.extend((right, left))
        return order


def rebuild(codes: list[int], radius: float, k: int) -> tuple[list[tuple[np.ndarray, np.ndarray]], list[tuple[np.ndarray, np.ndarray]]]:
    """(inside leaves, outside leaves) as (lo, hi) boxes, in preorder, from a tree's codes; raises
    ValueError if the codes do not describe a complete tree."""
    inside, outside = [], []
    stack = [(np.full(k, -radius), np.full(k, radius))]
    position = 0
    while stack:
        if position >= len(codes):
            raise ValueError("the tree ends before every box is a leaf")
        lo, hi = stack.pop()
        code = codes[position]
        position += 1
        if code == LEAF:
            inside.append((lo, hi))
        elif code == OUTSIDE:
            outside.append((lo, hi))
        elif isinstance(code, int) and 0 <= code < k:
            m = split_point(lo[code], hi[code])
            if not lo[code] < m < hi[code]:
                raise ValueError(f"node {position - 1} splits a side too narrow to split")
            lower_hi, upper_lo = hi.copy(), lo.copy()
            lower_hi[code], upper_lo[code] = m, m
            stack.append((upper_lo, hi))
            stack.append((lo, lower_hi))
        else:
            raise ValueError(f"node {position - 1} has the code {code!r}")
    if position != len(codes):
        raise ValueError(f"the tree has {len(codes) - position} codes after its last leaf")
    return inside, outside
