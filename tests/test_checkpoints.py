"""Step-numbered checkpoints on a quickly built tiny Qwen3: what they hold and that PEFT loads them,
their marker and its verification, the total limit, crash debris and damaged checkpoints, old run
directories, the logs after a resume, resume with more steps (and the keys it refuses), `sail
export`, and starting from a given adapter with either reference. A save crashed at each of its disk
operations is in test_checkpoint_faults.py."""

import hashlib
import json
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file
from tiny_runs import base_policy, run_overrides

from sail.cli import main
from sail.config import ConfigError
from sail.tasks import default as task
from sail.train.checkpoint import CheckpointError, config_digest, find_checkpoint, list_checkpoints, read_weights, verify_checkpoint
from sail.train.config import load_config
from sail.train.run_dir import SAFE_ON_RESUME, read_run_config, resolved_config, resume_config, write_run_config
from sail.train.trainer import Trainer

CHECKPOINT_FILES = {"adapter_config.json", "adapter_model.safetensors", "optimizer.pt", "generator.pt", "state.json", "train_config.json", "COMPLETE"}


def _train(run, base_dir, prompt_files, *extra) -> int:
    overrides = run_overrides(base_dir, prompt_files, "spectral.log_every=0", *extra)
    return main(["train", *sum((["--set", o] for o in overrides), []), "--output-dir", str(run)])


def _checkpoint_dirs(run) -> list[str]:
    return sorted(p.name for p in run.iterdir() if p.name.startswith("checkpoint"))


def _same_tensors(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def _training_rows(run) -> list[dict]:
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if not k.startswith("perf/")} for r in rows]


@pytest.fixture(scope="module")
def run3(base_dir, prompt_files, tmp_path_factory):
    """3 steps, a checkpoint every step, at most 2 kept."""
    run = tmp_path_factory.mktemp("run3") / "run"
    assert _train(run, base_dir, prompt_files, "run.save_total_limit=2") == 0
    return run


def test_checkpoints_are_numbered_limited_and_load_in_peft(run3, base_dir):
    from peft import PeftModel, get_peft_model_state_dict
    from transformers import AutoModelForCausalLM

    assert _checkpoint_dirs(run3) == ["checkpoint-2", "checkpoint-3"]  # checkpoint-1 dropped by the limit
    assert [c.step for c in list_checkpoints(run3)] == [2, 3] and find_checkpoint(run3) == run3 / "checkpoint-3"
    last = run3 / "checkpoint-3"
    assert CHECKPOINT_FILES <= {p.name for p in last.iterdir()}
    assert json.loads((last / "state.json").read_text())["step"] == 3
    saved = load_file(last / "adapter_model.safetensors")
    assert saved and not any(".default." in k for k in saved)  # PEFT's saved names
    assert _same_tensors(saved, load_file(run3 / "adapter" / "adapter_model.safetensors"))  # the last one is the final adapter
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base_dir), last)
    assert _same_tensors({k: v.detach() for k, v in get_peft_model_state_dict(model).items()}, saved)
    previous = load_file(run3 / "checkpoint-2" / "adapter_model.safetensors")
    assert not _same_tensors(previous, saved)


def test_resume_refuses_fewer_steps_than_done(run3, capsys):
    before = {p: p.stat().st_mtime_ns for p in run3.rglob("*")}
    assert main(["train", "--resume", str(run3), "--set", "run.steps=2"]) == 2
    assert "checkpoint-3 is at step 3, past the run's 2 steps" in capsys.readouterr().err
    assert {p: p.stat().st_mtime_ns for p in run3.rglob("*")} == before  # nothing written


