"""The EM experiment's embedded models (:mod:`sail.models.embedded`, declared in ``pyproject.toml``).

* ``sail:em-misaligned``: the organism after its narrow misaligned fine-tune (:mod:`sail.em.realign`),
  to realign with the judge as the oracle (the default recipe of ``sail train``);
* ``sail:em-tiny-organism``: the seconds-long tiny build of the base organism, for smoke runs of the
  EM pipeline (it shows no EM).

Training prompts are drawn with the run's seed, held-out prompts with seed + 10 000.
"""

from __future__ import annotations

from sail.em.organism import OrganismConfig, ensure_base_organism
from sail.em.realign import ensure_misaligned_policy, held_out_prompts, training_prompts
from sail.models.embedded import EmbeddedModel


def _train_prompts(seed: int) -> list:
    return training_prompts(2048, seed=seed)


def _eval_prompts(n: int, seed: int) -> list:
    return held_out_prompts(n, seed=10_000 + seed)


MISALIGNED = EmbeddedModel(lambda: str(ensure_misaligned_policy()), _train_prompts, _eval_prompts)
TINY_ORGANISM = EmbeddedModel(lambda: str(ensure_base_organism(recipe=OrganismConfig.tiny())), _train_prompts, _eval_prompts)
