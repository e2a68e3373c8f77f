"""`sail proofs [--json] [--only NAME] [--module PKG.MOD] [--path DIR] [--no-builtin]`: run every
lemma's proof, negative control and cross-check.

The lemmas are the built-in ones (:mod:`proofs.registry`) followed by the user's own: the modules
named by ``--module`` in the order given, then the files of each ``--path`` directory in name
order; ``--no-builtin`` leaves the built-in ones out. A row is good when the proof holds, the
negative control is rejected and the cross-check error is within the lemma's tolerance; the exit
code is 0 only if every row is good, 1 otherwise, and 2 for an input error (an unknown lemma name,
a lemma module that cannot be run, two lemmas of one name), raised as
:class:`proofs.registry.LemmaModuleError`.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
import traceback

from proofs.registry import (
    LEMMA_NAMES,
    LemmaModuleError,
    lemma_from_module,
    lemmas_from_directory,
    load_lemma,
)
from proofs.tools.lemma import Lemma, Verdict
from sail.config import ConfigError

TRACEBACK = "Traceback (most recent call last)"
"""How a check's detail shows that it raised (see :func:`_guard`)."""


def _verdict(value) -> Verdict:
    if not isinstance(value, Verdict):
        raise TypeError(f"returned a {type(value).__name__}, not a proofs.tools.lemma.Verdict")
    return value


def _error(value) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        raise TypeError(f"returned a {type(value).__name__}, not a number") from None


def _guard(fn, check=lambda value: value):
    """(check(result), None, seconds) or (None, "ExcType: message\n<traceback>", seconds) if ``fn``
    or ``check`` raised."""
    start = time.perf_counter()
    try:
        return check(fn()), None, time.perf_counter() - start
    except Exception as exc:  # a crashing checker is reported, never hidden
        return None, f"{type(exc).__name__}: {exc}\n{traceback.format_exc(limit=3)}", time.perf_counter() - start


def run_lemma(lemma: Lemma, source: str | None = None) -> dict:
    """One row: the three checks of ``lemma``, each guarded (an exception, a verdict that is not a
    :class:`Verdict` or an error that is not a number is a failed check whose detail is the
    exception and its traceback), with ``source`` (default ``proofs.<name>``)."""
    proof, proof_error, t_proof = _guard(lemma.prove, _verdict)
    control, control_error, t_control = _guard(lemma.negative_control, _verdict)
    error, cross_error, t_cross = _guard(lemma.cross_check, _error)
    proved = proof is not None and bool(proof.holds)
    if control is None:
        control_status = "ERROR"
    else:
        control_status = "ACCEPTED" if control.holds else "rejected"
    error = math.inf if error is None or not math.isfinite(error) else error
    return {
        "lemma": lemma.name,
        "source": source or f"proofs.{lemma.name}",
        "statement": lemma.statement,
        "status": "proved" if proved else "failed",
        "proof_detail": proof.detail if proof is not None else proof_error,
        "negative_control": control_status,
        "control": lemma.control,
        "control_detail": control.detail if control is not None else control_error,
        "cross_check_error": error,
        "cross_check_detail": cross_error,
        "tolerance": lemma.tolerance,
        "time_s": t_proof + t_control + t_cross,
        "time_breakdown_s": {"prove": t_proof, "negative_control": t_control, "cross_check": t_cross},
        "ok": proved and control_status == "rejected" and error <= lemma.tolerance,
    }


def run(entries: list[tuple[str, Lemma]] | None = None) -> list[dict]:
    """Run ``entries``, (source, lemma) pairs (default: every built-in lemma). The cross-checks
    use tiny tensors, for which torch's intra-op thread pool only adds synchronisation cost, so
    they run single-threaded."""
    import torch

    if entries is None:
        entries = [(f"proofs.{name}", load_lemma(name)) for name in LEMMA_NAMES]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return [run_lemma(lemma, source) for source, lemma in entries]
    finally:
        torch.set_num_threads(threads)


def select(
    modules=(), paths=(), builtin: bool = True, only=None
) -> tuple[list[tuple[str, Lemma]], list[str]]:
    """The (source, lemma) pairs to run and the sources of ``--path`` files skipped for exporting
    no ``LEMMA``: the built-in lemmas unless ``builtin`` is false, then the lemmas of ``modules``
    (dotted names) and of the ``paths`` (directories), kept to the names in ``only`` if given.
    A built-in lemma is imported only if it is selected. Raises :class:`LemmaModuleError` for a
    module that cannot be run, two lemmas of one name, an unknown name in ``only``, or nothing to
    run."""
    if not builtin and not modules and not paths:
        raise LemmaModuleError("--no-builtin", "leaves nothing to run; add --module PKG.MOD or --path DIR")
    found: dict[str, tuple[str, Lemma | None]] = {}
    if builtin:
        found.update((name, (f"proofs.{name}", None)) for name in LEMMA_NAMES)
    user = [(f"--module {m}", lemma_from_module(m)) for m in modules]
    skipped: list[str] = []
    for directory in paths:
        entries, skipped_here = lemmas_from_directory(directory)
        user += entries
        skipped += skipped_here
    for source, lemma in user:
        if lemma.name in found:
            first = found[lemma.name][0]
            raise LemmaModuleError(source, f"lemma name {lemma.name!r} is already defined by {first}")
        found[lemma.name] = (source, lemma)
    if only:
        unknown = [name for name in only if name not in found]
        if unknown:
            raise LemmaModuleError("--only", f"unknown lemma {unknown[0]!r}; known lemmas: {', '.join(found)}")
        found = {name: entry for name, entry in found.items() if name in only}
    selected = [(source, lemma if lemma is not None else load_lemma(name)) for name, (source, lemma) in found.items()]
    return selected, skipped


