"""The shared objective functions against hand-computed values, autograd and enumeration."""

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from sail.objectives import (
    dpo_loss,
    kl_exact,
    kl_penalty,
    kl_sample_estimate,
    leave_one_out_baseline,
    pair_term,
    pair_term_derivatives,
    sail_surrogate,
)

finite = st.floats(-50, 50, allow_nan=False)
prob = st.floats(0, 1)
beta_st = st.floats(0.01, 10)


@settings(max_examples=200, deadline=None)
@given(delta=finite, p=prob, beta=beta_st)
def test_pair_term_derivatives_match_autograd(delta, p, beta):
    d = torch.tensor(delta, dtype=torch.float64, requires_grad=True)
    value = pair_term(d, p, beta)
    (g,) = torch.autograd.grad(value, d, create_graph=True)
    (h,) = torch.autograd.grad(g, d)
    closed = pair_term_derivatives(d.detach(), p, beta)
    assert closed.value.item() == pytest.approx(value.item(), rel=1e-12, abs=1e-300)
    assert closed.d1.item() == pytest.approx(g.item(), rel=1e-10, abs=1e-14)
    assert closed.d2.item() == pytest.approx(h.item(), rel=1e-10, abs=1e-14)


@settings(max_examples=200, deadline=None)
@given(delta=finite, p=prob, beta=beta_st)
def test_pair_term_sign_symmetry_and_bound(delta, p, beta):
    d = torch.tensor(delta, dtype=torch.float64)
    value = pair_term(d, p, beta).item()
    assert value <= 0
    assert value == pytest.approx(pair_term(-d, 1 - p, beta).item(), rel=1e-9, abs=1e-15)
    assert -value <= math.log(2) + beta * abs(delta) + 1e-12  # |ℓ| ≤ log 2 + β|Δ|


def test_pair_term_hand_values():
    # p = 1, Δ = 0: log σ(0) = −log 2; p = 0.25, βΔ = log 3: σ = 3/4.
    assert pair_term(torch.tensor(0.0), 1.0, 0.1).item() == pytest.approx(-math.log(2))
    z = torch.tensor(math.log(3.0))
    assert pair_term(z, 0.25, 1.0).item() == pytest.approx(0.25 * math.log(0.75) + 0.75 * math.log(0.25))
    assert pair_term_derivatives(z, 0.25, 1.0).d1.item() == pytest.approx(0.25 - 0.75)


@pytest.mark.parametrize("scale", [1e2, 1e3, 1e4])
def test_everything_finite_for_large_beta_delta(scale):
    delta = torch.tensor([-scale, -1.0, 0.0, 1.0, scale], dtype=torch.float64, requires_grad=True)
    for p in (0.0, 0.3, 1.0):
        value = pair_term(delta, p, 1.0).sum()
        (grad,) = torch.autograd.grad(value, delta)
        assert torch.isfinite(value) and torch.isfinite(grad).all()
        d = pair_term_derivatives(delta.detach(), p, 1.0)
        assert all(torch.isfinite(t).all() for t in d)
    lp = torch.tensor([0.0, -scale], dtype=torch.float64, requires_grad=True)
    zero = torch.zeros(1, dtype=torch.float64)
    for loss in (
        dpo_loss(lp[:1], lp[1:], zero, zero, beta=1.0),
        -sail_surrogate(lp[:1], lp[1:], zero, zero, 1.0, 1.0).sum(),
        -sail_surrogate(lp[:1], lp[1:], zero, zero, 0.0, 1.0).sum(),
    ):
        (g,) = torch.autograd.grad(loss, lp)
        assert torch.isfinite(loss) and torch.isfinite(g).all()


def test_dpo_loss_hand_value_and_smoothing():
    lw, ll = torch.tensor([-1.0]), torch.tensor([-3.0])
    rw, rl = torch.tensor([-2.0]), torch.tensor([-2.0])
    # Δ = (−1 + 2) − (−3 + 2) = 2; β = 0.5 → −log σ(1)
    assert dpo_loss(lw, ll, rw, rl, beta=0.5).item() == pytest.approx(math.log1p(math.exp(-1.0)))
    smoothed = dpo_loss(lw, ll, rw, rl, beta=0.5, label_smoothing=0.1).item()
    assert smoothed == pytest.approx(0.9 * math.log1p(math.exp(-1.0)) + 0.1 * math.log1p(math.exp(1.0)))
    with pytest.raises(ValueError, match="label_smoothing"):
        dpo_loss(lw, ll, rw, rl, beta=0.5, label_smoothing=0.7)


def test_leave_one_out_baseline():
    h = torch.tensor([1.0, 2.0, 6.0])
    assert leave_one_out_baseline(h).tolist() == [4.0, 3.5, 1.5]
    assert leave_one_out_baseline(torch.tensor([5.0])).tolist() == [0.0]


def _categorical(seed, n=5):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(n, dtype=torch.float64, generator=g).requires_grad_(True)
    ref = torch.log_softmax(torch.randn(n, dtype=torch.float64, generator=g), 0)
    return logits, ref


