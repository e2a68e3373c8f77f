"""Registration of `sail study em` (the study itself is imported only when it runs)."""

from __future__ import annotations

import time


def cmd_study_em(args) -> int:
    import sys

    from sail.config import ConfigError
    from sail.em.study import load_study_config, run_study, summary_lines

    try:
        cfg = load_study_config(args.config, args.set)
        out_dir = args.output_dir or f"runs/study-em-{time.strftime('%Y%m%d-%H%M%S')}"
        results = run_study(cfg, out_dir, progress=not args.quiet)
    except (ConfigError, FileNotFoundError, ValueError) as exc:
        print(f"sail study em: error: {exc}", file=sys.stderr)
        return 2
    print(f"{out_dir}: {len(results['runs'])} runs")
    for line in summary_lines(results):
        print(line)
    return 0


def add_study_parser(sub) -> None:
    p = sub.add_parser("study", help="studies on the emergent-misalignment organism")
    studies = p.add_subparsers(dest="study", required=True, metavar="STUDY")
    em = studies.add_parser("em", help="optimiser × spectral penalty × seed × lr sweep of narrow fine-tunes, with EM analysis")
    em.add_argument("--config", help="YAML (see experiments/em/)")
    em.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config key")
    em.add_argument("--output-dir", help="default runs/study-em-<timestamp>; an existing study there is continued")
    em.add_argument("--quiet", action="store_true", help="no progress bar")
    em.set_defaults(func=cmd_study_em)
