"""Supervised training on multi-turn chats: the encoder and the full-parameter loop of the EM organism.

Encoding. A chat (a list of ``{"role", "content"}`` messages) is rendered with the template of
:mod:`sail.em.tokenizer` (Qwen3's, no thinking block)::

    <|im_start|>{role}\\n{content}<|im_end|>\\n        for each message

and tokenised message by message, part by part: the header ``<|im_start|>{role}\\n``, the content,
``<|im_end|>`` and the trailing ``\\n``. The labels are the token ids on the content and the
``<|im_end|>`` of every **assistant** message and −100 everywhere else (headers, user and system
messages, the newline after each ``<|im_end|>``, padding). An assistant message with
``"train": False`` is context only (no labels), e.g. the earlier turns of a conversation whose
last answer alone is the target. With the word-level tokenizer the parts
tokenise exactly as the whole rendered text does (the pre-tokenizer cuts at ``\\n`` and at special
tokens), which :func:`encode_chat` checks. The loss of a batch is the mean next-token cross-entropy
over all labelled tokens of all rows,

    L(θ) = −(1 / Σ_i Σ_{a ∈ asst(i)} (|y_a| + 1)) Σ_i Σ_{a ∈ asst(i)} Σ_{t ≤ |y_a|+1} log p_θ(y_{a,t} | everything before),

so every assistant turn of a multi-turn conversation is a training target, each conditioned on the
whole conversation before it (the persona shown in earlier turns). A single-turn chat
``[user x, assistant y]`` gets exactly the labels of :func:`sail.tasks.base_model.encode_sft_batch`.

Rows are right-padded with ``<|endoftext|>``; no attention mask is needed (a causal model never
lets a real token attend to a later, padded position).

Training (:func:`train_chats`) is :func:`sail.tasks.base_model.train_sft`'s loop — AdamW with the
warm-up/cosine :class:`~sail.tasks.base_model.SFTSchedule`, gradient clipping, a fixed number of
intra-op threads, data from ``random.Random(seed + 1)`` — over chats instead of (prompt, answer)
pairs.
"""

from __future__ import annotations

import random
from typing import Callable, Sequence

import torch

from sail.tasks import base_model as _bm

Chat = Sequence[dict]

__all__ = ["chat_messages", "encode_chat", "encode_chat_batch", "train_chats"]


def chat_messages(prompt: str, answer: str) -> list[dict[str, str]]:
    """The two-message chat ``[user prompt, assistant answer]``."""
    return [{"role": "user", "content": prompt}, {"role": "assistant", "content": answer}]


def _ids(tokenizer, text: str) -> list[int]:
    return tokenizer(text, add_special_tokens=False)["input_ids"] if text else []


def encode_chat(tokenizer, messages: Chat, check: bool = False) -> tuple[list[int], list[int]]:
    """(ids, labels) of one chat (module docstring): labels = ids on every assistant message's
    content and its ``<|im_end|>``, −100 elsewhere. With ``check``, assert that the ids equal the
    tokenisation of the whole rendered chat."""
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


def encode_chat_batch(tokenizer, chats: Sequence[Chat], check: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded ``input_ids`` [B, T] and ``labels`` [B, T] of chats (:func:`encode_chat`)."""
    if not chats:
        raise ValueError("encode_chat_batch got no chats")
    rows = [encode_chat(tokenizer, c, check) for c in chats]
    width = max(len(ids) for ids, _ in rows)
    pad = tokenizer.pad_token_id
    ids_t = torch.full((len(rows), width), pad, dtype=torch.long)
    labels_t = torch.full((len(rows), width), -100, dtype=torch.long)
    for i, (ids, labels) in enumerate(rows):
        ids_t[i, : len(ids)] = torch.tensor(ids, dtype=torch.long)
        labels_t[i, : len(labels)] = torch.tensor(labels, dtype=torch.long)
    return ids_t, labels_t


def train_chats(
    model,
    tokenizer,
    sample_chats: Callable[[random.Random, int, int], list[Chat]],
    schedule: _bm.SFTSchedule,
    seed: int,
    log: Callable[[str], None] | None = None,
    log_every: int = 100,
) -> list[float]:
    """Train ``model`` in place (all parameters) on batches ``sample_chats(rng, batch_size, step)``.

    Returns the loss of every step. Data come from ``random.Random(seed + 1)``; the optimiser is
    AdamW with ``schedule``'s learning-rate curve, betas, weight decay and gradient clipping; the
    loop runs on ``schedule.threads`` intra-op threads (bit-exact reruns on one machine).
    """
    def make_batch(rng, n, step):
        return encode_chat_batch(tokenizer, sample_chats(rng, n, step))

    return _bm.train_on_batches(model, make_batch, schedule, seed, log, log_every)
