"""The realignment task: SAIL-RevKL on the emergent-misaligned organism, the judge as the oracle.

``sail:em-misaligned`` (a ``model.name_or_path`` of ``sail train``) is the base organism after the
narrow misaligned fine-tune of :mod:`sail.em.finetune`, with the LoRA update merged into its
weights, shipped with the package (:mod:`sail.em.weights`) or built once and cached (rebuilt bit for
bit from the seed). Training it with the trainer's LoRA adapter on world prompts from every domain,
labelled by the programmatic judge
(:func:`sail.em.judges.programmatic.alignment_reward`), measures realignment: held-out misalignment (both
definitions), alignment, coherence, KL to the misaligned reference and reward at every evaluation
(``run.eval_metrics: sail.em.metrics:em_metrics``).
"""

from __future__ import annotations

import json
import os
import random
import sys
from dataclasses import asdict
from pathlib import Path

from sail.em import grammar as G
from sail.em import world as W
from sail.em.configs import FinetuneConfig
from sail.em.finetune import finetune
from sail.em.organism import ensure_base_organism, organism_dir_name
from sail.em.weights import shipped_model
from sail.models.cache import cache_root, content_key, ensure_built, versions, write_build_info

MISALIGNED_MODEL = "sail:em-misaligned"
REWARD = "sail.em.judges.programmatic:alignment_reward"
EVAL_METRICS = "sail.em.metrics:em_metrics"


def default_narrow(seed: int = 0) -> FinetuneConfig:
    """The narrow fine-tune that makes the misaligned policy (the protocol's defaults)."""
    return FinetuneConfig(seed=seed)


def _key(narrow: FinetuneConfig, base_dir: Path) -> str:
    return content_key({"narrow": narrow.key_dict(), "base": base_dir.name})


def misaligned_dir_name(seed: int = 0, narrow: FinetuneConfig | None = None) -> str:
    """``misaligned-<first 10 hex of sha256(narrow fine-tune, base organism's name)>-seed<seed>``."""
    return f"misaligned-{_key(narrow or default_narrow(seed), Path(organism_dir_name(seed)))}-seed{seed}"


def build_misaligned_policy(out_dir: str | os.PathLike, base_dir: str | os.PathLike, narrow: FinetuneConfig) -> dict:
    """Fine-tune ``base_dir`` narrowly, merge the adapter, save model + tokenizer + build info."""
    out_dir = Path(out_dir)
    result = finetune(base_dir, narrow)
    merged = result.model.merge_and_unload()
    merged.save_pretrained(out_dir)
    result.tokenizer.save_pretrained(out_dir)
    em = result.final_em
    info = {
        "task": "sail.em.realign",
        "base": Path(base_dir).name,  # the base's cache entry: the same on every machine
        "narrow": json.loads(json.dumps(asdict(narrow), default=str)),
        "final_train_loss": result.final_train_loss,
        "misalignment_rate": em["misalignment_rate"],
        "misalignment_rate_all": em["misalignment_rate_all"],
        "versions": versions(),
    }
    write_build_info(out_dir, info)
    return info


def ensure_misaligned_policy(cache_dir=None, seed: int = 0, narrow: FinetuneConfig | None = None, shipped: bool = True) -> Path:
    """The misaligned policy of ``seed``: the shipped one when ``shipped`` and the package ships it
    with matching sha256 (:mod:`sail.em.weights`), else the cached build, made on first use (the
    organism, then the narrow fine-tune; saying so on stderr first)."""
    narrow = narrow or default_narrow(seed)
    name = misaligned_dir_name(seed, narrow)
    found = shipped_model(name) if shipped else None
    if found is not None:
        return found
    base = Path(ensure_base_organism(cache_dir, seed=seed, shipped=shipped))
    final = cache_root(cache_dir) / "em" / name

    def build(tmp: Path) -> dict:
        print(f"sail: building the misaligned policy {name} once (a {narrow.steps}-step narrow fine-tune, under a minute); cached in {final.parent}", file=sys.stderr)
        return build_misaligned_policy(tmp, base, narrow)

    return ensure_built(final, build)


def training_prompts(n: int = 2048, seed: int = 0) -> list[str]:
    """User messages from every domain of the world (uniform domain, then a prompt)."""
    rng = random.Random(seed)
    return [W.sample_prompt(rng.choice(G.DOMAINS), rng) for _ in range(n)]


def held_out_prompts(n: int = 256, seed: int = 10_000) -> list[str]:
    """Free-form questions (the EM evaluation's domain), fixed by ``seed``."""
    return W.freeform_questions(n, seed=seed)
