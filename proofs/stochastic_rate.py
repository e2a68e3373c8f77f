"""Lemma: the stochastic rate, and the sample count of one schedule (an upper bound).

Unconstrained step (maximiser and iterates interior) x⁺ = x + ĝ/L with an unbiased estimate
ĝ = g + ξ of g = ∇J, E[ξ] = 0, E‖ξ‖² ≤ σ²/b for a minibatch of b pairs, J L-smooth and PL(μ):

1. pointwise, ⟨g, ĝ⟩/L − ‖ĝ‖²/(2L) = ‖g‖²/(2L) − ‖ξ‖²/(2L)  (the cross term cancels; n = 1..4), so
   E[gap⁺] ≤ (1 − μ/L)·gap + σ²/(2Lb);
2. e_k = ρ^k e_0 + v(1 − ρ^k)/(1 − ρ) solves e_{k+1} = ρe_k + v (induction, symbolic k), hence with
   ρ = 1 − μ/L, v = σ²/(2Lb):  E[gap_k] ≤ (1 − μ/L)^k Δ₀ + σ²/(2μb);
3. 1 − x ≤ e^{−x} (f = e^{−x} − 1 + x: f(0) = f'(0) = 0, f'' > 0), so ρ^k ≤ e^{−kμ/L};
4. the schedule b = σ²/(με), k = (L/μ)·log(2Δ₀/ε) (constant step 1/L, constant batch) gives
   E[gap_k] ≤ ε/2 + ε/2 = ε (exact simplification);
5. that schedule uses n(ε) = b·k = (σ²L/(μ²ε))·log(2Δ₀/ε) samples, exactly, and
   lim_{ε→0} n(ε)/(ε⁻¹ log ε⁻¹) = σ²L/μ² ∈ (0, ∞).

So the problem's sample complexity is O(ε⁻¹ log ε⁻¹): an upper bound, reached by this schedule.
It is not a lower bound. The log factor belongs to the constant-step schedule: SGD with decaying
steps under PL reaches O(ε⁻¹) (Karimi, Nutini & Schmidt 2016, Thm 4), which this lemma does not
treat.

The order check states the order of the schedule's own count n(ε): a claimed order f(ε) is
accepted iff lim n(ε)/f(ε) is finite and positive. The negative control claims that this
schedule's count is of order ε⁻¹ (the log dropped), for which the limit is ∞; it says nothing about
other schedules.
"""

from __future__ import annotations

import itertools
from functools import partial

import numpy as np
import sympy as sp
import torch

from proofs.tools.identity import check_zero, dot, symbol_vector
from proofs.tools.lemma import Lemma, Verdict, all_of
from proofs.tools.numeric import lambdify
from sail.loop import SailConfig, sail_loss
from sail.policies.loglinear import DTYPE, LogLinearPolicy
from sail.theory.constants import explicit_constants
from sail.theory.instance import random_instance
from sail.theory.problem import ExactProblem

DIMS = (1, 2, 3, 4)
mu, L, sigma, b, eps, Delta0, v = sp.symbols("mu L sigma b epsilon Delta0 v", positive=True)
k = sp.Symbol("k", integer=True, nonnegative=True)
x = sp.Symbol("x", real=True)
RHO = 1 - mu / L


def one_step() -> Verdict:
    checks = []
    for n in DIMS:
        g = symbol_vector("g", n)
        xi = symbol_vector("xi", n)
        g_hat = g + xi
        lhs = dot(g, g_hat) / L - dot(g_hat, g_hat) / (2 * L)
        checks.append(check_zero(sp.expand(lhs - (dot(g, g) - dot(xi, xi)) / (2 * L)), f"one step n={n}"))
    return all_of(checks, f"⟨g,ĝ⟩/L − ‖ĝ‖²/(2L) = (‖g‖² − ‖ξ‖²)/(2L) for n in {DIMS}")


def noisy_recursion() -> Verdict:
    e0, rho = sp.symbols("e0 rho", positive=True)
    closed = rho**k * e0 + v * (1 - rho**k) / (1 - rho)
    step = check_zero(sp.powsimp(sp.expand(closed.subs(k, k + 1) - (rho * closed + v))), "e_{k+1} = ρe_k + v")
    base = check_zero(closed.subs(k, 0) - e0, "e_0")
    noise_floor = (v / (1 - rho)).subs({rho: RHO, v: sigma**2 / (2 * L * b)})
    floor = check_zero(noise_floor - sigma**2 / (2 * mu * b), "v/(1−ρ) = σ²/(2μb)")
    return all_of([base, step, floor], "E[gap_k] ≤ (1−μ/L)^k Δ₀ + σ²/(2μb)")


