"""Prompts and pairs from every source and format, built locally with ``datasets``: JSONL, JSON and
parquet files, save_to_disk directories, the hub path (its ``load_dataset`` call), datasets in
memory; strings, TRL's conversational format, PKU-SafeRLHF and renamed columns; length caps, chat
template variables, held-out prompts; and `sail train` end to end, the data checked before the model
loads."""

import json
import typing

import datasets
import pytest
import torch

from sail.cli import main
from sail.config import ConfigError
from sail.data import DataError, PairColumns, PairFormat, load_pairs, load_prompts, prompt_token_ids
from sail.models.embedded import embedded_model
from sail.oracles import RewardModelScorer
from sail.policies.causal_lm import CausalLMPolicy
from sail.tasks import default as task
from sail.train.commands import config_from_arguments
from sail.train.config import DataConfig, load_config
from sail.train.prompts import apply_chat_template_kwargs, load_run_data
from sail.train.trainer import Trainer

PROMPTS = task.sample_prompts(12, seed=5)


def user(text: str) -> dict:
    return {"role": "user", "content": text}


def assistant(text: str) -> dict:
    return {"role": "assistant", "content": text}


def _write(path, lines):
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture(scope="module")
def base_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("base")
    task.build_base_model(out, seed=0, steps=40, n_eval=0)
    return out


def _cfg(*overrides, model="Qwen/Qwen3-0.6B"):  # a name only: nothing here loads it
    return load_config(None, [f"model.name_or_path={model}", "oracle.path=sail.tasks.default:reward", *overrides])


# --- JSONL, as before ---------------------------------------------------------------------------


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
    with pytest.raises(DataError, match=f"{path}:1: no field 'rejected' \\(data.rejected_column; its fields: prompt, chosen\\)"):
        load_pairs(path)
    _write(path, [json.dumps({"prompt": "q", "chosen": "a", "rejected": 3})])
    with pytest.raises(DataError, match=f"{path}:1: 'rejected' must be a string"):
        load_pairs(path)
    with pytest.raises(DataError, match="no such file"):
        load_prompts(tmp_path / "nope.jsonl")


# --- sources --------------------------------------------------------------------------------------


def _save(kind: str, ds: datasets.Dataset, tmp_path, split: str = "train"):
    """``ds`` as the source ``kind``: a path, or the dataset itself."""
    if kind == "memory":
        return ds
    if kind == "list":
        return ds.to_list()
    if kind == "dataset_dir":
        ds.save_to_disk(tmp_path / "ds")
        return str(tmp_path / "ds")
    if kind == "datasetdict_dir":
        datasets.DatasetDict({split: ds, "other": ds.select([0])}).save_to_disk(tmp_path / "dd")
        return str(tmp_path / "dd")
    path = tmp_path / f"data.{kind}"
    if kind == "parquet":
        ds.to_parquet(path)
    elif kind == "jsonl":
        ds.to_json(path, lines=True)
    else:  # one JSON array
        path.write_text(json.dumps(ds.to_list()))
    return str(path)


SOURCES = ["jsonl", "json", "parquet", "dataset_dir", "datasetdict_dir", "memory", "list"]


@pytest.mark.parametrize("kind", SOURCES)
def test_prompts_from_every_source(kind, tmp_path):
    ds = datasets.Dataset.from_dict({"prompt": PROMPTS, "id": list(range(len(PROMPTS)))})
    source = _save(kind, ds, tmp_path)
    assert load_prompts(source) == PROMPTS
    assert load_prompts(source, limit=3) == PROMPTS[:3]


@pytest.mark.parametrize("kind", SOURCES)
def test_pairs_from_every_source(kind, tmp_path):
    rows = [{"prompt": p, "chosen": task.correct(p), "rejected": "0"} for p in PROMPTS]
    source = _save(kind, datasets.Dataset.from_list(rows), tmp_path)
    pairs = load_pairs(source)
    assert [(p.prompt, p.chosen, p.rejected) for p in pairs] == [(r["prompt"], r["chosen"], r["rejected"]) for r in rows]


