"""The optimisation settings of `sail train`: the learning-rate schedule, gradient clipping, epochs
without replacement, several weighted rewards, the missing-EOS penalty, reward-model settings,
completion metrics and per-route loss series."""

import json
import math

import numpy as np
import pytest
import torch

from sail.loop import MicroBatch, SailConfig, sail_step
from sail.oracles import ScoreOracle
from sail.optim.schedule import ScheduleConfig
from sail.policies.loglinear import LogLinearPolicy
from sail.tasks import default as task
from sail.theory.instance import random_instance
from sail.train.config import load_config
from sail.train.rewards import WeightedSum, build_scorer
from sail.train.trainer import Trainer

ZERO_REWARD = "tests.test_train_settings:zero_reward"
LENGTH_REWARD = "tests.test_train_settings:length_reward"


def zero_reward(prompts, responses):
    return [0.0] * len(responses)


def length_reward(prompts, responses):
    return [float(len(r)) for r in responses]


@pytest.fixture(scope="module")
def prompt_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "train.jsonl"
    task.write_prompts_jsonl(path, task.sample_prompts(10, seed=1))
    return path


def _config(base_dir, prompt_file, *extra):
    return load_config(None, [
        f"model.name_or_path={base_dir}",
        f"data.prompts={prompt_file}",
        f"data.eval_prompts={prompt_file}",
        "data.n_eval=2",
        "sampling.max_new_tokens=4",
        "run.batch_size=2",
        "run.steps=5",
        "run.eval_every=100",
        "run.save_every=100",
        "run.progress=false",
        "spectral.log_every=0",
        "model.lora.rank=2",
        f"oracle.path={task.__name__}:reward",
        *extra,
    ])


def _rows(run_dir):
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [r for r in rows if "route" in r]


@pytest.mark.parametrize(
    "schedule,warmup,expected",
    [
        ("constant", 0, [1, 1, 1, 1, 1]),
        ("constant", 2, [0, 0.5, 1, 1, 1]),
        ("linear", 2, [0, 0.5, 1, 2 / 3, 1 / 3]),
        ("cosine", 0, [(1 + math.cos(math.pi * k / 5)) / 2 for k in range(5)]),
    ],
)
def test_the_learning_rate_follows_the_schedule(base_dir, prompt_file, tmp_path, schedule, warmup, expected):
    cfg = _config(base_dir, prompt_file, "optimizer.lr=0.01", f"schedule.name={schedule}", f"schedule.warmup_steps={warmup}")
    Trainer(cfg, tmp_path / "run").run()
    rates = [r["charts/learning_rate"] for r in _rows(tmp_path / "run")]
    assert rates == pytest.approx([0.01 * e for e in expected], abs=1e-12)


def _loglinear_step(max_grad_norm):
    inst = random_instance(seed=3, n_contexts=2, n_responses=3, dim=4, gamma=0.0)
    theta = inst.theta_ref + 0.6 * np.random.default_rng(0).standard_normal(4)
    policy = LogLinearPolicy(inst.features, inst.theta_ref, theta=theta)
    before = policy.theta.detach().clone()
    prompts = torch.tensor([0, 1, 0, 1])
    responses = torch.tensor([[0, 1], [1, 2], [2, 0], [0, 2]])
    batch = MicroBatch(prompts, responses, torch.tensor([1.0, 0.0, 1.0, 0.0], dtype=torch.float64), True)
    optimizer = torch.optim.SGD([policy.theta], lr=1.0)
    result = sail_step(policy, [batch], optimizer, SailConfig(beta=2.0, gamma=0.0, baseline="none"), max_grad_norm=max_grad_norm)
    return result, policy.theta.detach() - before


def test_gradient_clipping_caps_the_update_and_keeps_its_direction():
    unclipped, step = _loglinear_step(None)
    assert torch.linalg.norm(step).item() == pytest.approx(unclipped.grad_norm, rel=1e-9)  # SGD, lr 1: the step is −g
    cap = 0.25 * unclipped.grad_norm
    clipped, capped_step = _loglinear_step(cap)
    assert clipped.grad_norm == pytest.approx(unclipped.grad_norm)  # the logged norm is the one before clipping
    assert torch.linalg.norm(capped_step).item() == pytest.approx(cap, rel=1e-5)
    torch.testing.assert_close(capped_step / cap, step / unclipped.grad_norm, rtol=1e-5, atol=1e-9)
    # a cap above the norm changes nothing
    _, loose_step = _loglinear_step(10 * unclipped.grad_norm)
    torch.testing.assert_close(loose_step, step)


