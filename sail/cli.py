"""The `sail` command line: `sail train`, `sail check …` (convergence checkers), `sail proofs`,
`sail bench` and `sail study`."""

from __future__ import annotations

import argparse
import sys

from proofs.runner import add_proofs_parser
from sail.bench.commands import add_bench_parser
from sail.em.commands import add_study_parser
from sail.theory.commands import add_check_parser
from sail.train.commands import add_train_parser

DEFAULT_RECIPE = "em-realign"
"""What ``sail train`` runs without ``--config``: realign the emergent-misaligned organism
(``sail/em/recipes/realign.yaml``)."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sail", description="SAIL-RevKL: training, convergence checkers, proofs.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    add_train_parser(sub, default_recipe=DEFAULT_RECIPE)
    add_check_parser(sub)
    add_proofs_parser(sub)
    add_bench_parser(sub)
    add_study_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
