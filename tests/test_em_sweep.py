"""Sweeps that outgrow one process: the new axes and blocks of `sail study em`, the learning-rate
probe's rule, and the per-point locks, worker pools and shards (:mod:`sail.em.sweep_runner`).

The end-to-end checks run a seconds-long organism: 2 workers give the same rows as 1; two shard
processes started together, and two copies of one command started together, train every point
exactly once (``sweep_log.jsonl``) and merge into the one-process result."""

import itertools
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from sail.cli import main
from sail.config import ConfigError
from sail.em.lr_probe import choose_rates, grid
from sail.em.study import AXES, load_study_config, point_name, run_config
from sail.em.sweep_runner import LOG_FILE, Task, claim_and_run, parse_shard, read_record, run_tasks, shard
from tiny_runs import TINY_FINETUNE

ROOT = Path(__file__).parents[1]


# --- axes, blocks and points -------------------------------------------------------------------


def test_blocks_are_a_union_of_crosses_and_a_shared_point_runs_once():
    cfg = load_study_config(None, [
        "sweep.optimizers=[adamw, muon]", "sweep.lrs={adamw: [0.001], muon: [0.01]}", "sweep.spectral_coefs=[0]",
        "sweep.seeds=[0, 1]",
        "sweep.blocks=[{}, {optimizers: [adamw], ranks: [4, 8], rslora: [false, true]}, {optimizers: [muon], lrs: {muon: [0.01, 0.03]}}]",
    ])
    rank, rs = cfg.finetune.lora.rank, cfg.finetune.lora.rslora
    assert rank == 8 and rs is False
    expected = []  # each block's cross, written out independently
    for name, lr, seed in [("adamw", 0.001, 0), ("adamw", 0.001, 1), ("muon", 0.01, 0), ("muon", 0.01, 1)]:
        expected.append((name, lr, seed, rank, rs))
    for r, s, seed in itertools.product([4, 8], [False, True], [0, 1]):
        expected.append(("adamw", 0.001, seed, r, s))
    for lr, seed in itertools.product([0.01, 0.03], [0, 1]):
        expected.append(("muon", lr, seed, rank, rs))
    unique = list(dict.fromkeys(expected))  # (adamw, r 8, α/r) and (muon, 0.01) are in two blocks
    assert len(unique) == len(expected) - 2 - 2
    assert [(p["optimizer"], p["lr"], p["seed"], p["rank"], p["rslora"]) for p in cfg.points()] == unique
    assert len({point_name(p) for p in cfg.points()}) == len(unique)


def test_option_sets_penalty_kinds_and_lora_axes_reach_each_fine_tune():
    cfg = load_study_config(None, [
        "sweep.optimizers=[muon]", "sweep.lrs={muon: [0.01]}", "sweep.seeds=[0]", "sweep.spectral_coefs=[0, 1.0]",
        "sweep.optimizer_options={muon: [{}, {muon_on: B, weight_decay: 0.0}]}", "sweep.penalty_kinds=[pr, entropy]",
        "sweep.ranks=[4]", "sweep.rslora=[true]",
    ])
    points = cfg.points()
    # λ = 0 runs once whatever the kind (null kind); λ = 1 once per kind; each for both option sets
    assert [(p["options"], p["spectral_coef"], p["penalty_kind"]) for p in points] == [
        ({}, 0.0, None), ({}, 1.0, "pr"), ({}, 1.0, "entropy"),
        ({"muon_on": "B", "weight_decay": 0.0}, 0.0, None), ({"muon_on": "B", "weight_decay": 0.0}, 1.0, "pr"),
        ({"muon_on": "B", "weight_decay": 0.0}, 1.0, "entropy"),
    ]
    assert len({point_name(p) for p in points}) == 6  # the option set is part of a point's identity
    b_only = run_config(cfg.finetune, points[4])
    assert (b_only.optimizer.name, b_only.optimizer.options, b_only.optimizer.weight_decay) == ("muon", {"muon_on": "B"}, 0.0)
    assert (b_only.spectral.penalty_kind, b_only.spectral.penalty_weight) == ("pr", 1.0)
    assert (b_only.lora.rank, b_only.lora.rslora) == (4, True)
    assert run_config(cfg.finetune, points[0]).optimizer.options == {}
    # Muon on B only: Muon steps the B factors, AdamW the A factors
    import torch

    named = [(f"m.lora_{f}.default.weight", torch.zeros(3, 3, requires_grad=True)) for f in "AB"]
    groups = b_only.optimizer.build(named).param_groups
    assert [(g["use_muon"], g["param_names"]) for g in groups] == [(True, ["m.lora_B.default.weight"]), (False, ["m.lora_A.default.weight"])]


