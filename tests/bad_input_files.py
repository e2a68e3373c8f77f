"""The small bad files of ``test_bad_inputs.py``: corrupt configs, model directories, prompt and pair
lines, instance files and damaged run directories, made once per test run from the tiny model
and one seconds-long run on it."""

import json
import shutil
from pathlib import Path

import yaml
from tiny_runs import run_overrides

CHEAP = ("run.steps=1", "sampling.max_new_tokens=4", "data.n_eval=2", "run.eval_every=1", "spectral.log_every=0", "run.batch_size=2")
"""Overrides that make a run of the tiny model as short as it gets."""


def cheap_overrides(base_dir, prompt_files, *extra) -> list[str]:
    """The ``--set`` values of a one-step run of the tiny model, then ``extra``."""
    return run_overrides(base_dir, prompt_files, *CHEAP, *extra)


def sets(overrides) -> list[str]:
    return [arg for item in overrides for arg in ("--set", item)]


TEXT_FILES = {
    "bad.yaml": "run: {steps: [1, 2\n",
    "tab.yaml": "run:\n\tsteps: 3\n",
    "list.yaml": "- run\n- model\n",
    "afile": "not a directory\n",
    "prompts_malformed.jsonl": '{"prompt": "1+1="}\n{"prompt" "2+2="}\n',
    "prompts_empty.jsonl": "",
    "prompts_blank.jsonl": "\n   \n\n",
    "prompts_wrongkey.jsonl": '{"question": "1+1="}\n',
    "prompts_wrongtype.jsonl": '{"prompt": 5}\n',
    "prompts_emptystr.jsonl": '{"prompt": ""}\n',
    "prompts_array.jsonl": "[1, 2]\n",
    "prompts_msg.jsonl": '{"messages": [{"role": "user"}]}\n',
    "prompts_msgs_notlist.jsonl": '{"messages": "hello"}\n',
    "prompts_all_assistant.jsonl": '{"messages": [{"role": "assistant", "content": "hi"}]}\n',
    "prompts.txt": "1+1=\n",
    "prompts.json": "[{\"prompt\": 1",
    "pairs_norej.jsonl": '{"prompt": "1+1=", "chosen": "2"}\n',
    "pairs_rejnum.jsonl": '{"prompt": "1+1=", "chosen": "2", "rejected": 3}\n',
    "pairs_noprompt.jsonl": '{"chosen": "2", "rejected": "3"}\n',
    "pairs_conv_two_replies.jsonl": json.dumps({
        "prompt": [{"role": "user", "content": "1+1="}],
        "chosen": [{"role": "assistant", "content": "2"}, {"role": "assistant", "content": "!"}],
        "rejected": [{"role": "assistant", "content": "3"}],
    }) + "\n",
    "pairs_conv_noprompt.jsonl": json.dumps({
        "chosen": [{"role": "assistant", "content": "2"}], "rejected": [{"role": "assistant", "content": "3"}],
    }) + "\n",
    "pairs_conv_badmsg.jsonl": json.dumps({"prompt": "1+1=", "chosen": [{"role": "assistant"}], "rejected": [{"role": "assistant", "content": "3"}]}) + "\n",
    "pairs_pku_id.jsonl": json.dumps({"prompt": "1+1=", "response_0": "2", "response_1": "3", "better_response_id": 2}) + "\n",
    "pairs_pku_noid.jsonl": json.dumps({"prompt": "1+1=", "response_0": "2", "response_1": "3"}) + "\n",
    "pairs_pku_resp.jsonl": json.dumps({"prompt": "1+1=", "response_0": 2, "response_1": "3", "better_response_id": 0}) + "\n",
    "pairs_empty.jsonl": "",
    "inst_malformed.json": '{"features": [[[1, 0]], "beta": ',
    "inst_array.json": "[]",
    "metrics_malformed.jsonl": '{"step": 0, "eval/reward_mean": 0.5}\n{"step": 1,\n',
    "metrics_noeval.jsonl": '{"step": 1, "losses/loss": 0.5}\n',
    "study_unknown.yaml": "bogus: 1\n",
    "study_nested.yaml": "sweep:\n  bogus: [1]\n",
    "study_recipe.yaml": "finetune:\n  stepz: 4\n",
    "study_scalar.yaml": "organism:\n  recipe: huge\n",
    "study_opt.yaml": "sweep:\n  optimizers: adamw\n",
    "study_lrs.yaml": "sweep:\n  optimizers: [adamw, sgd]\n  lrs: {sgd: []}\n",
}

