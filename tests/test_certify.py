"""`sail check certify` / `sail check verify`: certificates that hold, are re-checked without the
search, reject any tampering, and never certify where a sampled point has positive curvature."""

from __future__ import annotations

import copy
import json
import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sail.cli import main
from sail.io import dumps_strict
from sail.theory.certify.certificate import certify, coordinates, point_hessians
from sail.theory.certify.enclosure import CertifiedProblem
from sail.theory.certify.search import WITNESS_FLOOR
from sail.theory.certify.verify import CertificateError, verify
from sail.theory.gamma_scan import bisect_gamma
from sail.theory.instance import random_instance
from sail.theory.problem import ExactProblem
from sail.theory.search import hessian_samples


def tiny(seed: int = 1, **kw):
    params = dict(n_contexts=2, n_responses=3, dim=2, radius=0.5, gamma=2.0)
    params.update(kw)
    return random_instance(seed, **params)


@pytest.fixture(scope="module")
def certificate():
    return json.loads(dumps_strict(certify(tiny(), time_limit=20)))


def sampled_gamma_c(instance, n: int = 400, seed: int = 0) -> float:
    """γ_c from sampled ball points: a lower estimate of the true γ_c."""
    problem = ExactProblem(instance)
    return bisect_gamma(hessian_samples(problem, problem.sample_ball(n, np.random.default_rng(seed))))


def test_certificate_brackets_gamma_c_and_verifies(certificate):
    c = certificate
    assert c["gamma_lo"] > 0 and c["gamma_hi"] >= c["gamma_lo"]
    assert c["gamma_ratio"] <= 1.1
    assert c["mu_at_gamma_hi"] > 0 and c["mu"] > 0 and c["L"] > c["mu"] and c["lambda_F"] > 0
    # the sampled γ_c is a lower estimate of the true one, which the certificate bounds above
    assert sampled_gamma_c(tiny()) <= c["gamma_hi"]
    summary = verify(c)
    assert summary["verified"] and len(summary["claims"]) == len(c["claims"])


def test_witness_has_nonnegative_curvature_in_interval_arithmetic(certificate):
    instance = tiny()
    basis, _ = coordinates(instance)
    witness = next(cl for cl in certificate["claims"] if cl["claim"] == "witness")
    assert witness["b"] == -certificate["gamma_lo"]
    s, q = point_hessians(CertifiedProblem(instance, basis), np.asarray([witness["v"]]))
    top = np.linalg.eigvalsh((s.mid() + q.mid() * witness["b"])[0])[-1]
    assert witness["lower_bound"] >= WITNESS_FLOOR / 2 and top >= witness["lower_bound"]  # kept only above the floor
    assert np.linalg.norm(witness["theta"] - instance.theta_ref) <= instance.radius


def _bound_claim(cert, name="concavity"):
    return next(cl for cl in cert["claims"] if cl["claim"] == name)


@pytest.mark.parametrize(
    "tamper, message",
    [
        (lambda c: _bound_claim(c)["leaf_bounds"].__setitem__(0, _bound_claim(c)["leaf_bounds"][0] - 1e-3), "below the verified"),
        (lambda c: _bound_claim(c)["leaf_bounds"].__setitem__(0, _bound_claim(c)["leaf_bounds"][0] + 1e-3), "differs from the verified"),
        (lambda c: _bound_claim(c).__setitem__("upper_bound", _bound_claim(c)["upper_bound"] - 1e-6), "not the largest leaf bound"),
        (lambda c: _bound_claim(c)["tree"].__setitem__(0, -1), "codes after its last leaf"),
        (lambda c: _bound_claim(c)["tree"].append(-1), "1 codes after its last leaf"),
        (lambda c: _bound_claim(c)["leaf_bounds"].pop(), "leaves to bound"),
        (lambda c: _bound_claim(c).__setitem__("b", _bound_claim(c)["b"] * 0.9), "below the verified"),
        (lambda c: next(cl for cl in c["claims"] if cl["claim"] == "witness").__setitem__("lower_bound", 1e-3), "does not match"),
        (lambda c: next(cl for cl in c["claims"] if cl["claim"] == "witness").__setitem__("v", [2.0, 0.0]), "outside the ball"),
        (lambda c: c["instance"].__setitem__("beta", 1.5), "instance_sha256"),
        (lambda c: c.__setitem__("radius_v", c["radius_v"] * 0.99), "does not cover"),
    ],
    ids=["bound-lowered", "bound-raised", "max-lowered", "tree-cut", "tree-extended", "bound-dropped", "gamma-changed", "witness-raised", "witness-outside", "instance", "radius"],
)
def test_a_perturbed_certificate_is_rejected(certificate, tamper, message):
    bad = copy.deepcopy(certificate)
    tamper(bad)
    with pytest.raises(CertificateError, match=message):
        verify(bad)


