"""sail.spectral: exact spectra from Gram cores, flatness metrics, the penalty, logging, plots."""

from __future__ import annotations

import importlib.util
import json
import math
import sys
from pathlib import Path

import numpy as np
import peft
import pytest
import torch
import transformers
from hypothesis import given, settings
from hypothesis import strategies as st
from matplotlib.image import imread

from sail.models.lora import LORA_TARGETS_ALL_LINEAR
from sail.spectral import (
    PENALTY_KINDS,
    LoraFactor,
    SpectralConfig,
    SpectralLogger,
    flatness,
    gram_eigenvalues,
    lora_factors,
    lora_spectra,
    module_penalties,
    penalty,
    read_jsonl,
    trace_moments,
)
from sail.spectral.gram import factor_grams
from sail.spectral.penalty import NUCLEAR_LIFT
from sail.spectral.plots import METRIC_LABELS, flatness_figure, plot_flatness, plot_spectra, spectra_figure

PROJECTIONS = list(LORA_TARGETS_ALL_LINEAR)


def random_factor(r, d_in, d_out, seed, deficient=0, dtype=torch.float32, scaling=0.5, name="m"):
    """A, B with σ(B A) = O(1); ``deficient`` > 0 zeroes that many columns of B (rank r − deficient)."""
    gen = torch.Generator().manual_seed(seed)
    A = torch.randn(r, d_in, generator=gen, dtype=dtype) / math.sqrt(d_in)
    B = torch.randn(d_out, r, generator=gen, dtype=dtype) / math.sqrt(r)
    if deficient:
        B[:, :deficient] = 0
    return LoraFactor(name, A, B, scaling, name)


# --- exact spectra --------------------------------------------------------------------------------
@settings(max_examples=60, deadline=None)
@given(
    r=st.integers(1, 12),
    d_in=st.integers(1, 24),
    d_out=st.integers(1, 24),
    deficient=st.integers(0, 3),
    low_rank_A=st.booleans(),
    scaling=st.sampled_from([1.0, 0.25, 2.0, 16 / math.sqrt(8)]),
    seed=st.integers(0, 2**16),
)
def test_spectra_equal_svdvals(r, d_in, d_out, deficient, low_rank_A, scaling, seed):
    """σ(s·B@A) to 1e-5 in fp32, including r > min(d_in, d_out) and rank-deficient factors."""
    f = random_factor(r, d_in, d_out, seed, min(deficient, r - 1), scaling=scaling)
    if low_rank_A and r > 1:  # A = U V with inner dimension 1: rank-1 A
        gen = torch.Generator().manual_seed(seed + 1)
        A = torch.randn(r, 1, generator=gen) @ torch.randn(1, d_in, generator=gen) / math.sqrt(d_in)
        f = LoraFactor("m", A, f.B, scaling, "m")
    ours = lora_spectra([f])["m"]
    ref = torch.linalg.svdvals(f.scaling * (f.B @ f.A))
    k = min(r, d_in, d_out)
    assert ours.shape == (k,) and ours.dtype == torch.float32
    assert torch.all(ours[:-1] >= ours[1:])
    assert (ours - ref[:k]).abs().max().item() <= 1e-5
    assert ref[k:].abs().max().item() <= 1e-5 if ref.numel() > k else True


def test_spectra_float32_cores_and_stacked_batching_agree():
    factors = [random_factor(8, 40, 30, s, name=f"m{s}") for s in range(5)] + [random_factor(4, 10, 50, 9, name="x")]
    exact = lora_spectra(factors)
    for kw in (dict(batching="stack"), dict(dtype=torch.float32)):
        other = lora_spectra(factors, **kw)
        assert list(other) == list(exact)
        for name in exact:
            assert torch.allclose(other[name], exact[name], atol=1e-4)


@pytest.fixture(scope="module")
def peft_model():
    from sail.models.lora import LoraAdapterConfig, attach_lora
    from sail.models.tiny import tiny_qwen3

    base = tiny_qwen3(0, vocab_size=64, hidden_size=32, layers=2, intermediate_size=48, max_position_embeddings=64)
    model = attach_lora(base, LoraAdapterConfig(rank=8, alpha=16.0, rslora=True, target_modules=PROJECTIONS), seed=0)
    with torch.no_grad():
        for f in lora_factors(model):
            f.B.normal_(0, 0.1)
    return model


