"""Preference oracles: label a pair (y₁, y₂) with p_win = P(y₁ ≻ y₂ | x) used by the loss.

Every oracle returns a float tensor in [0, 1] with one entry per pair. A sampled Bradley–Terry
label is 0 or 1; a tie of a deterministic oracle is 1/2 (the pair then contributes the
symmetric term ½log σ(βΔ) + ½log σ(−βΔ)); ``soft`` returns p* itself, which keeps the estimator
unbiased (ℓ is linear in p) with less variance.
"""

from __future__ import annotations

import torch

LABEL_MODES = ("sample", "soft", "argmax")


def bradley_terry_labels(
    reward_1: torch.Tensor, reward_2: torch.Tensor, mode: str = "sample", generator: torch.Generator | None = None
) -> torch.Tensor:
    """p_win from rewards r₁, r₂ under Bradley–Terry p* = σ(r₁ − r₂).

    ``sample``: Bernoulli(p*); ``soft``: p*; ``argmax``: 1 if r₁ > r₂, 0 if r₁ < r₂, ½ on ties.
    """
    diff = (reward_1 - reward_2).to(torch.float64)
    p_star = torch.sigmoid(diff)
    if mode == "soft":
        return p_star
    if mode == "sample":
        return torch.bernoulli(p_star, generator=generator)
    if mode == "argmax":
        return 0.5 * (torch.sign(diff) + 1.0)
    raise ValueError(f"label mode must be one of {LABEL_MODES}, got {mode!r}")


class TabularRewardOracle:
    """Bradley–Terry oracle of a known reward table r*[X, Y] (exact log-linear worlds)."""

    def __init__(self, reward, mode: str = "sample"):
        if mode not in LABEL_MODES:
            raise ValueError(f"label mode must be one of {LABEL_MODES}, got {mode!r}")
        self.reward = torch.as_tensor(reward, dtype=torch.float64)
        self.mode = mode

    def rewards(self, prompts: torch.Tensor, responses: torch.Tensor) -> torch.Tensor:
        return self.reward[prompts[:, None], responses]

    def label(
        self, prompts: torch.Tensor, responses: torch.Tensor, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """p_win for pairs ``responses[:, 0]`` vs ``responses[:, 1]``."""
        r = self.rewards(prompts, responses)
        return bradley_terry_labels(r[:, 0], r[:, 1], self.mode, generator)
