"""`sail check llm`: the exact checker on an enumerable tiny Qwen3.

The independent recomputation (:func:`_recompute`) reads only the saved files, with plain
transformers / peft / safetensors / numpy code; it imports nothing from ``sail``.
"""

import contextlib
import io
import itertools
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from matplotlib.image import imread

from sail.cli import main
from sail.config import ConfigError, build
from sail.io import dumps_strict, strict_json
from sail.loop import SailConfig
from sail.theory.llm.artifacts import save_run
from sail.theory.llm.check import run_check
from sail.theory.llm.config import CheckConfig, CheckerModelConfig, LLMInstanceConfig
from sail.theory.llm.curvature import curvature_at, zero_block_certificate
from sail.theory.llm.enumeration import enumerate_responses
from sail.theory.llm.estimators import estimator_table, sampled_step_gradients
from sail.theory.llm.instance import make_instance
from sail.theory.llm.parametrisation import build_parametrisation
from sail.theory.llm.plots import draw_curvature, draw_rate, report_figure
from sail.theory.llm.problem import TransformerProblem

CONTRACT_KEYS = {
    "objective_ref",
    "objective_probe",
    "objective_star",
    "kl_star",
    "gradient_mapping_norm_star",
    "gamma_c_hat",
    "gamma_c_infinite",
    "curvature",
    "pl_mu_hat",
    "smoothness_hat",
    "rate_slope",
    "estimators",
    "parametrisation",
}
QUICK = ["--samples", "4", "--starts", "2", "--ascent-iterations", "100", "--rate-steps", "40", "--loop-steps", "5"]


def _cli(*argv) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(list(argv))
    return code, out.getvalue(), err.getvalue()


def _reject_constant(name):
    raise ValueError(f"non-strict JSON constant {name}")


@pytest.fixture(scope="module")
def head_run(tmp_path_factory):
    """One quick CLI run in head mode, with --save and --plot."""
    root = tmp_path_factory.mktemp("check_llm_head")
    code, out, err = _cli("check", "llm", "--parametrisation", "head", *QUICK, "--json", "--save", str(root / "save"), "--plot", str(root / "plots"))
    assert code == 0, err
    return json.loads(out, parse_constant=_reject_constant), root


@pytest.fixture(scope="module")
def lora_problem():
    return TransformerProblem(build_parametrisation(make_instance(0, "lora")))


# --- the independent recomputation: plain transformers / peft / safetensors / numpy -------------
@pytest.fixture()
def float64_rms_norm(monkeypatch):
    """Stock Qwen3RMSNorm computes in float32 whatever the input; the convention is float64."""
    from transformers.models.qwen3 import modeling_qwen3

    def forward(self, hidden_states):
        variance = hidden_states.pow(2).mean(-1, keepdim=True)
        return self.weight * (hidden_states * torch.rsqrt(variance + self.variance_epsilon))

    monkeypatch.setattr(modeling_qwen3.Qwen3RMSNorm, "forward", forward)


def _plain_log_probs(model, prompts, responses) -> np.ndarray:
    """log π(y|x) = Σ_t log softmax(logits)[y_t] over the full vocabulary, input = prompt + response."""
    out = np.zeros((len(prompts), len(responses[0])))
    for i, (prompt, rows) in enumerate(zip(prompts, responses)):
        for length in sorted({len(r) for r in rows}):
            index = [j for j, r in enumerate(rows) if len(r) == length]
            ids = torch.tensor([prompt + rows[j] for j in index])
            with torch.no_grad():
                logits = model(input_ids=ids).logits[:, len(prompt) - 1 : len(prompt) - 1 + length]
            lp = torch.log_softmax(logits, dim=-1).gather(-1, ids[:, len(prompt) :, None])[..., 0].sum(-1)
            out[i, index] = lp.numpy()
    return out


def _plain_objective(logp, ref, inst) -> tuple[float, float]:
    """(J_γ, E_ρ KL) by the instance's conventions, in numpy float64."""
    beta, gamma = inst["beta"], inst["gamma"]
    total_j, total_kl = 0.0, 0.0
    for rho, lp, lr, r in zip(inst["context_probs"], logp, ref, np.asarray(inst["rewards"])):
        u = lp - lr
        z = beta * (u[:, None] - u[None, :])
        p = 1.0 / (1.0 + np.exp(-(r[:, None] - r[None, :])))
        ell = -p * np.logaddexp(0.0, -z) - (1 - p) * np.logaddexp(0.0, z)
        probs = np.exp(lp)
        j = float(probs @ ell @ probs)
        if inst["kl_direction"] == "ref_to_policy":
            kl = float(np.sum(np.exp(lr) * (lr - lp)))
        else:
            kl = float(np.sum(probs * (lp - lr)))
        total_j += rho * (j - gamma * kl)
        total_kl += rho * kl
    return total_j, total_kl


