"""The optimiser study's analysis on hand-built runs: OLS and R² against closed forms, the
pooled-vs-stratified comparison, spreads, Spearman, and the plots."""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from matplotlib.image import imread

from sail.em.analysis import analyse, loss_alignment_r2, ols_fit, optimizer_spread, spearman
from sail.em.study_plots import plot_all


def test_ols_matches_polyfit_and_r2_definition():
    rng = np.random.default_rng(0)
    x = rng.normal(size=40)
    y = 3.0 - 2.0 * x + rng.normal(scale=0.5, size=40)
    fit = ols_fit(x, y)
    slope, intercept = np.polyfit(x, y, 1)
    assert fit["slope"] == pytest.approx(slope) and fit["intercept"] == pytest.approx(intercept)
    assert fit["r2"] == pytest.approx(np.corrcoef(x, y)[0, 1] ** 2)


def test_degenerate_fits_fall_back_to_the_mean():
    assert ols_fit([1.0, 1.0, 1.0], [1.0, 2.0, 3.0])["slope"] == 0.0
    assert ols_fit([1.0], [5.0])["intercept"] == 5.0
    assert ols_fit([1.0, 2.0], [4.0, 4.0])["r2"] is None  # nothing to explain


def _runs(offsets, n=6, noise=0.0, seed=0):
    """Alignment = offset_g − 10·log L exactly (plus noise): same slope, optimiser-specific level."""
    rng = np.random.default_rng(seed)
    runs = []
    for g, offset in offsets.items():
        for i in range(n):
            loss = math.exp(rng.uniform(-2, 0))
            runs.append({"optimizer": g, "final_train_loss": loss, "alignment": offset - 10 * math.log(loss) + noise * rng.normal(),
                         "misalignment_rate": max(0.0, (100 - offset) / 100), "misalignment_rate_all": 0.0, "flatness": offset / 100,
                         "spectral_coef": 0.0 if i % 2 else 0.1, "lr": 10.0 ** -(1 + i // 2), "seed": 0, "coherence": 90.0})
    return runs


def test_stratified_r2_sees_optimiser_levels_that_pooled_misses():
    runs = _runs({"adamw": 40.0, "muon": 80.0})
    fit = loss_alignment_r2(runs)
    assert fit["r2_stratified"] == pytest.approx(1.0)
    assert fit["r2_pooled"] < 0.5
    assert fit["per_optimizer"]["muon"]["slope"] == pytest.approx(-10.0)
    # negative control: one common level → pooled explains it all too
    same = loss_alignment_r2(_runs({"adamw": 60.0, "muon": 60.0}))
    assert same["r2_pooled"] == pytest.approx(1.0) and same["r2_stratified"] == pytest.approx(1.0)


@settings(max_examples=40, deadline=None)
@given(offsets=st.lists(st.floats(0, 100), min_size=1, max_size=4), noise=st.floats(0, 20), seed=st.integers(0, 10))
def test_stratified_r2_is_never_below_pooled(offsets, noise, seed):
    fit = loss_alignment_r2(_runs({f"g{i}": o for i, o in enumerate(offsets)}, noise=noise, seed=seed))
    if fit["r2_pooled"] is not None:
        assert fit["r2_stratified"] >= fit["r2_pooled"] - 1e-9
        assert fit["r2_stratified"] <= 1 + 1e-9


def test_spread_and_spearman():
    runs = _runs({"adamw": 30.0, "muon": 90.0}, n=4)
    spread = optimizer_spread(runs)
    assert spread["per_optimizer"]["adamw"]["mean"] == pytest.approx(0.7)
    assert spread["max_over_min"] == pytest.approx(0.7 / 0.1)
    assert spearman([1, 2, 3, 4], [10, 20, 30, 45]) == pytest.approx(1.0)
    assert spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    assert spearman([1, 1, 1], [1, 2, 3]) is None


def test_analysis_and_plots(tmp_path):
    runs = _runs({"adamw": 40.0, "lion": 55.0, "muon": 80.0, "sgd": 60.0}, noise=3.0)
    for r in runs:
        r["trajectory"] = [{"step": s, "train_loss": r["final_train_loss"] * (4 - s), "alignment": r["alignment"] + 5 * (3 - s)} for s in range(4)]
    out = analyse(runs)
    assert {"r2_pooled", "r2_stratified", "spread", "flatness_vs_misalignment_spearman", "misalignment_by_spectral_coef"} <= set(out)
    assert out["flatness_vs_misalignment_spearman"] == pytest.approx(-1.0)
    figures = plot_all(runs, tmp_path)
    assert [p.name for p in figures] == ["loss_vs_alignment.png", "trajectories.png", "misalignment_by_optimizer.png", "flatness_vs_misalignment.png",
                                         "misalignment_at_matched_loss.png"]
    for path, fig in figures.items():  # each PNG decodes to the figure's size at 120 dpi
        width, height = fig.get_size_inches() * 120
        assert imread(path).shape[:2] == (round(height), round(width))
    loss_ax, trajectory_ax, bar_ax, flat_ax, _ = (fig.axes[0] for fig in figures.values())

    # one point per run at (log final loss, alignment)
    drawn = sorted(tuple(c.get_offsets()[0]) for c in loss_ax.collections)
    np.testing.assert_allclose(drawn, sorted((math.log(r["final_train_loss"]), r["alignment"]) for r in runs))
    # each run's trajectory in (log loss, alignment), then its last checkpoint as a dot
    for line, r in zip(trajectory_ax.lines, runs):
        np.testing.assert_allclose(line.get_xydata(), [(math.log(c["train_loss"]), c["alignment"]) for c in r["trajectory"]])
    last = [c.get_offsets()[0] for c in trajectory_ax.collections]
    np.testing.assert_allclose(last, [(math.log(r["trajectory"][-1]["train_loss"]), r["trajectory"][-1]["alignment"]) for r in runs])
    # bars: the mean misalignment per optimiser, one bar group per spectral coefficient
    names = ["adamw", "lion", "muon", "sgd"]
    expected = [np.mean([r["misalignment_rate"] for r in runs if r["optimizer"] == g and r["spectral_coef"] == c]) for c in (0.0, 0.1) for g in names]
    np.testing.assert_allclose([bar.get_height() for bar in bar_ax.patches], expected)
    # one scatter per optimiser at (flatness, misalignment rate)
    for collection, g in zip(flat_ax.collections, names):
        np.testing.assert_allclose(collection.get_offsets(), [(r["flatness"], r["misalignment_rate"]) for r in runs if r["optimizer"] == g])


def test_matched_loss_plot_draws_runs_curves_and_bands(tmp_path):
    """Per spectral coefficient and definition: each optimiser's runs (hollow when below the
    coherence floor), the curve through its cells (geometric-mean loss, pooled rate) and a band."""
    from matplotlib.collections import PathCollection, PolyCollection

    from sail.em.study_plots import plot_matched_loss

    rng = np.random.default_rng(0)
    runs = []
    for g, shift in (("adamw", 0.0), ("muon", 0.08)):
        for i, x in enumerate((-1.0, -0.7, -0.4)):
            for seed in (0, 1):
                loss = math.exp(x + rng.normal(0, 0.02))
                k = rng.binomial(40, 0.1 + shift - 0.1 * x, size=8).tolist()
                block = {"id": [f"q{j}" for j in range(8)], "n": [40] * 8, "k_a": k, "n_a": [40] * 8, "k_b": k, "n_b": [40] * 8, "coherence": [90.0] * 8}
                runs.append({"optimizer": g, "lr": 10.0 ** -(i + 2), "spectral_coef": 0.0, "seed": seed, "final_train_loss": loss, "coherence": 90.0,
                             "misalignment_rate": sum(k) / 320, "misalignment_rate_all": sum(k) / 320, "per_question": block})
    runs[-1] = dict(runs[-1], coherence=35.0)  # muon's last run collapsed
    fig = plot_matched_loss(runs, tmp_path / "matched.png", resamples=200)
    assert imread(tmp_path / "matched.png").ndim == 3
    ax_a, ax_b = fig.axes
    for ax in (ax_a, ax_b):
        points = [c for c in ax.collections if isinstance(c, PathCollection)]
        drawn = sorted(tuple(xy) for c in points for xy in c.get_offsets())
        np.testing.assert_allclose(drawn, sorted((r["final_train_loss"], r["misalignment_rate"]) for r in runs))
        hollow = [c for c in points if c.get_facecolors().size == 0 or c.get_facecolors()[0, 3] == 0]
        assert len(hollow) == 1 and np.allclose(hollow[0].get_offsets(), [(runs[-1]["final_train_loss"], runs[-1]["misalignment_rate"])])
        assert len([c for c in ax.collections if isinstance(c, PolyCollection)]) == 2  # one band per optimiser
        for line, g in zip(ax.lines, ("adamw", "muon")):
            cells = {}
            for r in runs:
                if r["optimizer"] == g and r["coherence"] >= 50:
                    cells.setdefault(r["lr"], []).append(r)
            expected = sorted((math.exp(np.mean([math.log(r["final_train_loss"]) for r in c])),
                               sum(sum(r["per_question"]["k_a"]) for r in c) / (320 * len(c))) for c in cells.values())
            np.testing.assert_allclose(line.get_xydata(), expected)
