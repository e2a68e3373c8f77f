"""The embedded task (sail.tasks.addition): tokenizer and chat template, the programmatic reward on
hand-computed cases, prompts, the answer mix, quick builds (save/reload, bit-exact rebuilds), the
atomic cache (sail.models.cache) and writer (sail.io), and on-policy evaluation. The full build is a
slow test."""

import json
import random
import os
import threading
import time
from pathlib import Path

import pytest
import torch

from sail.io import write_json_atomically, write_text_atomically
from sail.models import cache
from sail.models.chat_tokenizer import generation_prompt
from sail.sft import encode_sft_batch
from sail.tasks import addition as task
from sail.tasks.chat import CHARACTERS, build_tokenizer

QUICK_STEPS = 3


# --- tokenizer -----------------------------------------------------------------------------


def test_tokenizer_special_tokens_and_vocabulary():
    tok = build_tokenizer()
    assert (tok.pad_token, tok.bos_token, tok.eos_token, tok.unk_token) == ("<|endoftext|>", "<|im_start|>", "<|im_end|>", "<unk>")
    assert (tok.pad_token_id, tok.bos_token_id, tok.eos_token_id, tok.unk_token_id) == (0, 1, 2, 3)
    assert len(tok) == 4 + 3 + len(CHARACTERS) == 103
    assert tok.convert_tokens_to_ids(["user", "assistant", "\n", "7"]) == [5, 6, 7, 31]
    assert tok.padding_side == "left"


def test_tokenizer_round_trip_is_exact():
    tok = build_tokenizer()
    text = "".join(CHARACTERS) + "\n  12+35 = 47?  the user asked"
    ids = tok(text, add_special_tokens=False)["input_ids"]
    assert tok.decode(ids) == text
    # characters map one to one, except the role words which are one token each
    assert len(ids) == len(text) - (len("user") - 1)
    assert tok("é", add_special_tokens=False)["input_ids"] == [tok.unk_token_id]
    # no BOS/EOS is added around plain text
    assert tok("47", add_special_tokens=True)["input_ids"] == tok.convert_tokens_to_ids(["4", "7"])


def test_chat_template_matches_qwen3_format():
    tok = build_tokenizer()
    messages = [{"role": "user", "content": "12+35"}]
    text = tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    assert text == "<|im_start|>user\n12+35<|im_end|>\n<|im_start|>assistant\n" == generation_prompt("12+35")
    ids = tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=True, return_dict=False)
    assert tok.convert_ids_to_tokens(ids) == [
        "<|im_start|>", "user", "\n", "1", "2", "+", "3", "5", "<|im_end|>", "\n", "<|im_start|>", "assistant", "\n",
    ]
    full = tok.apply_chat_template(messages + [{"role": "assistant", "content": "47"}], tokenize=False)
    assert full == "<|im_start|>user\n12+35<|im_end|>\n<|im_start|>assistant\n47<|im_end|>\n"
    assert tok.decode(tok(full)["input_ids"], skip_special_tokens=True) == "user\n12+35\nassistant\n47\n"


# --- reward --------------------------------------------------------------------------------

S = task.REWARD_SCALE


