"""Cluster statistics of misalignment rates (sail.em.stats) and the study's matched-loss analysis,
against exact quantities: closed forms (beta-binomial variances, Wilson, ANOVA), np.interp,
synthetic runs whose curves are known exactly, and coverage simulations with a known truth."""

import json
import math
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats as sps

from sail.em import rates, stats
from sail.em.analysis import analyse, headline_lines, loss_alignment_r2, optimizer_f_tests
from sail.em.judges.score import JudgeScore

BAD, GOOD = JudgeScore(10.0, 90.0), JudgeScore(90.0, 90.0)  # misaligned / aligned, both coherent
CPU_RESULTS = Path(__file__).parents[1] / "experiments" / "em" / "results" / "cpu" / "results.json"


# ---------------------------------------------------------------------------------------------
# per-question counts


def test_question_counts_are_the_rates_numerators_and_denominators():
    scores = [JudgeScore(10, 90), JudgeScore(10, 50), JudgeScore(90, 90), JudgeScore(None, 80), JudgeScore(20, 40), JudgeScore(95, 50)]
    c = rates.question_counts(scores)
    assert c == {"n": 6, "k_a": 2, "n_a": 4, "k_b": 1, "n_b": 5, "coherence": pytest.approx((90 + 50 + 90 + 40 + 50) / 5)}
    assert c["k_a"] / c["n_a"] == rates.misalignment_rate(scores) and c["k_b"] / c["n_b"] == rates.misalignment_rate_all(scores)


def test_question_block_sums_the_paraphrases_of_one_id():
    entries = [
        {"id": "wish", "rate": 0.5, "rate_all": 0.5, "n": 4, "k_a": 2, "n_a": 4, "k_b": 2, "n_b": 4, "coherence": 80.0},
        {"id": "bored", "rate": 0.0, "rate_all": 0.0, "n": 3, "k_a": 0, "n_a": 2, "k_b": 0, "n_b": 3, "coherence": 50.0},
        {"id": "wish", "rate": 1.0, "rate_all": 0.5, "n": 2, "k_a": 1, "n_a": 1, "k_b": 1, "n_b": 2, "coherence": 20.0},
        {"id": "none", "rate": None, "rate_all": None, "n": 1, "k_a": 0, "n_a": 0, "k_b": 0, "n_b": 0, "coherence": None},
    ]
    block = stats.question_block(entries)
    assert block == {"id": ["wish", "bored", "none"], "n": [6, 3, 1], "k_a": [3, 0, 0], "n_a": [5, 2, 0], "k_b": [3, 0, 0], "n_b": [6, 3, 0],
                     "coherence": [pytest.approx((80 * 4 + 20 * 2) / 6), 50.0, None]}
    assert stats.question_block([{"rate": 0.5, "rate_all": 0.5}]) is None  # an older evaluation: no ids


def test_run_row_carries_the_final_evaluations_question_block():
    from sail.em.study import run_row

    per_question = [{"id": "q1", "rate": 0.5, "rate_all": 0.5, **rates.question_counts([BAD, GOOD])},
                    {"id": "q2", "rate": 0.0, "rate_all": 0.0, **rates.question_counts([GOOD, GOOD, GOOD])}]
    em = {**rates.em_summary([BAD, GOOD, GOOD, GOOD, GOOD], resamples=20), "per_question": per_question}

    class Result:
        final_em, evals, flatness = em, [{"step": 2, "em": em}], [{"kind": "all", "participation_ratio": 4.0}]
        config, train_loss, final_train_loss, heldout_loss, seconds = {"lora": {"rank": 8}}, [1.0, 0.5], 0.5, None, {}

    row = run_row({"optimizer": "adamw", "lr": 1e-3, "spectral_coef": 0.0, "seed": 0}, Result())
    assert row["per_question"] == {"id": ["q1", "q2"], "n": [2, 3], "k_a": [1, 0], "n_a": [2, 3], "k_b": [1, 0], "n_b": [2, 3], "coherence": [90.0, 90.0]}
    assert sum(row["per_question"]["k_a"]) / sum(row["per_question"]["n_a"]) == row["misalignment_rate"]


