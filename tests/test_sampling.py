"""The fast sampler (merged weights + static KV cache) against plain ``generate``: same greedy
tokens, the same sampling distribution (by enumeration), weights refreshed after every update."""

import itertools

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from sail.models.lora import LoraAdapterConfig, attach_lora
from sail.models.tiny import tiny_qwen3
from sail.policies.causal_lm import CausalLMPolicy, PromptBatch, ResponseBatch
from sail.sampling import SAMPLERS, HFGenerateSampler, SamplingConfig, make_sampler, register_sampler
from sail.sampling.fast import MergedWeights, nucleus_probs, sample_next

EOS, PAD = 2, 0


def _adapted(seed=0, vocab=50, perturb=0.3, **shape):
    shape = {"hidden_size": 32, "layers": 2, **shape}
    model = attach_lora(tiny_qwen3(seed, vocab_size=vocab, **shape), LoraAdapterConfig(rank=4, alpha=8.0), seed=seed)
    gen = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.copy_(perturb * torch.randn(p.shape, generator=gen))
    return model


def _policies(model, **sampling):
    return (
        CausalLMPolicy(model, EOS, PAD, SamplingConfig(engine="hf", **sampling)),
        CausalLMPolicy(model, EOS, PAD, SamplingConfig(engine="fast", **sampling)),
    )


def _left_padded_prompts():
    ids = torch.tensor([[0, 0, 5, 6, 7], [8, 9, 10, 11, 12], [0, 13, 14, 15, 16]])
    return PromptBatch(ids, (torch.arange(5) >= torch.tensor([[2], [0], [1]])).long())


def _step_adapter(model, scale=0.2, seed=9):
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(scale * torch.randn(p.shape, generator=gen))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_greedy_decoding_matches_generate_token_for_token(seed):
    slow, fast = _policies(_adapted(seed), max_new_tokens=12)
    prompts = _left_padded_prompts()
    a, b = slow.sample(prompts, 2, greedy=True), fast.sample(prompts, 2, greedy=True)
    assert torch.equal(a.tokens, b.tokens) and torch.equal(a.mask, b.mask)


def test_eos_ends_each_row_and_decoding_stops_when_all_have_ended():
    model = _adapted(0)
    prompts = _left_padded_prompts()
    greedy = CausalLMPolicy(model, None, PAD, SamplingConfig(max_new_tokens=20, engine="fast")).sample(prompts, 1, greedy=True)
    eos = int(torch.mode(greedy.tokens.flatten()).values)  # a token this model emits often
    fast = CausalLMPolicy(model, eos, PAD, SamplingConfig(max_new_tokens=200, temperature=0.5, engine="fast"))
    out = fast.sample(prompts, 4, generator=torch.Generator().manual_seed(0))
    tokens, mask = out.tokens.reshape(-1, out.tokens.shape[-1]), out.mask.reshape(-1, out.tokens.shape[-1])
    assert out.tokens.shape[-1] < 200  # stopped early: every row emitted EOS
    lengths = mask.sum(-1)
    assert lengths.min() < lengths.max()  # rows ended at different steps
    for row, end in zip(tokens, lengths.tolist()):
        assert row[end - 1] == eos and (row[end:] == PAD).all() and (row[: end - 1] != eos).all()


def test_fast_samples_follow_the_policy_distribution():
    """Frequencies of all 25 two-token responses vs π_θ computed by the slow path's log-probs."""
    vocab, horizon, draws = 5, 2, 3000
    model = _adapted(3, vocab=vocab, perturb=0.8, hidden_size=16, layers=1, heads=2, kv_heads=1)
    policy = CausalLMPolicy(model, None, PAD, SamplingConfig(max_new_tokens=horizon, engine="fast"))
    prompts = PromptBatch(torch.tensor([[0, 2, 3], [4, 1, 2]]), torch.tensor([[0, 1, 1], [1, 1, 1]]))
    everything = torch.tensor(list(itertools.product(range(vocab), repeat=horizon)))
    grid = ResponseBatch(everything[None].expand(2, -1, -1).contiguous(), torch.ones(2, len(everything), horizon, dtype=torch.long))
    probs = policy.logprob(prompts, grid).exp().detach().double()
    samples = policy.sample(prompts, draws, generator=torch.Generator().manual_seed(0))
    index = samples.tokens[..., 0] * vocab + samples.tokens[..., 1]
    for b in range(2):
        freq = torch.bincount(index[b], minlength=vocab**horizon).double() / draws
        se = torch.sqrt(probs[b] * (1 - probs[b]) / draws)
        assert ((freq - probs[b]).abs() <= 4 * se + 1e-3).all()


def test_merged_weights_follow_every_update_and_adapter_switch():
    model = _adapted(0)
    slow, fast = _policies(model, max_new_tokens=10)
    prompts = _left_padded_prompts()
    before = fast.sample(prompts, 1, greedy=True).tokens
    _step_adapter(model)  # an in-place update, as an optimiser step makes
    after = fast.sample(prompts, 1, greedy=True).tokens
    assert not torch.equal(before, after)
    assert torch.equal(after, slow.sample(prompts, 1, greedy=True).tokens)
    model.load_state_dict({k: v.clone() for k, v in _adapted(5).state_dict().items()})  # a checkpoint load
    assert torch.equal(fast.sample(prompts, 1, greedy=True).tokens, slow.sample(prompts, 1, greedy=True).tokens)
    with model.disable_adapter():  # the reference: the base model alone
        assert torch.equal(fast.sample(prompts, 1, greedy=True).tokens, slow.sample(prompts, 1, greedy=True).tokens)