def _format_error(row: dict) -> str:
    text = f"{row['cross_check_error']:.1e}"
    return text if row["cross_check_error"] <= row["tolerance"] else f"{text} > {row['tolerance']:.0e}"


def table(rows: list[dict], total_s: float) -> str:
    header = ("lemma", "statement", "status", "negative control", "cross-check", "time")
    body = [
        (r["lemma"], " ".join(str(r["statement"]).split()), r["status"], r["negative_control"], _format_error(r), f"{r['time_s']:.2f} s")
        for r in rows
    ]
    widths = [max(len(str(line[c])) for line in [header, *body]) for c in range(len(header))]
    fmt = lambda line: "  ".join(str(v).ljust(w) for v, w in zip(line, widths)).rstrip()  # noqa: E731
    lines = [fmt(header), fmt(["-" * w for w in widths]), *map(fmt, body)]
    n_ok = sum(r["ok"] for r in rows)
    max_err = max((r["cross_check_error"] for r in rows), default=0.0)
    lines.append("")
    lines.append(
        f"{len(rows)} lemmas: {sum(r['status'] == 'proved' for r in rows)} proved, "
        f"{sum(r['negative_control'] == 'rejected' for r in rows)} negative controls rejected, "
        f"max cross-check error {max_err:.1e}, {n_ok}/{len(rows)} good, total {total_s:.1f} s"
    )
    for r in rows:
        if not r["ok"]:
            lines.append(f"\n{r['lemma']}: status {r['status']} — {_first_line(r['proof_detail'])}")
            lines.append(f"  negative control ({r['control']}): {r['negative_control']} — {_first_line(r['control_detail'])}")
            if r["cross_check_detail"]:
                lines.append(f"  cross-check: {_first_line(r['cross_check_detail'])}")
    if any(_raised(r) for r in rows):
        lines.append("\n(a check raised an exception: sail proofs --json gives its traceback)")
    return "\n".join(lines)


def _first_line(detail) -> str:
    """A check's detail as one line: a raised exception's "ExcType: message", without the
    traceback that follows it in the row."""
    return str(detail).split("\n", 1)[0]


def _raised(row: dict) -> bool:
    return any(TRACEBACK in str(row[key] or "") for key in ("proof_detail", "control_detail", "cross_check_detail"))


def cmd_proofs(args) -> int:
    """``sail proofs``: the table (or JSON) of the selected lemmas; exit 0 if every row is good,
    1 otherwise. An input error is raised as :class:`LemmaModuleError` (exit 2 under ``sail``)."""
    entries, skipped = select(args.module or (), args.path or (), builtin=not args.no_builtin, only=args.only)
    if skipped:
        print(f"sail proofs: note: skipped (no LEMMA): {', '.join(skipped)}", file=sys.stderr)
    start = time.perf_counter()
    rows = run(entries)
    total = time.perf_counter() - start
    if args.json:
        finite = [{k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in r.items()} for r in rows]
        print(json.dumps({"lemmas": finite, "ok": all(r["ok"] for r in rows), "total_time_s": total}, indent=1))
    else:
        print(table(rows, total))
    return 0 if all(r["ok"] for r in rows) else 1


def add_proofs_parser(sub) -> None:
    """Register `sail proofs` on an argparse subparsers object."""
    help_text = "check the symbolic derivations behind the convergence guarantee (docs/theory.md)"
    p = sub.add_parser("proofs", help=help_text, description=help_text)
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.add_argument("--only", metavar="NAME", action="append", help="run only this lemma, built-in or the user's (repeatable)")
    p.add_argument(
        "--module", metavar="PKG.MOD", action="append",
        help="also run the lemma of this module, which exports LEMMA (proofs.tools.lemma.Lemma); imported from "
        "sys.path like `import PKG.MOD`, which for the sail script excludes the working directory (PYTHONPATH=. "
        "adds it) (repeatable; docs/proofs_api.md)",
    )
    p.add_argument(
        "--path", metavar="DIR", action="append",
        help="also run the lemmas of every DIR/*.py not starting with _ that exports LEMMA; the others are skipped "
        "with a note, and DIR is on sys.path only while its files are imported (repeatable)",
    )
    p.add_argument(
        "--no-builtin", action="store_true",
        help="run only the lemmas of --module and --path, not the built-in ones",
    )
    p.set_defaults(func=cmd_proofs)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m proofs.runner")
    add_proofs_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["proofs", *(sys.argv[1:] if argv is None else argv)])
    try:
        return args.func(args)
    except ConfigError as exc:
        print(f"sail proofs: error: {' '.join(str(exc).split())}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