def test_prompts_from_a_messages_column_end_before_the_reply(tmp_path):
    system = {"role": "system", "content": "add"}
    ds = datasets.Dataset.from_dict({"messages": [[system, user("1+2"), assistant("3")], [user("2+2")]]})
    assert load_prompts(_save("parquet", ds, tmp_path)) == [[system, user("1+2")], [user("2+2")]]
    # a prompt column wins over messages; another column by name
    ds = datasets.Dataset.from_dict({"text": ["a", "b"], "prompt": ["c", "d"], "messages": [[user("e")], [user("f")]]})
    assert load_prompts(ds) == ["c", "d"]
    assert load_prompts(ds, column="text") == ["a", "b"]


def test_a_hub_id_is_loaded_with_its_split_subset_and_limit(monkeypatch):
    calls = []

    def fake_load_dataset(path, name=None, split=None, **kwargs):
        calls.append((path, name, split))
        return datasets.Dataset.from_dict({"prompt": PROMPTS})

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    assert load_prompts("org/prompts", split="test", subset="en", limit=2) == PROMPTS[:2]
    assert calls == [("org/prompts", "en", "test")]
    cfg = _cfg("data.hf_dataset=org/prompts", "data.split=train_gen", "data.eval_split=test_gen", "data.n_eval=3")
    data = load_run_data(cfg, log=False)
    assert data.prompts == PROMPTS and data.eval_prompts == PROMPTS[:3]
    assert calls[1:] == [("org/prompts", None, "train_gen"), ("org/prompts", None, "test_gen")]


def test_a_source_that_cannot_load_is_one_error(monkeypatch, tmp_path):
    def offline(*args, **kwargs):
        raise ConnectionError("Couldn't reach 'org/prompts' on the Hub\n(offline)")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    with pytest.raises(DataError, match="^cannot load the dataset 'org/prompts' \\(split 'test', subset 'en'\\): Couldn't reach 'org/prompts' on the Hub \\(offline\\)$"):
        load_prompts("org/prompts", split="test", subset="en")
    with pytest.raises(DataError, match="^data.prompts: ./nowhere.jsonl: no such file or directory$"):
        load_prompts("./nowhere.jsonl")
    (tmp_path / "p.csv").write_text("prompt\na\n")
    with pytest.raises(DataError, match="not a file type read here"):
        load_prompts(tmp_path / "p.csv")


def test_a_dataset_dict_needs_its_split(tmp_path):
    source = _save("datasetdict_dir", datasets.Dataset.from_dict({"prompt": PROMPTS}), tmp_path, split="train_prefs")
    assert load_prompts(source, split="train_prefs") == PROMPTS
    with pytest.raises(DataError, match="^data.split: no split 'train' in .* \\(its splits: train_prefs, other\\)$"):
        load_prompts(source)


# --- pair formats ---------------------------------------------------------------------------------


def test_conversational_pairs_with_an_implicit_prompt():
    """UltraFeedback's train_prefs: a prompt string, chosen/rejected repeating the user turn."""
    ds = datasets.Dataset.from_list([
        {"prompt": "1+2", "chosen": [user("1+2"), assistant("3")], "rejected": [user("1+2"), assistant("4")]},
        {"prompt": "x", "chosen": [{"role": "system", "content": "s"}, user("2+2"), assistant("4")],
         "rejected": [{"role": "system", "content": "s"}, user("2+2"), assistant("5")]},
    ])
    first, second = load_pairs(ds)
    assert (first.prompt, first.chosen, first.rejected) == ([user("1+2")], "3", "4")
    assert (second.prompt, second.chosen, second.rejected) == ([{"role": "system", "content": "s"}, user("2+2")], "4", "5")
    # no prompt column at all: the shared messages are the prompt
    (pair,) = load_pairs(ds.remove_columns("prompt").select([0]), PairColumns("conversational"))
    assert (pair.prompt, pair.chosen, pair.rejected) == ([user("1+2")], "3", "4")


def test_conversational_pairs_with_an_explicit_prompt():
    rows = [{"prompt": [user("1+2")], "chosen": [assistant("3")], "rejected": [assistant("4")]},
            {"prompt": "2+2", "chosen": [assistant("4")], "rejected": [assistant("5")]}]
    first, second = load_pairs(rows)
    assert (first.prompt, first.chosen, first.rejected) == ([user("1+2")], "3", "4")
    assert (second.prompt, second.chosen, second.rejected) == ("2+2", "4", "5")