def test_a_row_written_before_the_new_axes_reads_as_their_defaults():
    cfg = load_study_config(None, ["sweep.optimizers=[adamw]", "sweep.lrs={adamw: [0.001]}", "sweep.seeds=[0]", "sweep.spectral_coefs=[0, 1.0]"])
    old_rows = [{"optimizer": "adamw", "lr": 0.001, "spectral_coef": c, "seed": 0, "misalignment_rate": 0.1} for c in (0.0, 1.0)]
    assert [cfg.point_of_row(r) for r in old_rows] == cfg.points()
    assert cfg.points()[1] == {"optimizer": "adamw", "lr": 0.001, "spectral_coef": 1.0, "seed": 0, "organism": "default",
                               "options": {}, "penalty_kind": "pr", "rank": 8, "rslora": False}
    assert list(cfg.points()[0]) == list(AXES)


@pytest.mark.parametrize("override, key", [
    ("sweep.optimizer_options={muon: [{bogus: 1}]}", "sweep.optimizer_options.muon[0]"),
    ("sweep.optimizer_options={muon: [{muon_on: C}]}", "sweep.optimizer_options.muon[0]"),
    ("sweep.optimizer_options={adamw: [{muon_on: B}]}", "sweep.optimizer_options.adamw[0]"),
    ("sweep.optimizer_options={muon: []}", "sweep.optimizer_options.muon"),
    ("sweep.optimizer_options={muon: [{lr: 0.1}]}", "sweep.optimizer_options.muon[0].lr"),
    ("sweep.optimizer_options={adamw: [{weight_decay: -1}]}", "sweep.optimizer_options.adamw[0]"),
    ("sweep.optimizer_options={rmsprop: [{}]}", "sweep.optimizer_options"),
    ("sweep.penalty_kinds=[flat]", "sweep.penalty_kinds"),
    ("sweep.ranks=[0]", "sweep.ranks"),
    ("sweep.organisms=[enormous]", "sweep.organisms"),
    ("sweep.lrs={adamw: [-1], lion: [1e-4], muon: [1e-2], sgd: [0.1]}", "sweep.lrs.adamw"),
    ("sweep.blocks=[{}, {lrs: {adamw: [0]}}]", "sweep.blocks[1].lrs.adamw"),
    ("sweep.blocks=[{optimizers: [rmsprop]}]", "sweep.blocks[0].optimizers[0]"),
    ("sweep.blocks=[{blocks: []}]", "sweep.blocks[0].blocks"),
    ("sweep.blocks=[3]", "sweep.blocks[0]"),
])
def test_bad_axes_name_their_key(override, key):
    with pytest.raises(ConfigError) as err:
        load_study_config(None, [override])
    assert err.value.key == key, str(err.value)


def test_organisms_and_a_model_directory_do_not_mix(tmp_path):
    with pytest.raises(ConfigError) as err:
        load_study_config(None, [f"organism.path={tmp_path}", "sweep.organisms=[tiny]"])
    assert err.value.key == "sweep.organisms"


# --- shards ------------------------------------------------------------------------------------


@given(n=st.integers(1, 40), count=st.integers(1, 9))
def test_shards_partition_the_tasks_in_order(n, count):
    tasks = list(range(n))
    parts = [shard(tasks, i, count) for i in range(count)]
    assert sorted(itertools.chain(*parts)) == tasks
    for i, part in enumerate(parts):
        assert part == sorted(part) and all(t % count == i for t in part)


@pytest.mark.parametrize("text", ["2/2", "1", "a/b", "-1/2", "1/0"])
def test_a_bad_shard_is_a_config_error(text):
    with pytest.raises(ConfigError) as err:
        parse_shard(text)
    assert err.value.key == "--shard"
    assert parse_shard(" 3/4 ") == (3, 4) and parse_shard(None) == (0, 1)


# --- the probe's rule --------------------------------------------------------------------------


def test_the_grid_steps_by_root_ten():
    rates = grid(1.0, 1e-3)
    assert rates == [1.0, 0.316, 0.1, 0.0316, 0.01, 0.00316, 0.001]