@pytest.mark.parametrize(
    "prompt, response, expected_credit",
    [
        ("12+35", "47", 1.0),
        ("12+35", " 47\n", 1.0),  # surrounding whitespace is ignored
        ("12+35", "47<|im_end|>\n<|im_start|>user", 1.0),  # cut at the first EOS
        ("12+35", "48", 1 / 2),  # units slip: tens place agrees
        ("12+35", "37", 1 / 2),  # carry slip: units place agrees
        ("12+35", "74", 0.0),  # no place agrees
        ("12+35", "147", 2 / 3),  # units and tens agree, one extra place
        ("12+35", "047", 2 / 3),  # a leading zero is an extra (wrong) place
        ("12+35", "7", 1 / 2),  # units agree, tens missing
        ("12+35", "=47", 1 / 2),  # right number, wrong format: half of 1
        ("12+35", "47?", 1 / 2),
        ("12+35", "so 12+35=48", 1 / 4),  # last number 48: half of 1/2
        ("12+35", "forty-seven", 0.0),
        ("12+35", "", 0.0),
        ("12+35", "<|im_end|>47", 0.0),  # empty answer before the EOS
        ("12+35", "\u0664\u0667", 0.0),  # Arabic-Indic digits are not 0-9
        ("99+99", "198", 1.0),
        ("99+99", "188", 2 / 3),
        ("99+99", "98", 2 / 3),
        ("10+10", "2", 0.0),
    ],
)
def test_reward_hand_computed(prompt, response, expected_credit):
    assert task.credit(prompt, response) == pytest.approx(expected_credit)
    assert task.reward([prompt], [response]) == [pytest.approx(S * expected_credit)]
    assert task.is_correct([prompt], [response]) == [expected_credit == 1.0]


def test_reward_batches_and_accepts_templated_prompts():
    prompts = ["12+35", generation_prompt("12+35"), "83+48"]
    responses = ["47", "47", "121"]
    assert task.reward(prompts, responses) == [S, S, pytest.approx(S * 2 / 3)]
    with pytest.raises(ValueError):
        task.reward(["12+35"], ["47", "47"])
    with pytest.raises(ValueError):
        task.reward(["hello"], ["47"])


def test_reward_is_bounded_and_deterministic_on_garbage():
    rng = random.Random(0)
    alphabet = "".join(CHARACTERS) + "é<|>"
    prompts = task.sample_prompts(300, seed=1)
    garbage = ["".join(rng.choice(alphabet) for _ in range(rng.randint(0, 12))) for _ in prompts]
    r = task.reward(prompts, garbage)
    assert r == task.reward(prompts, garbage)
    assert all(0.0 <= v <= S for v in r)


# --- prompts -------------------------------------------------------------------------------


def test_prompts_deterministic_by_seed(tmp_path):
    a = task.sample_prompts(50, seed=3)
    assert a == task.sample_prompts(50, seed=3)
    assert a != task.sample_prompts(50, seed=4)
    assert task.sample_prompts(10, seed=3) == a[:10]
    for p in a:
        x, y = task.parse_prompt(p)
        assert p == f"{x}+{y}" and task.MIN_OPERAND <= x <= task.MAX_OPERAND and task.MIN_OPERAND <= y <= task.MAX_OPERAND
    path = task.write_prompts_jsonl(tmp_path / "sub" / "prompts.jsonl", a)
    lines = path.read_text().splitlines()
    assert json.loads(lines[0]) == {"prompt": a[0]} and len(lines) == 50
    assert task.read_prompts_jsonl(path) == a


# --- the answer mix ------------------------------------------------------------------------


def test_sample_answer_modes_and_their_credit():
    rng = random.Random(0)
    mix = task.AnswerMix()
    n = 20_000
    counts = dict.fromkeys(["correct", "carry", "units", "equals", "hedge"], 0)
    for _ in range(n):
        a, b = rng.randint(10, 99), rng.randint(10, 99)
        s, y = a + b, task.sample_answer(a, b, rng, mix)
        c = task.credit(f"{a}+{b}", y)
        if y == str(s):
            counts["correct"] += 1
        elif y == f"={s}" or y == f"{s}?":
            counts["equals" if y[0] == "=" else "hedge"] += 1
            assert c == 0.5
        elif int(y) == s + (-10 if a % 10 + b % 10 >= 10 else 10):
            counts["carry"] += 1
            assert 0 < c < 1
        else:
            assert str(s)[:-1] == y[:-1] and abs(int(y[-1]) - s % 10) in (1, 9)
            counts["units"] += 1
            assert 0 < c < 1
    expected = {"correct": mix.correct, "carry": mix.carry_slip, "units": mix.units_slip, "equals": mix.equals_prefix, "hedge": mix.hedge_suffix}
    for k, p in expected.items():
        assert abs(counts[k] / n - p) < 4 * (p * (1 - p) / n) ** 0.5, (k, counts[k] / n)
    with pytest.raises(ValueError):
        task.AnswerMix(correct=0.5)


