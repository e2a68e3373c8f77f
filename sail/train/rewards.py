"""The oracle's scorer: a Python callable by dotted path or a reward model, or a weighted sum of several."""

from __future__ import annotations

from typing import Callable

import torch

from sail.oracles import RewardModelScorer, checked_scores, load_callable
from sail.train.config import RewardConfig, TrainConfig
from sail.train.errors import TrainingError
from sail.train.model_source import locate_model

Scorer = Callable[[list, list], list]
"""``(prompts, responses) -> one reward per response``."""


def reward_scorer(reward: RewardConfig, key: str) -> Scorer:
    """The scorer of one reward; ``key`` names its config entry in errors. A reward model runs its
    own code only with its own ``trust_remote_code``, whatever the policy's."""
    if reward.kind == "callable":
        return load_callable(reward.path, key)
    path = locate_model(reward.path, key)
    _refuse_causal_lm(path, key, reward.trust_remote_code)
    try:
        return RewardModelScorer(
            path,
            device=reward.device or None,
            batch_size=reward.batch_size,
            max_length=reward.max_length,
            trust_remote_code=reward.trust_remote_code,
            dtype=getattr(torch, reward.dtype),  # float32 | bfloat16 | float16
        )
    except (OSError, ValueError, KeyError, TypeError) as exc:  # no tokenizer, no config, no weights, …
        raise TrainingError(f"{key}: {reward.path!r} is not a reward model that loads: {' '.join(str(exc).split())}") from None


def _refuse_causal_lm(path: str, key: str, trust_remote_code: bool) -> None:
    """A directory whose config names only a language-model architecture is not a reward model:
    loading it as a classifier would score with an untrained head."""
    from transformers import AutoConfig

    try:
        architectures = AutoConfig.from_pretrained(path, trust_remote_code=trust_remote_code).architectures or []
    except (OSError, ValueError, KeyError) as exc:
        raise TrainingError(f"{key}: {path!r} is not a reward model: its config.json does not load ({' '.join(str(exc).split())})") from None
    if architectures and all(a.endswith(("ForCausalLM", "LMHeadModel")) for a in architectures):
        raise TrainingError(
            f"{key}: {path!r} is a language model ({', '.join(architectures)}), not a reward model "
            "(a sequence classifier with one output: oracle.kind=reward_model)"
        )


class WeightedSum:
    """r(x, y) = Σ_k w_k r_k(x, y) over several scorers."""

    def __init__(self, scorers: list[Scorer], weights: list[float], keys: list[str] | None = None):
        """``keys``: the config key of each scorer, for errors (:func:`sail.oracles.checked_scores`)."""
        self.scorers, self.weights = scorers, weights
        self.keys = keys or [f"reward {i}" for i in range(len(scorers))]

    def __call__(self, prompts, responses) -> list[float]:
        total = [0.0] * len(responses)
        for scorer, weight, key in zip(self.scorers, self.weights, self.keys):
            scores = checked_scores(scorer, prompts, responses, key)
            total = [t + weight * r for t, r in zip(total, scores)]
        return total


def build_scorer(cfg: TrainConfig) -> Scorer:
    """The oracle's reward; a single reward of weight 1 is its scorer itself."""
    main = reward_scorer(cfg.oracle, "oracle.path")
    if not cfg.oracle.additional_rewards and cfg.oracle.weight == 1.0:
        return main
    keys = ["oracle.path"] + [f"oracle.additional_rewards[{i}].path" for i in range(len(cfg.oracle.additional_rewards))]
    scorers = [main] + [reward_scorer(r, key) for r, key in zip(cfg.oracle.additional_rewards, keys[1:])]
    return WeightedSum(scorers, [cfg.oracle.weight] + [r.weight for r in cfg.oracle.additional_rewards], keys)
