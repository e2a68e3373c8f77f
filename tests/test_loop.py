"""The one loop: its loss is an unbiased gradient estimator of J_γ, and the loop converges."""

import itertools

import numpy as np
import pytest
import torch

from sail.loop import ContextSampler, MicroBatch, SailConfig, online_micro_batch, project_onto_ball_, run_loop, sail_loss, sail_step
from sail.oracles import TabularRewardOracle, bradley_terry_labels
from sail.policies.loglinear import DTYPE, LogLinearPolicy
from sail.theory.instance import random_instance
from sail.theory.problem import ExactProblem


def _world(seed=0, kl="ref_to_policy", gamma=0.7, beta=1.3):
    inst = random_instance(seed, n_contexts=2, n_responses=3, dim=3, beta=beta, gamma=gamma, kl=kl)
    theta = inst.theta_ref + 0.6 * np.random.default_rng(seed).standard_normal(3)
    policy = LogLinearPolicy(inst.features, inst.theta_ref, theta=theta)
    exact = ExactProblem(inst).terms(theta, order=1).grad
    return inst, policy, exact


def _loss_grad(policy, prompts, responses, p_win, cfg):
    policy.zero_grad()
    loss, _ = sail_loss(policy, prompts, responses, p_win, cfg)
    loss.backward()
    return policy.theta.grad.detach().clone()


@pytest.mark.parametrize("kl", ["ref_to_policy", "policy_to_ref"])
def test_expected_loss_gradient_equals_exact_gradient_by_enumeration(kl):
    """Σ over (x, y₁, y₂, label) of probability × ∇loss = −∇J_γ exactly (batch of one pair)."""
    inst, policy, exact = _world(kl=kl)
    cfg = SailConfig(beta=inst.beta, gamma=inst.gamma, kl_direction=kl, baseline="none")
    probs = policy.log_probs().exp().detach()
    total = torch.zeros(3, dtype=DTYPE)
    for x, y1, y2 in itertools.product(range(2), range(3), range(3)):
        p_star = torch.sigmoid(torch.tensor(inst.reward[x, y1] - inst.reward[x, y2]))
        weight = inst.context_probs[x] * probs[x, y1] * probs[x, y2]
        for label, p_label in ((1.0, p_star), (0.0, 1 - p_star)):
            g = _loss_grad(policy, torch.tensor([x]), torch.tensor([[y1, y2]]), torch.tensor([label], dtype=DTYPE), cfg)
            total += weight * p_label * g
    torch.testing.assert_close(-total, exact, rtol=1e-10, atol=1e-12)
    # negative control: without the score-function term (online DPO) the expectation is wrong
    cfg_dpo = SailConfig(beta=inst.beta, gamma=inst.gamma, kl_direction=kl, score_term=False)
    biased = torch.zeros(3, dtype=DTYPE)
    for x, y1, y2 in itertools.product(range(2), range(3), range(3)):
        p = torch.sigmoid(torch.tensor(inst.reward[x, y1] - inst.reward[x, y2])).reshape(1)
        weight = inst.context_probs[x] * probs[x, y1] * probs[x, y2]
        biased += weight * _loss_grad(policy, torch.tensor([x]), torch.tensor([[y1, y2]]), p, cfg_dpo)
    assert (-biased - exact).abs().max() > 1e-3


def _sampled_gradient_mean(inst, policy, cfg, label_mode, seed, n_batches=1000, batch=64):
    """Mean and standard error of −∇loss over independent sampled batches of the loop."""
    oracle = TabularRewardOracle(inst.reward, mode=label_mode)
    sampler = ContextSampler(inst.context_probs)
    gen = torch.Generator().manual_seed(seed)
    grads = []
    for _ in range(n_batches):
        prompts = sampler(batch, gen)
        responses = policy.sample(prompts, 2, gen)
        grads.append(-_loss_grad(policy, prompts, responses, oracle.label(prompts, responses, gen), cfg))
    grads = torch.stack(grads)
    return grads.mean(0), grads.std(0) / len(grads) ** 0.5


