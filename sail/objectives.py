"""SAIL, SAIL-RevKL and DPO objectives as functions of log-probability tensors.

These functions are shared by every policy class: the exact log-linear checkers and the LLM
trainer call the same code. Notation (docs/theory.md):

* implicit reward difference  Δ_θ(x, y₁, y₂) = log π_θ(y₁|x)/π_ref(y₁|x) − log π_θ(y₂|x)/π_ref(y₂|x);
* per-pair SAIL term          ℓ = p log σ(βΔ) + (1 − p) log σ(−βΔ),  with p = p(y₁ ≻ y₂ | x);
* SAIL objective              J(θ) = E_x E_{y₁,y₂ ~ π_θ} ℓ(θ; x, y₁, y₂);
* SAIL-RevKL                  J_γ(θ) = J(θ) − γ E_x KL_dir(x).

Every function stays finite for |βΔ| up to at least 1e4: log σ is evaluated with
``logsigmoid``, never as ``log(sigmoid(·))``.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F

KL_DIRECTIONS = ("ref_to_policy", "policy_to_ref")
"""``ref_to_policy`` = KL(π_ref‖π_θ) (what the SAIL authors' code penalises; its Hessian is the
Fisher covariance for log-linear policies); ``policy_to_ref`` = KL(π_θ‖π_ref) (the usual RLHF
"reverse KL")."""

SAMPLE_KL_ESTIMATORS = ("k1", "k2", "k3", "k1_score", "k2_score", "k3_score")
"""Schulman's per-sample estimators on responses y ~ π_θ (:func:`kl_sample_estimate`): ``kN`` enters
the loss with its pathwise gradient, ``kN_score`` with the score correction sg(k)·log π_θ(y) added
(:func:`kl_penalty`); k1_score and k3_score have unbiased gradients in both directions."""

PER_POSITION_KL_ESTIMATORS = ("sequence", "per_token_on_policy_prefixes")
"""Estimators that sum the exact KL over the vocabulary at each prefix of a drawn response.

