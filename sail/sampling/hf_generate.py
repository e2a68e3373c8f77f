"""The default sampler: Hugging Face ``generate`` on the adapted model (LoRA applied on the fly)."""

from __future__ import annotations

import torch

from sail.sampling.base import register_sampler, seed_from
from sail.sampling.config import SamplingConfig


class HFGenerateSampler:
    """``model.generate(do_sample=True, temperature, top_p, top_k=0)``, seeded from the caller's
    generator inside ``fork_rng`` (torch's global generator is left as it was)."""

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
        seed = seed_from(generator)
        with torch.random.fork_rng(devices=devices):
            if seed is not None:
                torch.manual_seed(seed)
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


register_sampler("hf", HFGenerateSampler)