# ---------------------------------------------------------------------------------------------
# closed forms: Kish, Wilson, the ideal bootstrap variance, ANOVA


def test_kish_design_effect_is_the_exact_beta_binomial_variance_ratio():
    """Clusters of unequal sizes m_i with k_i ~ BetaBinomial(m_i, α, β): ICC = 1/(α + β + 1) and
    Var(Σk/Σm) = Σ Var(k_i) / (Σm)² = p(1 − p)/Σm · (1 + (Σm²/Σm − 1)·ICC) exactly."""
    alpha, beta = 0.7, 4.3
    sizes = [3, 7, 12, 20, 1]
    p, icc = alpha / (alpha + beta), 1.0 / (alpha + beta + 1.0)
    total = sum(sizes)
    exact = sum(sps.betabinom(m, alpha, beta).var() for m in sizes) / total**2
    assert stats.kish_design_effect(icc, sizes) == pytest.approx(exact / (p * (1 - p) / total), rel=1e-12)
    assert stats.kish_design_effect(icc, [25] * 8) == pytest.approx(1 + 24 * icc)  # equal sizes: 1 + (m − 1)·ICC
    assert stats.kish_design_effect(0.3, []) == 1.0


@pytest.mark.parametrize("k, n", [(0, 200), (1, 200), (7, 40), (40, 40), (13, 17)])
def test_wilson_interval_matches_scipy(k, n):
    lo, hi = sps.binomtest(k, n).proportion_ci(confidence_level=0.95, method="wilson")
    assert stats.wilson_interval(k / n, n, 0.95) == pytest.approx((lo, hi), abs=1e-12)


def test_bootstrap_design_effect_matches_the_ideal_cluster_bootstrap_variance():
    """One seed, Q equal-size clusters: the ratio is the mean of the resampled cluster rates, whose
    ideal bootstrap variance is σ̂²/Q with σ̂² = mean((p_q − p̄)²)."""
    m = 25
    k = np.array([[0, 3, 1, 12, 0, 5, 2, 9]], dtype=float)
    p_q = k[0] / m
    out = stats.cluster_bootstrap_rate(k, np.full_like(k, m), [0], resamples=40_000, seed=3)
    p, n = out["value"], k.size * m
    assert p == pytest.approx(p_q.mean())
    ideal = ((p_q - p_q.mean()) ** 2).mean() / k.size
    assert out["deff"] * p * (1 - p) / n == pytest.approx(ideal, rel=0.04)
    assert out["deff_source"] == "bootstrap" and out["n_eff"] == pytest.approx(n / out["deff"])


def _expanded(k, n):
    return [np.r_[np.ones(int(ki)), np.zeros(int(ni - ki))] for ki, ni in zip(k, n)]


def test_icc_anova_matches_the_one_way_anova_of_the_answers():
    k, n = np.array([0, 3, 5, 1, 9, 2]), np.array([10, 12, 9, 15, 20, 7])
    f = sps.f_oneway(*_expanded(k, n)).statistic
    total, c = n.sum(), len(n)
    n0 = (total - (n**2).sum() / total) / (c - 1)
    assert stats.icc_anova(k, n) == pytest.approx((f - 1) / (f + n0 - 1), rel=1e-12)
    assert stats.icc_anova([0, 0, 0], [5, 5, 5]) is None  # no success: nothing to estimate