def test_conversational_errors_name_the_row():
    bad = [{"chosen": [user("a"), user("b")], "rejected": [user("a"), assistant("c")]}]
    with pytest.raises(DataError, match=r"data.pairs\[0\]: 'chosen' must end with one assistant message after the prompt \(after it: user\)"):
        load_pairs(bad)
    with pytest.raises(DataError, match="share no leading messages"):
        load_pairs([{"chosen": [assistant("a")], "rejected": [assistant("b")]}])


@pytest.mark.parametrize("preference,chosen", [("better", "B"), ("safer", "S")])
def test_pku_saferlhf_pairs(preference, chosen, tmp_path):
    ds = datasets.Dataset.from_list([
        {"prompt": "q", "response_0": "S", "response_1": "B", "better_response_id": 1, "safer_response_id": 0, "is_response_0_safe": True}
    ])
    source = _save("parquet", ds, tmp_path)
    for fmt in ("auto", "pku_safe"):
        (pair,) = load_pairs(source, PairColumns(fmt, pku_preference=preference))
        assert (pair.prompt, pair.chosen, pair.rejected) == ("q", chosen, "SB".replace(chosen, ""))
    with pytest.raises(DataError, match="^data.pku_preference: no column 'safer_response_id' in .*"):
        load_pairs(ds.remove_columns("safer_response_id"), PairColumns(pku_preference="safer"))


def test_renamed_columns_and_an_explicit_format(tmp_path):
    ds = datasets.Dataset.from_dict({"question": ["1+2"], "good": ["3"], "bad": ["4"]})
    (pair,) = load_pairs(_save("json", ds, tmp_path), PairColumns("strings", "question", "good", "bad"))
    assert (pair.prompt, pair.chosen, pair.rejected) == ("1+2", "3", "4")
    conversational = datasets.Dataset.from_list([{"prompt": "q", "chosen": [user("q"), assistant("a")], "rejected": [user("q"), assistant("b")]}])
    with pytest.raises(DataError, match="'chosen' must be a string for data.pair_format=strings \\(a list of messages"):
        load_pairs(conversational, PairColumns("strings"))


def test_the_pair_format_choices_are_the_configs():
    assert typing.get_args(PairFormat) == typing.get_args(typing.get_type_hints(DataConfig)["pair_format"])


@pytest.mark.parametrize(
    "columns,key,column",
    [
        (PairColumns(chosen="good"), "data.chosen_column", "good"),
        (PairColumns("strings", prompt="question"), "data.prompt_column", "question"),
        (PairColumns("pku_safe"), "data.pair_format", "response_0"),
    ],
)
def test_a_wrong_pair_column_names_the_key_and_the_columns(columns, key, column, tmp_path):
    source = _save("parquet", datasets.Dataset.from_dict({"prompt": ["q"], "chosen": ["a"], "rejected": ["b"]}), tmp_path)
    with pytest.raises(DataError) as err:
        load_pairs(source, columns)
    assert str(err.value) == f"{key}: no column {column!r} in {source} (its columns: prompt, chosen, rejected)"


# --- config ---------------------------------------------------------------------------------------


def test_conflicting_data_keys():
    """(Each data key's own range and choices: tests/test_train_config.py::test_validation_names_the_key.)"""
    with pytest.raises(ConfigError) as err:
        load_config(None, ["data.prompts=a.jsonl", "data.hf_dataset=org/p"])
    assert err.value.key == "data.hf_dataset"
    with pytest.raises(ConfigError) as err:
        load_config(None, ["data.eval_split=test", "data.eval_fraction=0.1"])
    assert err.value.key == "data.eval_fraction"


# --- the run's data -------------------------------------------------------------------------------


