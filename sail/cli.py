"""The `sail` command line: `sail train`, `sail export`, `sail plot`, `sail check …` (convergence
checkers), `sail proofs`, `sail bench`, `sail study` and `sail build`.

An error of any command reaches :func:`main`, the one place that turns it into one line on stderr
and an exit status (:func:`error_status`: 2 for the user's input, 1 for a failure that is not the
input's); ``sail --debug`` or ``SAIL_DEBUG=1`` shows its traceback instead."""

from __future__ import annotations

import argparse
import errno
import os
import re
import sys
from pathlib import Path

from proofs.runner import add_proofs_parser
from sail.bench.commands import add_bench_parser
from sail.em.commands import add_study_parser
from sail.theory.commands import add_check_parser
from sail.train.commands import add_train_parser
from sail.train.export import add_export_parser

DEFAULT_RECIPE = "em-realign"
"""What ``sail train`` runs without ``--config``: realign the emergent-misaligned organism
(``sail/em/recipes/realign.yaml``)."""


class _Parser(argparse.ArgumentParser):
    """argparse with a one-line error (``sail check pl: error: argument --samples: …``, exit 2),
    and the program name of the (sub)command that parsed the arguments kept as ``args.prog``."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {' '.join(message.split())} (see {self.prog} --help)\n")

    def parse_known_args(self, args=None, namespace=None):
        namespace, rest = super().parse_known_args(args, namespace)
        if not hasattr(namespace, "prog"):  # the innermost sub-command's parser sets it first
            namespace.prog = self.prog
        return namespace, rest


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="sail", description="SAIL-RevKL: training, convergence checkers, proofs.", epilog=EXIT_STATUS)
    parser.add_argument("--debug", action="store_true", help="show the Python traceback of an error (also SAIL_DEBUG=1)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    add_train_parser(sub, default_recipe=DEFAULT_RECIPE)
    add_export_parser(sub)
    add_plot_parser(sub)
    add_check_parser(sub)
    add_proofs_parser(sub)
    add_bench_parser(sub)
    add_study_parser(sub)
    add_build_parser(sub)
    _debug_everywhere(parser)
    return parser


def _debug_everywhere(parser) -> None:
    """``--debug`` after the command too (``sail train --debug …``), for every sub-command."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for command in action.choices.values():
                command.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
                _debug_everywhere(command)


def add_plot_parser(sub) -> None:
    p = sub.add_parser("plot", help="plot runs' held-out evaluations (reward, KL, win rate, every eval/* metric) against the step")
    p.add_argument("runs", nargs="+", metavar="RUN", help="a run directory of sail train (several: one line each)")
    p.add_argument("--output", help="the PNG to write (default RUN/metrics.png for one run, metrics.png for several)")
    p.set_defaults(func=cmd_plot)


def cmd_plot(args) -> int:
    """``sail plot``: the PNG of :mod:`sail.train.plot`; a run directory it cannot read is one line
    on stderr and exit status 2."""
    from sail.train.commands import check_creatable
    from sail.train.plot import default_output, plot_runs

    output = args.output or default_output(args.runs)
    check_creatable(Path(output).parent, "--output")
    plot_runs(args.runs, output)
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


EXIT_STATUS = """exit status: 0 done; 1 a failure that is not the input's (disk full, network down, a
training state that became non-finite, a bug); 2 a bad input (config, data, path, argument, a
credential the server rejects). An error is one line on stderr; --debug (or SAIL_DEBUG=1) shows the
traceback instead."""

INPUT_ERRORS = (
    ("sail.config", "ConfigError"),
    ("sail.config", "FieldError"),
    ("sail.data.records", "DataError"),
    ("sail.train.errors", "TrainingError"),
    ("sail.train.checkpoint", "CheckpointError"),
    ("sail.train.plot", "PlotError"),
    ("sail.em.judges.rule", "JudgeError"),
    ("sail.oracles", "OracleError"),
)
"""The project's errors about what the user gave (exit 2), as (module, class): a module that was
never imported raised none of them, so the handler imports nothing to test for them."""

RUNTIME_ERRORS = (
    ("sail.train.errors", "RunFailure"),
    ("sail.em.judges.rule", "JudgeUnavailable"),
    ("builtins", "ConnectionError"),
    ("builtins", "TimeoutError"),
    ("urllib.error", "URLError"),
    ("requests.exceptions", "ConnectionError"),
    ("requests.exceptions", "Timeout"),
    ("httpx", "TransportError"),
)
"""Failures that are not the input's (exit 1), checked first: subclasses of the above for a run
that failed on its own or a judge out of reach, and the network's errors."""

RUNTIME_ERRNOS = frozenset(
    getattr(errno, name) for name in (
        "ENOSPC", "EDQUOT", "EIO", "ENOMEM", "EMFILE", "ENFILE", "ENETDOWN", "ENETUNREACH", "EHOSTUNREACH",
        "ECONNREFUSED", "ECONNRESET", "ECONNABORTED", "ETIMEDOUT", "EPIPE",
    ) if hasattr(errno, name)
)
"""Operating-system errors of the machine rather than of the path the user gave: exit 1."""

RUST_OS_ERROR = re.compile(r"\(os error (\d+)\)")
"""How a Rust library's I/O error gives the operating system's error number."""


def _loaded(specs) -> tuple[type, ...]:
    return tuple(
        cls for module, name in specs
        if (cls := getattr(sys.modules.get(module), name, None)) is not None
    )


def _os_error(exc: OSError) -> tuple[int, str]:
    what = exc.strerror or str(exc)
    where = " → ".join(str(f) for f in (exc.filename, exc.filename2) if f is not None)
    return (1 if exc.errno in RUNTIME_ERRNOS else 2), (f"{where}: {what}" if where else what)


def error_status(exc: BaseException) -> tuple[int, str]:
    """(exit status, one-line message) of an exception that reached the command line."""
    if isinstance(exc, KeyboardInterrupt):
        return 130, "interrupted"
    if isinstance(exc, _loaded(RUNTIME_ERRORS)):
        code, message = 1, str(exc)
    elif isinstance(exc, _loaded(INPUT_ERRORS)):
        code, message = 2, str(exc)
    elif isinstance(exc, OSError):
        code, message = _os_error(exc)
    elif isinstance(exc, MemoryError):
        code, message = 1, "out of memory"
    elif match := RUST_OS_ERROR.search(str(exc)):  # an I/O error inside a Rust library (safetensors, tokenizers)
        code, message = (1 if int(match.group(1)) in RUNTIME_ERRNOS else 2), str(exc)
    else:
        code, message = 1, f"unexpected {type(exc).__name__}: {exc} (sail --debug shows the traceback)"
    return code, " ".join(message.split()) or type(exc).__name__


def main(argv: list[str] | None = None) -> int:
    """Run one command; an exception becomes one line on stderr and the exit status of
    :func:`error_status` (:data:`EXIT_STATUS`), or with ``--debug``/``SAIL_DEBUG=1`` its traceback."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (Exception, KeyboardInterrupt) as exc:
        if args.debug or os.environ.get("SAIL_DEBUG", "").strip() not in ("", "0"):
            raise
        code, message = error_status(exc)
        print(f"{args.prog}: error: {message}", file=sys.stderr)
        return code


if __name__ == "__main__":
    sys.exit(main())
