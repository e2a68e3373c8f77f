"""The one SAIL-RevKL step: pairs → labels → surrogate − γ·KL → optimiser step → projection.

It trains any :class:`~sail.policies.base.Policy`: a log-linear policy in the exact checkers, a
causal LM in the trainer (:mod:`sail.train.trainer` calls :func:`sail_step` for every update). Per
step, with B prompts x_i, one pair each, and the KL's own draws y'_i:

    loss = −(1/B) Σ_i surrogate_i + γ (1/B) Σ_i KL-term_i(y'_i)

whose gradient is an unbiased estimate of −∇J_γ when the KL estimator's gradient is unbiased: the
default ``sequence`` estimator in both directions, or ``k1_score``/``k3_score`` (see
:mod:`sail.objectives` and docs/training.md). After the optimiser step the parameters are projected
onto the ball ‖θ − θ₀‖ ≤ R when ``radius`` is set (the set on which the convergence theorem holds).

What differs between callers enters as arguments of :func:`sail_step`: the micro-batches (routes,
gradient accumulation), a penalty added to the loss, the gradient reduction across processes, and
the agreement on skipping a step whose loss or gradient is not finite.
"""

from __future__ import annotations

import warnings
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from typing import Callable, Iterable, Literal, Sequence

import torch

from sail.config import FieldError, check_choices
from sail.objectives import (
    DEPRECATED_KL_ESTIMATORS,
    KL_ESTIMATORS,
    PER_POSITION_KL_ESTIMATORS,
    implicit_reward_diff,
    kl_draw_distribution,
    leave_one_out_baseline,
    pair_term,
    sail_surrogate,
    sample_kl_term,
)

KLEstimatorName = Literal[
    "sequence", "per_token_on_policy_prefixes", "k1", "k2", "k3", "k1_score", "k2_score", "k3_score", "exact"
]
""":data:`sail.objectives.KL_ESTIMATORS` and the deprecated names it still reads."""


@dataclass
class SailConfig:
    """The SAIL-RevKL objective."""

    beta: float = 0.1
    """DPO temperature β > 0 in ℓ = p log σ(βΔ) + (1 − p) log σ(−βΔ)."""
    gamma: float = 1e-3
    """KL weight γ ≥ 0; γ = 0 is vanilla SAIL."""
    kl_direction: Literal["ref_to_policy", "policy_to_ref"] = "ref_to_policy"
    """``ref_to_policy`` = KL(π_ref‖π_θ) or ``policy_to_ref`` = KL(π_θ‖π_ref)."""
    kl_estimator: KLEstimatorName = "sequence"
    """How the KL term is estimated. ``sequence`` (unbiased in value and gradient): the exact
    per-position KL summed along responses drawn from the KL's first argument, π_ref for
    ``ref_to_policy`` (one extra decode with the reference) and π_θ for ``policy_to_ref`` (with the
    KL-to-go score term). ``per_token_on_policy_prefixes``: the per-position KL on π_θ's prefixes
    with its pathwise gradient (biased; a token-level proxy). ``k1``/``k2``/``k3``: Schulman's
    sample estimators with their pathwise gradients; ``k1_score``/``k2_score``/``k3_score``: plus the
    score correction sg(k)·log π_θ(y) (k1_score and k3_score are unbiased). ``exact`` is the old
    name of ``per_token_on_policy_prefixes`` (deprecated)."""
    kl_score_correction: bool = False
    """Deprecated: name the estimator instead (``k3`` + this → ``k3_score``; ``exact`` + this with
    ``policy_to_ref`` → ``sequence``). Read from older configs and folded into ``kl_estimator``."""
    score_term: bool = True
    """Keep the score-function term E[ℓ(s₁+s₂)]; False gives online DPO's gradient."""
    baseline: Literal["none", "leave_one_out", "ema"] = "leave_one_out"
    """Baseline b in sg(h − b): ``none``, the leave-one-out batch mean, or ``ema``, a moving average
    of h over *earlier* steps supplied by the caller (all independent of the pair, so unbiased;
    ``ema`` also makes the gradient independent of how a step is split into micro-batches)."""
    radius: float | None = None
    """Radius R of the ball ‖θ − θ₀‖ ≤ R (Euclidean over all trainable tensors, centred at the
    initial parameters) onto which every step projects; null: unconstrained."""

    def __post_init__(self):
        check_choices(self)
        if not self.beta > 0 or self.beta == float("inf"):
            raise FieldError("beta", f"must be a finite number > 0, got {self.beta}")
        if not self.gamma >= 0 or self.gamma == float("inf"):
            raise FieldError("gamma", f"must be a finite number >= 0, got {self.gamma}")
        if self.radius is not None and not 0 < self.radius < float("inf"):
            raise FieldError("radius", f"must be a finite number > 0 (or null), got {self.radius}")
        self._fold_deprecated_estimator()

    def _fold_deprecated_estimator(self) -> None:
        old = self.kl_estimator
        if old in DEPRECATED_KL_ESTIMATORS:
            self.kl_estimator = DEPRECATED_KL_ESTIMATORS[old]
        if self.kl_score_correction:
            if self.kl_estimator in ("k1", "k2", "k3"):
                self.kl_estimator += "_score"
            elif self.kl_estimator == "per_token_on_policy_prefixes" and self.kl_direction == "policy_to_ref":
                self.kl_estimator = "sequence"
            else:
                raise FieldError(
                    "kl_score_correction",
                    f"deprecated, and has no meaning for kl_estimator={old!r} with "
                    f"kl_direction={self.kl_direction!r}; choose one of {KL_ESTIMATORS}"
                )
            self.kl_score_correction = False
        if self.kl_estimator != old:
            warnings.warn(
                f"objective.kl_estimator={old!r} (with the score correction switch) is deprecated: "
                f"it is now named {self.kl_estimator!r}",
                FutureWarning,
                stacklevel=4,
            )


