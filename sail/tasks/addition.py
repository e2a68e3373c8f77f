"""The embedded task: two-number addition, answered with the bare sum.

Task. A prompt (user message) is ``"a+b"`` with a, b drawn uniformly from {10, …, 99} (two digits
each, so the digits sit at fixed positions); the correct response is the decimal sum s = a + b and
nothing else (``"12+35"`` → ``"47"``).

Reward (deterministic, defined on any text). Let y be the response cut at its first ``<|im_end|>``
or ``<|endoftext|>`` with surrounding whitespace removed, t = str(a + b), and for digit strings

    agree(u, t) = #{k ≤ min(|u|, |t|) : u[-k] = t[-k]} / max(|u|, |t|)

(the share of digit places, aligned at the units, that agree; leading zeros are extra places).
Then

    credit(x, y) = agree(y, t)            if y is a non-empty string of the digits 0-9,
    credit(x, y) = ½ · agree(m, t)        else, m = the last run of digits 0-9 in y,
    credit(x, y) = 0                      if y has no digit 0-9,

so credit = 1 exactly when y = t, a right number in a wrong format (``"=47"``, ``"47?"``) earns ½,
and ``reward = REWARD_SCALE · credit`` ∈ [0, REWARD_SCALE]. The scale matters to a Bradley–Terry
oracle, p* = σ(r₁ − r₂): with REWARD_SCALE = 5 the correct answer beats a one-place slip of a
two-digit sum (credit ½) with p* = σ(2.5) ≈ 0.92, and text without digits with σ(5) ≈ 0.99.

The base policy (deliberately imperfect). Stage 1 of its supervised training sees only correct
answers, so the model learns the sums; stage 2 sees the answer mix :class:`AnswerMix`:

* the correct sum, probability 0.40;
* a carry slip, 0.15: s − 10 when the units carry (a mod 10 + b mod 10 ≥ 10), else s + 10;
* a units slip, 0.15: the units digit d replaced by d ± 1 (mod 10), the other places kept;
* an equals prefix, 0.15 (``"=47"``): credit ½;
* a hedge suffix, 0.15 (``"47?"``): credit ½.

The policy then knows the answer (its near-greedy answer is right about 95 % of the time) but
samples it only about 40 % of the time at temperature 1: the two format habits are
problem-independent and a preference signal removes them within a few hundred pairs; the two
arithmetic slips are problem-dependent and go more slowly.
"""

from __future__ import annotations

import json
import os
import random
import re
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

from sail.io import dumps_strict, loads_strict
from sail.models.cache import BUILD_INFO, cache_root, content_key, ensure_built, versions, write_build_info
from sail.models.chat_tokenizer import EOS_TOKEN, PAD_TOKEN, generation_prompt
from sail.models.tiny import TinyQwen3Config, chat_qwen3
from sail.sampling import SamplingConfig
from sail.sft import SFTConfig, encode_sft_batch, num_threads, train_sft
from sail.tasks.chat import build_tokenizer
from sail.tasks.sampling import SEEDED_GENERATE, sample_texts

NAME = "addition"
VERSION = 1
"""Bump when the task, the answer mix or the model recipe changes (it keys the cache)."""

MIN_OPERAND = 10
MAX_OPERAND = 99
REWARD_SCALE = 5.0
MAX_NEW_TOKENS = 8
"""Room for every answer of the data (``"=198"`` and EOS are 5 tokens) and some rambling."""

_PROMPT_RE = re.compile(r"([0-9]+)\s*\+\s*([0-9]+)")
_DIGITS_RE = re.compile(r"[0-9]+")

__all__ = [
    "AnswerMix",
    "BaseModelConfig",
    "build_base_model",
    "build_tokenizer",
    "correct",
    "credit",
    "ensure_base_model",
    "evaluate_policy",
    "is_correct",
    "parse_prompt",
    "read_prompts_jsonl",
    "reward",
    "sample_answer",
    "sample_prompts",
    "write_prompts_jsonl",
]


# --- prompts -------------------------------------------------------------------------------


def make_prompt(a: int, b: int) -> str:
    return f"{a}+{b}"


