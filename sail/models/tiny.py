"""Tiny Qwen3 networks built from a ``Qwen3Config`` (no download), for tests and CPU runs."""

from __future__ import annotations

import torch


def tiny_qwen3_config(vocab_size: int = 32, hidden_size: int = 32, layers: int = 2, heads: int = 4, kv_heads: int = 2, **overrides):
    """A Qwen3 configuration of a few thousand to a few million parameters."""
    from transformers import Qwen3Config

    head_dim = hidden_size // heads
    params = dict(
        vocab_size=vocab_size,
        hidden_size=hidden_size,
        intermediate_size=2 * hidden_size,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=kv_heads,
        head_dim=head_dim,
        max_position_embeddings=512,
        tie_word_embeddings=True,
    )
    params.update(overrides)
    return Qwen3Config(**params)


def tiny_qwen3(seed: int = 0, dtype: torch.dtype = torch.float32, **config):
    """A randomly initialised ``Qwen3ForCausalLM`` (reproducible from ``seed``)."""
    from transformers import Qwen3ForCausalLM

    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = Qwen3ForCausalLM(tiny_qwen3_config(**config))
    return model.to(dtype).eval()