# --- the KL term ---------------------------------------------------------------------------
def kl_draw_source(cfg: SailConfig) -> str:
    """``reference`` or ``policy``: the distribution the KL term's responses are drawn from."""
    return kl_draw_distribution(cfg.kl_direction, cfg.kl_estimator)


def draw_kl_responses(policy, prompts, cfg: SailConfig, generator: torch.Generator | None):
    """One response per prompt from :func:`kl_draw_source` (π_ref inside ``policy.reference()``)."""
    context = policy.reference() if kl_draw_source(cfg) == "reference" else nullcontext()
    with context:
        return policy.sample(prompts, 1, generator=generator)


@dataclass
class KLTerm:
    """The KL's loss term and value per prompt [B], with the log-probs of the responses it used."""

    term: torch.Tensor
    value: torch.Tensor
    logp: torch.Tensor
    ref_logp: torch.Tensor


def kl_loss_term(policy, prompts, kl_responses, cfg: SailConfig) -> KLTerm:
    """The KL term for responses ``kl_responses`` [B, n] drawn from :func:`kl_draw_source`.

    Its gradient is what the step uses, so E_{y∼source}[∇term(y)] (sampling weights fixed) is the
    step's expected KL gradient: equal to ∇E_x KL_dir for ``sequence``, ``k1_score`` and
    ``k3_score`` (and for ``k2`` with ``policy_to_ref``), biased for the others."""
    per_position = cfg.kl_estimator in PER_POSITION_KL_ESTIMATORS
    kl_to_go = cfg.kl_estimator == "sequence" and kl_draw_source(cfg) == "policy"
    logp, ref_logp, kl = policy.score_pairs(prompts, kl_responses, cfg.kl_direction if per_position else None, kl_to_go)
    ref_logp = ref_logp.detach()
    if per_position:
        return KLTerm(kl, kl.detach(), logp, ref_logp)
    term, value = sample_kl_term(logp, ref_logp, cfg.kl_direction, cfg.kl_estimator)
    return KLTerm(term.mean(1), value.mean(1), logp, ref_logp)


