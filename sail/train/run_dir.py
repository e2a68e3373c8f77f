"""The saved config of a run directory, its format, and reading older formats.

``config.yaml`` holds ``format`` (:data:`~sail.train.config.CONFIG_FORMAT`), ``config`` (every key
of :class:`~sail.train.config.TrainConfig`, defaults written out) and ``environment`` (versions and
the git commit). :func:`read_run_config` reads it back through the typed loader, so a resumed run or
a study reusing a finished run sees exactly the config it was made with. Format 1 (no ``format``
key) had the ``run`` section under ``train`` and the judge at ``sail.em.judge``; it is migrated
(:func:`migrate`). A format newer than this ``sail`` reads is refused with one line naming it.

:func:`resume_config` is the config of ``sail train --resume DIR --set KEY=VALUE``: the saved one
with changes to the keys of :data:`SAFE_ON_RESUME` only.

Each checkpoint stores the resolved config it was made with and its digest
(:mod:`sail.train.checkpoint`); :func:`check_resumed_config` refuses to continue one under a config
that differs in any other key than those (a ``config.yaml`` edited by hand, or another run's).

A new run starts in an absent or empty directory (:func:`check_new_run_dir`), or replaces what the
directory held with :func:`clear_run_dir` (``sail train --overwrite``), so two runs never mix.
"""

from __future__ import annotations

import dataclasses
import glob
import json
import os
import secrets
import shutil
import warnings
from pathlib import Path

import yaml

from sail.config import ConfigError, build, merge, parse_overrides
from sail.io import write_text_atomically
from sail.train.checkpoint import config_digest, sync_directory
from sail.train.config import CONFIG_FORMAT, TrainConfig
from sail.train.errors import TrainingError

CONFIG_FILE = "config.yaml"

SAFE_ON_RESUME = (
    "run.steps",
    "run.eval_every",
    "run.save_every",
    "run.save_total_limit",
    "run.progress",
    "run.tensorboard",
    "run.wandb",
    "run.wandb_project",
    "run.wandb_run_name",
    "run.completions_per_eval",
    "spectral.log_every",
)
"""The keys ``--resume`` may change: the run continues exactly as if they had been set from the
start (when and how it stops, evaluates, saves and logs, never what a step computes). ``run.steps``
only under a learning-rate schedule whose past values do not depend on the total
(:meth:`~sail.optim.schedule.ScheduleConfig.extends_exactly`)."""

DOTTED_PATH_RENAMES = {
    "sail.em.judge:alignment_reward": "sail.em.judges.programmatic:alignment_reward",
}
"""Callables that moved since format 1: old ``module:function`` → new."""


def migrate(config: dict, fmt: int) -> dict:
    """A format-``fmt`` config as the current format reads it."""
    config = dict(config)
    if fmt < 2:
        if "train" in config and "run" not in config:
            config["run"] = config.pop("train")
        for section, key in (("oracle", "path"), ("run", "eval_metrics")):
            block = dict(config.get(section) or {})
            if block.get(key) in DOTTED_PATH_RENAMES:
                block[key] = DOTTED_PATH_RENAMES[block[key]]
                config[section] = block
    return config


def write_run_config(run_dir: Path, cfg: TrainConfig, environment: dict) -> None:
    data = {"format": CONFIG_FORMAT, "config": dataclasses.asdict(cfg), "environment": environment}
    write_text_atomically(Path(run_dir) / CONFIG_FILE, yaml.safe_dump(data, sort_keys=False))


def read_run_config(run_dir: str | Path, key: str = "--resume") -> TrainConfig:
    """The config a run directory was made with; ``key`` names the option in errors."""
    path = Path(run_dir) / CONFIG_FILE
    if not path.is_file():
        raise ConfigError(key, f"{path} not found: not a sail run directory")
    try:
        data = yaml.safe_load(path.read_text())
    except (yaml.YAMLError, UnicodeDecodeError) as exc:  # not YAML, or not UTF-8 text
        raise ConfigError(key, f"{path} is not valid YAML: {' '.join(str(exc).split())}") from None
    if not isinstance(data, dict) or not isinstance(data.get("config"), dict):
        raise ConfigError(key, f"{path} holds no 'config' mapping: not a sail run directory")
    fmt = data.get("format", 1)
    if not isinstance(fmt, int) or not 1 <= fmt <= CONFIG_FORMAT:
        raise ConfigError(key, f"{path} has config format {fmt!r}; this sail reads formats 1 to {CONFIG_FORMAT}")
    return build(TrainConfig, migrate(data["config"], fmt))


def _flat(tree: dict, prefix: str = "") -> dict:
    """``tree``'s leaves by dotted key."""
    leaves = {}
    for name, value in tree.items():
        key = f"{prefix}.{name}" if prefix else name
        leaves.update(_flat(value, key) if isinstance(value, dict) and value else {key: value})
    return leaves


