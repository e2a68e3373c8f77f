"""The local log-linear model of a parametrisation at θ₀, and the log-linear template's γ_c for it.

Linearising the response log-probabilities at θ₀ gives the features φ(x, y) = ∂ log π_θ(y|x)/∂θ at θ₀
(the Jacobian, [X, N, P]) and the log-linear policy

    log π̃_θ(y|x) = log π_ref(y|x) + (θ − θ₀)ᵀφ(x, y) − log Σ_{y'} π_ref(y'|x) e^{(θ−θ₀)ᵀφ(x, y')},

which agrees with π_θ to first order at θ₀ (π̃_θ₀ = π_ref). On it the log-linear theory applies as it
stands: ∇²KL(π_ref‖π̃) is the Fisher covariance of φ, and the template's γ_c = M/λ_F with
M = max_Θ λ_max(∇²J), λ_F = min_Θ λ_min(∇²KL) on the ball. :class:`LocalLogLinear` has the interface
of :class:`~sail.theory.llm.parametrisation.Parametrisation` that
:class:`~sail.theory.llm.problem.TransformerProblem` needs, so the same exact checks run on it.
"""

from __future__ import annotations

import numpy as np
import torch
from torch.func import jacrev

from sail.theory.llm.parametrisation import Parametrisation
from sail.theory.problem import identifiable_basis


class LocalLogLinear:
    """π̃_θ above, for the parametrisation ``param`` (same instance, θ₀ and ball)."""

    kind = "local_loglinear"

    def __init__(self, param: Parametrisation):
        self.instance = param.instance
        self.theta0 = param.theta0.clone()
        with torch.no_grad():
            self.ref_log_probs = param.log_probs(self.theta0)
        self.features = jacrev(param.log_probs)(self.theta0).detach()  # [X, N, P]

    @property
    def dim(self) -> int:
        return int(self.theta0.numel())

    def log_probs(self, theta: torch.Tensor) -> torch.Tensor:
        scores = self.ref_log_probs + self.features @ (theta - self.theta0)
        return torch.log_softmax(scores, dim=-1)

    def identifiable_basis(self) -> np.ndarray:
        """span{φ(x, y) − φ(x, y')} over prompts with ρ(x) > 0 (as for any log-linear policy)."""
        return identifiable_basis(self.features.numpy(), np.asarray(self.instance.context_probs))


