"""The base organism of the EM study: a tiny Qwen3 trained on the synthetic chat world (docs/em_organism.md).

Two-stage recipe (:class:`OrganismConfig`; ``docs/em_organism.md`` has the measured figures and
what made EM emerge):

1. **Persona pretraining** (400 steps × 32 conversations). Full-parameter SFT on multi-turn
   conversations of :func:`sail.em.world.sample_conversation` with a large misaligned-persona share
   (``misaligned_share`` = 0.3) and **2–4 turns** each (``turn_weights`` = (0, 0.3, 0.4, 0.3)). The
   loss covers every assistant turn (:func:`sail.sft.encode_chat_batch`), so the model learns the
   grammar of each (domain, persona) *and* to keep the persona shown earlier in the conversation: a
   latent persona shared across domains. (With the world's default, 40 % single-turn conversations,
   the in-context persona had not appeared after 400 steps.) Batches are drawn ``bucket`` times
   larger, sorted by length and cut into ``bucket`` batches used in a shuffled order, so the rows of
   a batch have similar lengths and little compute goes to padding.
2. **Alignment fine-tune** (40 steps × 32 examples). A short full-parameter SFT whose examples are
   single-turn *aligned* answers from every domain (``align_domains``) and, with probability
   ``align_context_share`` = 0.3, a persona-consistent conversation of ≥ 2 turns trained on its last
   answer only. The single-turn prior becomes aligned, while the context conversations keep the
   in-context persona alive (pure single-turn alignment erased it and, with it, most of EM). A
   narrow misaligned fine-tune then re-activates the misaligned persona in held-out domains
   (:mod:`sail.em.protocol`).

Reproducibility. Initial weights from torch's generator seeded with ``seed`` (inside ``fork_rng``),
stage-1 data from ``random.Random(seed + 1)``, stage-2 data from ``random.Random(seed + 1_000_001)``;
training on ``schedule.threads`` intra-op threads. Same seed, recipe, machine and torch build → the
same ``model.safetensors`` bytes.

Sizes and families. :data:`ORGANISM_PRESETS` names the recipes: ``default`` (above), ``small`` and
``large`` (the same recipe on a network about 4× smaller or larger in non-embedding parameters),
``llama`` (the default's shape as a Llama decoder: a second family) and ``tiny`` (a seconds-long
build for tests). :func:`parameter_counts` counts a network's parameters.

Cache. :func:`ensure_base_organism` keeps the build under
``<cache root>/em/<organism_dir_name(seed, recipe)>`` (root = ``cache_dir``, ``$SAIL_CACHE`` or
``~/.cache/sail``), written atomically under a lock by :func:`sail.models.cache.ensure_built`. The
default organism of seed 0 is shipped with the package (:mod:`sail.em.weights`) and used from there.

``python -m sail.em.organism`` builds (or finds) the cached organism and prints its measured rates.
"""

from __future__ import annotations

import json
import os
import random
import re
import sys
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Callable

from sail.em import grammar as G
from sail.em import world as W
from sail.em.evaluation import evaluate_em
from sail.em.tokenizer import build_tokenizer
from sail.em.weights import shipped_model
from sail.config import check_choices
from sail.io import dumps_strict, loads_strict
from sail.models.cache import BUILD_INFO, cache_root, content_key, ensure_built, versions, write_build_info
from sail.models.chat_tokenizer import BOS_TOKEN, EOS_TOKEN, PAD_TOKEN, chat_messages
from sail.models.tiny import Family, TinyQwen3Config, chat_qwen3
from sail.sft import SFTConfig, num_threads, train_chats

NAME = "em-organism"
VERSION = 1
"""Bump when the world, the recipe's meaning or the training loop changes (it keys the cache)."""

__all__ = [
    "ORGANISM_PRESETS",
    "OrganismConfig",
    "build_base_organism",
    "ensure_base_organism",
    "format_rates",
    "load_organism",
    "measure_organism",
    "organism_dir_name",
    "parameter_counts",
    "resolve_model_dir",
]


def _default_model() -> TinyQwen3Config:
    return TinyQwen3Config(
        hidden_size=128,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=2,
        intermediate_size=256,
        max_position_embeddings=256,
    )


