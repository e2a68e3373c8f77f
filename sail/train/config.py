"""The `sail train` configuration: typed sections whose field docstrings are ``sail train --help``.

Top-level sections: ``model``, ``sampling``, ``objective`` (the shared :class:`~sail.loop.SailConfig`),
``oracle``, ``routes``, ``optimizer`` and ``spectral`` (the inner update, :mod:`sail.optim` and
:mod:`sail.spectral`), ``data`` and ``run``.

The defaults are neutral: they name no model, reward or task. A run's model, oracle and prompts come
from the user's YAML or from a recipe (a packaged YAML such as the embedded EM realignment,
:mod:`sail.train.recipes`); :func:`check_complete` says which required key is missing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar, Literal

from sail.config import ConfigError, FieldError, check_choices, load
from sail.loop import SailConfig
from sail.models.lora import LoraAdapterConfig
from sail.optim.config import OptimizerConfig
from sail.sampling.config import SamplingConfig
from sail.spectral.config import SpectralConfig

CONFIG_FORMAT = 2
"""The layout of a saved ``config.yaml`` (:mod:`sail.train.run_dir`); format 1 predates the ``run``
section (it was called ``train``) and the judges' package (:func:`sail.train.run_dir.migrate`)."""

Route = Literal["online_oracle", "online_self", "dataset_self", "offline_dpo"]
ROUTES: tuple[Route, ...] = ("online_oracle", "online_self", "dataset_self", "offline_dpo")


@dataclass
class ModelConfig:
    """The policy: a base causal LM and what of it trains."""

    name_or_path: str = ""
    """A hub id (``Qwen/Qwen3-0.6B``), a local directory, or an embedded model ``sail:<name>``
    (:mod:`sail.models.embedded`; ``sail:em-misaligned`` is the default recipe's). Required."""
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    """Weights' dtype."""
    trust_remote_code: bool = False
    """Allow model code from the hub (only when you ask for it)."""
    lora: LoraAdapterConfig = field(default_factory=lambda: LoraAdapterConfig(rank=8, alpha=16.0))
    """The adapter (all 7 linear projections by default)."""
    trainable: Literal["lora", "head"] = "lora"
    """What trains: ``lora`` (the adapter above) or ``head``, a dense delta Δ on the LM head alone
    (logits = (W + Δ)h, every other weight frozen, Δ = 0 at the start). The head parametrisation is
    the one the convergence guarantee covers (log π is concave in Δ; docs/check_llm.md); it is
    V × d parameters, and it samples with ``sampling.engine: hf``."""

    def __post_init__(self):
        check_choices(self)


@dataclass
class OracleConfig:
    """The preference oracle: a reward on (prompt, response) texts, turned into Bradley–Terry labels."""

    kind: Literal["callable", "reward_model"] = "callable"
    """``callable`` (a Python scorer by dotted path) or ``reward_model`` (a sequence classifier)."""
    path: str = ""
    """``package.module:function`` ``(prompts, responses) -> rewards`` for ``callable``; a hub id or
    directory for ``reward_model``. Required."""
    label_mode: Literal["sample", "soft", "argmax"] = "sample"
    """``sample`` (Bernoulli(σ(r₁ − r₂))), ``soft`` (σ(r₁ − r₂)) or ``argmax`` (ties → ½)."""

    def __post_init__(self):
        check_choices(self)


@dataclass
class RoutesConfig:
    """Probabilities of each step's route (they must sum to 1).

    SAIL-PR: online pairs, oracle labels. SAIL-PP: online pairs, self-labels. SAIL-DP: dataset
    pairs, self-labels. DPO: dataset pairs with their chosen/rejected labels. The authors mix an
    online route (probability 0.3) with offline DPO pairs; the default here is all online (PR),
    which needs no pair file.
    """

    online_oracle: float = 1.0
    """SAIL-PR: two responses sampled from π_θ, labelled by the oracle."""
    online_self: float = 0.0
    """SAIL-PP: two responses sampled from π_θ, labelled by the policy's own implicit reward."""
    dataset_self: float = 0.0
    """SAIL-DP: a pair from ``data.pairs``, labelled by the policy's implicit reward."""
    offline_dpo: float = 0.0
    """DPO: a pair from ``data.pairs`` with its chosen/rejected label."""

    def probabilities(self) -> list[float]:
        return [getattr(self, route) for route in ROUTES]

    def __post_init__(self):
        for route in ROUTES:
            if getattr(self, route) < 0:
                raise FieldError(route, f"must be >= 0, got {getattr(self, route)}")
        total = sum(self.probabilities())
        if abs(total - 1.0) > 1e-9:
            raise FieldError("", f"online_oracle + online_self + dataset_self + offline_dpo must sum to 1, got {total}")


