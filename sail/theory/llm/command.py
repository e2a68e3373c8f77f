"""`sail check llm`: the exact convergence checker on a tiny Qwen3 (see docs/check_llm.md).

The flags are keys of :class:`~sail.theory.llm.config.LLMInstanceConfig` and
:class:`~sail.theory.llm.config.CheckConfig`, read as text and checked by :func:`sail.config.build`,
so that a bad value exits with code 2 and one line naming the flag
(``sail check llm: error: --gamma: must be a finite number >= 0, got -1.0``).
"""

from __future__ import annotations

import sys
import typing
from pathlib import Path

from sail.config import ConfigError, build, parse_overrides
from sail.io import dumps_strict
from sail.theory.instance import KLDirection
from sail.theory.llm.config import PARAMETRISATIONS, CheckConfig, LLMInstanceConfig

INSTANCE_FLAGS = ("gamma", "radius", "kl_direction", "seed", "parametrisation")
CHECK_FLAGS = ("samples", "starts", "ascent_iterations", "rate_steps", "loop_steps")


def flag(key: str) -> str:
    """The command-line flag of a config key: ``kl_direction`` → ``--kl-direction``."""
    return "--" + key.replace("_", "-")


def flag_error(exc: ConfigError) -> str:
    """``exc`` as one line that names the flag instead of the config key."""
    return f"{flag(exc.key)}: {exc.problem}"


def output_directory(text: str | None, key: str) -> Path | None:
    """An output folder, created now, so that a bad path fails before the run and not after it."""
    if text is None:
        return None
    path = Path(text)
    if path.exists() and not path.is_dir():
        raise ConfigError(key, f"must name a directory, got the file {text!r}")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(key, f"cannot create {text!r} ({exc.strerror or exc})") from None
    return path


def _given(args, keys) -> dict:
    """The flags given among ``keys``, their text read as YAML scalars (as ``--set`` values are)."""
    return parse_overrides([f"{k}={getattr(args, k)}" for k in keys if getattr(args, k) is not None])


def parse_flags(args) -> tuple[LLMInstanceConfig, CheckConfig, Path | None, Path | None]:
    """(the instance, the check, the --save folder, the --plot folder) of one run; a bad value
    raises :class:`ConfigError` naming its key."""
    instance = build(LLMInstanceConfig, _given(args, INSTANCE_FLAGS))
    check = build(CheckConfig, _given(args, CHECK_FLAGS))
    return instance, check, output_directory(args.save, "save"), output_directory(args.plot, "plot")


def _fmt_table(report: dict) -> str:
    from sail.theory.report import table

    rows = [
        ("parametrisation", report["parametrisation"]),
        ("trainable parameters (identifiable rank)", f"{report['parameter_count']} ({report['identifiable_rank']})"),
        ("responses per prompt", report["n_responses"]),
        ("J_γ(θ₀)", report["objective_ref"]),
        ("J_γ(probe)", report["objective_probe"]),
        ("J_γ* (multi-start + trust-region polish)", report["objective_star"]),
        ("KL at θ*", report["kl_star"]),
        ("‖G(θ*)‖, t = 1/L̂", report["gradient_mapping_norm_star"]),
        ("PL ratio μ̂", report["pl_mu_hat"]),
        ("smoothness L̂", report["smoothness_hat"]),
        ("rate slope (bound log(1 − μ̂/L̂))", f"{report['rate_slope']:.6g} ({report['rate_slope_bound']:.6g})"),
        ("max λ_max(∇²J_γ) at γ", report["max_hessian_eig"]),
        ("γ_c", "∞ (no γ makes J_γ concave on the ball)" if report["gamma_c_infinite"] else report["gamma_c_hat"]),
        ("template γ_c = M/λ_F", report["template"]["gamma_c"]),
    ]
    if "local_loglinear" in report:
        local = report["local_loglinear"]
        rows.append(("local log-linear γ_c (template M/λ_F)", f"{local['gamma_c_hat']} ({local['template']['gamma_c']:.6g})"))
    if "stochastic_path" in report:
        rows.append(("PL ratio along the training loop's path", report["stochastic_path"]["pl_mu_hat"]))
    curve = table(
        [(c["gamma"], c["max_hessian_eig"], a["max_hessian_eig"]) for c, a in zip(report["curvature"], report["curvature_at_ref"])],
        ("γ", "max λ_max over the ball", "λ_max at θ₀"),
    )
    parts = [table(rows, ("quantity", "value")), "", curve]
    if "estimators" in report:
        at_star = report.get("estimators_at_star", [{"relative_bias": ""}] * len(report["estimators"]))
        est = table(
            [
                (e["name"] + (" (default)" if e["default"] else ""), e["kl_direction"], e["relative_bias"], s["relative_bias"])
                for e, s in zip(report["estimators"], at_star)
            ],
            ("KL estimator", "direction", "relative bias of E[step] at probe", "at θ*"),
        )
        parts += ["", est]
    return "\n".join(parts)


