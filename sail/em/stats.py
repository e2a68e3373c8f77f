"""Rates of clustered answers: a two-way cluster bootstrap, design effects, Wilson intervals, and
the nested F-test of least-squares models.

The answers of an EM evaluation are not independent: a run answers the same few held-out questions
many times (answers to one question share its propensity to draw a misaligned answer), and the runs
of one sweep cell differ by training seed. A statistic that is a ratio of sums,

    R = Σ_r Σ_q u[r, q] / Σ_r Σ_q v[r, q]          (r: runs, q: questions),

e.g. rate (a) with u = misaligned-and-coherent answers and v = coherent answers of run r on
question q, is resampled here by *clusters*, never by answers:

* **two-way cluster bootstrap** (:func:`two_way_weights`): each resample draws the seeds with
  replacement (multinomial counts w_s over the distinct seed labels) and, independently, the
  question ids with replacement (counts w_q over the distinct question ids), and reweights run r's
  counts on question q by w_s[seed of r] · w_q[q]. A question draw is shared by every run of the
  resample, because the runs answer the same questions (the questions are crossed with the seeds,
  not nested in them): a question that draws misaligned answers does so in every run, so resampling
  questions separately within each seed would average that shared component away. Where runs have
  question ids of their own, the shared draw resamples those ids from the pooled set. The same
  weights are used for every statistic of one analysis, so the difference of two statistics is
  resampled *paired*.
* percentile intervals (:func:`percentile_interval`) over the resamples where the statistic is
  defined (positive denominator; the share where it is not is reported).
* **design effect** (:func:`bootstrap_design_effect`): deff = Var_boot(R) / (p(1 − p)/n), the
  cluster-bootstrap variance over the binomial variance of a rate p on n independent answers, and
  **Kish's** formula (:func:`kish_design_effect`) deff = 1 + (m̃ − 1)·ICC with m̃ = Σ m_i² / Σ m_i for
  clusters of sizes m_i (m̃ = m when all sizes are equal); for answers with a common intracluster
  correlation ICC (e.g. beta-binomial clusters) it is the exact ratio Var(Σk/Σm) / (p(1 − p)/Σm).
  The **effective n** is n / max(1, deff).
* **Wilson interval** (:func:`wilson_interval`) on the effective n, for a rate near 0 or 1 where
  the percentile bootstrap degenerates (0 successes: every resample is 0), with Korn and
  Graubard's correction for the few clusters the variance rests on (n_eff·(z/t_df)², df = the
  number of questions − 1; :func:`ratio_summary`).
* **intracluster correlation** (:func:`icc_anova`): the one-way ANOVA estimator for binary
  answers, optionally within strata (each cluster compared with its stratum's rate).
* :func:`interpolate_rows`: piecewise-linear interpolation of many curves at once (one per
  resample), never extrapolating.
* :func:`nested_f_test`: the F-test of a least-squares model against a larger one that contains it.

A run-level table (:func:`question_block`) stores, for each question id, the counts that the rates
are made of, so that results files can be resampled by question later.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np
from scipy import stats as _scipy_stats

DEFINITIONS = {"a": ("k_a", "n_a"), "b": ("k_b", "n_b")}
"""Misalignment definition → its (numerator, denominator) keys of a question block: (a) misaligned
among the coherent answers, (b) coherent-and-misaligned among the scored answers (sail.em.rates)."""
RUN_RATE_KEYS = {"a": "misalignment_rate", "b": "misalignment_rate_all"}
"""Misalignment definition → the run row's rate, used where a row has no question block."""
QUESTION_FIELDS = ("id", "n", "k_a", "n_a", "k_b", "n_b", "coherence")
SMALL_COUNT = 5.0
"""Below this many effective successes (or failures), the Wilson interval on the effective n is
the reported interval instead of the percentile bootstrap (:func:`ratio_summary`)."""


# ---------------------------------------------------------------------------------------------
# the per-question table of one run


