"""Random-init Qwen3 checkpoints of real shapes, saved as ordinary model directories, for
benchmarks that need a loadable model (``sail bench loop --model-path random:0.6b``).

The tokenizer is the embedded task's chat tokenizer (:mod:`sail.tasks.chat`) with filler tokens
``<|x{i}|>`` appended up to Qwen3's 151,936 entries, so every id a random model samples decodes, and
the chat template is Qwen3's format. No download.
"""

from __future__ import annotations

from pathlib import Path

RANDOM_PREFIX = "random:"
QWEN3_VOCAB = 151936


def padded_chat_tokenizer(vocab_size: int = QWEN3_VOCAB):
    """The task's chat tokenizer whose vocabulary is padded with filler tokens to ``vocab_size``."""
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers

    from sail.tasks import chat

    vocab = chat.vocabulary()
    for i in range(vocab_size - len(vocab)):
        vocab[f"<|x{i}|>"] = len(vocab)
    core = Tokenizer(models.WordLevel(vocab, unk_token=chat.UNK_TOKEN))
    core.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
    core.decoder = decoders.Fuse()
    core.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in chat.SPECIAL_TOKENS])
    core.add_tokens([AddedToken(t, special=False, normalized=False) for t in chat.ROLE_TOKENS])
    return chat.wrap_chat_tokenizer(core)


def save_random_qwen3(preset: str, out_dir: str | Path, dtype: str = "bfloat16", seed: int = 0) -> Path:
    """A random-init ``Qwen3ForCausalLM`` of ``preset`` shapes (:data:`sail.bench.optim.QWEN3_PRESETS`)
    and its padded tokenizer, saved with safetensors into ``out_dir``."""
    import torch
    from transformers import Qwen3Config, Qwen3ForCausalLM

    from sail.bench.optim import QWEN3_PRESETS

    if preset not in QWEN3_PRESETS:
        raise ValueError(f"unknown Qwen3 preset {preset!r}; known: {sorted(QWEN3_PRESETS)}")
    tokenizer = padded_chat_tokenizer()
    config = Qwen3Config(
        vocab_size=QWEN3_VOCAB,
        tie_word_embeddings=preset in ("tiny", "0.6b", "1.7b"),
        max_position_embeddings=4096,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        **QWEN3_PRESETS[preset],
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        with torch.device("cuda" if torch.cuda.is_available() else "cpu"):
            model = Qwen3ForCausalLM(config).to(getattr(torch, dtype))
    out = Path(out_dir)
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    return out


def resolve_model(spec: str, workdir: str | Path, dtype: str = "bfloat16") -> str:
    """``random:<preset>`` → a saved random-init directory under ``workdir``; anything else unchanged."""
    if spec.startswith(RANDOM_PREFIX):
        return str(save_random_qwen3(spec[len(RANDOM_PREFIX) :], Path(workdir) / "model", dtype))
    return spec
