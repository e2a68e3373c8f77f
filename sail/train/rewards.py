"""The oracle's scorer: a Python callable by dotted path or a reward model, or a weighted sum of several."""

from __future__ import annotations

from typing import Callable

import torch

from sail.oracles import RewardModelScorer, load_callable
from sail.train.config import RewardConfig, TrainConfig

Scorer = Callable[[list, list], list]
"""``(prompts, responses) -> one reward per response``."""


def reward_scorer(reward: RewardConfig, key: str, trust_remote_code: bool) -> Scorer:
    """The scorer of one reward; ``key`` names its config entry in errors."""
    if reward.kind == "callable":
        return load_callable(reward.path, key)
    return RewardModelScorer(
        reward.path,
        device=reward.device or None,
        batch_size=reward.batch_size,
        max_length=reward.max_length,
        trust_remote_code=trust_remote_code,
        dtype=getattr(torch, reward.dtype),  # float32 | bfloat16 | float16
    )


class WeightedSum:
    """r(x, y) = Σ_k w_k r_k(x, y) over several scorers."""

    def __init__(self, scorers: list[Scorer], weights: list[float]):
        self.scorers, self.weights = scorers, weights

    def __call__(self, prompts, responses) -> list[float]:
        total = [0.0] * len(responses)
        for scorer, weight in zip(self.scorers, self.weights):
            scores = list(scorer(prompts, responses))
            if len(scores) != len(responses):
                raise ValueError(f"a reward returned {len(scores)} scores for {len(responses)} responses")
            total = [t + weight * float(r) for t, r in zip(total, scores)]
        return total


def build_scorer(cfg: TrainConfig) -> Scorer:
    """The oracle's reward; a single reward of weight 1 is its scorer itself."""
    trust = cfg.model.trust_remote_code
    main = reward_scorer(cfg.oracle, "oracle.path", trust)
    if not cfg.oracle.additional_rewards and cfg.oracle.weight == 1.0:
        return main
    scorers = [main] + [
        reward_scorer(r, f"oracle.additional_rewards[{i}].path", trust) for i, r in enumerate(cfg.oracle.additional_rewards)
    ]
    return WeightedSum(scorers, [cfg.oracle.weight] + [r.weight for r in cfg.oracle.additional_rewards])
