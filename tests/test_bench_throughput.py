"""Smoke runs of the throughput benchmarks (`sail bench sample`, `sail bench loop`): the JSON
contract and that every measured figure is a positive number. Timings are never asserted."""

import importlib.util
import json

import pytest

from sail.cli import main


def test_bench_sample_json(capsys):
    assert main(["bench", "sample", "--json", "--vocab", "512", "--batch", "2", "--new-tokens", "4", "--repeats", "1", "--rank", "4"]) == 0
    out = json.loads(capsys.readouterr().out)
    for key in ("plain_tokens_per_s", "fast_tokens_per_s", "static_tokens_per_s", "speedup", "fast_refresh_ms"):
        assert out[key] > 0, key


@pytest.mark.slow
def test_bench_sample_compiled_baseline_json(capsys):
    """The base model with a static cache and torch.compile (forced off-GPU): a minute of compiling."""
    args = ["bench", "sample", "--json", "--vocab", "256", "--batch", "2", "--new-tokens", "4", "--repeats", "1", "--rank", "4", "--compiled-baseline"]
    assert main(args) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["static_compiled_tokens_per_s"] > 0 and out["speedup_vs_static_compiled"] > 0


@pytest.fixture(scope="module")
def quick_base(tmp_path_factory):
    from sail.tasks import default as task

    out = tmp_path_factory.mktemp("base")
    task.build_base_model(out, seed=0, steps=20, n_eval=0)
    return out


def _loop(base, capsys, *extra):
    args = ["bench", "loop", "--json", "--model-path", str(base), "--batch", "2", "--new-tokens", "4", "--warmup", "1", "--repeats", "1", "--rounds", "1", *extra]
    assert main(args) == 0
    return json.loads(capsys.readouterr().out)


def test_bench_loop_json_without_trl(quick_base, capsys):
    out = _loop(quick_base, capsys, "--no-trl", "--engine", "fast")
    assert out["trl"] is None and out["speedup_vs_trl"] is None
    sail = out["sail"]
    assert sail["samples_per_s"] > 0 and sail["tokens_per_s"] > 0 and sail["peak_mem_mb"] > 0
    assert set(sail["phase_ms"]) == {"sample", "label", "reference", "reference_decode", "loss_backward", "update"}
    assert sail["kl_estimator"] == "sequence" and 0 < sail["reference_decode_share_of_step"] < 1


@pytest.mark.skipif(importlib.util.find_spec("trl") is None, reason="TRL is a benchmark-only extra (pip install -e '.[bench]')")
def test_bench_loop_against_trl(quick_base, capsys):
    out = _loop(quick_base, capsys)
    for side in ("sail", "trl"):
        assert out[side]["samples_per_s"] > 0 and out[side]["tokens_per_s"] > 0 and out[side]["peak_mem_mb"] > 0
    assert out["speedup_vs_trl"] > 0


def test_random_qwen3_directory_loads_and_decodes_every_id(tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from sail.bench.models import QWEN3_VOCAB, save_random_qwen3

    path = save_random_qwen3("tiny", tmp_path / "m", dtype="float32")
    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path)
    assert len(tok) == QWEN3_VOCAB == model.config.vocab_size
    assert tok.decode([QWEN3_VOCAB - 1]) == f"<|x{QWEN3_VOCAB - 1 - 103}|>"
    text = "What is 2+3?"
    assert tok.decode(tok(text, add_special_tokens=False)["input_ids"]) == text


def test_bench_logprob_json(capsys):
    assert main(["bench", "logprob", "--json", "--vocab", "512", "--batch", "2", "--response-len", "8"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["before_peak_mb"] >= 0 and out["after_peak_mb"] >= 0 and out["before_seconds"] > 0 and out["after_seconds"] > 0