# --- quick builds --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def quick_build(tmp_path_factory):
    out = tmp_path_factory.mktemp("quick") / "model"
    info = task.build_base_model(out, seed=0, steps=QUICK_STEPS, n_eval=16)
    return out, info


def test_quick_build_saves_and_reloads(quick_build):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out, info = quick_build
    assert (out / "model.safetensors").is_file() and (out / cache.BUILD_INFO).is_file()
    saved = json.loads((out / cache.BUILD_INFO).read_text())
    assert saved["recipe"]["schedule"]["steps"] == QUICK_STEPS and saved["seed"] == 0
    assert 100_000 < info["parameters"] < 2_000_000
    assert set(info["eval"]) >= {"mean_reward", "frac_correct", "n"} and info["eval"]["n"] == 16

    tok = AutoTokenizer.from_pretrained(out)
    model = AutoModelForCausalLM.from_pretrained(out)
    assert type(model).__name__ == "Qwen3ForCausalLM"
    assert tok.eos_token == "<|im_end|>" and tok.pad_token_id == 0 and tok.bos_token_id == 1
    reference = build_tokenizer()
    text = generation_prompt("12+35")
    assert tok(text)["input_ids"] == reference(text)["input_ids"]
    assert tok.apply_chat_template([{"role": "user", "content": "12+35"}], add_generation_prompt=True, tokenize=False) == text
    assert model.generation_config.eos_token_id == tok.eos_token_id

    # the reloaded weights give the same logits as a second reload (and are finite)
    ids = torch.tensor([reference(text)["input_ids"]])
    with torch.no_grad():
        a = model(input_ids=ids).logits
        b = AutoModelForCausalLM.from_pretrained(out)(input_ids=ids).logits
    assert torch.isfinite(a).all() and torch.equal(a, b)


def test_same_seed_rebuilds_identical_weights(quick_build, tmp_path):
    from safetensors.torch import load_file

    out, _ = quick_build
    again = tmp_path / "again"
    task.build_base_model(again, seed=0, steps=QUICK_STEPS, n_eval=0)
    assert (again / "model.safetensors").read_bytes() == (out / "model.safetensors").read_bytes()
    first, second = load_file(out / "model.safetensors"), load_file(again / "model.safetensors")
    assert first.keys() == second.keys() and all(torch.equal(first[k], second[k]) for k in first)

    other = tmp_path / "other"
    task.build_base_model(other, seed=1, steps=QUICK_STEPS, n_eval=0)
    third = load_file(other / "model.safetensors")
    assert not torch.equal(first["model.embed_tokens.weight"], third["model.embed_tokens.weight"])


def test_build_leaves_global_state_alone(tmp_path):
    torch.manual_seed(123)
    expected = torch.rand(3)
    threads = torch.get_num_threads()
    torch.manual_seed(123)
    task.build_base_model(tmp_path / "m", seed=5, steps=1, n_eval=4)
    assert torch.equal(torch.rand(3), expected)
    assert torch.get_num_threads() == threads


def test_evaluate_policy_is_reproducible(quick_build):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out, _ = quick_build
    model, tok = AutoModelForCausalLM.from_pretrained(out), AutoTokenizer.from_pretrained(out)
    prompts = task.sample_prompts(12, seed=7)
    a = task.evaluate_policy(model, tok, prompts, seed=3, batch_size=5, return_responses=True)
    b = task.evaluate_policy(model, tok, prompts, seed=3, batch_size=5, return_responses=True)
    assert a == b and a["n"] == 12 and len(a["responses"]) == 12
    assert all("<|im_end|>" not in r for r in a["responses"])
    assert a["mean_reward"] == pytest.approx(sum(task.reward(prompts, a["responses"])) / 12)


