"""Sample complexity of stochastic SAIL-RevKL, measured on an exact instance.

Theory (DESIGN.md §3): with step η = 1/L and minibatch b, E[gap_k] ≤ (1 − μ/L)^k Δ₀ + O(σ²/(μb)),
so b ∝ 1/ε and k ∝ (L/μ) log(1/ε) reach E[gap] ≤ ε with O(ε⁻¹ log ε⁻¹) samples: a log-log slope
of samples against 1/ε close to 1. Over a finite ε range the log factor raises the fitted slope by
about log(log(Δ₀/ε_min)/log(Δ₀/ε_max))/log(ε_max/ε_min); ``slope_log_corrected`` fits
samples/log(Δ₀/ε) instead, which the theory predicts to have slope 1.

Measurement: the stochastic runs go through the one training loop (:func:`sail.loop.sail_step`:
sampled contexts, on-policy pairs, sampled Bradley–Terry labels, the surrogate loss, exact KL,
``torch.optim.SGD`` with lr = 1/L̂, projection onto the ball). For each batch size b on a grid,
``replicas`` independent runs advance in lockstep from the same start and the exact gap of each
iterate is computed by enumeration; E[gap_k] is the replica mean. The samples needed for ε are
min_b b·k_b(ε), with k_b(ε) the first step at which the mean gap is ≤ ε — so no schedule is
imposed; the best batch size is found. Samples count labelled pairs (one label, two responses).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from tqdm.auto import tqdm

from sail.loop import ContextSampler, SailConfig, sail_step
from sail.oracles import TabularRewardOracle
from sail.policies.loglinear import LogLinearPolicy
from sail.theory.problem import ExactProblem


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
) -> np.ndarray:
    """Replica-mean exact gap after each of up to ``n_steps`` loop iterations (index 0 = start)."""
    inst = problem.instance
    cfg = SailConfig(beta=inst.beta, gamma=inst.gamma, kl_direction=inst.kl, kl_estimator="exact")
    oracle = TabularRewardOracle(inst.reward, mode="sample")
    sampler = ContextSampler(inst.context_probs)
    runs = []
    for r in range(replicas):
        policy = LogLinearPolicy(inst.features, inst.theta_ref, theta=theta0)
        optimizer = torch.optim.SGD(policy.trainable_parameters(), lr=step)
        generator = torch.Generator().manual_seed(seed * 100_003 + r)
        runs.append((policy, optimizer, generator))
    gap0 = max_value - problem.value(theta0)
    curve = [gap0]
    for _ in range(n_steps):
        gaps = []
        for policy, optimizer, generator in runs:
            prompts = sampler(batch_size, generator)
            sail_step(policy, oracle, prompts, optimizer, cfg, problem.radius, generator)
            gaps.append(max_value - problem.value(policy.theta.detach()))
        curve.append(float(np.mean(gaps)))
        if curve[-1] <= stop_below:
            break
    return np.array(curve)


def first_hit(curve: np.ndarray, eps: float) -> float:
    hits = np.nonzero(curve <= eps)[0]
    return float(hits[0]) if hits.size else math.inf


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
    step_budget_factor: float = 3.0,
    progress: bool = False,
) -> dict:
    """Samples needed for E[gap] ≤ ε for ε = fraction·gap₀, and the fitted log-log slope."""
    gap0 = max_value - problem.value(theta0)
    epsilons = gap0 * np.asarray(eps_fractions, dtype=np.float64)
    kappa = lipschitz / max(mu, 1e-12)
    n_steps = int(math.ceil(step_budget_factor * kappa * math.log(gap0 / epsilons.min()))) + 10
    per_batch = {}
    for b in tqdm(batch_sizes, desc="sample complexity", disable=not progress):
        curve = mean_gap_curve(
            problem, theta0, max_value, b, 1.0 / lipschitz, n_steps, replicas, seed, stop_below=0.8 * epsilons.min()
        )
        per_batch[int(b)] = [first_hit(curve, e) * b for e in epsilons]
    samples, best_batch = [], []
    for i in range(len(epsilons)):
        b_best = min(per_batch, key=lambda b: per_batch[b][i])
        samples.append(per_batch[b_best][i])
        best_batch.append(b_best)
    samples = np.array(samples)
    finite = np.isfinite(samples)
    slope = slope_log_corrected = math.nan
    if finite.sum() >= 2:
        inv_eps = np.log(1.0 / epsilons[finite])
        slope = float(np.polyfit(inv_eps, np.log(samples[finite]), 1)[0])
        log_factor = np.log(gap0 / epsilons[finite])
        slope_log_corrected = float(np.polyfit(inv_eps, np.log(samples[finite] / log_factor), 1)[0])
    return {
        "epsilons": epsilons.tolist(),
        "eps_fractions": list(map(float, eps_fractions)),
        "gap0": gap0,
        "samples": [float(s) if math.isfinite(s) else None for s in samples],
        "best_batch_size": best_batch,
        "slope": slope,
        "slope_log_corrected": slope_log_corrected,
        "steps_budget": n_steps,
        "replicas": replicas,
        "step_size": 1.0 / lipschitz,
        "per_batch_samples": {str(b): [float(v) if math.isfinite(v) else None for v in vals] for b, vals in per_batch.items()},
    }
