"""Causal-LM policies: an HF causal LM (Qwen3 by default) with a PEFT LoRA adapter.

π_θ(y|x) = Π_t p_θ(y_t | x, y_<t) over the response tokens, θ = the LoRA parameters; the reference
π_ref is the same network with the adapter disabled, which is exact while the base weights are
frozen (and equals π_θ at initialisation, where LoRA's B = 0); another reference (a frozen
starting adapter, a disabled head delta) is given as a context under which the model computes it.

The policy implements the protocol of :mod:`sail.policies.base`, so :mod:`sail.loop` trains it with
the same objective code as a log-linear policy. Sequence log-probabilities are computed with a
gather minus a log-sum-exp over the vocabulary from the final hidden states, the LM head applied in
checkpointed chunks of response positions (:mod:`sail.policies.logprobs`), so neither the logits of
all positions nor their float32 log-softmax is ever held at once.

Sampling distribution. The loop's estimator is unbiased for ∇J_γ only when responses are drawn from
π_θ itself, i.e. temperature 1, ``top_p`` 1 and no top-k truncation; other settings sample from a
different distribution (the authors' code uses temperature 0.9) and the estimate is then of a
related but different objective.
"""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass

import torch

from sail.data import prompt_token_ids
from sail.objectives import check_kl_direction
from sail.policies.logprobs import response_terms
from sail.sampling import SamplingConfig, make_sampler


@dataclass
class PromptBatch:
    """Left-padded prompt token ids [B, P], their attention mask, and the prompts as given."""

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    texts: list | None = None

    def __len__(self) -> int:
        return self.input_ids.shape[0]


@dataclass
class ResponseBatch:
    """n responses per prompt: tokens [B, n, T], a mask of real tokens (through the first EOS), and
    the decoded texts [B][n] when the policy has a tokenizer."""

    tokens: torch.Tensor
    mask: torch.Tensor
    texts: list[list[str]] | None = None

    @property
    def n(self) -> int:
        return self.tokens.shape[1]


def response_mask(tokens: torch.Tensor, eos_token_id: int | None) -> torch.Tensor:
    """1 up to and including the first EOS of each row of ``tokens`` [N, T], 0 after it."""
    if eos_token_id is None:
        return torch.ones_like(tokens, dtype=torch.long)
    is_eos = (tokens == eos_token_id).long()
    eos_before = torch.cumsum(is_eos, dim=-1) - is_eos  # EOS tokens strictly before position t
    return (eos_before == 0).long()


