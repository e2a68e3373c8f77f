"""`sail proofs --module/--path/--no-builtin`: a user's own lemma modules run through the same
checks as the built-in ones; the worked example of docs/theory.md is run as printed there; every
input error is one line with exit status 2; and the toolkit reference's examples hold."""

from __future__ import annotations

import doctest
import importlib
import json
import math
import re
import subprocess
import sys
import textwrap
from fractions import Fraction
from pathlib import Path

import pytest
import sympy as sp
from hypothesis import given, settings
from hypothesis import strategies as st

from proofs.registry import LemmaModuleError
from proofs.runner import main as runner_main
from proofs.tools.exact import enclosure
from sail.cli import main

REPO = Path(__file__).resolve().parents[1]
THEORY = REPO / "docs" / "theory.md"
EXAMPLE_FILE = REPO / "docs" / "examples" / "lemmas" / "label_smoothing.py"
CLAIM = "SMOOTHED_LABEL = p + eps * (1 - 2 * p)"
BROKEN_CLAIM = "SMOOTHED_LABEL = p + eps * (1 - 3 * p)"  # one token changed


def marked_block(text: str, marker: str) -> str:
    """The fenced block between ``<!-- MARKER: begin -->`` and ``<!-- MARKER: end -->``."""
    match = re.search(rf"<!-- {marker}: begin -->\n```[a-z]*\n(.*?)```\n<!-- {marker}: end -->", text, re.DOTALL)
    assert match, f"no block marked {marker!r} in docs/theory.md"
    return match.group(1)


def docs_example() -> str:
    return marked_block(THEORY.read_text(), "lemma example")


def lemma_source(name: str = "tiny_square", control: str = '"cross term dropped"', negative="lambda: check(0)",
                 cross="lambda: 0.0", prove="check", extra: str = "") -> str:
    """A small, fast lemma: (a + b)² = a² + 2ab + b², control with the cross term dropped."""
    return textwrap.dedent(
        f"""
        import sympy as sp
        from proofs.tools.identity import check_zero
        from proofs.tools.lemma import Lemma
        {extra}
        a, b = sp.symbols("a b", real=True)

        def check(cross=2):
            claim = a**2 + cross * a * b + b**2
            return check_zero(sp.expand((a + b) ** 2 - claim), "(a+b)²", witnesses=({{a: 1, b: 1}},))

        LEMMA = Lemma(name={name!r}, statement="(a+b)² = a² + 2ab + b²", prove={prove},
                      negative_control={negative}, cross_check={cross}, control={control})
        """
    )


@pytest.fixture
def restore_modules():
    """Forget the modules a test imports, and check that sail proofs leaves ``sys.path`` as it
    found it; ``restore_modules(directory)`` puts a directory on the path for ``--module``."""
    before, path, added = set(sys.modules), list(sys.path), []

    def add_to_path(directory) -> None:
        sys.path.insert(0, str(directory))
        added.append(str(directory))
        importlib.invalidate_caches()

    yield add_to_path
    for directory in added:
        sys.path.remove(directory)
    for name in set(sys.modules) - before:
        if name.startswith(("_sail_user_lemma_", "user_mod_", "helpers")):
            del sys.modules[name]
    assert sys.path == path, "sail proofs left a directory on sys.path"


