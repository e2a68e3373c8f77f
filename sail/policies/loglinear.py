"""Log-linear policies π_θ(y|x) ∝ exp(θᵀφ(x, y)) over finite X and Y, in float64.

Besides the :class:`~sail.policies.base.Policy` protocol used by the training loop, a
log-linear policy exposes the *exact* population SAIL-RevKL objective, its gradient and its
Hessian by enumeration (docs/theory.md). With u_y = (θ − θ_ref)ᵀφ(x, y), centred features
S_y = φ(x, y) − E_{π_θ}φ, pair weights P₁₂ = π₁π₂ and ℓ, ℓ', ℓ'' the pair term and its
Δ-derivatives at Δ₁₂ = u₁ − u₂:

    J      = Σ_x ρ_x Σ₁₂ P₁₂ ℓ₁₂
    ∇J     = Σ_x ρ_x Σ_y (a − b + c + c')_y S_y
    ∇²J    = Σ_x ρ_x [Sᵀ diag(q) S + Sᵀ K S − 2 (Σ₁₂ P₁₂ℓ₁₂) F]

where W = P∘ℓ', V = P∘ℓ'', Λ = P∘ℓ, a = W1, b = Wᵀ1, c = Λ1, c' = Λᵀ1,
q = V1 + Vᵀ1 + c + c' + 2(a − b), K = Λ + Λᵀ − V − Vᵀ and F = Sᵀ diag(π) S = Cov_{π_θ}(φ).
These are the four Hessian terms E[∇²ℓ + (s₁+s₂)∇ℓᵀ + ∇ℓ(s₁+s₂)ᵀ + ℓ(s₁+s₂)(s₁+s₂)ᵀ − 2ℓF]
collected: the two cross terms sum to 2Sᵀdiag(a − b)S. No Python loop runs over pairs.

KL terms (per context): ``ref_to_policy`` has ∇ = E_θφ − E_refφ and ∇² = F (Fisher identity);
``policy_to_ref`` with g = log π_θ − log π_ref has ∇ = Σ π g S and
∇² = Sᵀ diag(π g) S + F − (Σ π g) F, which equals F only where g is constant (e.g. θ = θ_ref).
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import NamedTuple

import torch
import torch.nn.functional as F

from sail.objectives import check_kl_direction, kl_exact, pair_term, pair_term_derivatives

DTYPE = torch.float64
_PAIR_ELEMENTS_PER_CHUNK = 4_000_000


class PopulationTerms(NamedTuple):
    """Exact J_γ = J − γ·E_x KL and its parts; derivatives are None above the requested order."""

    value: torch.Tensor
    sail: torch.Tensor
    kl: torch.Tensor
    grad: torch.Tensor | None = None
    sail_grad: torch.Tensor | None = None
    kl_grad: torch.Tensor | None = None
    hess: torch.Tensor | None = None
    sail_hess: torch.Tensor | None = None
    kl_hess: torch.Tensor | None = None


class LogLinearPolicy(torch.nn.Module):
    """π_θ(y|x) = softmax_y(θᵀφ(x, y)), batched over contexts.

    Args:
        features: φ with shape [X, Y, d].
        theta_ref: reference parameters θ_ref, shape [d]; π_ref = π_{θ_ref}.
        theta: initial θ (defaults to θ_ref).
    """

    def __init__(self, features, theta_ref, theta=None):
        super().__init__()
        features = torch.as_tensor(features, dtype=DTYPE)
        if features.ndim != 3:
            raise ValueError(f"features must have shape [X, Y, d], got {tuple(features.shape)}")
        theta_ref = torch.as_tensor(theta_ref, dtype=DTYPE)
        if theta_ref.shape != (features.shape[2],):
            raise ValueError(f"theta_ref must have shape [{features.shape[2]}], got {tuple(theta_ref.shape)}")
        self.register_buffer("features", features)
        self.register_buffer("theta_ref", theta_ref)
        self.register_buffer("ref_log_probs", F.log_softmax(features @ theta_ref, dim=-1))
        start = theta_ref if theta is None else torch.as_tensor(theta, dtype=DTYPE)
        self.theta = torch.nn.Parameter(start.clone())
        self._sample_reference = False

    @classmethod
    def tabular(cls, n_contexts: int, n_responses: int, theta_ref=None, theta=None) -> "LogLinearPolicy":
        """One-hot features φ(x, y) = e_{x·Y + y}: d = X·Y, one free logit per (x, y).

        Each context contributes a null direction (adding a constant to its logits), so the
        objective is constant along X directions and only PL — not strongly concave — there.
        """
        dim = n_contexts * n_responses
        features = torch.eye(dim, dtype=DTYPE).reshape(n_contexts, n_responses, dim)
        if theta_ref is None:
            theta_ref = torch.zeros(dim, dtype=DTYPE)
        return cls(features, theta_ref, theta)

    @property
    def n_contexts(self) -> int:
        return self.features.shape[0]

    @property
    def n_responses(self) -> int:
        return self.features.shape[1]

    @property
    def dim(self) -> int:
        return self.features.shape[2]

    def _theta(self, theta) -> torch.Tensor:
        return self.theta if theta is None else torch.as_tensor(theta, dtype=DTYPE)

    def log_probs(self, theta=None, contexts=None) -> torch.Tensor:
        """log π_θ(·|x) for every (or the given) context: shape [X, Y] (or [B, Y])."""
        phi = self.features if contexts is None else self.features[contexts]
        return F.log_softmax(phi @ self._theta(theta), dim=-1)

    # --- the Policy protocol -------------------------------------------------------------
    def sample(self, prompts: torch.Tensor, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """n i.i.d. responses per context, shape [B, n]."""
        with torch.no_grad():
            log_probs = self.ref_log_probs[prompts] if self._sample_reference else self.log_probs(contexts=prompts)
        return torch.multinomial(log_probs.exp(), n, replacement=True, generator=generator)

    @contextmanager
    def reference(self):
        """Inside the context, :meth:`sample` draws from π_ref."""
        previous, self._sample_reference = self._sample_reference, True
        try:
            yield
        finally:
            self._sample_reference = previous

    def logprob(self, prompts: torch.Tensor, responses: torch.Tensor) -> torch.Tensor:
        return self.log_probs(contexts=prompts).gather(1, responses)

    def ref_logprob(self, prompts: torch.Tensor, responses: torch.Tensor) -> torch.Tensor:
        return self.ref_log_probs[prompts].gather(1, responses)

    def per_position_kl(
        self, prompts: torch.Tensor, responses: torch.Tensor | None, direction: str, kl_to_go: bool = False
    ) -> torch.Tensor:
        """The exact KL over Y for each prompt's context: a response is a single position, so the
        per-position KL is the whole KL, whatever was drawn (``responses`` are not needed and
        ``kl_to_go`` has nothing to add)."""
        return kl_exact(self.log_probs(contexts=prompts), self.ref_log_probs[prompts], direction)

    def score_pairs(self, prompts: torch.Tensor, responses: torch.Tensor, kl_direction: str | None = None, kl_to_go: bool = False):
        """(log π_θ, log π_ref, exact KL per prompt or None): what the loss needs in one call."""
        kl = None if kl_direction is None else self.per_position_kl(prompts, responses, kl_direction)
        return self.logprob(prompts, responses), self.ref_logprob(prompts, responses), kl

    def trainable_parameters(self) -> list[torch.nn.Parameter]:
        return [self.theta]

    def ball_center(self) -> list[torch.Tensor]:
        return [self.theta_ref]

    # --- exact population quantities -----------------------------------------------------
    def population(
        self,
        reward,
        context_probs,
        beta: float,
        gamma: float,
        direction: str,
        theta=None,
        order: int = 2,
    ) -> PopulationTerms:
        """Exact J_γ(θ) with pairs from π_θ labelled by Bradley–Terry on ``reward`` r*[X, Y].

        ``order`` 0, 1 or 2 selects value, + gradient, + Hessian. The value (order 0) is
        differentiable in ``theta`` with autograd; gradient and Hessian are analytic.
        """
        check_kl_direction(direction)
        theta = self._theta(theta)
        if order > 0:
            theta = theta.detach()
        reward = torch.as_tensor(reward, dtype=DTYPE)
        rho = torch.as_tensor(context_probs, dtype=DTYPE)
        n_ctx, n_resp, dim = self.features.shape
        chunk = max(1, _PAIR_ELEMENTS_PER_CHUNK // (n_resp * n_resp))
        sail = kl_total = theta.new_zeros(())
        sail_grad = kl_grad = sail_hess = kl_hess = None
        if order >= 1:
            sail_grad, kl_grad = theta.new_zeros(dim), theta.new_zeros(dim)
        if order >= 2:
            sail_hess, kl_hess = theta.new_zeros(dim, dim), theta.new_zeros(dim, dim)
        for start in range(0, n_ctx, chunk):
            sl = slice(start, start + chunk)
            phi, w_ctx, r = self.features[sl], rho[sl], reward[sl]
            logp = F.log_softmax(phi @ theta, dim=-1)
            ref_logp = self.ref_log_probs[sl]
            pi = logp.exp()
            u = phi @ (theta - self.theta_ref)
            delta = u[:, :, None] - u[:, None, :]
            p_star = torch.sigmoid(r[:, :, None] - r[:, None, :])
            pair_w = pi[:, :, None] * pi[:, None, :]
            kl_ctx = kl_exact(logp, ref_logp, direction)
            kl_total = kl_total + (w_ctx * kl_ctx).sum()
            if order == 0:
                sail = sail + (w_ctx * (pair_w * pair_term(delta, p_star, beta)).sum((1, 2))).sum()
                continue
            ell, d1, d2 = pair_term_derivatives(delta, p_star, beta)
            lam = pair_w * ell
            lam_total = lam.sum((1, 2))
            sail = sail + (w_ctx * lam_total).sum()
            S = phi - (pi[:, :, None] * phi).sum(1, keepdim=True)
            W = pair_w * d1
            a_minus_b = W.sum(2) - W.sum(1)
            c_plus_c = lam.sum(2) + lam.sum(1)
            sail_grad += torch.einsum("x,xy,xyd->d", w_ctx, a_minus_b + c_plus_c, S)
            if direction == "ref_to_policy":
                kl_weight = pi - ref_logp.exp()  # Σ (π − π_ref) φ = E_θφ − E_refφ
                kl_grad += torch.einsum("x,xy,xyd->d", w_ctx, kl_weight, phi)
            else:
                g = logp - ref_logp
                kl_grad += torch.einsum("x,xy,xyd->d", w_ctx, pi * g, S)
            if order < 2:
                continue
            V = pair_w * d2
            q = V.sum(2) + V.sum(1) + c_plus_c + 2.0 * a_minus_b
            K = lam + lam.transpose(1, 2) - V - V.transpose(1, 2)
            fisher = torch.einsum("xy,xyd,xye->xde", pi, S, S)
            per_ctx = (
                torch.einsum("xy,xyd,xye->xde", q, S, S)
                + S.transpose(1, 2) @ (K @ S)
                - 2.0 * lam_total[:, None, None] * fisher
            )
            sail_hess += torch.einsum("x,xde->de", w_ctx, per_ctx)
            if direction == "ref_to_policy":
                kl_hess += torch.einsum("x,xde->de", w_ctx, fisher)
            else:
                pig = pi * g
                per_ctx_kl = (
                    torch.einsum("xy,xyd,xye->xde", pig, S, S)
                    + (1.0 - pig.sum(1))[:, None, None] * fisher
                )
                kl_hess += torch.einsum("x,xde->de", w_ctx, per_ctx_kl)
        value = sail - gamma * kl_total
        grad = hess = None
        if order >= 1:
            grad = sail_grad - gamma * kl_grad
        if order >= 2:
            sail_hess = 0.5 * (sail_hess + sail_hess.T)
            kl_hess = 0.5 * (kl_hess + kl_hess.T)
            hess = sail_hess - gamma * kl_hess
        return PopulationTerms(value, sail, kl_total, grad, sail_grad, kl_grad, hess, sail_hess, kl_hess)