def test_embedded_models_keep_their_prompts(capsys):
    cfg = config_from_arguments([], [], "em-realign")  # the default recipe
    embedded = embedded_model(cfg.model.name_or_path)
    data = load_run_data(cfg)
    assert data.prompts == embedded.train_prompts(cfg.run.seed)
    assert data.eval_prompts == embedded.eval_prompts(cfg.data.n_eval, cfg.run.seed)
    assert data.pairs == []
    assert "held-out prompts: the embedded model's (sail:em-misaligned)" in capsys.readouterr().err


def test_held_out_fraction_is_drawn_with_the_seed_and_left_out_of_training(tmp_path, capsys):
    path = task.write_prompts_jsonl(tmp_path / "p.jsonl", PROMPTS)
    data = load_run_data(_cfg(f"data.prompts={path}", "data.eval_fraction=0.25"))
    assert len(data.eval_prompts) == 3 and len(data.prompts) == 9
    assert sorted(data.prompts + data.eval_prompts) == sorted(PROMPTS)
    assert "3 training prompts held out (data.eval_fraction=0.25, run.seed=0)" in capsys.readouterr().err
    assert load_run_data(_cfg(f"data.prompts={path}", "data.eval_fraction=0.25"), log=False) == data
    assert load_run_data(_cfg(f"data.prompts={path}", "data.eval_fraction=0.25", "run.seed=1"), log=False).eval_prompts != data.eval_prompts


def test_held_out_split_and_the_logged_fallback(tmp_path, capsys):
    splits = datasets.DatasetDict({"train": datasets.Dataset.from_dict({"prompt": PROMPTS[:8]}),
                                   "test": datasets.Dataset.from_dict({"prompt": PROMPTS[8:]})})
    splits.save_to_disk(tmp_path / "dd")
    data = load_run_data(_cfg(f"data.prompts={tmp_path / 'dd'}", "data.eval_split=test"))
    assert data.prompts == PROMPTS[:8] and data.eval_prompts == PROMPTS[8:]
    assert "4 held-out prompts: the split 'test' of data.prompts" in capsys.readouterr().err
    # a file has no split to hold out
    path = task.write_prompts_jsonl(tmp_path / "p.jsonl", PROMPTS)
    with pytest.raises(DataError, match="^data.eval_split: .* without splits"):
        load_run_data(_cfg(f"data.prompts={path}", "data.eval_split=test"), log=False)
    # nothing held out: said so
    data = load_run_data(_cfg(f"data.prompts={path}", "data.n_eval=2"))
    assert data.eval_prompts == PROMPTS[:2]
    assert "the first training prompts, not held out" in capsys.readouterr().err


def test_prompts_from_the_pairs_and_their_held_out_split(tmp_path):
    rows = [{"chosen": [user(p), assistant(task.correct(p))], "rejected": [user(p), assistant("0")]} for p in PROMPTS]
    splits = datasets.DatasetDict({"train_prefs": datasets.Dataset.from_list(rows[:9] + rows[:2]),
                                   "test_prefs": datasets.Dataset.from_list(rows[9:])})
    splits.save_to_disk(tmp_path / "uf")
    base = [f"data.pairs={tmp_path / 'uf'}", "data.split=train_prefs", "routes.online_oracle=0", "routes.offline_dpo=1"]
    data = load_run_data(_cfg(*base, "data.eval_split=test_prefs"), log=False)
    assert data.prompts == [[user(p)] for p in PROMPTS[:9]]  # each once
    assert data.eval_prompts == [[user(p)] for p in PROMPTS[9:]] and len(data.pairs) == 11
    # a held-out fraction takes the pairs of its prompts out of training too
    data = load_run_data(_cfg(*base, "data.eval_fraction=0.34"), log=False)
    held = {p[0]["content"] for p in data.eval_prompts}
    assert len(held) == 3 and not held & {p.prompt[0]["content"] for p in data.pairs}


def test_in_memory_datasets_take_the_place_of_the_keys():
    pairs = datasets.Dataset.from_list([{"prompt": p, "chosen": task.correct(p), "rejected": "0"} for p in PROMPTS])
    cfg = _cfg("routes.online_oracle=0", "routes.dataset_self=1")
    data = load_run_data(cfg, prompts=datasets.Dataset.from_dict({"prompt": PROMPTS[:4]}), pairs=pairs,
                         eval_prompts=datasets.Dataset.from_dict({"prompt": PROMPTS[4:6]}), log=False)
    assert data.prompts == PROMPTS[:4] and data.eval_prompts == PROMPTS[4:6] and len(data.pairs) == len(PROMPTS)


