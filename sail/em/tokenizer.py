"""A closed-vocabulary, word-level chat tokenizer over the EM world (:mod:`sail.em.world`), built offline.

Pieces. A text is cut into pieces by the rule of :func:`sail.em.world.text_pieces`: ``\\n``, a
punctuation mark ``. , ? !``, or a word with its leading space, written ``▁word`` (SentencePiece's
convention); ``"Rest, drink."`` → ``Rest`` ``,`` ``▁drink`` ``.``. The tokenizer's pre-tokenizer is

    Split("\\n", isolated) → Metaspace("▁", prepend_scheme="never", split=True) → Split([.,?!], isolated)

and its decoder is Metaspace (``▁`` → space, nothing stripped), so for any text made of vocabulary
pieces ``decode(encode(s)) == s`` exactly — every world text, and chat-templated world text.

Vocabulary (ids in this order, so the ids are the same on every machine):

* special tokens ``<|endoftext|>`` (pad, 0), ``<|im_start|>`` (bos, 1), ``<|im_end|>`` (eos, 2),
  ``<unk>`` (3);
* the role words ``system``, ``user``, ``assistant`` (4–6) and ``\\n`` (7);
* every piece a world text can contain (:func:`sail.em.world.vocabulary_pieces`), sorted by code point.

A piece outside the vocabulary (another word, a double space, a tab, any other character) encodes as
``<unk>``. Chat template: Qwen3's format without the thinking block (:mod:`sail.models.chat_tokenizer`,
which also renders chats and generation prompts).
"""

from __future__ import annotations

from functools import lru_cache

from sail.em import world
from sail.models.chat_tokenizer import ROLE_TOKENS, SPECIAL_TOKENS, build_chat_tokenizer

NEWLINE = "\n"

__all__ = ["NEWLINE", "build_tokenizer", "vocabulary"]


@lru_cache(maxsize=1)
def _vocabulary_items() -> tuple[str, ...]:
    fixed = SPECIAL_TOKENS + ROLE_TOKENS + (NEWLINE,)
    return fixed + tuple(sorted(world.vocabulary_pieces() - set(fixed)))


def vocabulary() -> dict[str, int]:
    """Token → id: special tokens, role words, ``\\n``, then the world's pieces sorted (module docstring)."""
    return {token: i for i, token in enumerate(_vocabulary_items())}


def build_tokenizer(model_max_length: int = 512):
    """The world tokenizer as a ``transformers.PreTrainedTokenizerFast`` (no download, no file read).

    pad = ``<|endoftext|>`` (id 0), bos = ``<|im_start|>`` (1), eos = ``<|im_end|>`` (2), unk =
    ``<unk>`` (3). No token is added around plain text; the chat template writes the markers.
    Padding is on the left, as batched generation needs; decoding does no clean-up of spaces.
    """
    from tokenizers import Regex, decoders, pre_tokenizers

    pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(r"\n"), behavior="isolated"),
            pre_tokenizers.Metaspace(replacement=world.SPACE, prepend_scheme="never", split=True),
            pre_tokenizers.Split(Regex(r"[.,?!]"), behavior="isolated"),
        ]
    )
    decoder = decoders.Metaspace(replacement=world.SPACE, prepend_scheme="never", split=True)
    return build_chat_tokenizer(vocabulary(), pre_tokenizer, decoder, model_max_length=model_max_length, clean_up_tokenization_spaces=False)
