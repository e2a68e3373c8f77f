"""CausalLMPolicy on a tiny Qwen3 whose responses can be enumerated: log-probs, sampling, reference,
and the unbiasedness of the shared SAIL estimator for an LLM policy."""

import itertools

import pytest
import torch

from sail.loop import SailConfig, sail_loss
from sail.models.lora import LoraAdapterConfig, attach_lora
from sail.models.tiny import tiny_qwen3
from sail.objectives import KL_DIRECTIONS, KL_ESTIMATORS, kl_exact, pair_term
from sail.oracles import bradley_terry_labels
from sail.policies.causal_lm import CausalLMPolicy, PromptBatch, ResponseBatch, SamplingConfig, response_mask
from sail.theory.kl_estimators import EnumerableModel, all_tokens, enumerable_policy, enumerable_prompts, estimator_bias, response_batch

VOCAB, T = 5, 2


def _policy(seed=0, perturb=0.5):
    model = attach_lora(tiny_qwen3(seed, vocab_size=VOCAB, hidden_size=16, layers=1, heads=2, kv_heads=1), LoraAdapterConfig(rank=2, alpha=4.0), seed=seed)
    gen = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.copy_(perturb * torch.randn(p.shape, generator=gen))
    return CausalLMPolicy(model, eos_token_id=None, pad_token_id=0, sampling=SamplingConfig(max_new_tokens=T, temperature=1.0))


def _prompts():
    return PromptBatch(torch.tensor([[0, 2, 3], [4, 1, 2]]), torch.tensor([[0, 1, 1], [1, 1, 1]]))


def _all_responses(batch):
    tokens = torch.tensor(list(itertools.product(range(VOCAB), repeat=T)))
    n = tokens.shape[0]
    return ResponseBatch(tokens[None].expand(batch, n, T).contiguous(), torch.ones(batch, n, T, dtype=torch.long))


def _reward(responses: ResponseBatch) -> torch.Tensor:
    """A programmatic reward: count of token 3 minus half the count of token 4."""
    t = responses.tokens
    return (t == 3).sum(-1).double() - 0.5 * (t == 4).sum(-1).double()


def test_response_mask_stops_after_first_eos():
    tokens = torch.tensor([[5, 1, 7, 1], [5, 6, 7, 8]])
    assert response_mask(tokens, 1).tolist() == [[1, 1, 0, 0], [1, 1, 1, 1]]


def test_logprob_handles_left_padding_and_sums_to_one():
    policy = _policy()
    prompts = _prompts()
    everything = _all_responses(2)
    lp = policy.logprob(prompts, everything)
    torch.testing.assert_close(lp.exp().sum(-1), torch.ones(2), rtol=1e-5, atol=1e-5)
    # the padded prompt gives the same log-probs as the unpadded one run alone
    alone = policy.logprob(PromptBatch(torch.tensor([[2, 3]]), torch.tensor([[1, 1]])), _all_responses(1))
    torch.testing.assert_close(lp[0], alone[0], rtol=1e-5, atol=1e-5)
    # and the chain rule holds against a plain forward pass of the full sequence
    full = torch.tensor([[2, 3, 4, 1]])
    with torch.no_grad():
        logits = policy.model(input_ids=full).logits[0].log_softmax(-1)
    one = ResponseBatch(torch.tensor([[[4, 1]]]), torch.ones(1, 1, 2, dtype=torch.long))
    direct = logits[1, 4] + logits[2, 1]
    torch.testing.assert_close(policy.logprob(PromptBatch(torch.tensor([[2, 3]]), torch.ones(1, 2, dtype=torch.long)), one)[0, 0], direct)


def test_generate_samples_from_the_policy_distribution():
    policy = _policy()
    prompts = _prompts()
    probs = policy.logprob(prompts, _all_responses(2)).exp().detach()
    gen = torch.Generator().manual_seed(0)
    samples = policy.sample(prompts, 2000, generator=gen)
    index = samples.tokens[..., 0] * VOCAB + samples.tokens[..., 1]
    for b in range(2):
        freq = torch.bincount(index[b], minlength=VOCAB**T).double() / 2000
        se = torch.sqrt(probs[b].double() * (1 - probs[b].double()) / 2000)
        assert ((freq - probs[b]).abs() <= 4 * se + 1e-3).all()
    again = policy.sample(prompts, 3, generator=torch.Generator().manual_seed(5))
    assert torch.equal(again.tokens, policy.sample(prompts, 3, generator=torch.Generator().manual_seed(5)).tokens)


