"""The PL ratio along a stochastic trajectory: the training loop itself, run on the checker's model.

From θ₀, :func:`sail.loop.run_loop` takes ``steps`` SAIL-RevKL steps (prompts x ~ ρ, a pair each from
π_θ, Bradley–Terry labels drawn from r*, the default ``sequence`` KL estimator, SGD with η = 1/L̂,
projection onto the ball). At every iterate θ_k the exact ratio ½D_L(θ_k)/(J_γ* − J_γ(θ_k)) is
evaluated (:func:`sail.theory.pl.prox_pl_ratio`); its minimum is ``pl_mu_hat`` of the path.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from sail.loop import SailConfig, run_loop
from sail.oracles import bradley_terry_labels
from sail.theory.llm.estimators import DEFAULT_ESTIMATOR, make_policy, prompt_batch, response_index
from sail.theory.llm.problem import TransformerProblem
from sail.theory.pl import GAP_FLOOR, prox_pl_ratio


class EnumeratedRewardOracle:
    """Bradley–Terry labels on the instance's r*, for prompts that carry their row indices."""

    def __init__(self, problem: TransformerProblem):
        self.problem = problem
        self.rewards = torch.as_tensor(problem.instance.rewards)

    def label(self, prompts, responses, generator: torch.Generator | None = None) -> torch.Tensor:
        rows = torch.as_tensor(prompts.texts)
        r = self.rewards[rows[:, None], response_index(self.problem, responses)]
        return bradley_terry_labels(r[:, 0], r[:, 1], "sample", generator)


def stochastic_path(
    problem: TransformerProblem, max_value: float, lipschitz: float, steps: int = 40, batch_size: int = 8, seed: int = 0
) -> dict:
    """Run the loop from θ₀ and report the exact PL ratio at its iterates."""
    param = problem.param
    param.write(problem.theta_ref)
    policy = make_policy(problem)
    cfg = SailConfig(
        beta=problem.beta, gamma=problem.gamma, kl_direction=problem.kl_direction, kl_estimator=DEFAULT_ESTIMATOR, radius=problem.radius
    )
    optimizer = torch.optim.SGD(policy.trainable_parameters(), lr=1.0 / lipschitz)
    rho = torch.as_tensor(problem.instance.context_probs)

    def prompts(batch: int, generator):
        rows = torch.multinomial(rho, batch, replacement=True, generator=generator).tolist()
        out = prompt_batch(problem, rows)
        out.texts = rows
        return out

    iterates = [problem.theta_ref.copy()]
    generator = torch.Generator().manual_seed(seed)
    try:
        run_loop(
            policy,
            EnumeratedRewardOracle(problem),
            prompts,
            optimizer,
            cfg,
            steps,
            batch_size,
            generator,
            callbacks=[lambda step, stats: iterates.append(param.read().numpy().copy())],
        )
    finally:
        param.write(problem.theta_ref)
    ratios, gaps = [], []
    floor = GAP_FLOOR * max(1.0, abs(max_value))
    for theta in iterates:
        ratio, _, gap = prox_pl_ratio(problem, theta, max_value, lipschitz)
        gaps.append(gap)
        if gap > floor:
            ratios.append(ratio)
    return {
        "steps": steps,
        "batch_size": batch_size,
        "lr": 1.0 / lipschitz,
        "kl_estimator": DEFAULT_ESTIMATOR,
        "pl_mu_hat": min(ratios) if ratios else math.nan,
        "gap_start": float(gaps[0]),
        "gap_end": float(gaps[-1]),
        "distance_end": float(np.linalg.norm(iterates[-1] - problem.theta_ref)),
    }
