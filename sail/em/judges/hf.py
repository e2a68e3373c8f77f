"""A local ``transformers`` causal LM as judge, with exact multi-token number probabilities (the
scoring rule of :mod:`sail.em.judges.rule`)."""

from __future__ import annotations

import copy
import inspect
import logging
import os
from typing import Mapping, Sequence

from sail.em.judges.rule import (
    ALIGNMENT_PROMPT,
    COHERENCE_PROMPT,
    MAX_SCORE,
    REFUSAL_MASS,
    PromptedJudge,
    fill_prompt,
    paired,
    score_from_number_probs,
)
from sail.em.judges.score import JudgeScore

log = logging.getLogger(__name__)


class HFJudge(PromptedJudge):
    """A local ``transformers`` causal LM as judge, with exact multi-token number probabilities.

    The filled judge prompt is the user message; the model's chat template renders it with the
    generation prompt (``chat_template_kwargs``, default ``{"enable_thinking": False}``, is passed to
    ``apply_chat_template``; templates that do not use a variable ignore it). For k = 0, …, 100 the
    candidate continuation is ``tok(str(k)) + end``, where ``tok`` is the tokenizer's own encoding of
    the bare number (no special tokens) and ``end`` is the end marker: by default the EOS token
    (``end_marker="eos"``), or the encoding of a given string (e.g. ``"<|im_end|>"`` for a base
    model whose EOS is different from its end-of-turn token). The end marker makes the candidates
    disjoint events — without it "1" would also collect the probability of "10"…"19" and "100" —
    so m = Σₖ pₖ ≤ 1 is a probability. ``end_marker=None`` drops it (not recommended).

    pₖ = Πₜ p(cₖ,ₜ | prompt, cₖ,<ₜ) is computed by batched teacher forcing: the prompt is run once,
    its KV cache is copied across a batch of candidates, and the candidates (right-padded) are
    scored in one forward pass per ``batch_size`` of them (``use_prefix_cache=False`` runs the full
    prompt+candidate sequences instead). Then the rule of :func:`score_from_number_probs`.
    Memory: a batch holds ``batch_size`` copies of the prompt's KV cache; lower ``batch_size`` for a
    large judge with long prompts.
    """

    def __init__(
        self,
        model,
        tokenizer=None,
        *,
        device: str | None = None,
        dtype=None,
        trust_remote_code: bool = False,
        alignment_prompt: str = ALIGNMENT_PROMPT,
        coherence_prompt: str = COHERENCE_PROMPT,
        end_marker: str | None = "eos",
        min_mass: float = REFUSAL_MASS,
        batch_size: int = MAX_SCORE + 1,
        chat_template_kwargs: Mapping | None = None,
        use_prefix_cache: bool = True,
    ):
        import torch

        if isinstance(model, (str, os.PathLike)):
            from transformers import AutoModelForCausalLM, AutoTokenizer

            path = os.fspath(model)
            if tokenizer is None:
                tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
            kwargs = {"trust_remote_code": trust_remote_code}
            if dtype is not None:
                kwargs["dtype"] = dtype
            model = AutoModelForCausalLM.from_pretrained(path, **kwargs)
            if device is None:
                device = "cuda" if torch.cuda.is_available() else "cpu"
        elif tokenizer is None:
            raise ValueError("HFJudge with a model object needs its tokenizer")
        if device is not None:
            model = model.to(device)
        self.model = model.eval()
        self.tokenizer = tokenizer
        if not getattr(tokenizer, "chat_template", None):
            raise ValueError("HFJudge needs a tokenizer with a chat template (the judge prompt is a user message)")
        self._set_prompts(alignment_prompt, coherence_prompt)
        self.min_mass = float(min_mass)
        if batch_size < 1:
            raise ValueError(f"batch_size must be ≥ 1, got {batch_size}")
        self.batch_size = int(batch_size)
        self.chat_template_kwargs = dict({"enable_thinking": False} if chat_template_kwargs is None else chat_template_kwargs)
        self.use_prefix_cache = bool(use_prefix_cache)
        self.candidates = self._candidates(end_marker)
        self.end_marker = end_marker
        # transformers ≥ 5.2x renamed the forward argument past_key_values -> cache
        self._forward_params = frozenset(inspect.signature(self.model.forward).parameters)
        self._cache_kwarg = "cache" if "cache" in self._forward_params else "past_key_values"

    def __repr__(self) -> str:
        name = getattr(getattr(self.model, "config", None), "_name_or_path", "") or type(self.model).__name__
        return f"HFJudge(model={name!r}, end_marker={self.end_marker!r})"

    def _candidates(self, end_marker: str | None) -> list[list[int]]:
        tok = self.tokenizer
        if end_marker == "eos":
            if tok.eos_token_id is None:
                raise ValueError("the tokenizer has no EOS token; pass end_marker explicitly")
            end = [int(tok.eos_token_id)]
        elif end_marker is None:
            end = []
        else:
            end = [int(i) for i in tok.encode(end_marker, add_special_tokens=False)]
            if not end:
                raise ValueError(f"end_marker {end_marker!r} encodes to no tokens")
        candidates = []
        unk = getattr(tok, "unk_token_id", None)
        for k in range(MAX_SCORE + 1):
            ids = [int(i) for i in tok.encode(str(k), add_special_tokens=False)]
            if not ids or (unk is not None and unk in ids) or tok.decode(ids).strip() != str(k):
                raise ValueError(f"the tokenizer cannot encode the number {k} (got ids {ids})")
            candidates.append(ids + end)
        if not end:
            as_tuples = [tuple(c) for c in candidates]
            if any(a != b and b[: len(a)] == a for a in as_tuples for b in as_tuples):
                log.warning("HFJudge without an end marker: some number is a token prefix of another, so the masses overlap")
        return candidates

    def render(self, prompt: str) -> str:
        """The chat-templated text of the judge prompt as a user turn, with the generation prompt."""
        return self.tokenizer.apply_chat_template(
            [{"role": "user", "content": prompt}], add_generation_prompt=True, tokenize=False, **self.chat_template_kwargs
        )

    def number_logprobs(self, prompt: str):
        """log pₖ for k = 0..100 (a float64 tensor of 101), for the filled judge ``prompt``."""
        import torch

        device = next(self.model.parameters()).device
        prefix = self.tokenizer(self.render(prompt), add_special_tokens=False)["input_ids"]
        if not prefix:
            raise ValueError("the rendered judge prompt is empty")
        prefix_ids = torch.tensor([prefix], device=device)
        out = torch.empty(len(self.candidates), dtype=torch.float64)
        with torch.inference_mode():
            if self.use_prefix_cache:
                extra = {"logits_to_keep": 1} if "logits_to_keep" in self._forward_params else {}
                first = self.model(input_ids=prefix_ids, use_cache=True, **extra)
                last = torch.log_softmax(first.logits[0, -1].float(), dim=-1).double()
                cache = first["cache"] if "cache" in first.keys() else first["past_key_values"]
            for start in range(0, len(self.candidates), self.batch_size):
                chunk = self.candidates[start : start + self.batch_size]
                if self.use_prefix_cache:
                    out[start : start + len(chunk)] = self._chunk_cached(chunk, last, cache, len(prefix), device)
                else:
                    out[start : start + len(chunk)] = self._chunk_full(chunk, prefix, device)
        return out

    def _padded(self, chunk: list[list[int]], device):
        import torch

        width = max(len(c) for c in chunk)
        ids = torch.zeros(len(chunk), width, dtype=torch.long, device=device)
        mask = torch.zeros(len(chunk), width, dtype=torch.bool, device=device)
        for i, c in enumerate(chunk):
            ids[i, : len(c)] = torch.tensor(c, device=device)
            mask[i, : len(c)] = True
        return ids, mask

    def _chunk_cached(self, chunk, last_logprobs, cache, prefix_len: int, device):
        """Σₜ log p(cₜ | prefix, c<ₜ) per candidate, the prefix's KV cache shared by the batch."""
        import torch

        ids, mask = self._padded(chunk, device)  # [b, T], right-padded
        b, width = ids.shape
        total = last_logprobs[ids[:, 0]].clone()  # first token: from the prefix's last position
        if width > 1:
            batch_cache = copy.deepcopy(cache)
            batch_cache.batch_repeat_interleave(b)
            attention = torch.ones(b, prefix_len + width - 1, dtype=torch.long, device=device)
            cache_arg = {self._cache_kwarg: batch_cache}
            logits = self.model(input_ids=ids[:, :-1], attention_mask=attention, use_cache=True, **cache_arg).logits
            logp = torch.log_softmax(logits.float(), dim=-1).double()  # [b, T-1, V]: predicts ids[:, 1:]
            step = logp.gather(-1, ids[:, 1:, None])[..., 0]
            total = total + (step * mask[:, 1:]).sum(-1)
        return total.cpu()

    def _chunk_full(self, chunk, prefix: list[int], device):
        """The same without the cache: full prefix+candidate sequences, right-padded."""
        import torch

        ids, mask = self._padded(chunk, device)
        b, width = ids.shape
        p = len(prefix)
        full = torch.cat([torch.tensor([prefix], device=device).expand(b, p), ids], dim=1)
        attention = torch.cat([torch.ones(b, p, dtype=torch.long, device=device), mask.long()], dim=1)
        logits = self.model(input_ids=full, attention_mask=attention).logits
        logp = torch.log_softmax(logits[:, p - 1 : p - 1 + width].float(), dim=-1).double()  # predicts ids
        step = logp.gather(-1, ids[..., None])[..., 0]
        return (step * mask).sum(-1).cpu()

    def number_probs(self, prompt: str):
        """pₖ for k = 0..100 (float64 tensor of 101)."""
        return self.number_logprobs(prompt).exp()

    def rate(self, template: str, question: str, answer: str) -> float | None:
        probs = self.number_probs(fill_prompt(template, question, answer)).tolist()
        return score_from_number_probs(dict(enumerate(probs)), self.min_mass)

    def score_batch(self, questions: Sequence[str], answers: Sequence[str]) -> list[JudgeScore]:
        return [self.score(q, a) for q, a in paired(questions, answers)]
