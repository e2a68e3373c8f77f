"""A closed-vocabulary, character-level chat tokenizer with a Qwen3-style template, built offline.

Vocabulary (ids in this order, so the ids are the same on every machine):

* special tokens ``<|endoftext|>`` (pad), ``<|im_start|>`` (bos), ``<|im_end|>`` (eos), ``<unk>``;
* the role words ``system``, ``user``, ``assistant`` as whole tokens (as in Qwen3's BPE vocabulary,
  where each is one token), so the fixed part of a chat turn stays short;
* every printable ASCII character (space to ``~``) and ``\\n``, one token each.

Any other character encodes as ``<unk>``. Text made of the characters above round-trips exactly:
``decode(encode(s)) == s`` (the decoder concatenates tokens without separators).

Chat template (Qwen3's format without the thinking block)::

    <|im_start|>{role}\\n{content}<|im_end|>\\n      (for each message)
    <|im_start|>assistant\\n                       (with add_generation_prompt=True)

An assistant turn ends with ``<|im_end|>``, the tokenizer's EOS token, so generation stops there.
"""

from __future__ import annotations

PAD_TOKEN = "<|endoftext|>"
BOS_TOKEN = "<|im_start|>"
EOS_TOKEN = "<|im_end|>"
UNK_TOKEN = "<unk>"
SPECIAL_TOKENS = (PAD_TOKEN, BOS_TOKEN, EOS_TOKEN, UNK_TOKEN)
ROLE_TOKENS = ("system", "user", "assistant")
CHARACTERS = ("\n",) + tuple(chr(c) for c in range(32, 127))

CHAT_TEMPLATE = (
    "{%- for message in messages %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)


def vocabulary() -> dict[str, int]:
    """Token → id: special tokens, then role words, then characters (see the module docstring)."""
    tokens = SPECIAL_TOKENS + ROLE_TOKENS + CHARACTERS
    return {token: i for i, token in enumerate(tokens)}


def build_tokenizer():
    """The chat tokenizer as a ``transformers.PreTrainedTokenizerFast`` (no download, no files read).

    pad = ``<|endoftext|>`` (id 0), bos = ``<|im_start|>`` (id 1), eos = ``<|im_end|>`` (id 2),
    unk = ``<unk>`` (id 3). No token is added around plain text (no post-processor); the chat
    template writes the markers. Padding is on the left, as batched generation needs.
    """
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers

    core = Tokenizer(models.WordLevel(vocabulary(), unk_token=UNK_TOKEN))
    # every character is its own pre-token ([\s\S] also matches "\n")
    core.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
    core.decoder = decoders.Fuse()
    core.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in SPECIAL_TOKENS])
    core.add_tokens([AddedToken(t, special=False, normalized=False) for t in ROLE_TOKENS])
    return wrap_chat_tokenizer(core)


def wrap_chat_tokenizer(core, model_max_length: int = 512, **options):
    """A ``tokenizers.Tokenizer`` over a vocabulary that starts with :data:`SPECIAL_TOKENS` as a
    ``PreTrainedTokenizerFast`` with those special tokens, left padding and :data:`CHAT_TEMPLATE`."""
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


def generation_prompt(content: str, role: str = "user") -> str:
    """The chat-templated text of one user message followed by the assistant header.

    Equal to ``tokenizer.apply_chat_template([{"role": role, "content": content}],
    add_generation_prompt=True, tokenize=False)``, without rendering the Jinja template.
    """
    return f"{BOS_TOKEN}{role}\n{content}{EOS_TOKEN}\n{BOS_TOKEN}assistant\n"