def test_just_below_the_sampled_gamma_c_is_never_certified():
    instance = tiny(seed=2)
    gamma = 0.99 * sampled_gamma_c(instance, n=800)
    cert = certify(instance, gamma=gamma, time_limit=10)
    assert cert["mu"] is None and cert["concave_status"] in ("fails", "budget")
    assert not any(cl["claim"] == "concavity" for cl in cert["claims"])
    verify(json.loads(dumps_strict(cert)))


@settings(max_examples=3, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 10_000), kl=st.sampled_from(["ref_to_policy", "policy_to_ref"]))
def test_random_instances_sampled_gamma_c_below_gamma_hi(seed, kl):
    _random_instance_property(seed, kl)


@pytest.mark.slow
@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 10_000), kl=st.sampled_from(["ref_to_policy", "policy_to_ref"]), tabular=st.booleans())
def test_random_instances_sampled_gamma_c_below_gamma_hi_many(seed, kl, tabular):
    _random_instance_property(seed, kl, tabular=tabular)


def _random_instance_property(seed, kl, tabular=False):
    instance = random_instance(seed, n_contexts=2, n_responses=3, dim=2, radius=0.5, gamma=1.0, kl=kl, tabular=tabular)
    cert = json.loads(dumps_strict(certify(instance, time_limit=8, seed=seed)))
    verify(cert)
    if cert["gamma_hi"] is not None:
        assert sampled_gamma_c(instance) <= cert["gamma_hi"] * (1 + 1e-9)
    witness = [cl for cl in cert["claims"] if cl["claim"] == "witness"]
    for cl in witness:
        assert cl["lower_bound"] >= WITNESS_FLOOR / 2


def test_cli_certify_then_verify(tmp_path, capsys):
    path = tmp_path / "cert.json"
    args = ["check", "certify", "--contexts", "2", "--responses", "3", "--dim", "2", "--radius", "0.5", "--gamma", "2"]
    assert main([*args, "--time-limit", "10", "--certificate", str(path)]) == 0
    out = capsys.readouterr().out
    assert "μ at γ = 2" in out and "sail check verify" in out
    assert main(["check", "verify", str(path)]) == 0
    assert "holds" in capsys.readouterr().out
    cert = json.loads(path.read_text())
    cert["claims"][0]["leaf_bounds"][0] -= 0.5
    path.write_text(json.dumps(cert))
    assert main(["check", "verify", str(path)]) == 1
    assert "certificate rejected" in capsys.readouterr().out


@pytest.mark.parametrize(
    "content, problem",
    [(None, "no such file"), ("not json", "not a JSON certificate")],
)
def test_cli_verify_bad_input_exits_2(tmp_path, capsys, content, problem):
    path = tmp_path / "cert.json"
    if content is not None:
        path.write_text(content)
    assert main(["check", "verify", str(path)]) == 2
    err = capsys.readouterr().err
    assert problem in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_cli_certify_json_has_interval_and_witness(capsys):
    args = ["check", "certify", "--contexts", "2", "--responses", "3", "--dim", "2", "--radius", "0.5", "--json", "--time-limit", "10"]
    assert main(args) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["gamma_lo"] <= out["gamma_hi"] and len(out["witness"]) == 2
    assert math.isfinite(out["L"]) and "tree" not in json.dumps(out["claims"])


SHIPPED = ["small", "tabular"]


def shipped(name: str) -> dict:
    from pathlib import Path

    from sail.theory.certify.command import read_certificate

    return read_certificate(Path(__file__).parents[1] / "experiments" / "instances" / "certificates" / f"{name}.json.gz")


@pytest.mark.parametrize("name", SHIPPED)
def test_docs_quote_the_shipped_certificates(name):
    """docs/checkers.md quotes γ_lo, γ_hi, μ, L and λ_F from the shipped certificate files."""
    from pathlib import Path

    from sail.theory.report import fmt

    cert = shipped(name)
    docs = (Path(__file__).parents[1] / "docs" / "checkers.md").read_text()
    row = next(line for line in docs.splitlines() if line.startswith(f"| `{name}.json`"))
    for key in ("gamma_lo", "gamma_hi", "mu", "L", "lambda_F"):
        assert fmt(cert[key]) in row, (key, cert[key], row)
    assert cert["gamma_hi"] <= 1.5 * cert["gamma_lo"]
    from sail.theory.certify.certificate import instance_digest
    from sail.theory.instance import load_instance

    instance = load_instance(Path(__file__).parents[1] / "experiments" / "instances" / f"{name}.json")
    assert cert["instance_sha256"] == instance_digest(instance)


@pytest.mark.slow
@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_certificates_verify(name):
    assert verify(shipped(name))["verified"]
