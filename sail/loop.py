"""The one SAIL-RevKL loop: sample pairs → label → surrogate − γ·KL → optimiser step → projection.

It trains any :class:`~sail.policies.base.Policy` — a log-linear policy in the exact checkers, a
causal LM in the trainer. Per step, with B prompts x_i and one on-policy pair each:

    loss = −(1/B) Σ_i surrogate_i + γ (1/B) Σ_i KL_i

whose gradient is an unbiased estimate of −∇J_γ when the KL term's gradient is unbiased (the
``exact`` estimator, or k1/k3 with ``kl_score_correction``; see :mod:`sail.objectives`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Callable, Iterable, Sequence

import torch

from sail.objectives import (
    KL_ESTIMATORS,
    check_kl_direction,
    implicit_reward_diff,
    kl_penalty,
    kl_sample_estimate,
    leave_one_out_baseline,
    pair_term,
    sail_surrogate,
)

BASELINES = ("none", "leave_one_out", "ema")


@dataclass
class SailConfig:
    """The SAIL-RevKL objective."""

    beta: float = 0.1
    """DPO temperature β > 0 in ℓ = p log σ(βΔ) + (1 − p) log σ(−βΔ)."""
    gamma: float = 1e-3
    """KL weight γ ≥ 0; γ = 0 is vanilla SAIL."""
    kl_direction: str = "ref_to_policy"
    """``ref_to_policy`` = KL(π_ref‖π_θ) or ``policy_to_ref`` = KL(π_θ‖π_ref)."""
    kl_estimator: str = "exact"
    """``exact`` (the policy's exact KL per prompt) or the sample estimators ``k1``/``k2``/``k3``."""
    kl_score_correction: bool = False
    """Add the score-function term that the sampling of y from π_θ needs: sg(k)·log π_θ for the
    sample estimators (k1/k3 gradients become unbiased), and for a sequence policy's ``exact``
    per-position KL the KL-to-go term (see ``CausalLMPolicy.score_pairs``)."""
    score_term: bool = True
    """Keep the score-function term E[ℓ(s₁+s₂)]; False gives online DPO's gradient."""
    baseline: str = "leave_one_out"
    """Baseline b in sg(h − b): ``none``, the leave-one-out batch mean, or ``ema``, a moving average
    of h over *earlier* steps supplied by the caller (all independent of the pair, so unbiased;
    ``ema`` also makes the gradient independent of how a step is split into micro-batches)."""

    def __post_init__(self):
        if not self.beta > 0:
            raise ValueError(f"beta must be > 0, got {self.beta}")
        if not self.gamma >= 0:
            raise ValueError(f"gamma must be >= 0, got {self.gamma}")
        check_kl_direction(self.kl_direction)
        if self.kl_estimator not in KL_ESTIMATORS:
            raise ValueError(f"kl_estimator must be one of {KL_ESTIMATORS}, got {self.kl_estimator!r}")
        if self.baseline not in BASELINES:
            raise ValueError(f"baseline must be one of {BASELINES}, got {self.baseline!r}")


def sail_loss(
    policy,
    prompts,
    responses,
    p_win: torch.Tensor | None,
    cfg: SailConfig,
    generator: torch.Generator | None = None,
    on_policy: bool = True,
    baseline_value: float = 0.0,
) -> tuple[torch.Tensor, dict]:
    """The loss for one batch of pairs ``responses`` [B, 2] with labels ``p_win`` [B].

    ``p_win=None`` self-labels: each label is drawn from Bernoulli(σ(βΔ_θ)) with ``generator``
    and the label's score term is added (see :func:`sail_surrogate`). ``on_policy=False`` marks
    pairs that were not sampled from π_θ (dataset pairs): no score-function term for them.
    """
    exact_kl = cfg.kl_estimator == "exact" or not on_policy  # sample estimators need on-policy responses
    logp, ref_logp, kl_full = policy.score_pairs(
        prompts,
        responses,
        cfg.kl_direction if exact_kl else None,
        kl_score_correction=cfg.kl_score_correction and on_policy,
    )
    ref_logp = ref_logp.detach()
    delta = implicit_reward_diff(logp[:, 0], logp[:, 1], ref_logp[:, 0], ref_logp[:, 1])
    self_label = p_win is None
    if self_label:
        p_win = torch.bernoulli(torch.sigmoid(cfg.beta * delta.detach()).cpu().double(), generator=generator)
    p_win = p_win.to(device=logp.device, dtype=logp.dtype)
    h = pair_term(delta, p_win, cfg.beta)
    if cfg.baseline == "leave_one_out":
        baseline = leave_one_out_baseline(h)
    elif cfg.baseline == "ema":
        baseline = baseline_value
    else:
        baseline = None
    surrogate = sail_surrogate(
        logp[:, 0],
        logp[:, 1],
        ref_logp[:, 0],
        ref_logp[:, 1],
        p_win,
        cfg.beta,
        baseline,
        score_term=cfg.score_term and on_policy,
        self_label=self_label,
    )
    if exact_kl:
        kl_term = kl_full
        kl_value = kl_term.detach()
    else:
        kl_term = kl_penalty(logp, ref_logp, cfg.kl_direction, cfg.kl_estimator, cfg.kl_score_correction).mean(1)
        kl_value = kl_sample_estimate(logp.detach(), ref_logp, cfg.kl_direction, cfg.kl_estimator).mean(1)
    loss = -surrogate.mean() + cfg.gamma * kl_term.mean()
    stats = {
        "losses/loss": loss.item(),
        "losses/pair_term": h.mean().item(),
        "charts/kl": kl_value.mean().item(),
        "charts/implicit_reward_margin": delta.detach().abs().mean().item(),
    }
    return loss, stats


@torch.no_grad()
def project_onto_ball_(params: Sequence[torch.Tensor], centers: Sequence[torch.Tensor], radius: float) -> float:
    """In place: (θ − c) ← (θ − c)·min(1, R/‖θ − c‖) over all tensors jointly. Returns ‖θ − c‖ after."""
    offsets = [p - c for p, c in zip(params, centers)]
    norm = torch.sqrt(sum((o.double() ** 2).sum() for o in offsets)).item()
    if norm > radius:
        scale = radius / norm
        for p, c, o in zip(params, centers, offsets):
            p.copy_(c + o * scale)
        norm = radius
    return norm


def sail_step(policy, oracle, prompts, optimizer, cfg: SailConfig, radius: float | None = None, generator=None) -> dict:
    """One iteration: sample a pair per prompt, label it, step the optimiser, project."""
    responses = policy.sample(prompts, 2, generator=generator)
    p_win = oracle.label(prompts, responses, generator=generator)
    optimizer.zero_grad(set_to_none=True)
    loss, stats = sail_loss(policy, prompts, responses, p_win, cfg)
    loss.backward()
    optimizer.step()
    if radius is not None:
        stats["charts/distance_to_ref"] = project_onto_ball_(policy.trainable_parameters(), policy.ball_center(), radius)
    return stats


class ContextSampler:
    """Prompts for a finite world: context indices x ~ ρ."""

    def __init__(self, context_probs):
        self.context_probs = torch.as_tensor(context_probs, dtype=torch.float64)

    def __call__(self, batch_size: int, generator: torch.Generator | None = None) -> torch.Tensor:
        return torch.multinomial(self.context_probs, batch_size, replacement=True, generator=generator)


def run_loop(
    policy,
    oracle,
    prompt_sampler: Callable[[int, torch.Generator | None], object],
    optimizer: torch.optim.Optimizer,
    cfg: SailConfig,
    steps: int,
    batch_size: int,
    radius: float | None = None,
    generator: torch.Generator | None = None,
    callbacks: Iterable[Callable[[int, dict], None]] = (),
) -> list[dict]:
    """``steps`` SAIL-RevKL iterations; each callback gets (step, stats) after the update."""
    history = []
    for step in range(steps):
        prompts = prompt_sampler(batch_size, generator)
        stats = sail_step(policy, oracle, prompts, optimizer, cfg, radius, generator)
        stats["step"] = step
        history.append(stats)
        for callback in callbacks:
            callback(step, stats)
    return history


def config_dict(cfg: SailConfig) -> dict:
    return asdict(cfg)