def write(directory: Path, name: str, text: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    path.write_text(text)
    importlib.invalidate_caches()
    return path


def run_cli(capsys, *argv) -> tuple[int, str, str]:
    code = main(["proofs", *map(str, argv)])
    out, err = capsys.readouterr()
    return code, out, err


# --- the worked example of docs/theory.md ----------------------------------------------------


def test_docs_example_is_the_shipped_file():
    assert docs_example() == EXAMPLE_FILE.read_text()
    assert docs_example().count(CLAIM) == 1


def test_docs_example_proves_rejects_its_control_and_agrees(tmp_path, capsys, restore_modules):
    write(tmp_path, "label_smoothing.py", docs_example())
    code, out, err = run_cli(capsys, "--path", tmp_path, "--no-builtin", "--json")
    assert code == 0, out
    assert err == ""
    (row,) = json.loads(out)["lemmas"]
    assert row["lemma"] == "label_smoothing"
    assert row["source"] == str(tmp_path / "label_smoothing.py")
    assert row["status"] == "proved", row["proof_detail"]
    assert row["negative_control"] == "rejected"
    assert "counterexample" in row["control_detail"]  # refuted by a certified witness, not just "not proved"
    assert 0.0 <= row["cross_check_error"] <= row["tolerance"] == 1e-9


def test_docs_example_with_its_claim_broken_fails(tmp_path, capsys, restore_modules):
    write(tmp_path, "label_smoothing.py", docs_example().replace(CLAIM, BROKEN_CLAIM))
    code, out, err = run_cli(capsys, "--path", tmp_path, "--no-builtin")
    assert code == 1
    assert "Traceback" not in out + err
    row = out.splitlines()[2]
    assert row.startswith("label_smoothing") and " failed " in row and "> 1e-09" in row
    assert "label_smoothing: status failed — ℓ_ε(Δ;p) = ℓ(Δ;p_ε): counterexample (witness 0)" in out


def test_docs_example_with_its_control_made_right_fails(tmp_path, capsys, restore_modules):
    text = docs_example().replace("OTHER_CONVENTION = (1 - eps) * p + eps / 2", "OTHER_CONVENTION = SMOOTHED_LABEL")
    write(tmp_path, "label_smoothing.py", text)
    code, out, _ = run_cli(capsys, "--path", tmp_path, "--no-builtin")
    assert code == 1
    assert "ACCEPTED" in out.splitlines()[2]


def _normalise(table: str) -> str:
    """The table without the run's timings, columns compared word by word."""
    table = re.sub(r"\d+\.\d+ s\b", "<time>", table)
    return "\n".join(" ".join(line.split()) for line in table.strip().splitlines())


def test_docs_output_is_what_the_command_prints(tmp_path):
    """The command block of docs/theory.md, run for real (a subprocess of the `sail` entry point)."""
    block = marked_block(THEORY.read_text(), "lemma example output")
    command, printed = block.split("\n", 1)
    assert command == "$ sail proofs --path docs/examples/lemmas --no-builtin"
    write(tmp_path, "label_smoothing.py", docs_example())
    result = subprocess.run(
        [sys.executable, "-m", "sail.cli", "proofs", "--path", str(tmp_path), "--no-builtin"],
        capture_output=True, text=True, cwd=REPO, timeout=120, check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    assert _normalise(result.stdout) == _normalise(printed)


# --- user lemmas beside the built-in ones ---------------------------------------------------


def test_module_runs_after_the_builtin_lemmas_and_only_selects(tmp_path, capsys, restore_modules):
    restore_modules(tmp_path)
    write(tmp_path, "user_mod_a.py", lemma_source("user_square"))
    code, out, _ = run_cli(capsys, "--module", "user_mod_a", "--only", "pair_derivative", "--only", "user_square", "--json")
    assert code == 0
    rows = json.loads(out)["lemmas"]
    assert [(r["lemma"], r["source"]) for r in rows] == [
        ("pair_derivative", "proofs.pair_derivative"),
        ("user_square", "--module user_mod_a"),
    ]
    assert rows[1]["status"] == "proved" and rows[1]["negative_control"] == "rejected"


def test_path_skips_helpers_with_a_note_and_lets_lemmas_import_them(tmp_path, capsys, restore_modules):
    write(tmp_path, "helpers.py", "TWO = 2\n")
    write(tmp_path, "_private.py", "raise RuntimeError('never imported')\n")
    write(tmp_path, "square.py", lemma_source("sibling_square", extra="import helpers", prove="lambda: check(helpers.TWO)"))
    code, out, err = run_cli(capsys, "--path", tmp_path, "--no-builtin")
    assert code == 0, out
    assert err.strip() == f"sail proofs: note: skipped (no LEMMA): {tmp_path / 'helpers.py'}"
    assert out.splitlines()[2].startswith("sibling_square")


def test_files_of_one_name_in_two_directories_are_distinct_modules(tmp_path, capsys, restore_modules):
    write(tmp_path / "one", "lemma.py", lemma_source("first"))
    write(tmp_path / "two", "lemma.py", lemma_source("second"))
    code, out, _ = run_cli(capsys, "--path", tmp_path / "one", "--path", tmp_path / "two", "--no-builtin", "--json")
    assert code == 0
    assert [r["lemma"] for r in json.loads(out)["lemmas"]] == ["first", "second"]


def test_no_builtin_allows_a_builtin_name(tmp_path, capsys, restore_modules):
    write(tmp_path, "mine.py", lemma_source("pair_derivative"))
    code, out, _ = run_cli(capsys, "--path", tmp_path, "--no-builtin", "--json")
    assert code == 0
    assert [r["source"] for r in json.loads(out)["lemmas"]] == [str(tmp_path / "mine.py")]


# --- a user lemma that fails: exit 1, the table, no traceback --------------------------------


@pytest.mark.parametrize(
    "kwargs, column, shown",
    [
        ({"prove": "lambda: check(3)"}, "status", "failed"),
        ({"negative": "lambda: check(2)"}, "negative control", "ACCEPTED"),
        ({"cross": "lambda: 0.5"}, "cross-check", "5.0e-01 > 1e-09"),
        ({"cross": "lambda: float('nan')"}, "cross-check", "inf > 1e-09"),
        ({"prove": "lambda: 1 / 0"}, "status", "failed"),
        ({"prove": "lambda: True"}, "status", "failed"),
        ({"negative": "lambda: [][0]"}, "negative control", "ERROR"),
        ({"cross": "lambda: 'small'"}, "cross-check", "inf > 1e-09"),
    ],
    ids=["proof-fails", "control-accepted", "cross-check-over", "cross-check-nan", "prove-raises",
         "prove-not-a-verdict", "control-raises", "cross-check-not-a-number"],
)
def test_a_bad_user_lemma_exits_1_with_the_table(tmp_path, capsys, restore_modules, kwargs, column, shown):
    write(tmp_path, "bad.py", lemma_source("bad_lemma", **kwargs))
    code, out, err = run_cli(capsys, "--path", tmp_path, "--no-builtin")
    assert code == 1
    assert err == "" and "Traceback" not in out
    header, _, row = out.splitlines()[:3]
    start = header.index(column)
    assert row[start:].startswith(shown), (row, column)
    assert "bad_lemma: status" in out  # the reasons under the table


def test_a_raising_check_keeps_its_traceback_in_the_json_only(tmp_path, capsys, restore_modules):
    write(tmp_path, "bad.py", lemma_source("raises", prove="lambda: 1 / 0"))
    code, out, _ = run_cli(capsys, "--path", tmp_path, "--no-builtin")
    assert code == 1
    assert "bad: status" not in out and "raises: status failed — ZeroDivisionError: division by zero" in out
    assert "--json gives its traceback" in out
    code, out, _ = run_cli(capsys, "--path", tmp_path, "--no-builtin", "--json")
    (row,) = json.loads(out)["lemmas"]
    assert code == 1 and row["proof_detail"].startswith("ZeroDivisionError: division by zero\nTraceback")


# --- input errors: exit 2, one line naming the module, no traceback --------------------------

MODULE_ERRORS = {
    "missing": (None, "cannot be imported: ModuleNotFoundError: No module named"),
    "syntax-error": ("def broken(:\n", "cannot be imported: SyntaxError:"),
    "raises-on-import": ("raise RuntimeError('no GPU here')\n", "cannot be imported: RuntimeError: no GPU here"),
    "exits-on-import": ("import sys\nsys.exit(3)\n", "cannot be imported: SystemExit: 3"),
    "no-lemma": ("X = 1\n", "exports no LEMMA"),
    "not-a-lemma": ("LEMMA = {'name': 'x'}\n", "LEMMA is a dict, not a proofs.tools.lemma.Lemma"),
    "control-none": (lemma_source("c", negative="None"), "lemma 'c' has no negative control (negative_control is None)"),
    "control-empty": (lemma_source("c", control='"  "'), "lemma 'c' has no negative control (control, which describes it, is empty)"),
    "blank-name": (lemma_source("two words"), "LEMMA.name must be a non-empty string without blanks"),
    "prove-not-callable": (lemma_source("c", prove="True"), "lemma 'c': prove is not callable"),
}


def assert_one_line_error(code: int, out: str, err: str, *needles: str) -> None:
    assert code == 2
    assert out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("sail proofs: error: ")
    assert "Traceback" not in err
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])