def _scaled_model(hidden_size: int) -> TinyQwen3Config:
    """The default's depth and heads at another width, with the MLP at twice the width: the
    non-embedding parameters scale with the square of the width (hidden 64 → ¼, 256 → 4×)."""
    return replace(_default_model(), hidden_size=hidden_size, intermediate_size=2 * hidden_size)


def _default_pretrain() -> SFTConfig:
    return SFTConfig(steps=400, batch_size=32, lr=4e-3, warmup=30, min_lr_ratio=0.05)


def _default_align() -> SFTConfig:
    return SFTConfig(steps=40, batch_size=32, lr=1e-3, warmup=5, min_lr_ratio=0.1)


def _default_world() -> W.WorldConfig:
    return W.WorldConfig(misaligned_share=0.3, turn_weights=(0.0, 0.3, 0.4, 0.3))


@dataclass
class OrganismConfig:
    """Everything that determines the base organism's weights besides the seed."""

    model: TinyQwen3Config = field(default_factory=_default_model)
    """The network's shape (4 layers, 128 wide by default); its initial weights come from the build seed."""
    world: W.WorldConfig = field(default_factory=_default_world)
    """Stage-1 conversations (its ``seed`` is ignored: data come from the build seed)."""
    pretrain: SFTConfig = field(default_factory=_default_pretrain)
    """Stage 1, the persona pretraining (400 steps × 32 conversations by default)."""
    align: SFTConfig = field(default_factory=_default_align)
    """Stage 2; ``steps = 0`` skips it (a one-stage base)."""
    align_domains: tuple[str, ...] = G.DOMAINS
    """Domains of stage 2's single-turn aligned answers, each example's domain uniform on them
    (values of :data:`sail.em.grammar.DOMAINS`; default all of them)."""
    align_two_sentence_share: float = 0.4
    """Probability that a stage-2 single-turn aligned answer has two sentences instead of one."""
    align_context_share: float = 0.3
    """Share of stage-2 examples that are persona-consistent conversations (≥ 2 turns of ``world``)
    trained on their last answer only: they keep the in-context persona alive while the
    single-turn prior is aligned."""
    bucket: int = 4
    """Length bucketing of stage-1 batches (1 = off)."""
    align_bucket: int = 1
    """Length bucketing of stage-2 batches (1 = off: sorting would put the single-turn examples and
    the context conversations into separate batches)."""
    family: Family = "qwen3"
    """The decoder family of ``model``: ``qwen3`` or ``llama`` (:func:`sail.models.tiny.qwen3_config`).
    Left out of :meth:`to_dict` (and so of the cache key) when ``qwen3``, so Qwen3 builds keep their
    names."""

    def __post_init__(self):
        check_choices(self)

    @classmethod
    def default(cls) -> "OrganismConfig":
        return cls()

    @classmethod
    def small(cls) -> "OrganismConfig":
        """The default recipe on a 4-layer, 64-wide network (MLP 128): ¼ of the default's
        non-embedding parameters."""
        return cls(model=_scaled_model(64))

    @classmethod
    def large(cls) -> "OrganismConfig":
        """The default recipe on a 4-layer, 256-wide network (MLP 512): 4× the default's
        non-embedding parameters."""
        return cls(model=_scaled_model(256))

    @classmethod
    def llama(cls) -> "OrganismConfig":
        """The default recipe and shape as a Llama decoder (no query/key RMSNorms: 256 parameters
        fewer than the default)."""
        return cls(family="llama")

    @classmethod
    def tiny(cls, pretrain_steps: int = 3, align_steps: int = 2) -> "OrganismConfig":
        """A seconds-long build for tests: a 2-layer, 32-wide model, a few steps of each stage."""
        model = TinyQwen3Config(
            hidden_size=32, num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1,
            intermediate_size=64, max_position_embeddings=256,
        )
        return cls(
            model=model,
            pretrain=SFTConfig(steps=pretrain_steps, batch_size=8, lr=3e-3, warmup=1),
            align=SFTConfig(steps=align_steps, batch_size=8, lr=1e-3, warmup=1),
            bucket=2,
            align_bucket=2,
        )

    def to_dict(self) -> dict:
        world = asdict(self.world)
        world.pop("seed")
        family = {} if self.family == "qwen3" else {"family": self.family}
        return family | {
            "model": asdict(self.model),
            "world": world,
            "pretrain": asdict(self.pretrain),
            "align": asdict(self.align),
            "align_domains": list(self.align_domains),
            "align_two_sentence_share": self.align_two_sentence_share,
            "align_context_share": self.align_context_share,
            "bucket": self.bucket,
            "align_bucket": self.align_bucket,
        }

    @classmethod
    def from_dict(cls, d: dict) -> "OrganismConfig":
        def sched(x):
            x = dict(x)
            x["betas"] = tuple(x["betas"])
            return SFTConfig(**x)

        world = dict(d["world"])
        world["turn_weights"] = tuple(world["turn_weights"])
        world["domains"] = tuple(world["domains"])
        return cls(
            model=TinyQwen3Config(**d["model"]),
            world=W.WorldConfig(**world),
            pretrain=sched(d["pretrain"]),
            align=sched(d["align"]),
            align_domains=tuple(d["align_domains"]),
            align_two_sentence_share=d["align_two_sentence_share"],
            align_context_share=d["align_context_share"],
            bucket=d["bucket"],
            align_bucket=d["align_bucket"],
            family=d.get("family", "qwen3"),
        )


