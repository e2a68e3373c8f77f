"""Registration of the `sail bench` subcommands; each benchmark module exposes ``register(subparsers)``."""

from __future__ import annotations

import argparse
import importlib
from typing import Callable

BENCHMARK_MODULES = ("sail.bench.exact", "sail.bench.logprob", "sail.bench.loop", "sail.bench.optim", "sail.bench.sample")


NOT_COUNTS = {"seed": None, "threads": 0, "warmup": 0}
"""Integer options of the benchmarks that are not counts ≥ 1: the lowest value each takes (None: any)."""


def add_bench_parser(sub) -> None:
    p = sub.add_parser("bench", help="benchmarks (ratios against baselines measured in the same run)")
    benches = p.add_subparsers(dest="bench", required=True, metavar="BENCH")
    for name in BENCHMARK_MODULES:
        importlib.import_module(name).register(benches)
    for bench in benches.choices.values():
        _check_arguments(bench)


def _check_arguments(parser) -> None:
    """Make a benchmark refuse, as an argument error, a count below 1 (a negative thread count or
    warm-up) and a device torch does not know, instead of failing inside the benchmark."""
    from sail.theory.commands import int_at_least

    for action in parser._actions:
        if action.type is int and NOT_COUNTS.get(action.dest, 1) is not None:
            action.type = int_at_least(NOT_COUNTS.get(action.dest, 1))
        elif action.dest == "device":
            action.type = _device


def _device(text: str) -> str:
    import torch

    try:
        torch.device(text)
    except RuntimeError:
        raise argparse.ArgumentTypeError(f"not a device torch knows (cpu, cuda, cuda:1, …), got {text!r}") from None
    return text


def print_result(out: dict, as_json: bool, text: Callable[[dict], str]) -> int:
    """Print a benchmark's result ``out`` as strict JSON, or as the tables ``text(out)`` makes; exit code 0."""
    from sail.io import dumps_strict

    print(dumps_strict(out, indent=2) if as_json else text(out))
    return 0
