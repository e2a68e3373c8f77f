"""The default sampler: Hugging Face ``generate`` on the adapted model (LoRA applied on the fly)."""

from __future__ import annotations

import torch

from sail.sampling.base import seed_from
from sail.sampling.config import SamplingConfig


class HFGenerateSampler:
    """``model.generate(do_sample=True, temperature, top_p, top_k=0)``, seeded from the caller's
    generator inside ``fork_rng`` (torch's global generator is left as it was).

    With ``seed_from_generator=False`` it ignores ``generator`` and draws from torch's global stream
    as the caller has seeded it: one stream across several calls (what the addition task's recorded
    evaluations were made with, :mod:`sail.tasks.sampling`)."""

    def __init__(self, seed_from_generator: bool = True):
        self.seed_from_generator = seed_from_generator

    @torch.no_grad()
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
    ) -> torch.Tensor:
        devices = [input_ids.device] if input_ids.device.type == "cuda" else []
        if not self.seed_from_generator:
            return self._generate(model, input_ids, attention_mask, n, sampling, eos_token_id, pad_token_id, greedy)
        seed = seed_from(generator)
        with torch.random.fork_rng(devices=devices):
            if seed is not None:
                torch.manual_seed(seed)
            return self._generate(model, input_ids, attention_mask, n, sampling, eos_token_id, pad_token_id, greedy)

    @staticmethod
    def _generate(model, input_ids, attention_mask, n, sampling, eos_token_id, pad_token_id, greedy):
        if greedy:  # generate refuses num_return_sequences > 1 without sampling: expand the rows here
            input_ids, attention_mask = input_ids.repeat_interleave(n, 0), attention_mask.repeat_interleave(n, 0)
            options = dict(do_sample=False, num_return_sequences=1)
        else:
            options = dict(do_sample=True, temperature=sampling.temperature, top_p=sampling.top_p, top_k=0, num_return_sequences=n)
        out = model.generate(
            input_ids=input_ids,
            attention_mask=attention_mask,
            max_new_tokens=sampling.max_new_tokens,
            pad_token_id=pad_token_id,
            eos_token_id=eos_token_id if sampling.stop_at_eos else None,
            **options,
        )
        return out[:, input_ids.shape[1] :]

