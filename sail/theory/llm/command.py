"""`sail check llm`: the exact convergence checker on a tiny Qwen3 (see docs/check_llm.md).

Flag values are read as text and checked here, so that a bad value exits with code 2 and one line
naming the flag (``sail check llm: error: --gamma must be a finite number >= 0, got '-1'``).
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

from sail.objectives import KL_DIRECTIONS

PARAMETRISATION_CHOICES = ("lora", "lora_nonzero_init", "head")
DEFAULTS = {
    "gamma": "1.0",
    "radius": "0.3",
    "kl_direction": "ref_to_policy",
    "seed": "0",
    "parametrisation": "lora",
    "samples": "24",
    "starts": "4",
    "ascent_iterations": "300",
    "rate_steps": "150",
    "loop_steps": "40",
}


class FlagError(ValueError):
    """A bad flag value; the message names the flag."""


def _number(text: str, flag: str, low: float, strict: bool) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value < low or (strict and value == low):
        raise FlagError(f"{flag} must be a finite number {'>' if strict else '>='} {low:g}, got {text!r}")
    return value


def _integer(text: str, flag: str, low: int) -> int:
    try:
        value = int(text)
    except ValueError:
        raise FlagError(f"{flag} must be an integer >= {low}, got {text!r}") from None
    if value < low:
        raise FlagError(f"{flag} must be an integer >= {low}, got {text!r}")
    return value


def _choice(text: str, flag: str, choices) -> str:
    if text not in choices:
        raise FlagError(f"{flag} must be one of {', '.join(choices)}, got {text!r}")
    return text


def _directory(text: str | None, flag: str) -> Path | None:
    """An output folder, created now, so that a bad path fails before the run and not after it."""
    if text is None:
        return None
    path = Path(text)
    if path.exists() and not path.is_dir():
        raise FlagError(f"{flag} must name a directory, got the file {text!r}")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise FlagError(f"{flag}: cannot create {text!r} ({exc.strerror or exc})") from None
    return path


def parse_flags(args) -> dict:
    """The validated settings of one run (raises :class:`FlagError`)."""
    return {
        "gamma": _number(args.gamma, "--gamma", 0.0, strict=False),
        "radius": _number(args.radius, "--radius", 0.0, strict=True),
        "kl_direction": _choice(args.kl_direction, "--kl-direction", KL_DIRECTIONS),
        "seed": _integer(args.seed, "--seed", 0),
        "parametrisation": _choice(args.parametrisation, "--parametrisation", PARAMETRISATION_CHOICES),
        "samples": _integer(args.samples, "--samples", 1),
        "starts": _integer(args.starts, "--starts", 1),
        "ascent_iterations": _integer(args.ascent_iterations, "--ascent-iterations", 1),
        "rate_steps": _integer(args.rate_steps, "--rate-steps", 3),
        "loop_steps": _integer(args.loop_steps, "--loop-steps", 0),
        "save": _directory(args.save, "--save"),
        "plot": _directory(args.plot, "--plot"),
    }


def strict_json(obj):
    """A JSON-ready copy: numpy scalars and arrays to Python, NaN and ±∞ to null."""
    from sail.theory.report import jsonable

    return jsonable(obj, non_finite=lambda x: None)


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
        flags = parse_flags(args)
    except FlagError as exc:
        print(f"sail check llm: error: {exc}", file=sys.stderr)
        return 2
    import torch

    from sail.theory.llm.artifacts import save_run
    from sail.theory.llm.blas import single_blas_thread
    from sail.theory.llm.check import CheckSettings, run_check
    from sail.theory.llm.instance import make_instance

    torch.set_num_threads(1)  # tensors of a few hundred entries: threads only add overhead
    single_blas_thread()
    instance = make_instance(
        flags["seed"], flags["parametrisation"], gamma=flags["gamma"], radius=flags["radius"], kl_direction=flags["kl_direction"]
    )
    settings = CheckSettings(
        samples=flags["samples"],
        starts=flags["starts"],
        ascent_iterations=flags["ascent_iterations"],
        rate_steps=flags["rate_steps"],
        loop_steps=flags["loop_steps"],
    )
    report, param, points = run_check(instance, seed=flags["seed"], settings=settings)
    text = [_fmt_table(report)]
    if flags["save"] is not None:
        save_run(param, points, flags["save"])
        text.append(f"saved {flags['save']}")
    if flags["plot"] is not None:
        from sail.theory.llm.plots import plot_curvature, plot_rate

        for path in (plot_curvature(report, flags["plot"] / "curvature.png"), plot_rate(report, flags["plot"] / "rate.png")):
            text.append(f"wrote {path}")
    if args.json:
        print(json.dumps(strict_json(report), indent=2, allow_nan=False))
    else:
        print("\n".join(text))
    return 0


def add_llm_parser(checks) -> None:
    """Register `sail check llm` on the `sail check` sub-parsers."""
    help_text = "exact checker on an enumerable tiny Qwen3: J_γ, curvature per γ, γ_c, PL, rate, estimator biases"
    c = checks.add_parser("llm", help=help_text, description=help_text)
    c.add_argument("--gamma", default=DEFAULTS["gamma"], metavar="G", help=f"KL weight γ ≥ 0 (default {DEFAULTS['gamma']})")
    c.add_argument("--radius", default=DEFAULTS["radius"], metavar="R", help=f"ball radius R > 0 around θ₀ (default {DEFAULTS['radius']})")
    c.add_argument("--kl-direction", default=DEFAULTS["kl_direction"], metavar="D", help=f"one of {', '.join(KL_DIRECTIONS)}")
    c.add_argument("--seed", default=DEFAULTS["seed"], metavar="S", help="seed of the model, instance and searches (default 0)")
    c.add_argument(
        "--parametrisation", default=DEFAULTS["parametrisation"], metavar="P", help=f"one of {', '.join(PARAMETRISATION_CHOICES)} (default lora)"
    )
    c.add_argument("--samples", default=DEFAULTS["samples"], metavar="N", help="ball points with exact Hessians (default 24)")
    c.add_argument("--starts", default=DEFAULTS["starts"], metavar="N", help="starts of the global maximisation (default 4)")
    c.add_argument("--ascent-iterations", default=DEFAULTS["ascent_iterations"], metavar="N", help="accelerated ascent iterations per start (default 300)")
    c.add_argument("--rate-steps", default=DEFAULTS["rate_steps"], metavar="N", help="steps of projected ascent for the rate (default 150)")
    c.add_argument("--loop-steps", default=DEFAULTS["loop_steps"], metavar="N", help="training-loop steps for the stochastic PL path (0: skip; default 40)")
    c.add_argument("--json", action="store_true", help="print only strict JSON (null for non-finite numbers)")
    c.add_argument("--save", metavar="DIR", help="write model/, adapters or head deltas, and instance.json into DIR")
    c.add_argument("--plot", metavar="DIR", help="write curvature.png and rate.png into DIR")
    c.set_defaults(func=cmd_check_llm)
