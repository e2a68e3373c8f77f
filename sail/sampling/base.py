"""The sampler interface: prompts in, raw response tokens out.

A sampler draws ``n`` continuations per prompt from the policy's current distribution π_θ:

    generate(model, input_ids [B, P] left-padded, attention_mask [B, P], n, sampling, eos, pad,
             generator, greedy=False) → tokens [B·n, T] (rows i·n … i·n + n − 1 belong to prompt i)

Tokens after a row's first EOS are ``pad``; T ≤ ``max_new_tokens`` (a sampler may stop once every
row has ended). With a ``generator``, the draw is a deterministic function of its state. ``greedy``
takes the argmax at every step (for equivalence checks and greedy evaluation). A sampler that
caches anything derived from the weights must notice when they change (see
:class:`~sail.sampling.fast.FastSampler`).
"""

from __future__ import annotations

from typing import Protocol

import torch

from sail.sampling.config import SamplingConfig


class Sampler(Protocol):
    def generate(
        self,
        model,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        n: int,
        sampling: SamplingConfig,
        eos_token_id: int | None,
        pad_token_id: int,
        generator: torch.Generator | None = None,
        greedy: bool = False,
    ) -> torch.Tensor: ...


def seed_from(generator: torch.Generator | None) -> int | None:
    """A 62-bit seed drawn from ``generator`` (None without one): one draw per sampling call, so the
    caller's stream advances the same way whichever engine samples."""
    if generator is None:
        return None
    return int(torch.randint(0, 2**62, (1,), generator=generator))
