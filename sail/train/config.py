"""The `sail train` configuration: dataclasses, YAML, and validation that names the key.

Top-level sections: ``model``, ``sampling``, ``objective`` (the shared :class:`~sail.loop.SailConfig`),
``oracle``, ``routes``, ``optimizer`` and ``spectral`` (the inner update, :mod:`sail.optim` and
:mod:`sail.spectral`), ``data`` and ``train``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from sail.loop import SailConfig
from sail.models.lora import LoraSettings
from sail.optim.config import OptimizerConfig
from sail.policies.causal_lm import SamplingConfig
from sail.spectral.config import SpectralConfig

EMBEDDED_MODEL = "sail:em-misaligned"
"""The embedded default policy: the emergent-misaligned organism (:mod:`sail.em.realign`), a tiny
Qwen3 the project trains itself; ``sail:tiny-task`` is the earlier addition task (:mod:`sail.tasks`)."""

DTYPES = ("float32", "bfloat16", "float16")
TRAINABLE = ("lora", "head")
ORACLE_KINDS = ("callable", "reward_model")
MIXED_PRECISION = ("no", "bf16", "fp16")


@dataclass
class ModelConfig:
    name_or_path: str = EMBEDDED_MODEL
    """A hub id (``Qwen/Qwen3-0.6B``), a local directory, or an embedded model: ``sail:em-misaligned``
    (the default: realign the emergent-misaligned organism) or ``sail:tiny-task`` (addition)."""
    dtype: str = "float32"
    """Weights' dtype: ``float32``, ``bfloat16`` or ``float16``."""
    trust_remote_code: bool = False
    """Allow model code from the hub (only when you ask for it)."""
    lora: LoraSettings = field(default_factory=lambda: LoraSettings(rank=8, alpha=16.0))
    """The adapter (all 7 linear projections by default)."""
    trainable: str = "lora"
    """What trains: ``lora`` (the adapter above) or ``head``, a dense delta Δ on the LM head alone
    (logits = (W + Δ)h, every other weight frozen, Δ = 0 at the start). The head parametrisation is
    the one the convergence guarantee covers (log π is concave in Δ; docs/check_llm.md); it is
    V × d parameters, and it samples with ``sampling.engine: hf``."""

    def __post_init__(self):
        if self.dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {DTYPES}, got {self.dtype!r}")
        if self.trainable not in TRAINABLE:
            raise ValueError(f"trainable must be one of {TRAINABLE}, got {self.trainable!r}")


@dataclass
class OracleConfig:
    kind: str = "callable"
    """``callable`` (a Python scorer by dotted path) or ``reward_model`` (a sequence classifier)."""
    path: str = "sail.em.judge:alignment_reward"
    """``package.module:function`` for ``callable``; a hub id or directory for ``reward_model``."""
    label_mode: str = "sample"
    """``sample`` (Bernoulli(σ(r₁ − r₂))), ``soft`` (σ(r₁ − r₂)) or ``argmax`` (ties → ½)."""

    def __post_init__(self):
        if self.kind not in ORACLE_KINDS:
            raise ValueError(f"kind must be one of {ORACLE_KINDS}, got {self.kind!r}")
        if self.label_mode not in ("sample", "soft", "argmax"):
            raise ValueError(f"label_mode must be sample, soft or argmax, got {self.label_mode!r}")


@dataclass
class RoutesConfig:
    """Probabilities of each step's route (they must sum to 1).

    SAIL-PR: online pairs, oracle labels. SAIL-PP: online pairs, self-labels. SAIL-DP: dataset
    pairs, self-labels. DPO: dataset pairs with their chosen/rejected labels. The authors mix an
    online route (probability 0.3) with offline DPO pairs; the default here is all online (PR),
    because the embedded task has no pair file.
    """

    online_oracle: float = 1.0
    online_self: float = 0.0
    dataset_self: float = 0.0
    offline_dpo: float = 0.0

    def probabilities(self) -> list[float]:
        return [self.online_oracle, self.online_self, self.dataset_self, self.offline_dpo]

    def __post_init__(self):
        probs = self.probabilities()
        if any(p < 0 for p in probs):
            raise ValueError(f"route probabilities must be >= 0, got {probs}")
        if abs(sum(probs) - 1.0) > 1e-9:
            raise ValueError(f"online_oracle + online_self + dataset_self + offline_dpo must sum to 1, got {sum(probs)}")


ROUTES = ("online_oracle", "online_self", "dataset_self", "offline_dpo")


@dataclass
class DataConfig:
    prompts: str = ""
    """JSONL of prompts (``prompt`` or ``messages``); empty: the embedded task's prompts."""
    hf_dataset: str = ""
    """A HF dataset name to read prompts from instead (needs a reachable hub)."""
    hf_column: str = "prompt"
    pairs: str = ""
    """JSONL of offline pairs (``prompt``, ``chosen``, ``rejected``) for the dataset routes."""
    eval_prompts: str = ""
    """JSONL of held-out prompts; empty: the embedded task's held-out prompts."""
    n_eval: int = 200
    """Held-out prompts used at each evaluation."""

    def __post_init__(self):
        if self.n_eval < 1:
            raise ValueError(f"n_eval must be >= 1, got {self.n_eval}")