@pytest.mark.parametrize(
    "kl,estimator",
    [
        ("ref_to_policy", "sequence"),
        ("policy_to_ref", "sequence"),
        ("ref_to_policy", "per_token_on_policy_prefixes"),  # one position: the per-position KL is the KL
        ("ref_to_policy", "k3_score"),
        ("policy_to_ref", "k2"),
    ],
)
def test_sampled_loss_gradient_mean_within_three_standard_errors(kl, estimator):
    """The mean of sampled loop gradients matches ∇J_γ within 3 standard errors per coordinate."""
    inst, policy, exact = _world(seed=1, kl=kl)
    cfg = SailConfig(beta=inst.beta, gamma=inst.gamma, kl_direction=kl, kl_estimator=estimator)
    mean, se = _sampled_gradient_mean(inst, policy, cfg, "sample", seed=123)
    assert ((mean - exact).abs() <= 3 * se).all(), (mean, exact, se)


@pytest.mark.parametrize(
    "old,correction,direction,new",
    [
        ("exact", False, "ref_to_policy", "per_token_on_policy_prefixes"),
        ("exact", True, "policy_to_ref", "sequence"),
        ("k3", True, "ref_to_policy", "k3_score"),
        ("k1", True, "policy_to_ref", "k1_score"),
    ],
)
def test_deprecated_estimator_names_fold_into_the_new_ones(old, correction, direction, new):
    with pytest.warns(FutureWarning, match=new):
        cfg = SailConfig(kl_estimator=old, kl_score_correction=correction, kl_direction=direction)
    assert cfg.kl_estimator == new and cfg.kl_score_correction is False


def test_score_correction_without_a_meaning_is_refused():
    with pytest.raises(ValueError, match="kl_score_correction"):
        SailConfig(kl_estimator="exact", kl_score_correction=True, kl_direction="ref_to_policy")
    with pytest.raises(ValueError, match="kl_score_correction"):
        SailConfig(kl_estimator="sequence", kl_score_correction=True)


def test_a_step_with_a_nonfinite_gradient_is_skipped():
    """A finite loss whose gradient is not finite never reaches the optimiser."""
    inst, policy, _ = _world(seed=2)
    before = policy.theta.detach().clone()
    opt = torch.optim.SGD(policy.trainable_parameters(), lr=0.1)
    gen = torch.Generator().manual_seed(0)
    batch = online_micro_batch(policy, TabularRewardOracle(inst.reward), torch.tensor([0, 1]), gen)
    # √|θ − θ| is 0 in value, and its gradient at 0 is 0·∞ = NaN
    kink = lambda: torch.sqrt((policy.theta - policy.theta.detach()).abs().sum())  # noqa: E731
    result = sail_step(policy, [batch], opt, SailConfig(beta=inst.beta, gamma=inst.gamma), penalty=kink)
    assert result.skipped == "gradient" and not np.isfinite(result.grad_norm)
    assert torch.equal(policy.theta.detach(), before) and policy.theta.grad is None
    # the control: the same step without the kink moves θ
    result = sail_step(policy, [batch], opt, SailConfig(beta=inst.beta, gamma=inst.gamma))
    assert result.skipped is None and not torch.equal(policy.theta.detach(), before)


def test_a_step_with_a_nonfinite_loss_is_skipped():
    inst, policy, _ = _world(seed=2)
    before = policy.theta.detach().clone()
    opt = torch.optim.SGD(policy.trainable_parameters(), lr=0.1)
    batch = online_micro_batch(policy, TabularRewardOracle(inst.reward), torch.tensor([0, 1]), torch.Generator().manual_seed(0))
    result = sail_step(policy, [batch], opt, SailConfig(), penalty=lambda: torch.tensor(float("inf")))
    assert result.skipped == "loss" and torch.equal(policy.theta.detach(), before)


