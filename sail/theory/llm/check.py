"""The whole `sail check llm` run on one instance, as a JSON-ready report.

Order: θ₀ and a probe point (uniform in the ball) → exact Hessians at sampled ball points →
θ*, L̂, μ̂ and the rate (:mod:`sail.theory.llm.convergence`) → λ_max per γ and γ_c
(:mod:`sail.theory.llm.curvature`) → for ``head`` the local log-linear model's γ_c → the PL ratio
along the training loop's own trajectory (:mod:`sail.theory.llm.stochastic`) → the training step's
expected gradient for every KL estimator at the probe point and at θ* (:mod:`sail.theory.llm.estimators`).
"""

from __future__ import annotations

import time

import numpy as np

from sail.theory.llm.config import CheckConfig
from sail.theory.llm.convergence import convergence_check
from sail.theory.llm.curvature import (
    GAMMA_GRID,
    curvature_at,
    curvature_curve,
    empirical_gamma_c,
    kl_null_certificate,
    template_constants,
    zero_block_certificate,
)
from sail.theory.llm.estimators import estimator_table
from sail.theory.llm.instance import LLMInstance
from sail.theory.llm.local_loglinear import LocalLogLinear
from sail.theory.llm.parametrisation import Parametrisation, build_parametrisation
from sail.theory.llm.problem import TransformerProblem
from sail.theory.llm.stochastic import stochastic_path
from sail.theory.search import hessian_samples


def local_loglinear_gamma_c(param: Parametrisation, problem: TransformerProblem, n_samples: int, rng) -> dict:
    """Empirical and template γ_c of the local log-linear model (features = Jacobian at θ₀)."""
    local = TransformerProblem(LocalLogLinear(param), gamma=problem.gamma)
    samples = hessian_samples(local, local.sample_ball(n_samples, rng))
    interval, samples = empirical_gamma_c(local, samples, rng)
    return {
        "features": "Jacobian of log π(y|x) at θ₀",
        "identifiable_rank": local.rank,
        "gamma_c_hat": interval["gamma_c_hat"],
        "template": template_constants(samples),
    }


class _Clock:
    def __init__(self):
        self.times: dict[str, float] = {}
        self._last = time.perf_counter()

    def lap(self, name: str) -> None:
        now = time.perf_counter()
        self.times[name] = now - self._last
        self._last = now


def run_check(
    instance: LLMInstance, seed: int = 0, settings: CheckConfig = CheckConfig()
) -> tuple[dict, Parametrisation, dict[str, np.ndarray]]:
    """(report, the parametrisation, the points θ₀ / probe / θ* by name)."""
    st = settings
    clock = _Clock()
    rng = np.random.default_rng(seed)
    param = build_parametrisation(instance)
    problem = TransformerProblem(param)
    theta_ref = problem.theta_ref
    theta_probe = problem.random_point(rng)
    clock.lap("build")
    samples = hessian_samples(problem, np.concatenate([problem.sample_ball(st.samples, rng), theta_probe[None]]))
    clock.lap("hessian_samples")
    conv, samples, theta_star = convergence_check(
        problem, samples, rng, st.starts, st.ascent_iterations, st.rate_steps, st.refine_iterations, st.path_points, st.polish_iterations
    )
    clock.lap("maximiser_pl_rate")
    interval, samples = empirical_gamma_c(problem, samples, rng, iterations=st.refine_iterations)
    clock.lap("gamma_c")
    star = problem.terms(theta_star, order=0)
    report = {
        "parametrisation": instance.parametrisation,
        "gamma": problem.gamma,
        "radius": problem.radius,
        "kl_direction": problem.kl_direction,
        "beta": problem.beta,
        "seed": seed,
        "vocab_size": instance.model.vocab_size,
        "eos_token_id": instance.eos_token_id,
        "max_new_tokens": instance.max_new_tokens,
        "n_responses": len(instance.responses),
        "parameter_count": param.dim,
        "identifiable_rank": problem.rank,
        "objective_ref": problem.value(theta_ref),
        "objective_probe": problem.value(theta_probe),
        "kl_probe": float(problem.terms(theta_probe, order=0).kl),
        "objective_star": conv["objective_star"],
        "max_objective": conv["max_objective"],
        "kl_star": float(star.kl),
        "sail_star": float(star.sail),
        **{k: v for k, v in conv.items() if k not in ("objective_star", "max_objective")},
        "max_hessian_eig": curvature_curve(samples, [problem.gamma])[0]["max_hessian_eig"],
        "curvature": curvature_curve(samples, list(GAMMA_GRID) + [problem.gamma]),
        "curvature_at_ref": curvature_at(problem, theta_ref, list(GAMMA_GRID) + [problem.gamma]),
        "curvature_points": int(len(samples.thetas)),
        **interval,
        "gamma_c_empirical": interval["gamma_c_hat"],
        "template": template_constants(samples),
    }
    report["kl_null_certificate"] = kl_null_certificate(problem)
    if instance.parametrisation == "lora":
        report["hessian_blocks_at_ref"] = zero_block_certificate(problem, param.lora_a_mask())
    if instance.parametrisation == "head":
        report["local_loglinear"] = local_loglinear_gamma_c(param, problem, st.samples, rng)
    clock.lap("certificates")
    if st.loop_steps > 0:
        report["stochastic_path"] = stochastic_path(problem, conv["max_objective"], conv["smoothness_hat"], st.loop_steps, seed=seed)
        clock.lap("stochastic_path")
    if st.estimators:
        report["estimators_at"] = "probe"
        report["estimators"] = estimator_table(problem, theta_probe)
        report["estimators_at_star"] = estimator_table(problem, theta_star)
        clock.lap("estimators")
    report["timings_s"] = clock.times
    report["runtime_s"] = sum(clock.times.values())
    return report, param, {"ref": theta_ref, "probe": theta_probe, "star": theta_star}