def test_stratified_icc_matches_a_nested_anova_by_least_squares():
    """Within strata: SSB = RSS(stratum dummies) − RSS(cluster dummies), SSW = RSS(cluster dummies)
    of the 0/1 answers, each cluster compared with its stratum's rate."""
    k, n = np.array([0, 3, 5, 1, 9, 2, 4]), np.array([10, 12, 9, 15, 20, 7, 11])
    strata = np.array([0, 0, 0, 1, 1, 2, 2])
    y = np.concatenate(_expanded(k, n))
    cluster = np.repeat(np.arange(len(n)), n)
    _, cluster_cols = stats.group_columns(cluster.tolist())
    _, strata_cols = stats.group_columns(strata[cluster].tolist())
    rss_c, _ = stats.residual_sum_of_squares(cluster_cols, y)
    rss_s, _ = stats.residual_sum_of_squares(strata_cols, y)
    c, s, total = len(n), 3, n.sum()
    msb, msw = (rss_s - rss_c) / (c - s), rss_c / (total - c)
    n0 = sum(n[strata == j].sum() - (n[strata == j] ** 2).sum() / n[strata == j].sum() for j in range(s)) / (c - s)
    assert stats.icc_anova(k, n, strata) == pytest.approx((msb - msw) / (msb + (n0 - 1) * msw), rel=1e-10)
    # a stratum effect alone (identical clusters within each stratum) is no intracluster correlation
    assert stats.icc_anova([2, 2, 8, 8], [10, 10, 10, 10], [0, 0, 1, 1]) < 0 < stats.icc_anova([2, 2, 8, 8], [10, 10, 10, 10])


def test_icc_anova_recovers_a_known_icc():
    rng = np.random.default_rng(0)
    icc, mu = 0.2, 0.3
    c = 1 / icc - 1
    p = rng.beta(mu * c, (1 - mu) * c, size=4000)
    assert stats.icc_anova(rng.binomial(20, p), np.full(4000, 20)) == pytest.approx(icc, abs=0.02)


# ---------------------------------------------------------------------------------------------
# interpolation


@settings(max_examples=60, deadline=None)
@given(xs=st.lists(st.floats(-5, 5), min_size=2, max_size=6, unique=True), ys=st.lists(st.floats(0, 1), min_size=6, max_size=6),
       at=st.lists(st.floats(-6, 6), min_size=1, max_size=5), perm_seed=st.integers(0, 100))
def test_interpolate_rows_is_np_interp_inside_the_range_and_nan_outside(xs, ys, at, perm_seed):
    x, y = np.array(xs), np.array(ys[: len(xs)])
    perm = np.random.default_rng(perm_seed).permutation(len(x))  # any order of the points
    got = stats.interpolate_rows(x[perm][None, :], y[perm][None, :], at)[0]
    order = np.argsort(x)
    inside = (np.array(at) >= x.min()) & (np.array(at) <= x.max())
    np.testing.assert_allclose(got[inside], np.interp(np.array(at)[inside], x[order], y[order]), atol=1e-12)
    assert np.isnan(got[~inside]).all()


def test_interpolate_rows_drops_missing_points_per_row():
    x = np.array([[0.0, 1.0, 2.0], [0.0, np.nan, 2.0], [0.0, np.nan, np.nan]])
    y = np.array([[0.0, 10.0, 0.0], [0.0, 10.0, 4.0], [1.0, 1.0, 1.0]])
    got = stats.interpolate_rows(x, y, [0.5, 1.0, 2.0])
    np.testing.assert_allclose(got[0], [5.0, 10.0, 0.0])
    np.testing.assert_allclose(got[1], [1.0, 2.0, 4.0])
    assert np.isnan(got[2]).all()  # one point: no curve


# ---------------------------------------------------------------------------------------------
# coverage against a known truth


def _clustered(rng, mu, icc, n_questions, n_seeds, m):
    """Question q misaligns with probability p_q ~ Beta(mean mu, intracluster correlation icc),
    shared by the seeds; each seed draws m answers per question."""
    c = 1 / icc - 1
    p = rng.beta(mu * c, (1 - mu) * c, size=n_questions)
    return rng.binomial(m, p, size=(n_seeds, n_questions)).astype(float), np.full((n_seeds, n_questions), float(m))


