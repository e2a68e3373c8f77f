"""Markdown tables of a finished optimiser study, from ``results.json``'s ``analysis``.

:func:`tables` returns each table by name; ``docs/em_study.md`` holds them between the markers
``<!-- table:NAME -->`` and ``<!-- /table -->``, :func:`fill` rewrites those blocks from a study and
:func:`stale_blocks` names the blocks that differ from it (a test keeps the docs' figures equal to
the committed study's). ``python -m sail.em.report RESULTS DOC`` rewrites the blocks of DOC.

Every figure is rate (a), and in the headline tables (b) beside it, with its 95 % two-way
cluster-bootstrap interval; ``*`` marks a difference whose interval excludes 0.
"""

from __future__ import annotations

import json
import re
import statistics
import sys
from pathlib import Path

from sail.em.analysis import CONDITION_KEYS, condition, curve_name, format_difference, format_estimate, in_condition, is_coherent

MARKER = re.compile(r"(<!-- table:(?P<name>[a-z_]+) -->\n)(?P<body>.*?)(<!-- /table -->)", re.S)


def _negated(e: dict) -> dict:
    """A difference g − h as h − g (its interval mirrored)."""
    return {**e, "value": None if e["value"] is None else -e["value"], "ci": None if e.get("ci") is None else [-e["ci"][1], -e["ci"][0]]}


def _row(cells) -> str:
    return "| " + " | ".join(cells) + " |"


def _table(header, rows) -> str:
    return "\n".join([_row(header), _row(["---"] * len(header)), *(_row(r) for r in rows)])


def spread_table(analysis: dict) -> str:
    """The optimisers at the three matched-loss levels of ``matched_spread``: rate (a) of each, and
    max/min of both rates."""
    s = analysis["matched_spread"]
    rows = []
    for level in s["levels"]:
        a, b = level["a"], level["b"]
        rows.append([f"{level['final_train_loss']:.3f}", *(format_estimate(a["rates"][c]) for c in s["curves"]),
                     f"{format_estimate(a['max_over_min'], digits=2)} ({a['highest']}/{a['lowest']})", format_estimate(a["without_lowest"], digits=2),
                     f"{format_estimate(b['max_over_min'], digits=2)} ({b['highest']}/{b['lowest']})", format_estimate(b["without_lowest"], digits=2)])
    return _table(["final loss", *s["curves"], "max/min (a)", "(a) without the lowest", "max/min (b)", "(b) without the lowest"], rows)


def _baseline_block(analysis: dict) -> dict:
    where = analysis["baseline"]["condition"] or {}
    for block in analysis["matched_loss"]:
        if all(block.get(k) == v for k, v in where.items() if k in block):
            return block
    raise ValueError("no matched-loss block in the baseline condition")


def pairs_table(analysis: dict, reference: str = "adamw") -> str:
    """Every curve of the baseline condition against ``reference`` at matched loss."""
    block = _baseline_block(analysis)
    rows = []
    for pair in block["pairs"]:
        g, h = pair["optimizers"]
        if reference not in (g, h) or not pair["levels"]:
            continue
        other = h if g == reference else g
        cells = []
        for level in pair["levels"]:
            diff = {d: level[d]["difference"] if g != reference else _negated(level[d]["difference"]) for d in ("a", "b")}  # other − reference
            cells.append(f"{level['final_train_loss']:.3f}: {format_estimate(level['a'][other])} ({format_difference(diff['a'])}); (b) {format_difference(diff['b'])}")
        rows.append([f"`{other}`", *cells])
    return _table(["curve", f"at ¼ of the overlap: rate (a) (minus {reference}); (b) minus {reference}", "at ½", "at ¾"], rows)


def peaks_table(analysis: dict) -> str:
    """Per curve of the baseline condition: its coherent cell with the highest rate, and the runs
    left out below the coherence floor."""
    block = _baseline_block(analysis)
    left_out: dict[str, int] = {}
    for r in analysis["incoherent_runs"]:
        if condition(r) == tuple(block[k] for k in CONDITION_KEYS):
            left_out[curve_name(r)] = left_out.get(curve_name(r), 0) + 1
    rows = []
    for name, c in block["curves"].items():
        j = max(range(len(c["a"])), key=lambda i: -1 if c["a"][i] is None else c["a"][i])
        rows.append([f"`{name}`", f"{c['a'][j]:.3f}", f"{c['lr'][j]:g}", f"{c['final_train_loss'][j]:.3f}", f"{c['coherence'][j]:.0f}", str(left_out.get(name, 0))])
    return _table(["curve", "highest cell rate", "its lr", "its final loss", "its coherence", "runs below the floor"], rows)


