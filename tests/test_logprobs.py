"""Chunked, checkpointed log-probs and per-position KL from hidden states against the plain path
that materialises all response logits: values and gradients, any chunk size, padded responses,
and an adapted LM head."""

import pytest
import torch
import torch.nn.functional as F

from sail.models.lora import LoraAdapterConfig, attach_lora
from sail.models.tiny import tiny_qwen3
from sail.objectives import kl_exact
from sail.policies.causal_lm import CausalLMPolicy, PromptBatch, ResponseBatch, response_mask
from sail.policies.logprobs import default_chunk

EOS = 2


def _policy(chunk, targets=None):
    settings = LoraAdapterConfig(rank=4, alpha=8.0) if targets is None else LoraAdapterConfig(rank=4, alpha=8.0, target_modules=targets)
    model = attach_lora(tiny_qwen3(0, vocab_size=40, hidden_size=32, layers=2), settings, seed=0)
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.copy_(0.3 * torch.randn(p.shape, generator=gen))
    return CausalLMPolicy(model, EOS, 0, logprob_chunk=chunk)


def _batch():
    gen = torch.Generator().manual_seed(3)
    prompts = PromptBatch(torch.randint(3, 40, (3, 5), generator=gen), (torch.arange(5) >= torch.tensor([[0], [2], [1]])).long())
    tokens = torch.randint(3, 40, (3, 2, 6), generator=gen)
    tokens[0, 1, 2] = EOS  # a short response: positions after EOS are padding
    tokens[2, 0, 0] = EOS
    mask = response_mask(tokens.reshape(-1, 6), EOS).reshape(3, 2, 6)
    return prompts, ResponseBatch(torch.where(mask.bool(), tokens, torch.zeros_like(tokens)), mask)


def _plain(policy, prompts, responses, direction):
    """Sequence log-probs, reference log-probs and per-position KL from all logits at once."""
    logits, tokens, mask = policy._response_logits(prompts, responses)
    with torch.no_grad(), policy.model.disable_adapter():
        ref_logits, _, _ = policy._response_logits(prompts, responses)
    lsm, ref_lsm = F.log_softmax(logits.float(), -1), F.log_softmax(ref_logits.float(), -1)
    lp = (lsm.gather(-1, tokens[..., None]).squeeze(-1) * mask).sum(-1).reshape(3, 2)
    ref_lp = (ref_lsm.gather(-1, tokens[..., None]).squeeze(-1) * mask).sum(-1).reshape(3, 2)
    kl = (kl_exact(lsm, ref_lsm, direction) * mask).sum(-1).reshape(3, 2).mean(-1)
    return lp, ref_lp, kl


@pytest.mark.filterwarnings("ignore:Model has .tie_word_embeddings=True")
@pytest.mark.parametrize("chunk", [1, 5, 1000])
@pytest.mark.parametrize("direction", ["policy_to_ref", "ref_to_policy"])
@pytest.mark.parametrize("targets", [None, ["q_proj", "v_proj", "lm_head"]], ids=["all-linear", "adapted-head"])
def test_chunked_terms_match_the_plain_path(chunk, direction, targets):
    policy = _policy(chunk, targets)
    prompts, responses = _batch()
    params = policy.trainable_parameters()
    lp, ref_lp, kl = policy.score_pairs(prompts, responses, direction)
    plp, pref_lp, pkl = _plain(policy, prompts, responses, direction)
    for a, b in ((lp, plp), (ref_lp, pref_lp), (kl, pkl)):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    weights = torch.randn(3, 2, generator=torch.Generator().manual_seed(0))
    g = torch.autograd.grad((weights * lp).sum() + kl.sum(), params)
    pg = torch.autograd.grad((weights * plp).sum() + pkl.sum(), params)
    for a, b in zip(g, pg):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(policy.logprob(prompts, responses), plp, rtol=1e-5, atol=1e-5)


def test_default_chunk_bounds_the_float32_logits():
    assert default_chunk(151936) == 110  # 110 × 151,936 × 4 bytes ≈ 64 MB
    assert default_chunk(10) == 2**24 // 10