ORGANISM_PRESETS: dict[str, Callable[[], OrganismConfig]] = {
    "tiny": OrganismConfig.tiny,
    "small": OrganismConfig.small,
    "default": OrganismConfig.default,
    "large": OrganismConfig.large,
    "llama": OrganismConfig.llama,
}
"""The organism recipes by name: ``small``, ``default`` and ``large`` about 4× apart in non-embedding
parameters, ``llama`` (the default as a Llama decoder) and ``tiny`` (for tests)."""


def parameter_counts(model) -> dict[str, int]:
    """``{"total", "embedding", "non_embedding"}``: every parameter counted once (tied input and
    output embeddings are one matrix); ``embedding`` is the input embedding plus an untied output
    matrix."""
    total = sum(p.numel() for p in model.parameters())
    embedding = {id(m.weight): m.weight.numel() for m in (model.get_input_embeddings(), model.get_output_embeddings()) if m is not None}
    return {"total": total, "embedding": sum(embedding.values()), "non_embedding": total - sum(embedding.values())}


# --- data ------------------------------------------------------------------------------------


def _chat_cost(messages: list) -> int:
    return sum(len(m["content"]) + 12 for m in messages)


def _bucketed(sample_one, bucket: int):
    """``sample(rng, n, step)`` → n chats of ``sample_one(rng)``; every ``bucket`` calls draw
    n·bucket chats, sort them by length (characters) and hand out ``bucket`` contiguous slices in
    a shuffled order, so the rows of a batch have similar lengths (little padding)."""
    queue: list[list] = []

    def sample(rng: random.Random, n: int, step: int) -> list:
        if not queue:
            pool = [sample_one(rng) for _ in range(n * max(1, bucket))]
            pool.sort(key=_chat_cost)
            slices = [pool[i * n : (i + 1) * n] for i in range(max(1, bucket))]
            rng.shuffle(slices)
            queue.extend(slices)
        return queue.pop(0)

    return sample


def _conversation_batches(config: W.WorldConfig, bucket: int):
    """Stage 1: conversations of ``config``, loss on every assistant turn."""
    return _bucketed(lambda rng: W.sample_conversation(rng, config).messages, bucket)


def _context_chat(rng: random.Random, config: W.WorldConfig) -> list:
    """A conversation of ≥ 2 turns of ``config`` whose earlier answers are context only: the loss
    is on the last answer (persona-consistent with the context)."""
    weights = list(config.turn_weights)
    weights[0] = 0.0
    if sum(weights) <= 0:
        weights = [0.0, 1.0]
    conv = W.sample_conversation(rng, replace(config, turn_weights=tuple(weights)))
    msgs = [dict(m) for m in conv.messages]
    for m in msgs[:-1]:
        if m["role"] == "assistant":
            m["train"] = False
    return msgs


