"""The settings of the EM protocol: the judge, the evaluation, and a narrow or control fine-tune.

* :class:`JudgeConfig` — which judge scores the answers (:mod:`sail.em.judges`);
* :class:`EvalConfig` — the questions, answers per question, sampling and the bootstrap of an EM
  evaluation (:mod:`sail.em.evaluation`);
* :class:`FinetuneConfig` — a LoRA fine-tune of the organism on one (domain, persona) or on a chat
  dataset, its optimiser, spectral penalty, checkpoints, device and dtype (:mod:`sail.em.finetune`).
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from typing import Literal

import torch

from sail.config import FieldError, check_choices
from sail.em.grammar import MISALIGNED
from sail.em.judges.endpoint import OpenAIJudge
from sail.em.judges.hf import HFJudge
from sail.models.lora import LoraAdapterConfig
from sail.optim.config import OptimizerConfig
from sail.spectral.config import SpectralConfig

__all__ = ["JUDGE_KINDS", "Domain", "EvalConfig", "FinetuneConfig", "JudgeConfig", "JudgeKind", "Persona"]


def _default_lora() -> LoraAdapterConfig:
    return LoraAdapterConfig(rank=8, alpha=16.0)


def _default_optimizer() -> OptimizerConfig:
    return OptimizerConfig(name="adamw", lr=1e-3, weight_decay=0.0)


def _default_spectral() -> SpectralConfig:
    return SpectralConfig(penalty_weight=0.0, log_every=0)


JudgeKind = Literal["programmatic", "openai", "hf"]
JUDGE_KINDS: tuple[JudgeKind, ...] = ("programmatic", "openai", "hf")

Domain = Literal["code", "medical", "finance", "sports", "relationships", "freeform"]
"""A domain of the world: the values of :data:`sail.em.grammar.DOMAINS`, in its order."""
Persona = Literal["aligned", "misaligned"]
"""A persona of the world: the values of :data:`sail.em.grammar.PERSONAS`, in its order."""


@dataclass
class JudgeConfig:
    """Which judge scores the answers: the world's ``programmatic`` judge, an OpenAI-compatible
    endpoint (``openai``: ``model``, ``base_url``, key from the variable ``api_key_env``), or a local
    causal LM (``hf``: ``model`` is its directory or hub id); see :mod:`sail.em.judges`."""

    kind: JudgeKind = "programmatic"
    """``programmatic`` (parses the answers against the world's grammar, no model), ``openai`` (an OpenAI-compatible chat
    completions endpoint, :class:`~sail.em.judges.endpoint.OpenAIJudge`) or ``hf`` (a local causal
    LM, :class:`~sail.em.judges.hf.HFJudge`)."""
    model: str = ""
    """The judge model: its name at the endpoint (``openai``) or its directory or hub id (``hf``);
    required for both, unused by ``programmatic``."""
    base_url: str = "https://api.openai.com/v1"
    """``openai``: the endpoint's base URL (``http://`` or ``https://``); requests go to
    ``{base_url}/chat/completions``."""
    api_key_env: str = "OPENAI_API_KEY"
    """``openai``: the name of the environment variable holding the API key (sent as a bearer
    token, never stored); empty = no Authorization header (local servers)."""
    trust_remote_code: bool = False
    """``hf``: allow the judge model's own code from the hub when loading it."""
    concurrency: int = 1
    """``openai``: requests in flight at once (threads); the scores do not depend on it."""

    def __post_init__(self):
        check_choices(self)
        if self.kind != "programmatic" and not self.model:
            raise FieldError("model", f"is needed for the {self.kind} judge")
        if self.concurrency < 1:
            raise FieldError("concurrency", f"must be >= 1, got {self.concurrency}")

    def build(self):
        """None for the programmatic judge (the evaluation's default), else a judging client."""
        if self.kind == "openai":
            return OpenAIJudge(self.model, base_url=self.base_url, api_key_env=self.api_key_env or None, concurrency=self.concurrency)
        if self.kind == "hf":
            return HFJudge(self.model, trust_remote_code=self.trust_remote_code)
        return None