def test_peft_factors_spectra_and_rslora_scaling(peft_model):
    factors = lora_factors(peft_model)
    assert len(factors) == 2 * 7
    assert {f.kind for f in factors} == set(PROJECTIONS)
    assert all(f.scaling == pytest.approx(16 / math.sqrt(8)) for f in factors)  # rsLoRA: α/√r
    spectra = lora_spectra(peft_model)
    modules = dict(peft_model.named_modules())
    for f in factors:
        delta = modules[f.name].get_delta_weight("default")  # PEFT's own s·B·A
        ref = torch.linalg.svdvals(delta)[: f.max_rank]
        assert torch.allclose(spectra[f.name], ref, atol=1e-5)


def test_one_thread_restores_the_thread_count_and_leaves_results_unchanged():
    from sail.spectral.gram import one_thread

    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        f = random_factor(6, 700, 300, 4, dtype=torch.float64)
        expected = penalty([_leaf(f)], kind="entropy")
        with one_thread(torch.device("cpu")):
            assert torch.get_num_threads() == 1
            inner = penalty([_leaf(f)], kind="entropy")
        assert torch.get_num_threads() == 2
        with pytest.raises(RuntimeError), one_thread(torch.device("cpu")):
            raise RuntimeError("inside")
        assert torch.get_num_threads() == 2
        assert inner.item() == pytest.approx(expected.item(), rel=1e-12)
    finally:
        torch.set_num_threads(threads)


