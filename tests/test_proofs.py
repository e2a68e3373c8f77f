"""proofs/: every lemma proves, every negative control is rejected, cross-checks agree with sail/,
docs/theory.md cites only existing lemmas, and `sail proofs` reports and exits correctly."""

from __future__ import annotations

import dataclasses
import importlib
import json
import re
from pathlib import Path

import pytest

from proofs import LEMMA_NAMES, load_lemma
from proofs.tools.lemma import Verdict
from sail.cli import main

REPO = Path(__file__).resolve().parents[1]
CITATION = re.compile(r"`proofs/([A-Za-z0-9_]+)\.py`")


@pytest.mark.parametrize("name", LEMMA_NAMES)
def test_lemma_is_well_formed(name):
    lemma = load_lemma(name)
    assert lemma.name == name
    assert (REPO / "proofs" / f"{name}.py").is_file()
    assert lemma.statement and "\n" not in lemma.statement
    assert lemma.control and lemma.tolerance > 0


@pytest.mark.parametrize("name", LEMMA_NAMES)
def test_lemma_proves(name):
    verdict = load_lemma(name).prove()
    assert isinstance(verdict, Verdict)
    assert verdict.holds, verdict.detail


@pytest.mark.parametrize("name", LEMMA_NAMES)
def test_negative_control_is_rejected(name):
    verdict = load_lemma(name).negative_control()
    assert isinstance(verdict, Verdict)
    assert not verdict.holds, f"negative control ACCEPTED: {verdict.detail}"


@pytest.mark.parametrize("name", LEMMA_NAMES)
def test_cross_check_agrees_with_library(name):
    lemma = load_lemma(name)
    error = lemma.cross_check()
    assert 0.0 <= error <= lemma.tolerance


def test_every_lemma_cited_in_theory_doc_exists():
    text = (REPO / "docs" / "theory.md").read_text()
    cited = set(CITATION.findall(text))
    assert cited, "docs/theory.md cites no lemma"
    missing = sorted(cited - set(LEMMA_NAMES))
    assert not missing, f"cited but not in proofs/: {missing}"
    for name in cited:
        assert (REPO / "proofs" / f"{name}.py").is_file()
        assert importlib.import_module(f"proofs.{name}").LEMMA.name == name


def test_every_lemma_is_cited_in_theory_doc():
    cited = set(CITATION.findall((REPO / "docs" / "theory.md").read_text()))
    assert set(LEMMA_NAMES) <= cited, sorted(set(LEMMA_NAMES) - cited)


def test_cli_json_runs_everything_green(capsys):
    assert main(["proofs", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["ok"] is True
    rows = out["lemmas"]
    assert [r["lemma"] for r in rows] == list(LEMMA_NAMES)
    for r in rows:
        assert r["status"] == "proved", r
        assert r["negative_control"] == "rejected", r
        assert r["cross_check_error"] <= r["tolerance"], r
    assert out["total_time_s"] < 120


def test_cli_table_has_the_documented_columns(capsys):
    assert main(["proofs", "--only", "pair_derivative"]) == 0
    header = capsys.readouterr().out.splitlines()[0]
    for column in ("lemma", "statement", "status", "negative control", "cross-check", "time"):
        assert column in header


def test_cli_unknown_lemma_is_a_clear_error(capsys):
    assert main(["proofs", "--only", "no_such_lemma"]) == 2
    err = capsys.readouterr().err
    assert "unknown lemma 'no_such_lemma'" in err
    assert "pair_derivative" in err  # lists the known names


def test_cli_fails_when_a_negative_control_is_accepted(monkeypatch, capsys):
    module = importlib.import_module("proofs.pair_derivative")
    broken = dataclasses.replace(module.LEMMA, negative_control=lambda: Verdict(True, "checker accepts anything"))
    monkeypatch.setattr(module, "LEMMA", broken)
    assert main(["proofs", "--only", "pair_derivative"]) == 1
    assert "ACCEPTED" in capsys.readouterr().out


def test_cli_fails_when_a_proof_fails(monkeypatch, capsys):
    module = importlib.import_module("proofs.pair_derivative")
    broken = dataclasses.replace(module.LEMMA, prove=lambda: Verdict(False, "deliberately broken"))
    monkeypatch.setattr(module, "LEMMA", broken)
    assert main(["proofs", "--json", "--only", "pair_derivative"]) == 1
    row = json.loads(capsys.readouterr().out)["lemmas"][0]
    assert row["status"] == "failed" and row["ok"] is False
