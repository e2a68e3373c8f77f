"""The addition task's closed-vocabulary, character-level chat tokenizer, built offline.

Vocabulary (ids in this order, so the ids are the same on every machine):

* the special tokens of :mod:`sail.models.chat_tokenizer`: ``<|endoftext|>`` (pad), ``<|im_start|>``
  (bos), ``<|im_end|>`` (eos), ``<unk>``;
* the role words ``system``, ``user``, ``assistant`` as whole tokens (as in Qwen3's BPE vocabulary,
  where each is one token), so the fixed part of a chat turn stays short;
* every printable ASCII character (space to ``~``) and ``\\n``, one token each.

Any other character encodes as ``<unk>``. Text made of the characters above round-trips exactly:
``decode(encode(s)) == s`` (the decoder concatenates tokens without separators). The chat template
is Qwen3's (:data:`sail.models.chat_tokenizer.CHAT_TEMPLATE`).
"""

from __future__ import annotations

from sail.models.chat_tokenizer import ROLE_TOKENS, SPECIAL_TOKENS, build_chat_tokenizer

CHARACTERS = ("\n",) + tuple(chr(c) for c in range(32, 127))

__all__ = ["CHARACTERS", "build_tokenizer", "vocabulary"]


def vocabulary() -> dict[str, int]:
    """Token → id: special tokens, then role words, then characters (see the module docstring)."""
    tokens = SPECIAL_TOKENS + ROLE_TOKENS + CHARACTERS
    return {token: i for i, token in enumerate(tokens)}


def build_tokenizer(vocab: dict[str, int] | None = None):
    """The character-level chat tokenizer over ``vocab`` (default :func:`vocabulary`) as a
    ``transformers.PreTrainedTokenizerFast`` (no download, no files read).

    pad = ``<|endoftext|>`` (id 0), bos = ``<|im_start|>`` (id 1), eos = ``<|im_end|>`` (id 2),
    unk = ``<unk>`` (id 3). Every character is its own piece and the role words are whole tokens.
    """
    from tokenizers import Regex, decoders, pre_tokenizers

    return build_chat_tokenizer(
        vocabulary() if vocab is None else vocab,
        pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated"),  # [\s\S] also matches "\n"
        decoders.Fuse(),
        added_tokens=ROLE_TOKENS,
    )