def test_the_marker_records_every_file_and_the_config(run3):
    last = run3 / "checkpoint-3"
    marker = json.loads((last / "COMPLETE").read_text())
    assert marker["step"] == 3
    assert set(marker["files"]) == {p.name for p in last.iterdir()} - {"COMPLETE"}
    for name, record in marker["files"].items():
        data = (last / name).read_bytes()
        assert record == {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    resolved = resolved_config(read_run_config(run3))
    assert json.loads((last / "train_config.json").read_text()) == resolved
    assert marker["config_sha256"] == config_digest(resolved)
    assert verify_checkpoint(last) == marker


@pytest.mark.parametrize(
    "damage,reason",
    [
        (lambda c: (c / "optimizer.pt").unlink(), "optimizer.pt is missing (its marker lists it)"),
        (lambda c: (c / "state.json").write_text((c / "state.json").read_text() + " "), "state.json has"),
        (lambda c: (c / "generator.pt").write_bytes(bytes(b ^ 1 for b in (c / "generator.pt").read_bytes())), "generator.pt does not match the sha256"),
        (lambda c: (c / "COMPLETE").write_text('{"files": 3'), "marker is not the JSON record of its files"),
    ],
)
def test_a_checkpoint_that_does_not_match_its_marker_is_skipped_saying_why(run3, tmp_path, damage, reason):
    run = tmp_path / "run"
    shutil.copytree(run3, run)
    damage(run / "checkpoint-3")
    with pytest.raises(CheckpointError) as err:
        verify_checkpoint(run / "checkpoint-3")
    assert reason in str(err.value) and str(run / "checkpoint-3") in str(err.value)
    assert find_checkpoint(run) == run / "checkpoint-2"
    (run / "checkpoint-2" / "COMPLETE").write_text("ok")  # a marker from before markers recorded files
    assert verify_checkpoint(run / "checkpoint-2") == {} and find_checkpoint(run) == run / "checkpoint-2"


class _Killed(Exception):
    pass


class _KillAfterStep:
    def __init__(self, step):
        self.step = step

    def on_step(self, trainer, row):
        if trainer.state["step"] == self.step:
            raise _Killed


def test_a_resumed_run_logs_each_step_once(base_dir, prompt_files, tmp_path):
    """Killed once step 3 is logged but before its checkpoint: the resume from checkpoint-2 drops
    the rows of step 3 from metrics.jsonl, spectra.jsonl and completions.jsonl and writes them again."""
    cfg = load_config(None, run_overrides(base_dir, prompt_files, "run.steps=4", "run.eval_every=1", "spectral.log_every=1",
                                          "sampling.max_new_tokens=4", "data.n_eval=2"))
    Trainer(cfg, tmp_path / "full").run()
    run = tmp_path / "run"
    with pytest.raises(_Killed):
        Trainer(cfg, run, callbacks=[_KillAfterStep(3)]).run()
    spectra = lambda r: [json.loads(line) for line in (r / "spectra.jsonl").read_text().splitlines()]  # noqa: E731
    assert find_checkpoint(run) == run / "checkpoint-2" and 3 in {row["step"] for row in spectra(run)}
    Trainer(cfg, run, resume=True).run()
    steps = [row["step"] for row in spectra(run) if row["kind"] == "all"]
    assert steps == [1, 2, 3, 4] and spectra(run) == spectra(tmp_path / "full")
    assert _training_rows(run) == _training_rows(tmp_path / "full")
    completions = lambda r: (r / "completions.jsonl").read_text()  # noqa: E731
    assert completions(run) == completions(tmp_path / "full")


def test_weights_that_do_not_load_or_are_not_finite_are_refused(tmp_path):
    save_file({"delta": torch.tensor([1.0, float("nan")])}, str(tmp_path / "nan.safetensors"))
    with pytest.raises(CheckpointError, match="not finite"):
        read_weights(tmp_path / "nan.safetensors")
    save_file({"delta": torch.ones(64)}, str(tmp_path / "cut.safetensors"))
    data = (tmp_path / "cut.safetensors").read_bytes()
    (tmp_path / "cut.safetensors").write_bytes(data[: len(data) - 40])
    with pytest.raises(CheckpointError, match="does not load"):
        read_weights(tmp_path / "cut.safetensors")


def _remark(checkpoint) -> None:
    """Make the marker of ``checkpoint`` agree with its files again (damage the marker cannot see)."""
    marker = json.loads((checkpoint / "COMPLETE").read_text())
    for name in marker["files"]:
        data = (checkpoint / name).read_bytes()
        marker["files"][name] = {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    (checkpoint / "COMPLETE").write_text(json.dumps(marker))


def test_a_damaged_newest_checkpoint_falls_back_and_debris_is_cleaned(run3, base_dir, prompt_files, tmp_path, capsys):
    """checkpoint-3 with non-finite weights (its marker agreeing), an unfinished checkpoint-4.tmp and
    a checkpoint-5 without its marker (as a kill leaves them): the resume starts from checkpoint-2,
    repeats step 3 exactly, and the next save clears the rest."""
    run = tmp_path / "run"
    shutil.copytree(run3, run)
    (run / "summary.json").unlink()
    shutil.rmtree(run / "adapter")
    weights = run / "checkpoint-3" / "adapter_model.safetensors"
    save_file({k: torch.full_like(v, float("nan")) for k, v in load_file(weights).items()}, str(weights))
    _remark(run / "checkpoint-3")
    (run / "checkpoint-4.tmp").mkdir()
    (run / "checkpoint-4.tmp" / "state.json").write_text("{")
    (run / "checkpoint-5").mkdir()
    capsys.readouterr()
    assert main(["train", "--resume", str(run)]) == 0
    err = capsys.readouterr().err
    assert "skipped a checkpoint" in err and "checkpoint-3" in err and "not finite" in err
    assert _same_tensors(load_file(run / "adapter" / "adapter_model.safetensors"), load_file(run3 / "adapter" / "adapter_model.safetensors"))
    assert _checkpoint_dirs(run) == ["checkpoint-2", "checkpoint-3"]
    assert _same_tensors(load_file(weights), load_file(run3 / "checkpoint-3" / "adapter_model.safetensors"))
    assert _training_rows(run) == _training_rows(run3)


def test_an_old_single_checkpoint_directory_resumes(run3, base_dir, prompt_files, tmp_path):
    """A run directory from before step numbering: ``checkpoint/`` with ``adapter.safetensors`` under
    the model's parameter names, read as the checkpoint of its recorded step (2 here)."""
    run = tmp_path / "run"
    shutil.copytree(run3, run)
    for path in [run / "adapter", run / "checkpoint-3"]:
        shutil.rmtree(path)
    (run / "summary.json").unlink()
    trainer = Trainer(read_run_config(run), run, resume=True)  # at step 2, from checkpoint-2
    old = run / "checkpoint"
    old.mkdir()
    named = trainer._named_trainable()
    assert all(".default." in k for k in named)
    save_file({k: v.detach().contiguous() for k, v in named.items()}, str(old / "adapter.safetensors"))
    torch.save(trainer.optimizer.state_dict(), old / "optimizer.pt")
    torch.save(trainer.generator.get_state(), old / "generator.pt")
    (old / "state.json").write_text(json.dumps(trainer.state))
    (old / "COMPLETE").write_text("ok")
    shutil.rmtree(run / "checkpoint-2")
    assert [(c.step, c.path.name) for c in list_checkpoints(run)] == [(2, "checkpoint")]
    assert main(["export", str(run), "--checkpoint", "2", "--output", str(tmp_path / "exported")]) == 0  # as a PEFT adapter
    assert _same_tensors(load_file(tmp_path / "exported" / "adapter_model.safetensors"), load_file(run3 / "checkpoint-2" / "adapter_model.safetensors"))
    assert main(["train", "--resume", str(run)]) == 0
    assert _same_tensors(load_file(run / "adapter" / "adapter_model.safetensors"), load_file(run3 / "adapter" / "adapter_model.safetensors"))
    assert _checkpoint_dirs(run) == ["checkpoint", "checkpoint-3"]


@pytest.mark.parametrize("engine", ["hf", "fast"])
def test_more_steps_on_resume_continue_exactly(base_dir, prompt_files, tmp_path, engine):
    """3 steps, then ``--resume --set run.steps=5``: the same adapter, bit for bit, and the same
    metrics as 5 steps in one go."""
    assert _train(tmp_path / "full", base_dir, prompt_files, "run.steps=5", f"sampling.engine={engine}") == 0
    short = tmp_path / "short"
    assert _train(short, base_dir, prompt_files, "run.steps=3", f"sampling.engine={engine}") == 0
    assert main(["train", "--resume", str(short), "--set", "run.steps=5", "--set", "run.save_total_limit=1"]) == 0
    full = load_file(tmp_path / "full" / "adapter" / "adapter_model.safetensors")
    assert _same_tensors(load_file(short / "adapter" / "adapter_model.safetensors"), full)
    assert _training_rows(short) == _training_rows(tmp_path / "full")
    assert read_run_config(short).run.steps == 5  # a later plain --resume keeps the new total
    assert _checkpoint_dirs(short) == ["checkpoint-5"]
    # the changed keys are in the next checkpoint's config and digest too
    resolved = resolved_config(read_run_config(short))
    assert json.loads((short / "checkpoint-5" / "train_config.json").read_text()) == resolved
    assert json.loads((short / "checkpoint-5" / "COMPLETE").read_text())["config_sha256"] == config_digest(resolved)
    assert resolved["run"]["steps"] == 5 and resolved["run"]["save_total_limit"] == 1


def test_resume_refuses_other_keys_and_more_steps_under_a_decaying_schedule(tmp_path, capsys):
    base = ["model.name_or_path=sail:em-misaligned", "oracle.path=pkg.mod:reward", "run.steps=7"]
    for name in ("constant", "linear"):
        (tmp_path / name).mkdir()
    write_run_config(tmp_path / "constant", load_config(None, [*base, "schedule.warmup_steps=2"]), {})
    write_run_config(tmp_path / "linear", load_config(None, [*base, "schedule.name=linear"]), {})
    for key in ("model.lora.rank=4", "optimizer.lr=0.1", "run.seed=3"):
        assert main(["train", "--resume", str(tmp_path / "constant"), "--set", key]) == 2
        err = capsys.readouterr().err.strip()
        assert "\n" not in err and f"'{key.split('=')[0]}'" in err and "cannot change on --resume" in err
    assert main(["train", "--resume", str(tmp_path / "constant"), "--config", "more.yaml"]) == 2
    assert "drop --config" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="schedule.name=linear") as err:
        resume_config(tmp_path / "linear", ["run.steps=9"])
    assert err.value.key == "run.steps"
    # the safe keys change; constant (with warm-up) extends; linear keeps its total
    changed = resume_config(tmp_path / "constant", ["run.steps=9", "run.eval_every=2", "spectral.log_every=0", "run.progress=false"])
    assert (changed.run.steps, changed.run.eval_every, changed.spectral.log_every, changed.run.progress) == (9, 2, 0, False)
    assert resume_config(tmp_path / "linear", ["run.steps=7", "run.save_every=3"]).run.save_every == 3
    with pytest.raises(ConfigError, match="must be >= 1"):
        resume_config(tmp_path / "constant", ["run.steps=0"])
    assert "run.steps" in SAFE_ON_RESUME and "model.lora.rank" not in SAFE_ON_RESUME


def _logits(model, ids):
    with torch.no_grad():
        return model(input_ids=ids).logits


def test_export_writes_the_adapter_or_the_merged_model(run3, base_dir, tmp_path, capsys):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    adapter, merged = tmp_path / "adapter", tmp_path / "merged"
    assert main(["export", str(run3), "--output", str(adapter)]) == 0
    assert {p.name for p in adapter.iterdir()} == {"adapter_config.json", "adapter_model.safetensors"}
    assert _same_tensors(load_file(adapter / "adapter_model.safetensors"), load_file(run3 / "checkpoint-3" / "adapter_model.safetensors"))
    assert main(["export", str(run3), "--checkpoint", "2", "--merge", "--output", str(merged)]) == 0
    assert "merged model from" in capsys.readouterr().out
    tokenizer = AutoTokenizer.from_pretrained(merged)
    ids = tokenizer.apply_chat_template([{"role": "user", "content": task.sample_prompts(1)[0]}], add_generation_prompt=True, return_tensors="pt")
    ids = ids["input_ids"] if hasattr(ids, "keys") else ids
    adapted = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base_dir), run3 / "checkpoint-2").eval()
    torch.testing.assert_close(_logits(AutoModelForCausalLM.from_pretrained(merged), ids), _logits(adapted, ids), rtol=0, atol=1e-5)
    assert (_logits(adapted, ids) - _logits(AutoModelForCausalLM.from_pretrained(base_dir), ids)).abs().max() > 1e-6

    bad = [
        (["export", str(run3), "--output", str(adapter)], "is not empty; choose another directory or pass --force"),
        (["export", str(tmp_path / "nowhere"), "--output", str(tmp_path / "x")], "not a sail run directory"),
        (["export", str(run3), "--checkpoint", "1", "--output", str(tmp_path / "x")], "no complete checkpoint of step 1 (complete ones: 2, 3)"),
        (["export", str(run3), "--output", str(run3.parent)], "holds the run directory"),
    ]
    capsys.readouterr()
    for args, message in bad:
        assert main(args) == 2
        err = capsys.readouterr().err.strip()
        assert "\n" not in err and err.startswith("sail export: error:") and message in err, err
    assert not (tmp_path / "x").exists()
    assert main(["export", str(run3), "--checkpoint", "2", "--output", str(adapter), "--force"]) == 0
    assert _same_tensors(load_file(adapter / "adapter_model.safetensors"), load_file(run3 / "checkpoint-2" / "adapter_model.safetensors"))


