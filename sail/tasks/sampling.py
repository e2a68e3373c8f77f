"""Answers of a chat policy as text: the one sampler of the addition task's and the EM evaluations.

:func:`sample_texts` renders each question with the chat template (a user message, or a list of
messages that the answer continues), tokenises the prompts with left padding, draws ``n`` answers per
question with a sampler of :mod:`sail.sampling` (pure ancestral sampling at the configured
temperature, no top-k truncation) and decodes each answer up to, not including, its first
``<|im_end|>``.

Randomness. The call runs inside ``fork_rng`` with torch's generator seeded with ``seed``, and the
sampler gets a ``torch.Generator`` seeded with ``seed``; the caller's random state is left as it
was. The EM evaluation samples with the ``fast`` engine, which draws from that generator.
:data:`SEEDED_GENERATE` is ``model.generate`` drawing from torch's seeded global stream, one stream
across all chunks of prompts: the addition task's evaluation figures are defined by that stream (the
``hf`` engine of :mod:`sail.sampling` reseeds every call from the generator, a different stream, so
routing the task through it would change every figure its builds record).
"""

from __future__ import annotations

from typing import Sequence

import torch

from sail.models.chat_tokenizer import chat_prompt
from sail.sampling import HFGenerateSampler, Sampler, SamplingConfig, make_sampler

__all__ = ["SEEDED_GENERATE", "sample_texts"]


SEEDED_GENERATE = HFGenerateSampler(seed_from_generator=False)
"""``model.generate`` drawing from torch's global stream, which :func:`sample_texts` seeds once per
call (module docstring)."""


@torch.no_grad()
def sample_texts(
    model,
    tokenizer,
    questions: Sequence,
    n: int,
    sampling: SamplingConfig,
    seed: int,
    rows: int = 512,
    sampler: Sampler | None = None,
) -> list[str]:
    """``n`` answers per question (answers i·n … i·n + n − 1 belong to question i), as text.

    ``questions``: user messages, or message lists. ``sampler`` defaults to
    ``make_sampler(sampling.engine)``; each of its calls decodes ``rows // n`` questions (at least
    one). The model is sampled in eval mode and left in the mode it had. Reproducible from ``seed``
    (module docstring).
    """
    sampler = sampler or make_sampler(sampling.engine)
    generator = torch.Generator().manual_seed(int(seed))
    eos, pad = tokenizer.eos_token_id, tokenizer.pad_token_id
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    per_call = max(1, rows // n)
    out: list[str] = []
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        for start in range(0, len(questions), per_call):
            texts = [chat_prompt(q) for q in questions[start : start + per_call]]
            enc = tokenizer(texts, add_special_tokens=False, padding=True, padding_side="left", return_tensors="pt")
            ids, mask = enc["input_ids"].to(device), enc["attention_mask"].to(device)
            for row in sampler.generate(model, ids, mask, n, sampling, eos, pad, generator=generator).tolist():
                if eos in row:
                    row = row[: row.index(eos)]
                out.append(tokenizer.decode(row, skip_special_tokens=False))
    model.train(was_training)
    return out
