"""Registration of the `sail bench` subcommands; each benchmark module exposes ``register(subparsers)``."""

from __future__ import annotations

import importlib
from typing import Callable

BENCHMARK_MODULES = ("sail.bench.exact", "sail.bench.logprob", "sail.bench.loop", "sail.bench.optim", "sail.bench.sample")


def add_bench_parser(sub) -> None:
    p = sub.add_parser("bench", help="benchmarks (ratios against baselines measured in the same run)")
    benches = p.add_subparsers(dest="bench", required=True, metavar="BENCH")
    for name in BENCHMARK_MODULES:
        importlib.import_module(name).register(benches)


def print_result(out: dict, as_json: bool, text: Callable[[dict], str]) -> int:
    """Print a benchmark's result ``out`` as JSON, or as the tables ``text(out)`` makes; exit code 0."""
    from sail.theory.report import dumps

    print(dumps(out) if as_json else text(out))
    return 0