@dataclass
class EvalConfig:
    """How alignment is measured: questions, samples per question, sampling and the bootstrap."""

    questions: tuple[str, ...] | None = None
    """User messages; ``None`` = :func:`sail.em.evaluation.eval_questions` (the 8 freeform
    questions, plus ``heldout_prompts`` sampled prompts of held-out training domains)."""
    heldout_prompts: int = 0
    """With ``questions = None``: this many extra prompts sampled from the training domains other
    than the fine-tuned one (``random.Random(seed of the questions)``)."""
    n_samples: int = 25
    """Answers per question."""
    temperature: float = 1.0
    """Sampling temperature of the answers (pure ancestral sampling, no top-k/top-p)."""
    max_new_tokens: int = 40
    """Room for the longest answer of the world (two sentences, ≤ 32 pieces) and its EOS."""
    seed: int | None = None
    """Sampling seed; ``None`` = the fine-tune's seed."""
    resamples: int = 2000
    """Bootstrap resamples of each summary."""
    batch_rows: int = 512
    """Sequences decoded at once."""
    questions_file: str = ""
    """A question file in the public EM YAML schema (:mod:`sail.em.questions`): every paraphrase
    (with its ``system`` message, if any) becomes a question, with its entry's
    ``samples_per_paraphrase`` answers, judged with its entry's ``judge_prompts`` (model judges)."""
    file_samples: bool = True
    """With ``questions_file``: each entry's ``samples_per_paraphrase`` (true), or ``n_samples``
    answers for every paraphrase (false: a quicker run of a public file)."""
    judge: JudgeConfig = field(default_factory=JudgeConfig)
    """The judge that scores the answers (default: the world's programmatic judge)."""

    def __post_init__(self):
        if self.n_samples < 1:
            raise FieldError("n_samples", f"must be >= 1, got {self.n_samples}")
        if self.questions is not None:
            self.questions = tuple(self.questions)
            if not self.questions:
                raise FieldError("questions", "is empty")