@dataclass
class RunConfig:
    steps: int = 100
    """Optimiser steps."""
    batch_size: int = 16
    """Prompts (one on-policy pair each) per micro-batch."""
    grad_accum: int = 1
    """Micro-batches per optimiser step; the loss is the mean over all pairs of the step."""
    seed: int = 0
    eval_every: int = 20
    """Evaluate on held-out prompts every N steps (and at the start and the end)."""
    save_every: int = 10
    """Write the checkpoint every N steps (atomically)."""
    max_nonfinite: int = 3
    """Stop after this many non-finite losses in a row (each is skipped and logged)."""
    mixed_precision: str = "no"
    """``no``, ``bf16`` or ``fp16`` autocast (GPU)."""
    ema_decay: float = 0.9
    """Decay of the ``ema`` baseline (objective.baseline = ema)."""
    sort_by_length: bool = True
    """Order each step's prompts by length before cutting them into ``grad_accum`` micro-batches."""
    activation_checkpointing: bool = False
    """Recompute decoder-layer activations in the backward (less memory, ~⅓ more compute)."""
    logprob_chunk: int = 0
    """Response positions per chunk of the LM head in the loss (0: ⌊2²⁴/V⌋, 64 MB of float32
    logits per chunk); see :mod:`sail.policies.logprobs`."""
    eval_metrics: str = "sail.em.metrics:em_metrics"
    """Optional ``package.module:function`` ``(prompts, responses) -> {name: number}`` computed on
    the held-out samples of the policy and of the reference at each evaluation (logged as
    ``eval/<name>`` and ``eval/reference_<name>``); the default is the EM judge's rates (set it to
    an empty string for other tasks)."""
    fsdp: bool = False
    """Under ``accelerate launch`` with several processes: shard the frozen base weights across
    them with FSDP2 (``fully_shard`` per decoder layer), keeping the adapter replicated; for base
    models that do not fit on one device. See docs/training.md."""
    tensorboard: bool = False
    wandb: bool = False
    progress: bool = True

    def __post_init__(self):
        for name in ("steps", "batch_size", "grad_accum", "eval_every", "save_every", "max_nonfinite"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.mixed_precision not in MIXED_PRECISION:
            raise ValueError(f"mixed_precision must be one of {MIXED_PRECISION}, got {self.mixed_precision!r}")
        if self.logprob_chunk < 0:
            raise ValueError(f"logprob_chunk must be >= 0, got {self.logprob_chunk}")
        if not 0 <= self.ema_decay < 1:
            raise ValueError(f"ema_decay must be in [0, 1), got {self.ema_decay}")


def _default_objective() -> SailConfig:
    # The authors' public defaults: β = 0.1, KL coefficient 1e-3; exact per-position KL.
    return SailConfig(beta=0.1, gamma=1e-3, baseline="ema")


@dataclass
class TrainConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    sampling: SamplingConfig = field(default_factory=lambda: SamplingConfig(max_new_tokens=40, temperature=1.0))
    objective: SailConfig = field(default_factory=_default_objective)
    oracle: OracleConfig = field(default_factory=OracleConfig)
    routes: RoutesConfig = field(default_factory=RoutesConfig)
    # lr 1e-3: on the embedded task 3e-3 made SAIL collapse within 80 steps (docs/tasks.md)
    optimizer: OptimizerConfig = field(default_factory=lambda: OptimizerConfig(name="adamw", lr=1e-3, weight_decay=0.0))
    spectral: SpectralConfig = field(default_factory=lambda: SpectralConfig(log_every=10))
    data: DataConfig = field(default_factory=DataConfig)
    train: RunConfig = field(default_factory=RunConfig)

    def __post_init__(self):
        lr = self.optimizer.lr
        if lr is not None and not lr > 0:
            raise ValueError(f"optimizer.lr must be > 0, got {lr}")
        needs_pairs = self.routes.dataset_self > 0 or self.routes.offline_dpo > 0
        if self.model.trainable == "head" and self.spectral.penalty_weight > 0:
            raise ValueError("spectral.penalty_weight: the flatness penalty acts on LoRA factors; model.trainable=head has none")
        if self.train.fsdp and self.model.trainable == "head":
            raise ValueError("train.fsdp shards a LoRA model's base; model.trainable=head trains the whole head, use one process per replica")
        if self.train.fsdp and self.sampling.engine == "fast":
            raise ValueError("train.fsdp shards the base weights, which sampling.engine=fast would merge into a full copy; use sampling.engine=hf")
        if needs_pairs and not self.data.pairs:
            raise ValueError("data.pairs is needed by routes dataset_self/offline_dpo (a JSONL of prompt/chosen/rejected)")


def load_config(path: str | None = None, overrides: list[str] | None = None) -> TrainConfig:
    """Defaults ← YAML file ← ``key=value`` overrides, validated."""
    from sail.config import load

    return load(TrainConfig, path, overrides)
