"""The `sail train` configuration: typed sections whose field docstrings are ``sail train --help``.

Top-level sections: ``model``, ``sampling``, ``objective`` (the shared :class:`~sail.loop.SailConfig`),
``oracle``, ``routes``, ``optimizer`` and ``spectral`` (the inner update, :mod:`sail.optim` and
:mod:`sail.spectral`), ``data`` and ``run``.

The defaults are neutral: they name no model, reward or task. A run's model, oracle and prompts come
from the user's YAML or from a recipe (a packaged YAML such as the embedded EM realignment,
:mod:`sail.train.recipes`); :func:`check_complete` says which required key is missing.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import ClassVar, Literal

from sail.config import ConfigError, FieldError, check_choices, load
from sail.loop import SailConfig
from sail.models.lora import LoraAdapterConfig
from sail.optim.config import OptimizerConfig
from sail.optim.schedule import ScheduleConfig
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
    init_adapter: str = ""
    """Start from these weights instead of a fresh adapter: a PEFT LoRA adapter directory (an SFT
    adapter, a run's ``adapter/``, an export) or a run's ``checkpoint-<step>/``; its own
    ``adapter_config.json`` sets the rank, α and target modules (``lora`` is not used). With
    ``trainable: head``: a directory holding ``head_delta.safetensors``. Empty: a fresh adapter."""
    reference: Literal["base", "start"] = "base"
    """π_ref of the KL term and of the evaluation: ``base``, the base model (adapter switched off),
    or ``start``, the starting policy (a frozen copy of ``init_adapter``'s weights). Without
    ``init_adapter`` the two are the same model."""

    def __post_init__(self):
        check_choices(self)


@dataclass
class RewardConfig:
    """One reward: a Python callable or a reward model, with its weight in the oracle's sum."""

    kind: Literal["callable", "reward_model"] = "callable"
    """``callable`` (a Python scorer by dotted path) or ``reward_model`` (a sequence classifier)."""
    path: str = ""
    """``package.module:function`` ``(prompts, responses) -> rewards`` for ``callable``; a hub id or
    directory for ``reward_model``."""
    weight: float = 1.0
    """The reward's coefficient in the weighted sum r = Σ_k w_k r_k."""
    batch_size: int = 16
    """``reward_model``: texts scored per forward pass."""
    max_length: int = 1024
    """``reward_model``: tokens per scored text (prompt + response), truncated beyond."""
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    """``reward_model``: the weights' dtype."""
    device: str = ""
    """``reward_model``: where it runs (``cuda``, ``cuda:1``, ``cpu``); empty: the first GPU if any, else the CPU."""
    trust_remote_code: bool = False
    """``reward_model``: run the Python code shipped with the reward model (its config, model and
    tokenizer classes); independent of ``model.trust_remote_code``. The weights are read from
    safetensors files only."""

    def __post_init__(self):
        check_choices(self)
        if not math.isfinite(self.weight):
            raise FieldError("weight", f"must be a finite number, got {self.weight}")
        for name in ("batch_size", "max_length"):
            if getattr(self, name) < 1:
                raise FieldError(name, f"must be >= 1, got {getattr(self, name)}")


@dataclass
class OracleConfig(RewardConfig):
    """The preference oracle: a reward on (prompt, response) texts (this one, plus any
    ``additional_rewards``, weighted), turned into Bradley–Terry labels."""

    path: str = ""
    """``package.module:function`` ``(prompts, responses) -> rewards`` for ``callable``; a hub id or
    directory for ``reward_model``. Required."""
    label_mode: Literal["sample", "soft", "argmax"] = "sample"
    """``sample`` (Bernoulli(σ(r₁ − r₂))), ``soft`` (σ(r₁ − r₂)) or ``argmax`` (ties → ½)."""
    additional_rewards: list[RewardConfig] = field(default_factory=list)
    """Further rewards added to this one: r = weight·r_path + Σ_k w_k r_k."""
    missing_eos_penalty: float = 0.0
    """Subtracted from the reward of a sampled response that ends without EOS (cut at
    ``sampling.max_new_tokens``); 0: none."""

    def __post_init__(self):
        super().__post_init__()
        if not 0 <= self.missing_eos_penalty < math.inf:
            raise FieldError("missing_eos_penalty", f"must be a finite number >= 0, got {self.missing_eos_penalty}")


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
    """Prompts and pairs: where they come from, how their columns read, length caps, held-out prompts.

    ``prompts``, ``pairs`` and ``eval_prompts`` each take a ``.jsonl``, ``.json`` or ``.parquet`` file,
    a ``save_to_disk`` directory or a hub dataset id (``split``, ``subset`` and ``limit`` apply to
    the directories and hub ids); from Python, ``Trainer(cfg, prompts=..., pairs=...,
    eval_prompts=...)`` also takes a ``datasets.Dataset`` for each (:mod:`sail.train.prompts`)."""

    prompts: str = ""
    """Training prompts: a file, a save_to_disk directory or a hub dataset id (a ``prompt`` column,
    string or messages, or a ``messages`` column; see ``prompt_column``). Empty: ``hf_dataset``, else
    the embedded model's prompts, else the prompts of ``pairs``."""
    hf_dataset: str = ""
    """A hub dataset id to read the training prompts from (as ``prompts`` does); give one of the two."""
    hf_column: str = "prompt"
    """The prompt column of ``hf_dataset`` when ``prompt_column`` is empty."""
    pairs: str = ""
    """Offline preference pairs for the dataset routes (``routes.dataset_self``, ``routes.offline_dpo``):
    a file, a save_to_disk directory or a hub dataset id, in the format ``pair_format`` says."""
    split: str = "train"
    """The split read from a hub dataset or a saved DatasetDict (e.g. ``train_prefs``); files have one."""
    subset: str = ""
    """A hub dataset's configuration (``load_dataset``'s ``name``); empty: its default."""
    limit: int = 0
    """Read only the first N rows of ``prompts``/``hf_dataset`` and of ``pairs``; 0: all."""
    prompt_column: str = ""
    """The column holding the prompt (a string or a list of messages); empty: ``prompt``, else
    ``messages`` (trailing assistant messages are dropped from a prompt)."""
    pair_format: Literal["auto", "strings", "conversational", "pku_safe"] = "auto"
    """How ``pairs`` reads: ``strings`` (prompt, chosen, rejected texts), ``conversational`` (TRL's:
    chosen/rejected message lists, the prompt a ``prompt`` column or the messages they share from
    the start), ``pku_safe`` (PKU-SafeRLHF: prompt, response_0, response_1 and the id column
    ``pku_preference`` names), ``auto`` (recognised from the columns and values)."""
    chosen_column: str = "chosen"
    """The column of the preferred response (``strings`` and ``conversational``)."""
    rejected_column: str = "rejected"
    """The column of the dispreferred response (``strings`` and ``conversational``)."""
    pku_preference: Literal["better", "safer"] = "better"
    """``pku_safe``: the chosen response is ``better_response_id``'s or ``safer_response_id``'s."""
    max_prompt_length: int = 0
    """Longest prompt in tokens, as the policy encodes it (chat template included); longer ones are
    cut or dropped (``truncate``), the count is logged. 0: no cap."""
    truncate: Literal["left", "drop"] = "left"
    """A prompt over ``max_prompt_length``: ``left`` cuts tokens from its start (keeping its end),
    ``drop`` leaves the prompt (or pair) out."""
    max_response_length: int = 0
    """Longest dataset response (of ``pairs``) in tokens, not counting EOS; longer ones are cut to
    their first N tokens, the count is logged. 0: no cap."""
    chat_template_kwargs: dict[str, object] = field(default_factory=dict)
    """Extra variables for the tokenizers' chat templates (the policy's, and a reward model's), e.g.
    ``{enable_thinking: false}``."""
    eval_prompts: str = ""
    """Held-out prompts: a file, a save_to_disk directory or a hub dataset id (read at ``eval_split``
    if set, else ``split``). Empty: ``eval_split`` of the training prompts' source, else
    ``eval_fraction``, else the embedded model's held-out prompts, else the first ``n_eval`` training
    prompts (logged as such)."""
    eval_split: str = ""
    """The split of the held-out prompts (e.g. ``test_prefs``): of ``eval_prompts`` if set, else of the
    training prompts' source (of ``pairs`` when the prompts come from the pairs)."""
    eval_fraction: float = 0.0
    """Hold out this fraction of the training prompts, drawn with ``run.seed`` (when the prompts come
    from ``pairs``, the pairs of the held-out prompts leave training too). 0: none."""
    n_eval: int = 200
    """Held-out prompts used at each evaluation."""

    def __post_init__(self):
        check_choices(self)
        if self.n_eval < 1:
            raise FieldError("n_eval", f"must be >= 1, got {self.n_eval}")
        for name in ("limit", "max_prompt_length", "max_response_length"):
            if getattr(self, name) < 0:
                raise FieldError(name, f"must be >= 0 (0: no limit), got {getattr(self, name)}")
        if not 0 <= self.eval_fraction < 1:
            raise FieldError("eval_fraction", f"must be in [0, 1), got {self.eval_fraction}")
        if not self.split:
            raise FieldError("split", "must name a split (e.g. train)")
        if self.prompts and self.hf_dataset:
            raise FieldError("hf_dataset", f"data.prompts already names the prompts ({self.prompts!r}); give one of the two")
        if self.eval_fraction and (self.eval_prompts or self.eval_split):
            given = "eval_prompts" if self.eval_prompts else "eval_split"
            raise FieldError("eval_fraction", f"holds prompts out of training; data.{given} already names the held-out prompts")


@dataclass
class RunConfig:
    """The run: steps, batches, seeds, evaluation, checkpoints and logging."""

    steps: int = 100
    """Optimiser steps (ignored when ``epochs`` is set)."""
    epochs: float | None = None
    """Passes over the prompt set (or the pair file, on the dataset routes) instead of ``steps``:
    prompts are taken without replacement in an order shuffled per pass from ``seed``, and the run
    lasts ⌈epochs·N / (batch_size·grad_accum·processes)⌉ steps; null: ``steps`` steps, prompts drawn
    with replacement."""
    batch_size: int = 16
    """Prompts (one on-policy pair each) per micro-batch."""
    grad_accum: int = 1
    """Micro-batches per optimiser step; the loss is the mean over all pairs of the step."""
    seed: int = 0
    """Seeds the adapter, the route and prompt draws, sampling and labels (docs/training.md)."""
    eval_every: int = 20
    """Evaluate on held-out prompts every N steps (and at the start and the end)."""
    save_every: int = 10
    """Write a checkpoint ``checkpoint-<step>/`` every N steps (atomically) and at the end."""
    save_total_limit: int = 0
    """Keep at most this many checkpoints, deleting the oldest (never the newest); 0: keep all."""
    max_nonfinite: int = 3
    """Stop after this many non-finite losses or gradients in a row (each is skipped and logged)."""
    mixed_precision: Literal["no", "bf16", "fp16"] = "no"
    """Autocast on a GPU: ``no``, ``bf16`` or ``fp16``."""
    ema_decay: float = 0.9
    """Decay of the ``ema`` baseline (objective.baseline = ema)."""
    max_grad_norm: float | None = None
    """Clip the global gradient norm (over all trainable tensors, after averaging across processes)
    to this value before each update; null: no clipping. ``charts/grad_norm`` is the norm before."""
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
    completions_per_eval: int = 8
    """Held-out prompts (the first N) whose policy and reference responses, with their rewards, each
    evaluation appends to ``completions.jsonl``; 0: none."""
    fsdp: bool = False
    """Under ``accelerate launch`` with several processes: shard the frozen base weights across
    them with FSDP2 (``fully_shard`` per decoder layer), keeping the adapter replicated; for base
    models that do not fit on one device. See docs/training.md."""
    tensorboard: bool = False
    """Also write the metrics to ``tensorboard/`` (needs the ``tensorboard`` package)."""
    wandb: bool = False
    """Also log the metrics to Weights & Biases (needs the ``wandb`` package)."""
    wandb_project: str = ""
    """The Weights & Biases project (``run.wandb``); empty: wandb's own default (``$WANDB_PROJECT``)."""
    wandb_run_name: str = ""
    """The Weights & Biases run's name (``run.wandb``); empty: the run directory's name."""
    progress: bool = True
    """Show the start banner and a progress bar with live figures (step, reward, loss, KL, ETA)."""

    def __post_init__(self):
        check_choices(self)
        for name in ("steps", "batch_size", "grad_accum", "eval_every", "save_every", "max_nonfinite"):
            if getattr(self, name) < 1:
                raise FieldError(name, f"must be >= 1, got {getattr(self, name)}")
        if self.logprob_chunk < 0:
            raise FieldError("logprob_chunk", f"must be >= 0, got {self.logprob_chunk}")
        if not 0 <= self.seed < 2**32:  # the generators' seeds are derived from it by arithmetic
            raise FieldError("seed", f"must be >= 0 and < 2**32, got {self.seed}")
        if self.completions_per_eval < 0:
            raise FieldError("completions_per_eval", f"must be >= 0, got {self.completions_per_eval}")
        if self.save_total_limit < 0:
            raise FieldError("save_total_limit", f"must be >= 0, got {self.save_total_limit}")
        if self.max_grad_norm is not None and not 0 < self.max_grad_norm < math.inf:
            raise FieldError("max_grad_norm", f"must be a finite number > 0 (or null), got {self.max_grad_norm}")
        if self.epochs is not None and not 0 < self.epochs < math.inf:
            raise FieldError("epochs", f"must be a finite number > 0 (or null), got {self.epochs}")
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
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    """The learning rate of every step (:mod:`sail.optim.schedule`)."""
    spectral: SpectralConfig = field(default_factory=lambda: SpectralConfig(log_every=10))
    """The adapter's spectral penalty and logging (:mod:`sail.spectral`)."""
    data: DataConfig = field(default_factory=DataConfig)
    """Prompts and pairs."""
    run: RunConfig = field(default_factory=RunConfig)
    """Steps, batches, seeds, evaluation, checkpoints, logging."""

    RENAMED_KEYS: ClassVar[dict[str, str]] = {"train": "run"}
    """Sections renamed since older configs; naming the old one is an error that gives the new."""

    def __post_init__(self):
        if self.model.trainable == "head" and self.spectral.penalty_weight > 0:
            raise FieldError("spectral.penalty_weight", "the flatness penalty acts on LoRA factors; model.trainable=head has none")
        if self.run.fsdp and self.model.trainable == "head":
            raise FieldError("run.fsdp", "shards a LoRA model's base; model.trainable=head trains the whole head, use one process per replica")
        if self.run.fsdp and self.sampling.engine == "fast":
            raise FieldError("run.fsdp", "shards the base weights, which sampling.engine=fast would merge into a full copy; use sampling.engine=hf")


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