def test_epochs_take_every_prompt_once_per_pass_in_a_seeded_order(base_dir, prompt_file, tmp_path):
    cfg = _config(base_dir, prompt_file, "run.epochs=2", "run.sort_by_length=false")
    trainer = Trainer(cfg, tmp_path / "run")
    assert trainer.total_steps == 10  # ⌈2 · 10 prompts / 2 per step⌉
    drawn = [i for _ in range(10) for batch in trainer._step_indices("online_oracle") for i in batch]
    assert sorted(drawn[:10]) == list(range(10)) and sorted(drawn[10:]) == list(range(10))
    assert drawn[:10] != drawn[10:]  # each pass has its own order
    again = Trainer(cfg, tmp_path / "again")
    assert [i for _ in range(10) for batch in again._step_indices("online_oracle") for i in batch] == drawn
    assert trainer.state["consumed"] == {"prompts": 20}  # checkpointed with the loop state
    with pytest.raises(ValueError):
        load_config(None, ["run.epochs=0"])


def test_several_rewards_are_summed_with_their_weights():
    scorer = WeightedSum([length_reward, lambda p, r: [1.0] * len(r)], [0.5, -2.0])
    assert scorer(["a", "b"], ["xyz", ""]) == [0.5 * 3 - 2.0, -2.0]
    cfg = load_config(None, [
        f"oracle.path={LENGTH_REWARD}", "oracle.weight=2",
        f"oracle.additional_rewards=[{{path: '{LENGTH_REWARD}', weight: -0.5}}]",
    ])
    assert build_scorer(cfg)(["p"], ["abcd"]) == [2 * 4 - 0.5 * 4]
    # one reward of weight 1 is the callable itself, so a single-reward run is unchanged
    single = build_scorer(load_config(None, [f"oracle.path={LENGTH_REWARD}"]))
    assert not isinstance(single, WeightedSum) and single.__name__ == "length_reward"


def test_missing_eos_penalty_and_completion_metrics(base_dir, prompt_file, tmp_path):
    """With a zero reward, the mean training reward is −penalty × (share of responses cut before EOS)."""
    cfg = _config(base_dir, prompt_file, f"oracle.path={ZERO_REWARD}", "oracle.missing_eos_penalty=2.5", "sampling.max_new_tokens=2")
    Trainer(cfg, tmp_path / "run").run()
    rows = _rows(tmp_path / "run")
    for row in rows:
        assert row["charts/reward_mean"] == pytest.approx(-2.5 * (1 - row["charts/eos_rate"]))
        assert 1 <= row["charts/completion_length_mean"] <= 2
    assert any(row["charts/eos_rate"] < 1 for row in rows)  # two tokens cut some answers


def test_loss_series_are_separated_per_route(base_dir, prompt_file, tmp_path):
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text("".join(json.dumps({"prompt": p, "chosen": task.correct(p), "rejected": "0"}) + "\n" for p in task.sample_prompts(6, seed=2)))
    cfg = _config(base_dir, prompt_file, "routes.online_oracle=0.5", "routes.offline_dpo=0.5", f"data.pairs={pairs}", "run.steps=8")
    Trainer(cfg, tmp_path / "run").run()
    rows = _rows(tmp_path / "run")
    assert {r["route"] for r in rows} == {"online_oracle", "offline_dpo"}
    for row in rows:
        other = "offline_dpo" if row["route"] == "online_oracle" else "online_oracle"
        assert f"losses/{row['route']}/loss" in row and not any(k.startswith(f"losses/{other}/") for k in row)
        assert ("objective/j_gamma" in row) == (row["route"] == "online_oracle")
        if row["route"] == "online_oracle":
            kl = row["charts/kl_ref_to_policy"]
            assert row["objective/j_gamma"] == pytest.approx(row["losses/online_oracle/pair_log_likelihood"] - cfg.objective.gamma * kl)


def test_reward_model_settings_reach_the_model(tmp_path):
    from transformers import Qwen3ForSequenceClassification

    from sail.models.tiny import tiny_qwen3_config
    from sail.tasks.chat import build_tokenizer

    tok = build_tokenizer()
    Qwen3ForSequenceClassification(tiny_qwen3_config(vocab_size=len(tok), num_labels=1, pad_token_id=tok.pad_token_id)).save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    cfg = load_config(None, [
        "oracle.kind=reward_model", f"oracle.path={tmp_path}", "oracle.batch_size=3", "oracle.max_length=7",
        "oracle.dtype=bfloat16", "oracle.device=cpu",
    ])
    scorer = build_scorer(cfg)
    assert (scorer.batch_size, scorer.max_length, str(scorer.device)) == (3, 7, "cpu")
    assert next(scorer.model.parameters()).dtype == torch.bfloat16
    assert isinstance(ScoreOracle(scorer).scorer, type(scorer))
    with pytest.raises(ValueError):
        load_config(None, ["oracle.batch_size=0"])


def test_schedule_names_and_exact_extension():
    assert ScheduleConfig("constant").transformers_name() == "constant"
    assert ScheduleConfig("constant", warmup_steps=3).transformers_name() == "constant_with_warmup"
    assert ScheduleConfig("cosine").transformers_name() == "cosine"
    assert ScheduleConfig("constant", warmup_steps=3).extends_exactly()
    assert not ScheduleConfig("linear").extends_exactly()
    with pytest.raises(ValueError):
        load_config(None, ["run.max_grad_norm=0"])