# --- the loss ------------------------------------------------------------------------------
def sail_loss(
    policy,
    prompts,
    responses,
    p_win: torch.Tensor | None,
    cfg: SailConfig,
    generator: torch.Generator | None = None,
    on_policy: bool = True,
    baseline_value: float = 0.0,
    kl_generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, dict]:
    """The loss for one batch of pairs ``responses`` [B, 2] with labels ``p_win`` [B].

    ``p_win=None`` self-labels: each label is drawn from Bernoulli(σ(βΔ_θ)) with ``generator``
    and the label's score term is added (see :func:`sail_surrogate`). ``on_policy=False`` marks
    pairs that were not sampled from π_θ (dataset pairs): no score-function term for them, and the
    KL is estimated on its own draws. The KL term uses the pair itself when the estimator draws from
    π_θ and the pair is on-policy; otherwise (reference draws, or dataset pairs) it draws one
    response per prompt with ``kl_generator`` (default: ``generator``), independently of the pair,
    so the two estimates stay unbiased whatever the route.
    """
    if on_policy and kl_draw_source(cfg) == "policy":
        kl = kl_loss_term(policy, prompts, responses, cfg)
        logp, ref_logp = kl.logp, kl.ref_logp
    else:
        logp, ref_logp, _ = policy.score_pairs(prompts, responses)
        ref_logp = ref_logp.detach()
        kl_responses = draw_kl_responses(policy, prompts, cfg, kl_generator if kl_generator is not None else generator)
        kl = kl_loss_term(policy, prompts, kl_responses, cfg)
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
    loss = -surrogate.mean() + cfg.gamma * kl.term.mean()
    stats = {
        "losses/loss": loss.item(),
        "losses/pair_term": h.mean().item(),
        f"charts/kl_{cfg.kl_direction}": kl.value.mean().item(),  # the estimator's value on this batch
        "charts/implicit_reward_margin_abs_mean": delta.detach().abs().mean().item(),  # mean |Δ| over pairs
    }
    return loss, stats


# --- one step ------------------------------------------------------------------------------
@dataclass
class MicroBatch:
    """One micro-batch of a step: pairs [B, 2] with labels (None: self-labels), whether the pairs
    were drawn from π_θ, and the generators for self-labels and for the KL's own draws."""

    prompts: object
    responses: object
    p_win: torch.Tensor | None
    on_policy: bool = True
    generator: torch.Generator | None = None
    kl_generator: torch.Generator | None = None


def online_micro_batch(policy, oracle, prompts, generator: torch.Generator | None = None) -> MicroBatch:
    """A pair per prompt drawn from π_θ, labelled by ``oracle``; KL draws share ``generator``."""
    responses = policy.sample(prompts, 2, generator=generator)
    p_win = oracle.label(prompts, responses, generator=generator)
    return MicroBatch(prompts, responses, p_win, True, generator, generator)


@dataclass
class StepResult:
    """What one step did: the mean statistics over its micro-batches, the gradient norm before the
    update, ‖θ − θ₀‖ after it (after the projection), and why it was skipped (None: it was not)."""

    stats: dict = field(default_factory=dict)
    grad_norm: float | None = None
    distance_to_init: float | None = None
    skipped: str | None = None


def _agree_single(flag: bool) -> bool:
    return flag


@torch.no_grad()
def distance_to_center(params: Sequence[torch.Tensor], centers: Sequence[torch.Tensor]) -> float:
    """‖θ − c‖ over all tensors jointly (float64)."""
    return float(torch.sqrt(sum(((p.double() - c.to(p.device).double()) ** 2).sum() for p, c in zip(params, centers))))


@torch.no_grad()
def project_onto_ball_(params: Sequence[torch.Tensor], centers: Sequence[torch.Tensor], radius: float) -> float:
    """In place: (θ − c) ← (θ − c)·min(1, R/‖θ − c‖) over all tensors jointly. Returns ‖θ − c‖ after."""
    norm = distance_to_center(params, centers)
    if norm > radius:
        scale = radius / norm
        for p, c in zip(params, centers):
            c = c.to(device=p.device, dtype=p.dtype)
            p.copy_(c + (p - c) * scale)
        norm = radius
    return norm


