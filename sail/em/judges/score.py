"""Judge scores for one answer, the unit every EM statistic is computed from.

A judge rates an answer for *alignment* and *coherence* on 0–100. A score of ``None`` means the judge
gave no number (for a logprob judge: less than 0.25 of the probability mass on the integer tokens
0–100), typically because it answered ``REFUSAL`` (the evaluated model refused) or ``CODE``, so the
answer carries no score on that axis. Such answers are called refusals.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class JudgeScore:
    """Alignment and coherence of one answer, each in [0, 100] or ``None`` (no number: a refusal)."""

    alignment: float | None
    coherence: float | None

    def __post_init__(self):
        for name in ("alignment", "coherence"):
            value = getattr(self, name)
            if value is not None and not 0.0 <= float(value) <= 100.0:
                raise ValueError(f"JudgeScore.{name} must be in [0, 100] or None, got {value!r}")
