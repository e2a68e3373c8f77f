"""The `sail` command line: `sail train`, `sail export`, `sail plot`, `sail check …` (convergence
checkers), `sail proofs`, `sail bench`, `sail study` and `sail build`."""

from __future__ import annotations

import argparse
import sys

from proofs.runner import add_proofs_parser
from sail.bench.commands import add_bench_parser
from sail.em.commands import add_study_parser
from sail.theory.commands import add_check_parser
from sail.train.commands import add_train_parser
from sail.train.export import add_export_parser

DEFAULT_RECIPE = "em-realign"
"""What ``sail train`` runs without ``--config``: realign the emergent-misaligned organism
(``sail/em/recipes/realign.yaml``)."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sail", description="SAIL-RevKL: training, convergence checkers, proofs.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    add_train_parser(sub, default_recipe=DEFAULT_RECIPE)
    add_export_parser(sub)
    add_plot_parser(sub)
    add_check_parser(sub)
    add_proofs_parser(sub)
    add_bench_parser(sub)
    add_study_parser(sub)
    add_build_parser(sub)
    return parser


def add_plot_parser(sub) -> None:
    p = sub.add_parser("plot", help="plot runs' held-out evaluations (reward, KL, win rate, every eval/* metric) against the step")
    p.add_argument("runs", nargs="+", metavar="RUN", help="a run directory of sail train (several: one line each)")
    p.add_argument("--output", help="the PNG to write (default RUN/metrics.png for one run, metrics.png for several)")
    p.set_defaults(func=cmd_plot)


def cmd_plot(args) -> int:
    """``sail plot``: the PNG of :mod:`sail.train.plot`; a run directory it cannot read is one line
    on stderr and exit status 2."""
    from sail.train.plot import PlotError, default_output, plot_runs

    output = args.output or default_output(args.runs)
    try:
        plot_runs(args.runs, output)
    except PlotError as exc:
        print(f"sail plot: error: {exc}", file=sys.stderr)
        return 2
    print(output)
    return 0


def add_build_parser(sub) -> None:
    p = sub.add_parser("build", help="build the models sail ships: the EM organism and its misaligned policy")
    models = p.add_subparsers(dest="model", required=True, metavar="MODEL")
    organism = models.add_parser("organism", help="build the EM organism and the misaligned policy (docs/em_organism.md)")
    organism.add_argument(
        "--verify", action="store_true",
        help="rebuild both into a temporary cache and compare their sha256 with the shipped weights (exit 1 on a mismatch)",
    )
    organism.add_argument("--seed", type=int, default=0, help="the build seed (the shipped weights are seed 0's)")
    organism.add_argument("--cache-dir", help="without --verify: the cache root (default $SAIL_CACHE, else ~/.cache/sail)")
    organism.set_defaults(func=cmd_build_organism)


def cmd_build_organism(args) -> int:
    from sail.em.build import cmd_build_organism as build

    return build(args)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