@dataclass
class DataConfig:
    """Prompts and pairs."""

    prompts: str = ""
    """JSONL of prompts (``prompt`` or ``messages``); empty: the embedded model's prompts."""
    hf_dataset: str = ""
    """A HF dataset name to read prompts from instead (needs a reachable hub)."""
    hf_column: str = "prompt"
    """The column of ``hf_dataset`` that holds the prompts."""
    pairs: str = ""
    """JSONL of offline pairs (``prompt``, ``chosen``, ``rejected``) for the dataset routes."""
    eval_prompts: str = ""
    """JSONL of held-out prompts; empty: the embedded model's held-out prompts, else the first
    ``n_eval`` training prompts."""
    n_eval: int = 200
    """Held-out prompts used at each evaluation."""

    def __post_init__(self):
        if self.n_eval < 1:
            raise FieldError("n_eval", f"must be >= 1, got {self.n_eval}")


@dataclass
class RunConfig:
    """The run: steps, batches, seeds, evaluation, checkpoints and logging."""

    steps: int = 100
    """Optimiser steps."""
    batch_size: int = 16
    """Prompts (one on-policy pair each) per micro-batch."""
    grad_accum: int = 1
    """Micro-batches per optimiser step; the loss is the mean over all pairs of the step."""
    seed: int = 0
    """Seeds the adapter, the route and prompt draws, sampling and labels (docs/training.md)."""
    eval_every: int = 20
    """Evaluate on held-out prompts every N steps (and at the start and the end)."""
    save_every: int = 10
    """Write the checkpoint every N steps (atomically)."""
    max_nonfinite: int = 3
    """Stop after this many non-finite losses or gradients in a row (each is skipped and logged)."""
    mixed_precision: Literal["no", "bf16", "fp16"] = "no"
    """Autocast on a GPU: ``no``, ``bf16`` or ``fp16``."""
    ema_decay: float = 0.9
    """Decay of the ``ema`` baseline (objective.baseline = ema)."""
    sort_by_length: bool = True
    """Order each step's prompts by length before cutting them into ``grad_accum`` micro-batches."""
    activation_checkpointing: bool = False
    """Recompute decoder-layer activations in the backward (less memory, ~⅓ more compute)."""
    logprob_chunk: int = 0
    """Response positions per chunk of the LM head in the loss (0: ⌊2²⁴/V⌋, 64 MB of float32
    logits per chunk); see :mod:`sail.policies.logprobs`."""
    eval_metrics: str = ""
    """Optional ``package.module:function`` ``(prompts, responses) -> {name: number}`` computed on
    the held-out samples of the policy and of the reference at each evaluation (logged as
    ``eval/<name>`` and ``eval/reference_<name>``), e.g. a judge's misalignment rates."""
    fsdp: bool = False
    """Under ``accelerate launch`` with several processes: shard the frozen base weights across
    them with FSDP2 (``fully_shard`` per decoder layer), keeping the adapter replicated; for base
    models that do not fit on one device. See docs/training.md."""
    tensorboard: bool = False
    """Also write the metrics to ``tensorboard/`` (needs the ``tensorboard`` package)."""
    wandb: bool = False
    """Also log the metrics to Weights & Biases (needs the ``wandb`` package)."""
    progress: bool = True
    """Show a progress bar with live figures."""

    def __post_init__(self):
        check_choices(self)
        for name in ("steps", "batch_size", "grad_accum", "eval_every", "save_every", "max_nonfinite"):
            if getattr(self, name) < 1:
                raise FieldError(name, f"must be >= 1, got {getattr(self, name)}")
        if self.logprob_chunk < 0:
            raise FieldError("logprob_chunk", f"must be >= 0, got {self.logprob_chunk}")
        if not 0 <= self.ema_decay < 1:
            raise FieldError("ema_decay", f"must be in [0, 1), got {self.ema_decay}")