@pytest.mark.parametrize("case", MODULE_ERRORS, ids=list(MODULE_ERRORS))
def test_module_errors_are_one_line_exit_2(tmp_path, capsys, restore_modules, case):
    text, problem = MODULE_ERRORS[case]
    name = f"user_mod_{case.replace('-', '_')}"
    restore_modules(tmp_path)
    if text is not None:
        write(tmp_path, f"{name}.py", text)
    assert_one_line_error(*run_cli(capsys, "--module", name), f"--module {name}: {problem}")


@pytest.mark.parametrize("case", [c for c in MODULE_ERRORS if c not in ("missing", "no-lemma")])
def test_path_errors_name_the_file(tmp_path, capsys, restore_modules, case):
    text, problem = MODULE_ERRORS[case]
    write(tmp_path, "good.py", lemma_source("good"))
    path = write(tmp_path, "wrong.py", text)
    assert_one_line_error(*run_cli(capsys, "--path", tmp_path, "--no-builtin"), f"{path}: {problem}")


def test_path_that_is_not_a_directory(tmp_path, capsys):
    missing = tmp_path / "nowhere"
    assert_one_line_error(*run_cli(capsys, "--path", missing), f"--path {missing}: not a directory")
    file = write(tmp_path, "single.py", lemma_source())
    assert_one_line_error(*run_cli(capsys, "--path", file), f"--path {file}: not a directory")


