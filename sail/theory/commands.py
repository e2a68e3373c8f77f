"""`sail check …`: the convergence checkers on an instance file or a built-in random instance."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

# The heavy modules (torch, matplotlib, the checkers) are imported when a check runs, so that
# `sail --help` and argument errors answer at once.

# Built-in instance: small enough for seconds. γ = 6 lies above both the empirical γ_c (≈ 0.56)
# and the searched template estimate γ_c = M/λ_F (≈ 4.8) of the seed-0 instance.
DEFAULTS = {"contexts": 4, "responses": 6, "dim": 4, "beta": 1.0, "gamma": 6.0, "radius": 1.0, "kl": "ref_to_policy"}


def add_instance_arguments(p: argparse.ArgumentParser, outputs: bool = True) -> None:
    """The instance flags, and unless ``outputs`` is False also --json, --plot and --samples."""
    g = p.add_argument_group("instance")
    g.add_argument("--instance", type=Path, help="instance JSON file (default: a built-in random instance)")
    g.add_argument("--seed", type=int, default=0, help="seed of the random instance and of the searches")
    g.add_argument("--contexts", type=_positive_int, default=DEFAULTS["contexts"], help="|X| of the random instance")
    g.add_argument("--responses", type=int_at_least(2), default=DEFAULTS["responses"], help="|Y| of the random instance")
    g.add_argument("--dim", type=_positive_int, default=DEFAULTS["dim"], help="feature dimension d of the random instance")
    g.add_argument("--tabular", action="store_true", help="one-hot features (d = |X|·|Y|) for the random instance")
    g.add_argument("--beta", type=float, help=f"override β (random default {DEFAULTS['beta']})")
    g.add_argument("--gamma", type=float, help=f"override γ (random default {DEFAULTS['gamma']})")
    g.add_argument("--radius", type=float, help=f"override the ball radius R (random default {DEFAULTS['radius']})")
    g.add_argument("--kl", choices=["ref_to_policy", "policy_to_ref"], help="override the KL direction")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    if not outputs:
        return
    p.add_argument("--plot", type=Path, metavar="DIR", help="write PNG figures into DIR")
    p.add_argument("--samples", type=_positive_int, default=200, help="ball points at which Hessians are evaluated")


def build_instance(args):
    """The instance file ``--instance`` or the built-in random instance, with ``--beta`` … ``--kl``
    replacing its keys (a bad value raises :class:`sail.config.ConfigError` naming the key)."""
    from sail.theory.instance import load_instance, random_instance

    overrides = {k: getattr(args, k) for k in ("beta", "gamma", "radius", "kl") if getattr(args, k) is not None}
    if args.instance is not None:
        return load_instance(args.instance, overrides)
    params = {k: DEFAULTS[k] for k in ("beta", "gamma", "radius", "kl")}
    params.update(overrides)
    return random_instance(
        args.seed, args.contexts, args.responses, args.dim, tabular=args.tabular, **params  # type: ignore[arg-type]
    )


def evaluate(problem, theta) -> dict:
    t = problem.terms(theta, order=2)
    return {
        "theta": np.asarray(theta).tolist(),
        "objective": float(t.value),
        "sail": float(t.sail),
        "kl": float(t.kl),
        "gradient": t.grad.tolist(),
        "hessian": t.hess.tolist(),
        "hessian_eigenvalues": np.linalg.eigvalsh(t.hess.numpy()).tolist(),
    }


def run_sample_complexity(problem, args, pl: dict | None = None) -> dict:
    from sail.theory.pl import pl_check, rate_start
    from sail.theory.sample_complexity import sample_complexity

    pl = pl or pl_check(problem, seed=args.seed, n_samples=args.samples)
    theta0 = rate_start(problem, np.asarray(pl["theta_star"]), np.random.default_rng(args.seed))
    out = sample_complexity(
        problem,
        theta0,
        pl["max_objective"],
        pl["smoothness_hat"],
        pl["pl_mu_hat"],
        eps_fractions=args.eps_fractions,
        batch_sizes=args.batch_sizes,
        replicas=args.replicas,
        seed=args.seed,
        seeds=args.seeds,
        progress=not args.json,
    )
    out["pl_mu_hat"], out["smoothness_hat"] = pl["pl_mu_hat"], pl["smoothness_hat"]
    return out


def cmd_check(args) -> int:
    import torch

    from sail.config import ConfigError
    from sail.theory import plots, report
    from sail.theory.gamma_scan import gamma_scan
    from sail.theory.llm.command import output_directory
    from sail.theory.pl import pl_check
    from sail.theory.problem import ExactProblem

    inst = build_instance(args)  # a bad instance or flag: ConfigError, one line from sail.cli
    if args.plot is not None:
        output_directory(str(args.plot), "--plot")
    theta = None
    if getattr(args, "theta", None) is not None:
        try:
            theta = np.asarray(json.loads(args.theta), dtype=np.float64)
        except (json.JSONDecodeError, TypeError, ValueError) as exc:
            raise ConfigError("--theta", f"must be a JSON list of numbers ({exc})") from None
        if theta.shape != inst.theta_ref.shape or not np.all(np.isfinite(theta)):
            raise ConfigError("--theta", f"must be {inst.theta_ref.shape[0]} finite numbers")
    n_ctx, n_resp, _ = inst.shape
    if n_ctx * n_resp * n_resp < 100_000:
        torch.set_num_threads(1)  # tiny tensors: intra-op threads only add overhead
    problem = ExactProblem(inst)
    out: dict
    text: list[str] = []
    if args.check == "eval":
        out = evaluate(problem, inst.theta_ref if theta is None else theta)
        text.append(report.eval_table(out))
    elif args.check == "pl":
        out = pl_check(problem, seed=args.seed, n_samples=args.samples)
        text.append(report.pl_table(out))
        if args.plot:
            text.append(f"wrote {plots.plot_rate(out, args.plot / 'rate.png')}")
    elif args.check == "gamma-scan":
        out = gamma_scan(problem, seed=args.seed, n_samples=args.samples)
        text.append(report.gamma_table(out))
        if args.plot:
            text.append(f"wrote {plots.plot_gamma_scan(out, args.plot / 'gamma_scan.png')}")
    elif args.check == "sample-complexity":
        out = run_sample_complexity(problem, args)
        text.append(report.sample_table(out))
        if args.plot:
            text.append(f"wrote {plots.plot_sample_complexity(out, args.plot / 'sample_complexity.png')}")
    else:  # all
        pl = pl_check(problem, seed=args.seed, n_samples=args.samples)
        scan = gamma_scan(problem, seed=args.seed, n_samples=args.samples)
        sc = run_sample_complexity(problem, args, pl)
        out = {"pl": pl, "gamma_scan": scan, "sample_complexity": sc}
        text += ["PL check", report.pl_table(pl), "", "γ scan", report.gamma_table(scan), "", "Sample complexity"]
        text.append(report.sample_table(sc))
        if args.plot:
            for path in (
                plots.plot_rate(pl, args.plot / "rate.png"),
                plots.plot_gamma_scan(scan, args.plot / "gamma_scan.png"),
                plots.plot_sample_complexity(sc, args.plot / "sample_complexity.png"),
            ):
                text.append(f"wrote {path}")
    if args.json:
        print(report.dumps(out))
    else:
        print("\n".join(text))
    return 0


def _numbers(text: str, kind: type, what: str) -> tuple:
    """``text``, comma-separated numbers of type ``kind``, as a tuple; ``what`` names them in the error."""
    try:
        return tuple(kind(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be comma-separated {what}, got {text!r}") from None


def _float_list(text: str) -> tuple[float, ...]:
    values = _numbers(text, float, "numbers")
    if not all(0 < v < 1 for v in values):
        raise argparse.ArgumentTypeError(f"fractions must lie in (0, 1), got {text}")
    return values


def int_at_least(low: int):
    """An argparse type: an integer ≥ ``low``."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be an integer >= {low}, got {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"must be >= {low}, got {value}")
        return value

    return parse


