"""Registration of `sail study em` and `sail study realign` (each study is imported only when it runs)."""

from __future__ import annotations

import time

from sail.config import add_config_arguments


def _run_study(name: str, load, run, summary_lines, args) -> int:
    """Load the config, run (or continue) the study, print its summary; errors reach
    :func:`sail.cli.main`, which prints them as one line with their exit status."""
    cfg = load(args.config, args.set)
    out_dir = args.output_dir or f"runs/study-{name}-{time.strftime('%Y%m%d-%H%M%S')}"
    results = run(cfg, out_dir, progress=not args.quiet)
    print(f"{out_dir}: {len(results['runs'])} runs")
    for line in summary_lines(results):
        print(line)
    return 0


def cmd_study_em(args) -> int:
    from sail.em.study import load_study_config, run_study, summary_lines

    return _run_study("em", load_study_config, run_study, summary_lines, args)


def cmd_study_realign(args) -> int:
    from sail.em.realign_study import load_realign_config, run_realign_study, summary_lines

    return _run_study("realign", load_realign_config, run_realign_study, summary_lines, args)


def add_study_parser(sub) -> None:
    p = sub.add_parser("study", help="studies on the emergent-misalignment organism")
    studies = p.add_subparsers(dest="study", required=True, metavar="STUDY")
    em = studies.add_parser("em", help="optimiser × spectral penalty × seed × lr sweep of narrow fine-tunes, with EM analysis")
    _study_arguments(em, "em", "YAML (see experiments/em/)", "sweep.seeds=[0,1]", cmd_study_em)
    realign = studies.add_parser("realign", help="SAIL-RevKL / vanilla SAIL / online DPO × optimiser × penalty × seed on the misaligned policy")
    _study_arguments(realign, "realign", "YAML (see experiments/em/realign*.yaml)", "train.run.steps=60", cmd_study_realign)


def _study_arguments(parser, name: str, config_help: str, example: str, func) -> None:
    add_config_arguments(parser, config_help, example)
    parser.add_argument("--output-dir", help=f"default runs/study-{name}-<timestamp>; an existing study there is continued")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.set_defaults(func=func)