BINARY_FILES = {
    "prompts_nonutf8.jsonl": b'{"prompt": "1+1="}\n\xff\xfe{"prompt": "2+2="}\n',
    "inst_nonutf8.json": b'\xff{"beta": 1}',
    "nonutf8.yaml": b"run:\n  steps: \xff\n",
    "pairs_nonutf8.jsonl": b'{"prompt": "1+1=", "chosen": "2", "rejected": "3"}\n\xff\n',
}


def good_instance() -> dict:
    """A valid instance file's object: 2 contexts, 2 responses, d = 2."""
    return {
        "features": [[[1.0, 0.0], [0.0, 1.0]], [[0.5, 0.5], [0.0, -1.0]]],
        "context_probs": [0.5, 0.5],
        "reward": [[1.0, 0.0], [0.0, 1.0]],
        "theta_ref": [0.0, 0.0],
        "beta": 1.0,
        "gamma": 2.0,
        "radius": 1.0,
        "kl": "ref_to_policy",
    }


INSTANCE_CHANGES = {
    "missing": {"reward": None},
    "nan": {"reward": [[float("nan"), 0.0], [0.0, 1.0]]},
    "negprob": {"context_probs": [1.5, -0.5]},
    "sum": {"context_probs": [0.7, 0.7]},
    "shape": {"theta_ref": [0.0, 0.0, 0.0, 0.0]},
    "ragged": {"features": [[[1.0, 0.0], [0.0]], [[0.5, 0.5], [0.0, -1.0]]]},
    "betastr": {"beta": "1"},
    "unknown": {"extra": 1},
    "kllist": {"kl": ["x"]},
    "beta1e300": {"beta": 1e300},
    "gamma1e300": {"gamma": 1e300},
    "radius1e300": {"radius": 1e300},
    "features1e300": {"features": [[[1e300, 0.0], [0.0, 1.0]], [[0.5, 0.5], [0.0, -1.0]]]},
    "reward1e300": {"reward": [[1e300, 0.0], [0.0, 1.0]]},
    "oneresponse": {"features": [[[1.0, 0.0]], [[0.5, 0.5]]], "reward": [[1.0], [0.0]]},
    "radius0": {"radius": 0},
    "betanull": {"beta": None},
    "featuresstr": {"features": "abc"},
    "empty": {"features": [], "context_probs": [], "reward": [], "theta_ref": []},
}


def write_instances(root: Path) -> None:
    for name, changes in INSTANCE_CHANGES.items():
        data = {**good_instance(), **changes}
        data = {k: v for k, v in data.items() if v is not None or k != "reward"}
        (root / f"inst_{name}.json").write_text(json.dumps(data))


def write_models(root: Path, base_dir: Path) -> None:
    """Model directories that do not load, each a different way."""
    (root / "model_corrupt").mkdir()
    (root / "model_corrupt" / "config.json").write_text("{not json")
    shutil.copytree(base_dir, root / "model_notype")
    config = json.loads((base_dir / "config.json").read_text())
    (root / "model_notype" / "config.json").write_text(json.dumps({k: v for k, v in config.items() if k != "model_type"}))
    shutil.copytree(base_dir, root / "model_noweights")
    (root / "model_noweights" / "model.safetensors").unlink()
    shutil.copytree(base_dir, root / "model_badweights")
    weights = root / "model_badweights" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    write_other_model(root / "model_narrow", base_dir)


