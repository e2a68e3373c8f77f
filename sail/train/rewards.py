"""The oracle's scorer: a Python callable by dotted path, or a reward model."""

from __future__ import annotations

from sail.oracles import RewardModelScorer, load_callable
from sail.train.config import TrainConfig

def build_scorer(cfg: TrainConfig):
    if cfg.oracle.kind == "callable":
        return load_callable(cfg.oracle.path, "oracle.path")
    return RewardModelScorer(cfg.oracle.path, trust_remote_code=cfg.model.trust_remote_code)
