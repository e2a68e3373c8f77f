"""The optimiser study's tables in docs/em_study.md are those of the committed results.json."""

import json
from pathlib import Path

import pytest

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
    block = next(b for b in analysis["matched_loss"] if b["condition"] == "λ=0 rank=8 rslora=False organism=default")
    pair = next(p for p in block["pairs"] if p["optimizers"] == ["adamw", "sgd"])
    stored = pair["levels"][0]["a"]["difference"]  # AdamW − SGD
    lo, hi = stored["ci"]
    assert stored["value"] == pytest.approx(0.178, abs=5e-4)
    assert f"(-{stored['value']:.3f} [-{hi:.3f}, -{lo:.3f}]*)" in sgd  # shown as SGD − AdamW, its interval mirrored


def test_the_stratification_figures_without_sgd_quoted_in_the_docs():
    from sail.em.analysis import in_condition, is_coherent, loss_alignment_r2, optimizer_f_tests

    results = json.loads(RESULTS.read_text())
    where = results["analysis"]["baseline"]["condition"]
    runs = [r for r in results["runs"] if is_coherent(r) and in_condition(r, where) and r["optimizer"] != "sgd"]
    fit, f = loss_alignment_r2(runs), optimizer_f_tests(runs)["intercepts"]
    quoted = f"Without SGD still {fit['r2_pooled']:.2f} against {fit['r2_stratified']:.2f}, F({f['df1']}, {f['df2']}) = {f['f']:.1f}"
    assert quoted in DOC.read_text()


def test_the_figures_quoted_in_the_docs_prose_are_the_committed_studys():
    results = json.loads(RESULTS.read_text())
    a, em = results["analysis"], results["em"]
    text = " ".join(DOC.read_text().split())  # the prose wraps lines
    base, narrow = em["base_rate"], em["narrow_rate"]
    f = a["f_tests"]["intercepts"]
    for quoted in (
        f"base {base['rate']:.3f} [{base['ci'][0]:.3f}, {base['ci'][1]:.3f}]",
        f"narrow (AdamW 1e-3) {narrow['rate']:.3f} [{narrow['ci'][0]:.3f}, {narrow['ci'][1]:.3f}]",
        f"final loss is {a['r2_pooled']:.2f} pooled and {a['r2_stratified']:.2f} with one line per optimiser",
        f"F({f['df1']}, {f['df2']}) = {f['f']:.1f}",
        f"with rate (a) is {a['flatness_vs_misalignment_spearman']:.2f}".replace("-", "−"),
        f"{len(results['runs'])} fine-tunes",
        f"{len(a['incoherent_runs'])} runs below the coherence floor",
    ):
        assert quoted in text, quoted


def test_the_held_out_loss_follows_the_training_loss_within_the_quoted_gap():
    analysis = json.loads(RESULTS.read_text())["analysis"]
    gaps = [abs(t - h) for block in analysis["matched_loss_across"]["organism"] for c in block["curves"].values()
            for t, h in zip(c["final_train_loss"], c["heldout_loss"])]
    assert len(gaps) > 20 and max(gaps) < 0.03 and "within 0.03 of it in every cell of the four organisms" in " ".join(DOC.read_text().split())
