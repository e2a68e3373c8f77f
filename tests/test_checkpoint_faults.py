"""A checkpoint save crashed at each of its disk operations, then resumed.

Every change a save makes on disk is one call of ``_mkdir``, ``_write``, ``_fsync``, ``_rename`` or
``_delete`` in :mod:`sail.train.checkpoint`. :class:`Faults` counts the calls of the save of step 3
of a 4-step run (``save_total_limit: 2``, so that save also rotates ``checkpoint-1`` out), then for
k = 1..K crashes that save at call k: a write is left torn (the new files cut in half), a directory
being deleted loses every file but its marker, anything else does not happen. The run is then
restarted with ``resume`` and finished, and must end exactly as the uninterrupted run: the same
adapter bit for bit, the same metrics, spectra and completions, the same checkpoints and no debris.
A restart that does not resume from the newest complete checkpoint must say which it skipped and why.
After every crash, each complete checkpoint must still verify: a part-written or part-deleted one is
never complete.

Two saves are swept: a plain one that rotates the oldest checkpoint out, and one that replaces a
damaged checkpoint of the same step (a run resumed from ``checkpoint-2`` past a ``checkpoint-3``
whose ``optimizer.pt`` no longer matches its marker). The default run crashes at every 4th call;
``-m slow`` at every one.
"""

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from tiny_runs import run_overrides

import sail.train.trainer as trainer_module
from sail.train import checkpoint
from sail.train.config import load_config
from sail.train.trainer import Trainer

OPERATIONS = ("_mkdir", "_write", "_fsync", "_rename", "_delete")
SAVE_STEP = 3
"""The step whose save is crashed."""
SAMPLE = 4
"""The default run crashes at every SAMPLE-th call."""


class Crash(Exception):
    """A simulated kill at one disk operation of a save."""


def _cut(files) -> None:
    for path in files:
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2])


class Faults:
    """Replaces the disk operations of :mod:`sail.train.checkpoint` to record the calls of the save
    of step :data:`SAVE_STEP` as ``"<operation> <name>"``, and crash at the ``crash_at``-th."""

    def __init__(self, monkeypatch, crash_at: int | None = None):
        self.calls: list[str] = []
        self.crash_at = crash_at
        self.armed = False
        for name in OPERATIONS:
            monkeypatch.setattr(checkpoint, name, self._operation(name, getattr(checkpoint, name)))
        save = trainer_module.save_checkpoint

        def armed_save(*args, **kwargs):
            self.armed = int(args[4]["step"]) == SAVE_STEP  # (run_dir, model, optimizer, generator, state)
            try:
                return save(*args, **kwargs)
            finally:
                self.armed = False

        monkeypatch.setattr(trainer_module, "save_checkpoint", armed_save)

    def _operation(self, name, real):
        def operation(path, *args, **kwargs):
            if self.armed:
                self.calls.append(f"{name} {Path(path).name}")
                if len(self.calls) == self.crash_at:
                    self._crash(name, real, Path(path), *args, **kwargs)
            return real(path, *args, **kwargs)

        return operation

    @staticmethod
    def _crash(name, real, path, *args, **kwargs):
        if name == "_write":  # torn: what this write made, cut in half
            before = set(path.rglob("*")) if path.is_dir() else set()
            real(path, *args, **kwargs)
            _cut([path] if path.is_file() else [p for p in path.rglob("*") if p.is_file() and p not in before])
        elif name == "_delete" and path.is_dir():  # part-way: everything but the marker gone
            for file in path.rglob("*"):
                if file.is_file() and file.name != checkpoint.MARKER:
                    file.unlink()
        raise Crash(f"{name} {path.name}")


def _outputs(run: Path) -> dict:
    """What an uninterrupted run and a crashed-and-resumed one must share."""
    rows = lambda name: [json.loads(line) for line in (run / name).read_text().splitlines() if line]  # noqa: E731
    return {
        "adapter": load_file(run / "adapter" / "adapter_model.safetensors"),
        "metrics": [{k: v for k, v in r.items() if not k.startswith("perf/")} for r in rows("metrics.jsonl")],
        "spectra": rows("spectra.jsonl"),
        "completions": rows("completions.jsonl"),
        "entries": sorted(p.name for p in run.iterdir() if p.name.startswith("checkpoint") or p.name.startswith(".")),
    }


def _assert_same(got: dict, expected: dict, where: str) -> None:
    assert got["adapter"].keys() == expected["adapter"].keys(), where
    differing = [k for k in expected["adapter"] if not torch.equal(got["adapter"][k], expected["adapter"][k])]
    assert not differing, f"{where}: adapter tensors differ: {differing[:3]}"
    for key in ("metrics", "spectra", "completions", "entries"):
        assert got[key] == expected[key], f"{where}: {key} differ"


@pytest.fixture(scope="module")
def cfg(base_dir, prompt_files):
    return load_config(None, run_overrides(
        base_dir, prompt_files, "run.steps=4", "run.save_every=1", "run.save_total_limit=2", "run.eval_every=2",
        "sampling.max_new_tokens=4", "data.n_eval=2", "run.progress=false", "spectral.log_every=1",
    ))


@pytest.fixture(scope="module")
def plain(cfg, tmp_path_factory):
    """The uninterrupted run, with the calls of its save of step 3 counted."""
    run = tmp_path_factory.mktemp("plain") / "run"
    with pytest.MonkeyPatch.context() as mp:
        faults = Faults(mp)
        Trainer(cfg, run).run()
    return _outputs(run), faults.calls


