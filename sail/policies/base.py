"""The policy protocol that the one SAIL-RevKL loop trains.

A policy maps prompts to a distribution over responses. The loop needs only:

* ``sample(prompts, n, generator)``: n responses per prompt, drawn from π_θ;
* ``logprob(prompts, responses)``: differentiable log π_θ(y|x) for each response;
* ``ref_logprob(prompts, responses)``: log π_ref(y|x), without a graph;
* ``kl_exact(prompts, responses, direction)``: the exact KL to the reference for each prompt
  (for sequences: summed per-position KL over the vocabulary on the sampled prefixes);
* ``score_pairs(prompts, responses, kl_direction=None, kl_score_correction=False)``: (logprob,
  ref_logprob, kl_exact or None) in one call, so that a policy can share its forward passes between
  them (the loss uses it); ``kl_score_correction`` asks for a KL whose gradient accounts for the
  responses having been sampled from π_θ (sequence policies; a no-op where the KL is exact);
* ``trainable_parameters()`` and ``ball_center()``: the parameters an optimiser updates, and the
  point the theory ball ‖θ − θ_ref‖ ≤ R is centred on (same order and shapes).

``prompts`` and ``responses`` are whatever the policy uses to name them: context indices and
response indices for log-linear policies, token batches for causal LMs. ``responses`` has shape
[len(prompts), n].
"""

from __future__ import annotations

from typing import Protocol, Sequence, runtime_checkable

import torch


@runtime_checkable
class Policy(Protocol):
    def sample(self, prompts, n: int, generator: torch.Generator | None = None): ...

    def logprob(self, prompts, responses) -> torch.Tensor: ...

    def ref_logprob(self, prompts, responses) -> torch.Tensor: ...

    def kl_exact(self, prompts, responses, direction: str) -> torch.Tensor: ...

    def score_pairs(self, prompts, responses, kl_direction: str | None = None, kl_score_correction: bool = False): ...

    def trainable_parameters(self) -> Sequence[torch.nn.Parameter]: ...

    def ball_center(self) -> Sequence[torch.Tensor]: ...