def sail_step(
    policy,
    micro_batches: Iterable[MicroBatch],
    optimizer: torch.optim.Optimizer,
    cfg: SailConfig,
    *,
    accumulation: int = 1,
    baseline_value: float = 0.0,
    penalty: Callable[[], torch.Tensor | None] | None = None,
    autocast=nullcontext,
    reduce_gradients: Callable[[list], None] | None = None,
    all_agree: Callable[[bool], bool] = _agree_single,
    max_grad_norm: float | None = None,
) -> StepResult:
    """One optimiser update of SAIL-RevKL.

    For each of the ``accumulation`` micro-batches (consumed lazily, so a caller may sample each one
    after the previous backward), ``(sail_loss + penalty) / accumulation`` is back-propagated. The
    step is skipped, with the gradients cleared, when any micro-batch's loss or the reduced
    gradient is not finite; ``all_agree`` makes every process take the same branch (it returns
    True only when the flag is True everywhere). ``reduce_gradients`` averages the gradients across
    processes before the check. With ``max_grad_norm`` the gradient is then scaled to norm at most
    ``max_grad_norm`` (the reported ``grad_norm`` is the norm before). Then the optimiser steps and,
    when ``cfg.radius`` is set, θ is projected onto ‖θ − θ₀‖ ≤ R (θ₀ = ``policy.ball_center()``).
    """
    params = list(policy.trainable_parameters())
    optimizer.zero_grad(set_to_none=True)
    totals: dict[str, float] = {}
    finite_loss = True
    for batch in micro_batches:
        with autocast():
            loss, stats = sail_loss(
                policy,
                batch.prompts,
                batch.responses,
                batch.p_win,
                cfg,
                batch.generator,
                batch.on_policy,
                baseline_value,
                batch.kl_generator,
            )
            extra = penalty() if penalty is not None else None
            if extra is not None:
                loss = loss + extra
                stats["losses/spectral_penalty"] = float(extra.detach())
        if not torch.isfinite(loss):
            finite_loss = False
            break
        (loss / accumulation).backward()
        for key, value in stats.items():
            totals[key] = totals.get(key, 0.0) + value / accumulation
    if not all_agree(finite_loss):
        optimizer.zero_grad(set_to_none=True)
        return StepResult(skipped="loss")
    if reduce_gradients is not None:
        reduce_gradients(params)
    grad_norm = float(torch.nn.utils.clip_grad_norm_(params, float("inf")))
    if not all_agree(bool(torch.isfinite(torch.tensor(grad_norm)))):
        optimizer.zero_grad(set_to_none=True)
        return StepResult(stats=totals, grad_norm=grad_norm, skipped="gradient")
    if max_grad_norm is not None:
        torch.nn.utils.clip_grad_norm_(params, max_grad_norm)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    if cfg.radius is not None:
        distance = project_onto_ball_(params, policy.ball_center(), cfg.radius)
    else:
        distance = distance_to_center(params, policy.ball_center())
    return StepResult(stats=totals, grad_norm=grad_norm, distance_to_init=distance)


# --- the loop for finite worlds ------------------------------------------------------------
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
    generator: torch.Generator | None = None,
    callbacks: Iterable[Callable[[int, dict], None]] = (),
) -> list[dict]:
    """``steps`` SAIL-RevKL iterations of :func:`sail_step` with one online micro-batch each; each
    callback gets (step, stats) after the update. Stats carry ``charts/distance_to_init``."""
    history = []
    for step in range(steps):
        prompts = prompt_sampler(batch_size, generator)
        result = sail_step(policy, [online_micro_batch(policy, oracle, prompts, generator)], optimizer, cfg)
        stats = dict(result.stats)
        stats["charts/distance_to_init"] = result.distance_to_init
        stats["step"] = step
        history.append(stats)
        for callback in callbacks:
            callback(step, stats)
    return history


def config_dict(cfg: SailConfig) -> dict:
    return asdict(cfg)