def test_head_runs_checkpoint_the_delta_and_export_it_merged(base_dir, prompt_files, tmp_path):
    """model.trainable=head: checkpoints hold head_delta.safetensors; the merged export is the base
    with W + Δ as its own LM head; a run can start from the delta with either reference."""
    from transformers import AutoModelForCausalLM

    run = tmp_path / "head"
    assert _train(run, base_dir, prompt_files, "run.steps=2", "model.trainable=head", "optimizer.lr=0.05") == 0
    assert {"head_delta.safetensors", "optimizer.pt", "COMPLETE"} <= {p.name for p in (run / "checkpoint-2").iterdir()}
    assert not (run / "checkpoint-2" / "adapter_config.json").exists()
    delta = load_file(run / "checkpoint-2" / "head_delta.safetensors")["delta"]
    assert delta.abs().max() > 0 and torch.equal(delta, load_file(run / "head_delta.safetensors")["delta"])
    assert main(["export", str(run), "--merge", "--output", str(tmp_path / "merged")]) == 0
    merged = AutoModelForCausalLM.from_pretrained(tmp_path / "merged")
    base = AutoModelForCausalLM.from_pretrained(base_dir)
    assert merged.lm_head.weight is not merged.model.embed_tokens.weight
    assert torch.equal(merged.model.embed_tokens.weight, base.model.embed_tokens.weight)
    assert torch.equal(merged.lm_head.weight, base.lm_head.weight + delta)

    policy = base_policy(base_dir)
    prompts = policy.encode_prompts(task.sample_prompts(3, seed=9))
    responses = policy.sample(prompts, 2, generator=torch.Generator().manual_seed(0))
    for reference in ("start", "base"):
        cfg = load_config(None, run_overrides(base_dir, prompt_files, "model.trainable=head", f"model.init_adapter={run / 'checkpoint-2'}", f"model.reference={reference}"))
        started = Trainer(cfg, tmp_path / reference).policy
        with torch.no_grad():
            logprob, ref = started.logprob(prompts, responses), started.ref_logprob(prompts, responses)
            torch.testing.assert_close(logprob, base_policy(tmp_path / "merged").logprob(prompts, responses), rtol=0, atol=1e-5)
            if reference == "start":
                assert torch.equal(ref, logprob)
            else:
                torch.testing.assert_close(ref, policy.logprob(prompts, responses))


