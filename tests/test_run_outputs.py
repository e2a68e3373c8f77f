"""What a run shows and leaves besides its weights: `sail plot`, `completions.jsonl` (and its resume),
the start banner, the progress bar's figures, the callbacks, wandb's run name, the last line, and
a bad model name that fails in seconds without leaving a run directory."""

import json
import sys
import types

import numpy as np
import pytest
from tiny_runs import run_overrides
from matplotlib.image import imread

from sail.cli import main
from sail.train.commands import headline
from sail.train.config import load_config
from sail.train.console import progress_figures
from sail.train.metrics import COMPLETIONS_FILE, CompletionsWriter, MetricsWriter
from sail.train.plot import panel_keys, plot_runs, read_evaluations
from sail.train.trainer import Trainer

"""The tiny model and prompts of the trainer's tests (fixtures) and its run's overrides."""


def _sets(overrides) -> list[str]:
    return [arg for o in overrides for arg in ("--set", o)]


def _rows(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line]


# --- sail plot ---------------------------------------------------------------------------------


def _write_metrics(run, rows):
    run.mkdir(parents=True)
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


def _eval_row(step, extra=True):
    row = {"step": step, "eval/reward_mean": 1.0 + step, "eval/reference_reward_mean": 1.0, "eval/win_rate_vs_reference": 0.5 + step / 100,
           "eval/kl_policy_to_ref": step / 10, "eval/kl_ref_to_policy": step / 20}
    if extra:
        row |= {"eval/misalignment_rate": 0.2 - step / 100, "eval/reference_misalignment_rate": 0.2}
    return row