def across_table(analysis: dict, across: str, relative: bool = False) -> str:
    """One axis compared within each optimiser at matched loss (``relative``: the organisms at
    matched L/L̄₀): each variant minus the reference curve (λ = 0, rank 8 α/r, the default organism),
    which :func:`sail.em.analysis.matched_loss` puts first in every pair."""
    blocks = analysis["matched_relative_loss"]["organism"] if relative else analysis["matched_loss_across"][across]
    rows = []
    for block in blocks:
        for pair in block["pairs"]:
            if pair["levels"]:
                variant = pair["optimizers"][1]
                rows.append([f"`{block['curve']}` {variant}",
                             *(f"{lv['final_train_loss']:.3f}: {format_difference(_negated(lv['a']['difference']))}" for lv in pair["levels"])])
    return _table(["variant (minus the reference)", "at ¼ of the overlap", "at ½", "at ¾"], rows)


def penalty_cost_table(analysis: dict, curve: str = "adamw") -> str:
    """The penalty at a fixed rate against λ = 0 for one optimiser: loss changes and rate (a)."""
    rows = []
    for c in analysis["penalty_cost"]:
        if c["curve"] != curve:
            continue
        change = c["train_loss_change"]
        rows.append([c["penalty_kind"], f"{c['spectral_coef']:g}", f"{c['lr']:g}", f"{100 * change['value']:+.1f} %",
                     format_estimate(c["heldout_loss_change"], signed=True), f"{c['a']['reference']['value']:.3f}", format_estimate(c["a"]["penalised"]),
                     format_difference(c["a"]["difference"])])
    return _table(["kind", "λ", "lr", "final train loss", "held-out loss", "(a) at λ = 0", "(a) penalised", "difference"], rows)


FLATNESS_BAND = (0.40, 0.47)
"""The final-loss band of :func:`flatness_table`: where every optimiser has coherent runs."""


def flatness_table(results: dict, band: tuple[float, float] = FLATNESS_BAND) -> str:
    """Per curve of the baseline condition, over its coherent runs whose final loss lies in
    ``band``: the median adapter flatness (participation ratio / rank, 1 = flat) and the median
    rate (a)."""
    a = results["analysis"]
    where, floor = a["baseline"]["condition"] or {}, a["coherence_floor"]
    rows: dict[str, list] = {}
    for r in results["runs"]:
        if not (is_coherent(r, floor) and in_condition(r, where) and band[0] <= r["final_train_loss"] <= band[1]):
            continue
        if r.get("flatness") is not None and r.get("misalignment_rate") is not None:
            rows.setdefault(curve_name(r), []).append((r["flatness"], r["misalignment_rate"]))
    out = [[f"`{name}`", str(len(v)), f"{statistics.median(f for f, _ in v):.2f}", f"{statistics.median(m for _, m in v):.3f}"] for name, v in rows.items()]
    return _table(["curve", f"runs with final loss in [{band[0]:.2f}, {band[1]:.2f}]", "median flatness (PR / r)", "median rate (a)"], out)


def tables(results: dict) -> dict[str, str]:
    """Every table of ``docs/em_study.md``'s optimiser study, by marker name."""
    a = results["analysis"]
    return {
        "spread": spread_table(a),
        "pairs": pairs_table(a),
        "peaks": peaks_table(a),
        "penalty": across_table(a, "penalty"),
        "penalty_cost_adamw": penalty_cost_table(a, "adamw"),
        "penalty_cost_muon": penalty_cost_table(a, "muon"),
        "lora": across_table(a, "lora"),
        "organism": across_table(a, "organism"),
        "organism_relative": across_table(a, "organism", relative=True),
        "flatness": flatness_table(results),
    }


def fill(text: str, made: dict[str, str]) -> str:
    """``text`` with every marked block replaced by its table (unknown names left alone)."""
    return MARKER.sub(lambda m: m.group(1) + made[m["name"]] + "\n" + m.group(4) if m["name"] in made else m.group(0), text)


def stale_blocks(text: str, made: dict[str, str]) -> list[str]:
    """The names of the marked blocks of ``text`` that differ from ``made``."""
    return [m["name"] for m in MARKER.finditer(text) if m["name"] in made and m["body"] != made[m["name"]] + "\n"]


def main(argv: list[str] | None = None) -> int:
    results_path, doc_path = argv if argv is not None else sys.argv[1:]
    made = tables(json.loads(Path(results_path).read_text()))
    doc = Path(doc_path)
    doc.write_text(fill(doc.read_text(), made))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
