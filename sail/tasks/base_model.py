"""Tiny chat policies trained by the project itself: SFT of a small ``Qwen3ForCausalLM``, an atomic
on-disk cache, and on-policy evaluation with a programmatic reward.

Supervised training. Each example is a chat (one user message x, one assistant answer y) rendered
with the template of :mod:`sail.tasks.chat`; the loss is the mean next-token cross-entropy over the
answer tokens and the closing ``<|im_end|>`` only:

    L(θ) = −(1 / Σ_i (|y_i| + 1)) Σ_i Σ_{t ≤ |y_i|+1} log p_θ(y_{i,t} | x_i, y_{i,<t}),

so the model learns p_θ(y|x) ≈ q(y|x), the answer distribution the task samples from (which a task
makes deliberately imperfect, so that preference training has something to improve).

Reproducibility. Initial weights come from torch's generator seeded with ``seed`` (inside
``fork_rng``, the caller's generator is untouched), the data from ``random.Random(seed + 1)``, and
training runs on a fixed number of intra-op threads (matrix products can sum in a different order
with a different thread count). Same seed, settings, machine and torch build → the same tensors and
the same ``model.safetensors`` bytes.
"""

from __future__ import annotations

import json
import math
import os
import random
import shutil
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import torch

BUILD_INFO = "sail_build.json"
"""Written last into a built model directory; its presence marks a complete build."""

CACHE_ENV = "SAIL_CACHE"


@dataclass
class TinyQwen3Spec:
    """Shape of the tiny policy (``Qwen3Config`` fields); with the 103-token chat vocabulary the
    defaults give 407,168 parameters (tied input/output embeddings)."""

    hidden_size: int = 128
    num_hidden_layers: int = 2
    num_attention_heads: int = 4
    num_key_value_heads: int = 2
    intermediate_size: int = 384
    max_position_embeddings: int = 128


@dataclass
class SFTSchedule:
    """AdamW with linear warm-up then cosine decay to ``min_lr_ratio · lr``."""

    steps: int = 700
    batch_size: int = 64
    lr: float = 3e-3
    warmup: int = 50
    min_lr_ratio: float = 0.05
    weight_decay: float = 0.0
    betas: tuple[float, float] = (0.9, 0.98)
    grad_clip: float = 1.0
    threads: int = 1
    """Intra-op threads during training, fixed for bit-exact rebuilds. One thread: for a model this
    small a second one gains little, and when the cores are shared (parallel test workers, other
    jobs) OpenMP's spinning barriers made two threads 20× slower here."""

    def lr_at(self, step: int) -> float:
        if step < self.warmup:
            return self.lr * (step + 1) / self.warmup
        progress = (step - self.warmup) / max(1, self.steps - self.warmup)
        return self.lr * (self.min_lr_ratio + (1 - self.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))


