"""Lemma: the PL template's explicit constants λ_F, M, L, γ_c and μ.

On Θ = {‖θ − θ_ref‖ ≤ R}, ‖φ‖ ≤ B, t = ‖θ_ref‖, ℓ_max = log 2 + 2βRB (lemma ``elementary_bounds``):

1. Pair form of the covariance:  Cov_π(φ) = ½ Σ_ij π_iπ_j (φ_i − φ_j)(φ_i − φ_j)ᵀ.  Since
   π_iπ_j ≥ π_min² = (Kπ_min)²·(1/K²), Cov_{π_θ}(φ) ⪰ (Kπ_min)² Cov_unif(φ) with
   (Kπ_min)² = e^{−4(R+t)B}, so λ_F ≥ e^{−4(R+t)B} λ_min(E_x Cov_unif,x φ) on the identifiable subspace.
2. From the Hessian decomposition (lemma ``loglinear_hessian``), for a unit v: vᵀ∇²ℓv ≤ 0 and
   ℓ(vᵀ(s₁+s₂))² ≤ 0 (ℓ'' ≤ 0, ℓ ≤ 0), the cross terms are ≤ 2‖s₁+s₂‖‖∇ℓ‖ ≤ 2·4B·2βB and
   −2ℓvᵀFv ≤ 2ℓ_max B²; so M ≤ 16βB² + 2ℓ_maxB². In norm, adding |ℓ|‖s₁+s₂‖² ≤ 16ℓ_maxB² and
   ‖∇²ℓ‖ ≤ β²B²: ‖∇²J‖ ≤ β²B² + 16βB² + 18ℓ_maxB².
3. ``policy_to_ref``: ∇²KL = F + Σ_y π_y(g_y − ḡ)s_ys_yᵀ with g_y − ḡ = (θ − θ_ref)ᵀs_y, |·| ≤ 2RB,
   and Σ_y π_y s_ys_yᵀ = F, so (1 − 2RB)F ⪯ ∇²KL ⪯ (1 + 2RB)F.
4. With λ the KL curvature floor: vᵀ∇²J_γv ≤ M − γλ = −μ, μ = γλ − M, and μ > 0 ⇔ γ > γ_c = M/λ;
   L = ‖∇²J‖_max + γ‖∇²KL‖_max.

Items 1 and 3 are identities in the softmax differential algebra (K sweep, symbolic φ ∈ R²);
items 2 and 4 are exact symbolic bookkeeping of the term bounds, compared with the formulas in
``sail.theory.constants``. Negative control: the pair form without the factor ½.
"""

from __future__ import annotations

from functools import partial

import numpy as np
import sympy as sp

from proofs.tools import objectives as obj
from proofs.tools.identity import check_zero
from proofs.tools.lemma import Lemma, Verdict, all_of
from proofs.tools.numeric import lambdify
from proofs.tools.softmax import SoftmaxAlgebra
from sail.theory.constants import explicit_constants
from sail.theory.instance import random_instance
from sail.theory.problem import ExactProblem

SWEEP = (2, 3, 4)
DIM = 2
beta, R, B, t_ref, gamma, lam = sp.symbols("beta R B t gamma lambda", positive=True)
lam_unif = sp.Symbol("lambda_unif", positive=True)
K_sym = sp.Symbol("K", positive=True, integer=True)
ELL_MAX = sp.log(2) + 2 * beta * R * B
PI_MIN = sp.exp(-2 * (R + t_ref) * B) / K_sym


def fisher_floor():
    """λ_F lower bound e^{−4(R+t)B}·λ_unif, as (K π_min)²·λ_unif."""
    return (K_sym * PI_MIN) ** 2 * lam_unif


def sail_curvature_bound():
    cross_terms = 2 * (4 * B) * (2 * beta * B)
    fisher_term = 2 * ELL_MAX * B**2
    return cross_terms + fisher_term


def sail_norm_bound():
    return beta**2 * B**2 + sail_curvature_bound() + ELL_MAX * (4 * B) ** 2


def kl_floor_and_norm(direction: str):
    if direction == "ref_to_policy":
        return fisher_floor(), B**2
    return (1 - 2 * R * B) * fisher_floor(), (1 + 2 * R * B) * B**2


def template(direction: str):
    floor, kl_norm = kl_floor_and_norm(direction)
    M = sail_curvature_bound()
    return {
        "lambda_F": floor,
        "M": M,
        "gamma_c": M / floor,
        "mu": gamma * floor - M,
        "L": sail_norm_bound() + gamma * kl_norm,
    }


def covariance_pair_form(half=sp.Rational(1, 2)) -> Verdict:
    for K in SWEEP:
        S = SoftmaxAlgebra(K, max_derivative=1, params=tuple(f"f{i}_{a}" for i in range(K) for a in range(DIM)))
        f = [[S.params[f"f{i}_{a}"] for a in range(DIM)] for i in range(K)]
        mean = [sum((S.p[i] * f[i][a] for i in range(K)), S.zero) for a in range(DIM)]
        for a in range(DIM):
            for b in range(DIM):
                cov = sum((S.p[i] * f[i][a] * f[i][b] for i in range(K)), S.zero) - mean[a] * mean[b]
                pairs = S.expectation_pairs(lambda i, j: (f[i][a] - f[j][a]) * (f[i][b] - f[j][b]))
                coeff = sp.Rational(half)
                v = S.check_zero(cov * coeff.q - pairs * coeff.p, f"Cov[{a + 1},{b + 1}] vs pair form")
                if not v.holds:
                    return v
    return Verdict(True, f"Cov_π(φ) = ½Σπ_iπ_j(φ_i−φ_j)(φ_i−φ_j)ᵀ, K in {SWEEP}, φ ∈ R^{DIM}")