def test_reference_is_the_base_model():
    policy = _policy()
    prompts, everything = _prompts(), _all_responses(2)
    base = CausalLMPolicy(tiny_qwen3(0, vocab_size=VOCAB, hidden_size=16, layers=1, heads=2, kv_heads=1), None, 0)
    with torch.no_grad():
        torch.testing.assert_close(policy.ref_logprob(prompts, everything), base.logprob(prompts, everything))
        assert (policy.logprob(prompts, everything) - policy.ref_logprob(prompts, everything)).abs().max() > 1e-3
    names = [n for n, p in policy.model.named_parameters() if p.requires_grad]
    assert names and all("lora_" in n for n in names)


def _exact_objective(policy, prompts, beta, gamma, direction, detach_pair_weights=False):
    """J_γ by enumerating every pair of responses (differentiable in the adapter).

    ``detach_pair_weights``: hold π₁π₂ fixed, giving the objective whose gradient online DPO
    (no score-function term) follows in expectation."""
    everything = _all_responses(len(prompts))
    lp = policy.logprob(prompts, everything)
    with torch.no_grad():
        ref = policy.ref_logprob(prompts, everything)
    r = _reward(everything)
    delta = (lp - ref)[:, :, None] - (lp - ref)[:, None, :]
    p_star = torch.sigmoid(r[:, :, None] - r[:, None, :]).float()
    weights = lp.exp()[:, :, None] * lp.exp()[:, None, :]
    if detach_pair_weights:
        weights = weights.detach()
    sail = (weights * pair_term(delta, p_star, beta)).sum((1, 2)).mean()
    return sail - gamma * kl_exact(lp, ref, direction).mean()


@pytest.mark.parametrize(
    "direction,estimator,score_term",
    [
        ("ref_to_policy", "sequence", True),
        ("policy_to_ref", "sequence", True),
        ("ref_to_policy", "k3_score", True),
        ("policy_to_ref", "k2", False),
    ],
    ids=["sail-revkl-default", "sail-revkl-policy-to-ref", "sail-revkl-k3-score", "online-dpo"],
)
def test_llm_surrogate_gradient_is_unbiased(direction, estimator, score_term):
    """Mean of the loop's sampled loss gradients = exact ∇J_γ (within 3 SE along fixed directions).

    Negative control: without the score-function term (online DPO) the estimator follows the
    gradient with π₁π₂ held fixed, which differs from ∇J."""
    policy = _policy(seed=3)
    prompts = _prompts()
    beta = 0.7
    gamma = 0.5 if score_term else 0.0  # the control compares preference gradients alone
    params = policy.trainable_parameters()

    def exact_grad(detach):
        grads = torch.autograd.grad(_exact_objective(policy, prompts, beta, gamma, direction, detach), params)
        return torch.cat([g.flatten() for g in grads])

    exact = exact_grad(detach=False)
    if not score_term:
        dpo = exact_grad(detach=True)
        assert torch.linalg.norm(dpo - exact) > 0.1 * torch.linalg.norm(exact)  # 0.118 here
        exact = dpo
    # estimators whose gradient is unbiased for the sequence KL (see sail.objectives.kl_sample_estimate)
    cfg = SailConfig(
        beta=beta,
        gamma=gamma,
        kl_direction=direction,
        kl_estimator=estimator,
        score_term=score_term,
    )
    directions = torch.randn(6, exact.numel(), generator=torch.Generator().manual_seed(0))
    directions = torch.cat([directions, exact[None]])
    gen = torch.Generator().manual_seed(11)
    kl_gen = torch.Generator().manual_seed(12)  # the KL term's own draws: seeded, so the test does not depend on test order
    projections = []
    for _ in range(300):
        responses = policy.sample(prompts, 2, generator=gen)
        r = _reward(responses)
        p_win = bradley_terry_labels(r[:, 0], r[:, 1], "sample", gen)
        for p in params:
            p.grad = None
        loss, _ = sail_loss(policy, prompts, responses, p_win, cfg, kl_generator=kl_gen)
        loss.backward()
        grad = -torch.cat([p.grad.flatten() for p in params])
        projections.append(directions @ grad)
    projections = torch.stack(projections).double()
    mean, se = projections.mean(0), projections.std(0) / len(projections) ** 0.5
    target = (directions @ exact).double()
    assert ((mean - target).abs() <= 3 * se).all(), (mean, target, se)


