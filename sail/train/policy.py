"""The policy a run trains: the base model from a hub id, a directory or an embedded model, with its
LoRA adapter (or the dense head delta), as a :class:`~sail.policies.causal_lm.CausalLMPolicy`."""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import torch

from sail.models.embedded import PREFIX, embedded_model, embedded_names
from sail.models.head import attach_delta_head
from sail.models.lora import attach_lora
from sail.policies.causal_lm import CausalLMPolicy
from sail.train.config import TrainConfig
from sail.train.errors import TrainingError

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def resolve_model_path(name_or_path: str) -> str:
    embedded = embedded_model(name_or_path)
    if embedded is not None:
        return embedded.build()
    if name_or_path.startswith(PREFIX):
        raise TrainingError(f"model.name_or_path: unknown embedded model {name_or_path!r}; known: {embedded_names()}")
    return name_or_path


def load_policy(cfg: TrainConfig) -> CausalLMPolicy:
    """The base model from a hub id or directory, with a fresh LoRA adapter (seeded)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = resolve_model_path(cfg.model.name_or_path)
    local = Path(path)
    if (local.is_absolute() or path.startswith(".")) and not local.is_dir():
        raise TrainingError(f"model.name_or_path: no such directory {path!r}")
    try:
        tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=cfg.model.trust_remote_code)
        model = AutoModelForCausalLM.from_pretrained(
            path, dtype=_DTYPES[cfg.model.dtype], trust_remote_code=cfg.model.trust_remote_code, use_safetensors=True
        )
    except (OSError, ValueError) as exc:
        raise TrainingError(f"model.name_or_path {path!r} could not be loaded: {exc}") from None
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    if cfg.run.activation_checkpointing:
        # recompute each decoder layer's activations in the backward; with a frozen base the
        # embeddings' output must require grad for the checkpointed layers to see a graph
        if hasattr(model, "activation_checkpointing_enable"):  # transformers ≥ 5.2x; the old name is deprecated
            model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
        else:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.enable_input_require_grads()
    if cfg.model.trainable == "head":
        return _head_policy(model, tokenizer, cfg)
    peft_model = attach_lora(model, cfg.model.lora, seed=cfg.run.seed)
    return CausalLMPolicy(
        peft_model, tokenizer.eos_token_id, tokenizer.pad_token_id, cfg.sampling, tokenizer, logprob_chunk=cfg.run.logprob_chunk or None
    )


def _head_policy(model, tokenizer, cfg: TrainConfig) -> CausalLMPolicy:
    """The head parametrisation: a dense delta on the LM head, the reference with the delta off.
    The fast sampler merges LoRA layers only, so this samples with ``hf``."""
    head = attach_delta_head(model)
    sampling = cfg.sampling
    if sampling.engine == "fast":
        print("sail train: model.trainable=head samples with sampling.engine=hf (the fast sampler merges LoRA layers only)", file=sys.stderr)
        sampling = dataclasses.replace(sampling, engine="hf", compile=False)
    return CausalLMPolicy(
        model, tokenizer.eos_token_id, tokenizer.pad_token_id, sampling, tokenizer,
        logprob_chunk=cfg.run.logprob_chunk or None, reference=head.disabled,
    )