``sequence`` (the default) is unbiased for the sequence KL in value and gradient: for
``ref_to_policy`` the responses are drawn from π_ref and the pathwise gradient is exact in
expectation (π_ref does not depend on θ); for ``policy_to_ref`` they are drawn from π_θ and the
KL-to-go score term is added. ``per_token_on_policy_prefixes`` sums the per-position KL along
prefixes drawn from π_θ and takes the pathwise gradient: for ``ref_to_policy`` that is another
divergence than KL(π_ref‖π_θ) of the sequence, and for both directions its gradient is biased
(docs/training.md tabulates the bias; it is kept for comparison with the token-level proxy)."""

KL_ESTIMATORS = PER_POSITION_KL_ESTIMATORS + SAMPLE_KL_ESTIMATORS

DEPRECATED_KL_ESTIMATORS = {"exact": "per_token_on_policy_prefixes"}
"""Old names, still read (with a warning) so that older configs and run directories load."""


def kl_draw_distribution(direction: str, estimator: str) -> str:
    """Which distribution the KL term's responses must be drawn from: ``reference`` (π_ref) for the
    ``sequence`` estimator of KL(π_ref‖π_θ), ``policy`` (π_θ) for every other estimator."""
    check_kl_direction(direction)
    return "reference" if estimator == "sequence" and direction == "ref_to_policy" else "policy"


def check_kl_direction(direction: str) -> str:
    if direction not in KL_DIRECTIONS:
        raise ValueError(f"kl_direction must be one of {KL_DIRECTIONS}, got {direction!r}")
    return direction


def implicit_reward_diff(
    logp_1: torch.Tensor, logp_2: torch.Tensor, ref_logp_1: torch.Tensor, ref_logp_2: torch.Tensor
) -> torch.Tensor:
    """Δ = (log π_θ(y₁) − log π_ref(y₁)) − (log π_θ(y₂) − log π_ref(y₂))."""
    return (logp_1 - ref_logp_1) - (logp_2 - ref_logp_2)


def pair_term(delta: torch.Tensor, p_win: torch.Tensor | float, beta: float) -> torch.Tensor:
    """ℓ = p log σ(βΔ) + (1 − p) log σ(−βΔ) ≤ 0.

    ``p_win`` is the probability that y₁ beats y₂: the Bradley–Terry probability p* for the
    population objective, a hard label in {0, 1} for a sampled comparison (ties: 1/2).
    Because ℓ is linear in p, the expectation of the hard-label term over the label is the
    p*-term, which is what makes sampled labels unbiased.
    """
    z = beta * delta
    return p_win * F.logsigmoid(z) + (1 - p_win) * F.logsigmoid(-z)


class PairTermDerivatives(NamedTuple):
    """ℓ and its first two derivatives with respect to Δ."""

    value: torch.Tensor
    d1: torch.Tensor
    d2: torch.Tensor


def pair_term_derivatives(delta: torch.Tensor, p_win: torch.Tensor | float, beta: float) -> PairTermDerivatives:
    """ℓ(Δ), dℓ/dΔ = β(p − σ(βΔ)) and d²ℓ/dΔ² = −β² σ(βΔ) σ(−βΔ), in closed form."""
    z = beta * delta
    sig = torch.sigmoid(z)
    value = p_win * F.logsigmoid(z) + (1 - p_win) * F.logsigmoid(-z)
    d1 = beta * (p_win - sig)
    d2 = -(beta**2) * sig * torch.sigmoid(-z)
    return PairTermDerivatives(value, d1, d2)


def leave_one_out_baseline(values: torch.Tensor) -> torch.Tensor:
    """b_i = mean_{j≠i} values_j (detached).

    Independent of pair i when pairs are drawn independently, so the surrogate stays unbiased.
    A batch of one gets the baseline 0.
    """
    values = values.detach()
    n = values.numel()
    if n < 2:
        return torch.zeros_like(values)
    return (values.sum() - values) / (n - 1)


def sail_surrogate(
    logp_1: torch.Tensor,
    logp_2: torch.Tensor,
    ref_logp_1: torch.Tensor,
    ref_logp_2: torch.Tensor,
    p_win: torch.Tensor | float,
    beta: float,
    baseline: torch.Tensor | float | None = None,
    score_term: bool = True,
    self_label: bool = False,
) -> torch.Tensor:
    """Per-pair surrogate whose gradient is an unbiased estimate of ∇J (to be *maximised*).

        surrogate = h + sg(h − b) · (log π_θ(y₁|x) + log π_θ(y₂|x)),   h = ℓ(Δ_θ; p_win)

    For (y₁, y₂) ~ π_θ, E[∇ surrogate] = E[∇ℓ] + E[ℓ (s₁ + s₂)] = ∇J, and any baseline b that
    does not depend on the pair leaves it unbiased because E[s] = 0. With ``score_term=False``
    the score-function term is dropped: online DPO's gradient, or the right one for pairs that do
    not come from π_θ (dataset pairs).

    ``self_label``: the label was drawn from the policy's own Bradley–Terry probability
    σ(βΔ_θ) (SAIL-PP/DP), so h is the label's log-probability and the label distribution depends
    on θ; its score term E[h∇h] = E[∇½h²] is added as ½h².
    """
    delta = implicit_reward_diff(logp_1, logp_2, ref_logp_1, ref_logp_2)
    h = pair_term(delta, p_win, beta)
    surrogate = h + 0.5 * h**2 if self_label else h
    if not score_term:
        return surrogate
    b = 0.0 if baseline is None else baseline
    advantage = (h - b).detach()
    return surrogate + advantage * (logp_1 + logp_2)


def sail_surrogate_loss(*args, **kwargs) -> torch.Tensor:
    """Mean over pairs of −surrogate (a loss to minimise); see :func:`sail_surrogate`."""
    return -sail_surrogate(*args, **kwargs).mean()


def dpo_loss(
    logp_chosen: torch.Tensor,
    logp_rejected: torch.Tensor,
    ref_logp_chosen: torch.Tensor,
    ref_logp_rejected: torch.Tensor,
    beta: float,
    label_smoothing: float = 0.0,
) -> torch.Tensor:
    """DPO: mean of −[(1 − ε) log σ(βΔ) + ε log σ(−βΔ)], Δ = Δ_θ(chosen, rejected).

    ε = 0 is the original DPO loss; ε > 0 is the conservative (label-smoothed) variant.
    It equals −ℓ(Δ; p = 1 − ε), i.e. the SAIL pair term without the score-function term.
    """
    if not 0.0 <= label_smoothing < 0.5:
        raise ValueError(f"label_smoothing must be in [0, 0.5), got {label_smoothing}")
    delta = implicit_reward_diff(logp_chosen, logp_rejected, ref_logp_chosen, ref_logp_rejected)
    return -pair_term(delta, 1.0 - label_smoothing, beta).mean()


def kl_exact(logp: torch.Tensor, ref_logp: torch.Tensor, direction: str, dim: int = -1) -> torch.Tensor:
    """Exact KL between two categorical distributions given as log-probabilities along ``dim``.

    ``ref_to_policy``: Σ π_ref (log π_ref − log π_θ);  ``policy_to_ref``: Σ π_θ (log π_θ − log π_ref).
    Entries with zero probability under the weighting distribution contribute 0.
    """
    check_kl_direction(direction)
    weight_logp, other_logp = (ref_logp, logp) if direction == "ref_to_policy" else (logp, ref_logp)
    weight = weight_logp.exp()
    terms = weight * (weight_logp - other_logp)
    terms = torch.where(weight > 0, terms, torch.zeros_like(terms))
    return terms.sum(dim)


def kl_sample_estimate(logp: torch.Tensor, ref_logp: torch.Tensor, direction: str, estimator: str) -> torch.Tensor:
    """Per-sample KL estimators from responses y ~ π_θ (the policy's own samples).

    With L = log π_θ(y) − log π_ref(y):

    ``policy_to_ref`` — KL(π_θ‖π_ref) = E_θ[L] (Schulman's k1/k2/k3):
        k1 = L,  k2 = L²/2,  k3 = e^{−L} − 1 + L.
    ``ref_to_policy`` — KL(π_ref‖π_θ) = E_θ[w·(−L)] with importance weight w = e^{−L}; the same
        three estimators written for samples of π_ref and reweighted:
        k1 = −wL,  k2 = wL²/2,  k3 = w(e^{L} − 1 − L) = 1 − w − wL.

    Values: k1 and k3 are unbiased, k2 is biased, in both directions (k3 is also ≥ 0).

    Gradients (what enters a loss; E over y ~ π_θ, s = ∇log π_θ(y), checked by enumeration in
    the tests). The plain (pathwise) gradient of the per-sample value ignores that the sampling
    distribution depends on θ:

    ========  =================================  ==================================
    estimator  ``policy_to_ref``: E[∇k]           ``ref_to_policy``: E[∇k]
    ========  =================================  ==================================
    k1         0                  (biased)        Σ π_ref (L − 1) s      (biased)
    k2         ∇KL(π_θ‖π_ref)     (unbiased)      Σ π_ref (L − L²/2) s   (biased)
    k3         ∇KL(π_ref‖π_θ)     (other direction) Σ π_ref L s          (biased)
    ========  =================================  ==================================

    :func:`kl_penalty` with ``score_correction=True`` adds sg(k)·log π_θ(y), which makes the
    gradient of every unbiased-valued estimator (k1, k3) unbiased for its own direction.
    """
    check_kl_direction(direction)
    log_ratio = logp - ref_logp
    if direction == "policy_to_ref":
        if estimator == "k1":
            return log_ratio
        if estimator == "k2":
            return 0.5 * log_ratio**2
        if estimator == "k3":
            return torch.expm1(-log_ratio) + log_ratio
    else:
        weight = torch.exp(-log_ratio)
        if estimator == "k1":
            return -weight * log_ratio
        if estimator == "k2":
            return 0.5 * weight * log_ratio**2
        if estimator == "k3":
            return -torch.expm1(-log_ratio) - weight * log_ratio
    raise ValueError(f"sample KL estimator must be one of ('k1', 'k2', 'k3'), got {estimator!r}")


def sample_kl_term(logp: torch.Tensor, ref_logp: torch.Tensor, direction: str, estimator: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(loss term, value) of a :data:`SAMPLE_KL_ESTIMATORS` entry for responses y ~ π_θ.

    ``kN``: the per-sample estimator with its pathwise gradient; ``kN_score``: plus sg(k)·log π_θ(y).
    The value is the estimator itself (no graph)."""
    base = estimator.removesuffix("_score")
    term = kl_penalty(logp, ref_logp.detach(), direction, base, score_correction=estimator.endswith("_score"))
    return term, kl_sample_estimate(logp.detach(), ref_logp.detach(), direction, base)


def kl_penalty(
    logp: torch.Tensor,
    ref_logp: torch.Tensor,
    direction: str,
    estimator: str,
    score_correction: bool = False,
) -> torch.Tensor:
    """The per-sample KL term that enters a loss, for samples y ~ π_θ.

    ``score_correction=False``: the estimator itself (pathwise gradient; see the table in
    :func:`kl_sample_estimate`). ``score_correction=True``: k + sg(k)·log π_θ(y), whose expected
    gradient is ∇E_θ[k] — the exact KL gradient for k1 and k3.
    """
    k = kl_sample_estimate(logp, ref_logp, direction, estimator)
    if score_correction:
        return k + k.detach() * logp
    return k