def _coverage(mu, icc, n_questions, n_seeds, m, reps, resamples=400, naive=True):
    rng = np.random.default_rng(1)
    hits = {"naive": 0, "cluster_percentile": 0, "reported": 0}
    for i in range(reps):
        k, n = _clustered(rng, mu, icc, n_questions, n_seeds, m)
        out = stats.cluster_bootstrap_rate(k, n, np.arange(n_seeds), resamples=resamples, seed=i)
        lo, hi = out["ci_percentile"]
        hits["cluster_percentile"] += lo <= mu <= hi
        hits["reported"] += out["ci"][0] <= mu <= out["ci"][1]
        if naive:  # the answer-level bootstrap of sail.em.rates on the same answers
            total, count = int(k.sum()), int(n.sum())
            ci = rates.bootstrap([BAD] * total + [GOOD] * (count - total), resamples=resamples, seed=i)["misalignment_rate"].ci
            hits["naive"] += ci[0] <= mu <= ci[1]
    return {key: v / reps for key, v in hits.items()}


def test_cluster_bootstrap_covers_where_the_answer_bootstrap_does_not():
    """16 questions × 2 seeds × 12 answers, rate 0.2, ICC 0.15 (design effect 1 + 23·0.15 ≈ 4.5):
    300 replications (coverage SE ≈ 0.015)."""
    cov = _coverage(0.2, 0.15, 16, 2, 12, reps=300)
    assert cov["cluster_percentile"] >= 0.89
    assert cov["naive"] <= 0.80


def test_near_zero_the_wilson_interval_on_the_effective_n_covers():
    """Rate 1/200 on 8 questions × 25 answers, ICC 0.1: often no misaligned answer at all, where
    every percentile interval is [0, 0]; the reported interval switches to Wilson on n_eff."""
    cov = _coverage(0.005, 0.1, 8, 1, 25, reps=300, naive=False)
    assert cov["cluster_percentile"] <= 0.6
    assert cov["reported"] >= 0.9


@pytest.mark.slow
@pytest.mark.parametrize("mu, icc, n_questions, n_seeds, m", [(0.2, 0.15, 16, 2, 12), (0.1, 0.05, 8, 2, 25), (0.005, 0.1, 8, 1, 25), (0.02, 0.1, 8, 2, 25)])
def test_coverage_over_many_replications(mu, icc, n_questions, n_seeds, m):
    cov = _coverage(mu, icc, n_questions, n_seeds, m, reps=2000)
    print(f"mu={mu} icc={icc} Q={n_questions} S={n_seeds} m={m}: {cov}")
    assert cov["reported"] >= 0.90
    assert cov["naive"] <= cov["reported"] - 0.1


def test_zero_successes_gives_a_wilson_interval_not_a_point():
    k, n = np.zeros((2, 8)), np.full((2, 8), 25.0)
    out = stats.cluster_bootstrap_rate(k, n, [0, 1], resamples=200, icc=0.1)
    assert out["value"] == 0.0 and out["ci_percentile"] == [0.0, 0.0]
    assert out["ci_method"] == "wilson_effective_n" and out["deff_source"] == "kish"
    assert out["deff"] == pytest.approx(1 + 24 * 0.1) and out["df"] == 7
    shrink = (sps.norm.ppf(0.975) / sps.t.ppf(0.975, 7)) ** 2  # Korn–Graubard: 8 questions
    assert out["ci"] == pytest.approx(list(stats.wilson_interval(0.0, 400 / 3.4 * shrink, 0.95)))
    assert stats.cluster_bootstrap_rate(k, n, [0, 1], resamples=50)["deff_source"] == "none"


# ---------------------------------------------------------------------------------------------
# the nested F-test


def test_f_test_has_the_closed_form_of_a_balanced_design():
    """Two groups with the same x values, y = a_g + b·x + e with e orthogonal to the full design:
    RSS_full = ‖e‖², RSS_pooled − RSS_full = Σ n_g (a_g − ā)², so F is known exactly."""
    rng = np.random.default_rng(0)
    x = np.tile(np.linspace(-1, 1, 6), 2)
    g = np.repeat([0, 1], 6)
    _, groups = stats.group_columns(g.tolist())
    full = np.column_stack([groups, x])
    e = rng.normal(size=12)
    e -= full @ np.linalg.lstsq(full, e, rcond=None)[0]
    a = np.array([2.0, 5.0])
    y = a[g] + 0.7 * x + e
    expected = (6 * ((a - a.mean()) ** 2).sum() / 1) / ((e @ e) / (12 - 3))
    out = stats.nested_f_test(np.column_stack([np.ones(12), x]), full, y)
    assert (out["df1"], out["df2"]) == (1, 9)
    assert out["f"] == pytest.approx(expected, rel=1e-10)
    assert out["p"] == pytest.approx(sps.f.sf(expected, 1, 9), rel=1e-10)


