"""Strict JSON everywhere (sail.io): a NaN or ±∞ is written as null with a flag next to it, never as
a bare NaN/Infinity, and reads back as itself; a run whose metric is not finite writes files that
a strict parser accepts."""

import json
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from sail.io import dumps_strict, loads_strict, restore_non_finite, write_json_atomically
from sail.train.config import load_config
from sail.train.trainer import Trainer
from tiny_runs import run_overrides


def strict_loads(text: str):
    """``json.loads`` that refuses the non-standard constants NaN, Infinity and -Infinity."""
    return json.loads(text, parse_constant=lambda c: (_ for _ in ()).throw(ValueError(c)))


def same(a, b) -> bool:
    """Equal, with NaN equal to NaN."""
    if isinstance(a, float) and isinstance(b, float):
        return a == b or (math.isnan(a) and math.isnan(b))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    return type(a) is type(b) and a == b


def non_finite_count(data) -> int:
    if isinstance(data, dict):
        return sum(non_finite_count(v) for v in data.values())
    if isinstance(data, list):
        return sum(non_finite_count(v) for v in data)
    return int(isinstance(data, float) and not math.isfinite(data))


def flag_count(data) -> int:
    if isinstance(data, list):
        return sum(flag_count(v) for v in data)
    if not isinstance(data, dict):
        return 0
    flags = sum(1 if isinstance(v, str) else len(v) for k, v in data.items() if k.endswith("_nonfinite"))
    return flags + sum(flag_count(v) for k, v in data.items() if not k.endswith("_nonfinite"))


keys = st.text("abxy_", max_size=4)  # "_nonfinite" cannot be spelled: no key collides with a flag
leaves = st.floats(allow_nan=True, allow_infinity=True) | st.integers() | st.booleans() | st.none() | st.text(max_size=3)
values = st.recursive(leaves, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(keys, inner, max_size=4), max_leaves=24)


@settings(max_examples=300)
@given(st.dictionaries(keys, values, max_size=5))
def test_any_nested_data_round_trips_through_strict_json(data):
    text = dumps_strict(data)
    parsed = strict_loads(text)  # no bare NaN or Infinity anywhere
    assert flag_count(parsed) == non_finite_count(data)  # every null that was a non-finite number is flagged
    assert same(restore_non_finite(parsed), data)
    assert same(loads_strict(text), data)


def test_a_non_finite_number_becomes_null_and_a_flag():
    text = dumps_strict({"loss": math.nan, "up": math.inf, "down": -math.inf, "ok": 1.5, "curve": [[1.0, math.nan], [math.inf]]})
    assert strict_loads(text) == {
        "loss": None, "loss_nonfinite": "nan", "up": None, "up_nonfinite": "inf", "down": None, "down_nonfinite": "-inf",
        "ok": 1.5, "curve": [[1.0, None], [None]], "curve_nonfinite": {"0.1": "nan", "1.0": "inf"},
    }


def test_numpy_and_torch_values_are_converted_and_flagged():
    data = {
        "array": np.array([1.0, np.nan]), "scalar": np.float32("inf"), "count": np.int64(3), "yes": np.bool_(True),
        "tensor": torch.tensor([[0.5, -math.inf]]), "item": torch.tensor(math.nan), "pair": (np.float64(2.0), math.nan),
    }
    assert strict_loads(dumps_strict(data)) == {
        "array": [1.0, None], "array_nonfinite": {"1": "nan"}, "scalar": None, "scalar_nonfinite": "inf", "count": 3, "yes": True,
        "tensor": [[0.5, None]], "tensor_nonfinite": {"0.1": "-inf"}, "item": None, "item_nonfinite": "nan",
        "pair": [2.0, None], "pair_nonfinite": {"1": "nan"},
    }


def test_what_cannot_be_flagged_is_refused():
    for data in (math.nan, [1.0, math.inf], [[math.nan]]):
        with pytest.raises(ValueError, match="outside any JSON object"):
            dumps_strict(data)
    with pytest.raises(ValueError, match="'x_nonfinite' is taken"):
        dumps_strict({"x": math.nan, "x_nonfinite": 1})
    assert strict_loads(dumps_strict([{"x": math.nan}])) == [{"x": None, "x_nonfinite": "nan"}]  # an object in a list flags its own


def test_bare_constants_are_refused_when_read():
    with pytest.raises(ValueError, match="NaN"):
        loads_strict('{"x": NaN}')


def test_write_json_atomically_is_strict(tmp_path):
    path = write_json_atomically(tmp_path / "s.json", {"reward_end": math.nan, "evals": [{"step": 1, "kl": math.inf}]}, indent=1)
    assert strict_loads(path.read_text()) == {
        "reward_end": None, "reward_end_nonfinite": "nan", "evals": [{"step": 1, "kl": None, "kl_nonfinite": "inf"}]
    }


def test_check_and_bench_json_outputs_are_strict(capsys):
    from sail.bench.commands import print_result
    from sail.theory.report import dumps

    assert strict_loads(dumps({"gamma_c": math.inf, "curve": np.array([1.0, np.nan])})) == {
        "gamma_c": None, "gamma_c_nonfinite": "inf", "curve": [1.0, None], "curve_nonfinite": {"1": "nan"}
    }
    assert print_result({"tokens_per_s": math.nan}, True, str) == 0
    assert strict_loads(capsys.readouterr().out) == {"tokens_per_s": None, "tokens_per_s_nonfinite": "nan"}


def test_a_run_whose_metric_is_not_finite_writes_strict_files(base_dir, prompt_files, tmp_path):
    from sail.train.plot import read_evaluations

    cfg = load_config(None, run_overrides(base_dir, prompt_files, "run.steps=2", "run.eval_every=1", "spectral.log_every=1"))
    run = tmp_path / "r"
    trainer = Trainer(cfg, run)
    trainer.eval_metrics = lambda prompts, responses: {"odd": math.nan, "huge": math.inf}
    trainer.run()
    for name in ("metrics.jsonl", "completions.jsonl", "spectra.jsonl"):
        rows = [strict_loads(line) for line in (run / name).read_text().splitlines()]
        assert rows, name
    evals = [row for row in map(strict_loads, (run / "metrics.jsonl").read_text().splitlines()) if "eval/odd" in row]
    assert len(evals) == 3  # steps 0, 1 and 2
    assert all(row["eval/odd"] is None and row["eval/odd_nonfinite"] == "nan" for row in evals)
    assert all(row["eval/huge"] is None and row["eval/huge_nonfinite"] == "inf" for row in evals)
    summary = strict_loads((run / "summary.json").read_text())
    assert summary["evals"][0]["eval/odd_nonfinite"] == "nan"
    assert math.isnan(loads_strict((run / "summary.json").read_text())["evals"][-1]["eval/odd"])
    plotted = read_evaluations(run)  # what `sail plot` reads: the values themselves, no flag keys
    assert math.isinf(plotted[0]["eval/huge"]) and not any(key.endswith("_nonfinite") for row in plotted for key in row)
