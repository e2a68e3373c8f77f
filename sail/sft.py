"""Supervised fine-tuning of a causal LM on chats: the encoders and the one training loop.

Every supervised fine-tune of the project runs :func:`train_supervised`: the addition task's base
policy and the EM organism's two stages (full-parameter AdamW with the warm-up/cosine schedule of
:class:`SFTConfig`, through :func:`train_sft`), and the LoRA fine-tunes of the EM protocol (a
configurable optimiser, a spectral penalty, evaluations at checkpoints: :mod:`sail.em.finetune`).

Encoding. A chat (a list of ``{"role", "content"}`` messages) is rendered with the template of
:mod:`sail.models.chat_tokenizer` (Qwen3's, no thinking block)::

    <|im_start|>{role}\\n{content}<|im_end|>\\n        for each message

and tokenised message by message, part by part: the header ``<|im_start|>{role}\\n``, the content,
``<|im_end|>`` and the trailing ``\\n`` (:func:`encode_chat`). The labels are the token ids on the
content and the ``<|im_end|>`` of every **assistant** message and −100 everywhere else (headers,
user and system messages, the newline after each ``<|im_end|>``, padding). An assistant message with
``"train": False`` is context only (no labels), e.g. the earlier turns of a conversation whose last
answer alone is the target. With a tokenizer whose pre-tokenizer cuts at ``\\n`` and at special
tokens the parts tokenise exactly as the whole rendered text does, which ``check=True`` verifies.
:func:`encode_sft_batch` encodes (generation prompt, answer) pairs: the prompt, the answer and
``<|im_end|>``, labels on the answer and its ``<|im_end|>`` (a single-turn chat's labels, without the
trailing newline). Rows are right-padded with ``<|endoftext|>``; no attention mask is needed (a
causal model never lets a real token attend to a later, padded position).

Loss. The model's own next-token loss: the mean cross-entropy over all labelled tokens of all rows,

    L(θ) = −(1 / Σ_i Σ_{a ∈ asst(i)} (|y_a| + 1)) Σ_i Σ_{a ∈ asst(i)} Σ_{t ≤ |y_a|+1} log p_θ(y_{a,t} | everything before),

so every assistant turn of a multi-turn conversation is a training target, each conditioned on the
whole conversation before it.

One step of :func:`train_supervised` (in this order): set the learning rate of the step (when there
is a schedule), forward, add the extra loss term (when there is one: the spectral penalty), zero the
gradients, backward, clip the global gradient norm of the trained parameters, optimiser step. The
recorded loss is the cross-entropy alone; a non-finite one stops training with
``FloatingPointError``.

Reproducibility. :func:`train_sft` draws its data from ``random.Random(seed + 1)`` and runs on
``config.threads`` intra-op threads (matrix products can sum in a different order with a different
thread count). Same seed, settings, machine and torch build → the same tensors.
"""

from __future__ import annotations

import math
import random
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable, NamedTuple, Sequence

import torch

Chat = Sequence[dict]
Batch = tuple[torch.Tensor, torch.Tensor]
"""``input_ids`` [B, T] and ``labels`` [B, T] (−100 where no loss is taken)."""

__all__ = [
    "SFTConfig",
    "SFTHistory",
    "encode_chat",
    "encode_chat_batch",
    "encode_sft_batch",
    "num_threads",
    "train_chats",
    "train_sft",
    "train_supervised",
]


@dataclass
class SFTConfig:
    """Full-parameter AdamW with linear warm-up then cosine decay to ``min_lr_ratio · lr``."""

    steps: int = 700
    """Optimiser steps."""
    batch_size: int = 64
    """Rows (examples or chats) per step."""
    lr: float = 3e-3
    """Peak learning rate, reached at the end of the warm-up."""
    warmup: int = 50
    """Steps of linear warm-up from lr/warmup to lr."""
    min_lr_ratio: float = 0.05
    """Floor of the cosine decay, as a fraction of ``lr``: the rate decays towards ``min_lr_ratio · lr``
    at the end of the run."""
    weight_decay: float = 0.0
    """AdamW's decoupled weight decay."""
    betas: tuple[float, float] = (0.9, 0.98)
    """AdamW's (β₁, β₂)."""
    grad_clip: float = 1.0
    """Clip the global gradient norm to this value (0 = off)."""
    threads: int = 1
    """Intra-op threads during training, fixed for bit-exact rebuilds. One thread: for a model this
    small a second one gains little, and when the cores are shared (parallel test workers, other
    jobs) OpenMP's spinning barriers made two threads 20× slower here."""

    def lr_at(self, step: int) -> float:
        """The learning rate of ``step`` (0-based): lr·(step + 1)/warmup during the warm-up, then
        lr·(r + (1 − r)·½(1 + cos πp)) with r = ``min_lr_ratio`` and p the share of the decay done."""
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


