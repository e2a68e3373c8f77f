"""Each KL estimator's expected gradient on a transformer, by enumerating every response.

On a tiny Qwen3 + LoRA whose responses can all be listed (a vocabulary with a real EOS token and at
most ``max_new_tokens`` new tokens, so responses have every length from 0 to the cap), the step's
KL term can be averaged exactly over the distribution its responses are drawn from
(:func:`sail.loop.kl_draw_source`): E_{y∼q}[∇term(y)] with q = π_ref or π_θ held fixed. The truth is
∇ E_x KL_dir(π_θ(·|x)‖…) of whole sequences, also by enumeration. ``relative_bias`` is
‖E[∇term] − ∇KL‖ / ‖∇KL‖. The model runs in float64, so unbiased entries sit at round-off (≤ 1e-12).

``sail check kl-estimators`` prints the table (docs/training.md shows its output).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from sail.loop import SailConfig, kl_draw_source, kl_loss_term
from sail.models.lora import LoraAdapterConfig, attach_lora
from sail.models.tiny import tiny_qwen3
from sail.objectives import KL_DIRECTIONS, KL_ESTIMATORS, kl_exact
from sail.policies.causal_lm import CausalLMPolicy, PromptBatch, ResponseBatch, SamplingConfig, response_mask
from sail.theory.llm.enumeration import enumerate_responses


@dataclass(frozen=True)
class EnumerableModel:
    """The shape of a tiny transformer whose responses can be enumerated."""

    vocab_size: int = 5
    """Vocabulary size V."""
    eos_token_id: int = 4
    """The EOS token (a response ends at its first EOS)."""
    max_new_tokens: int = 3
    """Longest response T; responses of every length 1 … T are enumerated."""
    hidden_size: int = 16
    """Model width (one decoder layer, 2 heads, 1 key-value head)."""
    lora_rank: int = 2
    """LoRA rank r on every projection (α = 2r)."""
    perturbation: float = 0.8
    """Scale of the random LoRA B (B = 0 would make π_θ = π_ref and every KL gradient 0)."""
    dtype: torch.dtype = torch.float64
    """The model's dtype: float64, so that unbiased estimators agree to round-off."""


def all_tokens(shape: EnumerableModel, pad_token_id: int) -> torch.Tensor:
    """Every response of the shape's vocabulary, EOS and cap as padded rows [N, T]
    (:func:`sail.theory.llm.enumeration.enumerate_responses`): L content tokens then EOS for L < T,
    and the T-token responses cut without EOS. Their probabilities sum to 1."""
    return enumerate_responses(shape.vocab_size, shape.eos_token_id, shape.max_new_tokens).padded(pad_token_id)[0]


def response_batch(tokens: torch.Tensor, batch: int, eos_token_id: int) -> ResponseBatch:
    """``tokens`` [N, T] as the same N responses for each of ``batch`` prompts."""
    mask = response_mask(tokens, eos_token_id)
    n, width = tokens.shape
    return ResponseBatch(tokens[None].expand(batch, n, width).contiguous(), mask[None].expand(batch, n, width).contiguous())


def enumerable_policy(shape: EnumerableModel = EnumerableModel(), seed: int = 0) -> CausalLMPolicy:
    """A tiny Qwen3 with a rank-r LoRA on every projection, B drawn at random so that π_θ ≠ π_ref."""
    base = tiny_qwen3(seed, shape.dtype, vocab_size=shape.vocab_size, hidden_size=shape.hidden_size, layers=1, heads=2, kv_heads=1)
    model = attach_lora(base, LoraAdapterConfig(rank=shape.lora_rank, alpha=2.0 * shape.lora_rank), seed=seed)
    gen = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.copy_(shape.perturbation * torch.randn(p.shape, generator=gen, dtype=torch.float64))
    sampling = SamplingConfig(max_new_tokens=shape.max_new_tokens, temperature=1.0)
    pad = 0 if shape.eos_token_id != 0 else 1
    return CausalLMPolicy(model, eos_token_id=shape.eos_token_id, pad_token_id=pad, sampling=sampling)