def parse_prompt(prompt: str) -> tuple[int, int]:
    """(a, b) from the last ``a+b`` in ``prompt`` (a bare user message or a chat-templated text).

    Raises ``ValueError`` when ``prompt`` has no ``a+b``.
    """
    matches = _PROMPT_RE.findall(prompt)
    if not matches:
        raise ValueError(f"not an addition prompt: {prompt!r}")
    a, b = matches[-1]
    return int(a), int(b)


def correct(prompt: str) -> str:
    """The correct response: str(a + b)."""
    a, b = parse_prompt(prompt)
    return str(a + b)


def sample_prompts(n: int, seed: int = 0) -> list[str]:
    """n prompts ``"a+b"``, a and b i.i.d. uniform on {MIN_OPERAND, …, MAX_OPERAND}; a function of (n, seed).

    Draws come from ``random.Random(seed)`` in order, so the first k prompts of a longer list are
    the same as ``sample_prompts(k, seed)``.
    """
    rng = random.Random(seed)
    return [make_prompt(rng.randint(MIN_OPERAND, MAX_OPERAND), rng.randint(MIN_OPERAND, MAX_OPERAND)) for _ in range(n)]


def write_prompts_jsonl(path: str | os.PathLike, prompts: Sequence[str]) -> Path:
    """Write one ``{"prompt": ...}`` JSON object per line; returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as f:
        for p in prompts:
            f.write(json.dumps({"prompt": p}) + "\n")
    return path


def read_prompts_jsonl(path: str | os.PathLike) -> list[str]:
    """The ``prompt`` field of every non-empty line of a JSONL file."""
    with Path(path).open(encoding="utf-8") as f:
        return [json.loads(line)["prompt"] for line in f if line.strip()]


# --- reward --------------------------------------------------------------------------------


def _clean(response: str) -> str:
    for marker in (EOS_TOKEN, PAD_TOKEN):
        response = response.split(marker, 1)[0]
    return response.strip()


def place_agreement(y: str, t: str) -> float:
    """#{k ≤ min(|y|,|t|) : y[-k] = t[-k]} / max(|y|, |t|) for digit strings y, t."""
    agree = sum(1 for u, v in zip(reversed(y), reversed(t)) if u == v)
    return agree / max(len(y), len(t))


def credit(prompt: str, response: str) -> float:
    """Partial credit in [0, 1] of ``response`` to ``prompt`` (module docstring)."""
    y, t = _clean(response), correct(prompt)
    if _DIGITS_RE.fullmatch(y):
        return place_agreement(y, t)
    numbers = _DIGITS_RE.findall(y)
    return 0.5 * place_agreement(numbers[-1], t) if numbers else 0.0


def reward(prompts: list[str], responses: list[str]) -> list[float]:
    """r(x, y) = REWARD_SCALE · credit(x, y) for each pair (a callable oracle's signature)."""
    if len(prompts) != len(responses):
        raise ValueError(f"{len(prompts)} prompts but {len(responses)} responses")
    return [REWARD_SCALE * credit(p, r) for p, r in zip(prompts, responses)]


def is_correct(prompts: list[str], responses: list[str]) -> list[bool]:
    """Whether each response is exactly the sum (credit = 1)."""
    return [_clean(r) == correct(p) for p, r in zip(prompts, responses)]


# --- the base policy's answer distribution -------------------------------------------------


@dataclass(frozen=True)
class AnswerMix:
    """Probabilities of the answer modes in the supervised data (they must sum to 1)."""

    correct: float = 0.40
    carry_slip: float = 0.15
    units_slip: float = 0.15
    equals_prefix: float = 0.15
    hedge_suffix: float = 0.15

    def __post_init__(self):
        probs = list(asdict(self).values())
        if any(p < 0 for p in probs) or abs(sum(probs) - 1) > 1e-9:
            raise ValueError(f"answer mix must be non-negative and sum to 1, got {asdict(self)}")


def sample_answer(a: int, b: int, rng: random.Random, mix: AnswerMix = AnswerMix()) -> str:
    """One answer to ``a+b`` from the mix (module docstring); consumes exactly two draws of ``rng``."""
    s = a + b
    u, v = rng.random(), rng.random()
    modes = asdict(mix)
    for mode, p in modes.items():
        if u < p:
            break
        u -= p
    if mode == "correct":
        return str(s)
    if mode == "carry_slip":
        return str(s - 10 if a % 10 + b % 10 >= 10 else s + 10)
    if mode == "units_slip":
        d = s % 10
        return str(s - d + (d + (1 if v < 0.5 else -1)) % 10)
    if mode == "equals_prefix":
        return f"={s}"
    return f"{s}?"