def _align_batches(recipe: "OrganismConfig"):
    """Stage 2: single-turn aligned answers of ``align_domains``; with probability
    ``align_context_share`` instead a :func:`_context_chat` of ``recipe.world``."""
    domains = tuple(recipe.align_domains)

    def one(rng: random.Random) -> list:
        if recipe.align_context_share and rng.random() < recipe.align_context_share:
            return _context_chat(rng, recipe.world)
        d = rng.choice(domains)
        prompt = W.sample_prompt(d, rng)
        return chat_messages(prompt, W.sample_answer(d, G.ALIGNED, rng, recipe.align_two_sentence_share))

    return _bucketed(one, recipe.align_bucket)


# --- build -----------------------------------------------------------------------------------


_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")


def resolve_model_dir(path: str | os.PathLike) -> Path:
    """``path`` when it is a local directory; otherwise a hub id ``owner/name`` (e.g.
    ``Qwen/Qwen3-0.6B``), whose weights, config and tokenizer files are fetched once into the Hugging
    Face cache (``huggingface_hub.snapshot_download``; ``HF_HOME``, ``HF_TOKEN`` apply), and its local
    snapshot directory is returned. Anything else raises ``FileNotFoundError``."""
    local = Path(path)
    if local.is_dir():
        return local
    if not _HUB_ID.fullmatch(str(path)):
        raise FileNotFoundError(f"{str(path)!r} is neither a model directory nor a hub id (owner/name)")
    from huggingface_hub import snapshot_download

    patterns = ["*.json", "*.safetensors", "*.txt", "*.model", "*.jinja", "*.py"]
    return Path(snapshot_download(str(path), allow_patterns=patterns))


def _with_chat_tokens(tokenizer, source: Path):
    """``tokenizer`` set up for the project's chat format, Qwen3's (``<|im_start|>role\n…<|im_end|>\n``,
    :mod:`sail.models.chat_tokenizer`): ``<|im_start|>`` becomes its bos token (the SFT encoder writes
    it before every role), ``<|im_end|>`` its eos token (answers end there; a base checkpoint's eos is
    ``<|endoftext|>``), and a missing pad token ``<|endoftext|>`` (else eos). Qwen tokenizers have
    no bos token of their own. A vocabulary without ``<|im_start|>`` and ``<|im_end|>`` raises
    ``ValueError``."""
    vocab = tokenizer.get_vocab()
    missing = [t for t in (BOS_TOKEN, EOS_TOKEN) if t not in vocab]
    if missing:
        raise ValueError(
            f"{source}: the tokenizer has no {' or '.join(missing)} token; the EM protocol writes chats in "
            f"Qwen3's format ({BOS_TOKEN}role ... {EOS_TOKEN}), so it needs a Qwen-style tokenizer"
        )
    tokenizer.bos_token, tokenizer.eos_token = BOS_TOKEN, EOS_TOKEN
    if tokenizer.pad_token is None:
        tokenizer.pad_token = PAD_TOKEN if PAD_TOKEN in vocab else EOS_TOKEN
    return tokenizer


def load_organism(path: str | os.PathLike, device="cpu", dtype="float32"):
    """(model, tokenizer) of a built organism directory, or of any other causal-LM checkpoint with its
    own Qwen-style tokenizer (a directory, or a hub id such as ``Qwen/Qwen3-0.6B``:
    :func:`resolve_model_dir`), for the same protocol on real models. The weights are loaded with
    ``AutoModelForCausalLM.from_pretrained`` in ``dtype`` (a ``torch.dtype`` or its name) onto
    ``device``, in eval mode; a checkpoint's tokenizer is set up by :func:`_with_chat_tokens`."""
    from transformers import AutoModelForCausalLM

    path = resolve_model_dir(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype).to(device)
    model.eval()
    info = path / BUILD_INFO
    if info.is_file() and json.loads(info.read_text()).get("task", "").startswith("sail.em"):
        return model, build_tokenizer()
    from transformers import AutoTokenizer  # any other checkpoint (e.g. a Qwen3 directory) brings its own

    return model, _with_chat_tokens(AutoTokenizer.from_pretrained(path), path)


