"""A run directory's saved config: written with its format, read back through the typed loader,
older formats migrated, newer ones refused with one line; a checkpoint's config against the one a
resume runs under; and one run per directory (a second refused, or replacing the first whole with
``--overwrite``, also in ``sail study realign``)."""

import dataclasses
import json
import shutil

import pytest
import yaml
from safetensors.torch import load_file
from tiny_runs import run_overrides

import sail.train.run_dir as run_dir_module
from sail.cli import main
from sail.config import ConfigError
from sail.train.checkpoint import config_digest, list_checkpoints
from sail.train.config import CONFIG_FORMAT, TrainConfig, load_config
from sail.train.errors import TrainingError
from sail.train.run_dir import (
    DOTTED_PATH_RENAMES,
    check_new_run_dir,
    check_resumed_config,
    clear_run_dir,
    read_run_config,
    resolved_config,
    write_run_config,
)
from sail.train.trainer import Trainer


def _config() -> TrainConfig:
    return load_config(None, ["model.name_or_path=sail:em-misaligned", "oracle.path=pkg.mod:reward", "run.steps=7"])


def test_a_saved_config_reads_back_equal(tmp_path):
    cfg = _config()
    write_run_config(tmp_path, cfg, {"sail": "test"})
    saved = yaml.safe_load((tmp_path / "config.yaml").read_text())
    assert saved["format"] == CONFIG_FORMAT and saved["environment"] == {"sail": "test"}
    assert read_run_config(tmp_path) == cfg


def test_format_1_is_migrated(tmp_path):
    """Format 1 had the run section under `train` and the judge at its old path."""
    old_path = next(iter(DOTTED_PATH_RENAMES))
    data = dataclasses.asdict(_config())
    data["train"] = data.pop("run")
    data["oracle"]["path"] = old_path
    data["objective"]["kl_estimator"] = "exact"
    (tmp_path / "config.yaml").write_text(yaml.safe_dump({"config": data, "environment": {}}))
    with pytest.warns(FutureWarning, match="exact"):
        cfg = read_run_config(tmp_path)
    assert cfg.run.steps == 7
    assert cfg.oracle.path == DOTTED_PATH_RENAMES[old_path]
    assert cfg.objective.kl_estimator == "per_token_on_policy_prefixes"


@pytest.mark.parametrize(
    "content,match",
    [
        (None, "not found: not a sail run directory"),
        ("format: 99\nconfig: {}\n", "config format 99; this sail reads formats 1 to"),
        ("[1, 2]\n", "holds no 'config' mapping"),
        ("config: [\n", "not valid YAML"),
    ],
)
def test_what_is_not_a_readable_run_directory_is_one_line(tmp_path, content, match):
    if content is not None:
        (tmp_path / "config.yaml").write_text(content)
    with pytest.raises(ConfigError, match=match) as err:
        read_run_config(tmp_path)
    assert err.value.key == "--resume" and "\n" not in str(err.value)


# --- a checkpoint's config -------------------------------------------------------------------


def test_a_checkpoint_resumes_under_its_config_changed_only_in_safe_keys():
    base = ["model.name_or_path=sail:em-misaligned", "oracle.path=pkg.mod:reward", "run.steps=7"]
    cfg = load_config(None, base)
    saved = resolved_config(cfg)
    check_resumed_config(cfg, saved, config_digest(saved), "ck")
    check_resumed_config(load_config(None, [*base, "run.steps=9", "run.eval_every=3", "spectral.log_every=0"]), saved, config_digest(saved), "ck")
    check_resumed_config(load_config(None, [*base, "optimizer.lr=0.5"]), None, None, "ck")  # a checkpoint from before configs were stored
    older = json.loads(json.dumps(saved))
    del older["objective"]["radius"]  # a key added since: at its default
    check_resumed_config(cfg, older, config_digest(older), "ck")
    for extra, key in ((["optimizer.lr=0.5"], "optimizer.lr"), (["run.seed=3", "model.lora.rank=2"], "model.lora.rank")):
        with pytest.raises(ConfigError) as err:
            check_resumed_config(load_config(None, [*base, *extra]), saved, config_digest(saved), "RUN/checkpoint-3")
        message = str(err.value)
        assert err.value.key == key and "RUN/checkpoint-3" in message and "\n" not in message
        assert all(e.split("=")[0] in message for e in extra)  # every key that differs is named
    linear = load_config(None, [*base, "schedule.name=linear"])
    with pytest.raises(ConfigError) as err:  # run.steps under a decaying schedule
        check_resumed_config(load_config(None, [*base, "schedule.name=linear", "run.steps=9"]), resolved_config(linear), None, "ck")
    assert err.value.key == "run.steps"
    with pytest.raises(ConfigError, match="does not load") as err:
        check_resumed_config(cfg, {**saved, "nope": 1}, None, "ck")
    assert err.value.key == "--resume"