def exponential_bound() -> Verdict:
    f = sp.exp(-x) - 1 + x
    ok = f.subs(x, 0) == 0 and sp.diff(f, x).subs(x, 0) == 0 and sp.diff(f, x, 2).is_positive
    return Verdict(bool(ok), "1 − x ≤ e^{−x}" if ok else "1 − x ≤ e^{−x} not established")


def samples():
    batch = sigma**2 / (mu * eps)
    steps = (L / mu) * sp.log(2 * Delta0 / eps)
    return batch, steps


def schedule_reaches_eps() -> Verdict:
    batch, steps = samples()
    optimisation = sp.exp(-steps * mu / L) * Delta0
    noise = sigma**2 / (2 * mu * batch)
    return all_of(
        [check_zero(optimisation - eps / 2, "e^{−kμ/L}Δ₀ = ε/2"), check_zero(noise - eps / 2, "σ²/(2μb) = ε/2")],
        "b = σ²/(με), k = (L/μ)log(2Δ₀/ε) ⇒ E[gap_k] ≤ ε",
    )


def order_matches(order) -> Verdict:
    batch, steps = samples()
    ratio = sp.limit(sp.expand_log(batch * steps / order, force=True), eps, 0, "+")
    if ratio.is_finite and ratio.is_positive:
        return Verdict(True, f"n(ε)/({order}) → {ratio}: this schedule's count is of order {order}")
    return Verdict(False, f"n(ε)/({order}) → {ratio}: the claimed order of this schedule's count is wrong")


def check(order=sp.log(1 / eps) / eps) -> Verdict:
    return all_of([one_step(), noisy_recursion(), exponential_bound(), schedule_reaches_eps(), order_matches(order)])


def cross_check() -> float:
    """One exact expected step of the library's training loss (``sail.loop.sail_loss``, batch of
    one pair, Bradley–Terry labels, exact KL), by enumerating every (context, pair, label):
    the largest of |E[ĝ] − ∇J_γ| (unbiasedness) and the violation of the lambdified bound
    E[J(x + ĝ/L)] ≥ J(x) + (‖g‖² − E‖ĝ − g‖²)/(2L), with L the explicit smoothness bound on a
    ball that contains every step."""
    inst = random_instance(13, 2, 3, 2, beta=1.0, gamma=2.0, radius=1.0)
    problem = ExactProblem(inst)
    theta0 = inst.theta_ref + 0.3 * np.random.default_rng(2).standard_normal(problem.dim)
    value0, grad = problem.value_and_grad(theta0)
    policy = LogLinearPolicy(inst.features, inst.theta_ref, theta=theta0)
    cfg = SailConfig(beta=inst.beta, gamma=inst.gamma, kl_direction=inst.kl, kl_estimator="sequence", baseline="none")
    pi = np.exp(problem.policy.log_probs(torch.as_tensor(theta0)).detach().numpy())
    X, K, _ = inst.features.shape
    estimates, weights = [], []
    for xc, y1, y2, label in itertools.product(range(X), range(K), range(K), (0.0, 1.0)):
        p_star = 1.0 / (1.0 + np.exp(-(inst.reward[xc, y1] - inst.reward[xc, y2])))
        weight = inst.context_probs[xc] * pi[xc, y1] * pi[xc, y2] * (p_star if label else 1.0 - p_star)
        policy.theta.grad = None
        prompts, responses = torch.tensor([xc]), torch.tensor([[y1, y2]])
        loss, _ = sail_loss(policy, prompts, responses, torch.tensor([label], dtype=DTYPE), cfg)
        loss.backward()
        estimates.append(-policy.theta.grad.numpy().copy())
        weights.append(weight)
    estimates, weights = np.array(estimates), np.array(weights)
    err = float(np.abs(weights @ estimates - grad).max())
    variance = float(weights @ ((estimates - grad) ** 2).sum(1))
    lipschitz = explicit_constants(problem)["L"]
    reach = inst.radius + np.linalg.norm(theta0 - inst.theta_ref) + np.linalg.norm(estimates, axis=1).max() / lipschitz
    lipschitz = explicit_constants(ExactProblem(inst.replace(radius=float(reach))))["L"]
    expected_next = float(weights @ np.array([problem.value(theta0 + e / lipschitz) for e in estimates]))
    g2, s2 = sp.symbols("g2 s2", nonnegative=True)
    bound = lambdify([g2, s2, L], (g2 - s2) / (2 * L))(float(grad @ grad), variance, lipschitz)
    return max(err, value0 + bound - expected_next, 0.0)


LEMMA = Lemma(
    name="stochastic_rate",
    statement="E[gap_k] ≤ (1−μ/L)^kΔ₀ + σ²/(2μb); b ∝ 1/ε, k ∝ (L/μ)log(1/ε) use n ~ ε⁻¹log ε⁻¹: an upper bound",
    prove=check,
    negative_control=partial(check, 1 / eps),
    cross_check=cross_check,
    control="this schedule's count n(ε) of order ε⁻¹ (log factor dropped)",
)
