"""LogLinearPolicy: exact J_γ, gradient and Hessian against autograd and finite differences."""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from sail.policies.loglinear import DTYPE, LogLinearPolicy
from sail.theory.instance import random_instance


def _setup(inst):
    policy = LogLinearPolicy(inst.features, inst.theta_ref)
    reward = torch.as_tensor(inst.reward, dtype=DTYPE)
    rho = torch.as_tensor(inst.context_probs, dtype=DTYPE)
    return policy, reward, rho


def _random_theta(inst, scale, seed):
    rng = np.random.default_rng(seed)
    return torch.as_tensor(inst.theta_ref + scale * rng.standard_normal(inst.theta_ref.shape), dtype=DTYPE)


def _rel(a, b):
    return float((a - b).abs().max() / max(b.abs().max().item(), 1e-12))


def _check_against_autograd_and_fd(inst, theta):
    policy, reward, rho = _setup(inst)
    args = (reward, rho, inst.beta, inst.gamma, inst.kl)
    terms = policy.population(*args, theta=theta)

    def value(th):
        return policy.population(*args, theta=th, order=0).value

    grad_auto = torch.func.grad(value)(theta)
    hess_auto = torch.func.hessian(value)(theta)
    assert _rel(terms.grad, grad_auto) < 1e-8
    assert _rel(terms.hess, hess_auto) < 1e-8
    assert float(terms.value) == pytest.approx(float(value(theta)), rel=1e-12)
    # five-point central differences (error O(h⁴)): of J for the gradient, of the analytic
    # gradient for the Hessian
    h = 1e-3
    eye = torch.eye(theta.numel(), dtype=DTYPE)

    def five_point(f, e):
        return (-f(theta + 2 * h * e) + 8 * f(theta + h * e) - 8 * f(theta - h * e) + f(theta - 2 * h * e)) / (12 * h)

    grad_fd = torch.stack([five_point(value, e) for e in eye])
    hess_fd = torch.stack([five_point(lambda th: policy.population(*args, theta=th, order=1).grad, e) for e in eye])
    assert _rel(terms.grad, grad_fd) < 1e-8
    assert _rel(terms.hess, 0.5 * (hess_fd + hess_fd.T)) < 1e-8


@pytest.mark.parametrize("kl", ["ref_to_policy", "policy_to_ref"])
@pytest.mark.parametrize("seed", range(3))
def test_analytic_derivatives_match_autograd_and_finite_differences(kl, seed):
    inst = random_instance(seed, n_contexts=3, n_responses=5, dim=4, beta=0.7, gamma=0.9, kl=kl)
    _check_against_autograd_and_fd(inst, _random_theta(inst, 0.8, seed))


@settings(max_examples=25, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    n_contexts=st.integers(1, 4),
    n_responses=st.integers(2, 6),
    dim=st.integers(1, 5),
    beta=st.floats(0.05, 5.0),
    gamma=st.floats(0.0, 5.0),
    kl=st.sampled_from(["ref_to_policy", "policy_to_ref"]),
    tabular=st.booleans(),
    scale=st.floats(0.0, 2.0),
)
def test_property_derivatives_on_random_instances(seed, n_contexts, n_responses, dim, beta, gamma, kl, tabular, scale):
    if tabular:
        n_contexts, n_responses = min(n_contexts, 2), min(n_responses, 4)
    inst = random_instance(
        seed, n_contexts, n_responses, dim, tabular=tabular, beta=beta, gamma=gamma, kl=kl, realisable=seed % 2 == 0
    )
    _check_against_autograd_and_fd(inst, _random_theta(inst, scale, seed))


@pytest.mark.parametrize("seed", range(4))
def test_ref_to_policy_kl_hessian_is_fisher_covariance(seed):
    inst = random_instance(seed, n_contexts=3, n_responses=6, dim=5, kl="ref_to_policy")
    policy, reward, rho = _setup(inst)
    theta = _random_theta(inst, 1.5, seed)
    terms = policy.population(reward, rho, inst.beta, inst.gamma, "ref_to_policy", theta=theta)
    fisher = np.zeros((5, 5))
    probs = torch.softmax(policy.features @ theta, -1).numpy()
    for x in range(3):
        fisher += inst.context_probs[x] * np.cov(inst.features[x].T, aweights=probs[x], bias=True)
    np.testing.assert_allclose(terms.kl_hess.numpy(), fisher, rtol=1e-10, atol=1e-14)
    # negative control: the other direction's Hessian is not the Fisher covariance away from θ_ref
    other = policy.population(reward, rho, inst.beta, inst.gamma, "policy_to_ref", theta=theta)
    assert np.abs(other.kl_hess.numpy() - fisher).max() > 1e-4
    at_ref = policy.population(reward, rho, inst.beta, inst.gamma, "policy_to_ref", theta=policy.theta_ref)
    fisher_ref = policy.population(reward, rho, inst.beta, inst.gamma, "ref_to_policy", theta=policy.theta_ref)
    np.testing.assert_allclose(at_ref.kl_hess.numpy(), fisher_ref.kl_hess.numpy(), atol=1e-14)


