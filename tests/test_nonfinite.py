"""Non-finite gradients end to end on the tiny model: a step whose gradient overflows while its loss
stays finite is skipped and logged, the weights never become NaN, no checkpoint holds a non-finite
tensor, and `run.max_nonfinite` skips in a row stop the run with one error line naming the step."""

import json
import math
import re

import pytest
import torch
from safetensors.torch import load_file

import sail.loop
from sail.loop import sail_loss
from sail.train.config import load_config
from sail.train.trainer import Trainer, TrainingError
from tiny_runs import run_overrides


def rows_of(run):
    """metrics.jsonl, parsed strictly (a bare NaN or Infinity fails the test)."""
    text = (run / "metrics.jsonl").read_text()
    return [json.loads(line, parse_constant=lambda c: pytest.fail(f"bare {c} in metrics.jsonl")) for line in text.splitlines()]


def checkpoint_tensors(run):
    files = sorted(run.glob("checkpoint-*/**/*.safetensors"))
    assert files, "no checkpoint was written"
    return [t for path in files for t in load_file(path).values()]


def all_finite(tensors) -> bool:
    return all(torch.isfinite(t).all() for t in tensors)


def test_an_overflowing_gradient_is_skipped_until_the_run_stops(base_dir, prompt_files, tmp_path):
    """β = 1e30: βΔ overflows in the backward pass only, so the loss is finite and the gradient is not."""
    run = tmp_path / "r"
    cfg = load_config(None, run_overrides(base_dir, prompt_files, "run.steps=6", "run.max_nonfinite=3", "objective.beta=1e30"))
    trainer = Trainer(cfg, run)
    before = {n: p.detach().clone() for n, p in trainer._named_trainable().items()}
    with pytest.raises(TrainingError) as info:
        trainer.run()
    message = str(info.value)
    assert "\n" not in message and "non-finite gradient" in message and re.search(r"\bstep 2\b", message), message
    train_rows = [row for row in rows_of(run) if "route" in row]
    assert [row["step"] for row in train_rows] == [0, 1]  # the third skip raised before its row
    assert all(row.get("skipped_nonfinite_gradient") is True for row in train_rows)
    assert not any("skipped_nonfinite_loss" in row or "charts/grad_norm" in row for row in train_rows)
    after = trainer._named_trainable()
    assert all(torch.isfinite(p).all() and torch.equal(before[n], p) for n, p in after.items())
    assert sorted(p.name for p in run.glob("checkpoint-*")) == ["checkpoint-1", "checkpoint-2"]
    assert all_finite(checkpoint_tensors(run))
    assert not (run / "summary.json").exists()


class _InfiniteGradient(torch.autograd.Function):
    """Zero in the forward pass, +∞ in the backward one: a finite loss with a non-finite gradient."""

    @staticmethod
    def forward(ctx, x):
        return torch.zeros_like(x)

    @staticmethod
    def backward(ctx, grad):
        return torch.full_like(grad, math.inf)


def test_one_bad_step_is_skipped_and_the_run_goes_on(base_dir, prompt_files, tmp_path, monkeypatch):
    calls = []

    def second_call_overflows(*args, **kwargs):
        loss, stats = sail_loss(*args, **kwargs)
        calls.append(None)
        return (loss + _InfiniteGradient.apply(loss) if len(calls) == 2 else loss), stats

    monkeypatch.setattr(sail.loop, "sail_loss", second_call_overflows)
    run = tmp_path / "r"
    cfg = load_config(None, run_overrides(base_dir, prompt_files, "run.steps=4", "run.max_nonfinite=2", "run.eval_every=4"))
    trainer = Trainer(cfg, run)
    summary = trainer.run()
    assert len(calls) == 4 and summary["skipped_steps"] == 1
    train_rows = {row["step"]: row for row in rows_of(run) if "route" in row}
    assert sorted(train_rows) == [0, 1, 2, 3]
    assert train_rows[1].get("skipped_nonfinite_gradient") is True and "charts/grad_norm" not in train_rows[1]
    assert all(math.isfinite(train_rows[s]["charts/grad_norm"]) for s in (0, 2, 3))
    assert all(torch.isfinite(p).all() for p in trainer._named_trainable().values())
    assert all_finite(checkpoint_tensors(run))