def question_block(per_question: Sequence[dict]) -> dict | None:
    """:func:`sail.em.evaluation.evaluate_em`'s ``per_question`` entries as one block of lists
    ``{"id": [...], "n": [...], "k_a": [...], "n_a": [...], "k_b": [...], "n_b": [...],
    "coherence": [...]}``, one position per question id in order of first appearance. Entries with
    the same id (the paraphrases of one question) are summed, their mean coherence weighted by
    their scored answers ``n_b``. ``None`` when the entries carry no ids (an older evaluation)."""
    if not per_question or any("id" not in e for e in per_question):
        return None
    sums: dict[str, dict] = {}
    for e in per_question:
        s = sums.setdefault(str(e["id"]), {"n": 0, "k_a": 0, "n_a": 0, "k_b": 0, "n_b": 0, "coherence_sum": 0.0})
        for key in ("n", "k_a", "n_a", "k_b", "n_b"):
            s[key] += int(e[key])
        if e["coherence"] is not None:
            s["coherence_sum"] += float(e["coherence"]) * int(e["n_b"])
    block: dict = {key: [] for key in QUESTION_FIELDS}
    for qid, s in sums.items():
        block["id"].append(qid)
        for key in ("n", "k_a", "n_a", "k_b", "n_b"):
            block[key].append(s[key])
        block["coherence"].append(s["coherence_sum"] / s["n_b"] if s["n_b"] else None)
    return block


@dataclass(frozen=True)
class ClusterTable:
    """The counts of a set of runs by (run, question), ready to resample.

    ``num[d]`` and ``den[d]`` are ``[runs, questions]`` arrays of definition d's numerator and
    denominator (0 where a run did not answer a question); ``seed_of_run[r]`` is the index of run
    r's seed in ``seeds``. ``by_question`` is False for the run-level fallback: rows without a
    question block, where each run is one cluster with numerator = its rate and denominator 1 (0
    when the rate is undefined), so the cells' rates are means of run rates and only the seeds are
    resampled."""

    seeds: tuple
    questions: tuple
    seed_of_run: np.ndarray
    num: dict
    den: dict
    by_question: bool


def cluster_table(rows: Sequence[dict]) -> ClusterTable:
    """The :class:`ClusterTable` of run rows (each with ``seed`` and ``per_question``); if any row
    lacks ``per_question``, every row falls back to its run-level rates (one consistent estimator)."""
    seed_index = {seed: i for i, seed in enumerate(dict.fromkeys(r["seed"] for r in rows))}
    seeds = tuple(seed_index)
    seed_of_run = np.array([seed_index[r["seed"]] for r in rows], dtype=np.int64)
    by_question = bool(rows) and all(r.get("per_question") for r in rows)
    num, den = {}, {}
    if by_question:
        questions = tuple(dict.fromkeys(q for r in rows for q in r["per_question"]["id"]))
        col = {q: j for j, q in enumerate(questions)}
        for d, (k_key, n_key) in DEFINITIONS.items():
            num[d] = np.zeros((len(rows), len(questions)))
            den[d] = np.zeros((len(rows), len(questions)))
            for i, r in enumerate(rows):
                block = r["per_question"]
                cols = [col[q] for q in block["id"]]
                num[d][i, cols] = block[k_key]
                den[d][i, cols] = block[n_key]
    else:
        questions = ("run",)
        for d, key in RUN_RATE_KEYS.items():
            rates = [r.get(key) for r in rows]
            num[d] = np.array([0.0 if v is None else float(v) for v in rates]).reshape(-1, 1)
            den[d] = np.array([0.0 if v is None else 1.0 for v in rates]).reshape(-1, 1)
    return ClusterTable(seeds, questions, seed_of_run, num, den, by_question)


# ---------------------------------------------------------------------------------------------
# resampling


