"""The configs of `sail check llm` (docs/check_llm.md): the tiny Qwen3 and its adapter, the
enumerable instance on it, and how hard the checker's searches work.

They are plain dataclasses for :func:`sail.config.build`, kept free of torch so that the command
line can read its defaults without loading the checker; ``__post_init__`` range checks raise
:class:`sail.config.FieldError` on the field.
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field
from typing import Literal

from sail.theory.instance import KLDirection, require, require_moderate

ParametrisationName = Literal["lora", "lora_nonzero_init", "head"]
PARAMETRISATIONS: tuple[str, ...] = typing.get_args(ParametrisationName)


def _counts_at_least(cfg, low: int, *names: str) -> None:
    for name in names:
        require(cfg, name, lambda v: v >= low, f"an integer >= {low}")


@dataclass(frozen=True)
class CheckerModelConfig:
    """The tiny float64 Qwen3 (random init from ``seed``) and its adapter: LoRA on all 7 linear
    projections."""

    vocab_size: int = 5
    """Vocabulary size V; the last id is the EOS token."""
    hidden_size: int = 8
    """Model width d."""
    layers: int = 1
    """Decoder layers."""
    heads: int = 2
    """Attention heads."""
    kv_heads: int = 1
    """Key-value heads."""
    init_std: float = 0.5
    """Standard deviation of the random initialisation (``initializer_range``)."""
    lora_rank: int = 1
    """LoRA rank r."""
    lora_alpha: float = 2.0
    """LoRA α (scaling α/r)."""
    lora_b_init_std: float = 0.5
    """For ``lora_nonzero_init``: B at θ₀ has i.i.d. N(0, σ²) entries with this σ."""
    seed: int | None = None
    """Seed of the random initialisation (and of A, and of B for ``lora_nonzero_init``); none: the
    instance's seed."""

    def __post_init__(self):
        _counts_at_least(self, 2, "vocab_size")
        _counts_at_least(self, 1, "hidden_size", "layers", "heads", "kv_heads", "lora_rank")

    @property
    def eos_token_id(self) -> int:
        return self.vocab_size - 1


@dataclass(frozen=True)
class LLMInstanceConfig:
    """The built-in enumerable instance: prompts of random content tokens, ρ ~ Dirichlet(1) and
    r* ~ N(0, 1) per response, all drawn from ``seed``."""

    seed: int = 0
    """Seed of the prompts, ρ and r*, and of the model unless ``model.seed`` is set."""
    parametrisation: ParametrisationName = "lora"
    """θ: ``lora`` (B = 0 at θ₀), ``lora_nonzero_init`` (B ≠ 0 at θ₀) or ``head`` (a dense delta on
    the output head)."""
    gamma: float = 1.0
    """γ ≥ 0, the weight of the KL term."""
    radius: float = 0.3
    """R > 0, the radius of the ball around θ₀ on which the theory is checked."""
    kl_direction: KLDirection = "ref_to_policy"
    """``ref_to_policy`` is KL(π_ref‖π_θ), ``policy_to_ref`` is KL(π_θ‖π_ref)."""
    beta: float = 1.0
    """β > 0, the scale of the implicit reward."""
    n_prompts: int = 2
    """Prompts X."""
    prompt_length: int = 3
    """Tokens per prompt."""
    max_new_tokens: int = 3
    """Longest response; every response of 1 to this many tokens is enumerated."""
    model: CheckerModelConfig = field(default_factory=CheckerModelConfig)
    """The model and its adapter."""

    def __post_init__(self):
        require(self, "gamma", lambda v: v >= 0, "a finite number >= 0")
        require(self, "radius", lambda v: v > 0, "a finite number > 0")
        require(self, "beta", lambda v: v > 0, "a finite number > 0")
        require_moderate(self, "gamma", "radius", "beta")
        _counts_at_least(self, 0, "seed")
        _counts_at_least(self, 1, "n_prompts", "prompt_length", "max_new_tokens")

    def model_config(self) -> CheckerModelConfig:
        """``model`` with its seed resolved (this instance's seed when it has none)."""
        return self.model if self.model.seed is not None else dataclasses.replace(self.model, seed=self.seed)


@dataclass(frozen=True)
class CheckConfig:
    """How hard the searches work (the defaults keep the LoRA run under two minutes on 2 CPU cores)."""

    samples: int = 24
    """Random ball points with exact Hessians (plus θ₀, the probe point and the ascent path)."""
    starts: int = 4
    """Starts of the global maximisation (θ₀ and random ball points)."""
    ascent_iterations: int = 300
    """Accelerated projected ascent iterations per start."""
    polish_iterations: int = 20
    """Trust-region Newton iterations for each of the two best starts."""
    rate_steps: int = 150
    """Steps of exact projected ascent with η = 1/L̂ whose gaps give the rate (at least 3)."""
    path_points: int = 8
    """Points of that path where exact Hessians join the samples."""
    refine_iterations: int = 10
    """Local-search iterations refining L̂ and γ_c."""
    loop_steps: int = 40
    """Steps of the training loop whose iterates give the stochastic path's PL ratio (0: skip)."""
    estimators: bool = True
    """Compute the estimator table."""

    def __post_init__(self):
        _counts_at_least(self, 1, "samples", "starts", "ascent_iterations")
        _counts_at_least(self, 3, "rate_steps")
        _counts_at_least(self, 0, "polish_iterations", "path_points", "refine_iterations", "loop_steps")