def policy_to_ref_sandwich() -> Verdict:
    for K in SWEEP:
        S = SoftmaxAlgebra(K, max_derivative=1)
        F, H = S.fisher(), obj.kl_hessian(S, "policy_to_ref")
        g = [S.lp[y] - S.lq[y] for y in range(K)]
        gbar = sum((S.p[y] * g[y] for y in range(K)), S.zero)
        for a in range(K):
            for b in range(K):
                centred = sum((S.p[y] * (g[y] - gbar) * S.score(y)[a] * S.score(y)[b] for y in range(K)), S.zero)
                second_moment = sum((S.p[y] * S.score(y)[a] * S.score(y)[b] for y in range(K)), S.zero)
                for v in (
                    S.check_zero(H[a][b] - F[a][b] - centred, f"∇²KL − F − Σπ(g−ḡ)ssᵀ [{a + 1},{b + 1}]"),
                    S.check_zero(second_moment - F[a][b], f"Σπssᵀ − F [{a + 1},{b + 1}]"),
                ):
                    if not v.holds:
                        return v
        # g_y − ḡ = (u − v)ᵀ s_y once log π = u − A and log π_ref = v − A_ref
        logits = [(S.lp[i], S.u[i] - S.A) for i in range(K)] + [(S.lq[i], S.v[i] - S.A_ref) for i in range(K)]
        for y in range(K):
            lhs = (g[y] - gbar).compose(logits)
            rhs = sum(((S.u[a] - S.v[a]) * S.score(y)[a] for a in range(K)), S.zero)
            v = S.check_zero(lhs - rhs, f"g_{y + 1} − ḡ = (θ−θ_ref)ᵀs_{y + 1}")
            if not v.holds:
                return v
    return Verdict(True, f"∇²KL(π_θ‖π_ref) = F + Σπ(g−ḡ)ssᵀ, g−ḡ = (θ−θ_ref)ᵀs, K in {SWEEP}")


def bookkeeping() -> Verdict:
    checks = [
        check_zero(sp.expand(fisher_floor() - sp.exp(-4 * (R + t_ref) * B) * lam_unif), "(Kπ_min)² = e^{−4(R+t)B}"),
        check_zero(sp.expand(sail_curvature_bound() - (16 * beta * B**2 + 2 * ELL_MAX * B**2)), "M formula"),
        check_zero(
            sp.expand(sail_norm_bound() - (beta**2 * B**2 + 16 * beta * B**2 + 18 * ELL_MAX * B**2)), "‖∇²J‖ formula"
        ),
        check_zero(
            sp.expand(gamma * lam - sail_curvature_bound() - lam * (gamma - sail_curvature_bound() / lam)),
            "μ = λ(γ − γ_c)",
        ),
    ]
    return all_of(checks)


def check(half=sp.Rational(1, 2)) -> Verdict:
    return all_of([covariance_pair_form(half), policy_to_ref_sandwich(), bookkeeping()])


def _uniform_covariance_pair_form(problem: ExactProblem) -> float:
    inst = problem.instance
    X, K, _ = inst.features.shape
    diff = inst.features[:, :, None, :] - inst.features[:, None, :, :]
    cov = 0.5 * np.einsum("x,xijd,xije->de", inst.context_probs, diff, diff) / K**2
    return float(np.linalg.eigvalsh(problem.restrict(cov))[0])


def cross_check() -> float:
    """The template lambdified (λ_unif from the pair form, independently of the library) vs
    ``explicit_constants`` in both KL directions, plus the largest violation of
    λ_min(E_x F_x(θ)) ≥ λ_F at ball points."""
    err = 0.0
    for direction, seed in (("ref_to_policy", 3), ("policy_to_ref", 4)):
        inst = random_instance(seed, 3, 4, 3, beta=0.8, gamma=2.0, radius=0.3, kl=direction)
        problem = ExactProblem(inst)
        lib = explicit_constants(problem)
        values = {
            beta: inst.beta, R: inst.radius, B: problem.feature_bound, t_ref: float(np.linalg.norm(inst.theta_ref)),
            gamma: inst.gamma, K_sym: inst.features.shape[1], lam_unif: _uniform_covariance_pair_form(problem),
        }
        args = list(values)
        for key, expr in template(direction).items():
            ours = float(lambdify(args, expr)(*values.values()))
            err = max(err, abs(ours - lib[key]) / max(1.0, abs(lib[key])))
        if direction == "ref_to_policy":
            for theta in problem.sample_ball(32, np.random.default_rng(seed)):
                fisher = problem.restrict(problem.terms(theta).kl_hess)
                err = max(err, lib["lambda_F"] - float(np.linalg.eigvalsh(fisher)[0]), 0.0)
    return err


LEMMA = Lemma(
    name="pl_template",
    statement="λ_F ≥ e^{−4(R+t)B}λ_unif, M ≤ 16βB²+2ℓ_maxB², L, γ_c = M/λ_F, μ = γλ_F − M; policy_to_ref (1±2RB)F",
    prove=check,
    negative_control=partial(check, half=1),
    cross_check=cross_check,
    control="pair form of the covariance without the factor ½",
)