def test_tabular_null_direction_is_flat():
    inst = random_instance(3, n_contexts=2, n_responses=4, tabular=True, gamma=0.5)
    policy, reward, rho = _setup(inst)
    theta = _random_theta(inst, 1.0, 3)
    null = torch.zeros(8, dtype=DTYPE)
    null[:4] = 1.0  # a constant added to context 0's logits
    t0 = policy.population(reward, rho, inst.beta, inst.gamma, inst.kl, theta=theta)
    t1 = policy.population(reward, rho, inst.beta, inst.gamma, inst.kl, theta=theta + 0.7 * null)
    assert float(t1.value) == pytest.approx(float(t0.value), abs=1e-14)
    assert torch.allclose(t0.hess @ null, torch.zeros(8, dtype=DTYPE), atol=1e-13)
    assert abs(float(t0.grad @ null)) < 1e-14
    # and a non-null direction is not flat (negative control)
    assert not torch.allclose(t0.hess[:, 0], torch.zeros(8, dtype=DTYPE), atol=1e-6)


def test_population_is_finite_far_from_reference():
    inst = random_instance(0, n_contexts=2, n_responses=4, dim=3, beta=10.0)
    policy, reward, rho = _setup(inst)
    theta = torch.as_tensor(inst.theta_ref, dtype=DTYPE) + 500.0  # |βΔ| ~ 1e4
    for kl in ("ref_to_policy", "policy_to_ref"):
        t = policy.population(reward, rho, inst.beta, 1.0, kl, theta=theta)
        assert all(torch.isfinite(x).all() for x in (t.value, t.grad, t.hess))


def test_sampling_matches_probabilities():
    inst = random_instance(1, n_contexts=2, n_responses=4, dim=3)
    policy, _, _ = _setup(inst)
    gen = torch.Generator().manual_seed(0)
    prompts = torch.tensor([1] * 20000)
    draws = policy.sample(prompts, 2, generator=gen)
    assert draws.shape == (20000, 2)
    freq = torch.bincount(draws.flatten(), minlength=4).double() / draws.numel()
    probs = policy.log_probs(contexts=torch.tensor([1])).exp().detach()[0]
    se = torch.sqrt(probs * (1 - probs) / draws.numel())
    assert ((freq - probs).abs() < 4 * se + 1e-12).all()


def test_logprob_and_reference():
    inst = random_instance(2, n_contexts=3, n_responses=5, dim=2)
    policy = LogLinearPolicy(inst.features, inst.theta_ref, theta=inst.theta_ref + 1.0)
    prompts, responses = torch.tensor([0, 2]), torch.tensor([[1, 4], [0, 0]])
    lp = policy.logprob(prompts, responses)
    assert lp.requires_grad and lp.shape == (2, 2)
    ref = policy.ref_logprob(prompts, responses)
    expected = torch.log_softmax(policy.features @ policy.theta_ref, -1)
    assert torch.allclose(ref, expected[prompts[:, None], responses])
    assert not torch.allclose(lp.detach(), ref)


def test_constructor_rejects_bad_shapes():
    with pytest.raises(ValueError, match="features"):
        LogLinearPolicy(np.zeros((2, 3)), np.zeros(3))
    with pytest.raises(ValueError, match="theta_ref"):
        LogLinearPolicy(np.zeros((2, 3, 4)), np.zeros(3))


@settings(max_examples=30, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    shift=st.floats(-5, 5),
    kl=st.sampled_from(["ref_to_policy", "policy_to_ref"]),
    gamma=st.floats(0, 3),
)
def test_property_invariances(seed, shift, kl, gamma):
    """J_γ depends on rewards and features only through within-context differences."""
    inst = random_instance(seed, n_contexts=3, n_responses=4, dim=3, gamma=gamma, kl=kl)
    theta = _random_theta(inst, 1.0, seed)
    base = LogLinearPolicy(inst.features, inst.theta_ref).population(
        inst.reward, inst.context_probs, inst.beta, gamma, kl, theta=theta, order=1
    )
    offsets = np.random.default_rng(seed).standard_normal((3, 1, 3)) * shift
    moved = LogLinearPolicy(inst.features + offsets, inst.theta_ref).population(
        inst.reward + shift * np.arange(3)[:, None], inst.context_probs, inst.beta, gamma, kl, theta=theta, order=1
    )
    assert float(moved.value) == pytest.approx(float(base.value), rel=1e-10, abs=1e-12)
    torch.testing.assert_close(moved.grad, base.grad, rtol=1e-8, atol=1e-10)


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 10_000), beta=st.floats(0.05, 5.0))
def test_property_sail_limits_and_signs(seed, beta):
    """At θ_ref: J = −log 2 exactly (Δ ≡ 0), KL = 0 in both directions, and J < 0 everywhere."""
    inst = random_instance(seed, n_contexts=2, n_responses=5, dim=3, beta=beta)
    policy, reward, rho = _setup(inst)
    for kl in ("ref_to_policy", "policy_to_ref"):
        at_ref = policy.population(reward, rho, beta, 1.0, kl, theta=policy.theta_ref, order=1)
        assert float(at_ref.sail) == pytest.approx(-np.log(2.0), rel=1e-12)
        assert abs(float(at_ref.kl)) < 1e-14 and torch.linalg.norm(at_ref.kl_grad) < 1e-13
        away = policy.population(reward, rho, beta, 1.0, kl, theta=_random_theta(inst, 2.0, seed), order=0)
        assert float(away.sail) < 0 and float(away.kl) > 0
