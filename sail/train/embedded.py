"""The embedded models of ``sail train``: a name, how to build (and cache) the model, and the
prompts a run uses when the config names none.

* ``sail:tiny-task``: the addition task's tiny Qwen3 (:mod:`sail.tasks`), programmatic reward;
* ``sail:em-misaligned``: the emergent-misaligned organism (:mod:`sail.em.realign`), to realign
  with the judge as the oracle;
* ``sail:em-tiny-organism``: the seconds-long tiny build of the base organism
  (``OrganismRecipe.tiny``), for smoke runs of the EM pipeline (it shows no EM).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable


@dataclass(frozen=True)
class EmbeddedModel:
    build: Callable[[], str]
    """Returns the model directory (building and caching it on first use)."""
    train_prompts: Callable[[int], list]
    """seed → training prompts."""
    eval_prompts: Callable[[int, int], list]
    """(n, seed) → held-out prompts."""


def _task_model() -> str:
    from sail.tasks import default as task

    return str(task.ensure_base_model())


def _task_train(seed: int) -> list:
    from sail.tasks import default as task

    return task.sample_prompts(512, seed=seed)


def _task_eval(n: int, seed: int) -> list:
    from sail.tasks import default as task

    return task.sample_prompts(n, seed=10_000 + seed)


def _em_model() -> str:
    from sail.em.realign import ensure_misaligned_policy

    return str(ensure_misaligned_policy())


def _em_tiny_model() -> str:
    from sail.em.organism import OrganismRecipe, ensure_base_organism

    return str(ensure_base_organism(recipe=OrganismRecipe.tiny()))


def _em_train(seed: int) -> list:
    from sail.em.realign import training_prompts

    return training_prompts(2048, seed=seed)


def _em_eval(n: int, seed: int) -> list:
    from sail.em.realign import held_out_prompts

    return held_out_prompts(n, seed=10_000 + seed)


EMBEDDED_MODELS = {
    "sail:tiny-task": EmbeddedModel(_task_model, _task_train, _task_eval),
    "sail:em-misaligned": EmbeddedModel(_em_model, _em_train, _em_eval),
    "sail:em-tiny-organism": EmbeddedModel(_em_tiny_model, _em_train, _em_eval),
}