def test_split_map_equals_one_call_and_keeps_the_grad_mode():
    from sail.spectral.gram import split_map

    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        K = torch.randn(9, 5, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
        parts = split_map(lambda lo, hi: [torch.linalg.svdvals(K[lo:hi])], len(K), K.device)
        assert len(parts) == 2 and torch.equal(torch.cat(parts), torch.linalg.svdvals(K))
        seen = split_map(lambda lo, hi: [(lo, hi, torch.is_grad_enabled())], 5, K.device)
        assert [s[:2] for s in seen] == [(0, 2), (2, 5)] and all(s[2] for s in seen)
        with torch.no_grad():
            assert not any(s[2] for s in split_map(lambda lo, hi: [(lo, hi, torch.is_grad_enabled())], 5, K.device))
        assert torch.get_num_threads() == 2
        torch.set_num_threads(1)
        assert split_map(lambda lo, hi: [(lo, hi)], 5, K.device) == [(0, 5)]
    finally:
        torch.set_num_threads(threads)


def _svdvals_in_child(queue):
    from sail.spectral.gram import split_map

    torch.set_num_threads(2)
    K = torch.eye(4).repeat(6, 1, 1)
    queue.put(torch.cat(split_map(lambda lo, hi: [torch.linalg.svdvals(K[lo:hi])], len(K), K.device)).sum().item())


def test_split_map_works_in_a_forked_child_of_a_process_that_used_it():
    import multiprocessing

    from sail.spectral.gram import split_map

    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        split_map(lambda lo, hi: [lo], 4, torch.device("cpu"))  # the parent's pool exists now
        ctx = multiprocessing.get_context("fork")
        queue = ctx.Queue()
        child = ctx.Process(target=_svdvals_in_child, args=(queue,))
        child.start()
        child.join(60)
        if child.is_alive():
            child.kill()
        assert child.exitcode == 0 and queue.get(timeout=5) == 24.0  # with the parent's dead pool it would hang
    finally:
        torch.set_num_threads(threads)


def test_fresh_buffer_hands_a_mapping_out_again_only_once_its_views_are_gone(monkeypatch):
    from sail.spectral import memory

    monkeypatch.setattr(memory, "MIN_BYTES", 0)
    monkeypatch.setattr(memory, "_pool", {})
    first = memory.fresh_buffer(1000, torch.float32)
    assert first.shape == (1000,) and first.dtype == torch.float32
    address = first.data_ptr()
    view = first[10:20].view(2, 5)
    del first
    second = memory.fresh_buffer(1000, torch.float32)  # a view of the first is alive: a new mapping
    assert second.data_ptr() != address
    held = memory.fresh_buffer(1000, torch.float32)  # beyond POOL_SIZE mappings: plain torch.empty
    assert held.data_ptr() not in (address, second.data_ptr()) and len(memory._pool[4000]) == memory.POOL_SIZE
    del view
    assert memory.fresh_buffer(1000, torch.float32).data_ptr() == address  # now free: the same, warm pages
    assert memory.fresh_buffer(10, torch.float64, "meta").device.type == "meta"  # other devices: torch.empty


def test_penalty_gradients_from_the_pool_are_exact_and_never_overwritten(monkeypatch):
    """With every gradient of a backward pass a view of one pooled mapping, the gradients equal those
    of plain tensors bit for bit, and gradients still referenced are not overwritten by later passes."""
    from sail.spectral import memory

    factors = [_leaf(random_factor(4, 50 + i, 30 + 2 * i, seed=i)) for i in range(5)]
    params = [t for f in factors for t in (f.A, f.B)]

    def grads(kind):
        for p in params:
            p.grad = None
        penalty(factors, kind=kind).backward()
        return [p.grad for p in params]

    monkeypatch.setattr(memory, "MIN_BYTES", 1 << 40)
    plain = {kind: [g.clone() for g in grads(kind)] for kind in PENALTY_KINDS}
    monkeypatch.setattr(memory, "MIN_BYTES", 0)
    monkeypatch.setattr(memory, "_pool", {})
    kept = grads("pr")
    assert kept[0]._base is not None or kept[0].data_ptr() != kept[2].data_ptr()
    for kind in PENALTY_KINDS:
        for g, ref in zip(grads(kind), plain[kind]):
            assert torch.equal(g, ref)
    for g, ref in zip(kept, plain["pr"]):  # three more passes ran while these were held
        assert torch.equal(g, ref)


# --- flatness metrics ------------------------------------------------------------------------------
def test_flatness_of_known_spectra():
    flat = flatness(torch.full((6,), 2.0))
    assert flat["participation_ratio"].item() == pytest.approx(6)
    assert flat["normalised_entropy"].item() == pytest.approx(1)
    assert flat["stable_rank"].item() == pytest.approx(6)
    assert flat["condition_number"].item() == pytest.approx(1)
    spike = flatness(torch.tensor([3.0, 0, 0, 0]))
    assert spike["participation_ratio"].item() == pytest.approx(1)
    assert spike["normalised_entropy"].item() == pytest.approx(0)
    assert spike["stable_rank"].item() == pytest.approx(1)
    assert spike["condition_number"].item() == math.inf
    zero = flatness(torch.zeros(2, 4))
    assert torch.all(zero["participation_ratio"] == 0) and torch.all(zero["normalised_entropy"] == 0)
    two = flatness(torch.tensor([2.0, 1.0]))
    assert two["participation_ratio"].item() == pytest.approx(25 / 17)
    assert two["stable_rank"].item() == pytest.approx(5 / 4)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.floats(0, 10), min_size=1, max_size=16))
def test_flatness_bounds(values):
    sigma = torch.tensor(values, dtype=torch.float64)
    m = flatness(sigma)
    k = len(values)
    if sigma.max() > 0:
        assert 1 - 1e-9 <= m["participation_ratio"].item() <= k + 1e-9
        assert 1 - 1e-9 <= m["stable_rank"].item() <= k + 1e-9
        assert -1e-12 <= m["normalised_entropy"].item() <= 1 + 1e-12
        assert m["condition_number"].item() >= 1


def test_trace_moments_match_spectra():
    f = random_factor(6, 20, 15, 0, dtype=torch.float64)
    G_A, G_B = factor_grams([f])
    t2, t4 = trace_moments(G_A, G_B)
    sigma = torch.linalg.svdvals(f.B @ f.A)
    assert t2.item() == pytest.approx((sigma**2).sum().item(), rel=1e-12)
    assert t4.item() == pytest.approx((sigma**4).sum().item(), rel=1e-12)


