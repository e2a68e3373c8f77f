"""The policy protocol that the one SAIL-RevKL loop trains.

A policy maps prompts to a distribution over responses. The loop needs only:

* ``sample(prompts, n, generator)``: n responses per prompt, drawn from π_θ;
* ``logprob(prompts, responses)``: differentiable log π_θ(y|x) for each response;
* ``ref_logprob(prompts, responses)``: log π_ref(y|x), without a graph;
* ``reference()``: a context manager inside which ``sample`` draws from π_ref (the reference
  draws of the ``sequence`` KL estimator);
* ``per_position_kl(prompts, responses, direction, kl_to_go=False)``: Σ_t KL_dir at each prefix of
  each response, summed over the vocabulary and averaged over the n responses: [B]. For a
  one-position policy (log-linear) this is the exact KL; for sequences it is an unbiased estimate
  of the sequence KL when the prefixes are drawn from the KL's first argument. ``kl_to_go`` adds
  the zero-valued score term Σ_t (log p_θ(y_t) − sg(·))·sg(Σ_{s>t} KL_s), which makes the gradient
  unbiased when the responses were drawn from π_θ;
* ``score_pairs(prompts, responses, kl_direction=None, kl_to_go=False)``: (logprob, ref_logprob,
  per_position_kl or None) in one call, so that a policy can share its forward passes between
  them;
* ``trainable_parameters()`` and ``ball_center()``: the parameters an optimiser updates, and the
  point the theory ball ‖θ − θ_ref‖ ≤ R is centred on (same order and shapes).

``prompts`` and ``responses`` are whatever the policy uses to name them: context indices and
response indices for log-linear policies, token batches for causal LMs. ``responses`` has shape
[len(prompts), n].
"""

from __future__ import annotations

from typing import ContextManager, Protocol, Sequence, runtime_checkable

import torch


@runtime_checkable
class Policy(Protocol):
    def sample(self, prompts, n: int, generator: torch.Generator | None = None): ...

    def logprob(self, prompts, responses) -> torch.Tensor: ...

    def ref_logprob(self, prompts, responses) -> torch.Tensor: ...

    def reference(self) -> ContextManager: ...

    def per_position_kl(self, prompts, responses, direction: str, kl_to_go: bool = False) -> torch.Tensor: ...

    def score_pairs(self, prompts, responses, kl_direction: str | None = None, kl_to_go: bool = False): ...

    def trainable_parameters(self) -> Sequence[torch.nn.Parameter]: ...

    def ball_center(self) -> Sequence[torch.Tensor]: ...
