"""The prompts of a run: training prompts and held-out prompts, from files, a dataset or the embedded
model."""

from __future__ import annotations

from sail.data import load_hf_prompts, load_prompts
from sail.models.embedded import embedded_model
from sail.train.config import TrainConfig
from sail.train.errors import TrainingError

def load_prompt_sets(cfg: TrainConfig) -> tuple[list, list]:
    """(training prompts, held-out prompts)."""
    embedded = embedded_model(cfg.model.name_or_path)
    if cfg.data.prompts:
        train = load_prompts(cfg.data.prompts)
    elif cfg.data.hf_dataset:
        train = load_hf_prompts(cfg.data.hf_dataset, column=cfg.data.hf_column)
    elif embedded is not None:
        train = embedded.train_prompts(cfg.run.seed)
    else:
        raise TrainingError(f"data.prompts (or data.hf_dataset) is needed to train {cfg.model.name_or_path!r}")
    if cfg.data.eval_prompts:
        held_out = load_prompts(cfg.data.eval_prompts)
    elif embedded is not None and not cfg.data.prompts and not cfg.data.hf_dataset:
        held_out = embedded.eval_prompts(cfg.data.n_eval, cfg.run.seed)
    else:
        held_out = train[: cfg.data.n_eval]
    return train, held_out[: cfg.data.n_eval]