# --- the penalty ----------------------------------------------------------------------------------
def _leaf(f: LoraFactor, B=None) -> LoraFactor:
    B = f.B if B is None else B
    return LoraFactor(f.name, f.A.detach().clone().requires_grad_(), B.detach().clone().requires_grad_(), f.scaling, f.kind)


def test_default_penalty_is_k_over_pr_minus_one():
    factors = [random_factor(8, 30, 20, s, name=f"m{s}") for s in range(3)] + [random_factor(8, 5, 20, 7, name="thin")]
    expected = []
    for f in factors:
        pr = flatness(torch.linalg.svdvals(f.B.double() @ f.A.double()))["participation_ratio"].item()
        expected.append(f.max_rank / pr - 1)
    names, values = module_penalties(factors)
    assert names == [f.name for f in factors]
    assert values.tolist() == pytest.approx(expected, rel=1e-5)
    assert penalty(factors).item() == pytest.approx(sum(expected) / 4, rel=1e-5)
    assert penalty(factors, reduction="sum").item() == pytest.approx(sum(expected), rel=1e-5)
    assert penalty(factors, kinds=["thin"]).item() == pytest.approx(expected[-1], rel=1e-5)


def test_renyi2_is_one_minus_log_pr_over_log_k_and_entropy_is_shannon():
    f = random_factor(6, 30, 20, 1, dtype=torch.float64)
    sigma = torch.linalg.svdvals(f.B @ f.A)[:6]
    m = flatness(sigma)
    assert penalty([f], kind="renyi").item() == pytest.approx(1 - math.log(m["participation_ratio"].item()) / math.log(6), rel=1e-9)
    assert penalty([f], kind="entropy").item() == pytest.approx(1 - m["normalised_entropy"].item(), rel=1e-9)


def _flat_factor(r=4, d_in=12, d_out=10, dtype=torch.float64):
    """B A with all r singular values equal (orthonormal rows / columns)."""
    gen = torch.Generator().manual_seed(5)
    A = torch.linalg.qr(torch.randn(d_in, r, generator=gen, dtype=dtype)).Q.T * 0.7
    B = torch.linalg.qr(torch.randn(d_out, r, generator=gen, dtype=dtype)).Q * 1.3
    return LoraFactor("flat", A, B, 2.0, "flat")


@pytest.mark.parametrize("kind", PENALTY_KINDS)
def test_penalty_zero_and_finite_at_init_and_flat(kind):
    f = random_factor(6, 16, 12, 2)
    init = _leaf(f, torch.zeros_like(f.B))  # LoRA initialisation: B = 0
    value = penalty([init], kind=kind)
    value.backward()
    assert value.item() == 0.0
    assert torch.equal(init.A.grad, torch.zeros_like(init.A)) and torch.equal(init.B.grad, torch.zeros_like(init.B))
    flat = _leaf(_flat_factor())
    value = penalty([flat], kind=kind)
    value.backward()
    assert abs(value.item()) < 1e-9
    assert torch.isfinite(flat.A.grad).all() and torch.isfinite(flat.B.grad).all()
    assert flat.B.grad.abs().max().item() < 1e-6  # a minimum: the gradient vanishes


