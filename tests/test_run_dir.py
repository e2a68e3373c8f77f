"""A run directory's saved config: written with its format, read back through the typed loader,
older formats migrated, newer ones refused with one line."""

import dataclasses

import pytest
import yaml

from sail.config import ConfigError
from sail.train.config import CONFIG_FORMAT, TrainConfig, load_config
from sail.train.run_dir import DOTTED_PATH_RENAMES, read_run_config, write_run_config


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