# (direction, estimator) → is the step's expected KL gradient that of the sequence KL?
KL_GRADIENT_TABLE = [
    ("ref_to_policy", "sequence", True),
    ("ref_to_policy", "per_token_on_policy_prefixes", False),
    ("ref_to_policy", "k1", False),
    ("ref_to_policy", "k2", False),
    ("ref_to_policy", "k3", False),
    ("ref_to_policy", "k1_score", True),
    ("ref_to_policy", "k2_score", False),
    ("ref_to_policy", "k3_score", True),
    ("policy_to_ref", "sequence", True),
    ("policy_to_ref", "per_token_on_policy_prefixes", False),
    ("policy_to_ref", "k1", False),
    ("policy_to_ref", "k2", True),
    ("policy_to_ref", "k3", False),
    ("policy_to_ref", "k1_score", True),
    ("policy_to_ref", "k2_score", False),
    ("policy_to_ref", "k3_score", True),
]


def test_the_table_covers_every_estimator_in_both_directions():
    assert sorted((d, e) for d, e, _ in KL_GRADIENT_TABLE) == sorted(itertools.product(KL_DIRECTIONS, KL_ESTIMATORS))


@pytest.mark.parametrize("direction,estimator,unbiased", KL_GRADIENT_TABLE)
def test_llm_kl_estimator_gradients_against_the_sequence_kl(direction, estimator, unbiased):
    """Each estimator's expected gradient, averaged exactly over the responses it draws (π_ref or
    π_θ), against the sequence KL's gradient, on a float64 tiny Qwen3 with a real EOS token and
    responses of every length 0–3. Unbiased entries agree to round-off (< 1e-5 relative; the
    attention softmax runs in float32); biased ones are off by > 1e-2. `sail check kl-estimators`
    prints the measured table (docs/training.md)."""
    row = estimator_bias(direction, estimator)
    if unbiased:
        assert row["relative_bias"] < 1e-5, row
    else:
        assert row["relative_bias"] > 1e-2, row


@pytest.mark.parametrize("direction", KL_DIRECTIONS)
def test_sequence_estimator_is_the_sequence_kl_in_value(direction):
    """By the chain rule, the per-position KL summed along prefixes drawn from the KL's first
    argument averages to the sequence KL; on the other argument's prefixes it does not (the
    control: ``per_token_on_policy_prefixes`` for ``ref_to_policy``)."""
    assert estimator_bias(direction, "sequence")["value_relative_error"] < 1e-10
    if direction == "ref_to_policy":
        assert estimator_bias(direction, "per_token_on_policy_prefixes")["value_relative_error"] > 1e-2


def test_enumerated_responses_carry_all_the_probability():
    """With EOS: L tokens then EOS for L < T, and the cut T-token responses; Σ π(y) = 1."""
    shape = EnumerableModel()
    tokens = all_tokens(shape, pad_token_id=0)
    assert tokens.shape[0] == 1 + 4 + 16 + 64
    policy = enumerable_policy(shape)
    batch = response_batch(tokens, 2, shape.eos_token_id)
    with torch.no_grad():
        total = policy.logprob(enumerable_prompts(), batch).exp().sum(-1)
        ref_total = policy.ref_logprob(enumerable_prompts(), batch).exp().sum(-1)
    torch.testing.assert_close(total, torch.ones(2, dtype=total.dtype), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(ref_total, torch.ones(2, dtype=total.dtype), rtol=1e-12, atol=1e-12)
    # the empty response (EOS first) is one of them, and its mask keeps exactly the EOS factor
    assert batch.mask[0, 0].tolist() == [1, 0, 0]


def test_kl_to_go_keeps_the_value():
    """The KL-to-go term changes the gradient only: the reported KL is the same number."""
    policy = _policy(seed=4)
    prompts, responses = _prompts(), _all_responses(2)
    plain = policy.per_position_kl(prompts, responses, "policy_to_ref")
    corrected = policy.per_position_kl(prompts, responses, "policy_to_ref", kl_to_go=True)
    torch.testing.assert_close(plain, corrected)
