"""`sail check …`: JSON keys, tables, plots, and clear errors for malformed instances."""

import json

import numpy as np
import pytest

from sail.cli import main
from sail.theory.instance import INSTANCE_KEYS, InstanceError, load_instance, random_instance, validate_instance


def _run(capsys, *argv):
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.fixture()
def instance_file(tmp_path):
    path = tmp_path / "inst.json"
    random_instance(2, n_contexts=3, n_responses=4, dim=3, gamma=6.0, radius=1.0).save(path)
    return path


def test_eval_json_keys_and_values(capsys, instance_file):
    code, out, _ = _run(capsys, "check", "eval", "--instance", str(instance_file), "--json")
    assert code == 0
    data = json.loads(out)
    assert {"objective", "kl", "gradient", "hessian"} <= set(data)
    assert data["kl"] == pytest.approx(0.0, abs=1e-15)  # default θ = θ_ref
    assert np.asarray(data["hessian"]).shape == (3, 3)
    code, out, _ = _run(capsys, "check", "eval", "--instance", str(instance_file), "--theta", "[0.1, 0.2, 0.3]", "--json")
    assert code == 0 and json.loads(out)["kl"] > 0


def test_pl_json_and_plot(capsys, instance_file, tmp_path):
    code, out, _ = _run(capsys, "check", "pl", "--instance", str(instance_file), "--json", "--samples", "40", "--plot", str(tmp_path / "p"))
    assert code == 0
    data = json.loads(out)
    for key in ("max_objective", "theta_star", "pl_mu_hat", "smoothness_hat", "max_hessian_eig", "rate_slope"):
        assert key in data
    assert {"mu", "L", "gamma_c", "lambda_F", "M"} <= set(data["theory"])
    assert (tmp_path / "p" / "rate.png").stat().st_size > 10_000


def test_gamma_scan_table_and_plot(capsys, tmp_path):
    code, out, _ = _run(capsys, "check", "gamma-scan", "--samples", "40", "--plot", str(tmp_path))
    assert code == 0 and "γ_c" in out and "template" in out
    assert (tmp_path / "gamma_scan.png").exists()


def test_gamma_scan_json(capsys):
    code, out, _ = _run(capsys, "check", "gamma-scan", "--samples", "30", "--json", "--contexts", "2", "--responses", "3", "--dim", "2")
    data = json.loads(out)
    assert code == 0 and {"gamma_c_empirical", "gamma_c_theory", "curve"} <= set(data)
    assert len(data["curve"]["gamma"]) == len(data["curve"]["max_hessian_eig"])


def _write(tmp_path, data):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(data) if not isinstance(data, str) else data)
    return path


def _valid():
    return json.loads(json.dumps(random_instance(0, n_contexts=2, n_responses=3, dim=2).to_dict()))


@pytest.mark.parametrize(
    "mutate,field",
    [
        (lambda d: d.update(features=[[1, 2], [3, 4]]), "features"),
        (lambda d: d.update(context_probs=[0.7, 0.7]), "context_probs"),
        (lambda d: d.update(context_probs=[0.5, 0.3, 0.2]), "context_probs"),
        (lambda d: d.update(context_probs=[1.5, -0.5]), "context_probs"),
        (lambda d: d.update(reward=[[0, 1, 2]]), "reward"),
        (lambda d: d.update(theta_ref=[0.0]), "theta_ref"),
        (lambda d: d.update(beta=-1.0), "beta"),
        (lambda d: d.update(beta=0), "beta"),
        (lambda d: d.update(radius=-2.0), "radius"),
        (lambda d: d.update(gamma="big"), "gamma"),
        (lambda d: d.update(kl="forward"), "kl"),
        (lambda d: d.update(temperature=1.0), "temperature"),
        (lambda d: d.pop("reward"), "reward"),
        (lambda d: d["reward"][0].__setitem__(1, float("nan")), "reward"),
        (lambda d: d.update(radius=float("inf")), "radius"),
    ],
)
def test_malformed_instance_exits_2_naming_the_field(capsys, tmp_path, mutate, field):
    data = _valid()
    mutate(data)
    path = _write(tmp_path, data)
    with pytest.raises(InstanceError) as err:
        load_instance(path)
    assert err.value.field == field
    code, out, stderr = _run(capsys, "check", "eval", "--instance", str(path))
    assert code == 2 and repr(field) in stderr and out == ""


def test_unreadable_instance_files(capsys, tmp_path):
    code, _, err = _run(capsys, "check", "pl", "--instance", str(tmp_path / "missing.json"))
    assert code == 2 and "no such file" in err
    code, _, err = _run(capsys, "check", "pl", "--instance", str(_write(tmp_path, "{not json")))
    assert code == 2 and "not valid JSON" in err
    code, _, err = _run(capsys, "check", "eval", "--theta", "[1, 2]")
    assert code == 2 and "--theta" in err


def test_instance_round_trip(tmp_path):
    inst = random_instance(5, tabular=True, n_contexts=2, n_responses=3)
    inst.save(tmp_path / "i.json")
    back = load_instance(tmp_path / "i.json")
    assert set(back.to_dict()) == set(INSTANCE_KEYS)
    np.testing.assert_array_equal(back.features, inst.features)
    assert validate_instance(inst.to_dict()).beta == inst.beta


def test_sample_complexity_cli(capsys, tmp_path):
    code, out, _ = _run(
        capsys, "check", "sample-complexity", "--gamma", "8", "--samples", "30", "--eps-fractions", "0.1,0.03",
        "--batch-sizes", "8,32,128", "--replicas", "4", "--seeds", "2", "--json", "--plot", str(tmp_path),
    )
    data = json.loads(out, parse_constant=lambda c: pytest.fail(f"non-strict JSON constant {c}"))
    assert code == 0 and len(data["samples"]) == 2 and isinstance(data["slope"], float)
    assert len(data["samples_by_seed"]) == 2 and data["seeds"] == 2
    lo, hi = data["slope_ci95"]
    assert lo <= data["slope"] <= hi
    assert set(data["models"]) == {"inv_eps", "inv_eps_log", "inv_eps_squared"}
    assert data["best_model"] in data["models"]
    for fit in data["models"].values():
        assert {"model", "constant", "rms_log_residual", "residual_slope", "residual_slope_ci95"} <= set(fit)
    assert (tmp_path / "sample_complexity.png").exists()
    with pytest.raises(SystemExit):
        main(["check", "sample-complexity", "--eps-fractions", "2"])


@pytest.mark.parametrize(
    "argv, flag",
    [
        (("sample-complexity", "--replicas", "0"), "--replicas"),
        (("sample-complexity", "--seeds", "0"), "--seeds"),
        (("pl", "--samples", "0"), "--samples"),
        (("pl", "--samples", "-5"), "--samples"),
    ],
)
def test_counts_below_one_are_argument_errors(capsys, argv, flag):
    with pytest.raises(SystemExit) as exc:
        main(["check", *argv])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert flag in err[-1] and "must be >= 1" in err[-1]
