"""`sail study realign` on the seconds-long tiny organism: the results contract, the method
overrides reaching the trainer, continuing a study, and the analysis on hand-built rows."""

import json
import shutil

import numpy as np
import pytest
import yaml
from matplotlib.image import imread

from sail.cli import main
from sail.config import ConfigError
from sail.em.realign_plots import plot_all
from sail.em.realign_study import analyse_realignment, load_realign_config, run_name

SETS = [
    "train.model.name_or_path=sail:em-tiny-organism",
    "train.sampling.max_new_tokens=6",
    "train.data.n_eval=4",
    "train.run.steps=2",
    "train.run.batch_size=2",
    "train.run.eval_every=1",
    "train.run.save_every=1",
    "sweep.optimizers=[adamw]",
    "sweep.lrs={adamw: [0.001]}",
    "sweep.spectral_coefs=[0, 1.0]",
]


def _args(out, *extra):
    return ["study", "realign", "--quiet", "--output-dir", str(out), *sum((["--set", s] for s in (*SETS, *extra)), [])]


@pytest.fixture(scope="module")
def study_and_cache(tmp_path_factory):
    cache = tmp_path_factory.mktemp("cache")
    mp = pytest.MonkeyPatch()
    mp.setenv("SAIL_CACHE", str(cache))  # the tiny organism is built here, not in the user's cache
    out = tmp_path_factory.mktemp("realign") / "study"
    assert main(_args(out)) == 0
    mp.undo()
    return out, cache


@pytest.fixture
def study(study_and_cache, monkeypatch):
    out, cache = study_and_cache
    monkeypatch.setenv("SAIL_CACHE", str(cache))
    return out


def test_results_contract_curves_and_plots(study):
    results = json.loads((study / "results.json").read_text())
    runs = results["runs"]
    assert [(r["method"], r["spectral_coef"]) for r in runs] == [
        ("sail-revkl", 0.0), ("sail-revkl", 1.0), ("sail", 0.0), ("sail", 1.0), ("online-dpo", 0.0), ("online-dpo", 1.0)
    ]
    for r in runs:
        for key in ("optimizer", "lr", "seed", "misalignment_rate", "misalignment_rate_all", "alignment", "coherence",
                    "reward", "win_rate", "kl", "misalignment_rate_start"):
            assert key in r, key
        assert [c["step"] for c in r["curve"]] == [0, 1, 2]
        assert r["curve"][-1]["kl"] == r["kl"] and r["curve"][0]["kl"] == pytest.approx(0, abs=1e-4)
        assert (study / r["run_dir"] / "summary.json").is_file()
    assert set(results["analysis"]["by_method"]) == {"sail-revkl", "sail", "online-dpo"}
    assert set(results["analysis"]["penalty_effect"]["1.0"]) >= {"mean_delta_kl", "pairs"}
    for name in results["plots"]:
        assert imread(study / name).ndim == 3  # the saved PNGs decode
    # the curves draw the rows' data: redrawn from results.json, panel (KL, method) holds each run's
    # (step, KL) curve
    figures = plot_all(runs, study.parent / "redrawn")
    assert [p.name for p in figures] == results["plots"]
    curves = figures[study.parent / "redrawn" / "realignment_curves.png"]
    methods = list(dict.fromkeys(r["method"] for r in runs))
    kl_row = [ax for ax in curves.axes if ax.get_ylabel() == "KL(π‖π_ref), held-out"][0]
    kl_panels = [ax for ax in curves.axes if ax.get_position().y0 == kl_row.get_position().y0]
    assert len(kl_panels) == len(methods)
    for ax, method in zip(sorted(kl_panels, key=lambda a: a.get_position().x0), methods):
        rows = [r for r in runs if r["method"] == method]
        assert len(ax.lines) == len(rows)
        for line, r in zip(ax.lines, rows):
            np.testing.assert_allclose(line.get_xydata(), [(c["step"], c["kl"]) for c in r["curve"]])


def test_each_method_and_penalty_reach_the_trainer_config(study):
    def saved(method, coef):
        name = run_name({"method": method, "optimizer": "adamw", "lr": 0.001, "spectral_coef": coef, "seed": 0})
        return yaml.safe_load((study / "runs" / name / "config.yaml").read_text())["config"]

    revkl, vanilla, dpo = saved("sail-revkl", 0.0), saved("sail", 0.0), saved("online-dpo", 1.0)
    assert revkl["objective"]["gamma"] == 1e-3 and revkl["objective"]["score_term"] is True
    assert vanilla["objective"]["gamma"] == 0.0 and vanilla["objective"]["score_term"] is True
    assert dpo["objective"]["gamma"] == 1e-3 and dpo["objective"]["score_term"] is False
    assert revkl["spectral"]["penalty_weight"] == 0.0 and dpo["spectral"]["penalty_weight"] == 1.0


