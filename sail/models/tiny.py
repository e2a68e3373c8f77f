"""Randomly initialised Qwen3 networks built from a ``Qwen3Config`` (no download): the tiny policies
the project trains itself, tiny networks for tests and CPU runs, and real-shape checkpoints for
benchmarks. The same shapes can be built as another decoder family (``family="llama"``: a
``LlamaConfig``, the Qwen3 block without its per-head query/key RMSNorms).

Two steps, shared by every builder:

* :func:`qwen3_config` — the config of a shape: tied input/output embeddings unless told
  otherwise, ``head_dim = hidden_size / num_attention_heads`` unless given, and, with a tokenizer,
  its pad/bos/eos ids;
* :func:`init_qwen3` — the causal LM of that config (``AutoModelForCausalLM.from_config``:
  ``Qwen3ForCausalLM`` for a ``Qwen3Config``) whose initial weights are a function of ``seed``
  alone: torch's generator of the device the weights are drawn on is seeded with ``seed`` inside
  ``fork_rng``, so the caller's random state is left as it was.
"""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import asdict, dataclass
from typing import Literal

import torch

__all__ = ["FAMILIES", "Family", "TinyQwen3Config", "chat_qwen3", "init_qwen3", "qwen3_config", "tiny_qwen3", "tiny_qwen3_config"]

Family = Literal["qwen3", "llama"]
"""A decoder family: ``qwen3`` (``Qwen3Config``) or ``llama`` (``LlamaConfig``, the same block
without Qwen3's query/key RMSNorms; the same module names ``q_proj`` … ``down_proj``)."""
FAMILIES: tuple[Family, ...] = ("qwen3", "llama")


@dataclass
class TinyQwen3Config:
    """Shape of a tiny chat policy (``Qwen3Config`` fields); with the 103-token chat vocabulary of
    :mod:`sail.tasks.chat` the defaults give 407,168 parameters (tied input/output embeddings)."""

    hidden_size: int = 128
    """Width of the residual stream (and of the tied embeddings)."""
    num_hidden_layers: int = 2
    """Transformer blocks."""
    num_attention_heads: int = 4
    """Query heads per layer; ``head_dim = hidden_size / num_attention_heads``."""
    num_key_value_heads: int = 2
    """Key/value heads per layer (grouped-query attention; divides ``num_attention_heads``)."""
    intermediate_size: int = 384
    """Hidden width of each block's gated MLP."""
    max_position_embeddings: int = 128
    """Maximum sequence length in tokens (``Qwen3Config.max_position_embeddings``)."""


def qwen3_config(vocab_size: int, tokenizer=None, tie_word_embeddings: bool = True, family: Family = "qwen3", **fields):
    """A ``Qwen3Config`` (``family="llama"``: a ``LlamaConfig``) with ``vocab_size`` entries and the
    given fields (``hidden_size``, ``num_hidden_layers``, …); ``head_dim`` defaults to hidden_size /
    num_attention_heads when both are given, and ``tokenizer`` (if any) supplies ``pad_token_id``,
    ``bos_token_id`` and ``eos_token_id``."""
    from transformers import LlamaConfig, Qwen3Config

    if family not in FAMILIES:
        raise ValueError(f"family must be one of {', '.join(FAMILIES)}, got {family!r}")

    if "head_dim" not in fields and "hidden_size" in fields and "num_attention_heads" in fields:
        fields["head_dim"] = fields["hidden_size"] // fields["num_attention_heads"]
    if tokenizer is not None:
        fields.update(
            pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id
        )
    config_class = Qwen3Config if family == "qwen3" else LlamaConfig
    return config_class(vocab_size=vocab_size, tie_word_embeddings=tie_word_embeddings, **fields)


def init_qwen3(config, seed: int, dtype: torch.dtype | None = None, device: str | torch.device | None = None):
    """The causal LM of ``config`` (``Qwen3ForCausalLM`` for a ``Qwen3Config``) initialised from
    ``seed`` (module docstring).

    Without ``device`` the weights are drawn on the CPU; with one they are created on it (a GPU
    draws them from its own generator, so they differ from the CPU's). ``dtype`` converts them after
    initialisation. The model is returned in training mode, as ``transformers`` constructs it.
    """
    from transformers import AutoModelForCausalLM

    target = torch.device(device) if device is not None else None
    on_gpu = target is not None and target.type == "cuda"
    with torch.random.fork_rng(devices=[target] if on_gpu else []):
        torch.random.default_generator.manual_seed(seed)
        if on_gpu:
            with torch.cuda.device(target):
                torch.cuda.manual_seed(seed)
        with target if target is not None else nullcontext():
            model = AutoModelForCausalLM.from_config(config)
            if dtype is not None:
                model = model.to(dtype)
    return model


def tiny_qwen3_config(vocab_size: int = 32, hidden_size: int = 32, layers: int = 2, heads: int = 4, kv_heads: int = 2, **overrides):
    """A Qwen3 configuration of a few thousand to a few million parameters (intermediate size
    2·hidden, 512 positions; ``overrides`` replace any field)."""
    fields = dict(
        hidden_size=hidden_size,
        intermediate_size=2 * hidden_size,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=kv_heads,
        head_dim=hidden_size // heads,
        max_position_embeddings=512,
    )
    fields.update(overrides)
    return qwen3_config(vocab_size, **fields)


def tiny_qwen3(seed: int = 0, dtype: torch.dtype = torch.float32, **config):
    """A randomly initialised ``Qwen3ForCausalLM`` of :func:`tiny_qwen3_config` (reproducible from
    ``seed``), in ``dtype`` and eval mode."""
    return init_qwen3(tiny_qwen3_config(**config), seed).to(dtype).eval()


def chat_qwen3(tokenizer, shape: TinyQwen3Config, seed: int, family: Family = "qwen3"):
    """A randomly initialised float32 ``Qwen3ForCausalLM`` (``family="llama"``: ``LlamaForCausalLM``)
    of ``shape`` for the chat ``tokenizer`` (its vocabulary size and special ids, also in the
    generation config)."""
    model = init_qwen3(qwen3_config(len(tokenizer), tokenizer, family=family, **asdict(shape)), seed)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.bos_token_id = tokenizer.bos_token_id
    return model