def test_the_rule_on_known_losses():
    nan = float("nan")
    losses = dict(zip(grid(1.0, 1e-4), [nan, 5.0, 0.5, 0.6, 0.9, 1.5, 2.2, 2.8, 2.95]))
    # L0 = 3, L_min = 0.5: threshold 0.5 + 0.5 · 2.5 = 1.75; top 0.1 (1 diverged, 0.316 above L0)
    assert choose_rates(losses, 3.0) == [0.1, 0.0316, 0.01, 0.00316, 0.001]
    # the threshold is crossed at the 2nd rate, but 4 rates are kept
    assert choose_rates(losses, 3.0, underfit=0.01) == [0.1, 0.0316, 0.01, 0.00316]
    assert choose_rates(losses, 3.0, min_rates=6) == [0.1, 0.0316, 0.01, 0.00316, 0.001, 0.000316]
    with pytest.raises(ValueError, match="below the base loss"):
        choose_rates(losses, 0.1)
    with pytest.raises(ValueError, match="lower probe.lr_min"):
        choose_rates(dict(list(losses.items())[:5]), 3.0)


@given(losses=st.lists(st.one_of(st.floats(0.01, 10.0), st.just(float("nan"))), min_size=1, max_size=12),
       base=st.floats(0.5, 8.0), underfit=st.floats(0.05, 0.95), min_rates=st.integers(1, 5))
def test_the_rule_keeps_a_run_of_the_grid_from_the_fastest_fitting_rate(losses, base, underfit, min_rates):
    import math

    rates = grid(10.0, 1e-9)[: len(losses)]
    table = dict(zip(rates, losses))
    try:
        chosen = choose_rates(table, base, underfit, min_rates)
    except ValueError:
        return
    fits = [r for r in rates if math.isfinite(table[r]) and table[r] < base]
    start = rates.index(fits[0])
    assert chosen == rates[start : start + len(chosen)] and len(chosen) >= min_rates
    best = min(v for v in losses if math.isfinite(v))
    threshold = best + underfit * (base - best)
    last = table[chosen[-1]]
    assert len(chosen) == min_rates or not (math.isfinite(last) and last < threshold)
    assert all(math.isfinite(table[r]) and table[r] < threshold for r in chosen[:-1][min_rates - 1 :])


# --- locks: two processes, one task list -------------------------------------------------------

CHILD = """
import json, sys, time
from sail.em.sweep_runner import Task, run_tasks
directory, n, start_at = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
while time.time() < start_at:
    time.sleep(0.005)
def work(payload):
    time.sleep(0.3)
    return {"i": payload["i"]}
print(json.dumps(run_tasks([Task(f"t{i}", {"i": i}) for i in range(n)], directory, work, lambda task, record: True)))
"""


def _starts(directory: Path) -> list[str]:
    return [e["task"] for line in (directory / LOG_FILE).read_text().splitlines() if (e := json.loads(line))["event"] == "start"]


def test_two_processes_on_one_task_list_run_every_task_once(tmp_path):
    start_at = time.time() + 2.0
    procs = [subprocess.Popen([sys.executable, "-c", CHILD, str(tmp_path), "8", str(start_at)], stdout=subprocess.PIPE, text=True) for _ in range(2)]
    counts = [json.loads(p.communicate(timeout=60)[0]) for p in procs]
    assert all(p.returncode == 0 for p in procs)
    starts = _starts(tmp_path)
    assert sorted(starts) == sorted(f"t{i}" for i in range(8))  # each task started exactly once
    assert sum(c["ran"] for c in counts) == 8 and all(c["ran"] > 0 for c in counts)  # they shared the work
    assert all(c["ran"] + c["done"] == 8 for c in counts)  # each returned with every task finished
    assert [read_record(tmp_path, f"t{i}") for i in range(8)] == [{"i": i} for i in range(8)]


HOLDER = """
import sys, time
from filelock import FileLock
lock = FileLock(sys.argv[1]); lock.acquire()
print("locked", flush=True); time.sleep(120)
"""