_positive_int = int_at_least(1)


def _int_list(text: str) -> tuple[int, ...]:
    values = _numbers(text, int, "integers")
    if not all(v >= 1 for v in values):
        raise argparse.ArgumentTypeError(f"batch sizes must be >= 1, got {text}")
    return values


def add_check_parser(sub) -> None:
    p = sub.add_parser("check", help="convergence checkers on exact log-linear instances")
    checks = p.add_subparsers(dest="check", required=True, metavar="CHECK")
    for name, help_text in [
        ("eval", "J_γ, KL, gradient and Hessian at θ"),
        ("pl", "PL constant, smoothness, curvature and linear rate vs the PL template"),
        ("gamma-scan", "largest Hessian eigenvalue against γ; empirical and theoretical γ_c"),
        ("sample-complexity", "samples to reach E[gap] ≤ ε, and the log-log slope"),
        ("all", "pl, gamma-scan and sample-complexity together (the demo)"),
    ]:
        c = checks.add_parser(name, help=help_text, description=help_text)
        add_instance_arguments(c)
        if name == "eval":
            c.add_argument("--theta", help="θ as a JSON list (default θ_ref)")
        if name in ("sample-complexity", "all"):
            c.add_argument("--replicas", type=_positive_int, default=4, help="independent runs averaged for E[gap]")
            c.add_argument("--seeds", type=_positive_int, default=4, help="independent repeats of the measurement (slope CI)")
            c.add_argument(
                "--eps-fractions", type=_float_list, default=(0.1, 0.03, 0.01, 0.003, 0.001), help="ε as fractions of the initial gap, comma-separated"
            )
            c.add_argument(
                "--batch-sizes", type=_int_list, default=tuple(2**i for i in range(11)), help="batch-size grid, comma-separated"
            )
        c.set_defaults(func=cmd_check)
    help_text = "each KL estimator's expected gradient against the sequence KL's, on an enumerable tiny Qwen3"
    c = checks.add_parser("kl-estimators", help=help_text, description=help_text)
    c.add_argument("--seed", type=int, default=4, help="seed of the tiny Qwen3 and its LoRA")
    c.add_argument("--json", action="store_true", help="print JSON instead of a Markdown table")
    c.set_defaults(func=cmd_kl_estimators)

    from sail.theory.llm.command import add_llm_parser  # light: the checker itself is imported when it runs

    add_llm_parser(checks)

    from sail.theory.certify.command import add_certify_parsers  # light: the search is imported when it runs

    add_certify_parsers(checks, add_instance_arguments, build_instance)


def cmd_kl_estimators(args) -> int:
    from sail.io import dumps_strict
    from sail.theory.kl_estimators import bias_table, markdown

    import torch

    torch.set_num_threads(1)  # tiny tensors: intra-op threads only add overhead
    rows = bias_table(seed=args.seed)
    print(dumps_strict(rows, indent=1) if args.json else markdown(rows))
    return 0