def _recompute(directory: Path, point: str) -> tuple[float, float]:
    from peft import PeftModel
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    inst = json.loads((directory / "instance.json").read_text())

    def base():
        return AutoModelForCausalLM.from_pretrained(str(directory / "model"), dtype=torch.float64, attn_implementation="sdpa").eval()

    if inst["parametrisation"] == "head":
        policy = base()
        head = policy.get_output_embeddings()
        delta = load_file(str(directory / f"head_{point}.safetensors"))["delta"]
        head.weight = torch.nn.Parameter(head.weight.detach().clone() + delta)  # a new tensor: unties the embeddings
        reference = base()
    else:
        policy = PeftModel.from_pretrained(base(), str(directory / f"adapter_{point}")).eval()
        if inst["parametrisation"] == "lora":
            reference = base()
        else:
            reference = PeftModel.from_pretrained(base(), str(directory / "adapter_ref")).eval()
    logp = _plain_log_probs(policy, inst["prompts"], inst["responses"])
    ref = _plain_log_probs(reference, inst["prompts"], inst["responses"])
    return _plain_objective(logp, ref, inst)


def _assert_recomputed(directory: Path, expected: dict) -> None:
    for point in ("ref", "probe", "star"):
        value, kl = _recompute(directory, point)
        assert value == pytest.approx(expected[f"objective_{point}"], rel=1e-6, abs=1e-12), point
        if point == "star":
            assert kl == pytest.approx(expected["kl_star"], rel=1e-6, abs=1e-12)


def test_head_run_recomputed_from_the_saved_files(head_run, float64_rms_norm):
    report, root = head_run
    directory = root / "save"
    assert sorted(p.name for p in directory.iterdir()) == [
        "head_probe.safetensors",
        "head_ref.safetensors",
        "head_star.safetensors",
        "instance.json",
        "model",
    ]
    inst = json.loads((directory / "instance.json").read_text())
    assert set(inst) == {
        "prompts",
        "context_probs",
        "responses",
        "rewards",
        "eos_token_id",
        "max_new_tokens",
        "beta",
        "gamma",
        "kl_direction",
        "radius",
        "parametrisation",
    }
    _assert_recomputed(directory, report)


def test_lora_saved_adapters_recomputed(tmp_path, float64_rms_norm):
    """LoRA: PEFT adapters in float64 at θ₀, a probe point and a point standing in for θ*."""
    for kind in ("lora", "lora_nonzero_init"):
        problem = TransformerProblem(build_parametrisation(make_instance(1, kind)))
        rng = np.random.default_rng(3)
        points = {"ref": problem.theta_ref, "probe": problem.random_point(rng), "star": problem.random_point(rng)}
        save_run(problem.param, points, tmp_path / kind)
        expected = {f"objective_{name}": problem.value(theta) for name, theta in points.items()}
        expected["kl_star"] = float(problem.terms(points["star"], order=0).kl)
        assert expected["kl_star"] > 1e-4
        _assert_recomputed(tmp_path / kind, expected)
        from safetensors.torch import load_file

        tensors = load_file(str(tmp_path / kind / "adapter_probe" / "adapter_model.safetensors"))
        assert tensors and all(t.dtype == torch.float64 for t in tensors.values())


# --- the contract ---------------------------------------------------------------------------
def test_contract_keys_and_strict_json(head_run):
    report, _ = head_run
    assert CONTRACT_KEYS <= set(report)
    assert report["parametrisation"] == "head"
    assert all(set(row) == {"gamma", "max_hessian_eig"} for row in report["curvature"])
    names = {(row["name"], row["kl_direction"]) for row in report["estimators"]}
    assert ("sequence", "ref_to_policy") in names and ("sequence", "policy_to_ref") in names
    assert all(set(row) == {"name", "kl_direction", "relative_bias", "se", "default"} for row in report["estimators"])
    assert [row["name"] for row in report["estimators"] if row["default"]] == ["sequence", "sequence"]
    assert report["objective_ref"] == pytest.approx(-math.log(2), abs=1e-12)  # Δ = 0 at θ₀: ℓ = log σ(0)
    assert report["objective_star"] >= max(report["objective_ref"], report["objective_probe"])
    assert report["gradient_mapping_norm_star"] < 1e-6


