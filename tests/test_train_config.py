"""Training config and data files: errors name the key, or the file and line."""

import json
from pathlib import Path

import pytest

from sail.config import ConfigError, parse_overrides
from sail.data import DataError, load_pairs, load_prompts
from sail.train.config import TrainConfig, load_config


def test_defaults_follow_the_authors_public_settings():
    cfg = TrainConfig()
    assert cfg.objective.beta == 0.1 and cfg.objective.gamma == 1e-3
    assert len(cfg.model.lora.target_modules) == 7
    assert cfg.model.trust_remote_code is False
    # the embedded default: realign the emergent-misaligned organism with the judge as the oracle
    assert cfg.model.name_or_path == "sail:em-misaligned" and cfg.oracle.path == "sail.em.judge:alignment_reward"
    assert cfg.train.eval_metrics == "sail.em.metrics:em_metrics"


def test_overrides_keep_other_defaults_of_a_section(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("objective:\n  gamma: 0.05\ntrain:\n  steps: 3\n")
    cfg = load_config(str(path), ["model.lora.rank=4", "objective.kl_direction=policy_to_ref"])
    assert cfg.objective.gamma == 0.05 and cfg.objective.beta == 0.1 and cfg.objective.baseline == "ema"
    assert cfg.objective.kl_direction == "policy_to_ref"
    assert cfg.model.lora.rank == 4 and cfg.model.lora.alpha == 16.0 and cfg.train.steps == 3


@pytest.mark.parametrize(
    "override,key",
    [
        ("train.stepz=3", "train.stepz"),
        ("objective.beta=-1", "objective.beta"),
        ("objective.gamma=-0.1", "objective.gamma"),
        ("objective.gamma=lots", "objective.gamma"),
        ("optimizer.lr=0", "optimizer.lr"),
        ("model.lora.rank=0", "model.lora.rank"),
        ("model.lora.rank=2.5", "model.lora.rank"),
        ("train.batch_size=0", "train.batch_size"),
        ("sampling.top_p=1.5", "sampling.top_p"),
        ("sampling.engine=vllm", "sampling.engine"),
        ("oracle.kind=judge", "oracle.kind"),
        ("routes.online_oracle=0.3", "routes.online_oracle"),
        ("objective.kl_direction=forward", "objective.kl_direction"),
        ("optimizer.name=adam", "optimizer.name"),
        ("model.trust_remote_code=maybe", "model.trust_remote_code"),
    ],
)
def test_validation_names_the_key(override, key):
    with pytest.raises(ConfigError) as err:
        load_config(None, [override])
    assert err.value.key == key, str(err.value)
    assert repr(key) in str(err.value)


def test_yaml_and_override_syntax_errors(tmp_path):
    with pytest.raises(ConfigError, match="no such file"):
        load_config(str(tmp_path / "missing.yaml"))
    bad = tmp_path / "bad.yaml"
    bad.write_text("objective: [1, 2\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(str(bad))
    with pytest.raises(ConfigError, match="key=value"):
        parse_overrides(["objective.gamma"])
    assert parse_overrides(["a.b=0.5", "a.c=true", "d=x"]) == {"a": {"b": 0.5, "c": True}, "d": "x"}
    # YAML 1.2 booleans: "no" stays a string (train.mixed_precision=no), only true/false are booleans
    assert parse_overrides(["a.b=no", "a.c=off", "a.d=False"]) == {"a": {"b": "no", "c": "off", "d": False}}
    assert load_config(None, ["train.mixed_precision=no"]).train.mixed_precision == "no"
    # YAML 1.1 reads 1e-3 as a string; the float field still accepts it
    assert load_config(None, ["objective.gamma=1e-3"]).objective.gamma == 1e-3


def test_dataset_routes_need_a_pair_file():
    with pytest.raises(ConfigError) as err:
        load_config(None, ["routes.online_oracle=0.7", "routes.offline_dpo=0.3"])
    assert err.value.key == "data.pairs"


def test_fsdp_refuses_the_merged_weight_sampler():
    with pytest.raises(ConfigError) as err:
        load_config(None, ["train.fsdp=true", "sampling.engine=fast"])
    assert err.value.key == "train.fsdp"


def _write(path, lines):
    path.write_text("\n".join(lines) + "\n")
    return path


def test_prompt_and_pair_files(tmp_path):
    prompts = _write(
        tmp_path / "p.jsonl",
        [json.dumps({"prompt": "hi"}), "", json.dumps({"messages": [{"role": "user", "content": "yo"}]})],
    )
    assert load_prompts(prompts) == ["hi", [{"role": "user", "content": "yo"}]]
    pairs = _write(tmp_path / "d.jsonl", [json.dumps({"prompt": "q", "chosen": "a", "rejected": "b"})])
    (pair,) = load_pairs(pairs)
    assert (pair.prompt, pair.chosen, pair.rejected) == ("q", "a", "b")


@pytest.mark.parametrize(
    "lines,line,match",
    [
        ([json.dumps({"prompt": "ok"}), "{not json"], 2, "not valid JSON"),
        ([json.dumps({"prompt": "ok"}), json.dumps({"text": "x"})], 2, "needs a 'prompt'"),
        (["[1, 2]"], 1, "expected a JSON object"),
        ([json.dumps({"prompt": "ok"}), "", json.dumps({"messages": [{"role": "user"}]})], 3, "messages\\[0\\]"),
        ([json.dumps({"prompt": ""})], 1, "non-empty"),
    ],
)
def test_malformed_prompt_lines_give_file_and_line(tmp_path, lines, line, match):
    path = _write(tmp_path / "p.jsonl", lines)
    with pytest.raises(DataError, match=match) as err:
        load_prompts(path)
    assert f"{path}:{line}:" in str(err.value)


def test_malformed_pair_line(tmp_path):
    path = _write(tmp_path / "d.jsonl", [json.dumps({"prompt": "q", "chosen": "a"})])
    with pytest.raises(DataError, match=f"{path}:1: 'rejected' must be a string"):
        load_pairs(path)
    with pytest.raises(DataError, match="no such file"):
        load_prompts(tmp_path / "nope.jsonl")


@pytest.mark.parametrize("name", sorted(p.name for p in (Path(__file__).parents[1] / "experiments" / "train").glob("*.yaml")))
def test_every_shipped_training_config_loads(name):
    cfg = load_config(str(Path(__file__).parents[1] / "experiments" / "train" / name))
    assert cfg.train.steps >= 1