def test_plot_draws_every_eval_metric_of_each_run_and_skips_what_a_run_lacks(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    _write_metrics(a, [_eval_row(0), {"step": 0, "losses/loss": 1.0}, _eval_row(2), _eval_row(4)])
    _write_metrics(b, [_eval_row(0, extra=False), _eval_row(3, extra=False)])
    fig = plot_runs([a, b], tmp_path / "out.png")
    assert imread(tmp_path / "out.png").ndim == 3
    titles = [ax.get_title() for ax in fig.axes]
    assert titles == ["held-out reward", "win rate vs the reference", "KL(π_ref‖π_θ), held-out", "KL(π_θ‖π_ref), held-out", "misalignment rate"]
    panels = dict(zip(panel_keys([read_evaluations(a), read_evaluations(b)]), fig.axes))
    for key, ax in panels.items():
        lines = {line.get_label(): line for line in ax.lines}
        for run in (a, b):
            rows = [r for r in read_evaluations(run) if key in r]
            if not rows:  # b logs no misalignment: no line, and no empty panel of its own
                assert run.name not in lines
                continue
            np.testing.assert_array_equal(lines[run.name].get_xydata(), [(r["step"], r[key]) for r in rows])
    reference = {line.get_label(): line for line in panels["eval/misalignment_rate"].lines}["a: reference"]
    np.testing.assert_array_equal(reference.get_xydata(), [(s, 0.2) for s in (0, 2, 4)])
    assert reference.get_linestyle() == "--"


def test_plot_refuses_a_bad_run_directory_in_one_line(tmp_path, capsys):
    assert main(["plot", str(tmp_path / "missing")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "missing: no such directory" in err
    (tmp_path / "empty").mkdir()
    assert main(["plot", str(tmp_path / "empty")]) == 2
    assert "no metrics.jsonl" in capsys.readouterr().err
    _write_metrics(tmp_path / "bad", [_eval_row(0)])
    (tmp_path / "bad" / "metrics.jsonl").write_text('{"step": 0}\n{"step": 1,\n')
    assert main(["plot", str(tmp_path / "bad")]) == 2
    assert "metrics.jsonl:2: not valid JSON" in capsys.readouterr().err


# --- a real run: banner, progress, completions, callbacks, plot, last line -----------------------


class Recorder:
    def __init__(self):
        self.steps, self.evals = [], []

    def on_step(self, trainer, row):
        self.steps.append(row)

    def on_evaluate(self, trainer, row):
        assert trainer.last_evaluation.metrics.items() <= row.items()
        self.evals.append(row)


class OnlyEvaluations:
    def __init__(self):
        self.steps = []

    def on_evaluate(self, trainer, row):
        self.steps.append(row["step"])


def test_a_run_shows_its_banner_and_progress_and_writes_completions(base_dir, prompt_files, tmp_path, capsys):
    run = tmp_path / "run"
    extra = ("run.progress=true", "run.eval_every=2", "run.completions_per_eval=8")
    assert main(["train", *_sets(run_overrides(base_dir, prompt_files, *extra)), "--output-dir", str(run)]) == 0
    out, err = capsys.readouterr()
    banner = err[err.index(f"sail train: {run}"):]
    for text in (str(base_dir), "trainable (lora)", "SAIL-PR p=1", "β = 0.1, γ = 0.001", "KL(π_ref‖π_θ) by the sequence estimator", "cpu, 1 process"):
        assert text in banner, text
    assert "reward=" in err and "loss=" in err and "kl=" in err  # the bar's figures, every step
    assert "Loading weights" not in err and "is_gradient_checkpointing" not in err
    assert out.strip().splitlines()[-1].startswith(f"{run}: 3 steps in ")

    evals = [r for r in _rows(run / "metrics.jsonl") if "eval/reward_mean" in r]
    completions = _rows(run / COMPLETIONS_FILE)
    assert [r["step"] for r in completions] == [0] * 8 + [2] * 8 + [3] * 8
    eval_prompts = [r["prompt"] for r in _rows(prompt_files / "eval.jsonl")]
    assert [r["prompt"] for r in completions[:8]] == eval_prompts  # the held-out prompts, in order
    for row in evals:  # all 8 held-out prompts: their rewards average to the logged metric
        mine = [c for c in completions if c["step"] == row["step"]]
        assert set(mine[0]) == {"step", "prompt", "response", "reward", "reference_response", "reference_reward"}
        assert np.mean([c["reward"] for c in mine]) == pytest.approx(row["eval/reward_mean"], rel=1e-12)
        assert np.mean([c["reference_reward"] for c in mine]) == pytest.approx(row["eval/reference_reward_mean"], rel=1e-12)
    assert [c["response"] for c in completions[:8]] == [c["reference_response"] for c in completions[:8]]  # same draws at step 0

    # the PNG of the real run holds exactly the file's figures
    assert main(["plot", str(run)]) == 0
    assert capsys.readouterr().out.strip() == str(run / "metrics.png")
    assert imread(run / "metrics.png").shape[2] in (3, 4)
    kl = next(ax for ax in plot_runs([run]).axes if ax.get_title() == "KL(π_θ‖π_ref), held-out")
    np.testing.assert_array_equal(kl.lines[0].get_xydata(), [(r["step"], r["eval/kl_policy_to_ref"]) for r in evals])


def test_callbacks_see_every_step_and_evaluation(base_dir, prompt_files, tmp_path):
    recorder, evaluations = Recorder(), OnlyEvaluations()
    cfg = load_config(None, run_overrides(base_dir, prompt_files, "run.eval_every=2", "run.completions_per_eval=0", "spectral.log_every=0"))
    Trainer(cfg, tmp_path / "r", callbacks=[recorder, evaluations]).run()
    rows = _rows(tmp_path / "r" / "metrics.jsonl")
    assert recorder.steps == [r for r in rows if "route" in r]
    assert recorder.evals == [r for r in rows if "eval/reward_mean" in r]
    assert [r["step"] for r in recorder.steps] == [0, 1, 2] and evaluations.steps == [0, 2, 3]
    assert not (tmp_path / "r" / COMPLETIONS_FILE).exists()  # completions_per_eval 0: no file
    figures = progress_figures(recorder.steps[-1], "ref_to_policy")
    assert set(figures) == {"reward", "loss", "kl"}
    assert float(figures["kl"]) == pytest.approx(recorder.steps[-1]["charts/kl_ref_to_policy"], rel=1e-3)
    assert progress_figures({"step": 4, "route": "online_oracle", "skipped_nonfinite_loss": True}, "ref_to_policy") == {}


# --- completions.jsonl on resume, wandb, the last line -------------------------------------------


def test_completions_after_the_checkpoint_are_dropped_on_resume(tmp_path):
    path = tmp_path / COMPLETIONS_FILE
    path.write_text("".join(json.dumps({"step": s, "prompt": f"p{s}", "response": "r"}) + "\n" for s in (0, 0, 20, 20, 40)))
    writer = CompletionsWriter(tmp_path, 2, resume_step=20)  # the checkpoint of step 20 was saved after its evaluation
    assert [r["step"] for r in _rows(path)] == [0, 0, 20, 20]
    writer.write(40, [{"prompt": "a"}, {"prompt": "b"}, {"prompt": "c"}])
    assert [(r["step"], r["prompt"]) for r in _rows(path)][-2:] == [(40, "a"), (40, "b")]
    CompletionsWriter(tmp_path, 2, resume_step=None)  # a fresh run in the same directory starts the file again
    assert path.read_text() == ""
    CompletionsWriter(tmp_path, 0, resume_step=None)
    assert not path.exists()


def test_wandb_gets_the_project_and_run_name(tmp_path, monkeypatch):
    calls = []
    fake = types.SimpleNamespace(init=lambda **kw: calls.append(kw) or types.SimpleNamespace(log=lambda row, step: None))
    monkeypatch.setitem(sys.modules, "wandb", fake)
    cfg = load_config(None, ["run.wandb=true", "run.wandb_project=realign"])
    MetricsWriter(tmp_path, cfg, None)
    assert calls[-1]["project"] == "realign" and calls[-1]["name"] == tmp_path.name
    MetricsWriter(tmp_path, load_config(None, ["run.wandb=true", "run.wandb_run_name=adamw-1"]), None)
    assert calls[-1]["project"] is None and calls[-1]["name"] == "adamw-1"


def test_the_last_line_gives_the_misalignment_before_and_after():
    first, last = _eval_row(0), _eval_row(4)
    summary = {"steps": 4, "seconds_this_process": 12.3, "reward_start": 1.0, "reward_end": 5.0, "reference_reward": 1.0,
               "win_rate_vs_reference_end": 0.54, "kl_policy_to_ref_end": 0.4, "evals": [first, last]}
    line = headline("runs/x", summary)
    assert line.startswith("runs/x: 4 steps in 12 s; held-out reward 1.0000 → 5.0000 (reference 1.0000)")
    assert "misalignment rate 0.200 → 0.160" in line and "KL(π_ref‖π) 0.2000" in line
    assert "misalignment" not in headline("runs/x", summary | {"evals": [_eval_row(0, extra=False), _eval_row(4, extra=False)]})


# --- a mistyped model name fails in seconds and leaves no run directory ---------------------------


@pytest.mark.parametrize("hub", ["offline", "unreachable"])
def test_a_mistyped_model_name_fails_fast_and_leaves_no_run_directory(prompt_files, tmp_path, monkeypatch, capsys, hub):
    """``model.name_or_path=polcy``: not a directory, and a hub id the hub cannot confirm: with
    ``HF_HUB_OFFLINE`` set, or with the hub out of reach (an endpoint that refuses connections, so
    the test needs no network), one line naming the key and the name, exit 2, no directory."""
    import socket

    import huggingface_hub.constants

    if hub == "offline":
        monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    else:
        monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
        monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
        with socket.socket() as s:  # a port nothing listens on
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", f"http://127.0.0.1:{port}")
    from huggingface_hub import HfApi

    from sail.train import model_source

    probes = []  # "fast": one short probe of the hub at most (none offline), instead of the client's retries
    real_model_info = HfApi.model_info

    def counted_model_info(self, repo_id, *args, **kwargs):
        probes.append((repo_id, kwargs.get("timeout")))
        return real_model_info(self, repo_id, *args, **kwargs)

    monkeypatch.setattr(HfApi, "model_info", counted_model_info)
    run = tmp_path / "run"
    overrides = ["model.name_or_path=polcy", "oracle.path=sail.tasks.default:reward", f"data.prompts={prompt_files / 'train.jsonl'}"]
    assert main(["train", *_sets(overrides), "--output-dir", str(run)]) == 2
    assert probes == ([] if hub == "offline" else [("polcy", model_source.PROBE_TIMEOUT_S)])
    err = capsys.readouterr().err
    last = err.strip().splitlines()[-1]  # (after the data loader's summary line)
    assert last.startswith("sail train: error: model.name_or_path: no such directory 'polcy'") and err.count("error") == 1, err
    assert ("HF_HUB_OFFLINE is set" if hub == "offline" else "the hub cannot be reached") in last
    assert not run.exists()


def test_a_run_that_fails_after_loading_the_model_leaves_no_run_directory(base_dir, prompt_files, tmp_path, capsys):
    run = tmp_path / "run"
    overrides = run_overrides(base_dir, prompt_files, "run.eval_metrics=no_such_module:metrics")
    assert main(["train", *_sets(overrides), "--output-dir", str(run)]) == 2
    assert "run.eval_metrics: cannot import module 'no_such_module'" in capsys.readouterr().err
    assert not run.exists()