def write_other_model(out: Path, base_dir: Path) -> None:
    """A model with the tiny model's tokenizer and narrower layers (an adapter of the tiny model
    does not fit it)."""
    from transformers import AutoConfig, Qwen3ForCausalLM

    from sail.models.tiny import tiny_qwen3_config

    vocab = AutoConfig.from_pretrained(base_dir).vocab_size
    Qwen3ForCausalLM(tiny_qwen3_config(vocab_size=vocab, hidden_size=32)).save_pretrained(out)
    for name in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja"):
        if (base_dir / name).is_file():
            shutil.copy2(base_dir / name, out / name)


def _edit_config(run: Path, edit) -> None:
    path = run / "config.yaml"
    data = yaml.safe_load(path.read_text())
    edit(data["config"])
    path.write_text(yaml.safe_dump(data, sort_keys=False))


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 3])


def write_runs(root: Path, run: Path, other_model: Path) -> None:
    """Run directories: the finished ``smoke`` run (2 steps, a checkpoint after each) and copies
    damaged one way each."""
    shutil.copytree(run, root / "smoke")

    def variant(name: str, change) -> None:
        shutil.copytree(run, root / name)
        change(root / name)

    variant("rz_rank", lambda r: _edit_config(r, lambda c: c["model"]["lora"].update(rank=8)))  # the checkpoints' is 4
    variant("rz_model", lambda r: _edit_config(r, lambda c: c["model"].update(name_or_path=str(other_model))))
    variant("rz_targets", lambda r: _edit_config(r, lambda c: c["model"]["lora"].update(target_modules=["q_proj"])))
    variant("rz_badyaml", lambda r: (r / "config.yaml").write_text("config: [unclosed\n"))
    variant("rz_nokey", lambda r: (r / "config.yaml").write_text("format: 2\nenvironment: {}\n"))
    variant("rz_yamllist", lambda r: (r / "config.yaml").write_text("- format\n- config\n"))
    variant("rz_format", lambda r: (r / "config.yaml").write_text((r / "config.yaml").read_text().replace("format: 2", "format: 99")))
    variant("rz_unknownkey", lambda r: _edit_config(r, lambda c: c["run"].update(bogus=1)))
    variant("rz_badvalue", lambda r: _edit_config(r, lambda c: c["run"].update(steps="many")))
    variant("rz_nonutf8", lambda r: (r / "config.yaml").write_bytes(b"format: 2\nconfig: \xff\n"))
    variant("rz_noconfig", lambda r: (r / "config.yaml").unlink())

    def no_checkpoints(r: Path) -> None:
        for c in r.glob("checkpoint-*"):
            shutil.rmtree(c)

    variant("rz_nockpt", no_checkpoints)
    variant("rz_corruptckpt", lambda r: [_truncate(p) for p in r.glob("checkpoint-*/adapter_model.safetensors")])
    variant("rz_corruptopt", lambda r: [_truncate(p) for p in r.glob("checkpoint-*/optimizer.pt")])
    variant("rz_newest_corrupt", lambda r: _truncate(r / "checkpoint-2" / "adapter_model.safetensors"))

    def bad_state(r: Path) -> None:
        for path in r.glob("checkpoint-*/state.json"):
            state = json.loads(path.read_text())
            path.write_text(json.dumps({**state, "step": "x"}))

    variant("rz_badstate", bad_state)
    variant("rz_noadapter", lambda r: [no_checkpoints(r), shutil.rmtree(r / "adapter")])
    variant("rz_nometrics", lambda r: (r / "metrics.jsonl").unlink())
    variant("rz_badmetrics", lambda r: shutil.copy2(root / "metrics_malformed.jsonl", r / "metrics.jsonl"))
    variant("rz_noeval", lambda r: shutil.copy2(root / "metrics_noeval.jsonl", r / "metrics.jsonl"))
    (root / "nonempty").mkdir()
    (root / "nonempty" / "keep.txt").write_text("x")


def make_fixtures(root: Path, base_dir: Path, run: Path) -> Path:
    """Every file the cases name, under ``root``."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "empty_dir").mkdir()
    for name, text in TEXT_FILES.items():
        (root / name).write_text(text)
    for name, data in BINARY_FILES.items():
        (root / name).write_bytes(data)
    write_instances(root)
    write_models(root, base_dir)
    write_runs(root, run, root / "model_narrow")
    return root