def resume_config(run_dir: str | Path, overrides: list[str]) -> TrainConfig:
    """The saved config of ``run_dir`` with ``key=value`` overrides of :data:`SAFE_ON_RESUME` keys;
    any other key, or ``run.steps`` under a decaying schedule, is refused naming it."""
    saved = read_run_config(run_dir)
    changes = parse_overrides(overrides)
    for key in _flat(changes):
        if key not in SAFE_ON_RESUME:
            raise ConfigError(key, f"cannot change on --resume (the run would not continue the same); these can: {', '.join(SAFE_ON_RESUME)}")
    cfg = build(TrainConfig, merge(dataclasses.asdict(saved), changes))
    if cfg.run.steps != saved.run.steps and not saved.schedule.extends_exactly():
        raise ConfigError(
            "run.steps",
            f"cannot change on --resume under schedule.name={saved.schedule.name}: its rates decay over the total steps, "
            "so the steps already taken would have had other rates",
        )
    return cfg


def resolved_config(cfg: TrainConfig) -> dict:
    """``cfg`` as a checkpoint stores and hashes it: every key, JSON values."""
    return json.loads(json.dumps(dataclasses.asdict(cfg)))


def _changeable(key: str, cfg: TrainConfig) -> bool:
    return key in SAFE_ON_RESUME and (key != "run.steps" or cfg.schedule.extends_exactly())


def check_resumed_config(cfg: TrainConfig, saved: dict | None, digest: str | None, where: str) -> None:
    """Refuse to continue, under ``cfg``, the checkpoint ``where`` made with the resolved config
    ``saved`` (its digest ``digest``) unless they differ only in :data:`SAFE_ON_RESUME` keys
    (``run.steps`` only under a schedule that extends exactly); the :class:`ConfigError` names the
    first other key that differs. A checkpoint from before configs were stored (``saved`` None)
    is not checked."""
    if saved is None:
        return
    current = resolved_config(cfg)
    if digest == config_digest(current):
        return
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            before = _flat(resolved_config(build(TrainConfig, saved)))
    except ValueError as exc:
        raise ConfigError("--resume", f"the config {where} was made with does not load: {' '.join(str(exc).split())}") from None
    now, absent = _flat(current), object()
    changed = [k for k in sorted(before.keys() | now.keys()) if before.get(k, absent) != now.get(k, absent) and not _changeable(k, cfg)]
    if changed:
        key = changed[0]
        raise ConfigError(
            key,
            f"{now.get(key)!r} now but {before.get(key)!r} in {where} that --resume would continue "
            f"(keys that differ: {', '.join(changed)}); only {', '.join(SAFE_ON_RESUME)} may change on --resume: "
            "restore config.yaml, or start the run afresh with --overwrite",
        )


OVERWRITTEN = ".overwritten-"
"""What :func:`clear_run_dir` renames a directory to (``.<name>.overwritten-<random>``) before deleting it."""


def check_new_run_dir(run_dir: str | Path, overwrite: bool = False) -> None:
    """A new run starts in an absent or empty directory, or with ``overwrite`` replaces what it holds;
    anything else is a one-line :class:`TrainingError` naming the directory."""
    run_dir = Path(run_dir)
    if run_dir.exists() and not run_dir.is_dir():
        raise TrainingError(f"{run_dir} is a file, not a run directory")
    if overwrite:
        here, target = Path.cwd().resolve(), run_dir.resolve()
        if here == target or target in here.parents:
            raise TrainingError(f"--overwrite would delete {run_dir}, which holds the current directory; choose another --output-dir")
    elif run_dir.is_dir() and any(run_dir.iterdir()):
        raise TrainingError(
            f"{run_dir} is not empty: a new run is not started in another run's directory; continue that run with "
            f"--resume {run_dir}, replace it with --overwrite, or choose another --output-dir"
        )


def clear_run_dir(run_dir: str | Path) -> None:
    """Make ``run_dir`` an empty directory, deleting what it held. The directory is first renamed
    aside (:data:`OVERWRITTEN`) in one step and only then deleted, so a crash leaves the old run whole
    (under its name or the aside one) or an empty directory, never a mix of two runs; an aside left
    by a crash is deleted by the next clear."""
    run_dir = Path(run_dir).absolute()
    parent = run_dir.parent
    if run_dir.exists():
        os.replace(run_dir, parent / f".{run_dir.name}{OVERWRITTEN}{secrets.token_hex(4)}")
        sync_directory(parent)
    run_dir.mkdir(parents=True, exist_ok=True)
    sync_directory(parent)
    for aside in parent.glob(f".{glob.escape(run_dir.name)}{OVERWRITTEN}*"):
        shutil.rmtree(aside, ignore_errors=True)
