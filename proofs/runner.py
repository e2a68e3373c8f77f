"""`sail proofs [--json] [--only NAME]`: run every lemma's proof, negative control and cross-check.

A row is good when the proof holds, the negative control is rejected and the cross-check error
is within the lemma's tolerance; the exit code is 0 only if every row is good, 1 otherwise, and
2 for an unknown lemma name.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
import traceback

from proofs.registry import LEMMA_NAMES, load_lemma


def _guard(fn):
    """(result, None, seconds) or (None, "ExcType: message", seconds) if ``fn`` raised."""
    start = time.perf_counter()
    try:
        return fn(), None, time.perf_counter() - start
    except Exception as exc:  # a crashing checker is reported, never hidden
        return None, f"{type(exc).__name__}: {exc}\n{traceback.format_exc(limit=3)}", time.perf_counter() - start


def run_lemma(lemma) -> dict:
    proof, proof_error, t_proof = _guard(lemma.prove)
    control, control_error, t_control = _guard(lemma.negative_control)
    error, cross_error, t_cross = _guard(lemma.cross_check)
    proved = proof is not None and proof.holds
    if control is None:
        control_status = "ERROR"
    else:
        control_status = "ACCEPTED" if control.holds else "rejected"
    error = math.inf if error is None or not math.isfinite(error) else float(error)
    return {
        "lemma": lemma.name,
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


def run(names=None) -> list[dict]:
    """Run the named lemmas (default: all). The cross-checks use tiny tensors, for which torch's
    intra-op thread pool only adds synchronisation cost, so they run single-threaded."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return [run_lemma(load_lemma(name)) for name in (names or LEMMA_NAMES)]
    finally:
        torch.set_num_threads(threads)


def _format_error(row: dict) -> str:
    text = f"{row['cross_check_error']:.1e}"
    return text if row["cross_check_error"] <= row["tolerance"] else f"{text} > {row['tolerance']:.0e}"


def table(rows: list[dict], total_s: float) -> str:
    header = ("lemma", "statement", "status", "negative control", "cross-check", "time")
    body = [
        (r["lemma"], r["statement"], r["status"], r["negative_control"], _format_error(r), f"{r['time_s']:.2f} s")
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
            lines.append(f"\n{r['lemma']}: status {r['status']} — {r['proof_detail']}")
            lines.append(f"  negative control ({r['control']}): {r['negative_control']} — {r['control_detail']}")
            if r["cross_check_detail"]:
                lines.append(f"  cross-check: {r['cross_check_detail']}")
    return "\n".join(lines)


def cmd_proofs(args) -> int:
    names = args.only or None
    if names:
        unknown = [n for n in names if n not in LEMMA_NAMES]
        if unknown:
            print(
                f"sail proofs: error: unknown lemma {unknown[0]!r}; known lemmas: {', '.join(LEMMA_NAMES)}",
                file=sys.stderr,
            )
            return 2
    start = time.perf_counter()
    rows = run(names)
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
    p.add_argument("--only", metavar="NAME", action="append", help="run only this lemma (repeatable)")
    p.set_defaults(func=cmd_proofs)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m proofs.runner")
    add_proofs_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["proofs", *(sys.argv[1:] if argv is None else argv)])
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
