"""The demo starts at once: the package ships the built EM organism and misaligned policy, checked
against their manifest, used with an empty cache, rebuilt by `sail build organism --verify`; and the
default recipe's first evaluation gives the figures measured on the shipped weights."""

import json
import shutil

import pytest

import sail.em.organism as O
import sail.em.realign as R
import sail.em.weights as W
from sail.cli import DEFAULT_RECIPE, main
from sail.models.cache import BUILD_INFO

ORGANISM = "em-organism-v1-d70c5ff99d-seed0"
MISALIGNED = "misaligned-9305fdff46-seed0"
SHIPPED_SHA256 = {
    ORGANISM: "bcd647ce38822bfbc637a88d000b5c0c466d39d25a64258607a50930be6230a0",
    MISALIGNED: "be7c8df1230a91feb84d821ad2352728d8798cceb95f083e8f262a14eb6a822c",
}
"""The ``model.safetensors`` this code builds from an empty cache (2-core x86, torch 2.13.0+cpu)."""


def test_the_shipped_weights_are_the_default_builds_and_match_their_manifest():
    assert O.organism_dir_name(0) == ORGANISM and R.misaligned_dir_name(0) == MISALIGNED
    assert set(W.manifest()) == {ORGANISM, MISALIGNED}
    for name, digest in SHIPPED_SHA256.items():
        assert W.manifest()[name]["model.safetensors"] == digest
        assert W.shipped_model(name) == W.ROOT / name
        assert W.sha256_of(W.ROOT / name / "model.safetensors") == digest
    info = json.loads((W.ROOT / MISALIGNED / BUILD_INFO).read_text())
    assert info["base"] == ORGANISM  # machine-independent: the base's cache entry, not a path


def _no_build(*args, **kwargs):
    raise AssertionError("built although the package ships it")


def test_an_empty_cache_uses_the_shipped_models(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("SAIL_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(O, "build_base_organism", _no_build)
    monkeypatch.setattr(R, "build_misaligned_policy", _no_build)
    assert R.ensure_misaligned_policy() == W.ROOT / MISALIGNED
    assert O.ensure_base_organism() == W.ROOT / ORGANISM
    assert not (tmp_path / "cache").exists() and capsys.readouterr().err == ""


def _copy_shipped(out_dir, name, corrupt=False):
    for file in (W.ROOT / name).iterdir():
        shutil.copy(file, out_dir / file.name)
    if corrupt:
        with open(out_dir / "model.safetensors", "r+b") as fh:
            fh.seek(-1, 2)
            last = fh.read(1)
            fh.seek(-1, 2)
            fh.write(bytes([last[0] ^ 1]))


def test_a_shipped_file_that_does_not_match_is_built_instead(tmp_path, monkeypatch, capsys):
    shipped = tmp_path / "weights"
    shutil.copytree(W.ROOT, shipped, ignore=shutil.ignore_patterns("__pycache__", "*.py"))
    _copy_shipped(shipped / ORGANISM, ORGANISM, corrupt=True)
    monkeypatch.setattr(W, "ROOT", shipped)
    built = []
    monkeypatch.setattr(O, "build_base_organism", lambda out, **kw: built.append(out) or _copy_shipped(out, ORGANISM))
    path = O.ensure_base_organism(tmp_path / "cache")
    assert path == tmp_path / "cache" / "em" / ORGANISM and len(built) == 1
    err = capsys.readouterr().err.splitlines()
    assert f"shipped {ORGANISM}/model.safetensors does not match its sha256" in err[0]
    assert err[1].startswith(f"sail: building the EM organism {ORGANISM} once (about 2–5 min on a CPU)")


@pytest.mark.parametrize("same", [True, False], ids=["same-bytes", "other-bytes"])
def test_build_organism_verify_compares_a_rebuild_with_the_shipped_weights(monkeypatch, capsys, same):
    """The rebuild itself (minutes) is replaced by a copy; `-m slow` runs the real one."""
    monkeypatch.setattr(O, "build_base_organism", lambda out, **kw: _copy_shipped(out, ORGANISM, corrupt=not same))
    monkeypatch.setattr(R, "build_misaligned_policy", lambda out, base, narrow: _copy_shipped(out, MISALIGNED))
    assert main(["build", "organism", "--verify"]) == (0 if same else 1)
    out = capsys.readouterr().out
    assert f"{MISALIGNED}: model.safetensors sha256 {SHIPPED_SHA256[MISALIGNED]} = the shipped weights" in out
    assert (f"{ORGANISM}: model.safetensors sha256 {SHIPPED_SHA256[ORGANISM]} = the shipped weights" in out) == same


@pytest.mark.slow
def test_a_rebuild_from_an_empty_cache_gives_the_shipped_bytes(capsys):
    """Minutes: both models rebuilt; bytes equal on the machine and torch build that made them."""
    assert main(["build", "organism", "--verify"]) == 0, capsys.readouterr()


def test_the_demo_starts_from_the_pinned_figures(tmp_path, monkeypatch):
    """The default recipe's step-0 evaluation on the shipped weights, with an empty cache (nothing is
    built). Exact floats measured on the 2-core x86 development machine (torch 2.13.0+cpu, one
    thread); another CPU or torch build may differ in the last digits, and then this test pins
    what that machine gives."""
    from sail.train.commands import config_from_arguments
    from sail.train.trainer import Trainer

    monkeypatch.setenv("SAIL_CACHE", str(tmp_path / "cache"))
    cfg = config_from_arguments([], ["run.progress=false"], DEFAULT_RECIPE)
    trainer = Trainer(cfg, tmp_path / "run")
    metrics = trainer.evaluate()
    assert metrics["eval/reward_mean"] == 3.6381913692095615
    assert metrics["eval/reference_reward_mean"] == 3.6381913692095615
    assert metrics["eval/misalignment_rate"] == 0.21354166666666666
    assert metrics["eval/reference_misalignment_rate"] == 0.21354166666666666
    assert not (tmp_path / "cache").exists()


def test_the_demo_ends_within_a_band(tmp_path, monkeypatch):
    """`make demo`'s run (the default recipe, 100 steps, about a minute): the end figures within a
    band around those measured on a 2-core x86 VM (reward 4.29, misalignment 0.089, win rate 0.59,
    KL(π‖π_ref) 0.124). A hundred steps of sampling and updates amplify float differences between
    CPUs, so the band is wide; the start figures are pinned exactly above."""
    from sail.train.commands import config_from_arguments
    from sail.train.trainer import Trainer

    monkeypatch.setenv("SAIL_CACHE", str(tmp_path / "cache"))
    cfg = config_from_arguments([], ["run.progress=false", "run.save_every=100", "spectral.log_every=0"], DEFAULT_RECIPE)
    summary = Trainer(cfg, tmp_path / "run").run()
    start, end = summary["evals"][0], summary["evals"][-1]
    assert start["eval/misalignment_rate"] == 0.21354166666666666
    assert 4.0 <= end["eval/reward_mean"] <= 4.6
    assert 0.03 <= end["eval/misalignment_rate"] <= 0.15
    assert 0.5 <= end["eval/win_rate_vs_reference"] <= 0.7
    assert 0.05 <= end["eval/kl_policy_to_ref"] <= 0.3
