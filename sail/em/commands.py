"""Registration of `sail study em` and `sail study realign` (each study is imported only when it runs)."""

from __future__ import annotations

import argparse
import time

from sail.config import ConfigError, add_config_arguments

SHARD_HELP = ("run only the sweep points whose index is I modulo N (0 <= I < N), e.g. one job of a Slurm array: "
              "--shard $SLURM_ARRAY_TASK_ID/$SLURM_ARRAY_TASK_COUNT")


def _workers(args) -> int:
    if args.workers < 1:
        raise ConfigError("--workers", f"must be >= 1, got {args.workers}")
    return args.workers


def _config(config_class, args):
    """The config: from --config/--set, or, for --merge without them, the one in DIR/results.json."""
    from pathlib import Path

    from sail.config import build, load
    from sail.io import loads_strict

    if getattr(args, "merge", False) and not args.config and not args.set:
        path = Path(args.output_dir) / "results.json"
        if not path.is_file():
            raise ConfigError("--merge", f"{path} does not exist; give the study's --config")
        return build(config_class, loads_strict(path.read_text())["config"])
    return load(config_class, args.config, args.set)


def _run_study(name: str, config_class, run, summary_lines, args) -> int:
    """Load the config, run (or continue, or only merge) the study, print its summary; errors reach
    :func:`sail.cli.main`, which prints them as one line with their exit status."""
    workers = _workers(args)
    if args.merge and not args.output_dir:
        raise ConfigError("--merge", "needs --output-dir (the study directory to merge)")
    cfg = _config(config_class, args)
    out_dir = args.output_dir or f"runs/study-{name}-{time.strftime('%Y%m%d-%H%M%S')}"
    results = run(cfg, out_dir, progress=not args.quiet, workers=workers, shard_spec=args.shard, merge_only=args.merge)
    missing = results.get("missing") or []
    print(f"{out_dir}: {len(results['runs'])} runs" + (f", {len(missing)} points not finished yet" if missing else ""))
    for line in summary_lines(results):
        print(line)
    return 0


def cmd_study_em(args) -> int:
    from sail.em.study import StudyConfig, run_probe, run_study, summary_lines

    if args.probe:
        cfg = _config(StudyConfig, args)
        out_dir = args.output_dir or f"runs/study-em-probe-{time.strftime('%Y%m%d-%H%M%S')}"
        result = run_probe(cfg, out_dir, progress=not args.quiet, workers=_workers(args), shard_spec=args.shard)
        print("\n".join(result["lines"]))
        return 0
    return _run_study("em", StudyConfig, run_study, summary_lines, args)


def cmd_study_realign(args) -> int:
    from sail.em.realign_study import RealignStudyConfig, run_realign_study, summary_lines

    return _run_study("realign", RealignStudyConfig, run_realign_study, summary_lines, args)


class _HelpWithKeys(argparse.Action):
    """``-h``: the usage, then every config key of the study (built only when asked: it imports torch)."""

    def __init__(self, option_strings, dest, config_class: str = "", **kwargs):
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, **kwargs)
        self.config_class = config_class

    def __call__(self, parser, namespace, values, option_string=None):
        import importlib

        from sail.config import help_text

        module, name = self.config_class.rsplit(".", 1)
        parser.epilog = "config keys (--set KEY=VALUE; type = default):\n" + help_text(getattr(importlib.import_module(module), name))
        parser.print_help()
        parser.exit()


def add_study_parser(sub) -> None:
    p = sub.add_parser("study", help="studies on the emergent-misalignment organism")
    studies = p.add_subparsers(dest="study", required=True, metavar="STUDY")
    em = studies.add_parser("em", help="optimiser × spectral penalty × seed × lr sweep of narrow fine-tunes, with EM analysis",
                            add_help=False, formatter_class=argparse.RawDescriptionHelpFormatter)
    _study_arguments(em, "em", "YAML (see experiments/em/)", "sweep.seeds=[0,1]", cmd_study_em, "sail.em.study.StudyConfig")
    em.add_argument("--probe", action="store_true",
                    help="run the learning-rate probe (the config's probe block) instead of the sweep; print the rule and "
                         "each optimiser's rates as YAML comments (also in DIR/probe/probe.json)")
    realign = studies.add_parser("realign", help="SAIL-RevKL / vanilla SAIL / online DPO × optimiser × penalty × seed on the misaligned policy",
                                 add_help=False, formatter_class=argparse.RawDescriptionHelpFormatter)
    _study_arguments(realign, "realign", "YAML (see experiments/em/realign*.yaml)", "train.run.steps=60", cmd_study_realign,
                     "sail.em.realign_study.RealignStudyConfig")


def _study_arguments(parser, name: str, config_help: str, example: str, func, config_class: str) -> None:
    parser.add_argument("-h", "--help", action=_HelpWithKeys, config_class=config_class, help="show this help and every config key, then exit")
    add_config_arguments(parser, config_help, example)
    parser.add_argument("--output-dir", help=f"default runs/study-{name}-<timestamp>; an existing study there is continued")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.add_argument("--workers", type=int, default=1, metavar="N",
                        help="run N sweep points at once in separate processes, each with max(1, CPUs // N) torch threads "
                             "(with CUDA devices: at most one process per device)")
    parser.add_argument("--shard", metavar="I/N", help=SHARD_HELP)
    parser.add_argument("--merge", action="store_true",
                        help="run nothing: merge DIR's finished points into results.json, the analysis and the plots "
                             "(the config is DIR/results.json's unless --config/--set are given)")
    parser.set_defaults(func=func)