def enumerable_prompts() -> PromptBatch:
    """Two prompts, one left-padded."""
    return PromptBatch(torch.tensor([[0, 2, 3], [1, 1, 2]]), torch.tensor([[0, 1, 1], [1, 1, 1]]))


def _flat_grad(value: torch.Tensor, params) -> torch.Tensor:
    return torch.cat([g.flatten() for g in torch.autograd.grad(value, params)]).double()


def sequence_kl(policy: CausalLMPolicy, prompts: PromptBatch, direction: str, shape: EnumerableModel) -> torch.Tensor:
    """E_x KL_dir between the policy's and the reference's distributions over whole responses."""
    everything = response_batch(all_tokens(shape, policy.pad_token_id), len(prompts), shape.eos_token_id)
    logp = policy.logprob(prompts, everything)
    return kl_exact(logp, policy.ref_logprob(prompts, everything), direction).mean()


def expected_kl_term(
    policy: CausalLMPolicy, prompts: PromptBatch, cfg: SailConfig, shape: EnumerableModel
) -> tuple[torch.Tensor, torch.Tensor]:
    """(E_x E_{y∼q}[term(y)], E_x E_{y∼q}[value(y)]) of :func:`sail.loop.kl_loss_term` with the draw
    weights q(y) held fixed: the first one's gradient is the step's expected KL gradient, the second
    is the mean of the logged KL estimate."""
    tokens = all_tokens(shape, policy.pad_token_id)
    n, width = tokens.shape
    everything = response_batch(tokens, len(prompts), shape.eos_token_id)
    with torch.no_grad():
        weights = (policy.ref_logprob(prompts, everything) if kl_draw_source(cfg) == "reference" else policy.logprob(prompts, everything)).exp()
    one_each = PromptBatch(prompts.input_ids.repeat_interleave(n, 0), prompts.attention_mask.repeat_interleave(n, 0))
    singles = ResponseBatch(everything.tokens.reshape(-1, 1, width), everything.mask.reshape(-1, 1, width))
    kl = kl_loss_term(policy, one_each, singles, cfg)
    mean = lambda per_response: (weights * per_response.reshape(len(prompts), n)).sum(-1).mean()  # noqa: E731
    return mean(kl.term), mean(kl.value)


def estimator_bias(
    direction: str, estimator: str, shape: EnumerableModel = EnumerableModel(), seed: int = 4
) -> dict:
    """``relative_bias`` of the step's expected KL gradient, and the value's relative error."""
    policy = enumerable_policy(shape, seed)
    prompts = enumerable_prompts()
    params = policy.trainable_parameters()
    cfg = SailConfig(kl_direction=direction, kl_estimator=estimator)
    truth = sequence_kl(policy, prompts, direction, shape)
    expected, value = expected_kl_term(policy, prompts, cfg, shape)
    grad_truth, grad_expected = _flat_grad(truth, params), _flat_grad(expected, params)
    return {
        "kl_direction": direction,
        "kl_estimator": estimator,
        "draws_from": kl_draw_source(cfg),
        "relative_bias": float(torch.linalg.norm(grad_expected - grad_truth) / torch.linalg.norm(grad_truth)),
        "value_relative_error": float(abs(value - truth.detach()) / truth.detach()),
        "sequence_kl": float(truth.detach()),
    }


def bias_table(shape: EnumerableModel = EnumerableModel(), seed: int = 4) -> list[dict]:
    """:func:`estimator_bias` for every estimator in both directions."""
    return [estimator_bias(d, e, shape, seed) for d in KL_DIRECTIONS for e in KL_ESTIMATORS]


def markdown(rows: list[dict]) -> str:
    lines = [
        "| `kl_direction` | `kl_estimator` | draws from | gradient's relative bias | value's relative error |",
        "|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| `{r['kl_direction']}` | `{r['kl_estimator']}` | {'π_ref' if r['draws_from'] == 'reference' else 'π_θ'} "
            f"| {r['relative_bias']:.2g} | {r['value_relative_error']:.2g} |"
        )
    return "\n".join(lines)