def test_a_continued_study_reuses_finished_runs_and_resumes_killed_ones(study, tmp_path, monkeypatch):
    out = tmp_path / "copy"
    shutil.copytree(study, out)
    first = json.loads((out / "results.json").read_text())
    killed = out / first["runs"][3]["run_dir"]
    (killed / "summary.json").unlink()  # as if killed after its last checkpoint
    import sail.em.realign_study as realign_study

    calls = []
    real = realign_study.Trainer

    def spy(cfg, run_dir, resume=False):
        calls.append((str(run_dir), resume))
        return real(cfg, run_dir, resume=resume)

    monkeypatch.setattr(realign_study, "Trainer", spy)
    assert main(_args(out)) == 0
    assert calls == [(str(killed), True)]  # only the killed run, from its checkpoint
    again = json.loads((out / "results.json").read_text())
    strip = lambda rows: [{k: v for k, v in r.items() if k != "seconds"} for r in rows]  # noqa: E731
    assert strip(again["runs"]) == strip(first["runs"])


def test_a_run_directory_with_another_config_is_an_error_not_overwritten(study, tmp_path, capsys):
    out = tmp_path / "copy"
    shutil.copytree(study, out)
    assert main(_args(out, "train.objective.beta=0.2")) == 2
    assert "different config" in capsys.readouterr().err


def test_config_errors_name_the_key():
    with pytest.raises(ConfigError, match="sweep"):
        load_realign_config(None, ["sweep.methods=[ppo]"])
    with pytest.raises(ConfigError, match="sweep"):
        load_realign_config(None, ["sweep.lrs={sgd: [-0.1]}"])
    with pytest.raises(ConfigError, match="train.optimizr"):
        load_realign_config(None, ["train.optimizr.name=sgd"])
    with pytest.raises(ConfigError, match="train.objective.beta"):
        load_realign_config(None, ["train.objective.beta=-1"])


@pytest.mark.parametrize(
    "name,points",
    [("realign.yaml", 30), ("realign_smoke.yaml", 12), ("realign_gamma.yaml", 36), ("realign_gamma_smoke.yaml", 8),
     ("realign_gamma_extension.yaml", 6), ("realign_gamma_projection.yaml", 6), ("realign_gamma_projection_adamw_1e-2.yaml", 3)],
)
def test_shipped_realign_configs_load(name, points):
    from pathlib import Path

    cfg = load_realign_config(str(Path(__file__).parents[1] / "experiments" / "em" / name))
    assert len(cfg.sweep.points()) == points


def test_the_gamma_axis_reaches_the_runs_rows_and_analysis(study_and_cache, tmp_path, monkeypatch):
    """γ and R as sweep axes: each run's objective carries them, rows name γ, R and the estimator
    explicitly, the analysis counts runs and divergences per γ, and the frontier plot is drawn."""
    _, cache = study_and_cache
    monkeypatch.setenv("SAIL_CACHE", str(cache))
    out = tmp_path / "gamma"
    extra = ["sweep.methods=[sail-revkl]", "sweep.gammas=[0, 1.0]", "sweep.radii=[null, 0.05]", "sweep.spectral_coefs=[0]"]
    assert main(_args(out, *extra)) == 0
    results = json.loads((out / "results.json").read_text())
    rows = results["runs"]
    assert [(r["gamma"], r["radius"]) for r in rows] == [(0.0, None), (0.0, 0.05), (1.0, None), (1.0, 0.05)]
    assert all(r["estimator"] == "sequence" and r["kl_ref_to_policy"] is not None for r in rows)
    for r in rows:
        saved = yaml.safe_load((out / r["run_dir"] / "config.yaml").read_text())["config"]["objective"]
        assert (saved["gamma"], saved["radius"]) == (r["gamma"], r["radius"])
    cells = results["analysis"]["by_gamma"]["cells"]
    assert [(c["gamma"], c["radius"], c["runs"]) for c in cells] == [(0.0, None, 1), (1.0, None, 1), (0.0, 0.05, 1), (1.0, 0.05, 1)]
    # the tiny organism gives no coherent answer yet, so no rate: every run counts as diverged there
    assert sum(c["diverged"] for c in cells) == sum(r["misalignment_rate"] is None for r in rows)
    assert "gamma_frontier.png" in results["plots"] and (out / "gamma_frontier.png").is_file()


def test_gamma_aware_learning_rate_reaches_the_optimizer():
    from sail.em.realign_study import run_name, train_config

    cfg = load_realign_config(None, ["sweep.methods=[sail-revkl]", "sweep.gammas=[0, 1.0, 3.0]", "sweep.lr_gamma_scales=[0, 1.0]",
                                     "sweep.optimizers=[sgd]", "sweep.lrs={sgd: [0.1]}", "sweep.spectral_coefs=[0]"])
    lrs = {run_name(p): train_config(cfg.train, p).optimizer.lr for p in cfg.sweep.points()}
    assert lrs["sail-revkl-sgd-lr0.1-pen0-seed0-gamma3-lrscale1"] == pytest.approx(0.1 / 4)
    assert lrs["sail-revkl-sgd-lr0.1-pen0-seed0-gamma3"] == pytest.approx(0.1)
    assert lrs["sail-revkl-sgd-lr0.1-pen0-seed0-gamma0-lrscale1"] == pytest.approx(0.1)
    with pytest.raises(ConfigError, match="lr_gamma_scales"):
        load_realign_config(None, ["sweep.lr_gamma_scales=[1.0]"])