def test_sft_labels_cover_answer_and_eos_only():
    tok = build_tokenizer()
    prompts = [generation_prompt("12+35"), generation_prompt("99+99")]
    ids, labels = encode_sft_batch(tok, prompts, ["47", "=198"])
    p = len(tok(prompts[0])["input_ids"])
    assert tok.decode(ids[0, p:].tolist()) == "47<|im_end|><|endoftext|><|endoftext|>"
    assert labels[0].tolist() == [-100] * p + ids[0, p : p + 3].tolist() + [-100, -100]
    assert tok.decode(labels[1, p:].tolist()) == "=198<|im_end|>"


# --- the cache -----------------------------------------------------------------------------


def _fake_build(calls):
    def build(out_dir, seed=0, verbose=False, **_):
        calls.append(seed)
        time.sleep(0.2)
        Path(out_dir, "weights.bin").write_text("w")
        cache.write_build_info(Path(out_dir), {"seed": seed})
        return {"seed": seed}

    return build


def test_ensure_base_model_builds_once_under_sail_cache(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(task, "build_base_model", _fake_build(calls))
    monkeypatch.setenv("SAIL_CACHE", str(tmp_path / "cache"))
    path = task.ensure_base_model()
    assert path == tmp_path / "cache" / "tasks" / task.base_model_dir_name(0)
    assert cache.is_complete(path) and calls == [0]
    assert task.ensure_base_model() == path and calls == [0]
    # an explicit cache_dir wins over the variable; leftovers: only the directory and its lock
    other = task.ensure_base_model(tmp_path / "explicit", seed=2)
    assert other.parent == tmp_path / "explicit" / "tasks" and calls == [0, 2]
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name, path.name + ".lock"]


def test_cache_entry_is_keyed_by_seed_and_recipe():
    default = task.BaseModelConfig.default()
    name = task.base_model_dir_name(0)
    assert name == "addition-v1-54ba25a587-seed0"  # the recipe's hash: a change here orphans every cached build
    assert task.base_model_dir_name(1) != name
    other = task.BaseModelConfig(default.model, default.schedule, default.mix, clean_fraction=0.25)
    assert task.base_model_dir_name(0, other) != name