def cmd_check_llm(args) -> int:
    try:
        instance_cfg, check_cfg, save, plot = parse_flags(args)
    except ConfigError as exc:
        print(f"sail check llm: error: {flag_error(exc)}", file=sys.stderr)
        return 2
    import torch

    from sail.theory.llm.artifacts import save_run
    from sail.theory.llm.blas import single_blas_thread
    from sail.theory.llm.check import run_check
    from sail.theory.llm.instance import enumerable_instance

    torch.set_num_threads(1)  # tensors of a few hundred entries: threads only add overhead
    single_blas_thread()
    report, param, points = run_check(enumerable_instance(instance_cfg), seed=instance_cfg.seed, settings=check_cfg)
    text = [_fmt_table(report)]
    if save is not None:
        save_run(param, points, save)
        text.append(f"saved {save}")
    if plot is not None:
        from sail.theory.llm.plots import plot_curvature, plot_rate

        for path in (plot_curvature(report, plot / "curvature.png"), plot_rate(report, plot / "rate.png")):
            text.append(f"wrote {path}")
    if args.json:
        print(dumps_strict(report, indent=2))
    else:
        print("\n".join(text))
    return 0


def add_llm_parser(checks) -> None:
    """Register `sail check llm` on the `sail check` sub-parsers (defaults: the configs' own)."""
    instance, check = LLMInstanceConfig, CheckConfig
    help_text = "exact checker on an enumerable tiny Qwen3: J_γ, curvature per γ, γ_c, PL, rate, estimator biases"
    c = checks.add_parser("llm", help=help_text, description=help_text)
    c.add_argument("--gamma", metavar="G", help=f"KL weight γ ≥ 0 (default {instance.gamma})")
    c.add_argument("--radius", metavar="R", help=f"ball radius R > 0 around θ₀ (default {instance.radius})")
    c.add_argument("--kl-direction", metavar="D", help=f"one of {', '.join(typing.get_args(KLDirection))} (default {instance.kl_direction})")
    c.add_argument("--seed", metavar="S", help=f"seed of the model, instance and searches (default {instance.seed})")
    c.add_argument("--parametrisation", metavar="P", help=f"one of {', '.join(PARAMETRISATIONS)} (default {instance.parametrisation})")
    c.add_argument("--samples", metavar="N", help=f"ball points with exact Hessians (default {check.samples})")
    c.add_argument("--starts", metavar="N", help=f"starts of the global maximisation (default {check.starts})")
    c.add_argument("--ascent-iterations", metavar="N", help=f"accelerated ascent iterations per start (default {check.ascent_iterations})")
    c.add_argument("--rate-steps", metavar="N", help=f"steps of projected ascent for the rate (default {check.rate_steps})")
    c.add_argument("--loop-steps", metavar="N", help=f"training-loop steps for the stochastic PL path (0: skip; default {check.loop_steps})")
    c.add_argument("--json", action="store_true", help="print only strict JSON (null and a flag for non-finite numbers)")
    c.add_argument("--save", metavar="DIR", help="write model/, adapters or head deltas, and instance.json into DIR")
    c.add_argument("--plot", metavar="DIR", help="write curvature.png and rate.png into DIR")
    c.set_defaults(func=cmd_check_llm)
