"""Smoke runs of the throughput benchmarks (`sail bench sample`, `sail bench loop`, `sail bench
logprob`): the JSON contract, and that every derived figure (ratio, rate, share) is the one its
recorded timings and counts give. Timings themselves are never asserted."""

import importlib.util
import json

import pytest

from sail.cli import main


def test_bench_sample_json(capsys):
    assert main(["bench", "sample", "--json", "--vocab", "512", "--batch", "2", "--new-tokens", "4", "--repeats", "1", "--rank", "4"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert (out["vocab"], out["batch"], out["new_tokens"], out["rank"]) == (512, 2, 4, 4)
    # tokens/s = batch × new tokens / seconds, so each speedup is a ratio of two of them
    assert out["speedup"] == pytest.approx(out["fast_tokens_per_s"] / out["plain_tokens_per_s"], rel=1e-9)
    assert out["static_speedup"] == pytest.approx(out["static_tokens_per_s"] / out["plain_tokens_per_s"], rel=1e-9)
    assert "static_compiled_tokens_per_s" not in out  # only with --compiled-baseline


@pytest.mark.slow
def test_bench_sample_compiled_baseline_json(capsys):
    """The base model with a static cache and torch.compile (forced off-GPU): a minute of compiling."""
    args = ["bench", "sample", "--json", "--vocab", "256", "--batch", "2", "--new-tokens", "4", "--repeats", "1", "--rank", "4", "--compiled-baseline"]
    assert main(args) == 0
    out = json.loads(capsys.readouterr().out)
    ratio = out["fast_tokens_per_s"] / out["static_compiled_tokens_per_s"]
    assert out["speedup_vs_static_compiled"] == pytest.approx(ratio, rel=1e-9)


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


def _assert_side_consistent(side: dict, samples_per_step: int, new_tokens: int) -> None:
    """samples/s = samples per step / step time; generated tokens per step between 1 and
    ``new_tokens`` per sample (counted through EOS); the reported step is the best round's."""
    assert side["samples_per_s"] == pytest.approx(samples_per_step / side["step_s"], rel=1e-9)
    tokens_per_step = side["tokens_per_s"] * side["step_s"]
    assert samples_per_step <= tokens_per_step <= samples_per_step * new_tokens
    assert side["step_s"] == min(side["rounds_step_s"])


def test_bench_loop_json_without_trl(quick_base, capsys):
    out = _loop(quick_base, capsys, "--no-trl", "--engine", "fast")
    assert out["trl"] is None and out["speedup_vs_trl"] is None
    assert out["samples_per_step"] == 2 * 2 and out["max_new_tokens"] == 4 and out["rounds"] == 1
    sail = out["sail"]
    _assert_side_consistent(sail, 4, 4)
    assert len(sail["rounds_step_s"]) == 1 and sail["engine"] == "fast"
    phases = sail["phase_ms"]
    assert set(phases) == {"sample", "label", "reference", "reference_decode", "loss_backward", "update"}
    assert sail["kl_estimator"] == "sequence"  # draws reference responses: its decode is a share of the step
    assert sail["reference_decode_share_of_step"] == pytest.approx(phases["reference_decode"] / 1e3 / sail["step_s"], rel=1e-9)
    assert sail["mfu_vs_matmul"] == pytest.approx(sail["train_step_tflops"] / sail["matmul_tflops"], rel=1e-9)
    assert sail["datasheet_tflops"] is None and sail["mfu"] is None  # no datasheet peak off a GPU


@pytest.mark.skipif(importlib.util.find_spec("trl") is None, reason="TRL is a benchmark-only extra (pip install -e '.[bench]')")
def test_bench_loop_against_trl(quick_base, capsys):
    out = _loop(quick_base, capsys)
    for side in ("sail", "trl"):
        _assert_side_consistent(out[side], out["samples_per_step"], out["max_new_tokens"])
    assert out["speedup_vs_trl"] == pytest.approx(out["sail"]["samples_per_s"] / out["trl"]["samples_per_s"], rel=1e-9)


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
    assert (out["vocab"], out["sequences"], out["response_len"]) == (512, 2 * 2, 8)
    assert out["fp32_logits_of_all_positions_mb"] == 2 * 2 * 8 * 512 * 4 / 2**20  # every position's float32 logits
    assert out["memory_ratio"] == pytest.approx(out["before_peak_mb"] / max(out["after_peak_mb"], 1e-9), rel=1e-9)
