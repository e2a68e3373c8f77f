"""The FLOP count behind the training step's MFU (`sail bench loop`), checked against torch's own
FLOP counter on a tiny Qwen3 with eager attention."""

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from sail.bench import mfu
from sail.bench.mfu import linear_weights, lora_weights, measured_matmul_tflops, step_flops
from sail.loop import SailConfig, sail_loss
from sail.models.lora import LoraAdapterConfig, attach_lora
from sail.models.tiny import tiny_qwen3
from sail.policies.causal_lm import CausalLMPolicy, PromptBatch, ResponseBatch, SamplingConfig

V, D, LAYERS, RANK = 512, 64, 2, 2
B, P, N, T = 2, 6, 2, 5


@pytest.fixture(scope="module")
def setup():
    base = tiny_qwen3(0, vocab_size=V, hidden_size=D, layers=LAYERS, heads=4, kv_heads=2)
    base.set_attn_implementation("eager")  # attention as matmuls, which the counter sees
    model = attach_lora(base, LoraAdapterConfig(rank=RANK, alpha=4.0), seed=0)
    policy = CausalLMPolicy(model, eos_token_id=None, pad_token_id=0, sampling=SamplingConfig(max_new_tokens=T, temperature=1.0))
    g = torch.Generator().manual_seed(0)
    batch = PromptBatch(torch.randint(1, V, (B, P), generator=g), torch.ones(B, P, dtype=torch.long))
    responses = ResponseBatch(torch.randint(1, V, (B, N, T), generator=g), torch.ones(B, N, T, dtype=torch.long))
    return model, policy, batch, responses


def _mm_flops(counter) -> int:
    return sum(v for op, v in counter.get_flop_counts()["Global"].items() if "mm" in str(op) and "bmm" not in str(op))


def test_linear_weights_counts_the_frozen_decoder_projections(setup):
    model = setup[0]
    per_layer = D * D + 2 * D * 32 + D * D + 3 * D * 2 * D  # q, k and v (2 kv heads of 16), o, gate/up/down
    assert linear_weights(model) == LAYERS * per_layer


def test_reference_forward_dense_flops_are_exact(setup):
    model, policy, batch, responses = setup
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        policy.ref_logprob(batch, responses)
    dense = 2 * linear_weights(model) * B * N * (P + T) + 2 * D * V * B * N * T
    assert _mm_flops(counter) == dense


def test_step_flops_is_a_tight_lower_bound_of_the_counted_step(setup):
    """The count leaves out work that is not model FLOPs: the LM head's checkpoint recompute, the
    reference logits recomputed inside each chunk for the exact KL, and the one position of logits
    each HF forward computes (all large here only because V is large against this model's width).
    The counter may see more, never less, and at most 20 % more; a missing backward or reference
    forward would put it 50 % above."""
    model, policy, batch, responses = setup
    p_win = torch.full((B,), 0.5, dtype=torch.float64)
    model.train()
    with FlopCounterMode(display=False) as counter:
        # the KL on the pair's own prefixes: the formula counts the loss on the pairs only
        objective = SailConfig(beta=0.1, gamma=1e-3, kl_estimator="per_token_on_policy_prefixes")
        loss, _ = sail_loss(policy, batch, responses, p_win, objective, torch.Generator().manual_seed(1), True, 0.0)
        loss.backward()
    model.zero_grad(set_to_none=True)
    formula = step_flops(linear_weights(model), LAYERS, D, V, B * N, P + T, B * N * T, lora_weights(model))
    counted = counter.get_total_flops()
    assert formula <= counted <= 1.2 * formula


def test_measured_matmul_throughput_is_the_best_timed_product(monkeypatch):
    """2·n³ FLOPs over the fastest timed product: with a stand-in clock that times the two products
    after the warm-up at 0.4 s and 0.25 s, 2·128³ / 0.25 s."""
    ticks = iter([0.0, 1.0, 1.4, 2.0, 2.25])
    monkeypatch.setattr(mfu.time, "perf_counter", lambda: next(ticks))
    tflops = measured_matmul_tflops("cpu", "float32", size=128, repeats=2)
    assert tflops == pytest.approx(2 * 128**3 / 0.25 / 1e12, rel=1e-12)
    assert next(ticks, None) is None  # the warm-up reads the clock once, each timed product twice