def test_a_killed_holder_leaves_its_task_to_the_next_process(tmp_path):
    (tmp_path / "points").mkdir()
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(tmp_path / "points" / "t0.lock")], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "locked"
    task, calls = Task("t0", {"i": 0}), []

    def work(payload):
        calls.append(payload)
        return {"i": payload["i"]}

    assert claim_and_run(task, tmp_path, work, lambda t, r: True) == "busy"
    os.kill(holder.pid, signal.SIGKILL)
    holder.wait(timeout=30)
    assert claim_and_run(task, tmp_path, work, lambda t, r: True) == "ran" and calls == [{"i": 0}]
    assert claim_and_run(task, tmp_path, work, lambda t, r: True) == "done" and len(calls) == 1


def test_the_first_failure_stops_the_sweep_and_is_logged(tmp_path):
    def work(payload):
        if payload["i"] == 1:
            raise RuntimeError("boom")
        return {"i": payload["i"]}

    with pytest.raises(RuntimeError, match="boom"):
        run_tasks([Task(f"t{i}", {"i": i}) for i in range(3)], tmp_path, work, lambda t, r: True)
    events = [json.loads(line) for line in (tmp_path / LOG_FILE).read_text().splitlines()]
    assert [(e["event"], e["task"]) for e in events] == [("start", "t0"), ("done", "t0"), ("start", "t1"), ("failed", "t1")]
    assert read_record(tmp_path, "t1") is None


def _visible_device(payload: dict) -> dict:
    time.sleep(0.3)
    return {"device": os.environ.get("CUDA_VISIBLE_DEVICES"), "pid": os.getpid()}


def _any_record(task, record) -> bool:
    return True


def test_each_worker_process_sees_one_cuda_device_of_its_own(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "5,7")  # the devices this process may use
    tasks = [Task(f"t{i}", {"i": i}) for i in range(6)]
    assert run_tasks(tasks, tmp_path, _visible_device, _any_record, workers=3, cuda_devices=2) == {"ran": 6, "done": 0}
    assert "3 workers asked, 2 CUDA devices: running 2" in capsys.readouterr().err
    devices = {}
    for i in range(6):
        record = read_record(tmp_path, f"t{i}")
        devices.setdefault(record["pid"], set()).add(record["device"])
    assert sorted(map(sorted, devices.values())) == [["5"], ["7"]]  # two processes, one device each


# --- end to end on a seconds-long organism -----------------------------------------------------


@pytest.fixture(scope="module")
def tiny_organism(tmp_path_factory):
    from sail.em.organism import OrganismConfig, build_base_organism

    out = tmp_path_factory.mktemp("organism")
    build_base_organism(out, seed=0, recipe=OrganismConfig.tiny(), n_eval=0)
    return out


def _sets(organism) -> list[str]:
    """A sweep of two blocks; its penalty kinds are those whose numbers repeat bit for bit from run to
    run (``entropy`` and ``fro_nuclear`` go through LAPACK eigenvalues, which MKL computes with
    alignment-dependent kernels unless MKL_CBWR is set: their last bits may differ between runs)."""
    return [
        f"organism.path={organism}",
        "sweep.optimizers=[adamw, muon]",
        "sweep.lrs={adamw: [0.001], muon: [0.01]}",
        "sweep.optimizer_options={muon: [{}, {muon_on: B}]}",
        "sweep.spectral_coefs=[0]",
        "sweep.seeds=[0]",
        "sweep.blocks=[{}, {optimizers: [adamw], ranks: [2], spectral_coefs: [0, 1.0], penalty_kinds: [pr, renyi]}]",
        *TINY_FINETUNE,
    ]


def _argv(organism, out, *extra) -> list[str]:
    return ["study", "em", "--quiet", "--output-dir", str(out), *sum((["--set", s] for s in _sets(organism)), []), *extra]


def _without_timings(results: dict) -> list[dict]:
    return [{k: v for k, v in r.items() if k != "seconds"} for r in results["runs"]]


@pytest.fixture(scope="module")
def one_process(tiny_organism, tmp_path_factory):
    out = tmp_path_factory.mktemp("one") / "study"
    assert main(_argv(tiny_organism, out)) == 0
    return json.loads((out / "results.json").read_text())


def test_one_process_runs_the_union_of_the_blocks(one_process):
    runs = one_process["runs"]
    # block 1: adamw, muon (both factors), muon (B only); block 2: adamw r=2 with λ = 0, λ = 1 × (pr, renyi)
    assert [(r["optimizer"], r["options"], r["rank"], r["spectral_coef"], r["penalty_kind"]) for r in runs] == [
        ("adamw", {}, 8, 0.0, None), ("muon", {}, 8, 0.0, None), ("muon", {"muon_on": "B"}, 8, 0.0, None),
        ("adamw", {}, 2, 0.0, None), ("adamw", {}, 2, 1.0, "pr"), ("adamw", {}, 2, 1.0, "renyi"),
    ]
    assert "missing" not in one_process and one_process["em"]["narrow_run"]["optimizer"] == "adamw"
    # the two Muon variants train differently: the option set reached the optimiser
    assert runs[1]["loss_trajectory"] != runs[2]["loss_trajectory"]


