"""An enumerable SAIL-RevKL instance on a tiny Qwen3: prompts, ρ, every response, rewards, β, γ, R.

The world: a randomly initialised float64 Qwen3 with a vocabulary of ``vocab_size`` tokens, the
last of which is its EOS token (``config.eos_token_id``); prompts of content tokens; every response
of at most ``max_new_tokens`` tokens (:mod:`sail.theory.llm.enumeration`); a true reward r*(x, y)
per response (labels are Bradley–Terry on r*). :func:`enumerable_instance` builds it from an
:class:`~sail.theory.llm.config.LLMInstanceConfig`; :meth:`LLMInstance.to_json` is the
``instance.json`` that an independent tool reads back.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sail.theory.instance import KLDirection
from sail.theory.llm.config import CheckerModelConfig, LLMInstanceConfig, ParametrisationName
from sail.theory.llm.enumeration import ResponseSet, content_tokens, enumerate_responses


@dataclass(frozen=True)
class LLMInstance:
    """The enumerable world: prompts, ρ, every response, r* per (prompt, response), and the
    settings of the objective and the ball."""

    prompts: tuple[tuple[int, ...], ...]
    context_probs: np.ndarray  # [X]
    responses: ResponseSet
    rewards: np.ndarray  # [X, N]
    beta: float
    gamma: float
    kl_direction: KLDirection
    radius: float
    parametrisation: ParametrisationName
    model: CheckerModelConfig
    """The model and adapter, its seed resolved."""

    def __post_init__(self):
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


def enumerable_instance(cfg: LLMInstanceConfig) -> LLMInstance:
    """The instance ``cfg`` describes: prompts of random content tokens, ρ ~ Dirichlet(1), r* ~ N(0, 1)."""
    spec = cfg.model_config()
    rng = np.random.default_rng(cfg.seed)
    content = content_tokens(spec.vocab_size, spec.eos_token_id)
    prompts = tuple(tuple(int(t) for t in rng.choice(content, size=cfg.prompt_length)) for _ in range(cfg.n_prompts))
    responses = enumerate_responses(spec.vocab_size, spec.eos_token_id, cfg.max_new_tokens)
    return LLMInstance(
        prompts=prompts,
        context_probs=rng.dirichlet(np.ones(cfg.n_prompts)),
        responses=responses,
        rewards=rng.standard_normal((cfg.n_prompts, len(responses))),
        beta=cfg.beta,
        gamma=cfg.gamma,
        kl_direction=cfg.kl_direction,
        radius=cfg.radius,
        parametrisation=cfg.parametrisation,
        model=spec,
    )


def make_instance(seed: int = 0, parametrisation: str = "lora", **fields) -> LLMInstance:
    """:func:`enumerable_instance` of ``LLMInstanceConfig(seed, parametrisation, **fields)``."""
    return enumerable_instance(LLMInstanceConfig(seed=seed, parametrisation=parametrisation, **fields))
