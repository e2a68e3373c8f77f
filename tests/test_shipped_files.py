"""Every input file the project ships is loaded by a test, through the loader its command uses."""

from __future__ import annotations

import dataclasses
import importlib
import json
from pathlib import Path

import numpy as np
import pytest

from sail.cli import main
from sail.config import build
from sail.theory.instance import InstanceConfig, load_instance
from sail.theory.problem import ExactProblem

REPO = Path(__file__).resolve().parents[1]
INSTANCE_FILES = sorted((REPO / "experiments" / "instances").glob("*.json"))


# --- theory instances (`sail check … --instance FILE`) ----------------------------------------------
def test_the_instance_folder_is_found():
    assert {"small.json", "tabular.json"} <= {p.name for p in INSTANCE_FILES}  # the two docs/checkers.md uses


@pytest.mark.parametrize("path", INSTANCE_FILES, ids=lambda p: p.name)
def test_instance_file_loads_as_written(path):
    """The file's nested lists become arrays of the shapes they spell out, its scalars unchanged."""
    raw = json.loads(path.read_text())
    inst = load_instance(path)
    n_ctx, n_resp, dim = len(raw["features"]), len(raw["features"][0]), len(raw["features"][0][0])
    assert inst.shape == (n_ctx, n_resp, dim)
    assert inst.context_probs.shape == (n_ctx,) and inst.reward.shape == (n_ctx, n_resp) and inst.theta_ref.shape == (dim,)
    np.testing.assert_array_equal(inst.features, raw["features"])
    np.testing.assert_array_equal(inst.reward, raw["reward"])
    np.testing.assert_allclose(inst.context_probs, raw["context_probs"], rtol=1e-12)
    assert (inst.beta, inst.gamma, inst.radius, inst.kl) == (raw["beta"], raw["gamma"], raw["radius"], raw.get("kl", "ref_to_policy"))
    assert json.loads(json.dumps(inst.to_dict())) == json.loads(json.dumps(dataclasses.asdict(build(InstanceConfig, raw))))


@pytest.mark.parametrize("path", INSTANCE_FILES, ids=lambda p: p.name)
def test_instance_file_runs_the_cheap_check(path, capsys):
    """`sail check eval` at θ_ref: KL = 0, so J_γ = J; the gradient and Hessian have the file's d."""
    assert main(["check", "eval", "--instance", str(path), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    dim = len(json.loads(path.read_text())["theta_ref"])
    assert out["kl"] == pytest.approx(0.0, abs=1e-14)
    assert out["objective"] == pytest.approx(out["sail"], abs=1e-14)
    assert len(out["gradient"]) == dim and np.asarray(out["hessian"]).shape == (dim, dim)
    problem = ExactProblem(load_instance(path))
    assert problem.value(problem.theta_ref) == pytest.approx(out["objective"], rel=1e-12)


def test_small_instance_reproduces_the_worked_example(capsys):
    """The numbers docs/checkers.md prints for `sail check eval --instance small.json --theta …`."""
    path = REPO / "experiments" / "instances" / "small.json"
    assert main(["check", "eval", "--instance", str(path), "--theta", "[0.3, -0.2, 0.5]", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert (out["objective"], out["sail"], out["kl"]) == pytest.approx((-1.12337, -0.757269, 0.0732205), rel=1e-5)
    assert out["gradient"] == pytest.approx([-0.874016, -0.0283814, -0.278059], rel=1e-5)


# --- the spectral experiment (`experiments/spectral`) -------------------------------------------------
@pytest.fixture()
def spectral_experiment(monkeypatch):
    monkeypatch.syspath_prepend(str(REPO / "experiments" / "spectral"))
    return importlib.import_module("spectral_experiment")


def test_shipped_spectral_results_come_from_the_default_config(spectral_experiment):
    """results/summary.json records the config it ran with: it builds, and it is the default one,
    with the default fine-tunes."""
    exp = spectral_experiment
    summary = json.loads((REPO / "experiments" / "spectral" / "results" / "summary.json").read_text())
    assert build(exp.ExperimentConfig, summary["config"]) == exp.ExperimentConfig()
    runs = {r.label: {"optimizer": r.optimizer, "hparams": r.hparams, "penalty_weight": r.penalty_weight} for r in exp.default_runs()}
    assert {label: {k: r[k] for k in ("optimizer", "hparams", "penalty_weight")} for label, r in summary["runs"].items()} == runs


def test_the_accelerate_config_loads_with_accelerate_and_leaves_precision_to_sail():
    """experiments/accelerate/multi_gpu.yaml through accelerate's own loader: one machine, data
    parallel, and no mixed precision of accelerate's (sail's `run.mixed_precision` owns it)."""
    from accelerate.commands.config.config_args import load_config_from_file
    from accelerate.utils import DistributedType

    cfg = load_config_from_file(str(Path(__file__).parents[1] / "experiments" / "accelerate" / "multi_gpu.yaml"))
    assert cfg.distributed_type == DistributedType.MULTI_GPU
    assert (cfg.num_machines, cfg.num_processes, str(cfg.mixed_precision)) == (1, 8, "no")