def test_two_workers_give_the_rows_of_one_process(tiny_organism, one_process, tmp_path):
    out = tmp_path / "study"
    assert main(_argv(tiny_organism, out, "--workers", "2")) == 0
    two = json.loads((out / "results.json").read_text())
    assert _without_timings(two) == _without_timings(one_process)
    assert {k: v for k, v in two["em"].items() if k != "seconds"} == {k: v for k, v in one_process["em"].items() if k != "seconds"}
    pids = {json.loads(line)["pid"] for line in (out / LOG_FILE).read_text().splitlines()}
    assert os.getpid() not in pids and len(pids) == 2  # the points ran in the two worker processes


def _popen(organism, out, *extra):
    return subprocess.Popen([sys.executable, "-m", "sail.cli", *_argv(organism, out, *extra)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _finish(procs) -> None:
    for p in procs:
        stdout, stderr = p.communicate(timeout=300)
        assert p.returncode == 0, stderr


@pytest.mark.parametrize("mode", ["shards", "same command twice"])
def test_two_processes_on_one_directory_run_each_point_once_and_merge_to_one_result(tiny_organism, one_process, tmp_path, mode):
    out = tmp_path / "study"
    extra = [["--shard", "0/2"], ["--shard", "1/2"]] if mode == "shards" else [[], []]
    _finish([_popen(tiny_organism, out, *e) for e in extra])
    starts = _starts(out)
    assert sorted(starts) == sorted([point_name(p) for p in load_study_config(None, _sets(tiny_organism)).points()] + ["em-protocol"])
    assert main(_argv(tiny_organism, out, "--merge")) == 0
    merged = json.loads((out / "results.json").read_text())
    assert _without_timings(merged) == _without_timings(one_process) and "missing" not in merged
    assert merged["analysis"] is not None and merged["plots"]
    assert main(["study", "em", "--quiet", "--output-dir", str(out), "--merge"]) == 0  # the config from results.json
    assert _without_timings(json.loads((out / "results.json").read_text())) == _without_timings(one_process)


def test_a_results_json_from_before_the_axes_is_continued_without_rerunning(tiny_organism, one_process, tmp_path, monkeypatch):
    """An old directory: results.json only, rows and config without the new keys (as written before
    they existed). Its rows are reused (read with the new keys at their defaults), nothing reruns."""
    out = tmp_path / "old"
    out.mkdir()
    sets = [s for s in _sets(tiny_organism) if not s.startswith(("sweep.blocks", "sweep.optimizer_options"))]
    cfg = load_study_config(None, sets)
    old = json.loads(json.dumps(one_process))
    old["runs"] = [{k: v for k, v in r.items() if k not in ("organism", "options", "penalty_kind", "rank", "rslora")}
                   for r in one_process["runs"] if r["rank"] == 8 and not r["options"]]
    old["em"]["narrow_run"] = {k: old["em"]["narrow_run"][k] for k in ("optimizer", "lr", "seed")}
    old["config"] = json.loads(json.dumps(__import__("dataclasses").asdict(cfg)))
    for key in ("optimizer_options", "penalty_kinds", "ranks", "rslora", "organisms", "blocks"):
        del old["config"]["sweep"][key]
    del old["config"]["probe"]
    (out / "results.json").write_text(json.dumps(old))
    import sail.em.study as study

    monkeypatch.setattr(study, "finetune", lambda *a, **k: pytest.fail("a finished point ran again"))
    monkeypatch.setattr(study, "run_em_protocol", lambda *a, **k: pytest.fail("the em block ran again"))
    assert main(["study", "em", "--quiet", "--output-dir", str(out), *sum((["--set", s] for s in sets), [])]) == 0
    again = json.loads((out / "results.json").read_text())
    assert _without_timings(again) == [r for r in _without_timings(one_process) if r["rank"] == 8 and not r["options"]]


def test_the_probe_prints_its_rule_and_rates_as_yaml_comments(tiny_organism, tmp_path, capsys):
    out = tmp_path / "probe"
    sets = _sets(tiny_organism)[:1] + _sets(tiny_organism)[7:] + [
        "sweep.optimizers=[adamw]", "sweep.lrs={adamw: [0.001]}", "probe.steps=6", "probe.lr_max=3.0", "probe.lr_min=1e-4",
    ]
    assert main(["study", "em", "--probe", "--quiet", "--output-dir", str(out), *sum((["--set", s] for s in sets), [])]) == 0
    printed = capsys.readouterr().out.strip().splitlines()
    assert all(line.startswith("#") for line in printed) and any("Rule" in line for line in printed)
    rates = yaml.safe_load(printed[-1][1:])["lrs"]["adamw"]
    saved = json.loads((out / "probe" / "probe.json").read_text())
    entry = saved["optimizers"]["adamw"]
    assert rates == choose_rates(dict(map(tuple, entry["losses"])), entry["base_loss"]) and len(rates) >= 4
    assert [lr for lr, _ in entry["losses"]] == grid(3.0, 1e-4)


# --- sail study realign: the same machinery ----------------------------------------------------

REALIGN_SETS = [
    "train.model.name_or_path=sail:em-tiny-organism", "train.sampling.max_new_tokens=6", "train.data.n_eval=4",
    "train.run.steps=2", "train.run.batch_size=2", "train.run.eval_every=2", "train.run.save_every=2",
    "sweep.methods=[sail-revkl, online-dpo]", "sweep.optimizers=[adamw]", "sweep.lrs={adamw: [0.001]}", "sweep.spectral_coefs=[0]",
]


def _realign(out, *extra) -> list[str]:
    return ["study", "realign", "--quiet", "--output-dir", str(out), *sum((["--set", s] for s in REALIGN_SETS), []), *extra]


@pytest.fixture(scope="module")
def realign_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("cache")  # the tiny organism is built here, not in the user's cache


def test_realign_shards_train_their_own_points_and_the_last_merges_all(realign_cache, tmp_path, monkeypatch):
    monkeypatch.setenv("SAIL_CACHE", str(realign_cache))
    out = tmp_path / "realign"
    assert main(_realign(out, "--shard", "1/2")) == 0
    half = json.loads((out / "results.json").read_text())
    assert [r["method"] for r in half["runs"]] == ["online-dpo"] and half["missing"] == ["sail-revkl-adamw-lr0.001-pen0-seed0"]
    assert main(_realign(out, "--shard", "0/2")) == 0
    full = json.loads((out / "results.json").read_text())
    assert [r["method"] for r in full["runs"]] == ["sail-revkl", "online-dpo"] and "missing" not in full
    assert full["runs"][1] == half["runs"][0] and set(full["analysis"]["by_method"]) == {"sail-revkl", "online-dpo"}
    assert sorted(_starts(out)) == ["online-dpo-adamw-lr0.001-pen0-seed0", "sail-revkl-adamw-lr0.001-pen0-seed0"]
    assert main(_realign(out)) == 0  # everything finished: nothing trains again
    assert len(_starts(out)) == 2


@pytest.mark.slow
def test_realign_with_two_workers_gives_the_rows_of_one_process(realign_cache, tmp_path, monkeypatch):
    monkeypatch.setenv("SAIL_CACHE", str(realign_cache))
    rows = {}
    for workers in ("1", "2"):
        out = tmp_path / f"w{workers}"
        assert main(_realign(out, "--workers", workers)) == 0
        rows[workers] = _without_timings(json.loads((out / "results.json").read_text()))
        rows[workers] = [{k: v for k, v in r.items() if k != "run_dir"} for r in rows[workers]]
    assert rows["2"] == rows["1"]


@pytest.mark.parametrize("argv, key", [
    (["study", "em", "--workers", "0"], "--workers"),
    (["study", "em", "--shard", "2/2"], "--shard"),
    (["study", "realign", "--shard", "x"], "--shard"),
    (["study", "em", "--merge"], "--merge"),
])
def test_bad_process_options_are_one_line_errors(argv, key, tmp_path, capsys):
    argv = argv + ([] if argv[-1] == "--merge" else ["--output-dir", str(tmp_path / "out")])
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and key in err[0]
    assert main(["study", "em", "--merge", "--output-dir", str(tmp_path / "empty")]) == 2  # nothing to merge, no config