def test_strict_json_turns_non_finite_numbers_into_null_and_a_flag():
    data = strict_json({"a": math.inf, "b": [math.nan, np.float64(-math.inf), np.float64(2.5)], "c": np.int64(3), "d": np.bool_(True)})
    assert data == {"a": None, "a_nonfinite": "inf", "b": [None, None, 2.5], "b_nonfinite": {"0": "nan", "1": "-inf"}, "c": 3, "d": True}
    json.dumps(data, allow_nan=False)


def test_head_mode_has_a_finite_gamma_c(head_run):
    report, _ = head_run
    gamma_c = report["gamma_c_hat"]
    assert report["gamma_c_infinite"] is False and 0 < gamma_c < 100
    for row in report["curvature"]:  # ∇²KL ⪰ 0 for the head: concave exactly from γ_c on
        if row["gamma"] >= 1.01 * gamma_c:
            assert row["max_hessian_eig"] <= 0
        if row["gamma"] <= 0.99 * gamma_c:
            assert row["max_hessian_eig"] > 0
    assert report["template"]["lambda_F"] > 0  # KL(π_ref‖π_Δ) convex in Δ: λ_F > 0 on the identifiable subspace
    assert report["local_loglinear"]["gamma_c_hat"] > 0


def _assert_png_of(path: Path, figure) -> None:
    """The saved PNG decodes to RGBA pixels of ``figure``'s size at 120 dpi."""
    width, height = figure.get_size_inches() * 120
    assert imread(path).shape == (round(height), round(width), 4)


def test_curvature_plot_draws_the_report(head_run):
    report, root = head_run
    fig = report_figure(draw_curvature, report)
    ax = fig.axes[0]
    gammas = [r["gamma"] for r in report["curvature"]]
    np.testing.assert_array_equal(ax.lines[0].get_xydata(), [[r["gamma"], r["max_hessian_eig"]] for r in report["curvature"]])
    np.testing.assert_array_equal(ax.lines[1].get_xydata(), np.column_stack([gammas, [r["max_hessian_eig"] for r in report["curvature_at_ref"]]]))
    np.testing.assert_array_equal(ax.lines[3].get_xdata(), [report["gamma_c_hat"]] * 2)  # after the zero line: γ_c
    assert [t.get_text() for t in ax.get_legend().get_texts()][2] == f"γ_c = {report['gamma_c_hat']:.3g}"
    assert ax.get_xscale() == ax.get_yscale() == "symlog"
    assert ax.get_title() == f"head, R = {report['radius']:g}: γ_c = {report['gamma_c_hat']:.3g}"
    _assert_png_of(root / "plots" / "curvature.png", fig)


def test_rate_plot_draws_the_report(head_run):
    report, root = head_run
    fig = report_figure(draw_rate, report)
    ax = fig.axes[0]
    gaps = np.asarray(report["gap_trajectory"])
    k = np.arange(gaps.size)
    np.testing.assert_array_equal(ax.lines[0].get_xydata(), np.column_stack([k, gaps])[gaps > 0])
    mu, lipschitz = report["pl_mu_hat"], report["smoothness_hat"]
    assert 0 < mu < lipschitz  # head mode at γ = 1: the rate line is drawn
    np.testing.assert_allclose(ax.lines[1].get_xydata(), np.column_stack([k, gaps[0] * (1 - mu / lipschitz) ** k]))
    assert ax.get_yscale() == "log" and ax.get_xlabel() == "step k" and ax.get_ylabel() == "J_γ* − J_γ(θ_k)"
    _assert_png_of(root / "plots" / "rate.png", fig)


@pytest.mark.parametrize(
    "flag,value",
    [
        ("--gamma", "-1"),
        ("--gamma", "nan"),
        ("--radius", "0"),
        ("--radius", "inf"),
        ("--kl-direction", "sideways"),
        ("--parametrisation", "full"),
        ("--seed", "x"),
        ("--samples", "0"),
        ("--loop-steps", "-2"),
    ],
)
def test_bad_flag_values_exit_2_naming_the_flag(flag, value):
    code, out, err = _cli("check", "llm", flag, value)
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and flag in err and "Traceback" not in err