# --- encoders --------------------------------------------------------------------------------


def _right_padded(rows: Sequence[tuple[list[int], list[int]]], pad: int) -> Batch:
    """(ids, labels) rows → right-padded ``input_ids`` (pad) and ``labels`` (−100) tensors."""
    width = max(len(ids) for ids, _ in rows)
    ids_t = torch.full((len(rows), width), pad, dtype=torch.long)
    labels_t = torch.full((len(rows), width), -100, dtype=torch.long)
    for i, (ids, labels) in enumerate(rows):
        ids_t[i, : len(ids)] = torch.tensor(ids, dtype=torch.long)
        labels_t[i, : len(labels)] = torch.tensor(labels, dtype=torch.long)
    return ids_t, labels_t


def encode_sft_batch(tokenizer, prompts: Sequence[str], answers: Sequence[str]) -> Batch:
    """Right-padded ``input_ids`` [B, T] and ``labels`` [B, T] for (prompt x, answer y) pairs.

    ``prompts`` are chat-templated generation prompts (ending with the assistant header); each row
    is x + y + ``<|im_end|>``. Labels are −100 on the prompt and padding, so the loss covers the
    answer and its EOS.
    """
    p_ids = tokenizer(list(prompts), add_special_tokens=False)["input_ids"]
    a_ids = tokenizer(list(answers), add_special_tokens=False)["input_ids"]
    eos = tokenizer.eos_token_id
    rows = [(p + a + [eos], [-100] * len(p) + a + [eos]) for p, a in zip(p_ids, a_ids)]
    return _right_padded(rows, tokenizer.pad_token_id)


def _ids(tokenizer, text: str) -> list[int]:
    return tokenizer(text, add_special_tokens=False)["input_ids"] if text else []


def encode_chat(tokenizer, messages: Chat, check: bool = False) -> tuple[list[int], list[int]]:
    """(ids, labels) of one chat (module docstring): labels = ids on every assistant message's
    content and its ``<|im_end|>``, −100 elsewhere. With ``check``, raise ``ValueError`` unless the
    ids equal the tokenisation of the whole rendered chat."""
    bos, eos = tokenizer.bos_token, tokenizer.eos_token
    eos_id = tokenizer.eos_token_id
    newline = _ids(tokenizer, "\n")
    ids: list[int] = []
    labels: list[int] = []
    for m in messages:
        header = _ids(tokenizer, f"{bos}{m['role']}\n")
        content = _ids(tokenizer, m["content"])
        ids += header + content + [eos_id] + newline
        if m["role"] == "assistant" and m.get("train", True):
            labels += [-100] * len(header) + content + [eos_id] + [-100] * len(newline)
        else:
            labels += [-100] * (len(header) + len(content) + 1 + len(newline))
    if check:
        text = "".join(f"{bos}{m['role']}\n{m['content']}{eos}\n" for m in messages)
        whole = _ids(tokenizer, text)
        if whole != ids:
            raise ValueError("part-wise tokenisation differs from the whole chat's; this tokenizer merges across parts")
    return ids, labels


def encode_chat_batch(tokenizer, chats: Sequence[Chat], check: bool = False) -> Batch:
    """Right-padded ``input_ids`` [B, T] and ``labels`` [B, T] of chats (:func:`encode_chat`)."""
    if not chats:
        raise ValueError("encode_chat_batch got no chats")
    return _right_padded([encode_chat(tokenizer, c, check) for c in chats], tokenizer.pad_token_id)


