"""Training config: errors name the key (data files: tests/test_data.py)."""

from pathlib import Path

import pytest

import dataclasses

import yaml

from sail.cli import DEFAULT_RECIPE, main
from sail.config import ConfigError, describe, parse_overrides
from sail.train.commands import config_from_arguments
from sail.train.config import TrainConfig, check_complete, load_config
from sail.train.recipes import recipe_names, recipe_path

ROOT = Path(__file__).parents[1]

# What `sail train` ran without arguments before the recipe existed (the trainer's defaults then, plus
# the keys added since at the values that change nothing): the default recipe must give exactly this
# config, so the demo's figures cannot move.
EMBEDDED_DEFAULT_RUN = {
    "model": {"name_or_path": "sail:em-misaligned", "dtype": "float32", "trust_remote_code": False,
              "lora": {"rank": 8, "alpha": 16.0, "rslora": False, "dropout": 0.0,
                       "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]},
              "trainable": "lora", "init_adapter": "", "reference": "base"},
    "sampling": {"max_new_tokens": 40, "temperature": 1.0, "top_p": 1.0, "stop_at_eos": True, "engine": "hf", "compile": False},
    "objective": {"beta": 0.1, "gamma": 0.001, "kl_direction": "ref_to_policy", "kl_estimator": "sequence",
                  "kl_score_correction": False, "score_term": True, "baseline": "ema", "radius": None},
    # the judge moved to sail.em.judges.programmatic (the same function; sail.train.run_dir maps the old path)
    "oracle": {"kind": "callable", "path": "sail.em.judges.programmatic:alignment_reward", "weight": 1.0, "batch_size": 16,
               "max_length": 1024, "dtype": "float32", "device": "", "trust_remote_code": False, "label_mode": "sample", "additional_rewards": [],
               "missing_eos_penalty": 0.0},
    "routes": {"online_oracle": 1.0, "online_self": 0.0, "dataset_self": 0.0, "offline_dpo": 0.0},
    "optimizer": {"name": "adamw", "lr": 0.001, "weight_decay": 0.0, "options": {}},
    "schedule": {"name": "constant", "warmup_steps": 0},
    "spectral": {"penalty_weight": 0.0, "penalty_kind": "pr", "reduction": "mean", "eps": 1e-12, "renyi_order": 2, "log_every": 10},
    "data": {"prompts": "", "hf_dataset": "", "hf_column": "prompt", "pairs": "", "split": "train", "subset": "", "limit": 0,
             "prompt_column": "", "pair_format": "auto", "chosen_column": "chosen", "rejected_column": "rejected",
             "pku_preference": "better", "max_prompt_length": 0, "truncate": "left", "max_response_length": 0,
             "chat_template_kwargs": {}, "eval_prompts": "", "eval_split": "", "eval_fraction": 0.0, "n_eval": 200},
    "run": {"steps": 100, "epochs": None, "batch_size": 16, "grad_accum": 1, "seed": 0, "eval_every": 20, "save_every": 10,
            "save_total_limit": 0, "max_nonfinite": 3, "mixed_precision": "no", "ema_decay": 0.9, "max_grad_norm": None, "sort_by_length": True,
            "activation_checkpointing": False, "logprob_chunk": 0, "eval_metrics": "sail.em.metrics:em_metrics",
            "completions_per_eval": 8, "fsdp": False, "tensorboard": False, "wandb": False, "wandb_project": "",
            "wandb_run_name": "", "progress": True},
}


def test_defaults_are_neutral_and_follow_the_authors_public_settings():
    cfg = TrainConfig()
    assert cfg.objective.beta == 0.1 and cfg.objective.gamma == 1e-3 and cfg.objective.baseline == "ema"
    assert len(cfg.model.lora.target_modules) == 7
    assert cfg.model.trust_remote_code is False and cfg.oracle.trust_remote_code is False
    # no model, reward or task is named: a run on a hub model is never scored by the EM judge
    assert cfg.model.name_or_path == "" and cfg.oracle.path == "" and cfg.run.eval_metrics == ""
    with pytest.raises(ConfigError) as err:
        check_complete(cfg)
    assert err.value.key == "model.name_or_path"
    with pytest.raises(ConfigError) as err:
        check_complete(load_config(None, ["model.name_or_path=Qwen/Qwen3-0.6B"]))
    assert err.value.key == "oracle.path"


def test_the_default_recipe_is_the_embedded_run_it_replaced():
    assert DEFAULT_RECIPE in recipe_names()
    cfg = config_from_arguments([], [], DEFAULT_RECIPE)
    assert dataclasses.asdict(cfg) == EMBEDDED_DEFAULT_RUN
    check_complete(cfg)
    # by name, and with overrides on top
    again = config_from_arguments([DEFAULT_RECIPE], ["run.steps=7"], None)
    assert again.run.steps == 7 and dataclasses.asdict(again)["model"] == EMBEDDED_DEFAULT_RUN["model"]
    assert recipe_path(DEFAULT_RECIPE).parent.name == "recipes"


def test_help_lists_every_key_with_its_type_default_and_docstring(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["train", "--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    rows = describe(TrainConfig)
    assert len(rows) > 50
    for key, type_name, default, doc in rows:
        assert doc, f"{key} has no docstring"
        assert f"  {key}: {type_name} = {default}\n" in out
        assert " ".join(doc.split()[:4]) in " ".join(out.split())
    assert "'lora' | 'head'" in out and DEFAULT_RECIPE in out


def test_a_renamed_section_is_named_in_the_error():
    with pytest.raises(ConfigError, match="renamed to 'run'") as err:
        load_config(None, ["train.steps=3"])
    assert err.value.key == "train"


def test_overrides_keep_other_defaults_of_a_section(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("objective:\n  gamma: 0.05\nrun:\n  steps: 3\n")
    cfg = load_config(str(path), ["model.lora.rank=4", "objective.kl_direction=policy_to_ref"])
    assert cfg.objective.gamma == 0.05 and cfg.objective.beta == 0.1 and cfg.objective.baseline == "ema"
    assert cfg.objective.kl_direction == "policy_to_ref"
    assert cfg.model.lora.rank == 4 and cfg.model.lora.alpha == 16.0 and cfg.run.steps == 3


@pytest.mark.parametrize(
    "override,key",
    [
        ("run.stepz=3", "run.stepz"),
        ("objective.beta=-1", "objective.beta"),
        ("objective.gamma=-0.1", "objective.gamma"),
        ("objective.gamma=lots", "objective.gamma"),
        ("optimizer.lr=0", "optimizer.lr"),
        ("model.lora.rank=0", "model.lora.rank"),
        ("model.lora.rank=2.5", "model.lora.rank"),
        ("run.batch_size=0", "run.batch_size"),
        ("sampling.top_p=1.5", "sampling.top_p"),
        ("sampling.engine=vllm", "sampling.engine"),
        ("oracle.kind=judge", "oracle.kind"),
        ("routes.online_oracle=0.3", "routes"),
        ("routes.online_self=-0.5", "routes.online_self"),
        ("model.trainable=full", "model.trainable"),
        ("run.mixed_precision=fp8", "run.mixed_precision"),
        ("spectral.penalty_kind=nuclear", "spectral.penalty_kind"),
        ("objective.kl_direction=forward", "objective.kl_direction"),
        ("optimizer.name=adagrad", "optimizer.name"),
        ("model.trust_remote_code=maybe", "model.trust_remote_code"),
        ("data.limit=-1", "data.limit"),
        ("data.max_prompt_length=-5", "data.max_prompt_length"),
        ("data.eval_fraction=1.0", "data.eval_fraction"),
        ("data.pair_format=ultrafeedback", "data.pair_format"),
        ("data.truncate=right", "data.truncate"),
        ("data.pku_preference=kinder", "data.pku_preference"),
        ("data.chat_template_kwargs=3", "data.chat_template_kwargs"),
        ("data.split=", "data.split"),
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
    # YAML 1.2 booleans: "no" stays a string (run.mixed_precision=no), only true/false are booleans
    assert parse_overrides(["a.b=no", "a.c=off", "a.d=False"]) == {"a": {"b": "no", "c": "off", "d": False}}
    assert load_config(None, ["run.mixed_precision=no"]).run.mixed_precision == "no"
    # YAML 1.1 reads 1e-3 as a string; the float field still accepts it
    assert load_config(None, ["objective.gamma=1e-3"]).objective.gamma == 1e-3


def test_dataset_routes_need_a_pair_file():
    from sail.train.prompts import load_run_data

    cfg = load_config(None, ["model.name_or_path=sail:tiny-task", "routes.online_oracle=0.7", "routes.offline_dpo=0.3"])
    with pytest.raises(ConfigError) as err:
        load_run_data(cfg, log=False)  # read before any model loads
    assert err.value.key == "data.pairs"


def test_fsdp_refuses_the_merged_weight_sampler():
    with pytest.raises(ConfigError) as err:
        load_config(None, ["run.fsdp=true", "sampling.engine=fast"])
    assert err.value.key == "run.fsdp"


def _leaves(data: dict, prefix: str = ""):
    for key, value in data.items():
        if isinstance(value, dict) and key != "options":
            yield from _leaves(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", value


def _value(cfg, dotted: str):
    for part in dotted.split("."):
        cfg = getattr(cfg, part)
    return cfg


@pytest.mark.parametrize(
    "configs",
    [[str(p.relative_to(ROOT))] for p in sorted((ROOT / "experiments" / "train").glob("*.yaml")) if p.name != "cpu_two_processes.yaml"]
    + [["em-realign", "experiments/train/cpu_two_processes.yaml"]],
)
def test_every_shipped_training_config_loads_with_its_values(configs):
    """Each shipped training config (layered on the recipe its comment names) gives a complete
    config in which every key of the file has the file's value."""
    cfg = config_from_arguments([str(ROOT / c) if c.endswith(".yaml") else c for c in configs], [], None)
    check_complete(cfg)
    data = yaml.safe_load((ROOT / configs[-1]).read_text())
    leaves = dict(_leaves(data))
    assert leaves
    for key, value in leaves.items():
        assert _value(cfg, key) == value, key


def test_the_keys_named_in_the_from_trl_table_exist():
    """docs/training.md maps TRL's names to ours: every config key the table names is a real key."""
    import re

    text = (ROOT / "docs" / "training.md").read_text()
    table = text.split("## From TRL", 1)[1].split("\n## ", 1)[0]
    keys = {row[0] for row in describe(TrainConfig)}
    sections = {key.split(".")[0] for key in keys}
    named = set()
    for row in (line for line in table.splitlines() if line.startswith("| ") and "`" in line):
        ours = row.split(" | ")[1]
        for name in re.findall(r"`([a-z_]+(?:\.[a-z_]+)+)`", ours):
            if name.split(".")[0] in sections:
                named.add(name)
    assert len(named) > 25
    assert named <= keys, sorted(named - keys)


def test_a_reward_model_runs_its_own_code_only_when_its_own_key_says_so(monkeypatch, tmp_path):
    """`oracle.trust_remote_code`, not `model.trust_remote_code`, decides for the reward model, whose
    weights are read from safetensors only."""
    import transformers

    from sail.train.rewards import build_scorer

    class Loaded(Exception):
        pass

    seen = {}
    (tmp_path / "config.json").write_text('{"model_type": "qwen3", "architectures": ["Qwen3ForSequenceClassification"]}')

    def load_model(path, **kwargs):
        seen["model"] = kwargs
        raise Loaded

    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", lambda path, **kwargs: seen.setdefault("tokenizer", kwargs))
    monkeypatch.setattr(transformers.AutoModelForSequenceClassification, "from_pretrained", load_model)
    for overrides, trusted in ((["model.trust_remote_code=true"], False), (["oracle.trust_remote_code=true"], True)):
        seen.clear()
        with pytest.raises(Loaded):
            build_scorer(load_config(None, ["oracle.kind=reward_model", f"oracle.path={tmp_path}", *overrides]))
        assert seen["tokenizer"]["trust_remote_code"] is seen["model"]["trust_remote_code"] is trusted
        assert seen["model"]["use_safetensors"] is True