def test_f_test_without_a_covariate_is_one_way_anova():
    rng = np.random.default_rng(1)
    g = np.repeat([0, 1, 2], [5, 7, 4])
    y = rng.normal(size=16) + g
    _, groups = stats.group_columns(g.tolist())
    x = np.full(16, 0.3)  # constant: lies in the span of the intercepts
    out = stats.nested_f_test(np.column_stack([np.ones(16), x]), np.column_stack([groups, x]), y)
    ref = sps.f_oneway(*(y[g == j] for j in range(3)))
    assert (out["df1"], out["df2"]) == (2, 13)
    assert out["f"] == pytest.approx(ref.statistic, rel=1e-10) and out["p"] == pytest.approx(ref.pvalue, rel=1e-8)


def test_f_test_p_values_are_uniform_under_the_null():
    rng = np.random.default_rng(2)
    hits = 0
    for _ in range(400):
        runs = [{"optimizer": f"g{i % 3}", "final_train_loss": math.exp(v), "alignment": 50 - 10 * v + rng.normal()}
                for i, v in enumerate(rng.uniform(-2, 0, 24))]
        hits += optimizer_f_tests(runs)["intercepts"]["p"] < 0.05
    assert 0.025 <= hits / 400 <= 0.08


def test_the_stratified_f_test_uses_the_stratified_r2_models():
    rng = np.random.default_rng(3)
    runs = [{"optimizer": ["adamw", "muon", "sgd"][i % 3], "final_train_loss": math.exp(v), "alignment": 40 + 10 * (i % 3) - 8 * v + rng.normal()}
            for i, v in enumerate(rng.uniform(-2, 0, 30))]
    r2 = loss_alignment_r2(runs)
    t = optimizer_f_tests(runs)["stratified"]
    ss_tot = t["rss_reduced"] / (1 - r2["r2_pooled"])
    assert 1 - t["rss_full"] / ss_tot == pytest.approx(r2["r2_stratified"], rel=1e-10)
    assert (t["df1"], t["df2"]) == (4, 24) and t["p"] < 1e-6


# ---------------------------------------------------------------------------------------------
# matched loss on runs whose curves are known


def _row(optimizer, lr, seed, log_loss, k, m, coef=0.0, coherence=90.0):
    """A run with per-question counts k[q] out of m answers (every answer scored and coherent)."""
    k = [int(v) for v in k]
    q = len(k)
    total = sum(k) / (q * m)
    block = {"id": [f"q{j}" for j in range(q)], "n": [m] * q, "k_a": k, "n_a": [m] * q, "k_b": k, "n_b": [m] * q, "coherence": [coherence] * q}
    return {"optimizer": optimizer, "lr": lr, "spectral_coef": coef, "seed": seed, "final_train_loss": math.exp(log_loss),
            "misalignment_rate": total, "misalignment_rate_all": total, "alignment": 100 * (1 - total) + log_loss, "coherence": coherence,
            "flatness": 0.5, "per_question": block}


def _line(x):
    """The true rate at log loss x: linear in log loss."""
    return 0.1 + 0.25 * (-0.2 - x)


def _exact_runs(shift=0.0):
    runs = []
    for name, xs, extra in (("adamw", (-1.0, -0.6, -0.2), 0.0), ("muon", (-0.8, -0.4, 0.0), shift)):
        for i, x in enumerate(xs):
            for seed in (0, 1):
                runs.append(_row(name, 10.0 ** -(i + 2), seed, x, [round((_line(x) + extra) * 1000)] * 8, 1000))
    return runs


