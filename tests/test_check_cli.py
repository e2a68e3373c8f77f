"""`sail check …`: JSON keys, tables, plots, and clear errors for malformed instances."""

import dataclasses
import json

import numpy as np
import pytest
from matplotlib.image import imread

from sail.cli import main
from sail.config import ConfigError
from sail.theory.instance import InstanceConfig, instance_from_dict, load_instance, random_instance
from sail.theory.plots import gamma_scan_figure, rate_figure, sample_complexity_figure


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


def assert_png(path, figure) -> None:
    """The PNG at ``path`` decodes to RGBA pixels of ``figure``'s size at the 120 dpi it is saved at."""
    pixels = imread(path)
    width, height = figure.get_size_inches() * 120
    assert pixels.shape == (round(height), round(width), 4)


def legend_texts(ax) -> list[str]:
    return [t.get_text() for t in ax.get_legend().get_texts()]


def test_pl_json_and_plot(capsys, instance_file, tmp_path):
    code, out, _ = _run(capsys, "check", "pl", "--instance", str(instance_file), "--json", "--samples", "40", "--plot", str(tmp_path / "p"))
    assert code == 0
    data = json.loads(out)
    for key in ("max_objective", "theta_star", "pl_mu_hat", "smoothness_hat", "max_hessian_eig", "rate_slope"):
        assert key in data
    assert {"mu", "L", "gamma_c", "lambda_F", "M"} <= set(data["theory"])
    fig = rate_figure(data)
    ax = fig.axes[0]
    gaps = np.asarray(data["gap_trajectory"])
    k = np.arange(gaps.size)
    np.testing.assert_array_equal(ax.lines[0].get_xydata(), np.column_stack([k, gaps])[gaps > 0])
    mu, lipschitz = data["pl_mu_hat"], data["smoothness_hat"]
    assert 0 < mu < lipschitz  # γ = 6 lies above γ_c here: the rate line is drawn
    np.testing.assert_allclose(ax.lines[1].get_ydata(), gaps[0] * (1 - mu / lipschitz) ** k)
    assert legend_texts(ax)[1] == f"bound (1 − μ̂/L̂)^k, μ={mu:.3g}"
    assert ax.get_yscale() == "log" and ax.get_xlabel() == "iteration k" and ax.get_ylabel() == "J_γ* − J_γ(θ_k)"
    assert f"{data['rate_slope']:.4g}" in ax.get_title()
    assert_png(tmp_path / "p" / "rate.png", fig)


def test_gamma_scan_table_and_plot(capsys, tmp_path):
    code, out, _ = _run(capsys, "check", "gamma-scan", "--samples", "40", "--plot", str(tmp_path))
    assert code == 0 and "γ_c" in out and "template" in out
    code, out, _ = _run(capsys, "check", "gamma-scan", "--samples", "40", "--json")
    data = json.loads(out)
    fig = gamma_scan_figure(data)
    ax = fig.axes[0]
    curve = data["curve"]
    np.testing.assert_array_equal(ax.lines[0].get_xydata(), np.column_stack([curve["gamma"], curve["max_hessian_eig"]]))
    np.testing.assert_array_equal(ax.lines[1].get_xydata(), np.column_stack([curve["gamma"], curve["template_bound"]]))
    np.testing.assert_array_equal(ax.lines[2].get_ydata(), [0.0, 0.0])  # the zero line
    np.testing.assert_array_equal(ax.lines[3].get_xdata(), [data["gamma_c_empirical"]] * 2)  # the empirical γ_c
    assert legend_texts(ax)[2] == f"empirical γ_c = {data['gamma_c_empirical']:.3g}"
    assert ax.get_xlabel() == "γ" and ax.get_ylabel() == "largest Hessian eigenvalue"
    assert_png(tmp_path / "gamma_scan.png", fig)


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
    "mutate,key",
    [
        (lambda d: d.update(features=[[1, 2], [3, 4]]), "features[0][0]"),
        (lambda d: d.update(features=[[[1.0], [2.0]], [[3.0]]]), "features"),
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
        (lambda d: d["reward"][0].__setitem__(1, float("nan")), "reward[0][1]"),
        (lambda d: d["reward"][1].__setitem__(0, "high"), "reward[1][0]"),
        (lambda d: d.update(radius=float("inf")), "radius"),
        (lambda d: d.update(gamma=True), "gamma"),
    ],
)
def test_malformed_instance_exits_2_naming_the_key(capsys, tmp_path, mutate, key):
    data = _valid()
    mutate(data)
    path = _write(tmp_path, data)
    with pytest.raises(ConfigError) as err:
        load_instance(path)
    assert err.value.key == key
    code, out, stderr = _run(capsys, "check", "eval", "--instance", str(path))
    assert code == 2 and repr(key) in stderr and out == ""


def test_missing_instance_key_is_named(tmp_path):
    data = _valid()
    data.pop("reward")
    with pytest.raises(ConfigError, match="'reward'"):
        load_instance(_write(tmp_path, data))


def test_override_flags_are_checked_like_the_file(capsys, instance_file):
    code, out, err = _run(capsys, "check", "eval", "--instance", str(instance_file), "--beta", "-1")
    assert code == 2 and out == "" and "'beta'" in err and "> 0" in err
    assert load_instance(instance_file, {"gamma": 0.25}).gamma == 0.25
    code, out, _ = _run(capsys, "check", "eval", "--instance", str(instance_file), "--gamma", "0.25", "--theta", "[0.1, 0.2, 0.3]", "--json")
    data = json.loads(out)
    assert code == 0 and data["kl"] > 0
    assert data["objective"] == pytest.approx(data["sail"] - 0.25 * data["kl"], rel=1e-12)


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
    assert set(back.to_dict()) == {f.name for f in dataclasses.fields(InstanceConfig)}
    for name in ("features", "context_probs", "reward", "theta_ref"):
        np.testing.assert_array_equal(getattr(back, name), getattr(inst, name))
    assert (back.beta, back.gamma, back.radius, back.kl) == (inst.beta, inst.gamma, inst.radius, inst.kl)
    assert instance_from_dict(inst.to_dict()).shape == (2, 3, 6)
    assert inst.replace(gamma=3.0).gamma == 3.0
    with pytest.raises(ConfigError) as err:
        inst.replace(radius=0.0)
    assert err.value.key == "radius"


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
    fig = sample_complexity_figure(data)
    ax = fig.axes[0]
    inv_eps = 1 / np.asarray(data["epsilons"])
    for seed, row in enumerate(data["samples_by_seed"]):  # one grey series per seed, then the mean
        np.testing.assert_allclose(ax.lines[seed].get_xydata(), np.column_stack([inv_eps, np.array(row, dtype=float)]))
    mean = ax.lines[len(data["samples_by_seed"])]
    samples = np.array(data["samples"], dtype=float)  # None (ε not reached) → NaN, not drawn
    reached = np.isfinite(samples)
    np.testing.assert_allclose(mean.get_xydata(), np.column_stack([inv_eps, samples])[reached])
    assert f"slope {data['slope']:.3g}" in mean.get_label()
    assert ax.get_xscale() == ax.get_yscale() == "log"
    assert_png(tmp_path / "sample_complexity.png", fig)
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
