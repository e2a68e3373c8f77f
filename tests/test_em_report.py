"""The optimiser study's tables in docs/em_study.md are those of the committed results.json."""

import json
from pathlib import Path

from sail.em import report

ROOT = Path(__file__).parents[1]
RESULTS = ROOT / "experiments" / "em" / "results" / "optimizers" / "results.json"
DOC = ROOT / "docs" / "em_study.md"


def test_the_docs_tables_are_the_committed_studys():
    made = report.tables(json.loads(RESULTS.read_text()))
    text = DOC.read_text()
    assert {m["name"] for m in report.MARKER.finditer(text)} == set(made)
    assert report.stale_blocks(text, made) == []  # rewrite with: python -m sail.em.report RESULTS docs/em_study.md


def test_fill_rewrites_only_the_marked_blocks_and_stale_blocks_names_them():
    text = "intro\n<!-- table:spread -->\nold\n<!-- /table -->\nmiddle\n<!-- table:other -->\nkeep\n<!-- /table -->\n"
    made = {"spread": "| a |\n| --- |\n| 1 |"}
    assert report.stale_blocks(text, made) == ["spread"]
    filled = report.fill(text, made)
    assert filled == "intro\n<!-- table:spread -->\n| a |\n| --- |\n| 1 |\n<!-- /table -->\nmiddle\n<!-- table:other -->\nkeep\n<!-- /table -->\n"
    assert report.stale_blocks(filled, made) == [] and report.fill(filled, made) == filled


def test_differences_are_always_the_variant_minus_the_reference():
    analysis = json.loads(RESULTS.read_text())["analysis"]
    sgd = next(line for line in report.pairs_table(analysis).splitlines() if line.startswith("| `sgd`"))
    assert "(-0.178" in sgd  # SGD is below AdamW: a negative difference, its interval mirrored
    block = next(b for b in analysis["matched_loss"] if b["condition"] == "λ=0 rank=8 rslora=False organism=default")
    pair = next(p for p in block["pairs"] if p["optimizers"] == ["adamw", "sgd"])
    assert pair["levels"][0]["a"]["difference"]["value"] > 0  # stored as AdamW − SGD