def test_accumulated_micro_batches_equal_one_batch():
    """Two micro-batches of B pairs with accumulation 2 step like one batch of 2B pairs (no baseline)."""
    inst, policy, _ = _world(seed=3)
    theta0 = policy.theta.detach().clone()
    prompts, responses = torch.tensor([0, 1, 1, 0]), torch.tensor([[0, 1], [2, 1], [1, 1], [2, 0]])
    labels = torch.tensor([1.0, 0.0, 1.0, 0.0], dtype=DTYPE)
    cfg = SailConfig(beta=inst.beta, gamma=inst.gamma, baseline="none")

    def step(batches, accumulation):
        with torch.no_grad():
            policy.theta.copy_(theta0)
        opt = torch.optim.SGD(policy.trainable_parameters(), lr=0.5)
        sail_step(policy, batches, opt, cfg, accumulation=accumulation)
        return policy.theta.detach().clone()

    whole = step([MicroBatch(prompts, responses, labels)], 1)
    halves = step([MicroBatch(prompts[:2], responses[:2], labels[:2]), MicroBatch(prompts[2:], responses[2:], labels[2:])], 2)
    torch.testing.assert_close(whole, halves, rtol=1e-12, atol=1e-14)
    assert not torch.equal(whole, theta0)


def test_biased_kl_gradient_is_detected():
    """Negative control for the 3-SE test: pathwise k1 (zero expected gradient) is caught."""
    inst, policy, exact = _world(seed=1, gamma=3.0)
    cfg = SailConfig(beta=inst.beta, gamma=inst.gamma, kl_estimator="k1")
    mean, se = _sampled_gradient_mean(inst, policy, cfg, "soft", seed=5)
    assert ((mean - exact).abs() > 3 * se).any()


def test_projection_onto_ball():
    center = [torch.zeros(3, dtype=DTYPE), torch.ones(2, dtype=DTYPE)]
    params = [torch.tensor([3.0, 0.0, 0.0], dtype=DTYPE), torch.tensor([1.0, 5.0], dtype=DTYPE)]
    norm = project_onto_ball_(params, center, 1.0)
    total = torch.sqrt(sum(((p - c) ** 2).sum() for p, c in zip(params, center)))
    assert norm == pytest.approx(1.0) and total.item() == pytest.approx(1.0)
    torch.testing.assert_close(params[0], torch.tensor([0.6, 0.0, 0.0], dtype=DTYPE))
    inside = [torch.tensor([0.1, 0.2, 0.0], dtype=DTYPE), torch.ones(2, dtype=DTYPE)]
    before = [p.clone() for p in inside]
    project_onto_ball_(inside, center, 1.0)
    assert all(torch.equal(a, b) for a, b in zip(inside, before))


def test_loop_converges_to_the_exact_maximiser():
    inst = random_instance(0, n_contexts=3, n_responses=4, dim=3, beta=1.0, gamma=4.0, radius=1.0)
    problem = ExactProblem(inst)
    from sail.theory.ascent import global_max

    _, best, _ = global_max(problem, 2.0, np.random.default_rng(0), n_starts=2)
    policy = LogLinearPolicy(inst.features, inst.theta_ref)
    gap0 = best - problem.value(policy.theta.detach())
    opt = torch.optim.SGD(policy.trainable_parameters(), lr=0.3)
    cfg = SailConfig(beta=inst.beta, gamma=inst.gamma, radius=inst.radius)
    history = run_loop(
        policy,
        TabularRewardOracle(inst.reward, mode="sample"),
        ContextSampler(inst.context_probs),
        opt,
        cfg,
        steps=300,
        batch_size=256,
        generator=torch.Generator().manual_seed(0),
    )
    gap = best - problem.value(policy.theta.detach())
    assert gap < 0.05 * gap0
    assert len(history) == 300 and {"losses/loss", "charts/kl_ref_to_policy", "charts/distance_to_init"} <= set(history[-1])
    assert torch.linalg.norm(policy.theta.detach() - policy.theta_ref) <= inst.radius + 1e-12


def test_projection_binds_in_the_loop():
    """With a radius below the unconstrained maximiser's distance, every iterate stays on the ball
    and the iterates reach its boundary; without it they leave."""
    inst = random_instance(0, n_contexts=3, n_responses=4, dim=3, beta=1.0, gamma=0.0, radius=0.1)

    def distances(radius):
        policy = LogLinearPolicy(inst.features, inst.theta_ref)
        opt = torch.optim.SGD(policy.trainable_parameters(), lr=0.5)
        cfg = SailConfig(beta=inst.beta, gamma=0.0, radius=radius)
        sampler, oracle = ContextSampler(inst.context_probs), TabularRewardOracle(inst.reward, mode="soft")
        history = run_loop(policy, oracle, sampler, opt, cfg, steps=40, batch_size=64, generator=torch.Generator().manual_seed(0))
        return [h["charts/distance_to_init"] for h in history]

    free, bound = distances(None), distances(0.1)
    assert max(free) > 0.2
    assert max(bound) == pytest.approx(0.1, rel=1e-12) and all(d <= 0.1 + 1e-12 for d in bound)