def _default_objective() -> SailConfig:
    # The authors' public defaults: β = 0.1, KL coefficient 1e-3; the moving-average baseline.
    return SailConfig(beta=0.1, gamma=1e-3, baseline="ema")


@dataclass
class TrainConfig:
    """Everything ``sail train`` reads."""

    model: ModelConfig = field(default_factory=ModelConfig)
    """The policy (base model and adapter)."""
    sampling: SamplingConfig = field(default_factory=lambda: SamplingConfig(max_new_tokens=40, temperature=1.0))
    """How on-policy responses are drawn (40 new tokens unless set: raise it for hub models)."""
    objective: SailConfig = field(default_factory=_default_objective)
    """The SAIL-RevKL objective (:mod:`sail.loop`)."""
    oracle: OracleConfig = field(default_factory=OracleConfig)
    """The preference oracle."""
    routes: RoutesConfig = field(default_factory=RoutesConfig)
    """How each step's pairs are obtained."""
    # lr 1e-3: on the embedded addition task 3e-3 made SAIL collapse within 80 steps (docs/tasks.md)
    optimizer: OptimizerConfig = field(default_factory=lambda: OptimizerConfig(name="adamw", lr=1e-3, weight_decay=0.0))
    """The inner update (:mod:`sail.optim`)."""
    spectral: SpectralConfig = field(default_factory=lambda: SpectralConfig(log_every=10))
    """The adapter's spectral penalty and logging (:mod:`sail.spectral`)."""
    data: DataConfig = field(default_factory=DataConfig)
    """Prompts and pairs."""
    run: RunConfig = field(default_factory=RunConfig)
    """Steps, batches, seeds, evaluation, checkpoints, logging."""

    RENAMED_KEYS: ClassVar[dict[str, str]] = {"train": "run"}
    """Sections renamed since older configs; naming the old one is an error that gives the new."""

    def __post_init__(self):
        lr = self.optimizer.lr
        if lr is not None and not lr > 0:
            raise FieldError("optimizer.lr", f"must be > 0, got {lr}")
        if self.model.trainable == "head" and self.spectral.penalty_weight > 0:
            raise FieldError("spectral.penalty_weight", "the flatness penalty acts on LoRA factors; model.trainable=head has none")
        if self.run.fsdp and self.model.trainable == "head":
            raise FieldError("run.fsdp", "shards a LoRA model's base; model.trainable=head trains the whole head, use one process per replica")
        if self.run.fsdp and self.sampling.engine == "fast":
            raise FieldError("run.fsdp", "shards the base weights, which sampling.engine=fast would merge into a full copy; use sampling.engine=hf")
        if (self.routes.dataset_self > 0 or self.routes.offline_dpo > 0) and not self.data.pairs:
            raise FieldError("data.pairs", "needed by routes dataset_self/offline_dpo (a JSONL of prompt/chosen/rejected)")


def check_complete(cfg: TrainConfig) -> None:
    """Refuse a config that names no model or no oracle (the neutral defaults leave both empty)."""
    if not cfg.model.name_or_path:
        raise ConfigError("model.name_or_path", "required: a hub id (Qwen/Qwen3-0.6B), a local directory or an embedded model sail:<name>")
    if not cfg.oracle.path:
        what = "package.module:function" if cfg.oracle.kind == "callable" else "a reward model's hub id or directory"
        raise ConfigError("oracle.path", f"required: {what}")


def load_config(path: str | None = None, overrides: list[str] | None = None, base: dict | None = None) -> TrainConfig:
    """Neutral defaults ← ``base`` (a recipe) ← the YAML file at ``path`` ← ``key=value`` overrides."""
    return load(TrainConfig, path, overrides, base=base)
