"""The chat format of the project's own tokenizers: special tokens, Qwen3's template, and the
assembly of a closed-vocabulary ``tokenizers.Tokenizer`` into a ``transformers`` tokenizer.

Special tokens (the first four ids of every vocabulary built here): ``<|endoftext|>`` (pad, 0),
``<|im_start|>`` (bos, 1), ``<|im_end|>`` (eos, 2), ``<unk>`` (3). The role words ``system``,
``user`` and ``assistant`` follow.

Chat template (Qwen3's format without the thinking block)::

    <|im_start|>{role}\\n{content}<|im_end|>\\n      (for each message)
    <|im_start|>assistant\\n                       (with add_generation_prompt=True)

An assistant turn ends with ``<|im_end|>``, the tokenizer's EOS token, so generation stops there.
:func:`render_chat` writes the template out by hand (no Jinja), equal to
``apply_chat_template(..., tokenize=False)``.

The vocabularies differ by use (characters for the addition task, :mod:`sail.tasks.chat`; the words
of the EM world, :mod:`sail.em.tokenizer`); :func:`build_chat_tokenizer` assembles any of them the
same way: a word-level model over the vocabulary, the caller's pre-tokenizer and decoder, the
special tokens, then :func:`wrap_chat_tokenizer`.
"""

from __future__ import annotations

from typing import Sequence

PAD_TOKEN = "<|endoftext|>"
BOS_TOKEN = "<|im_start|>"
EOS_TOKEN = "<|im_end|>"
UNK_TOKEN = "<unk>"
SPECIAL_TOKENS = (PAD_TOKEN, BOS_TOKEN, EOS_TOKEN, UNK_TOKEN)
ROLE_TOKENS = ("system", "user", "assistant")

CHAT_TEMPLATE = (
    "{%- for message in messages %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)

__all__ = [
    "BOS_TOKEN",
    "CHAT_TEMPLATE",
    "EOS_TOKEN",
    "PAD_TOKEN",
    "ROLE_TOKENS",
    "SPECIAL_TOKENS",
    "UNK_TOKEN",
    "build_chat_tokenizer",
    "chat_messages",
    "chat_prompt",
    "generation_prompt",
    "render_chat",
    "wrap_chat_tokenizer",
]


def build_chat_tokenizer(
    vocabulary: dict[str, int],
    pre_tokenizer,
    decoder,
    added_tokens: Sequence[str] = (),
    model_max_length: int = 512,
    **options,
):
    """A ``PreTrainedTokenizerFast`` over ``vocabulary`` (token → id; it starts with
    :data:`SPECIAL_TOKENS`), built offline.

    A word-level model maps each piece of ``pre_tokenizer`` to its id (``<unk>`` outside the
    vocabulary); ``decoder`` joins tokens back into text. The special tokens are matched before
    pre-tokenisation, and so are ``added_tokens`` (whole words such as the role names, kept as one
    token each). ``options`` go to :func:`wrap_chat_tokenizer`.
    """
    from tokenizers import AddedToken, Tokenizer, models

    core = Tokenizer(models.WordLevel(vocabulary, unk_token=UNK_TOKEN))
    core.pre_tokenizer = pre_tokenizer
    core.decoder = decoder
    core.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in SPECIAL_TOKENS])
    if added_tokens:
        core.add_tokens([AddedToken(t, special=False, normalized=False) for t in added_tokens])
    return wrap_chat_tokenizer(core, model_max_length, **options)


def wrap_chat_tokenizer(core, model_max_length: int = 512, **options):
    """A ``tokenizers.Tokenizer`` over a vocabulary that starts with :data:`SPECIAL_TOKENS` as a
    ``PreTrainedTokenizerFast`` with those special tokens, left padding (as batched generation
    needs) and :data:`CHAT_TEMPLATE`; no token is added around plain text."""
    from transformers import PreTrainedTokenizerFast

    return PreTrainedTokenizerFast(
        tokenizer_object=core,
        bos_token=BOS_TOKEN,
        eos_token=EOS_TOKEN,
        pad_token=PAD_TOKEN,
        unk_token=UNK_TOKEN,
        padding_side="left",
        chat_template=CHAT_TEMPLATE,
        model_max_length=model_max_length,
        **options,
    )


def render_chat(messages: Sequence[dict[str, str]], add_generation_prompt: bool = False) -> str:
    """The chat template written out by hand (equal to ``apply_chat_template(..., tokenize=False)``)."""
    text = "".join(f"{BOS_TOKEN}{m['role']}\n{m['content']}{EOS_TOKEN}\n" for m in messages)
    return text + (f"{BOS_TOKEN}assistant\n" if add_generation_prompt else "")


def generation_prompt(content: str, role: str = "user") -> str:
    """One ``role`` message followed by the assistant header (the prompt of a single-turn chat)."""
    return render_chat([{"role": role, "content": content}], add_generation_prompt=True)


def chat_prompt(question) -> str:
    """What a policy continues to answer ``question``: a user message → :func:`generation_prompt`;
    a list of messages → the rendered chat followed by the assistant header."""
    if isinstance(question, str):
        return generation_prompt(question)
    return render_chat(list(question), add_generation_prompt=True)


def chat_messages(prompt: str, answer: str) -> list[dict[str, str]]:
    """The two-message chat ``[user prompt, assistant answer]``."""
    return [{"role": "user", "content": prompt}, {"role": "assistant", "content": answer}]