def token_logprobs(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """log p(target) = logit[target] − logsumexp(logits), position by position, in float32.

    ``logits`` [N, T, V], ``targets`` [N, T] → [N, T]. Looping over T keeps at most one [N, V]
    float32 slice alive per position (the autograd graph stores the logsumexp, not a log-softmax).
    """
    out = []
    for t in range(logits.shape[1]):
        step = logits[:, t].float()
        out.append(step.gather(-1, targets[:, t : t + 1]).squeeze(-1) - torch.logsumexp(step, dim=-1))
    return torch.stack(out, dim=1)


class CausalLMPolicy(torch.nn.Module):
    """A LoRA-adapted causal LM as a :class:`~sail.policies.base.Policy`.

    Args:
        model: a ``peft.PeftModel`` wrapping the causal LM (base weights frozen).
        eos_token_id: token that ends a response (None: responses always use ``max_new_tokens``).
        pad_token_id: token used to pad prompts on the left and responses on the right.
        sampling: :class:`SamplingConfig`.
        logprob_chunk: response positions per chunk of the LM head (None: ⌊2²⁴/V⌋, 64 MB of
            float32 logits); see :mod:`sail.policies.logprobs`.
        reference: a zero-argument callable returning a context manager under which ``model``
            computes π_ref (None: ``model.disable_adapter``, the base model).
    """

    def __init__(
        self,
        model,
        eos_token_id: int | None,
        pad_token_id: int,
        sampling: SamplingConfig | None = None,
        tokenizer=None,
        logprob_chunk: int | None = None,
        reference=None,
    ):
        super().__init__()
        self.model = model
        self._reference = reference
        self.tokenizer = tokenizer
        self.eos_token_id = eos_token_id
        self.pad_token_id = pad_token_id
        self.sampling = sampling or SamplingConfig()
        self.sampler = make_sampler(self.sampling.engine)
        self.logprob_chunk = logprob_chunk
        self._center = [p.detach().clone() for p in self.trainable_parameters()]

    # --- the Policy protocol -------------------------------------------------------------
    def reference(self):
        """A context inside which the model is π_ref: ``sample`` draws reference responses. Without a
        given reference: the adapter disabled (a model without an adapter is its own reference)."""
        if self._reference is not None:
            return self._reference()
        if hasattr(self.model, "disable_adapter"):
            return self.model.disable_adapter()
        return nullcontext()

    def trainable_parameters(self) -> list[torch.nn.Parameter]:
        return [p for p in self.model.parameters() if p.requires_grad]

    def ball_center(self) -> list[torch.Tensor]:
        """The adapter's initial parameters (the theory ball is centred on π_ref's adapter)."""
        return self._center

    @torch.no_grad()
    def sample(
        self, prompts: PromptBatch, n: int, generator: torch.Generator | None = None, greedy: bool = False
    ) -> ResponseBatch:
        """n responses per prompt from the configured sampler (``sampling.engine``); with a generator,
        sampling is reproducible from it. ``greedy`` decodes the argmax instead of sampling."""
        s = self.sampling
        try:
            tokens = self.sampler.generate(
                self.model,
                prompts.input_ids,
                prompts.attention_mask,
                n,
                s,
                self.eos_token_id,
                self.pad_token_id,
                generator=generator,
                greedy=greedy,
            )
        except RuntimeError as exc:  # torch.multinomial on the probabilities of non-finite logits
            if "probability tensor contains" not in str(exc):
                raise
            raise FloatingPointError(f"sampling: the policy's next-token probabilities are not finite ({exc})") from exc
        mask = response_mask(tokens, self.eos_token_id if s.stop_at_eos else None)
        tokens = torch.where(mask.bool(), tokens, torch.full_like(tokens, self.pad_token_id))
        batch = len(prompts)
        out = ResponseBatch(tokens.reshape(batch, n, -1), mask.reshape(batch, n, -1))
        out.texts = self.decode(out)
        return out

    # --- text ----------------------------------------------------------------------------
    def decode(self, responses: ResponseBatch) -> list[list[str]] | None:
        """Response texts [B][n] (special tokens dropped), or None without a tokenizer."""
        if self.tokenizer is None:
            return None
        flat = responses.tokens.reshape(-1, responses.tokens.shape[-1])
        keep = responses.mask.reshape(flat.shape).bool()
        texts = self.tokenizer.batch_decode([row[m].tolist() for row, m in zip(flat, keep)], skip_special_tokens=True)
        return [texts[i * responses.n : (i + 1) * responses.n] for i in range(responses.tokens.shape[0])]

    chat_template_kwargs: dict | None = None
    """Extra variables for the tokenizer's chat template (``data.chat_template_kwargs``, set by the
    trainer), e.g. ``{"enable_thinking": False}``."""

    def encode_prompts(self, prompts: list, device=None) -> PromptBatch:
        """Chat-template (when the tokenizer has one, with :attr:`chat_template_kwargs`) and left-pad a
        list of prompts (:func:`sail.data.prompt_token_ids`).

        A prompt is a user message string or a list of ``{"role", "content"}`` messages.
        """
        if self.tokenizer is None:
            raise ValueError("encode_prompts needs a tokenizer")
        rows = [prompt_token_ids(self.tokenizer, prompt, self.chat_template_kwargs) for prompt in prompts]
        width = max(len(r) for r in rows)
        input_ids = torch.full((len(rows), width), self.pad_token_id, dtype=torch.long)
        attention = torch.zeros((len(rows), width), dtype=torch.long)
        for i, r in enumerate(rows):
            input_ids[i, width - len(r) :] = torch.tensor(r, dtype=torch.long)
            attention[i, width - len(r) :] = 1
        if device is not None:
            input_ids, attention = input_ids.to(device), attention.to(device)
        return PromptBatch(input_ids, attention, list(prompts))

    def encode_responses(self, texts: list[list[str]], device=None) -> ResponseBatch:
        """Tokenise given response texts [B][n] (e.g. dataset pairs), each ended by EOS."""
        if self.tokenizer is None:
            raise ValueError("encode_responses needs a tokenizer")
        n = len(texts[0])
        flat = [self.tokenizer(t, add_special_tokens=False)["input_ids"] for row in texts for t in row]
        if self.eos_token_id is not None:
            flat = [ids + [self.eos_token_id] for ids in flat]
        width = max(1, max(len(ids) for ids in flat))
        tokens = torch.full((len(flat), width), self.pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(flat), width), dtype=torch.long)
        for i, ids in enumerate(flat):
            tokens[i, : len(ids)] = torch.tensor(ids, dtype=torch.long)
            mask[i, : len(ids)] = 1
        if device is not None:
            tokens, mask = tokens.to(device), mask.to(device)
        return ResponseBatch(tokens.reshape(len(texts), n, width), mask.reshape(len(texts), n, width), texts)

    def _response_inputs(self, prompts: PromptBatch, responses: ResponseBatch):
        n, T = responses.n, responses.tokens.shape[-1]
        ids = prompts.input_ids.repeat_interleave(n, dim=0)
        attn = prompts.attention_mask.repeat_interleave(n, dim=0)
        tokens = responses.tokens.reshape(-1, T)
        mask = responses.mask.reshape(-1, T)
        full_ids = torch.cat([ids, tokens], dim=1)
        full_attn = torch.cat([attn, mask.to(attn.dtype)], dim=1)
        position_ids = (full_attn.long().cumsum(-1) - 1).clamp(min=0)
        return dict(input_ids=full_ids, attention_mask=full_attn, position_ids=position_ids), tokens, mask

    def _response_logits(self, prompts: PromptBatch, responses: ResponseBatch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Logits predicting each response token: ([B·n, T, V], tokens [B·n, T], mask [B·n, T]).

        The plain path (all response logits at once); the policy itself uses :meth:`_response_hidden`
        and :func:`sail.policies.logprobs.response_terms`, and this stays as their reference."""
        inputs, tokens, mask = self._response_inputs(prompts, responses)
        logits = self.model(**inputs, logits_to_keep=tokens.shape[1] + 1).logits[:, :-1]
        return logits, tokens, mask

    def _response_hidden(self, prompts: PromptBatch, responses: ResponseBatch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Final hidden states at the positions predicting each response token: ([B·n, T, H], tokens,
        mask); the LM head is applied later, in chunks.

        The causal LM itself is called (under FSDP2 its hooks gather the root's weights), asked for
        logits at no position, and the decoder's output (after the final norm) is read by a forward
        hook: no logits are computed here, and no per-layer hidden states are kept."""
        inputs, tokens, mask = self._response_inputs(prompts, responses)
        captured = []

        def keep(module, args, output):
            captured.append(output.last_hidden_state if hasattr(output, "last_hidden_state") else output[0])

        handle = self._decoder().register_forward_hook(keep)
        try:
            self.model(**inputs, logits_to_keep=torch.empty(0, dtype=torch.long, device=inputs["input_ids"].device))
        finally:
            handle.remove()
        return captured[-1][:, -(tokens.shape[1] + 1) : -1], tokens, mask

    def _decoder(self):
        inner = self.model.get_base_model() if hasattr(self.model, "get_base_model") else self.model
        return inner.get_decoder()

    def _head(self):
        inner = self.model.get_base_model() if hasattr(self.model, "get_base_model") else self.model
        return inner.get_output_embeddings()

    def logprob(self, prompts: PromptBatch, responses: ResponseBatch) -> torch.Tensor:
        """log π_θ(y|x) = Σ_t mask_t log p_θ(y_t | x, y_<t), shape [B, n] (float32, differentiable)."""
        hidden, tokens, mask = self._response_hidden(prompts, responses)
        token_lp, _, _ = response_terms(self._head(), hidden, tokens, mask, chunk=self.logprob_chunk)
        return token_lp.sum(-1).reshape(len(prompts), responses.n)

    @torch.no_grad()
    def ref_logprob(self, prompts: PromptBatch, responses: ResponseBatch) -> torch.Tensor:
        """log π_ref(y|x): the network inside :meth:`reference`."""
        with self.reference():
            return self.logprob(prompts, responses)

    def per_position_kl(self, prompts: PromptBatch, responses: ResponseBatch, direction: str, kl_to_go: bool = False) -> torch.Tensor:
        """K(y) = Σ_t KL_dir(π_θ(·|x, y_<t), π_ref(·|x, y_<t)) over the vocabulary at each prefix of
        the given responses, averaged over the n responses: [B]; see :meth:`score_pairs`."""
        return self.score_pairs(prompts, responses, direction, kl_to_go)[2]

    def score_pairs(
        self,
        prompts: PromptBatch,
        responses: ResponseBatch,
        kl_direction: str | None = None,
        kl_to_go: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """(log π_θ [B, n], log π_ref [B, n], K [B] or None) from one forward pass of the policy and
        one of the reference (what the loss needs, without recomputing logits).

        K(y) = Σ_t k_t with k_t = KL_dir(π_θ(·|x, y_<t), π_ref(·|x, y_<t)) over the vocabulary,
        averaged over the n responses. By the chain rule, E_{y∼p}[K(y)] is the sequence KL when
        the prefixes come from the KL's first argument p: π_ref for ``ref_to_policy``, π_θ for
        ``policy_to_ref``. Its pathwise gradient is then unbiased for prefixes from π_ref (they do
        not depend on θ); for prefixes from π_θ it misses that they move with θ, and ``kl_to_go``
        adds the KL-to-go score term Σ_t (log p_θ(y_t) − sg(log p_θ(y_t)))·sg(Σ_{s>t} k_s): zero in
        value, and it makes the expected gradient exactly ∇E_{y∼π_θ}[K(y)] (∇E[k_t] = E[∇k_t] +
        E[k_t Σ_{s<t} ∇log p_θ(y_s)]). On π_θ prefixes that is ∇KL(π_θ‖π_ref) of the sequence for
        ``policy_to_ref``; for ``ref_to_policy`` E_{π_θ}[K] is another divergence than the
        sequence KL(π_ref‖π_θ) (see :data:`sail.objectives.PER_POSITION_KL_ESTIMATORS`).
        """
        if kl_direction is not None:
            check_kl_direction(kl_direction)
        hidden, tokens, mask = self._response_hidden(prompts, responses)
        with torch.no_grad(), self.reference():
            ref_hidden, _, _ = self._response_hidden(prompts, responses)
        token_lp, ref_token_lp, per_position = response_terms(
            self._head(), hidden, tokens, mask, ref_hidden, kl_direction, self.reference, self.logprob_chunk
        )
        batch, n = len(prompts), responses.n
        logp = token_lp.sum(-1).reshape(batch, n)
        ref_logp = ref_token_lp.sum(-1).reshape(batch, n)
        if kl_direction is None:
            return logp, ref_logp, None
        total = per_position.sum(-1)
        if kl_to_go:
            kl_to_go_values = (per_position.sum(-1, keepdim=True) - per_position.cumsum(-1)).detach()
            total = total + ((token_lp - token_lp.detach()) * kl_to_go_values).sum(-1)
        return logp, ref_logp, total.reshape(batch, n).mean(-1)