@pytest.mark.parametrize("seed", range(3))
def test_kl_exact_matches_definition_and_is_nonnegative(seed):
    logits, ref = _categorical(seed)
    logp = torch.log_softmax(logits, 0).detach()
    p, q = logp.exp().numpy(), ref.exp().numpy()
    assert kl_exact(logp, ref, "policy_to_ref").item() == pytest.approx(float(np.sum(p * np.log(p / q))))
    assert kl_exact(logp, ref, "ref_to_policy").item() == pytest.approx(float(np.sum(q * np.log(q / p))))
    assert kl_exact(ref, ref, "ref_to_policy").item() == pytest.approx(0.0, abs=1e-15)
    with pytest.raises(ValueError, match="kl_direction"):
        kl_exact(logp, ref, "forward")


def _expectation_over_policy(logits, ref, fn):
    """Σ_y π_θ(y) fn(y): exact expectation over y ~ π_θ with π_θ treated as fixed (detached)."""
    logp = torch.log_softmax(logits, 0)
    weights = logp.detach().exp()
    return sum(weights[y] * fn(logp[y : y + 1], ref[y : y + 1]).sum() for y in range(logits.numel()))


@pytest.mark.parametrize("direction", ["policy_to_ref", "ref_to_policy"])
@pytest.mark.parametrize("seed", range(3))
def test_kl_estimator_values_by_enumeration(direction, seed):
    logits, ref = _categorical(seed)
    logp = torch.log_softmax(logits, 0).detach()
    exact = kl_exact(logp, ref, direction).item()
    for est in ("k1", "k3"):
        mean = _expectation_over_policy(logits.detach(), ref, lambda a, b: kl_sample_estimate(a, b, direction, est))
        assert mean.item() == pytest.approx(exact, rel=1e-10)
    mean_k2 = _expectation_over_policy(logits.detach(), ref, lambda a, b: kl_sample_estimate(a, b, direction, "k2"))
    assert abs(mean_k2.item() - exact) > 1e-6  # k2 is biased
    assert (kl_sample_estimate(logp, ref, direction, "k3") >= -1e-15).all()


def _grad(logits, value):
    (g,) = torch.autograd.grad(value, logits)
    return g


@pytest.mark.parametrize("seed", range(3))
def test_kl_estimator_gradients_follow_documented_table(seed):
    logits, ref = _categorical(seed)
    logp = torch.log_softmax(logits, 0)
    s = lambda: torch.autograd.functional.jacobian(lambda z: torch.log_softmax(z, 0), logits.detach())  # noqa: E731
    scores = s()  # [y, param]: ∇ log π(y)
    pi_ref, L = ref.exp(), (logp - ref).detach()
    grad_rev = _grad(logits, kl_exact(torch.log_softmax(logits, 0), ref, "policy_to_ref"))
    grad_fwd = _grad(logits, kl_exact(torch.log_softmax(logits, 0), ref, "ref_to_policy"))

    def mean_grad(direction, est, corr=False):
        return _grad(logits, _expectation_over_policy(logits, ref, lambda a, b: kl_penalty(a, b, direction, est, corr)))

    # policy_to_ref: k1 → 0, k2 → ∇KL(θ‖ref), k3 → ∇KL(ref‖θ)
    assert torch.allclose(mean_grad("policy_to_ref", "k1"), torch.zeros_like(logits), atol=1e-12)
    assert torch.allclose(mean_grad("policy_to_ref", "k2"), grad_rev, atol=1e-12)
    assert torch.allclose(mean_grad("policy_to_ref", "k3"), grad_fwd, atol=1e-12)
    # ref_to_policy pathwise: Σ π_ref (L − 1) s, Σ π_ref (L − L²/2) s, Σ π_ref L s — all ≠ ∇KL(ref‖θ)
    for est, weight in [("k1", L - 1), ("k2", L - 0.5 * L**2), ("k3", L)]:
        expected = ((pi_ref * weight)[:, None] * scores).sum(0)
        got = mean_grad("ref_to_policy", est)
        assert torch.allclose(got, expected, atol=1e-12)
        assert not torch.allclose(got, grad_fwd, atol=1e-6)
    # score correction makes k1 and k3 unbiased in both directions
    for direction, exact in [("policy_to_ref", grad_rev), ("ref_to_policy", grad_fwd)]:
        for est in ("k1", "k3"):
            assert torch.allclose(mean_grad(direction, est, corr=True), exact, atol=1e-12)


def test_unknown_estimator_is_rejected():
    with pytest.raises(ValueError, match="estimator"):
        kl_sample_estimate(torch.zeros(2), torch.zeros(2), "policy_to_ref", "k4")


@settings(max_examples=50, deadline=None)
@given(seed=st.integers(0, 10_000), n=st.integers(2, 7), direction=st.sampled_from(["policy_to_ref", "ref_to_policy"]))
def test_property_unbiased_kl_estimators(seed, n, direction):
    """E_{y~π_θ}[k1] = E[k3] = KL exactly, for random categorical pairs."""
    logits, ref = _categorical(seed, n)
    logp = torch.log_softmax(logits.detach(), 0)
    exact = kl_exact(logp, ref, direction).item()
    for est in ("k1", "k3"):
        values = kl_sample_estimate(logp, ref, direction, est)
        assert (logp.exp() * values).sum().item() == pytest.approx(exact, rel=1e-9, abs=1e-13)