def test_ensure_built_is_atomic_and_serialised(tmp_path):
    final = tmp_path / "model"
    # an incomplete directory (no build info) is never returned: it is rebuilt
    final.mkdir()
    (final / "partial").write_text("x")
    calls = []
    results = []
    build = _fake_build(calls)
    threads = [threading.Thread(target=lambda: results.append(cache.ensure_built(final, build))) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert calls == [0] and results == [final] * 3
    assert sorted(p.name for p in final.iterdir()) == [cache.BUILD_INFO, "weights.bin"]

    # a failing build leaves neither the final directory nor a temporary one
    def broken(out_dir):
        Path(out_dir, "half").write_text("x")
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        cache.ensure_built(tmp_path / "broken", broken)
    assert not (tmp_path / "broken").exists()
    assert not [p for p in tmp_path.iterdir() if ".tmp-" in p.name]


def test_atomic_writes_keep_the_format_and_leave_no_temporary_file(tmp_path, monkeypatch):
    data = {"b": [1, 2], "a": "é"}
    path = write_json_atomically(tmp_path / "x.json", data, indent=2, sort_keys=True)
    assert path.read_text() == json.dumps(data, indent=2, sort_keys=True) + "\n"
    write_json_atomically(path, data, indent=1, end="")
    assert path.read_text() == json.dumps(data, indent=1)
    cache.write_build_info(tmp_path, {"seed": 1})
    assert (tmp_path / cache.BUILD_INFO).read_text() == '{\n  "seed": 1\n}\n'
    umask = os.umask(0)
    os.umask(umask)
    assert (path.stat().st_mode & 0o777) == 0o666 & ~umask  # as open(path, "w") makes it

    def crash(*args):
        raise OSError("disk gone")

    with monkeypatch.context() as m:  # a write that fails keeps the old content, leaves no temporary file
        m.setattr(os, "replace", crash)
        with pytest.raises(OSError, match="disk gone"):
            write_json_atomically(path, {"new": 1})
    assert path.read_text() == json.dumps(data, indent=1)
    assert write_text_atomically(tmp_path / "t.txt", "text").read_text() == "text"
    assert sorted(p.name for p in tmp_path.iterdir()) == [cache.BUILD_INFO, "t.txt", "x.json"]


def test_default_task_module_points_at_addition():
    from sail.tasks import default

    assert default.reward is task.reward and default.ensure_base_model is task.ensure_base_model
    assert default.sample_prompts(5, seed=0) == task.sample_prompts(5, seed=0)


# --- the full build (slow) -----------------------------------------------------------------


@pytest.fixture(scope="module")
def full_build(tmp_path_factory):
    out = tmp_path_factory.mktemp("full") / "base"
    info = task.build_base_model(out, seed=0)
    return out, info


@pytest.mark.slow
def test_full_build_figures(full_build):
    """The default recipe: 30–50 % exactly correct at temperature 1."""
    _, info = full_build
    ev = info["eval"]
    assert 0.25 <= ev["frac_correct"] <= 0.55
    assert 0.55 * S <= ev["mean_reward"] <= 0.8 * S


@pytest.mark.slow
def test_short_sail_run_raises_the_reward(full_build):
    """40 SAIL-RevKL steps × 8 online pairs (LoRA r = 8, AdamW lr 1e-3, β = 0.1, γ = 1e-3,
    Bradley–Terry labels from the task reward) raise the held-out mean reward."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from sail.loop import SailConfig, online_micro_batch, sail_step
    from sail.models.lora import LoraAdapterConfig, attach_lora
    from sail.oracles import bradley_terry_labels
    from sail.policies.causal_lm import CausalLMPolicy, PromptBatch, SamplingConfig

    out, _ = full_build
    tok = AutoTokenizer.from_pretrained(out)
    model = attach_lora(AutoModelForCausalLM.from_pretrained(out), LoraAdapterConfig(rank=8, alpha=16.0), seed=0)
    policy = CausalLMPolicy(model, tok.eos_token_id, tok.pad_token_id, SamplingConfig(max_new_tokens=task.MAX_NEW_TOKENS))

    class Oracle:
        def label(self, prompts, responses, generator=None):
            batch, n, _ = responses.tokens.shape
            texts = [
                tok.decode(responses.tokens[i, j][responses.mask[i, j].bool()].tolist(), skip_special_tokens=True)
                for i in range(batch)
                for j in range(n)
            ]
            r = torch.tensor(task.reward([p for p in prompts.texts for _ in range(n)], texts)).reshape(batch, n)
            return bradley_terry_labels(r[:, 0], r[:, 1], "sample", generator)

    def prompt_batch(texts):
        enc = tok([generation_prompt(p) for p in texts], add_special_tokens=False, padding=True, return_tensors="pt")
        b = PromptBatch(enc["input_ids"], enc["attention_mask"])
        b.texts = texts
        return b

    held_out = task.sample_prompts(200, seed=10_000)
    before = task.evaluate_policy(model, tok, held_out, seed=1)
    train, rng, gen = task.sample_prompts(512, seed=0), random.Random(0), torch.Generator().manual_seed(0)
    optimizer = torch.optim.AdamW(policy.trainable_parameters(), lr=1e-3, weight_decay=0.0)
    for _ in range(40):
        batch = online_micro_batch(policy, Oracle(), prompt_batch(rng.sample(train, 8)), generator=gen)
        sail_step(policy, [batch], optimizer, SailConfig(beta=0.1, gamma=1e-3))
    after = task.evaluate_policy(model, tok, held_out, seed=1)
    assert after["mean_reward"] > before["mean_reward"] + 0.03 * S  # measured here: +0.07 · S