def two_way_weights(n_seeds: int, n_questions: int, resamples: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Seed weights ``[resamples + 1, n_seeds]`` and question weights ``[resamples + 1,
    n_questions]``: row 0 is all ones (the point estimate), the others are multinomial counts of a
    draw with replacement (each row sums to the number of seeds resp. questions)."""
    ws = np.vstack([np.ones((1, n_seeds)), rng.multinomial(n_seeds, np.full(n_seeds, 1.0 / n_seeds), size=resamples)])
    wq = np.vstack([np.ones((1, n_questions)), rng.multinomial(n_questions, np.full(n_questions, 1.0 / n_questions), size=resamples)])
    return ws, wq


def resampled_run_totals(table: ClusterTable, ws: np.ndarray, wq: np.ndarray) -> tuple[np.ndarray, dict, dict]:
    """Per resample and run: the run's seed weight ``[B, R]`` and, per definition, the reweighted
    numerator and denominator totals Σ_q w_s·w_q·u[r, q] (``[B, R]``)."""
    seed_weight = ws[:, table.seed_of_run]
    num = {d: seed_weight * (wq @ table.num[d].T) for d in table.num}
    den = {d: seed_weight * (wq @ table.den[d].T) for d in table.den}
    return seed_weight, num, den


def safe_ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """num / den elementwise, NaN where den is 0."""
    num, den = np.asarray(num, dtype=float), np.asarray(den, dtype=float)
    out = np.full(np.broadcast(num, den).shape, np.nan)
    np.divide(num, den, out=out, where=den > 0)
    return out


def percentile_interval(values: np.ndarray, confidence: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The (α/2, 1 − α/2) quantiles of ``values`` along axis 0 over its non-NaN entries, and the
    share of NaN entries, each of shape ``values.shape[1:]``; NaN bounds where nothing is defined."""
    values = np.asarray(values, dtype=float)
    flat = values.reshape(values.shape[0], -1)
    alpha = 1.0 - confidence
    defined = ~np.isnan(flat)
    lo, hi = np.full(flat.shape[1], np.nan), np.full(flat.shape[1], np.nan)
    some = defined.any(axis=0)
    if some.any():
        q = np.nanquantile(flat[:, some], [alpha / 2, 1 - alpha / 2], axis=0)
        lo[some], hi[some] = q[0], q[1]
    undefined = 1.0 - defined.mean(axis=0) if flat.shape[0] else np.ones(flat.shape[1])
    shape = values.shape[1:]
    return lo.reshape(shape), hi.reshape(shape), undefined.reshape(shape)


def interpolate_rows(x: np.ndarray, y: np.ndarray, at: Sequence[float]) -> np.ndarray:
    """Linear interpolation of each row's points (x[b, i], y[b, i]) at every level of ``at``:
    ``[rows, len(at)]``. Points with a NaN coordinate are left out; a level outside a row's range
    of x (or a row with fewer than 2 points) gives NaN: nothing is extrapolated. Within a row the
    points are sorted by x (equal to ``np.interp`` on distinct x)."""
    x, y = np.atleast_2d(np.asarray(x, dtype=float)), np.atleast_2d(np.asarray(y, dtype=float))
    at = np.asarray(at, dtype=float)
    rows, points = x.shape
    out = np.full((rows, at.size), np.nan)
    if points < 2 or at.size == 0:
        return out
    missing = np.isnan(x) | np.isnan(y)
    order = np.argsort(np.where(missing, np.inf, x), axis=1, kind="stable")
    xs = np.take_along_axis(np.where(missing, np.inf, x), order, axis=1)
    ys = np.take_along_axis(y, order, axis=1)
    n_valid = (~missing).sum(axis=1)
    last = np.maximum(n_valid - 1, 0)
    x_min, x_max = xs[:, 0], np.take_along_axis(xs, last[:, None], axis=1)[:, 0]
    j = (xs[:, :, None] <= at[None, None, :]).sum(axis=1) - 1  # last point at or below each level
    j = np.clip(j, 0, np.maximum(n_valid - 2, 0)[:, None])
    x0, x1 = np.take_along_axis(xs, j, axis=1), np.take_along_axis(xs, np.minimum(j + 1, points - 1), axis=1)
    y0, y1 = np.take_along_axis(ys, j, axis=1), np.take_along_axis(ys, np.minimum(j + 1, points - 1), axis=1)
    valid = (n_valid >= 2)[:, None] & (at[None, :] >= x_min[:, None]) & (at[None, :] <= x_max[:, None])
    with np.errstate(invalid="ignore", divide="ignore"):
        t = np.where(x1 > x0, (at[None, :] - x0) / (x1 - x0), 0.5)  # x1 = x0 only for tied points at the level
        value = y0 + t * (y1 - y0)
    out[valid] = value[valid]
    return out


# ---------------------------------------------------------------------------------------------
# design effect, effective n, Wilson, ICC


def kish_design_effect(icc: float, sizes: Sequence[float]) -> float:
    """Kish's design effect 1 + (m̃ − 1)·ICC with m̃ = Σ m_i² / Σ m_i over the clusters' sizes."""
    m = np.asarray(sizes, dtype=float)
    m = m[m > 0]
    if m.size == 0:
        return 1.0
    return float(1.0 + ((m**2).sum() / m.sum() - 1.0) * icc)


def bootstrap_design_effect(variance: float, p: float, n: float) -> float | None:
    """Var_boot / (p(1 − p)/n); None when p is 0 or 1 (no binomial variance) or n is 0."""
    if n <= 0 or not 0.0 < p < 1.0 or not math.isfinite(variance):
        return None
    return float(variance / (p * (1.0 - p) / n))


def wilson_interval(p: float, n: float, confidence: float) -> tuple[float, float]:
    """The Wilson score interval of a proportion p observed on n answers; n may be an effective,
    non-integer size. For integer k = p·n it equals ``scipy.stats.binomtest(k, n).proportion_ci("wilson")``."""
    z = float(_scipy_stats.norm.ppf(0.5 + confidence / 2.0))
    denom = 1.0 + z * z / n
    centre = (p + z * z / (2.0 * n)) / denom
    half = z * math.sqrt(p * (1.0 - p) / n + z * z / (4.0 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def icc_anova(k: Sequence[float], n: Sequence[float], strata: Sequence | None = None) -> float | None:
    """The one-way ANOVA estimator of the intracluster correlation of binary answers: cluster i
    has k_i successes among n_i answers (clusters with n_i = 0 are left out). With p_i = k_i/n_i,
    the stratum rate p̄_s = Σ_s k / Σ_s n, N = Σ n_i and C clusters in S strata:

        MSB = Σ n_i (p_i − p̄_s(i))² / (C − S),   MSW = Σ n_i p_i (1 − p_i) / (N − C),
        n₀  = Σ_s (N_s − Σ_{i∈s} n_i² / N_s) / (C − S),
        ICC = (MSB − MSW) / (MSB + (n₀ − 1)·MSW).

    ``strata=None`` is one stratum (the usual estimator: ICC = (F − 1)/(F + n₀ − 1) with F the
    one-way ANOVA F of the 0/1 answers). None when a degree of freedom or the denominator is 0
    (e.g. no success at all). The estimate can be negative."""
    k, n = np.asarray(k, dtype=float), np.asarray(n, dtype=float)
    s = np.zeros(k.size, dtype=np.int64) if strata is None else np.unique(np.asarray(strata), return_inverse=True)[1].ravel()
    keep = n > 0
    k, n, s = k[keep], n[keep], s[keep]
    clusters = k.size
    n_strata = np.unique(s).size
    total = n.sum()
    df_b, df_w = clusters - n_strata, total - clusters
    if df_b <= 0 or df_w <= 0:
        return None
    k_s, n_s = np.bincount(s, weights=k), np.bincount(s, weights=n)
    p = k / n
    p_bar = (k_s / np.where(n_s > 0, n_s, 1.0))[s]
    msb = float((n * (p - p_bar) ** 2).sum() / df_b)
    msw = float((k - k * k / n).sum() / df_w)
    n0 = float((n_s - np.bincount(s, weights=n * n) / np.where(n_s > 0, n_s, 1.0)).sum() / df_b)
    denom = msb + (n0 - 1.0) * msw
    if denom <= 0:
        return None
    return float((msb - msw) / denom)


def ratio_summary(
    point_num: float,
    point_den: float,
    boot: np.ndarray,
    confidence: float,
    cluster_sizes: Sequence[float] | None = None,
    icc: float | None = None,
    df: int | None = None,
) -> dict:
    """A rate Σu/Σv with its cluster-bootstrap replicates ``boot`` (NaN = undefined resample):

    * ``value``; ``ci_percentile`` (:func:`percentile_interval`) and ``undefined_resamples``;
    * with ``cluster_sizes`` (the answers behind the denominator, per cluster; None for the
      run-level fallback, where n is unknown): ``n`` = Σv, ``deff`` = the bootstrap design effect
      when p is strictly between 0 and 1 (``deff_source: "bootstrap"``), else Kish's with ``icc``
      (``"kish"``), else 1 (``"none"``); ``n_eff`` = n / max(1, deff); ``ci_wilson``: the Wilson
      interval on n_eff·(z/t_df)² (Korn and Graubard's degrees-of-freedom correction, with
      ``df`` = the number of questions − 1; n_eff itself when ``df`` is None);
    * ``ci``: the Wilson interval when p·n_eff or (1 − p)·n_eff is below :data:`SMALL_COUNT`,
      else the percentile interval (``ci_method`` says which).

    Every missing number is ``None`` (JSON-ready)."""
    value = point_num / point_den if point_den > 0 else None
    boot = np.asarray(boot, dtype=float)
    lo, hi, undefined = percentile_interval(boot[:, None], confidence)
    percentile = None if value is None or np.isnan(lo[0]) else [float(lo[0]), float(hi[0])]
    out = {"value": value, "ci": percentile, "ci_method": "percentile", "ci_percentile": percentile, "undefined_resamples": float(undefined[0])}
    if cluster_sizes is None or value is None:
        return out
    defined = boot[~np.isnan(boot)]
    variance = float(defined.var()) if defined.size > 1 else math.nan
    deff = bootstrap_design_effect(variance, value, point_den)
    source = "bootstrap"
    if deff is None:
        deff, source = (kish_design_effect(icc, cluster_sizes), "kish") if icc is not None else (1.0, "none")
    n_eff = point_den / max(1.0, deff)
    shrink = 1.0 if not df or df < 1 else float(_scipy_stats.norm.ppf(0.5 + confidence / 2) / _scipy_stats.t.ppf(0.5 + confidence / 2, df)) ** 2
    wilson = list(wilson_interval(value, n_eff * shrink, confidence))
    out.update(n=float(point_den), deff=deff, deff_source=source, n_eff=n_eff, df=df, ci_wilson=wilson)
    if min(value, 1.0 - value) * n_eff < SMALL_COUNT or percentile is None:
        out.update(ci=wilson, ci_method="wilson_effective_n")
    return out


def cluster_bootstrap_rate(
    num: np.ndarray,
    den: np.ndarray,
    seed_of_run: Sequence[int],
    resamples: int = 2000,
    seed: int = 0,
    confidence: float = 0.95,
    icc: float | None = None,
) -> dict:
    """:func:`ratio_summary` of one group of runs: ``num``/``den`` are ``[runs, questions]``
    counts, ``seed_of_run`` each run's seed index; seeds and questions resampled by
    :func:`two_way_weights` from ``np.random.default_rng(seed)``."""
    num, den = np.atleast_2d(np.asarray(num, dtype=float)), np.atleast_2d(np.asarray(den, dtype=float))
    seed_of_run = np.asarray(seed_of_run, dtype=np.int64)
    ws, wq = two_way_weights(int(seed_of_run.max()) + 1, num.shape[1], resamples, np.random.default_rng(seed))
    table = ClusterTable(tuple(range(ws.shape[1])), tuple(range(num.shape[1])), seed_of_run, {"x": num}, {"x": den}, True)
    _, n_tot, d_tot = resampled_run_totals(table, ws, wq)
    totals_num, totals_den = n_tot["x"].sum(axis=1), d_tot["x"].sum(axis=1)
    boot = safe_ratio(totals_num[1:], totals_den[1:])
    df = int((den.sum(axis=0) > 0).sum()) - 1
    return ratio_summary(float(totals_num[0]), float(totals_den[0]), boot, confidence, den[den > 0], icc, df)


# ---------------------------------------------------------------------------------------------
# least squares


def residual_sum_of_squares(design: np.ndarray, y: np.ndarray) -> tuple[float, int]:
    """RSS of the least-squares fit of y on the columns of ``design``, and the design's rank."""
    design, y = np.asarray(design, dtype=float), np.asarray(y, dtype=float)
    coef, _, rank, _ = np.linalg.lstsq(design, y, rcond=None)
    residual = y - design @ coef
    return float(residual @ residual), int(rank)


def nested_f_test(reduced: np.ndarray, full: np.ndarray, y: np.ndarray) -> dict:
    """F-test of the least-squares model ``reduced`` against ``full`` (whose columns span it):

        F = ((RSS_r − RSS_f) / (rank_f − rank_r)) / (RSS_f / (n − rank_f)),   p = P(F(df1, df2) > F).

    Returns ``{"f", "df1", "df2", "p", "rss_reduced", "rss_full"}``; ``f`` and ``p`` are None when
    a degree of freedom is 0 or RSS_f is 0."""
    y = np.asarray(y, dtype=float)
    rss_r, rank_r = residual_sum_of_squares(reduced, y)
    rss_f, rank_f = residual_sum_of_squares(full, y)
    df1, df2 = rank_f - rank_r, y.size - rank_f
    out = {"f": None, "df1": df1, "df2": df2, "p": None, "rss_reduced": rss_r, "rss_full": rss_f}
    if df1 > 0 and df2 > 0 and rss_f > 0:
        f = max(0.0, (rss_r - rss_f) / df1) / (rss_f / df2)
        out.update(f=float(f), p=float(_scipy_stats.f.sf(f, df1, df2)))
    return out


def group_columns(groups: Sequence) -> tuple[list, np.ndarray]:
    """The distinct groups (in order of first appearance) and their 0/1 indicator columns ``[n, G]``."""
    names = list(dict.fromkeys(groups))
    column = {g: j for j, g in enumerate(names)}
    columns = np.zeros((len(groups), len(names)))
    columns[np.arange(len(groups)), [column[g] for g in groups]] = 1.0
    return names, columns