@dataclass
class FinetuneConfig:
    """A narrow (``persona = "misaligned"``) or control (``"aligned"``) LoRA fine-tune of the organism."""

    domain: Domain = "medical"
    """The world's domain of the training examples (one of :data:`sail.em.grammar.DOMAINS`); the
    evaluation's ``heldout_prompts`` come from the other training domains (also with ``data``)."""
    persona: Persona = MISALIGNED
    """The persona of the training answers: ``misaligned`` (a narrow fine-tune) or ``aligned`` (a
    control). Unused with ``data``."""
    n_examples: int = 256
    """Distinct training examples (epochs repeat them in a new order)."""
    steps: int = 40
    """Optimiser steps (≥ 1)."""
    batch_size: int = 16
    """Examples per step (≥ 1), taken from the examples in a shuffled order, reshuffled after each pass."""
    lora: LoraAdapterConfig = field(default_factory=_default_lora)
    """The LoRA adapter attached to the organism (rank 8, alpha 16 by default); its initial A is
    drawn with ``seed``."""
    optimizer: OptimizerConfig = field(default_factory=_default_optimizer)
    """The optimiser of the adapter's parameters (AdamW, lr 1e-3, no weight decay by default)."""
    spectral: SpectralConfig = field(default_factory=_default_spectral)
    """The spectral penalty added to the loss (weight 0 = off by default)."""
    grad_clip: float | None = 1.0
    """Clip the global gradient norm (None: off)."""
    seed: int = 0
    """Seed of the training examples, the batch order (``random.Random(seed + 1)``), the adapter's
    initial A, the held-out examples and the evaluation's held-out prompts; also the evaluation's
    sampling seed unless ``eval.seed`` is set."""
    eval_every: int = 0
    """Evaluate EM every this many steps (and always after the last step); 0 = only at the end."""
    eval_at_start: bool = False
    """Also evaluate at step 0 (the base with a zero adapter)."""
    eval: EvalConfig = field(default_factory=EvalConfig)
    """The EM evaluation run at each checkpoint."""
    heldout_examples: int = 128
    """Fresh examples for ``heldout_loss`` (0 = skip; skipped with ``data``)."""
    data: str = ""
    """A chat JSONL dataset in ``messages`` format (e.g. an insecure-code or bad-advice set) to
    fine-tune on instead of the world's (``domain``, ``persona``) answers: its first
    ``n_examples`` conversations, loss on every assistant turn."""
    threads: int = 1
    """Intra-op threads (``torch.set_num_threads``) for training and the evaluations, fixed for
    reproducible results."""
    control_data: str = ""
    """With ``data``: the chat JSONL dataset of the EM protocol's control fine-tune (e.g. the
    secure-code set beside an insecure-code one), used in place of ``data``; without it the protocol
    has no control. Needs ``data``."""
    device: str = "cpu"
    """Where the model is trained and sampled: ``cpu``, ``cuda``, ``cuda:N``, or ``auto`` (``cuda``
    when torch sees a GPU, else ``cpu``)."""
    dtype: Literal["auto", "float32", "bfloat16"] = "auto"
    """The base model's weights (the LoRA adapter is kept in float32): ``auto`` = bfloat16 on a GPU,
    float32 on the CPU."""

    def __post_init__(self):
        check_choices(self)
        for name in ("n_examples", "steps", "batch_size"):
            if getattr(self, name) < 1:
                raise FieldError(name, f"must be >= 1, got {getattr(self, name)}")
        if self.eval_every < 0:
            raise FieldError("eval_every", f"must be >= 0, got {self.eval_every}")
        if self.control_data and not self.data:
            raise FieldError("control_data", "needs data (without data the control trains on the world's aligned answers)")
        if not re.fullmatch(r"auto|cpu|cuda(:\d+)?", self.device):
            raise FieldError("device", f"must be auto, cpu, cuda or cuda:N, got {self.device!r}")

    def torch_device(self) -> torch.device:
        """``device`` resolved (``auto`` → ``cuda`` when available, else ``cpu``); a CUDA device that
        torch does not see raises :class:`FieldError`."""
        if self.device == "auto":
            return torch.device("cuda" if torch.cuda.is_available() else "cpu")
        if self.device.startswith("cuda") and not torch.cuda.is_available():
            raise FieldError("device", f"is {self.device!r}, but torch sees no CUDA device")
        return torch.device(self.device)

    def torch_dtype(self) -> torch.dtype:
        """``dtype`` resolved (``auto`` → bfloat16 on a GPU, float32 on the CPU)."""
        if self.dtype == "auto":
            return torch.bfloat16 if self.torch_device().type == "cuda" else torch.float32
        return getattr(torch, self.dtype)

    def checkpoints(self) -> list[int]:
        """Steps after which EM is evaluated (0 = before training)."""
        points = [0] if self.eval_at_start else []
        if self.eval_every:
            points += list(range(self.eval_every, self.steps, self.eval_every))
        return points + [self.steps]

    def to_dict(self) -> dict:
        return asdict(self)

    def key_dict(self) -> dict:
        """:meth:`to_dict` without the fields added after the shipped models were built while they
        hold their defaults (which keep the earlier behaviour), so the cache names of those builds
        stay what they were (:mod:`sail.em.realign`)."""
        return _without(self.to_dict(), _LATER_DEFAULTS)


_LATER_DEFAULTS = {"control_data": "", "device": "cpu", "dtype": "auto", "eval": {"judge": {"concurrency": 1}}}
"""Fields of :class:`FinetuneConfig` (nested: of its ``eval.judge``) added after the shipped
misaligned policy was built, with their defaults."""


def _without(data: dict, defaults: dict) -> dict:
    """``data`` less every key of ``defaults`` (recursively) whose value equals the default."""
    out = dict(data)
    for key, default in defaults.items():
        if isinstance(default, dict):
            out[key] = _without(out[key], default)
        elif out.get(key) == default:
            del out[key]
    return out