# --- tokens: length caps and chat template variables ---------------------------------------------


def test_prompt_length_cap_cuts_from_the_left_or_drops(base_dir, tmp_path, capsys):
    from transformers import AutoTokenizer

    from sail.data import cut_prompt_left

    tokenizer = AutoTokenizer.from_pretrained(base_dir)
    cap = len(prompt_token_ids(tokenizer, "12+34")) - 2  # the length of "1+2" and of "+34"
    path = task.write_prompts_jsonl(tmp_path / "p.jsonl", ["1+2", "12+34", "1+2"])
    overrides = [f"data.prompts={path}", f"data.max_prompt_length={cap}", "data.eval_fraction=0.34"]
    data = load_run_data(_cfg(*overrides, model=base_dir))
    assert sorted(data.prompts + data.eval_prompts) == ["+34", "1+2", "1+2"]  # the end is kept
    assert "1 of 2 training prompts, 0 of 1 held-out prompts and 0 of 0 pairs longer than" in capsys.readouterr().err
    data = load_run_data(_cfg(*overrides, "data.truncate=drop", model=base_dir))
    assert data.prompts + data.eval_prompts == ["1+2", "1+2"]
    assert f"longer than {cap} tokens: dropped" in capsys.readouterr().err
    # messages lose tokens from the earliest first; a template longer than the cap drops the prompt
    messages = [user("9+9"), assistant("18"), user("99+99")]
    cut = cut_prompt_left(tokenizer, messages, len(prompt_token_ids(tokenizer, messages)) - 4, None)
    assert cut == [user(""), assistant("8"), user("99+99")]
    assert cut_prompt_left(tokenizer, messages, 5, None) is None


def test_response_length_cap(base_dir, tmp_path, capsys):
    pairs = [{"prompt": "1+2", "chosen": "3", "rejected": "123456"}]
    data = load_run_data(_cfg("routes.online_oracle=0", "routes.offline_dpo=1", "data.max_response_length=2", model=base_dir),
                         pairs=pairs, prompts=[{"prompt": "1+2"}], log=True)
    assert [(p.chosen, p.rejected) for p in data.pairs] == [("3", "12")]
    assert "data: 1 of 2 pair responses longer than 2 tokens cut to their first 2" in capsys.readouterr().err


THINKING_TEMPLATE = (
    "{%- for message in messages %}{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}{%- endfor %}"
    "{%- if enable_thinking is defined and not enable_thinking %}{{- '<|endoftext|>' }}{%- endif %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)


def test_chat_template_kwargs_reach_the_policy_and_the_reward_model(base_dir):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(base_dir)
    tokenizer.chat_template = THINKING_TEMPLATE
    off = {"enable_thinking": False}
    assert len(prompt_token_ids(tokenizer, "1+2", off)) == len(prompt_token_ids(tokenizer, "1+2")) + 1
    policy = CausalLMPolicy(torch.nn.Linear(1, 1), tokenizer.eos_token_id, tokenizer.pad_token_id, tokenizer=tokenizer)
    scorer = RewardModelScorer.__new__(RewardModelScorer)  # its rendering only
    scorer.tokenizer = tokenizer
    before = (policy.encode_prompts(["1+2"]).input_ids.shape[1], scorer.render("1+2", "3"))
    composite = type("WeightedSum", (), {"scorers": [scorer, print]})()
    apply_chat_template_kwargs(off, policy, composite)
    assert policy.encode_prompts(["1+2"]).input_ids.shape[1] == before[0] + 1
    assert scorer.render("1+2", "3") == before[1] + "<|endoftext|>"


# --- sail train end to end ------------------------------------------------------------------------


def _train(base_dir, tmp_path, *extra):
    overrides = [
        f"model.name_or_path={base_dir}", "oracle.path=sail.tasks.default:reward", "run.eval_metrics=", "data.n_eval=4",
        "sampling.max_new_tokens=4", "run.batch_size=4", "run.steps=2", "run.eval_every=2", "run.save_every=2",
        "run.progress=false", "spectral.log_every=0", "model.lora.rank=2", *extra,
    ]
    return main(["train", *sum((["--set", o] for o in overrides), []), "--output-dir", str(tmp_path / "run")])


def test_train_offline_dpo_on_a_conversational_dataset(base_dir, tmp_path, capsys):
    rows = [{"chosen": [user(p), assistant(task.correct(p))], "rejected": [user(p), assistant("0")]} for p in PROMPTS]
    datasets.DatasetDict({"train_prefs": datasets.Dataset.from_list(rows)}).save_to_disk(tmp_path / "prefs")
    evals = task.write_prompts_jsonl(tmp_path / "eval.jsonl", task.sample_prompts(4, seed=9))
    assert _train(base_dir, tmp_path, f"data.pairs={tmp_path / 'prefs'}", "data.split=train_prefs", f"data.eval_prompts={evals}",
                  "routes.online_oracle=0", "routes.offline_dpo=1", "data.chat_template_kwargs={enable_thinking: false}") == 0
    err = capsys.readouterr().err
    assert "data: 12 training prompts (data.pairs); 4 held-out prompts: data.eval_prompts" in err
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["route"] for r in rows if "route" in r] == ["offline_dpo", "offline_dpo"]


