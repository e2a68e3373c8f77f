"""The lemma record that every module in :mod:`proofs` exports as ``LEMMA``.

A lemma is checked in three independent ways:

* ``prove()`` establishes the claim symbolically (identity of canonical forms, exact rational
  arithmetic, certified interval signs) and returns a :class:`Verdict` that must hold;
* ``negative_control()`` runs the *same* checker on a plausible wrong variant of the claim
  (``control`` names it); its verdict must *not* hold, otherwise the checker proves nothing;
* ``cross_check()`` lambdifies the symbolic result and compares it with the library's numeric
  code at random points; it returns the largest discrepancy, which must stay below ``tolerance``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable

__all__ = ["Lemma", "Verdict", "all_of"]


@dataclass(frozen=True)
class Verdict:
    """Outcome of one checker run: ``holds`` and a one-line reason (the counterexample if not)."""

    holds: bool
    detail: str

    def __bool__(self) -> bool:  # pragma: no cover - convenience only
        return self.holds


def all_of(verdicts: Iterable[Verdict], summary: str | None = None) -> Verdict:
    """Conjunction: holds iff every verdict holds. The verdicts are taken one at a time and the
    first failure is returned at once (so a generator's later checks never run); when all hold the
    detail is ``summary`` (default: the joined details)."""
    details = []
    for v in verdicts:
        if not v.holds:
            return v
        details.append(v.detail)
    return Verdict(True, summary if summary is not None else "; ".join(details))


@dataclass(frozen=True)
class Lemma:
    """One lemma: ``name`` (what ``sail proofs --only`` selects, no blanks), a one-line
    ``statement`` and its three checks (see the module docstring)."""

    name: str
    statement: str
    prove: Callable[[], Verdict]
    negative_control: Callable[[], Verdict]
    cross_check: Callable[[], float]
    control: str
    """The wrong variant that ``negative_control`` feeds to the checker."""
    tolerance: float = 1e-9
    """Largest acceptable cross-check error."""