@contextmanager
def num_threads(n: int):
    """Run the block with ``torch.set_num_threads(n)``; the previous setting is restored."""
    old = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def make_tiny_qwen3(tokenizer, spec: TinyQwen3Spec, seed: int):
    """A randomly initialised ``Qwen3ForCausalLM`` for ``tokenizer`` (tied embeddings, float32)."""
    from transformers import Qwen3Config, Qwen3ForCausalLM

    config = Qwen3Config(
        vocab_size=len(tokenizer),
        hidden_size=spec.hidden_size,
        intermediate_size=spec.intermediate_size,
        num_hidden_layers=spec.num_hidden_layers,
        num_attention_heads=spec.num_attention_heads,
        num_key_value_heads=spec.num_key_value_heads,
        head_dim=spec.hidden_size // spec.num_attention_heads,
        max_position_embeddings=spec.max_position_embeddings,
        tie_word_embeddings=True,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = Qwen3ForCausalLM(config)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.bos_token_id = tokenizer.bos_token_id
    return model


def encode_sft_batch(tokenizer, prompts: Sequence[str], answers: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded ``input_ids`` [B, T] and ``labels`` [B, T] for chats (prompt x, answer y).

    ``prompts`` are chat-templated generation prompts (ending with the assistant header); each row
    is x + y + ``<|im_end|>``. Labels are −100 on the prompt and padding, so the loss covers the
    answer and its EOS. Right padding needs no attention mask: a causal model never lets a real
    token attend to a later (padded) position.
    """
    p_ids = tokenizer(list(prompts), add_special_tokens=False)["input_ids"]
    a_ids = tokenizer(list(answers), add_special_tokens=False)["input_ids"]
    eos, pad = tokenizer.eos_token_id, tokenizer.pad_token_id
    rows = [p + a + [eos] for p, a in zip(p_ids, a_ids)]
    width = max(map(len, rows))
    ids = torch.full((len(rows), width), pad, dtype=torch.long)
    labels = torch.full((len(rows), width), -100, dtype=torch.long)
    for i, (p, row) in enumerate(zip(p_ids, rows)):
        ids[i, : len(row)] = torch.tensor(row)
        labels[i, len(p) : len(row)] = torch.tensor(row[len(p) :])
    return ids, labels


def train_on_batches(
    model,
    make_batch: Callable[[random.Random, int, int], tuple[torch.Tensor, torch.Tensor]],
    schedule: SFTSchedule,
    seed: int,
    log: Callable[[str], None] | None = None,
    log_every: int = 100,
) -> list[float]:
    """Train ``model`` in place (all parameters) on ``make_batch(rng, batch_size, step)`` →
    (input_ids, labels), minimising the model's own next-token loss.

    Returns the loss of every step. Data come from ``random.Random(seed + 1)``; AdamW with
    ``schedule``'s learning-rate curve, betas, weight decay and gradient clipping, on
    ``schedule.threads`` intra-op threads (bit-exact reruns on one machine).
    """
    rng = random.Random(seed + 1)
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=schedule.lr, betas=schedule.betas, weight_decay=schedule.weight_decay
    )
    losses = []
    model.train()
    with num_threads(schedule.threads):
        for step in range(schedule.steps):
            ids, labels = make_batch(rng, schedule.batch_size, step)
            for group in optimizer.param_groups:
                group["lr"] = schedule.lr_at(step)
            loss = model(input_ids=ids, labels=labels).loss
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if schedule.grad_clip:
                torch.nn.utils.clip_grad_norm_(model.parameters(), schedule.grad_clip)
            optimizer.step()
            losses.append(loss.item())
            if log is not None and (step % log_every == 0 or step == schedule.steps - 1):
                log(f"sft step {step:5d}  loss {loss.item():.4f}  lr {schedule.lr_at(step):.2e}")
    model.eval()
    return losses


def train_sft(
    model,
    tokenizer,
    sample_chats: Callable[[random.Random, int, int], tuple[list[str], list[str]]],
    schedule: SFTSchedule,
    seed: int,
    log: Callable[[str], None] | None = None,
    log_every: int = 100,
) -> list[float]:
    """Train ``model`` in place on batches ``sample_chats(rng, batch_size, step)`` → (prompts, answers)
    (:func:`train_on_batches` with :func:`encode_sft_batch`). Returns the loss of every step."""

    def make_batch(rng, n, step):
        return encode_sft_batch(tokenizer, *sample_chats(rng, n, step))

    return train_on_batches(model, make_batch, schedule, seed, log, log_every)


@torch.no_grad()
def sample_responses(
    model,
    tokenizer,
    prompts: Sequence[str],
    max_new_tokens: int = 16,
    temperature: float = 1.0,
    batch_size: int = 100,
    seed: int = 0,
) -> list[str]:
    """One sampled response per user message in ``prompts`` (pure ancestral sampling).

    Each prompt is wrapped in the chat template; sampling uses ``temperature``, no top-k and no
    top-p truncation (temperature 1 samples from π itself). The response text is decoded up to,
    not including, the first EOS. Reproducible from ``seed`` (the caller's generator is untouched).
    """
    from sail.tasks.chat import generation_prompt

    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    eos, pad = tokenizer.eos_token_id, tokenizer.pad_token_id
    texts: list[str] = []
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        for start in range(0, len(prompts), batch_size):
            chunk = [generation_prompt(p) for p in prompts[start : start + batch_size]]
            enc = tokenizer(chunk, add_special_tokens=False, padding=True, padding_side="left", return_tensors="pt")
            out = model.generate(
                input_ids=enc["input_ids"].to(device),
                attention_mask=enc["attention_mask"].to(device),
                do_sample=True,
                temperature=temperature,
                top_k=0,
                top_p=1.0,
                max_new_tokens=max_new_tokens,
                pad_token_id=pad,
                eos_token_id=eos,
            )
            for row in out[:, enc["input_ids"].shape[1] :].tolist():
                if eos in row:
                    row = row[: row.index(eos)]
                texts.append(tokenizer.decode(row, skip_special_tokens=False))
    model.train(was_training)
    return texts


def evaluate_responses(
    prompts: Sequence[str],
    responses: Sequence[str],
    reward: Callable[[list[str], list[str]], list[float]],
    is_correct: Callable[[list[str], list[str]], list[bool]],
) -> dict:
    """``mean_reward`` = (1/n) Σ r(x_i, y_i), ``frac_correct`` = (1/n) Σ 1[y_i correct], and n."""
    rewards = reward(list(prompts), list(responses))
    correct = is_correct(list(prompts), list(responses))
    n = len(rewards)
    return {"mean_reward": sum(rewards) / n, "frac_correct": sum(correct) / n, "n": n}


def cache_root(cache_dir: str | os.PathLike | None = None) -> Path:
    """``cache_dir``, else ``$SAIL_CACHE``, else ``~/.cache/sail``."""
    if cache_dir is not None:
        return Path(cache_dir).expanduser()
    env = os.environ.get(CACHE_ENV)
    if env:
        return Path(env).expanduser()
    return Path.home() / ".cache" / "sail"


def is_complete(path: Path) -> bool:
    return (path / BUILD_INFO).is_file()


@contextmanager
def _file_lock(path: Path):
    """An exclusive inter-process lock on ``path`` (``filelock``, a dependency of transformers)."""
    from filelock import FileLock

    with FileLock(str(path)):
        yield


def ensure_built(final: Path, build: Callable[[Path], object]) -> Path:
    """Return ``final`` once it holds a complete build, calling ``build(tmp_dir)`` if it does not.

    Concurrency and crash safety: builders serialise on the lock file ``final.lock``; the build is
    written into a fresh temporary directory beside ``final`` and moved into place with one
    ``os.rename`` (atomic on one file system) after ``build`` returns, so a reader never sees a
    half-written ``final``. A directory without :data:`BUILD_INFO` (not made by this function) is
    treated as incomplete and replaced.
    """
    final = Path(final)
    if is_complete(final):
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    with _file_lock(final.with_name(final.name + ".lock")):
        if is_complete(final):  # another process built it while we waited
            return final
        tmp = Path(tempfile.mkdtemp(prefix=final.name + ".tmp-", dir=final.parent))
        try:
            build(tmp)
            if not is_complete(tmp):
                raise RuntimeError(f"build did not write {BUILD_INFO} into {tmp}")
            os.chmod(tmp, 0o755)  # mkdtemp makes it 0700
            if final.exists():
                shutil.rmtree(final)
            os.rename(tmp, final)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
    return final


def write_build_info(out_dir: Path, info: dict) -> None:
    """Write :data:`BUILD_INFO` (last step of a build) via a temporary file and a rename."""
    tmp = out_dir / (BUILD_INFO + ".tmp")
    tmp.write_text(json.dumps(info, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, out_dir / BUILD_INFO)


def versions() -> dict:
    import tokenizers
    import transformers

    return {"torch": torch.__version__, "transformers": transformers.__version__, "tokenizers": tokenizers.__version__}


def timer() -> Callable[[], float]:
    start = time.perf_counter()
    return lambda: time.perf_counter() - start