def test_train_on_prompts_from_a_parquet_file(base_dir, tmp_path, capsys):
    datasets.Dataset.from_dict({"question": task.sample_prompts(16, seed=1)}).to_parquet(tmp_path / "p.parquet")
    assert _train(base_dir, tmp_path, f"data.prompts={tmp_path / 'p.parquet'}", "data.prompt_column=question", "data.eval_fraction=0.25") == 0
    assert "data: 12 training prompts (data.prompts); 4 held-out prompts: 4 training prompts held out" in capsys.readouterr().err
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["steps"] == 2


@pytest.mark.parametrize(
    "data,key,column",
    [
        (["data.prompts={parquet}", "data.prompt_column=text"], "data.prompt_column", "text"),
        (["data.prompts={parquet}", "data.pairs={parquet}", "data.chosen_column=good", "routes.online_oracle=0", "routes.offline_dpo=1"],
         "data.chosen_column", "good"),
    ],
)
def test_a_wrong_column_fails_before_the_model_loads(data, key, column, tmp_path, capsys, monkeypatch):
    import sail.train.trainer as trainer_module

    def no_model(cfg):
        raise AssertionError("the model was loaded before the data was checked")

    monkeypatch.setattr(trainer_module, "load_policy", no_model)
    parquet = tmp_path / "d.parquet"
    datasets.Dataset.from_dict({"prompt": ["1+2"], "chosen": ["3"], "rejected": ["4"]}).to_parquet(parquet)
    overrides = ["model.name_or_path=sail:tiny-task", "oracle.path=sail.tasks.default:reward", *(o.format(parquet=parquet) for o in data)]
    assert main(["train", *sum((["--set", o] for o in overrides), []), "--output-dir", str(tmp_path / "run")]) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if "error" in line]
    assert errors == [f"sail train: error: {key}: no column {column!r} in {parquet} (its columns: prompt, chosen, rejected)"]


def test_the_trainer_takes_a_dataset_in_memory(base_dir, tmp_path):
    pairs = datasets.Dataset.from_list(
        [{"prompt": [user(p)], "chosen": [assistant(task.correct(p))], "rejected": [assistant("0")]} for p in PROMPTS]
    )
    cfg = _cfg("routes.online_oracle=0", "routes.offline_dpo=1", "run.steps=1", "run.batch_size=2", "run.progress=false",
               "spectral.log_every=0", "sampling.max_new_tokens=2", "run.eval_metrics=", "data.n_eval=2", model=base_dir)
    trainer = Trainer(cfg, tmp_path / "r", pairs=pairs, eval_prompts=[{"prompt": p} for p in PROMPTS[:2]])
    assert len(trainer.pairs) == len(PROMPTS) and trainer.eval_prompts == PROMPTS[:2]
    assert trainer.run()["steps"] == 1