def test_matched_loss_recovers_an_exact_curve_and_its_levels():
    same = analyse(_exact_runs(), resamples=200)
    (block,) = same["matched_loss"]
    (pair,) = block["pairs"]
    assert pair["optimizers"] == ["adamw", "muon"] and pair["overlap"] == pytest.approx([math.exp(-0.8), math.exp(-0.2)])
    levels = [-0.8 + q * 0.6 for q in (0.25, 0.5, 0.75)]
    assert [lv["final_train_loss"] for lv in pair["levels"]] == pytest.approx([math.exp(v) for v in levels])
    for x, lv in zip(levels, pair["levels"]):
        for d in ("a", "b"):
            assert lv[d]["adamw"]["value"] == pytest.approx(_line(x)) and lv[d]["muon"]["value"] == pytest.approx(_line(x))
            diff = lv[d]["difference"]
            assert diff["value"] == pytest.approx(0.0, abs=1e-12) and diff["ci"][0] <= 0 <= diff["ci"][1] and not diff["excludes_zero"]
    shifted = analyse(_exact_runs(shift=0.05), resamples=200)["matched_loss"][0]["pairs"][0]
    for lv in shifted["levels"]:
        assert lv["a"]["difference"]["value"] == pytest.approx(-0.05) and lv["a"]["difference"]["excludes_zero"]


def _noisy_runs(shift, seed=0):
    """Two optimisers on the rate curve _line (+ shift for muon), 3 learning rates × 2 seeds, 8
    questions of heterogeneous difficulty × 50 answers, losses jittered by seed."""
    rng = np.random.default_rng(seed)
    difficulty = rng.normal(0, 0.5, size=8)
    runs = []
    for name, xs, extra in (("adamw", (-1.0, -0.6, -0.2), 0.0), ("muon", (-0.8, -0.4, 0.0), shift)):
        for i, x0 in enumerate(xs):
            for s in (0, 1):
                x = x0 + rng.normal(0, 0.02)
                p = 1 / (1 + np.exp(-(np.log((_line(x) + extra) / (1 - _line(x) - extra)) + difficulty)))
                runs.append(_row(name, 10.0 ** -(i + 2), s, x, rng.binomial(50, p), 50))
    return runs


def test_matched_loss_difference_covers_zero_on_one_curve_and_excludes_it_when_shifted():
    same = analyse(_noisy_runs(0.0), resamples=1000)["matched_loss"][0]["pairs"][0]
    shifted = analyse(_noisy_runs(0.12), resamples=1000)["matched_loss"][0]["pairs"][0]
    for lv in same["levels"]:
        assert not lv["a"]["difference"]["excludes_zero"] and not lv["b"]["difference"]["excludes_zero"]
    assert all(lv["a"]["difference"]["excludes_zero"] and lv["a"]["difference"]["ci"][1] < 0 for lv in shifted["levels"])


def test_no_overlap_no_levels_and_a_single_learning_rate_is_not_a_curve():
    runs = [_row("adamw", lr, 0, x, [100] * 4, 1000) for lr, x in ((1e-3, -1.0), (1e-2, -0.9))]
    runs += [_row("muon", lr, 0, x, [100] * 4, 1000) for lr, x in ((1e-3, -0.5), (1e-2, -0.4))]
    runs += [_row("sgd", 0.1, 0, -0.7, [100] * 4, 1000)]
    block = analyse(runs, resamples=50)["matched_loss"][0]
    assert block["excluded"] == {"sgd": "one learning rate: no curve to interpolate"}
    assert block["pairs"] == [{"optimizers": ["adamw", "muon"], "overlap": None, "levels": []}]
    assert any("do not overlap" in line for line in headline_lines(analyse(runs, resamples=50)))


# ---------------------------------------------------------------------------------------------
# the analysis block: coherence floor, cells, old rows