CLEAN = AnswerMix(1.0, 0.0, 0.0, 0.0, 0.0)


def _sft_batches(tokenizer, mix: AnswerMix, clean_steps: int = 0):
    """``make_batch(rng, n, step)`` of :func:`sail.sft.train_sft`: n chats (generation prompt of
    ``a+b``, an answer of ``mix``, or :data:`CLEAN` in the first ``clean_steps`` steps), encoded."""

    def make_batch(rng: random.Random, n: int, step: int):
        mix_now = CLEAN if step < clean_steps else mix
        prompts, answers = [], []
        for _ in range(n):
            a, b = rng.randint(MIN_OPERAND, MAX_OPERAND), rng.randint(MIN_OPERAND, MAX_OPERAND)
            prompts.append(generation_prompt(make_prompt(a, b)))
            answers.append(sample_answer(a, b, rng, mix_now))
        return encode_sft_batch(tokenizer, prompts, answers)

    return make_batch


# --- the base model ------------------------------------------------------------------------


@dataclass
class BaseModelConfig:
    """Everything that determines the base model's weights besides the seed."""

    model: TinyQwen3Config
    """The network's shape; its initial weights come from the build seed."""
    schedule: SFTConfig
    """The supervised fine-tune: steps, batch size, AdamW and its learning-rate schedule."""
    mix: AnswerMix
    """Probabilities of the answer modes (correct and the four mistakes) after the clean steps."""
    clean_fraction: float = 0.5
    """Share of the steps, at the start, that see only correct answers (stage 1); the rest see
    ``mix`` (stage 2). Trained on the mix from the start, the model does not learn the sums in
    the same budget (measured: 4 % correct instead of 40 %)."""

    @classmethod
    def default(cls) -> "BaseModelConfig":
        schedule = SFTConfig(steps=700, batch_size=64, lr=3e-3, warmup=50, min_lr_ratio=0.05)
        return cls(TinyQwen3Config(), schedule, AnswerMix(), clean_fraction=0.5)

    @property
    def clean_steps(self) -> int:
        return int(self.schedule.steps * self.clean_fraction)

    def to_dict(self) -> dict:
        return {
            "model": asdict(self.model),
            "schedule": asdict(self.schedule),
            "mix": asdict(self.mix),
            "clean_fraction": self.clean_fraction,
        }


def evaluate_policy(
    model,
    tokenizer,
    prompts: Sequence[str],
    max_new_tokens: int = MAX_NEW_TOKENS,
    temperature: float = 1.0,
    batch_size: int = 100,
    seed: int = 0,
    return_responses: bool = False,
) -> dict:
    """Sample one response per prompt with ``generate`` and score it.

    Returns ``mean_reward`` = (1/n) Σ r(x_i, y_i) (:func:`reward`), ``frac_correct`` = the share of
    exact sums, ``mean_credit`` = mean_reward / REWARD_SCALE, ``n`` and (with ``return_responses``)
    the ``responses``. Sampling is pure ancestral at ``temperature`` (no top-k/top-p), ``batch_size``
    prompts per ``generate`` call, in torch's global stream seeded with ``seed``
    (:data:`sail.tasks.sampling.SEEDED_GENERATE`; the caller's generator is untouched).
    """
    sampling = SamplingConfig(max_new_tokens=max_new_tokens, temperature=temperature)
    responses = sample_texts(model, tokenizer, list(prompts), 1, sampling, seed, rows=batch_size, sampler=SEEDED_GENERATE)
    rewards = reward(list(prompts), responses)
    n = len(rewards)
    out = {"mean_reward": sum(rewards) / n, "frac_correct": sum(is_correct(list(prompts), responses)) / n, "n": n}
    out["mean_credit"] = out["mean_reward"] / REWARD_SCALE
    if return_responses:
        out["responses"] = responses
    return out