def test_path_without_any_lemma(tmp_path, capsys, restore_modules):
    assert_one_line_error(*run_cli(capsys, "--path", tmp_path), "no module exports LEMMA (looked at no *.py file)")
    write(tmp_path, "helpers.py", "X = 1\n")
    assert_one_line_error(*run_cli(capsys, "--path", tmp_path), "no module exports LEMMA (looked at helpers.py)")


def test_two_lemmas_of_one_name(tmp_path, capsys, restore_modules):
    write(tmp_path / "d", "a.py", lemma_source("same"))
    write(tmp_path / "d", "b.py", lemma_source("same"))
    assert_one_line_error(
        *run_cli(capsys, "--path", tmp_path / "d", "--no-builtin"),
        f"{tmp_path / 'd' / 'b.py'}: lemma name 'same' is already defined by {tmp_path / 'd' / 'a.py'}",
    )
    write(tmp_path / "e", "mine.py", lemma_source("fisher_identity"))
    assert_one_line_error(
        *run_cli(capsys, "--path", tmp_path / "e"), "lemma name 'fisher_identity' is already defined by proofs.fisher_identity"
    )
    restore_modules(tmp_path)
    write(tmp_path, "user_mod_twice.py", lemma_source("twice"))
    assert_one_line_error(
        *run_cli(capsys, "--module", "user_mod_twice", "--module", "user_mod_twice", "--no-builtin"),
        "lemma name 'twice' is already defined by --module user_mod_twice",
    )


def test_no_builtin_alone_and_unknown_only(tmp_path, capsys, restore_modules):
    assert_one_line_error(*run_cli(capsys, "--no-builtin"), "--no-builtin: leaves nothing to run")
    write(tmp_path, "mine.py", lemma_source("mine"))
    assert_one_line_error(
        *run_cli(capsys, "--path", tmp_path, "--no-builtin", "--only", "pair_derivative"),
        "--only: unknown lemma 'pair_derivative'; known lemmas: mine",
    )


def test_debug_shows_the_traceback_instead(tmp_path, capsys, monkeypatch):
    with pytest.raises(LemmaModuleError, match="--module user_mod_nowhere: cannot be imported") as info:
        main(["--debug", "proofs", "--module", "user_mod_nowhere"])
    assert isinstance(info.value.__cause__, ModuleNotFoundError)
    monkeypatch.setenv("SAIL_DEBUG", "1")
    with pytest.raises(LemmaModuleError, match="not a directory"):
        main(["proofs", "--path", str(tmp_path / "nowhere")])


def test_python_m_proofs_runner_reports_input_errors_too(capsys):
    assert runner_main(["--module", "user_mod_nowhere"]) == 2
    assert_one_line_error(2, *capsys.readouterr(), "--module user_mod_nowhere: cannot be imported")


def test_help_documents_the_options(capsys):
    with pytest.raises(SystemExit):
        main(["proofs", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    for option in ("--module PKG.MOD", "--path DIR", "--no-builtin", "--only NAME"):
        assert option in text


# --- the toolkit reference ------------------------------------------------------------------


def test_toolkit_reference_examples_hold():
    """Every `>>>` example of docs/proofs_api.md prints what the page shows."""
    result = doctest.testfile(str(REPO / "docs" / "proofs_api.md"), module_relative=False, verbose=False)
    assert result.attempted >= 15 and result.failed == 0


@settings(max_examples=200, deadline=None)
@given(st.integers(-10**30, 10**30), st.integers(1, 10**30))
def test_enclosure_contains_the_exact_rational(n, d):
    lo, hi = enclosure(sp.Rational(n, d))
    assert Fraction(lo) <= Fraction(n, d) <= Fraction(hi)


@settings(max_examples=200, deadline=None)
@given(st.integers(2, 10**12).filter(lambda n: math.isqrt(n) ** 2 != n))
def test_enclosure_of_a_square_root_brackets_it_exactly(n):
    lo, hi = enclosure(sp.sqrt(n))
    assert 0 < lo <= hi
    assert Fraction(lo) ** 2 <= n <= Fraction(hi) ** 2
