"""The addition task's embedded model ``sail:tiny-task`` (:mod:`sail.models.embedded`): the task's
tiny Qwen3 (:mod:`sail.tasks.addition`), with its programmatic reward ``sail.tasks.default:reward``.
Training prompts are drawn with the run's seed, held-out prompts with seed + 10 000."""

from __future__ import annotations

from sail.models.embedded import EmbeddedModel
from sail.tasks import default as task


def _train_prompts(seed: int) -> list:
    return task.sample_prompts(512, seed=seed)


def _eval_prompts(n: int, seed: int) -> list:
    return task.sample_prompts(n, seed=10_000 + seed)


TINY_TASK = EmbeddedModel(lambda: str(task.ensure_base_model()), _train_prompts, _eval_prompts)