@pytest.mark.parametrize("kind", PENALTY_KINDS)
@pytest.mark.parametrize("state", ["random", "zero_B", "flat", "repeated", "rank_deficient", "r_gt_d"])
def test_penalty_gradcheck_float64(kind, state):
    if state == "flat":
        f = _flat_factor()
    elif state == "repeated":  # singular values (2, 2, 1, 1)
        base = _flat_factor()
        f = LoraFactor("rep", base.A, base.B * torch.tensor([2.0, 2.0, 1.0, 1.0], dtype=torch.float64), 1.0, "rep")
    elif state == "r_gt_d":
        f = random_factor(6, 4, 9, 3, dtype=torch.float64)
    else:
        f = random_factor(5, 9, 7, 4, dtype=torch.float64, deficient=2 if state == "rank_deficient" else 0)
    B = torch.zeros_like(f.B) if state == "zero_B" else f.B

    def fn(A, B):
        return penalty([LoraFactor("m", A, B, f.scaling, "m")], kind=kind)

    A_ = f.A.detach().clone().requires_grad_()
    B_ = B.detach().clone().requires_grad_()
    assert torch.autograd.gradcheck(fn, (A_, B_), eps=1e-6, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("state", ["repeated", "zero_B", "rank_deficient"])
def test_gram_eigenvalues_gradcheck_with_repeated_and_zero_eigenvalues(state):
    """A symmetric function of eig(G_A G_B) through the factors (so G's stay PSD)."""
    base = _flat_factor()  # all four singular values equal
    B = base.B
    if state == "zero_B":
        B = torch.zeros_like(B)
    elif state == "rank_deficient":
        B = B.clone()
        B[:, :2] = 0

    def fn(A, B):
        lam = gram_eigenvalues(A @ A.T, B.T @ B)
        return (lam**3).sum() + torch.log1p(lam).sum()

    A_ = base.A.detach().clone().requires_grad_()
    B_ = B.detach().clone().requires_grad_()
    assert torch.autograd.gradcheck(fn, (A_, B_))


def test_penalty_gradient_vanishes_on_peft_init():
    """At PEFT's initialisation (B = 0) the penalty and its gradient are exactly 0 for every kind."""
    cfg = transformers.Qwen3Config(
        vocab_size=32, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
        num_attention_heads=2, num_key_value_heads=1, head_dim=8, max_position_embeddings=32,
    )
    model = peft.get_peft_model(transformers.Qwen3ForCausalLM(cfg), peft.LoraConfig(r=4, target_modules=PROJECTIONS))
    for kind in PENALTY_KINDS:
        model.zero_grad()
        value = penalty(model, kind=kind)
        value.backward()
        assert value.item() == 0.0
        grads = [p.grad for n, p in model.named_parameters() if "lora_" in n]
        assert len(grads) == 2 * 7  # A and B of the 7 projections of the one layer
        assert all(g is not None and torch.equal(g, torch.zeros_like(g)) for g in grads)


def test_penalty_without_lora_is_zero():
    assert penalty(torch.nn.Linear(3, 3)).item() == 0.0


def test_penalty_descent_raises_participation_ratio():
    f = _leaf(random_factor(8, 32, 24, 6))
    before = flatness(lora_spectra([f])["m"])["participation_ratio"].item()
    opt = torch.optim.SGD([f.A, f.B], lr=0.01)
    for _ in range(50):
        opt.zero_grad()
        penalty([f]).backward()
        opt.step()
    after = flatness(lora_spectra([f])["m"])["participation_ratio"].item()
    assert after > before + 1.0


# --- the Frobenius-to-nuclear penalty ------------------------------------------------------------
def _lifted_ratio_reference(sigma, k, scaling, eps=1e-12, lift=NUCLEAR_LIFT):
    """g·(√k·‖σ̃‖₂/‖σ̃‖₁ − 1) straight from the singular values σ of s·B@A, with σ̃² = σ² + δ²,
    δ² = (η·Σσ² + ε·s²)/k, and g = t₂²/(t₂² + ε), t₂ = Σσ²/s² (the module docstring's formula)."""
    sigma = sigma[:k]
    energy = (sigma**2).sum()
    lifted = sigma**2 + (lift * energy + eps * scaling**2) / k
    t2 = energy / scaling**2
    return t2**2 / (t2**2 + eps) * (math.sqrt(k) * lifted.sum().sqrt() / lifted.sqrt().sum() - 1)


def test_fro_nuclear_is_the_lifted_ratio_of_svdvals():
    """Every module of one call (equal r, different k, a rank-deficient one) against svdvals(s·B@A)."""
    factors = [
        random_factor(6, 40, 30, 11, dtype=torch.float64, scaling=2.0, name="wide"),
        random_factor(6, 40, 30, 12, deficient=3, dtype=torch.float64, scaling=0.3, name="deficient"),
        random_factor(6, 4, 9, 13, dtype=torch.float64, name="r_gt_d_in"),
        random_factor(6, 12, 3, 14, dtype=torch.float64, scaling=16 / math.sqrt(6), name="r_gt_d_out"),
        random_factor(1, 7, 5, 15, dtype=torch.float64, name="rank1"),
    ]
    expected = []
    for f in factors:
        sigma = torch.linalg.svdvals(f.scaling * (f.B @ f.A))
        expected.append(_lifted_ratio_reference(sigma, f.max_rank, f.scaling).item())
    names, values = module_penalties(factors, kind="fro_nuclear")
    assert names == [f.name for f in factors]
    assert values.tolist() == pytest.approx(expected, rel=1e-10, abs=1e-14)
    assert expected[-1] == 0.0 and 0 < expected[1]  # k = 1 is always flat; 3 zero σ of 6 are not


@settings(max_examples=40, deadline=None)
@given(
    sigma=st.lists(st.floats(0.0, 1.0), min_size=2, max_size=12).filter(lambda v: max(v) > 0.05),
    lift=st.sampled_from([NUCLEAR_LIFT, 1e-2]),
    seed=st.integers(0, 2**16),
)
def test_fro_nuclear_bias_is_within_its_bound(sigma, lift, seed):
    """R₀/(1 + √(kρ)) ≤ R_δ ≤ R₀·√(1 + ρ), ρ = η, for ΔW = U diag(σ) Vᵀ with a prescribed spectrum
    (ε = 0: no gate); R₀ = √k‖σ‖₂/‖σ‖₁ is the exact ratio and R_δ − 1 the penalty."""
    module = sys.modules["sail.spectral.penalty"]
    k = len(sigma)
    gen = torch.Generator().manual_seed(seed)
    U = torch.linalg.qr(torch.randn(k + 3, k, generator=gen, dtype=torch.float64)).Q
    V = torch.linalg.qr(torch.randn(k + 5, k, generator=gen, dtype=torch.float64)).Q
    s = torch.tensor(sigma, dtype=torch.float64)
    f = LoraFactor("m", V.T, U * s, 1.0, "m")
    exact = math.sqrt(k) * s.norm().item() / s.sum().item()
    saved, module.NUCLEAR_LIFT = module.NUCLEAR_LIFT, lift
    try:
        lifted = penalty([f], kind="fro_nuclear", eps=0.0).item() + 1
    finally:
        module.NUCLEAR_LIFT = saved
    assert 1 - 1e-12 <= lifted <= math.sqrt(k) + 1e-12
    assert exact / (1 + math.sqrt(k * lift)) * (1 - 1e-12) <= lifted <= exact * math.sqrt(1 + lift) * (1 + 1e-12)


def test_fro_nuclear_is_scale_invariant_and_its_gradient_orthogonal_to_the_factors():
    """With ε = 0, ΔW → cΔW (through A, B or s) leaves the value unchanged, so ⟨∇_A, A⟩ = ⟨∇_B, B⟩ = 0."""
    f = _leaf(random_factor(6, 20, 15, 21, dtype=torch.float64))
    value = penalty([f], kind="fro_nuclear", eps=0.0)
    value.backward()
    for A, B, s in ((f.A, 10 * f.B, 1.0), (1e-3 * f.A, f.B, 1.0), (f.A, f.B, 0.1)):
        other = penalty([LoraFactor("m", A.detach(), B.detach(), s)], kind="fro_nuclear", eps=0.0)
        assert other.item() == pytest.approx(value.item(), rel=1e-12)
    for x in (f.A, f.B):
        assert abs((x.grad * x).sum().item()) < 1e-12 * x.grad.norm().item() * x.norm().item()
    assert value.item() > 0.01 and f.B.grad.norm().item() > 1e-3


def test_fro_nuclear_float32_gradient_matches_float64_across_six_decades():
    """r = 64, σ from 1 down to 1e-6 (λ over twelve decades, far below float32 rounding): the lift keeps
    the float32 gradient within 1e-3 of the float64 one (without it, η = 0, the error is 1–6 %)."""
    base = random_factor(64, 200, 150, 3, dtype=torch.float64)
    B = base.B * torch.logspace(0, -6, 64, dtype=torch.float64)
    grads = {}
    for dtype in (torch.float64, torch.float32):
        f = _leaf(LoraFactor("m", base.A.to(dtype), B.to(dtype), 2.0, "m"))
        penalty([f], kind="fro_nuclear").backward()
        grads[dtype] = torch.cat([f.A.grad.double().flatten(), f.B.grad.double().flatten()])
    assert torch.isfinite(grads[torch.float32]).all()
    error = (grads[torch.float32] - grads[torch.float64]).norm() / grads[torch.float64].norm()
    assert error.item() < 1e-3


def test_fro_nuclear_descent_flattens_the_spectrum():
    """Gradient descent on the penalty alone lowers the exact ratio √k‖ΔW‖_F/‖ΔW‖_* and raises PR."""
    base = random_factor(8, 32, 24, 6)
    f = _leaf(LoraFactor("m", base.A, base.B * torch.linspace(1.0, 0.05, 8), 1.0, "m"))

    def exact_ratio():
        sigma = lora_spectra([f])["m"].double()
        return math.sqrt(8) * sigma.norm().item() / sigma.sum().item(), flatness(sigma)["participation_ratio"].item()

    ratio_before, pr_before = exact_ratio()
    opt = torch.optim.SGD([f.A, f.B], lr=0.05)
    for _ in range(100):
        opt.zero_grad()
        penalty([f], kind="fro_nuclear").backward()
        opt.step()
    ratio_after, pr_after = exact_ratio()
    assert ratio_after - 1 < 0.25 * (ratio_before - 1)
    assert pr_after > pr_before + 1.0
    assert SpectralConfig(penalty_weight=2.0, penalty_kind="fro_nuclear").penalty_term([f]).item() == pytest.approx(
        2 * penalty([f], kind="fro_nuclear").item()
    )


# --- logging and plots ------------------------------------------------------------------------------
def test_spectral_logger_rows_and_plots(peft_model, tmp_path):
    log = SpectralLogger(peft_model, tmp_path / "spectra.jsonl", every=2, label="adamw")
    stats: dict = {}
    for step in range(5):
        log(step, stats)
    rows = read_jsonl(tmp_path / "spectra.jsonl")
    assert {r["step"] for r in rows} == {0, 2, 4}
    assert {r["kind"] for r in rows} == set(PROJECTIONS) | {"all"}
    all_rows = [r for r in rows if r["kind"] == "all"]
    assert all(r["n_modules"] == 14 for r in all_rows)
    expected = sum(flatness(s)["participation_ratio"].item() for s in lora_spectra(peft_model).values()) / 14
    assert all_rows[-1]["participation_ratio"] == pytest.approx(expected)
    assert stats["spectral/participation_ratio/all"] == pytest.approx(expected)
    other = [dict(r, label="muon", participation_ratio=r["participation_ratio"] + 1) for r in rows]
    _check_flatness_plot(rows + other, tmp_path / "flatness.png")
    _check_spectra_plot(rows + other, tmp_path / "spectra.png")


def _assert_png(path: Path, figure) -> None:
    """The saved PNG decodes to RGBA pixels of ``figure``'s size at the 120 dpi it is saved at."""
    width, height = figure.get_size_inches() * 120
    assert imread(path).shape == (round(height), round(width), 4)


def _legend(ax) -> list[str]:
    return [t.get_text() for t in ax.get_legend().get_texts()]


def _check_flatness_plot(rows, path):
    """One line per label of (step, PR of the ``all`` rows), then the flat limit k = 8."""
    fig = flatness_figure(rows, rank=8)
    ax = fig.axes[0]
    for line, label in zip(ax.lines, ("adamw", "muon")):
        expected = sorted((r["step"], r["participation_ratio"]) for r in rows if r["label"] == label and r["kind"] == "all")
        np.testing.assert_array_equal(line.get_xydata(), expected)
    np.testing.assert_array_equal(ax.lines[2].get_ydata(), [8, 8])
    assert _legend(ax) == ["adamw", "muon", "k = 8 (flat)"]
    assert ax.get_xlabel() == "step" and ax.get_ylabel() == METRIC_LABELS["participation_ratio"]
    plot_flatness(rows, path, rank=8)
    _assert_png(path, fig)


def _check_spectra_plot(rows, path):
    """One panel per label; in each, σ_i/σ₁ against i = 1 … k of the ``all`` rows, one line per step."""
    fig = spectra_figure(rows)
    assert [ax.get_title() for ax in fig.axes] == ["adamw", "muon"]
    for ax, label in zip(fig.axes, ("adamw", "muon")):
        mine = sorted((r for r in rows if r["label"] == label and r["kind"] == "all"), key=lambda r: r["step"])
        assert len(ax.lines) == len(mine) == 3
        for line, row in zip(ax.lines, mine):
            spectrum = row["spectrum_normalised"]
            np.testing.assert_array_equal(line.get_xydata(), np.column_stack([np.arange(1, len(spectrum) + 1), spectrum]))
        assert _legend(ax) == ["step 0", "step 2", "step 4"]
    assert fig.axes[0].get_ylabel() == "σ_i / σ₁"
    plot_spectra(rows, path)
    _assert_png(path, fig)


def test_spectral_config():
    cfg = SpectralConfig()
    assert cfg.penalty_term(torch.nn.Linear(2, 2)) is None
    with pytest.raises(ValueError):
        SpectralConfig(penalty_kind="svd")
    f = random_factor(4, 10, 8, 0)
    assert SpectralConfig(penalty_weight=0.5).penalty_term([f]).item() == pytest.approx(0.5 * penalty([f]).item())


# --- the spectral-behaviour experiment (experiments/spectral) ---------------------------------------
def _experiment():
    if "spectral_experiment" in sys.modules:
        return sys.modules["spectral_experiment"]

    path = Path(__file__).resolve().parents[1] / "experiments" / "spectral" / "spectral_experiment.py"
    spec = importlib.util.spec_from_file_location("spectral_experiment", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules["spectral_experiment"] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def test_spectral_experiment_smoke(tmp_path):
    exp = _experiment()
    runs = [r for r in exp.default_runs() if r.label in ("adamw", "muon", "adamw+penalty")]
    cfg = exp.ExperimentConfig(steps=8, pretrain_steps=4, log_every=4, smooth=2, batch_size=8, seq_len=16, runs=runs)
    summary = exp.run(cfg, tmp_path)
    assert set(summary["runs"]) == {"adamw", "muon", "adamw+penalty"}
    for r in summary["runs"].values():
        assert math.isfinite(r["final_loss"]) and 1 <= r["final_pr"] <= cfg.rank
    assert {"optimizers", "adamw_penalty"} <= set(summary["matched"])
    assert json.loads((tmp_path / "summary.json").read_text()) == json.loads(json.dumps(summary))
    logged = read_jsonl(tmp_path / "spectra.jsonl")
    assert {(r["label"], r["step"]) for r in logged} == {(label, step) for label in summary["runs"] for step in (0, 4, 8)}
    assert len(logged) == 3 * 3 * (len(PROJECTIONS) + 1)  # runs × logged steps × (7 kinds + all)
    width = 3 * round(3.6 * 120)  # one spectra panel per run
    for name, shape in (("flatness.png", (480, 720, 4)), ("spectra.png", (408, width, 4)), ("loss.png", (480, 720, 4))):
        assert imread(tmp_path / name).shape == shape, name
    assert "matched loss" in exp.format_summary(summary)


@pytest.mark.slow
def test_spectral_experiment_muon_flatter_and_penalty_raises_pr(tmp_path):
    """What docs/inner_update.md reports for the spectral experiment, on the default set-up (about a minute)."""
    exp = _experiment()
    summary = exp.run(exp.ExperimentConfig(), tmp_path)
    print(exp.format_summary(summary))
    matched, runs = summary["matched"], summary["runs"]
    assert matched["optimizers"]["muon"]["pr"] > matched["optimizers"]["adamw"]["pr"]
    for base in ("adamw", "lion"):
        group = matched[f"{base}_penalty"]
        assert group[f"{base}+penalty"]["pr"] > group[base]["pr"]
        assert runs[f"{base}+penalty"]["final_pr"] > runs[base]["final_pr"]
        assert runs[f"{base}+penalty"]["final_loss"] < runs[base]["final_loss"] + 0.05  # small loss cost