# --- one run per directory ---------------------------------------------------------------------


def test_a_new_run_needs_an_absent_or_empty_directory(tmp_path, monkeypatch):
    check_new_run_dir(tmp_path / "absent")
    (tmp_path / "empty").mkdir()
    check_new_run_dir(tmp_path / "empty")
    full = tmp_path / "full"
    full.mkdir()
    (full / "config.yaml").write_text("config: {}\n")
    with pytest.raises(TrainingError) as err:
        check_new_run_dir(full)
    message = str(err.value)
    assert str(full) in message and "--overwrite" in message and "--resume" in message and "\n" not in message
    check_new_run_dir(full, overwrite=True)
    (tmp_path / "file").write_text("")
    with pytest.raises(TrainingError, match="is a file"):
        check_new_run_dir(tmp_path / "file", overwrite=True)
    monkeypatch.chdir(full)
    with pytest.raises(TrainingError, match="current directory"):
        check_new_run_dir(full, overwrite=True)


class _Crash(Exception):
    pass


def test_overwriting_leaves_the_old_run_whole_or_an_empty_directory(tmp_path, monkeypatch):
    """A crash right after the rename leaves the old run whole beside an absent directory; the next
    clear deletes it and leaves the directory empty."""
    run = tmp_path / "run"
    (run / "checkpoint-1").mkdir(parents=True)
    (run / "checkpoint-1" / "COMPLETE").write_text("ok")
    (run / "config.yaml").write_text("old")

    def crash(path):
        raise _Crash

    monkeypatch.setattr(run_dir_module, "sync_directory", crash)
    with pytest.raises(_Crash):
        clear_run_dir(run)
    [aside] = tmp_path.glob(f".run{run_dir_module.OVERWRITTEN}*")
    assert not run.exists() and sorted(p.name for p in aside.rglob("*")) == ["COMPLETE", "checkpoint-1", "config.yaml"]
    monkeypatch.undo()
    clear_run_dir(run)
    assert run.is_dir() and not any(run.iterdir()) and [p.name for p in tmp_path.iterdir()] == ["run"]


def _train(run, base_dir, prompt_files, *extra, flags=()) -> int:
    overrides = run_overrides(base_dir, prompt_files, "spectral.log_every=2", "sampling.max_new_tokens=4", "data.n_eval=2", *extra)
    return main(["train", *sum((["--set", o] for o in overrides), []), "--output-dir", str(run), *flags])


def _files(run) -> dict:
    return {p.relative_to(run): (p.read_bytes(), p.stat().st_mtime_ns) for p in sorted(run.rglob("*")) if p.is_file()}


def _rows(run, name="metrics.jsonl") -> list[dict]:
    rows = [json.loads(line) for line in (run / name).read_text().splitlines()]
    return [{k: v for k, v in r.items() if not k.startswith("perf/")} for r in rows]


B = ("optimizer.lr=0.003", "run.seed=5")
"""Run B's keys: another learning rate and seed than run A's."""