@pytest.mark.parametrize(
    "config, data, key",
    [
        (LLMInstanceConfig, {"kl_direction": "sideways"}, "kl_direction"),
        (LLMInstanceConfig, {"parametrisation": "full"}, "parametrisation"),
        (LLMInstanceConfig, {"model": {"lora_rank": 0}}, "model.lora_rank"),
        (LLMInstanceConfig, {"n_prompts": 0}, "n_prompts"),
        (CheckConfig, {"rate_steps": 2}, "rate_steps"),
        (CheckerModelConfig, {"vocab_size": 1}, "vocab_size"),
    ],
)
def test_configs_name_the_bad_key(config, data, key):
    with pytest.raises(ConfigError) as err:
        build(config, data)
    assert err.value.key == key


def test_output_paths_that_are_files_exit_2(tmp_path):
    taken = tmp_path / "taken"
    taken.write_text("")
    for flag in ("--save", "--plot"):
        code, out, err = _cli("check", "llm", flag, str(taken))
        assert code == 2 and out == "" and err.count("\n") == 1 and flag in err


# --- the exact computation ------------------------------------------------------------------
def test_enumeration_covers_every_response_with_eos_and_varying_length():
    responses = enumerate_responses(5, 4, 3)
    assert len(responses) == 1 + 4 + 16 + 64 and len(set(responses.responses)) == len(responses)
    assert (4,) in responses.responses  # the empty response: EOS first
    lengths = responses.lengths().tolist()
    assert set(lengths) == {1, 2, 3}
    for y in responses.responses:  # EOS only as the last token; a response without EOS is cut at T
        assert 4 not in y[:-1] and (y[-1] == 4 or len(y) == 3)


def test_listed_responses_carry_probability_one(lora_problem):
    problem = lora_problem
    rng = np.random.default_rng(0)
    for theta in (problem.theta_ref, problem.random_point(rng)):
        np.testing.assert_allclose(problem.log_probs(theta).exp().sum(-1).numpy(), 1.0, rtol=0, atol=1e-12)


def test_log_probs_match_a_plain_forward_factor_by_factor(lora_problem):
    """Empty response = log p(EOS|x); EOS-ended responses include the EOS factor; cut ones have none."""
    problem = lora_problem
    param, inst = problem.param, problem.instance
    index = {y: i for i, y in enumerate(inst.responses.responses)}
    prompt = list(inst.prompts[1])
    logp = problem.log_probs(problem.theta_ref)[1]
    for y in [(4,), (0, 4), (2, 1, 4), (3, 0, 2), (1, 1, 1)]:
        ids = torch.tensor([prompt + list(y)])
        with torch.no_grad():
            logits = param.model(input_ids=ids).logits[0].log_softmax(-1)
        direct = sum(float(logits[len(prompt) - 1 + t, tok]) for t, tok in enumerate(y))
        assert float(logp[index[y]]) == pytest.approx(direct, abs=1e-12)


@pytest.mark.parametrize("kind", ["lora", "head"])
def test_exact_gradient_matches_finite_differences(kind):
    problem = TransformerProblem(build_parametrisation(make_instance(0, kind)))
    rng = np.random.default_rng(1)
    theta = problem.random_point(rng)
    _, grad = problem.value_and_grad(theta)
    for _ in range(3):
        direction = problem.basis @ rng.standard_normal(problem.rank)
        direction /= np.linalg.norm(direction)
        h = 1e-5
        fd = (problem.value(theta + h * direction) - problem.value(theta - h * direction)) / (2 * h)
        assert fd == pytest.approx(grad @ direction, rel=1e-6, abs=1e-10)
    t = problem.terms(theta, order=2)  # and the Hessian against differences of the gradient
    direction = problem.basis @ rng.standard_normal(problem.rank)
    fd_hess = (problem.gradient(theta + 1e-5 * direction) - problem.gradient(theta - 1e-5 * direction)) / 2e-5
    np.testing.assert_allclose(t.hess.numpy() @ direction, fd_hess, rtol=1e-5, atol=1e-7)


def test_head_null_directions_leave_the_objective_unchanged():
    """Δ + 1uᵀ and Δ + v wᵀ (w ⊥ every hidden state) change no softmax: the Hessian vanishes there."""
    problem = TransformerProblem(build_parametrisation(make_instance(0, "head")))
    vocab, width = 5, 8
    assert 0 < problem.rank <= (vocab - 1) * width
    ones = np.kron(np.ones(vocab), np.eye(width)[0])  # Δ = 1·e₀ᵀ
    null = ones - problem.basis @ (problem.basis.T @ ones)
    np.testing.assert_allclose(null, ones, atol=1e-12)
    theta = problem.random_point(np.random.default_rng(0))
    assert problem.value(theta + 0.7 * ones) == pytest.approx(problem.value(theta), abs=1e-13)
    hess = problem.terms(theta, order=2).hess.numpy()
    np.testing.assert_allclose(hess @ ones, 0.0, atol=1e-10)