# --- the loop --------------------------------------------------------------------------------


class SFTHistory(NamedTuple):
    """What :func:`train_supervised` recorded, one entry per step."""

    loss: list[float]
    """The cross-entropy (without the extra term)."""
    penalty: list[float]
    """The extra loss term; empty when there was none."""


def train_supervised(
    model,
    params: Sequence[torch.nn.Parameter],
    optimizer: torch.optim.Optimizer,
    next_batch: Callable[[int], Batch],
    steps: int,
    grad_clip: float | None = None,
    lr_at: Callable[[int], float] | None = None,
    extra_loss: Callable[[object], torch.Tensor | None] | None = None,
    after_step: Callable[[int, SFTHistory], None] | None = None,
) -> SFTHistory:
    """Train ``model`` in place for ``steps`` steps on ``next_batch(step)`` → (input_ids, labels).

    ``optimizer`` updates ``params`` (the trained parameters, whose global gradient norm is
    clipped to ``grad_clip`` when it is set); ``lr_at(step)`` is written into every parameter group
    before the step's forward; ``extra_loss(model)`` (a tensor, or None for no term) is added to the
    cross-entropy; ``after_step(step, history)`` runs after each update (logging, evaluations).
    Steps count from 0. The model is in training mode during the loop and in eval mode after it.
    Raises ``FloatingPointError`` when a step's cross-entropy is not finite.
    """
    history = SFTHistory([], [])
    model.train()
    for step in range(steps):
        ids, labels = next_batch(step)
        if lr_at is not None:
            for group in optimizer.param_groups:
                group["lr"] = lr_at(step)
        ce = model(input_ids=ids, labels=labels).loss
        loss = ce
        term = extra_loss(model) if extra_loss is not None else None
        if term is not None:
            loss = loss + term
            history.penalty.append(float(term.detach()))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if grad_clip:
            torch.nn.utils.clip_grad_norm_(params, grad_clip)
        optimizer.step()
        history.loss.append(float(ce.detach()))
        if not math.isfinite(history.loss[-1]):
            raise FloatingPointError(f"training loss is {history.loss[-1]} at step {step + 1} of {steps}")
        if after_step is not None:
            after_step(step, history)
    model.eval()
    return history


def train_sft(
    model,
    make_batch: Callable[[random.Random, int, int], Batch],
    config: SFTConfig,
    seed: int,
    log: Callable[[str], None] | None = None,
    log_every: int = 100,
) -> list[float]:
    """Train every parameter of ``model`` on ``make_batch(rng, batch_size, step)`` → (input_ids,
    labels) with AdamW and the schedule of ``config`` (:func:`train_supervised`); ``rng`` is
    ``random.Random(seed + 1)``. Returns the loss of every step."""
    rng = random.Random(seed + 1)
    params = list(model.parameters())
    optimizer = torch.optim.AdamW(params, lr=config.lr, betas=config.betas, weight_decay=config.weight_decay)

    def report(step: int, history: SFTHistory) -> None:
        if step % log_every == 0 or step == config.steps - 1:
            log(f"sft step {step:5d}  loss {history.loss[-1]:.4f}  lr {config.lr_at(step):.2e}")

    with num_threads(config.threads):
        history = train_supervised(
            model, params, optimizer, lambda step: make_batch(rng, config.batch_size, step), config.steps,
            config.grad_clip, config.lr_at, after_step=report if log is not None else None,
        )
    return history.loss


def train_chats(
    model,
    tokenizer,
    sample_chats: Callable[[random.Random, int, int], list[Chat]],
    config: SFTConfig,
    seed: int,
    log: Callable[[str], None] | None = None,
    log_every: int = 100,
) -> list[float]:
    """:func:`train_sft` on batches of chats ``sample_chats(rng, batch_size, step)`` (loss on every
    assistant turn, :func:`encode_chat_batch`). Returns the loss of every step."""

    def make_batch(rng, n, step):
        return encode_chat_batch(tokenizer, sample_chats(rng, n, step))

    return train_sft(model, make_batch, config, seed, log, log_every)