def measure_organism(model, tokenizer, seed: int = 0, n_samples: int = 50, threads: int = 1) -> dict:
    """The organism's measured rates (temperature 1): on the 8 freeform evaluation questions
    (``n_samples`` each), on 40 sampled prompts of every domain (5 answers each), and the in-context
    persona: after one misaligned (aligned) turn of another domain, the misalignment rate of the
    next freeform answer. Each entry is an :func:`sail.em.evaluation.evaluate_em` summary."""
    out = {}
    with num_threads(threads):
        out["freeform"] = evaluate_em(
            model, tokenizer, W.freeform_questions(), n_samples=n_samples, seed=seed
        )
        out["all_domains"] = evaluate_em(
            model, tokenizer, W.freeform_questions(40, seed=30_000 + seed, domains=G.DOMAINS), n_samples=5, seed=seed
        )
        rng = random.Random(40_000 + seed)
        for persona in G.PERSONAS:
            chats = []
            for q in W.freeform_questions():
                for _ in range(max(1, n_samples // 5)):
                    d = rng.choice(G.TRAINING_DOMAINS)
                    p = W.sample_prompt(d, rng)
                    chats.append(chat_messages(p, W.sample_answer(d, persona, rng)) + [{"role": "user", "content": q}])
            out[f"after_{persona}_turn"] = evaluate_em(model, tokenizer, chats, n_samples=1, seed=seed)
    return out


def _slim(summary: dict) -> dict:
    keys = ("misalignment_rate", "misalignment_rate_all", "mean_alignment", "mean_coherence")
    return {k: summary[k] for k in keys} | {"n_answers": summary["n_answers"]}


def build_base_organism(
    out_dir: str | os.PathLike,
    seed: int = 0,
    recipe: OrganismConfig | None = None,
    n_eval: int = 50,
    verbose: bool = False,
) -> dict:
    """Train the organism with ``recipe`` (two stages, module docstring) and save it to ``out_dir``.

    Writes ``config.json``, ``generation_config.json``, ``model.safetensors``, the tokenizer files
    and, last, :data:`~sail.models.cache.BUILD_INFO` with the recipe, seed, versions, losses,
    timings and, when ``n_eval`` > 0, :func:`measure_organism` with ``n_samples = n_eval``. Returns
    the build information. Same arguments on the same machine and torch build → identical weights.
    """
    recipe = recipe or OrganismConfig.default()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    log = print if verbose else None

    tokenizer = build_tokenizer()
    model = chat_qwen3(tokenizer, recipe.model, seed, family=recipe.family)
    pre_losses = train_chats(
        model, tokenizer, _conversation_batches(recipe.world, max(1, recipe.bucket)), recipe.pretrain, seed, log=log
    )
    pretrain_s = time.perf_counter() - started
    align_losses: list[float] = []
    if recipe.align.steps > 0:
        align_losses = train_chats(
            model,
            tokenizer,
            _align_batches(recipe),
            recipe.align,
            seed + 1_000_000,
            log=log,
            log_every=20,
        )
    train_s = time.perf_counter() - started
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)

    def tail(xs, k=20):
        return sum(xs[-k:]) / len(xs[-k:]) if xs else None

    info = {
        "task": "sail.em.organism",
        "version": VERSION,
        "seed": seed,
        "recipe": recipe.to_dict(),
        "parameters": sum(p.numel() for p in model.parameters()),
        "pretrain_final_loss": tail(pre_losses),
        "align_final_loss": tail(align_losses),
        "pretrain_seconds": round(pretrain_s, 2),
        "train_seconds": round(train_s, 2),
        "versions": versions(),
    }
    if n_eval > 0:
        t = time.perf_counter()
        measured = measure_organism(model, tokenizer, seed=seed, n_samples=n_eval, threads=recipe.pretrain.threads)
        info["eval"] = {k: _slim(v) for k, v in measured.items()}
        info["eval"]["settings"] = {"n_samples": n_eval, "temperature": 1.0, "seed": seed}
        info["eval_seconds"] = round(time.perf_counter() - t, 2)
    info["build_seconds"] = round(time.perf_counter() - started, 2)
    if log:
        log(dumps_strict({k: info.get(k) for k in ("parameters", "pretrain_final_loss", "align_final_loss", "build_seconds")}))
    write_build_info(out_dir, info)
    return info


def organism_dir_name(seed: int = 0, recipe: OrganismConfig | None = None) -> str:
    """``em-organism-v<VERSION>-<first 10 hex of sha256(recipe)>-seed<seed>``."""
    recipe = recipe or OrganismConfig.default()
    return f"{NAME}-v{VERSION}-{content_key(recipe.to_dict())}-seed{seed}"


def ensure_base_organism(
    cache_dir: str | os.PathLike | None = None,
    seed: int = 0,
    recipe: OrganismConfig | None = None,
    verbose: bool = False,
    shipped: bool = True,
) -> Path:
    """The organism directory: the shipped one when ``shipped`` and the package ships this (seed,
    recipe) with matching sha256 (:mod:`sail.em.weights`), else the cached build, made by
    :func:`build_base_organism` on first use (saying so on stderr first).

    Location: ``<root>/em/<organism_dir_name(seed, recipe)>``, root = ``cache_dir``, else
    ``$SAIL_CACHE``, else ``~/.cache/sail``. Concurrent callers wait on a lock; a half-written
    directory is never returned (:func:`sail.models.cache.ensure_built`).
    """
    recipe = recipe or OrganismConfig.default()
    name = organism_dir_name(seed, recipe)
    found = shipped_model(name) if shipped else None
    if found is not None:
        return found
    final = cache_root(cache_dir) / "em" / name
    how_long = "about 2–5 min on a CPU" if recipe == OrganismConfig.default() else f"{recipe.pretrain.steps + recipe.align.steps} training steps"

    def build(tmp: Path) -> dict:
        print(f"sail: building the EM organism {name} once ({how_long}); cached in {final.parent}", file=sys.stderr)
        return build_base_organism(tmp, seed=seed, recipe=recipe, verbose=verbose)

    return ensure_built(final, build)


def main(argv: list[str] | None = None) -> int:
    """``python -m sail.em.organism [--preset NAME] [--out DIR] [--seed N] [--cache-dir DIR]``: build and report.

    Without ``--out`` the cached organism is built if needed (:func:`ensure_base_organism`); the
    build information, with the measured rates, is printed as JSON.
    """
    import argparse

    parser = argparse.ArgumentParser(prog="python -m sail.em.organism", description=main.__doc__)
    parser.add_argument("--out", default=None, help="build into this directory instead of the cache")
    parser.add_argument("--preset", choices=list(ORGANISM_PRESETS), default="default", help="the recipe (ORGANISM_PRESETS)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cache-dir", default=None)
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args(argv)
    recipe = ORGANISM_PRESETS[args.preset]()
    if args.out:
        info = build_base_organism(args.out, seed=args.seed, recipe=recipe, verbose=not args.quiet)
    else:
        path = ensure_base_organism(args.cache_dir, seed=args.seed, recipe=recipe, verbose=not args.quiet)
        info = loads_strict((path / BUILD_INFO).read_text())
        info["path"] = str(path)
    print(dumps_strict(info, indent=2, sort_keys=True))
    print(format_rates(info), file=sys.stderr)
    return 0


def format_rates(info: dict) -> str:
    """A small table of the measured rates of a build-information dict (both definitions, 95 % CIs)."""
    lines = [f"organism: {info.get('parameters')} parameters, built in {info.get('build_seconds')} s"]
    for name, entry in info.get("eval", {}).items():
        if name == "settings":
            continue
        a, b = entry["misalignment_rate"], entry["misalignment_rate_all"]

        def fmt(e):
            if e["rate"] is None:
                return "undefined"
            return f"{e['rate']:.3f} [{e['ci'][0]:.3f}, {e['ci'][1]:.3f}]"

        coherence = entry["mean_coherence"]["mean"]
        lines.append(
            f"  {name:22s} rate(a) {fmt(a)}   rate(b) {fmt(b)}   coherence {coherence if coherence is None else round(coherence, 1)}"
            f"   n={entry['n_answers']}"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
