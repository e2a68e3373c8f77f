"""Sample complexity of stochastic SAIL-RevKL, measured on an exact instance.

What is measured. Minibatch SGD with a *constant* step η = 1/L̂ and a *constant* batch size b,
projected onto the ball, run through the one training loop (:func:`sail.loop.sail_step`: sampled
contexts, on-policy pairs, sampled Bradley–Terry labels, the surrogate loss, exact KL,
``torch.optim.SGD``, projection). For each b on a grid, ``replicas`` independent runs advance in
lockstep from the same start; the exact gap of every iterate is computed by enumeration and
E[gap_k] is estimated by the replica mean. The samples needed for ε are

    n(ε) = min_b b·k_b(ε),   k_b(ε) = the first step at which the replica-mean gap is ≤ ε,

so n(ε) is the sample count of the best constant-step, constant-batch schedule on the grid.
Samples count labelled pairs (one label, two responses).

What theory predicts for that family. For η = 1/L and batch b,
E[gap_k] ≤ (1 − μ/L)^k Δ₀ + σ²/(2μb) (``proofs/stochastic_rate.py``, interior case): reaching ε
needs b ≳ σ²/(με) and k ≳ (L/μ)·log(Δ₀/ε), so this family's count is of order ε⁻¹·log(Δ₀/ε).
That is an upper bound on the problem's sample complexity reached by one family of schedules, not
the problem's rate: SGD with decaying steps under PL reaches O(ε⁻¹) (Karimi, Nutini & Schmidt 2016,
Thm 4), which this estimator does not run.

Statistics. The whole measurement is repeated for ``seeds`` independent groups of replicas. Each
group gives its own n(ε) and its own least-squares slope of log n against log(1/ε); the reported
slope is their mean and its 95% confidence interval is the Student-t interval over the per-group
slopes. Three one-constant models, n ∝ ε⁻¹, n ∝ ε⁻¹·log(Δ₀/ε) and n ∝ ε⁻², are fitted to the
group-mean log n; each gets its RMS residual in log n and the t-interval of its residual slope
(the slope of log(n/f(ε)) against log(1/ε), 0 for a model that fits).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from scipy import stats
from tqdm.auto import tqdm

from sail.loop import ContextSampler, SailConfig, online_micro_batch, sail_step
from sail.oracles import TabularRewardOracle
from sail.policies.loglinear import LogLinearPolicy
from sail.theory.problem import ExactProblem

MODELS = {
    "inv_eps": ("n ∝ ε⁻¹", lambda eps, gap0: 1.0 / eps),
    "inv_eps_log": ("n ∝ ε⁻¹·log(Δ₀/ε)", lambda eps, gap0: np.log(gap0 / eps) / eps),
    "inv_eps_squared": ("n ∝ ε⁻²", lambda eps, gap0: eps**-2.0),
}
"""The candidate rates: key → (label, f(ε, Δ₀))."""


def replica_seed(seed: int, group: int, replica: int) -> int:
    """A torch seed for one run, distinct for every (seed, group, replica)."""
    return int(np.random.SeedSequence([seed, group, replica]).generate_state(1)[0])


def mean_gap_curve(
    problem: ExactProblem,
    theta0: np.ndarray,
    max_value: float,
    batch_size: int,
    step: float,
    n_steps: int,
    replicas: int,
    seed: int,
    stop_below: float = 0.0,
    group: int = 0,
) -> np.ndarray:
    """Replica-mean exact gap after each of up to ``n_steps`` loop iterations (index 0 = start)."""
    inst = problem.instance
    cfg = SailConfig(
        beta=inst.beta, gamma=inst.gamma, kl_direction=inst.kl, kl_estimator="sequence", radius=problem.radius
    )
    oracle = TabularRewardOracle(inst.reward, mode="sample")
    sampler = ContextSampler(inst.context_probs)
    runs = []
    for r in range(replicas):
        policy = LogLinearPolicy(inst.features, inst.theta_ref, theta=theta0)
        optimizer = torch.optim.SGD(policy.trainable_parameters(), lr=step)
        generator = torch.Generator().manual_seed(replica_seed(seed, group, r))
        runs.append((policy, optimizer, generator))
    gap0 = max_value - problem.value(theta0)
    curve = [gap0]
    for _ in range(n_steps):
        gaps = []
        for policy, optimizer, generator in runs:
            prompts = sampler(batch_size, generator)
            sail_step(policy, [online_micro_batch(policy, oracle, prompts, generator)], optimizer, cfg)
            gaps.append(max_value - problem.value(policy.theta.detach()))
        curve.append(float(np.mean(gaps)))
        if curve[-1] <= stop_below:
            break
    return np.array(curve)


def first_hit(curve: np.ndarray, eps: float) -> float:
    hits = np.nonzero(curve <= eps)[0]
    return float(hits[0]) if hits.size else math.inf


def best_schedule_samples(
    problem: ExactProblem,
    theta0: np.ndarray,
    max_value: float,
    lipschitz: float,
    epsilons: np.ndarray,
    batch_sizes,
    replicas: int,
    seed: int,
    group: int,
    n_steps: int,
) -> tuple[list[float], list[int | None], dict[int, list[float]]]:
    """n(ε) = min_b b·k_b(ε) for one group of replicas; also the minimising b and every b·k_b(ε).

    Batch sizes run from the largest down, and each run stops once b·k exceeds the best count
    found so far for the smallest ε: past that step no ε can be reached with fewer samples, so the
    minimum is the same as with the full step budget (those entries of the table are inf)."""
    best = np.full(len(epsilons), math.inf)
    per_batch: dict[int, list[float]] = {}
    for b in sorted({int(v) for v in batch_sizes}, reverse=True):
        limit = n_steps if not math.isfinite(best.max()) else min(n_steps, int(best.max() // b))
        curve = mean_gap_curve(
            problem, theta0, max_value, b, 1.0 / lipschitz, limit, replicas, seed,
            stop_below=0.8 * float(epsilons.min()), group=group,
        )
        counts = [first_hit(curve, e) * b for e in epsilons]
        per_batch[b] = counts
        best = np.minimum(best, counts)
    best_batch: list[int | None] = []
    for i in range(len(epsilons)):
        finite = [b for b in per_batch if math.isfinite(per_batch[b][i])]
        best_batch.append(min(finite, key=lambda b: (per_batch[b][i], b)) if finite else None)
    return best.tolist(), best_batch, dict(sorted(per_batch.items()))


def t_interval(values, level: float = 0.95) -> tuple[float, float] | None:
    """Student-t confidence interval for the mean of ``values`` (None with fewer than two)."""
    values = np.asarray(values, dtype=np.float64)
    if values.size < 2:
        return None
    half = stats.t.ppf(0.5 + level / 2, values.size - 1) * values.std(ddof=1) / math.sqrt(values.size)
    return float(values.mean() - half), float(values.mean() + half)


def _slope(x: np.ndarray, y: np.ndarray) -> float:
    return float(np.polyfit(x, y, 1)[0])


def rate_fits(epsilons, samples_by_group, gap0: float) -> dict:
    """Slope of log n against log(1/ε) per group, its mean and t-interval, and the model fits.

    Only groups whose counts are all finite enter; with fewer than two such groups the intervals
    are None, and with none every figure is None."""
    eps = np.asarray(epsilons, dtype=np.float64)
    x = np.log(1.0 / eps)
    groups = [np.asarray(s, dtype=np.float64) for s in samples_by_group]
    complete = [np.log(s) for s in groups if s.size == eps.size and np.all(np.isfinite(s)) and np.all(s > 0)]
    out: dict = {"groups_used": len(complete), "slope": None, "slope_ci95": None, "slopes_by_seed": [], "models": {}}
    if not complete or eps.size < 2:
        out["best_model"] = None
        return out
    logs = np.stack(complete)
    slopes = [_slope(x, y) for y in logs]
    out.update(slope=float(np.mean(slopes)), slope_ci95=t_interval(slopes), slopes_by_seed=slopes)
    mean_log = logs.mean(axis=0)
    for key, (label, f) in MODELS.items():
        log_f = np.log(f(eps, gap0))
        residual = mean_log - log_f
        constant = float(residual.mean())
        residual_slopes = [_slope(x, y - log_f) for y in logs]
        out["models"][key] = {
            "model": label,
            "constant": float(math.exp(constant)),
            "rms_log_residual": float(np.sqrt(np.mean((residual - constant) ** 2))),
            "residual_slope": float(np.mean(residual_slopes)),
            "residual_slope_ci95": t_interval(residual_slopes),
        }
    out["best_model"] = min(out["models"], key=lambda k: out["models"][k]["rms_log_residual"])
    return out


def sample_complexity(
    problem: ExactProblem,
    theta0: np.ndarray,
    max_value: float,
    lipschitz: float,
    mu: float,
    eps_fractions=(0.1, 0.03, 0.01, 0.003),
    batch_sizes=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024),
    replicas: int = 8,
    seed: int = 0,
    seeds: int = 1,
    step_budget_factor: float = 3.0,
    progress: bool = False,
) -> dict:
    """Samples needed for E[gap] ≤ ε (ε = fraction·gap₀) in ``seeds`` independent groups of
    ``replicas`` runs per batch size, and the fits of :func:`rate_fits`."""
    if replicas < 1 or seeds < 1:
        raise ValueError(f"replicas and seeds must be >= 1, got {replicas} and {seeds}")
    gap0 = max_value - problem.value(theta0)
    epsilons = gap0 * np.asarray(eps_fractions, dtype=np.float64)
    kappa = lipschitz / max(mu, 1e-12)
    n_steps = int(math.ceil(step_budget_factor * kappa * math.log(gap0 / epsilons.min()))) + 10
    by_group, batch_by_group, per_batch_by_group = [], [], []
    for group in tqdm(range(seeds), desc="sample complexity", disable=not progress):
        counts, best_batch, per_batch = best_schedule_samples(
            problem, theta0, max_value, lipschitz, epsilons, batch_sizes, replicas, seed, group, n_steps
        )
        by_group.append(counts)
        batch_by_group.append(best_batch)
        per_batch_by_group.append(per_batch)
    table = np.asarray(by_group, dtype=np.float64)
    with np.errstate(divide="ignore"):
        geo_mean = np.exp(np.log(table).mean(axis=0))
    fits = rate_fits(epsilons, by_group, gap0)

    def finite_or_none(v):
        return float(v) if math.isfinite(v) else None

    return {
        "epsilons": epsilons.tolist(),
        "eps_fractions": list(map(float, eps_fractions)),
        "gap0": gap0,
        "samples": [finite_or_none(v) for v in geo_mean],
        "samples_by_seed": [[finite_or_none(v) for v in row] for row in by_group],
        "best_batch_size": [sorted({g[i] for g in batch_by_group if g[i] is not None}) for i in range(len(epsilons))],
        "best_batch_size_by_seed": batch_by_group,
        "slope": fits["slope"],
        "slope_ci95": fits["slope_ci95"],
        "slopes_by_seed": fits["slopes_by_seed"],
        "seeds_used": fits["groups_used"],
        "models": fits["models"],
        "best_model": fits["best_model"],
        "steps_budget": n_steps,
        "replicas": replicas,
        "seeds": seeds,
        "step_size": 1.0 / lipschitz,
        "per_batch_samples": [
            {str(b): [finite_or_none(v) for v in vals] for b, vals in per_batch.items()}
            for per_batch in per_batch_by_group
        ],
    }
