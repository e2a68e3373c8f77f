"""The policy a run trains: the base model from a hub id, a directory or an embedded model, with its
LoRA adapter (or the dense head delta), as a :class:`~sail.policies.causal_lm.CausalLMPolicy`."""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import torch
from safetensors import SafetensorError

from sail.models.embedded import PREFIX, embedded_model, embedded_names
from sail.models.frozen_start import frozen_start_reference
from sail.models.head import attach_delta_head
from sail.models.lora import attach_lora
from sail.policies.causal_lm import CausalLMPolicy
from sail.train.checkpoint import HEAD_FILE, CheckpointError, load_weights
from sail.train.config import TrainConfig
from sail.train.errors import TrainingError
from sail.train.model_source import locate_model



def resolve_model_path(name_or_path: str) -> str:
    embedded = embedded_model(name_or_path)
    if embedded is not None:
        return embedded.build()
    if name_or_path.startswith(PREFIX):
        raise TrainingError(f"model.name_or_path: unknown embedded model {name_or_path!r}; known: {embedded_names()}")
    return name_or_path


def load_base_model(cfg: TrainConfig):
    """The base causal LM of ``model.name_or_path`` (safetensors, ``model.dtype``) and its tokenizer."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = locate_model(resolve_model_path(cfg.model.name_or_path), "model.name_or_path")  # fails fast on a bad name
    try:
        tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=cfg.model.trust_remote_code)
        model = AutoModelForCausalLM.from_pretrained(
            path, dtype=getattr(torch, cfg.model.dtype), trust_remote_code=cfg.model.trust_remote_code, use_safetensors=True
        )
    except (OSError, ValueError) as exc:
        raise TrainingError(f"model.name_or_path {path!r} could not be loaded: {' '.join(str(exc).split())}") from None
    except SafetensorError as exc:  # a truncated or corrupt weights file
        files = ", ".join(str(f) for f in sorted(Path(path).glob("*.safetensors"))) or f"the weights of {path}"
        raise TrainingError(f"model.name_or_path {path!r} could not be loaded: {files}: {' '.join(str(exc).split())}") from None
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return model, tokenizer


def load_policy(cfg: TrainConfig) -> CausalLMPolicy:
    """The base model from a hub id or directory, with a fresh LoRA adapter (seeded) or the one
    ``model.init_adapter`` names, and the reference ``model.reference`` asks for."""
    model, tokenizer = load_base_model(cfg)
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
    peft_model = _starting_adapter(model, cfg)
    return CausalLMPolicy(
        peft_model, tokenizer.eos_token_id, tokenizer.pad_token_id, cfg.sampling, tokenizer,
        logprob_chunk=cfg.run.logprob_chunk or None, reference=_start_reference(peft_model, cfg),
    )


def _starting_adapter(model, cfg: TrainConfig):
    """A fresh LoRA adapter (B = 0, A seeded), or the PEFT LoRA adapter of ``model.init_adapter``,
    trainable, with its own rank, α and target modules."""
    if not cfg.model.init_adapter:
        try:
            return attach_lora(model, cfg.model.lora, seed=cfg.run.seed)
        except ValueError as exc:  # PEFT: a target module the model does not have
            raise TrainingError(f"model.lora.target_modules: {' '.join(str(exc).split())}") from None
    from peft import PeftConfig, PeftModel

    path = Path(cfg.model.init_adapter)
    if not (path / "adapter_config.json").is_file():
        raise TrainingError(f"model.init_adapter: {path} holds no adapter_config.json (a PEFT adapter directory or a run's checkpoint-<step>/)")
    kind = PeftConfig.from_pretrained(str(path)).peft_type
    if kind != "LORA":
        raise TrainingError(f"model.init_adapter: {path} holds a {kind} adapter; sail trains LoRA adapters")
    with torch.random.fork_rng(devices=[]):  # PEFT draws A before loading it over: leave the global stream alone
        try:
            return PeftModel.from_pretrained(model, str(path), is_trainable=True)
        except (OSError, ValueError, RuntimeError) as exc:
            raise TrainingError(f"model.init_adapter: {path} does not load on {cfg.model.name_or_path}: {' '.join(str(exc).split())}") from None


def _start_reference(model, cfg: TrainConfig):
    """``model.reference: start`` from a starting adapter: π_ref is a frozen copy of the starting
    weights (:mod:`sail.models.frozen_start`); otherwise None, the policy's own default (the base)."""
    if cfg.model.reference == "start" and cfg.model.init_adapter:
        return frozen_start_reference(model)
    return None


def _head_policy(model, tokenizer, cfg: TrainConfig) -> CausalLMPolicy:
    """The head parametrisation: a dense delta on the LM head (zero, or ``model.init_adapter``'s),
    the reference with the delta off (or at its start). The fast sampler merges LoRA layers only,
    so this samples with ``hf``."""
    head = attach_delta_head(model)
    if cfg.model.init_adapter:
        try:
            load_weights(model, Path(cfg.model.init_adapter) / HEAD_FILE)
        except CheckpointError as exc:
            raise TrainingError(f"model.init_adapter: {exc}") from None
    sampling = cfg.sampling
    if sampling.engine == "fast":
        print("sail train: model.trainable=head samples with sampling.engine=hf (the fast sampler merges LoRA layers only)", file=sys.stderr)
        sampling = dataclasses.replace(sampling, engine="hf", compile=False)
    return CausalLMPolicy(
        model, tokenizer.eos_token_id, tokenizer.pad_token_id, sampling, tokenizer,
        logprob_chunk=cfg.run.logprob_chunk or None, reference=_start_reference(model, cfg) or head.disabled,
    )
