"""An enumerable SAIL-RevKL instance on a tiny Qwen3: prompts, ρ, every response, rewards, β, γ, R.

The world: a randomly initialised float64 Qwen3 with a vocabulary of ``vocab_size`` tokens, the
last of which is its EOS token (``config.eos_token_id``); prompts of content tokens; every response
of at most ``max_new_tokens`` tokens (:mod:`sail.theory.llm.enumeration`); a true reward r*(x, y)
per response (labels are Bradley–Terry on r*). :meth:`LLMInstance.to_json` is the ``instance.json``
that an independent tool reads back.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from sail.objectives import KL_DIRECTIONS
from sail.theory.llm.enumeration import ResponseSet, content_tokens, enumerate_responses

PARAMETRISATIONS = ("lora", "lora_nonzero_init", "head")

DEFAULT_RADIUS = 0.3
DEFAULT_GAMMA = 1.0


@dataclass(frozen=True)
class ModelSpec:
    """The tiny Qwen3 (random init from ``seed``; ``init_std`` is its initializer_range) and the
    adapter: LoRA of ``lora_rank`` with α = ``lora_alpha`` on all 7 linear projections; for
    ``lora_nonzero_init`` B starts with i.i.d. N(0, ``lora_b_init_std``²) entries."""

    vocab_size: int = 5
    hidden_size: int = 8
    layers: int = 1
    heads: int = 2
    kv_heads: int = 1
    init_std: float = 0.5
    lora_rank: int = 1
    lora_alpha: float = 2.0
    lora_b_init_std: float = 0.5
    seed: int = 0

    @property
    def eos_token_id(self) -> int:
        return self.vocab_size - 1


@dataclass(frozen=True)
class LLMInstance:
    prompts: tuple[tuple[int, ...], ...]
    context_probs: np.ndarray  # [X]
    responses: ResponseSet
    rewards: np.ndarray  # [X, N]
    beta: float
    gamma: float
    kl_direction: str
    radius: float
    parametrisation: str
    model: ModelSpec = field(default_factory=ModelSpec)

    def __post_init__(self):
        if self.parametrisation not in PARAMETRISATIONS:
            raise ValueError(f"parametrisation must be one of {PARAMETRISATIONS}, got {self.parametrisation!r}")
        if self.kl_direction not in KL_DIRECTIONS:
            raise ValueError(f"kl_direction must be one of {KL_DIRECTIONS}, got {self.kl_direction!r}")
        if self.rewards.shape != (len(self.prompts), len(self.responses)):
            raise ValueError(f"rewards must be [X, N] = [{len(self.prompts)}, {len(self.responses)}]")

    @property
    def eos_token_id(self) -> int:
        return self.responses.eos_token_id

    @property
    def max_new_tokens(self) -> int:
        return self.responses.max_new_tokens

    def to_json(self) -> dict:
        """The ``instance.json`` object: responses and rewards per prompt, aligned by index."""
        return {
            "prompts": [list(p) for p in self.prompts],
            "context_probs": self.context_probs.tolist(),
            "responses": [[list(y) for y in self.responses.responses] for _ in self.prompts],
            "rewards": self.rewards.tolist(),
            "eos_token_id": self.eos_token_id,
            "max_new_tokens": self.max_new_tokens,
            "beta": self.beta,
            "gamma": self.gamma,
            "kl_direction": self.kl_direction,
            "radius": self.radius,
            "parametrisation": self.parametrisation,
        }


def make_instance(
    seed: int = 0,
    parametrisation: str = "lora",
    gamma: float = DEFAULT_GAMMA,
    radius: float = DEFAULT_RADIUS,
    kl_direction: str = "ref_to_policy",
    beta: float = 1.0,
    n_prompts: int = 2,
    prompt_length: int = 3,
    max_new_tokens: int = 3,
    model: ModelSpec | None = None,
) -> LLMInstance:
    """The built-in instance: prompts of random content tokens, ρ ~ Dirichlet(1), r* ~ N(0, 1)."""
    spec = model or ModelSpec(seed=seed)
    rng = np.random.default_rng(seed)
    content = content_tokens(spec.vocab_size, spec.eos_token_id)
    prompts = tuple(tuple(int(t) for t in rng.choice(content, size=prompt_length)) for _ in range(n_prompts))
    responses = enumerate_responses(spec.vocab_size, spec.eos_token_id, max_new_tokens)
    return LLMInstance(
        prompts=prompts,
        context_probs=rng.dirichlet(np.ones(n_prompts)),
        responses=responses,
        rewards=rng.standard_normal((n_prompts, len(responses))),
        beta=beta,
        gamma=gamma,
        kl_direction=kl_direction,
        radius=radius,
        parametrisation=parametrisation,
        model=spec,
    )