def build_base_model(
    out_dir: str | os.PathLike,
    seed: int = 0,
    steps: int | None = None,
    batch_size: int | None = None,
    recipe: BaseModelConfig | None = None,
    n_eval: int = 200,
    verbose: bool = False,
) -> dict:
    """Train the tiny Qwen3 base policy on the task's chats and save it to ``out_dir``.

    Writes ``config.json``, ``generation_config.json``, ``model.safetensors`` (``save_pretrained``),
    the tokenizer files (``save_pretrained``) and, last, :data:`~sail.models.cache.BUILD_INFO`
    with the recipe, seed, versions, build time and, when ``n_eval`` > 0, the evaluation of
    :func:`evaluate_policy` on ``sample_prompts(n_eval, seed=20_000 + seed)`` at temperature 1.
    ``steps``/``batch_size`` override the recipe's schedule (tests use a few steps). Returns the
    build information. Same arguments on the same machine and torch build → identical weights.
    """
    recipe = recipe or BaseModelConfig.default()
    if steps is not None or batch_size is not None:
        sched = asdict(recipe.schedule)
        sched.update({k: v for k, v in (("steps", steps), ("batch_size", batch_size)) if v is not None})
        recipe = BaseModelConfig(recipe.model, SFTConfig(**sched), recipe.mix, recipe.clean_fraction)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    log = print if verbose else None

    tokenizer = build_tokenizer()
    model = chat_qwen3(tokenizer, recipe.model, seed)
    losses = train_sft(model, _sft_batches(tokenizer, recipe.mix, recipe.clean_steps), recipe.schedule, seed, log=log)
    train_s = time.perf_counter() - started
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)

    info = {
        "task": f"sail.tasks.{NAME}",
        "version": VERSION,
        "seed": seed,
        "recipe": recipe.to_dict(),
        "parameters": sum(p.numel() for p in model.parameters()),
        "final_loss": sum(losses[-20:]) / len(losses[-20:]),
        "train_seconds": round(train_s, 2),
        "versions": versions(),
    }
    if n_eval > 0:
        with num_threads(recipe.schedule.threads):
            info["eval"] = evaluate_policy(model, tokenizer, sample_prompts(n_eval, seed=20_000 + seed), seed=seed)
        info["eval"].update(temperature=1.0, prompts_seed=20_000 + seed)
    info["build_seconds"] = round(time.perf_counter() - started, 2)
    if log:
        log(dumps_strict({k: info[k] for k in ("parameters", "final_loss", "build_seconds", "eval") if k in info}))
    write_build_info(out_dir, info)
    return info


def base_model_dir_name(seed: int = 0, recipe: BaseModelConfig | None = None) -> str:
    """``addition-v<VERSION>-<first 10 hex of sha256(recipe)>-seed<seed>``: a new recipe, a new entry."""
    recipe = recipe or BaseModelConfig.default()
    return f"{NAME}-v{VERSION}-{content_key(recipe.to_dict())}-seed{seed}"


def ensure_base_model(cache_dir: str | os.PathLike | None = None, seed: int = 0, verbose: bool = False) -> Path:
    """The cached base model directory, built by :func:`build_base_model` on first use.

    Location: ``<root>/tasks/<base_model_dir_name(seed)>`` with root = ``cache_dir``, else
    ``$SAIL_CACHE``, else ``~/.cache/sail``. Building takes about a minute on one CPU core;
    concurrent callers wait on a lock and a half-written directory is never returned (see
    :func:`sail.models.cache.ensure_built`).
    """
    final = cache_root(cache_dir) / "tasks" / base_model_dir_name(seed)
    return ensure_built(final, lambda tmp: build_base_model(tmp, seed=seed, verbose=verbose))


def main(argv: list[str] | None = None) -> int:
    """``python -m sail.tasks.addition [--out DIR] [--seed N] [--steps N]``: build and report.

    Without ``--out`` the cached model is built if needed (:func:`ensure_base_model`) and its
    build information printed.
    """
    import argparse

    parser = argparse.ArgumentParser(prog="python -m sail.tasks.addition", description=main.__doc__)
    parser.add_argument("--out", default=None, help="build into this directory instead of the cache")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--steps", type=int, default=None, help="override the recipe's SFT steps (--out only)")
    parser.add_argument("--cache-dir", default=None)
    args = parser.parse_args(argv)
    if args.out:
        info = build_base_model(args.out, seed=args.seed, steps=args.steps, verbose=True)
    else:
        path = ensure_base_model(args.cache_dir, seed=args.seed, verbose=True)
        info = loads_strict((path / BUILD_INFO).read_text())
        info["path"] = str(path)
    print(dumps_strict(info, indent=2, sort_keys=True))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
