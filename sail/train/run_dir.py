"""The saved config of a run directory, its format, and reading older formats.

``config.yaml`` holds ``format`` (:data:`~sail.train.config.CONFIG_FORMAT`), ``config`` (every key
of :class:`~sail.train.config.TrainConfig`, defaults written out) and ``environment`` (versions and
the git commit). :func:`read_run_config` reads it back through the typed loader, so a resumed run or
a study reusing a finished run sees exactly the config it was made with. Format 1 (no ``format``
key) had the ``run`` section under ``train`` and the judge at ``sail.em.judge``; it is migrated
(:func:`migrate`). A format newer than this ``sail`` reads is refused with one line naming it.

:func:`resume_config` is the config of ``sail train --resume DIR --set KEY=VALUE``: the saved one
with changes to the keys of :data:`SAFE_ON_RESUME` only.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import yaml

from sail.config import ConfigError, build, merge, parse_overrides
from sail.io import write_text_atomically
from sail.train.config import CONFIG_FORMAT, TrainConfig

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
    except yaml.YAMLError as exc:
        raise ConfigError(key, f"{path} is not valid YAML: {' '.join(str(exc).split())}") from None
    if not isinstance(data, dict) or not isinstance(data.get("config"), dict):
        raise ConfigError(key, f"{path} holds no 'config' mapping: not a sail run directory")
    fmt = data.get("format", 1)
    if not isinstance(fmt, int) or not 1 <= fmt <= CONFIG_FORMAT:
        raise ConfigError(key, f"{path} has config format {fmt!r}; this sail reads formats 1 to {CONFIG_FORMAT}")
    return build(TrainConfig, migrate(data["config"], fmt))


def _dotted(tree: dict, prefix: str = "") -> list[str]:
    keys = []
    for name, value in tree.items():
        key = f"{prefix}.{name}" if prefix else name
        keys += _dotted(value, key) if isinstance(value, dict) and value else [key]
    return keys


def resume_config(run_dir: str | Path, overrides: list[str]) -> TrainConfig:
    """The saved config of ``run_dir`` with ``key=value`` overrides of :data:`SAFE_ON_RESUME` keys;
    any other key, or ``run.steps`` under a decaying schedule, is refused naming it."""
    saved = read_run_config(run_dir)
    changes = parse_overrides(overrides)
    for key in _dotted(changes):
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