def test_bradley_terry_label_modes():
    r1, r2 = torch.tensor([2.0, 0.0, 1.0]), torch.tensor([0.0, 0.0, 3.0])
    assert bradley_terry_labels(r1, r2, "argmax").tolist() == [1.0, 0.5, 0.0]
    torch.testing.assert_close(bradley_terry_labels(r1, r2, "soft"), torch.sigmoid(r1 - r2).double())
    gen = torch.Generator().manual_seed(0)
    draws = torch.stack([bradley_terry_labels(r1, r2, "sample", gen) for _ in range(4000)]).mean(0)
    assert torch.allclose(draws, torch.sigmoid(r1 - r2).double(), atol=0.03)
    with pytest.raises(ValueError, match="label mode"):
        bradley_terry_labels(r1, r2, "vote")
    near = torch.tensor([1.0 + 1e-9, 1.0 + 1e-3])
    assert bradley_terry_labels(near, torch.ones(2), "argmax", tie_tolerance=1e-6).tolist() == [0.5, 1.0]


@pytest.mark.parametrize(
    "kwargs,match",
    [({"beta": 0.0}, "beta"), ({"gamma": -1.0}, "gamma"), ({"kl_direction": "fwd"}, "kl_direction"),
     ({"kl_estimator": "k9"}, "kl_estimator"), ({"baseline": "median"}, "baseline"),
     ({"radius": 0.0}, "radius"), ({"gamma": float("inf")}, "gamma"), ({"beta": float("inf")}, "beta")],
)
def test_sail_config_validation(kwargs, match):
    with pytest.raises(ValueError, match=match):
        SailConfig(**kwargs)


def test_self_label_loss_gradient_is_exact_in_expectation():
    """SAIL-PP: labels drawn from σ(βΔ_θ); E[∇loss] = −∇E_{pairs}E_{z~q}[h] (by enumeration)."""
    inst, policy, _ = _world(seed=2, gamma=0.0)
    theta = policy.theta.detach().clone()

    def objective(th):
        logp = torch.log_softmax(policy.features @ th, -1)
        u = policy.features @ (th - policy.theta_ref)
        q = torch.sigmoid(inst.beta * (u[:, :, None] - u[:, None, :]))
        neg_entropy = q * torch.log(q) + (1 - q) * torch.log1p(-q)
        pairs = logp.exp()[:, :, None] * logp.exp()[:, None, :]
        return (torch.as_tensor(inst.context_probs) * (pairs * neg_entropy).sum((1, 2))).sum()

    exact = torch.func.grad(objective)(theta)
    probs = policy.log_probs().exp().detach()
    total = torch.zeros(3, dtype=DTYPE)
    for x, y1, y2 in itertools.product(range(2), range(3), range(3)):
        delta = (policy.features[x, y1] - policy.features[x, y2]) @ (theta - policy.theta_ref)
        q = torch.sigmoid(inst.beta * delta)
        weight = inst.context_probs[x] * probs[x, y1] * probs[x, y2]
        for label, p_label in ((1.0, q), (0.0, 1 - q)):
            policy.zero_grad()
            # the label is fixed here; the loss adds the label's score term ½h²
            from sail.objectives import sail_surrogate

            lp = policy.logprob(torch.tensor([x]), torch.tensor([[y1, y2]]))
            ref = policy.ref_logprob(torch.tensor([x]), torch.tensor([[y1, y2]]))
            loss = -sail_surrogate(lp[:, 0], lp[:, 1], ref[:, 0], ref[:, 1], torch.tensor([label], dtype=DTYPE), inst.beta, self_label=True).mean()
            loss.backward()
            total += weight * p_label * policy.theta.grad
    torch.testing.assert_close(-total, exact, rtol=1e-10, atol=1e-12)