def test_gamma_axis_excludes_vanilla_sail_as_a_method():
    with pytest.raises(ConfigError, match="gammas"):
        load_realign_config(None, ["sweep.gammas=[0, 1]"])


def test_a_run_made_with_a_deprecated_estimator_name_is_reused(tmp_path):
    """A run directory whose config says ``kl_estimator: exact`` matches a config that asks for
    ``per_token_on_policy_prefixes`` (the same estimator under its new name)."""
    from dataclasses import asdict

    from sail.em.realign_study import _comparable, _saved_config, train_config

    cfg = train_config({"objective": {"kl_estimator": "per_token_on_policy_prefixes"}}, {"method": "sail-revkl", "optimizer": "adamw", "lr": 1e-3, "spectral_coef": 0.0, "seed": 0})
    old = json.loads(json.dumps(asdict(cfg)))
    old["objective"]["kl_estimator"] = "exact"
    del old["objective"]["radius"]  # a field added since
    (tmp_path / "config.yaml").write_text(yaml.safe_dump({"config": old}))
    assert _comparable(_saved_config(tmp_path)) == _comparable(json.loads(json.dumps(asdict(cfg))))
    other = train_config({}, {"method": "sail-revkl", "optimizer": "adamw", "lr": 1e-3, "spectral_coef": 0.0, "seed": 0})
    assert _comparable(_saved_config(tmp_path)) != _comparable(json.loads(json.dumps(asdict(other))))


def _row(method, optimizer, coef, m, kl, seed=0):
    return {"method": method, "optimizer": optimizer, "lr": 1e-3, "spectral_coef": coef, "seed": seed,
            "misalignment_rate": m, "misalignment_rate_all": m, "kl": kl, "misalignment_rate_start": 0.2}


def test_analysis_on_hand_built_rows():
    rows = [
        _row("sail-revkl", "adamw", 0.0, 0.08, 0.16), _row("sail-revkl", "adamw", 1.0, 0.10, 0.10),
        _row("sail-revkl", "muon", 0.0, 0.04, 0.30), _row("sail-revkl", "muon", 1.0, 0.02, 0.20),
        _row("online-dpo", "adamw", 0.0, 0.01, 0.50), _row("online-dpo", "adamw", 1.0, None, 0.40),
    ]
    a = analyse_realignment(rows)
    assert a["start_misalignment_rate"] == pytest.approx(0.2)
    # within SAIL-RevKL: adamw mean 0.09, muon mean 0.03 -> spread 3
    assert a["by_method_optimizer"]["sail-revkl"]["adamw"]["misalignment_rate"] == pytest.approx(0.09)
    assert a["optimizer_spread"]["sail-revkl"] == pytest.approx(3.0)
    assert a["optimizer_spread"]["online-dpo"] is None  # one optimiser
    # None rates are skipped, never counted as 0
    assert a["by_method"]["online-dpo"]["misalignment_rate"] == pytest.approx(0.01)
    effect = a["penalty_effect"]["1.0"]
    assert len(effect["pairs"]) == 3
    assert effect["pairs"][2]["delta_misalignment"] is None  # the DPO run with the penalty has no rate
    assert effect["mean_delta_misalignment"] == pytest.approx((0.02 - 0.02) / 2)
    assert effect["mean_delta_kl"] == pytest.approx((-0.06 - 0.10) / 2)  # not over the pair without a rate
    assert effect["pairs_with_a_diverged_run"] == 1
    assert effect["lower_misalignment"] == 1


def test_gamma_analysis_counts_divergences_and_averages_the_stable_runs():
    from sail.em.realign_study import analyse_gamma, gamma_table

    def row(gamma, m, kl, seed):
        return {**_row("sail-revkl", "sgd", 0.0, m, kl, seed), "lr": 0.1, "gamma": gamma, "radius": None,
                "lr_gamma_scale": 0.0, "coherence": 90.0 if m is not None else 0.1, "kl_ref_to_policy": None if kl is None else 2 * kl}

    collapsed = {**row(1.0, 0.0, 8.0, 2), "coherence": 16.0}  # a few coherent answers, most not: collapsed too
    rows = [row(0.0, None, 200.0, 0), row(0.0, 0.10, 0.08, 1), row(0.0, 0.12, 0.06, 2), row(1.0, 0.20, 0.01, 0), row(1.0, 0.22, 0.03, 1), collapsed]
    cells = analyse_gamma(rows)["cells"]
    assert [(c["gamma"], c["runs"], c["diverged"]) for c in cells] == [(0.0, 3, 1), (1.0, 3, 1)]
    assert cells[0]["misalignment_rate"] == pytest.approx(0.11) and cells[0]["kl_policy_to_ref"] == pytest.approx(0.07)
    assert cells[1]["kl_ref_to_policy"] == pytest.approx(0.04)
    table = gamma_table(cells).splitlines()
    assert table[2] == "| sgd 0.1 | 0 | n/a | 1 / 3 | 0.110 | 90.0 | 0.140 | 0.070 |"
