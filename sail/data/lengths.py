"""Prompts and responses in tokens: the one way a prompt is tokenised, and the length caps.

:func:`prompt_token_ids` is what the policy feeds the model (:meth:`sail.policies.causal_lm.CausalLMPolicy.encode_prompts`):
the chat template with the generation prompt when the tokenizer has one, else the messages' contents
joined by newlines. The caps measure prompts that same way, so a capped prompt encodes to at most the
cap.
"""

from __future__ import annotations

from typing import Mapping

from sail.data.records import Prompt


def prompt_token_ids(tokenizer, prompt: Prompt, chat_template_kwargs: Mapping | None = None) -> list[int]:
    """The token ids of ``prompt`` (a user message string or a list of messages) as the policy reads it;
    ``chat_template_kwargs`` go to ``apply_chat_template`` (e.g. ``{"enable_thinking": False}``)."""
    messages = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else prompt
    if getattr(tokenizer, "chat_template", None):
        ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True, **(chat_template_kwargs or {}))
        if isinstance(ids, dict) or hasattr(ids, "keys"):
            ids = ids["input_ids"]
        return list(ids)
    return list(tokenizer("\n".join(m["content"] for m in messages))["input_ids"])


def _content_ids(tokenizer, text: str) -> list[int]:
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def cut_prompt_left(tokenizer, prompt: Prompt, max_tokens: int, chat_template_kwargs: Mapping | None = None) -> Prompt | None:
    """``prompt`` with tokens cut from the start of its text (the earliest messages first) until it
    encodes to at most ``max_tokens``; None if even empty messages are longer (the template alone)."""
    messages = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else [dict(m) for m in prompt]
    length = len(prompt_token_ids(tokenizer, messages, chat_template_kwargs))
    while length > max_tokens:
        excess = length - max_tokens
        for m in messages:
            ids = _content_ids(tokenizer, m["content"])
            cut = min(excess, len(ids))
            if cut:
                m["content"] = tokenizer.decode(ids[cut:])
                excess -= cut
            if not excess:
                break
        shorter = len(prompt_token_ids(tokenizer, messages, chat_template_kwargs))
        if shorter >= length:  # nothing left to cut
            return None
        length = shorter
    return messages[0]["content"] if isinstance(prompt, str) else messages


def cut_response(tokenizer, text: str, max_tokens: int) -> str:
    """``text`` cut to its first ``max_tokens`` tokens (not counting the EOS the policy appends)."""
    ids = _content_ids(tokenizer, text)
    keep, length = max_tokens, len(ids)
    while length > max_tokens:  # decoding and encoding again can merge differently: then keep one fewer
        text = tokenizer.decode(ids[:keep])
        keep, length = keep - 1, len(_content_ids(tokenizer, text))
    return text