def test_a_run_starts_from_an_adapter_with_either_reference(run3, base_dir, prompt_files, tmp_path):
    """model.init_adapter=checkpoint-3: with reference=start π_ref is the starting adapter (the KL is
    0 at step 0 and stays anchored there after a step); with reference=base it is the base model."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from sail.policies.causal_lm import CausalLMPolicy

    start = run3 / "checkpoint-3"
    plain = base_policy(base_dir)
    adapted = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base_dir), start).eval()
    adapted_policy = CausalLMPolicy(adapted, plain.eos_token_id, plain.pad_token_id, tokenizer=plain.tokenizer)
    prompts = plain.encode_prompts(task.sample_prompts(4, seed=9))
    responses = adapted_policy.sample(prompts, 2, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        start_logprob, base_logprob = adapted_policy.logprob(prompts, responses), plain.logprob(prompts, responses)
    assert (start_logprob - base_logprob).abs().max() > 1e-6

    cfg = load_config(None, run_overrides(base_dir, prompt_files, "spectral.log_every=0", f"model.init_adapter={start}", "model.reference=start",
                                       "model.lora.rank=2", "sampling.engine=fast", "optimizer.lr=0.01"))
    trainer = Trainer(cfg, tmp_path / "start")
    policy = trainer.policy
    assert policy.model.peft_config["default"].r == 4  # the adapter's own rank, not model.lora.rank
    with torch.no_grad():
        torch.testing.assert_close(policy.logprob(prompts, responses), start_logprob, rtol=0, atol=1e-5)
        assert torch.equal(policy.ref_logprob(prompts, responses), policy.logprob(prompts, responses))
        for direction in ("ref_to_policy", "policy_to_ref"):
            assert policy.per_position_kl(prompts, responses, direction).abs().max() < 1e-5  # 0 up to float32 rounding
    trainer.train_step()  # the KL term's reference draws run inside the frozen start
    with torch.no_grad():
        assert not torch.equal(policy.ref_logprob(prompts, responses), policy.logprob(prompts, responses))
        torch.testing.assert_close(policy.ref_logprob(prompts, responses), start_logprob, rtol=0, atol=1e-5)

    cfg = load_config(None, run_overrides(base_dir, prompt_files, "spectral.log_every=0", f"model.init_adapter={start}", "model.reference=base"))
    policy = Trainer(cfg, tmp_path / "base").policy
    with torch.no_grad():
        torch.testing.assert_close(policy.logprob(prompts, responses), start_logprob, rtol=0, atol=1e-5)
        torch.testing.assert_close(policy.ref_logprob(prompts, responses), base_logprob, rtol=0, atol=1e-5)
    with pytest.raises(Exception, match="holds no adapter_config.json"):
        Trainer(load_config(None, run_overrides(base_dir, prompt_files, f"model.init_adapter={tmp_path}")), tmp_path / "bad")
