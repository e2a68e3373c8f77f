"""Random-init Qwen3 checkpoints of real shapes, saved as ordinary model directories, for
benchmarks that need a loadable model (``sail bench loop --model-path random:0.6b``).

The tokenizer is the embedded task's chat tokenizer (:mod:`sail.tasks.chat`) with filler tokens
``<|x{i}|>`` appended up to Qwen3's 151,936 entries, so every id a random model samples decodes, and
the chat template is Qwen3's format. No download.
"""

from __future__ import annotations

from pathlib import Path

from sail.models.tiny import init_qwen3, qwen3_config
from sail.tasks import chat

RANDOM_PREFIX = "random:"
QWEN3_VOCAB = 151936


def padded_chat_tokenizer(vocab_size: int = QWEN3_VOCAB):
    """The task's chat tokenizer whose vocabulary is padded with filler tokens to ``vocab_size``."""
    vocab = chat.vocabulary()
    for i in range(vocab_size - len(vocab)):
        vocab[f"<|x{i}|>"] = len(vocab)
    return chat.build_tokenizer(vocab)


def save_random_qwen3(preset: str, out_dir: str | Path, dtype: str = "bfloat16", seed: int = 0) -> Path:
    """A random-init ``Qwen3ForCausalLM`` of ``preset`` shapes (:data:`sail.bench.optim.QWEN3_PRESETS`)
    and its padded tokenizer, saved with safetensors into ``out_dir``."""
    import torch

    from sail.bench.optim import QWEN3_PRESETS

    if preset not in QWEN3_PRESETS:
        raise ValueError(f"unknown Qwen3 preset {preset!r}; known: {sorted(QWEN3_PRESETS)}")
    tokenizer = padded_chat_tokenizer()
    config = qwen3_config(
        QWEN3_VOCAB, tokenizer, tie_word_embeddings=preset in ("tiny", "0.6b", "1.7b"), max_position_embeddings=4096, **QWEN3_PRESETS[preset]
    )
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model = init_qwen3(config, seed, dtype=getattr(torch, dtype), device=device)
    out = Path(out_dir)
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    return out


def resolve_model(spec: str, workdir: str | Path, dtype: str = "bfloat16") -> str:
    """``random:<preset>`` → a saved random-init directory under ``workdir``; anything else unchanged."""
    if spec.startswith(RANDOM_PREFIX):
        return str(save_random_qwen3(spec[len(RANDOM_PREFIX) :], Path(workdir) / "model", dtype))
    return spec