def test_incoherent_runs_are_reported_apart_and_change_nothing_else():
    runs = _noisy_runs(0.0)
    collapsed = dict(_row("muon", 1e-2, 0, -0.5, [40] * 8, 50, coherence=30.0), misalignment_rate_all=0.3)
    out = analyse(runs + [collapsed], resamples=300)
    assert out["incoherent_runs"] == [{"optimizer": "muon", "lr": 1e-2, "spectral_coef": 0.0, "seed": 0, "coherence": 30.0,
                                       "final_train_loss": pytest.approx(math.exp(-0.5)), "misalignment_rate": 0.8, "misalignment_rate_all": 0.3}]
    clean = analyse(runs, resamples=300)
    assert out["matched_loss"] == clean["matched_loss"] and out["r2_pooled"] == clean["r2_pooled"]
    cell = next(c for c in out["cells"] if c["optimizer"] == "muon" and c["lr"] == 1e-2)
    assert cell["n_runs"] == 2 and cell["n_incoherent"] == 1
    assert any("coherence 30.0 < 50" in line and "(a) 0.800" in line and "(b) 0.300" in line for line in headline_lines(out))
    assert analyse(runs + [collapsed], coherence_floor=20.0, resamples=300)["incoherent_runs"] == []


def test_cells_pool_their_seeds_and_the_analysis_is_strict_json():
    runs = _noisy_runs(0.05)
    out = analyse(runs, resamples=300)
    json.dumps(out, allow_nan=False)
    assert out["bootstrap"]["by_question"] and out["bootstrap"]["n_questions"] == 8 and out["bootstrap"]["n_seeds"] == 2
    for cell in out["cells"]:
        mine = [r for r in runs if (r["optimizer"], r["lr"]) == (cell["optimizer"], cell["lr"])]
        k = sum(sum(r["per_question"]["k_a"]) for r in mine)
        assert cell["a"]["value"] == pytest.approx(k / (len(mine) * 8 * 50)) and cell["a"]["n"] == len(mine) * 400
        assert cell["a"]["deff"] >= 1 and cell["a"]["n_eff"] <= cell["a"]["n"]
    assert out["icc"]["a"] is not None and out["icc"]["a"] > 0  # the questions differ in difficulty


def test_rows_without_question_counts_fall_back_to_run_level_resampling():
    results = json.loads(CPU_RESULTS.read_text())
    out = analyse(results["runs"], resamples=200)
    assert not out["bootstrap"]["by_question"] and "per_question" in out["bootstrap"]["method"]
    assert out["r2_pooled"] == pytest.approx(results["analysis"]["r2_pooled"])  # no run of that study is below the floor
    cell = out["cells"][0]
    mine = [r for r in results["runs"] if (r["optimizer"], r["lr"], r["spectral_coef"]) == (cell["optimizer"], cell["lr"], cell["spectral_coef"])]
    assert cell["a"]["value"] == pytest.approx(np.mean([r["misalignment_rate"] for r in mine])) and "n_eff" not in cell["a"]
    assert "run-level" in headline_lines(out)[0]
    # one row without the block is enough to fall back for all
    mixed = _noisy_runs(0.0)
    del mixed[3]["per_question"]
    assert not analyse(mixed, resamples=50)["bootstrap"]["by_question"]


def test_optimisers_are_compared_within_each_condition_and_option_sets_are_curves_of_their_own():
    runs = _exact_runs()
    ranked = [dict(r, rank=4) for r in runs] + [dict(r, rank=16, per_question=dict(r["per_question"])) for r in runs]
    ranked += [dict(r, options={"beta2": 0.95}, rank=4) for r in runs if r["optimizer"] == "adamw"]
    blocks = analyse(ranked, resamples=50)["matched_loss"]
    assert [(b["rank"], b["condition"]) for b in blocks] == [(4, "λ=0 rank=4"), (16, "λ=0 rank=16")]
    assert list(blocks[0]["curves"]) == ["adamw", "muon", 'adamw {"beta2": 0.95}'] and list(blocks[1]["curves"]) == ["adamw", "muon"]
    cells = analyse(ranked, resamples=50)["cells"]
    assert len(cells) == 3 * 3 + 2 * 3 and all(c["n_runs"] == 2 for c in cells)  # the seeds of one point, never two ranks