def test_merged_copy_shares_every_tensor_but_the_adapted_weights():
    model = _adapted(0)
    merged = MergedWeights(model)
    live = dict(model.get_base_model().named_parameters())
    adapted = 0
    for name, p in merged.model.named_parameters():
        if name.endswith("proj.weight"):
            adapted += 1
            base = live[name.replace(".weight", ".base_layer.weight")]
            assert p.data_ptr() != base.data_ptr()
            module = model.get_base_model().get_submodule(name.rsplit(".", 1)[0])
            torch.testing.assert_close(p, base + module.get_delta_weight("default"))
        else:
            assert p.data_ptr() == live[name].data_ptr(), name
    assert adapted == 7 * 2  # all 7 projections in both layers
    assert all(not p.requires_grad for p in merged.model.parameters())


def test_sampling_is_reproducible_from_the_generator_and_leaves_global_rng_alone():
    _, fast = _policies(_adapted(0), max_new_tokens=8)
    prompts = _left_padded_prompts()
    state = torch.random.get_rng_state()
    a = fast.sample(prompts, 3, generator=torch.Generator().manual_seed(7)).tokens
    b = fast.sample(prompts, 3, generator=torch.Generator().manual_seed(7)).tokens
    assert torch.equal(a, b) and torch.equal(state, torch.random.get_rng_state())


@settings(max_examples=60, deadline=None)
@given(
    logits=st.lists(st.floats(-8, 8), min_size=2, max_size=12),
    top_p=st.floats(0.05, 1.0),
    temperature=st.floats(0.3, 3.0),
)
def test_nucleus_keeps_the_smallest_top_set_reaching_top_p(logits, top_p, temperature):
    x = torch.tensor([logits])
    full = torch.softmax(x / temperature, -1)[0]
    kept = nucleus_probs(x, temperature, top_p)[0]
    inside = kept > 0
    if (~inside).any():  # the kept tokens are the most likely ones
        assert full[inside].min() >= full[~inside].max()
    mass = full[inside].sum()
    assert mass >= top_p - 1e-5  # they reach top_p …
    assert inside.sum() == 1 or mass - full[inside].min() < top_p + 1e-5  # … and one fewer would not
    torch.testing.assert_close(kept[inside], full[inside] / mass)


def test_unknown_engine_is_named_and_a_registered_engine_is_accepted():
    with pytest.raises(ValueError, match="engine: expected one of 'fast', 'hf', got 'vllm'"):
        SamplingConfig(engine="vllm")
    with pytest.raises(ValueError, match="unknown sampling engine 'nope'"):
        make_sampler("nope")
    register_sampler("greedy-test", HFGenerateSampler)  # the config reaches the registry
    try:
        assert SamplingConfig(engine="greedy-test").engine == "greedy-test"
        assert isinstance(make_sampler("greedy-test"), HFGenerateSampler)
    finally:
        SAMPLERS.pop("greedy-test")


@pytest.mark.parametrize("vocab,top_p", [(1003, 1.0), (1003, 0.8), (7, 1.0), (1, 1.0)])
def test_two_level_inverse_cdf_draws_each_token_with_its_probability(vocab, top_p):
    """sample_next's block-then-token draw vs the exact nucleus distribution (4-SE bands), with a
    vocabulary that is not a multiple of the block width; tokens outside the nucleus never appear."""
    draws = 20000
    logits = 2.0 * torch.randn(1, vocab, generator=torch.Generator().manual_seed(vocab))
    probs = nucleus_probs(logits, 1.0, top_p)[0].double()
    tokens = sample_next(logits.expand(draws, vocab), 1.0, top_p, torch.Generator().manual_seed(1), greedy=False)
    freq = torch.bincount(tokens, minlength=vocab).double() / draws
    assert freq.numel() == vocab  # nothing drawn past the vocabulary
    assert (freq[probs == 0] == 0).all()
    se = torch.sqrt(probs * (1 - probs) / draws)
    assert ((freq - probs).abs() <= 4 * se + 2e-4).all()


@pytest.mark.slow
def test_compiled_fast_sampler_matches_eager_and_follows_updates():
    """torch.compile of the merged model (minutes on a CPU: slow marker): greedy tokens equal the
    eager fast path, before and after an in-place adapter update."""
    model = _adapted(0)
    prompts = _left_padded_prompts()
    eager = CausalLMPolicy(model, EOS, PAD, SamplingConfig(max_new_tokens=6, engine="fast"))
    compiled = CausalLMPolicy(model, EOS, PAD, SamplingConfig(max_new_tokens=6, engine="fast", compile=True))
    assert torch.equal(compiled.sample(prompts, 1, greedy=True).tokens, eager.sample(prompts, 1, greedy=True).tokens)
    _step_adapter(model)
    assert torch.equal(compiled.sample(prompts, 1, greedy=True).tokens, eager.sample(prompts, 1, greedy=True).tokens)