class _KillAfterSave:
    def on_step(self, trainer, row):
        if trainer.state["step"] == SAVE_STEP + 1:  # its rows are written, its checkpoint is not
            raise Crash("after the save of step 3")


@pytest.fixture(scope="module")
def damaged(cfg, plain, tmp_path_factory):
    """A run killed after its save of step 3, then ``checkpoint-3/optimizer.pt`` damaged; and the
    calls of the save of step 3 by a run resumed from there (which replaces ``checkpoint-3``)."""
    run = tmp_path_factory.mktemp("damaged") / "run"
    with pytest.raises(Crash):
        Trainer(cfg, run, callbacks=[_KillAfterSave()]).run()
    assert [c.step for c in checkpoint.list_checkpoints(run)] == [2, 3]
    optimizer = run / "checkpoint-3" / "optimizer.pt"
    data = bytearray(optimizer.read_bytes())
    data[len(data) // 2] ^= 0xFF
    optimizer.write_bytes(bytes(data))
    counted = tmp_path_factory.mktemp("counted") / "run"
    shutil.copytree(run, counted)
    with pytest.MonkeyPatch.context() as mp:
        faults = Faults(mp)
        Trainer(cfg, counted, resume=True).run()
    _assert_same(_outputs(counted), plain[0], "resumed past the damaged checkpoint-3")
    return run, faults.calls


def _check_calls(calls: list[str], replaces: bool) -> None:
    """Every kind of operation is there; each file is fsynced after it is written and before the
    marker; the directories after each change; a checkpoint's marker is deleted (and that made
    durable) before the rest of it."""
    kinds = {c.split()[0] for c in calls}
    assert kinds == set(OPERATIONS), calls
    marker = calls.index(f"_write {checkpoint.MARKER}")
    for i, call in enumerate(calls[:marker]):
        if call.startswith("_write ") and call != "_write checkpoint-3.tmp":
            assert f"_fsync {call.split()[1]}" in calls[i + 1: marker], call
    assert calls[marker + 1: marker + 3] == [f"_fsync {checkpoint.MARKER}", "_fsync checkpoint-3.tmp"]
    rename = calls.index("_rename checkpoint-3.tmp")
    assert calls[rename + 1] == "_fsync run"
    removed = "checkpoint-3" if replaces else "checkpoint-1"
    first = calls.index(f"_fsync {removed}")
    assert calls[first - 1: first + 3] == [f"_delete {checkpoint.MARKER}", f"_fsync {removed}", f"_delete {removed}", "_fsync run"], calls


def _crash_and_resume(cfg, tmp_path, monkeypatch, capsys, start: Path | None, k: int, calls: list[str], expected: dict) -> None:
    run = tmp_path / f"crash-{k}" / "run"
    if start is not None:
        shutil.copytree(start, run)
    where = f"crash at call {k} ({calls[k - 1]})"
    with monkeypatch.context() as mp:
        Faults(mp, crash_at=k)
        with pytest.raises(Crash):
            Trainer(cfg, run, resume=start is not None).run()
    complete = checkpoint.list_checkpoints(run)
    for c in complete:  # a part-written or part-deleted checkpoint is never complete
        if not _is_the_damaged_one(c.path, start, k, calls):
            checkpoint.verify_checkpoint(c.path)
    capsys.readouterr()
    resumed = Trainer(cfg, run, resume=True)
    err = capsys.readouterr().err
    newest = complete[-1]
    if resumed.state["step"] != newest.step:
        assert f"skipped a checkpoint: {newest.path}" in err, f"{where}: resumed at step {resumed.state['step']} past {newest.path.name} silently"
    resumed.run()
    _assert_same(_outputs(run), expected, where)


def _is_the_damaged_one(path: Path, start: Path | None, k: int, calls: list[str]) -> bool:
    """In the replacing sweep, ``checkpoint-3`` before the save deleted its marker is the damaged one."""
    return start is not None and path.name == "checkpoint-3" and k <= calls.index(f"_delete {checkpoint.MARKER}") + 1


def _sweep(cfg, tmp_path, monkeypatch, capsys, start, calls, expected, every: int) -> None:
    for k in range(1, len(calls) + 1, every):
        _crash_and_resume(cfg, tmp_path, monkeypatch, capsys, start, k, calls, expected)


def test_a_save_makes_every_change_durable_and_deletes_markers_first(plain, damaged):
    _check_calls(plain[1], replaces=False)
    _check_calls(damaged[1], replaces=True)


def test_a_crash_at_sampled_points_of_a_save_resumes_exactly(cfg, plain, damaged, tmp_path, monkeypatch, capsys):
    _sweep(cfg, tmp_path / "rotating", monkeypatch, capsys, None, plain[1], plain[0], SAMPLE)
    _sweep(cfg, tmp_path / "replacing", monkeypatch, capsys, damaged[0], damaged[1], plain[0], SAMPLE)


@pytest.mark.slow
def test_a_crash_at_every_point_of_a_save_resumes_exactly(cfg, plain, damaged, tmp_path, monkeypatch, capsys):
    _sweep(cfg, tmp_path / "rotating", monkeypatch, capsys, None, plain[1], plain[0], 1)
    _sweep(cfg, tmp_path / "replacing", monkeypatch, capsys, damaged[0], damaged[1], plain[0], 1)