def test_a_second_run_in_a_directory_is_refused_or_replaces_the_first_whole(base_dir, prompt_files, tmp_path, capsys):
    """Run A writes 3 steps. Run B in the same directory is refused, nothing touched; with
    ``--overwrite`` it ends exactly as B in a fresh directory. A directory where B's config came over
    A's checkpoints (as a run started there by an older sail and killed before its first save
    leaves it) is refused on ``--resume``, naming the keys; a B killed before its first save after
    ``--overwrite`` has no checkpoint to resume."""
    a = tmp_path / "run"
    assert _train(a, base_dir, prompt_files, "optimizer.lr=0.001") == 0
    assert [c.step for c in list_checkpoints(a)] == [1, 2, 3]
    saved_a = tmp_path / "saved-a"
    shutil.copytree(a, saved_a)
    before = _files(a)
    capsys.readouterr()
    assert _train(a, base_dir, prompt_files, *B) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and str(a) in err and "is not empty" in err and "--overwrite" in err, err
    assert _files(a) == before

    mixed = tmp_path / "mixed"
    shutil.copytree(saved_a, mixed)
    cfg_b = load_config(None, run_overrides(base_dir, prompt_files, "spectral.log_every=2", "sampling.max_new_tokens=4", "data.n_eval=2", *B))
    write_run_config(mixed, cfg_b, {})
    before = _files(mixed)
    assert main(["train", "--resume", str(mixed)]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "'optimizer.lr'" in err and "run.seed" in err and "checkpoint-3" in err and "--overwrite" in err, err
    assert main(["train", "--resume", str(mixed), "--overwrite"]) == 2
    assert "give one of them" in capsys.readouterr().err
    assert _files(mixed) == before

    assert _train(a, base_dir, prompt_files, *B, flags=["--overwrite"]) == 0
    fresh = tmp_path / "fresh-b"
    assert _train(fresh, base_dir, prompt_files, *B) == 0
    assert read_run_config(a).optimizer.lr == 0.003
    assert sorted(p.name for p in a.iterdir()) == sorted(p.name for p in fresh.iterdir())
    assert load_file(a / "adapter" / "adapter_model.safetensors").keys() == load_file(fresh / "adapter" / "adapter_model.safetensors").keys()
    ours, theirs = load_file(a / "adapter" / "adapter_model.safetensors"), load_file(fresh / "adapter" / "adapter_model.safetensors")
    assert all(ours[k].equal(theirs[k]) for k in ours)
    for name in ("metrics.jsonl", "spectra.jsonl", "completions.jsonl"):
        assert _rows(a, name) == _rows(fresh, name), name
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fresh-b", "mixed", "run", "saved-a"]  # nothing left aside

    Trainer(cfg_b, saved_a, overwrite=True)  # B over A, killed before its first save
    assert not list_checkpoints(saved_a)
    capsys.readouterr()
    assert main(["train", "--resume", str(saved_a)]) == 2
    assert "no complete checkpoint" in capsys.readouterr().err


def test_the_study_restarts_an_unfinished_run_without_a_checkpoint_from_scratch(base_dir, prompt_files, tmp_path, capsys):
    from sail.em.realign_study import train_run

    cfg = load_config(None, run_overrides(base_dir, prompt_files, "run.steps=2", "spectral.log_every=0", "sampling.max_new_tokens=4", "data.n_eval=2"))
    run = tmp_path / "run"
    Trainer(cfg, run)  # killed before its first save: its config, no checkpoint
    (run / "metrics.jsonl").write_text(json.dumps({"step": 0, "stale": 1}) + "\n")
    capsys.readouterr()
    assert train_run(cfg, run)["steps"] == 2
    assert f"{run} holds this run unfinished and no checkpoint that verifies: restarting it from scratch" in capsys.readouterr().err
    assert not any("stale" in row for row in _rows(run))
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    with pytest.raises(TrainingError, match="holds no sail run"):
        train_run(cfg, other)
    assert [p.name for p in other.iterdir()] == ["notes.txt"]