def test_lora_at_b_zero_is_indefinite_for_every_gamma(lora_problem):
    """ΔW = BA at B = 0: the A-block of ∇²J and of ∇²KL is exactly 0, the cross block is not."""
    problem = lora_problem
    blocks = zero_block_certificate(problem, problem.param.lora_a_mask())
    assert blocks["a_block_max_abs_sail"] == 0.0 and blocks["a_block_max_abs_kl"] == 0.0
    assert blocks["cross_block_max_abs_sail"] > 1e-3
    assert blocks["indefinite_for_every_gamma"]
    for row in curvature_at(problem, problem.theta_ref, [0.0, 100.0, 1e4]):
        assert row["max_hessian_eig"] > 1e-3
    # negative control: with B ≠ 0 at θ₀ the A-block is not zero
    nonzero = TransformerProblem(build_parametrisation(make_instance(0, "lora_nonzero_init")))
    assert zero_block_certificate(nonzero, nonzero.param.lora_a_mask())["a_block_max_abs_sail"] > 1e-6


def test_lora_run_reports_gamma_c_infinite_as_null():
    settings = CheckConfig(samples=2, starts=1, ascent_iterations=30, polish_iterations=3, rate_steps=10, path_points=2, refine_iterations=0, loop_steps=0, estimators=False)
    report, _, _ = run_check(make_instance(0, "lora"), settings=settings)
    assert report["gamma_c_infinite"] is True and report["gamma_c_hat"] is None
    assert report["kl_null_certificate"]["indefinite_for_every_gamma"]
    assert json.loads(dumps_strict(report))["gamma_c_hat"] is None


# --- the training step as an estimator --------------------------------------------------------
@pytest.mark.parametrize("kind", ["lora", "lora_nonzero_init", "head"])
def test_expected_step_gradient_bias_per_estimator(kind):
    """E[step] by enumeration vs ∇J_γ in float64: unbiased estimators agree to round-off, in both
    directions and in every parametrisation (each with its own reference context)."""
    problem = TransformerProblem(build_parametrisation(make_instance(0, kind, radius=1.0)))
    coords = np.random.default_rng(1).standard_normal(problem.rank)
    theta = problem.from_coords(coords / np.linalg.norm(coords))  # on the sphere: π_θ far from π_ref
    rows = {(r["name"], r["kl_direction"]): r["relative_bias"] for r in estimator_table(problem, theta)}
    for direction in ("ref_to_policy", "policy_to_ref"):
        assert rows[("sequence", direction)] < 1e-10
        assert rows[("k1_score", direction)] < 1e-10 and rows[("k3_score", direction)] < 1e-10
        assert rows[("k1", direction)] > 1e-2
    assert rows[("k2", "policy_to_ref")] < 1e-10
    assert rows[("per_token_on_policy_prefixes", "ref_to_policy")] > 1e-2


def _sampled_check(kind, direction, draws, batch_size):
    problem = TransformerProblem(build_parametrisation(make_instance(0, kind, kl_direction=direction)))
    theta = problem.random_point(np.random.default_rng(1))
    truth = problem.gradient(theta)
    cfg = SailConfig(beta=problem.beta, gamma=problem.gamma, kl_direction=direction, kl_estimator="sequence")
    grads = sampled_step_gradients(problem, theta, cfg, draws=draws, batch_size=batch_size, seed=7)
    directions = np.vstack([np.random.default_rng(2).standard_normal((5, truth.size)), truth[None]])
    projections = grads @ directions.T
    mean, se = projections.mean(0), projections.std(0, ddof=1) / math.sqrt(draws)
    target = directions @ truth
    assert np.all(np.abs(mean - target) <= 3 * se), (mean, target, se)
    assert np.all(se < 0.5 * np.abs(target[-1]))  # the check can fail: the SEs are small against ∇J_γ


def test_sampled_default_step_is_unbiased():
    """Real sampled steps (sail_loss, the default sequence estimator): mean within 3 SE of ∇J_γ."""
    _sampled_check("lora", "ref_to_policy", draws=300, batch_size=4)


@pytest.mark.slow
@pytest.mark.parametrize("kind,direction", list(itertools.product(["lora", "head"], ["ref_to_policy", "policy_to_ref"])))
def test_sampled_default_step_is_unbiased_long(kind, direction):
    _sampled_check(kind, direction, draws=2000, batch_size=4)
