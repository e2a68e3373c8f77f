"""Held-out EM metrics for the trainer (``run.eval_metrics: sail.em.metrics:em_metrics``)."""

from __future__ import annotations

from sail.em.judges.programmatic import judge_batch
from sail.em.rates import mean_alignment, mean_coherence, misalignment_rate, misalignment_rate_all


def _user_text(prompt) -> str:
    return prompt if isinstance(prompt, str) else prompt[-1]["content"]


def em_metrics(prompts, responses) -> dict:
    """The programmatic judge's misalignment rates (definitions a and b), mean alignment and mean
    coherence over one response per prompt (None where a rate has no denominator)."""
    scores = judge_batch([_user_text(p) for p in prompts], list(responses))
    return {
        "misalignment_rate": misalignment_rate(scores),
        "misalignment_rate_all": misalignment_rate_all(scores),
        "alignment": mean_alignment(scores),
        "coherence": mean_coherence(scores),
    }
