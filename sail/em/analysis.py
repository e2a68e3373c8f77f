"""The optimiser study's analysis: misalignment at matched training loss, per optimiser.

Each run r has an optimiser g(r), a learning rate, a spectral coefficient λ, a seed, a final
training loss L_r, a held-out mean alignment A_r, both misalignment rates ((a) and (b),
:mod:`sail.em.rates`), its mean coherence, the counts behind the rates per question
(``per_question``) and the adapter's flatness f_r.

* **Coherence floor.** A run whose mean coherence is below the floor (default
  :data:`COHERENCE_FLOOR`) is listed apart (``incoherent_runs``, both rates) and left out of
  everything below: a rate measured while coherence collapses says little about alignment.
* **The headline: misalignment at matched final loss** (:func:`matched_loss`). Per condition
  (λ, penalty kind, LoRA rank, rsLoRA, organism: never pooled) and optimiser, the curve of each rate against log final loss through its learning-rate cells (seeds
  pooled); each pair of optimisers compared at levels inside the overlap of their loss ranges,
  never extrapolated, with the difference of the interpolated rates. Intervals come from the
  two-way cluster bootstrap of :mod:`sail.em.stats` (seeds × questions; the same resamples for
  every curve, so the differences are paired).
* **Cells** (:func:`cell_estimates`): each (optimiser, lr, λ) cell's rates over its seeds, with
  cluster-bootstrap intervals, design effect, effective n and the Wilson interval near 0.
* **The other axes at matched final loss** (``across``): within each optimiser (and option set),
  the penalty (each kind and λ against λ = 0), the LoRA rank and rsLoRA, and the organism (each
  against the baseline's) compared the same way; each curve lists the cells' held-out loss beside.
* **Loss and alignment**, in the **baseline condition** (λ = 0 and the default organism, option
  set, rank and rsLoRA, as the study passes it; all runs without one): pooled OLS
  A = a + b·log L, with R²_pooled = 1 − SS_res / SS_tot, against one line per optimiser,
  R²_stratified = 1 − Σ_g SS_res,g / SS_tot (SS_tot about the grand mean, so R²_stratified ≥
  R²_pooled always), and the nested F-tests of optimiser intercepts and slopes
  (:func:`optimizer_f_tests`); also R² pooled and stratified within every condition.
* Each optimiser's rates in the baseline condition (mean, min, max over its learning rates) and
  their spread across optimisers, which reflects the learning-rate grid as much as the optimiser;
  the Spearman correlation of flatness with misalignment (all runs).

:func:`headline_lines` prints the comparison. For the realignment study's rows
(:mod:`sail.em.realign_study`, :mod:`sail.em.realign_plots`), :func:`diverged` says whether a run
collapsed into incoherence.
"""

from __future__ import annotations

import json
import math
import warnings
from collections import defaultdict
from dataclasses import dataclass, replace
from typing import Sequence

import numpy as np

from sail.em import stats


def ols_fit(x: Sequence[float], y: Sequence[float]) -> dict:
    """Least squares y = a + b·x: intercept, slope, residual and total sums of squares, R², n.

    With fewer than 2 points, or all x equal, the slope is 0 and the fit is the mean."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    n = len(x)
    mean_y = float(y.mean()) if n else math.nan
    ss_tot = float(((y - mean_y) ** 2).sum()) if n else 0.0
    if n < 2 or np.ptp(x) == 0:
        return {"intercept": mean_y, "slope": 0.0, "ss_res": ss_tot, "ss_tot": ss_tot, "r2": 0.0 if ss_tot > 0 else None, "n": n}
    design = np.stack([np.ones(n), x], axis=1)
    (a, b), *_ = np.linalg.lstsq(design, y, rcond=None)
    ss_res = float(((y - a - b * x) ** 2).sum())
    return {"intercept": float(a), "slope": float(b), "ss_res": ss_res, "ss_tot": ss_tot, "r2": 1 - ss_res / ss_tot if ss_tot > 0 else None, "n": n}


def loss_alignment_r2(runs: Sequence[dict], loss_key: str = "final_train_loss", y_key: str = "alignment") -> dict:
    """Pooled and optimiser-stratified R² of ``y_key`` on log(``loss_key``) (see the module docstring)."""
    usable = [r for r in runs if r.get(loss_key) is not None and r[loss_key] > 0 and r.get(y_key) is not None]
    x = np.log([r[loss_key] for r in usable])
    y = np.array([r[y_key] for r in usable], dtype=float)
    pooled = ols_fit(x, y)
    groups: dict[str, list[int]] = defaultdict(list)
    for i, r in enumerate(usable):
        groups[curve_name(r)].append(i)
    per_group = {g: ols_fit(x[idx], y[idx]) for g, idx in groups.items()}
    ss_res = sum(fit["ss_res"] for fit in per_group.values())
    stratified = 1 - ss_res / pooled["ss_tot"] if pooled["ss_tot"] > 0 else None
    return {
        "r2_pooled": pooled["r2"],
        "r2_stratified": stratified,
        "pooled_fit": {k: pooled[k] for k in ("intercept", "slope", "n")},
        "per_optimizer": {g: {k: fit[k] for k in ("intercept", "slope", "r2", "n")} for g, fit in per_group.items()},
        "y": y_key,
        "x": f"log {loss_key}",
    }


def spearman(x: Sequence[float], y: Sequence[float]) -> float | None:
    """Spearman's rank correlation (average ranks for ties); None with < 3 points or a constant side."""
    from scipy.stats import spearmanr

    if len(x) < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return None
    return float(spearmanr(x, y).statistic)


def optimizer_spread(runs: Sequence[dict], rate_key: str = "misalignment_rate") -> dict:
    """Per-optimiser mean/min/max of ``rate_key`` and the spread of the means across optimisers."""
    by: dict[str, list[float]] = defaultdict(list)
    for r in runs:
        if r.get(rate_key) is not None:
            by[r["optimizer"]].append(float(r[rate_key]))
    stats = {g: {"mean": float(np.mean(v)), "min": float(np.min(v)), "max": float(np.max(v)), "n": len(v)} for g, v in by.items()}
    means = [s["mean"] for s in stats.values()]
    low, high = (min(means), max(means)) if means else (None, None)
    return {
        "per_optimizer": stats,
        "range": (high - low) if means else None,
        "max_over_min": (high / low) if means and low and low > 0 else None,
        "rate": rate_key,
    }


COHERENCE_FLOOR = 50.0
"""A run whose mean held-out coherence ends below this has collapsed (the judge's coherence
threshold of misalignment definition (a)): its few coherent answers say nothing about alignment."""


def diverged(run: dict) -> bool:
    """Collapsed at the end: no coherent answer (misalignment rate (a) undefined), mean coherence
    below :data:`COHERENCE_FLOOR`, or no finite KL."""
    if run["misalignment_rate"] is None or run.get("kl") is None or not math.isfinite(run["kl"]):
        return True
    return run.get("coherence") is not None and run["coherence"] < COHERENCE_FLOOR


# ---------------------------------------------------------------------------------------------
# the headline: misalignment at matched final loss, with cluster-bootstrap intervals

DEFAULT_RESAMPLES = 2000
DEFAULT_CONFIDENCE = 0.95
MATCHED_LOSS_QUANTILES = (0.25, 0.5, 0.75)
"""Where two optimisers are compared: these fractions of the way across the overlap of their
ranges of log final training loss."""
RATE_NAMES = {"a": "misalignment_rate", "b": "misalignment_rate_all"}


def is_coherent(run: dict, coherence_floor: float = COHERENCE_FLOOR) -> bool:
    """The run's mean held-out coherence is known and at least ``coherence_floor``."""
    return run.get("coherence") is not None and run["coherence"] >= coherence_floor


CONDITION_KEYS = ("spectral_coef", "penalty_kind", "rank", "rslora", "organism")
"""The sweep axes that optimisers are compared *within* (a run row without one has None there;
``spectral_coef`` defaults to 0)."""
RUN_KEYS = ("optimizer", "options", "lr", *CONDITION_KEYS, "seed")
"""A run's sweep point, as far as its row has it."""


def condition(run: dict) -> tuple:
    """The run's values of :data:`CONDITION_KEYS`."""
    return tuple(float(run.get(k) or 0.0) if k == "spectral_coef" else run.get(k) for k in CONDITION_KEYS)


def condition_label(values: Sequence) -> str:
    """``λ=0.1`` followed by the other condition keys that are set, e.g. ``λ=0.1 rank=8``."""
    named = dict(zip(CONDITION_KEYS, values))
    return " ".join([f"λ={named['spectral_coef']:g}"] + [f"{k}={v}" for k, v in named.items() if k != "spectral_coef" and v is not None])


def condition_order(values: Sequence) -> tuple:
    """A sort key of conditions: numbers by value, then strings, None last."""
    return tuple((v is None, (0, v, "") if isinstance(v, (int, float)) else (1, 0, str(v))) for v in values)


def curve_name(run: dict) -> str:
    """The optimiser, with its option set when it has one (``adamw {"beta2": 0.95}``)."""
    options = run.get("options")
    return run["optimizer"] if not options else f"{run['optimizer']} {json.dumps(options, sort_keys=True)}"


def _cell_key(run: dict) -> tuple:
    return (curve_name(run), float(run["lr"]), condition(run))


@dataclass
class Replicates:
    """The usable runs (coherent, positive final loss) and their cluster-bootstrap resamples.

    Row 0 of every array is the point estimate (all weights 1), rows 1… the resamples of
    :func:`sail.em.stats.two_way_weights`; columns are runs. ``num[d]``/``den[d]`` are the
    reweighted numerator and denominator totals of definition d, ``seed_weight`` each run's seed
    weight (the weight of its log loss in its cell's mean)."""

    runs: list
    table: stats.ClusterTable
    log_loss: np.ndarray
    seed_weight: np.ndarray
    num: dict
    den: dict
    resamples: int
    seed: int

    def cells(self, runs_idx: Sequence[int] | None = None) -> dict[tuple, list[int]]:
        """(curve name, lr, condition) → the indices of its runs, in order of first appearance."""
        out: dict[tuple, list[int]] = defaultdict(list)
        for i in range(len(self.runs)) if runs_idx is None else runs_idx:
            out[_cell_key(self.runs[i])].append(i)
        return dict(out)

    def cell_points(self, groups: Sequence[Sequence[int]]) -> tuple[np.ndarray, dict]:
        """For groups of runs (cells): per row, the seed-weighted mean log loss ``[B + 1, P]`` and,
        per definition, the pooled rate Σnum/Σden ``[B + 1, P]`` (NaN where a group has no weight)."""
        member = self._membership(groups)
        x = stats.safe_ratio((self.seed_weight * self.log_loss) @ member, self.seed_weight @ member)
        y = {d: stats.safe_ratio(self.num[d] @ member, self.den[d] @ member) for d in self.num}
        return x, y

    def cell_means(self, values: Sequence[float | None], groups: Sequence[Sequence[int]]) -> np.ndarray:
        """Per row, the seed-weighted mean of a per-run quantity over each group ``[B + 1, P]``
        (runs whose value is None or NaN left out; NaN where a group has none)."""
        v = np.array([np.nan if x is None else float(x) for x in values])
        known = ~np.isnan(v)
        member = self._membership(groups) * known[:, None]
        return stats.safe_ratio((self.seed_weight * np.where(known, v, 0.0)) @ member, self.seed_weight @ member)

    def _membership(self, groups: Sequence[Sequence[int]]) -> np.ndarray:
        member = np.zeros((len(self.runs), len(groups)))
        for j, idx in enumerate(groups):
            member[list(idx), j] = 1.0
        return member


def replicates(runs: Sequence[dict], resamples: int = DEFAULT_RESAMPLES, seed: int = 0) -> Replicates:
    """:class:`Replicates` of ``runs`` (already filtered to the coherent ones), resampled with
    ``np.random.default_rng(seed)``."""
    usable = [r for r in runs if r.get("final_train_loss") is not None and r["final_train_loss"] > 0]
    table = stats.cluster_table(usable)
    if not usable:
        empty = np.zeros((resamples + 1, 0))
        return Replicates([], table, np.zeros(0), empty, {d: empty for d in RATE_NAMES}, {d: empty for d in RATE_NAMES}, resamples, seed)
    ws, wq = stats.two_way_weights(len(table.seeds), len(table.questions), resamples, np.random.default_rng(seed))
    seed_weight, num, den = stats.resampled_run_totals(table, ws, wq)
    log_loss = np.log([r["final_train_loss"] for r in usable])
    return Replicates(usable, table, log_loss, seed_weight, num, den, resamples, seed)


def _estimate(values: np.ndarray, confidence: float) -> dict:
    """Point (row 0) and percentile interval (rows 1…) of one column of replicate values."""
    lo, hi, undefined = stats.percentile_interval(values[1:, None], confidence)
    point = None if np.isnan(values[0]) else float(values[0])
    ci = None if point is None or np.isnan(lo[0]) else [float(lo[0]), float(hi[0])]
    return {"value": point, "ci": ci, "undefined_resamples": float(undefined[0])}


def cell_estimates(rep: Replicates, flagged: Sequence[dict] = (), confidence: float = DEFAULT_CONFIDENCE) -> tuple[list[dict], dict]:
    """Each sweep cell's rates (a) and (b) over its coherent seeds (:func:`sail.em.stats.ratio_summary`),
    and the intracluster correlation of answers within a (run, question) cluster per definition,
    pooled over the cells (each cluster against its cell's rate; None for the run-level fallback)."""
    cells = rep.cells()
    icc = {d: None for d in RATE_NAMES}
    if rep.table.by_question and cells:
        stratum = np.empty(len(rep.runs), dtype=np.int64)
        for j, idx in enumerate(cells.values()):
            stratum[idx] = j
        q = len(rep.table.questions)
        for d in RATE_NAMES:
            icc[d] = stats.icc_anova(rep.table.num[d].ravel(), rep.table.den[d].ravel(), np.repeat(stratum, q))
    incoherent = defaultdict(int)
    for r in flagged:
        incoherent[_cell_key(r)] += 1
    out = []
    for key, idx in cells.items():
        row = {"optimizer": key[0], "lr": key[1], **dict(zip(CONDITION_KEYS, key[2])), "n_runs": len(idx), "n_incoherent": incoherent[key],
               "final_train_loss": float(np.exp(rep.log_loss[idx].mean()))}
        for d in RATE_NAMES:
            num, den = rep.num[d][:, idx].sum(axis=1), rep.den[d][:, idx].sum(axis=1)
            cell_den = rep.table.den[d][idx]
            sizes = cell_den[cell_den > 0] if rep.table.by_question else None
            df = int((cell_den.sum(axis=0) > 0).sum()) - 1
            row[d] = stats.ratio_summary(float(num[0]), float(den[0]), stats.safe_ratio(num[1:], den[1:]), confidence, sizes, icc[d], df)
        out.append(row)
    return out, icc


COMPARED = {"optimizer": (), "penalty": ("spectral_coef", "penalty_kind"), "lora": ("rank", "rslora"), "organism": ("organism",)}
"""What :func:`matched_loss` compares: the curves are the optimisers (with their option sets), or
the values of these condition keys within one optimiser and the other condition keys."""


def _label(named: dict, keys: Sequence[str]) -> str:
    """The values of ``keys`` in ``named`` as :func:`condition_label` writes them (``λ`` always,
    the others where set)."""
    return " ".join(f"λ={named[k]:g}" if k == "spectral_coef" else f"{k}={named[k]}" for k in keys if k == "spectral_coef" or named[k] is not None)


def comparison(run: dict, across: str = "optimizer") -> tuple[tuple, str]:
    """(the block the run is compared within, the name of its curve there) for ``across`` (a key of
    :data:`COMPARED`): across optimisers, the block is the condition (:data:`CONDITION_KEYS`) and the
    curve :func:`curve_name`; across a condition key set, the block is the curve name and the other
    condition keys (the compared ones None) and the curve the compared keys' values."""
    if across == "optimizer":
        return condition(run), curve_name(run)
    keys = COMPARED[across]
    named = dict(zip(CONDITION_KEYS, condition(run)))
    return (curve_name(run), *(None if k in keys else v for k, v in named.items())), _label(named, keys)


def _block_label(block: tuple, across: str) -> str:
    if across == "optimizer":
        return condition_label(block)
    named = dict(zip(CONDITION_KEYS, block[1:]))
    return " ".join(filter(None, [block[0], _label(named, [k for k in CONDITION_KEYS if k not in COMPARED[across]])]))


def matched_loss(rep: Replicates, confidence: float = DEFAULT_CONFIDENCE, quantiles: Sequence[float] = MATCHED_LOSS_QUANTILES,
                 across: str = "optimizer", reference: dict | None = None) -> list[dict]:
    """Misalignment at matched final training loss: with ``across = "optimizer"``, the optimisers
    compared per condition (the values of :data:`CONDITION_KEYS`: spectral coefficient, penalty
    kind, LoRA rank, rsLoRA, organism); with another key of :data:`COMPARED`, that condition's
    values compared within each optimiser and the remaining condition keys (blocks with one curve
    are left out), each against the curve at ``reference``'s values of the compared keys (λ = 0
    for the penalty) where the block has it, else every pair.

    Each curve (an optimiser with another option set is another curve): its learning-rate cells,
    each at (seed-weighted mean log final loss, pooled rate; ``heldout_loss`` the cell's mean
    held-out loss beside), joined linearly in log loss in order of loss. Every compared pair of
    curves with ≥ 2 cells each is compared at the ``quantiles`` of the overlap of their ranges of
    log loss (none when the ranges do not overlap): both interpolated rates and their difference
    (first − second), with percentile intervals over the resamples, in which the curves are rebuilt
    from the resampled cells (a level outside a resampled curve's range is undefined there, never
    extrapolated; the share is ``undefined_resamples``)."""
    by_block: dict[tuple, list[int]] = defaultdict(list)
    for i, r in enumerate(rep.runs):
        by_block[comparison(r, across)[0]].append(i)
    if across == "penalty":
        reference = {"spectral_coef": 0.0, "penalty_kind": None}
    reference_label = None if reference is None or across == "optimizer" else _label(
        {k: (float(reference.get(k) or 0.0) if k == "spectral_coef" else reference.get(k)) for k in CONDITION_KEYS}, COMPARED[across])
    out = []
    for block in sorted(by_block, key=condition_order):
        cells = rep.cells(by_block[block])
        by_curve: dict[str, list[tuple]] = defaultdict(list)
        for key, idx in cells.items():
            by_curve[comparison(rep.runs[idx[0]], across)[1]].append(key)
        if across != "optimizer" and len(by_curve) < 2:
            continue
        curves, points, excluded = {}, {}, {}
        for name, keys in by_curve.items():
            if len(keys) < 2:
                excluded[name] = "one learning rate: no curve to interpolate"
                continue
            x, y = points[name] = rep.cell_points([cells[k] for k in keys])
            order = np.argsort(x[0])
            heldout = [[rep.runs[i].get("heldout_loss") for i in cells[keys[j]]] for j in order]
            coherence = [[rep.runs[i].get("coherence") for i in cells[keys[j]]] for j in order]
            curves[name] = {"lr": [keys[i][1] for i in order], "final_train_loss": np.exp(x[0, order]).tolist(),
                            "heldout_loss": [None if any(h is None for h in hs) else float(np.mean(hs)) for hs in heldout],
                            "coherence": [float(np.mean(cs)) for cs in coherence],
                            **{d: [None if np.isnan(v) else float(v) for v in y[d][0, order]] for d in RATE_NAMES}}
        names = list(curves)
        if reference_label in curves:
            compared = [(reference_label, h) for h in names if h != reference_label]
        else:
            compared = [(g, h) for i, g in enumerate(names) for h in names[i + 1 :]]
        pairs = [_compare(points[g], points[h], g, h, confidence, quantiles) for g, h in compared]
        where = dict(zip(CONDITION_KEYS, block)) if across == "optimizer" else {"curve": block[0], **{
            k: v for k, v in zip(CONDITION_KEYS, block[1:]) if k not in COMPARED[across]}}
        out.append({**where, "across": across, "condition": _block_label(block, across), "curves": curves, "excluded": excluded, "pairs": pairs})
    return out


def _compare(pg: tuple, ph: tuple, g: str, h: str, confidence: float, quantiles: Sequence[float]) -> dict:
    """Optimisers g and h (their cells' resampled (log loss, rates), :meth:`Replicates.cell_points`)
    at the ``quantiles`` of the overlap of their point-estimate ranges of log loss."""
    (xg, yg), (xh, yh) = pg, ph
    lo, hi = max(np.nanmin(xg[0]), np.nanmin(xh[0])), min(np.nanmax(xg[0]), np.nanmax(xh[0]))
    entry: dict = {"optimizers": [g, h], "overlap": None, "levels": []}
    if not lo < hi:
        return entry
    entry["overlap"] = [float(np.exp(lo)), float(np.exp(hi))]
    at = lo + np.asarray(quantiles, dtype=float) * (hi - lo)
    per_def = {}
    for d in RATE_NAMES:
        vg, vh = stats.interpolate_rows(xg, yg[d], at), stats.interpolate_rows(xh, yh[d], at)
        per_def[d] = (vg, vh, vg - vh)
    for j, level in enumerate(at):
        row: dict = {"final_train_loss": float(np.exp(level))}
        for d, (vg, vh, diff) in per_def.items():
            difference = _estimate(diff[:, j], confidence)
            ci = difference["ci"]
            difference["excludes_zero"] = None if ci is None else bool(ci[0] > 0 or ci[1] < 0)
            row[d] = {g: _estimate(vg[:, j], confidence), h: _estimate(vh[:, j], confidence), "difference": difference}
        entry["levels"].append(row)
    return entry


def loss_curve(rep: Replicates, groups: Sequence[Sequence[int]], definition: str, confidence: float = DEFAULT_CONFIDENCE,
               points: int = 25) -> dict | None:
    """One optimiser's curve for a plot: its cells (``groups`` of run indices) as points
    (``loss``, ``rate``) in order of loss, and the band ``lower``/``upper`` of percentile intervals
    at ``points`` evenly spaced log losses across its range (``grid``; NaN where the level lies
    outside the resampled curve in more than half of the resamples). None with < 2 cells."""
    if len(groups) < 2:
        return None
    x, y = rep.cell_points(groups)
    order = np.argsort(x[0])
    grid = np.linspace(np.nanmin(x[0]), np.nanmax(x[0]), points)
    values = stats.interpolate_rows(x, y[definition], grid)
    lower, upper, undefined = stats.percentile_interval(values[1:], confidence)
    lower[undefined > 0.5], upper[undefined > 0.5] = np.nan, np.nan
    return {"loss": np.exp(x[0, order]), "rate": y[definition][0, order], "grid": np.exp(grid), "lower": lower, "upper": upper}


def matched_spread(rep: Replicates, where: dict | None = None, confidence: float = DEFAULT_CONFIDENCE,
                   quantiles: Sequence[float] = MATCHED_LOSS_QUANTILES) -> dict | None:
    """The spread of misalignment across the optimisers at matched final loss: the optimisers with
    their default options (no option set) among the runs ``where`` says (:func:`in_condition`; the
    study passes its baseline condition), each a curve as in :func:`matched_loss`, compared at the
    ``quantiles`` of the range of log loss that *every* curve covers.

    Per level and definition: each curve's rate, and max/min over the curves of the rates, with the
    maximum and the minimum taken again in every resample (so the interval covers the selection);
    ``without_lowest``: the same ratio once the curve that is lowest at the point estimate is left
    out. None with fewer than 2 curves or no common range."""
    idx = [i for i, r in enumerate(rep.runs) if not r.get("options") and (where is None or in_condition(r, where))]
    by_curve: dict[str, list[list[int]]] = defaultdict(list)
    for key, members in rep.cells(idx).items():
        by_curve[key[0]].append(members)
    points = {name: rep.cell_points(groups) for name, groups in by_curve.items() if len(groups) >= 2}
    if len(points) < 2:
        return None
    lo = max(float(np.nanmin(x[0])) for x, _ in points.values())
    hi = min(float(np.nanmax(x[0])) for x, _ in points.values())
    names = list(points)
    out = {"curves": names, "overlap": None, "levels": []}
    if not lo < hi:
        return out
    out["overlap"] = [math.exp(lo), math.exp(hi)]
    at = lo + np.asarray(quantiles, dtype=float) * (hi - lo)
    for j, level in enumerate(at):
        row: dict = {"final_train_loss": float(np.exp(level))}
        for d in RATE_NAMES:
            values = np.column_stack([stats.interpolate_rows(x, y[d], [level])[:, 0] for x, y in points.values()])
            lowest = int(np.nanargmin(values[0]))
            rest = np.delete(values, lowest, axis=1)
            with np.errstate(invalid="ignore", divide="ignore"), warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)  # a resample where every curve is undefined
                ratio = np.nanmax(values, axis=1) / np.nanmin(values, axis=1)
                ratio_rest = np.nanmax(rest, axis=1) / np.nanmin(rest, axis=1)
            ratio[~np.isfinite(ratio)] = np.nan
            ratio_rest[~np.isfinite(ratio_rest)] = np.nan
            row[d] = {"rates": {name: _estimate(values[:, c], confidence) for c, name in enumerate(names)},
                      "max_over_min": _estimate(ratio, confidence), "highest": names[int(np.nanargmax(values[0]))], "lowest": names[lowest],
                      "without_lowest": _estimate(ratio_rest, confidence) if rest.shape[1] >= 2 else None}
        out["levels"].append(row)
    return out


def penalty_cost(rep: Replicates, confidence: float = DEFAULT_CONFIDENCE) -> list[dict]:
    """What the spectral penalty costs and buys at a fixed learning rate: each penalised cell (λ > 0)
    against the cell with λ = 0 and otherwise the same point (optimiser and option set, rate,
    organism, rank, rsLoRA), where both have coherent runs.

    Per pair: the relative change of the final training loss (the ratio of the cells' seed-weighted
    geometric means, minus 1), the change of the mean held-out loss, and each rate (a) and (b) with
    the difference penalised − reference; intervals from the same two-way cluster bootstrap as
    :func:`matched_loss` (the loss changes resample the seeds only, as the questions do not enter
    them)."""
    cells = rep.cells()
    out = []
    for key, idx in cells.items():
        curve, lr, cond = key
        named = dict(zip(CONDITION_KEYS, cond))
        if named["spectral_coef"] <= 0:
            continue
        ref_key = (curve, lr, (0.0, None, *cond[2:]))
        if ref_key not in cells:
            continue
        groups = [cells[ref_key], idx]
        x, y = rep.cell_points(groups)
        heldout = rep.cell_means([r.get("heldout_loss") for r in rep.runs], groups)
        row = {"curve": curve, "lr": lr, **named, "n_runs": [len(g) for g in groups],
               "final_train_loss": [float(np.exp(v)) for v in x[0]],
               "train_loss_change": _estimate(np.expm1(x[:, 1] - x[:, 0]), confidence),
               "heldout_loss": [None if np.isnan(v) else float(v) for v in heldout[0]],
               "heldout_loss_change": _estimate(heldout[:, 1] - heldout[:, 0], confidence)}
        for d in RATE_NAMES:
            row[d] = {"reference": _estimate(y[d][:, 0], confidence), "penalised": _estimate(y[d][:, 1], confidence),
                      "difference": _estimate(y[d][:, 1] - y[d][:, 0], confidence)}
        out.append(row)
    out.sort(key=lambda r: (r["curve"], r["penalty_kind"] or "", r["spectral_coef"], -r["lr"], condition_order([r[k] for k in CONDITION_KEYS[2:]])))
    return out


def base_losses(runs: Sequence[dict]) -> dict:
    """Each organism's base training loss L̄₀: the mean over its runs of the first step's loss (the
    adapter starts at ΔW = 0, so it is the base model's loss on one batch of the narrow data)."""
    first: dict = defaultdict(list)
    for r in runs:
        if r.get("loss_trajectory"):
            first[r.get("organism")].append(float(r["loss_trajectory"][0]))
    return {organism: float(np.mean(v)) for organism, v in first.items()}


def relative_loss(rep: Replicates, base: dict) -> Replicates | None:
    """``rep`` with each run's log final loss taken relative to its organism's base loss,
    log(L / L̄₀) (:func:`base_losses`); None when a run's organism has no base loss."""
    if any(r.get("organism") not in base for r in rep.runs):
        return None
    shift = np.log([base[r.get("organism")] for r in rep.runs]) if rep.runs else np.zeros(0)
    return replace(rep, log_loss=rep.log_loss - shift)


# ---------------------------------------------------------------------------------------------
# is there an optimiser effect in alignment ~ log loss?


def optimizer_f_tests(runs: Sequence[dict], loss_key: str = "final_train_loss", y_key: str = "alignment") -> dict:
    """Nested F-tests (:func:`sail.em.stats.nested_f_test`) of ``y_key`` on log(``loss_key``),
    runs taken as independent observations with equal variance:

    * ``intercepts``: pooled (a + b·log L) against one intercept per optimiser (a_g + b·log L);
    * ``slopes``: one intercept per optimiser against one line per optimiser (a_g + b_g·log L);
    * ``stratified``: pooled against one line per optimiser (the models of R²_pooled and
      R²_stratified)."""
    usable = [r for r in runs if r.get(loss_key) is not None and r[loss_key] > 0 and r.get(y_key) is not None]
    x = np.log([r[loss_key] for r in usable]) if usable else np.zeros(0)
    y = np.array([r[y_key] for r in usable], dtype=float)
    names, groups = stats.group_columns([curve_name(r) for r in usable])
    out = {"n": len(usable), "optimizers": names, "y": y_key, "x": f"log {loss_key}"}
    if len(usable) < 3:
        return {**out, "intercepts": None, "slopes": None, "stratified": None}
    pooled = np.column_stack([np.ones_like(x), x])
    intercepts = np.column_stack([groups, x])
    slopes = np.column_stack([groups, groups * x[:, None]])
    return {**out, "intercepts": stats.nested_f_test(pooled, intercepts, y), "slopes": stats.nested_f_test(intercepts, slopes, y),
            "stratified": stats.nested_f_test(pooled, slopes, y)}


# ---------------------------------------------------------------------------------------------
# everything the study reports


def in_condition(run: dict, values: dict) -> bool:
    """Whether ``run`` has ``values`` (sweep-point keys → values; a row without a key has the
    value asked for, as rows written before an axis existed had its default)."""
    for key, value in values.items():
        if key == "spectral_coef":
            if float(run.get(key) or 0.0) != float(value):
                return False
        elif key == "options":
            if (run.get(key) or {}) != (value or {}):
                return False
        elif run.get(key, value) != value:
            return False
    return True


def loss_alignment_by_condition(runs: Sequence[dict]) -> list[dict]:
    """R² pooled and stratified by curve (:func:`loss_alignment_r2`) within each condition
    (:data:`CONDITION_KEYS`), in :func:`condition_order`."""
    by: dict[tuple, list[dict]] = defaultdict(list)
    for r in runs:
        by[condition(r)].append(r)
    out = []
    for cond in sorted(by, key=condition_order):
        fit = loss_alignment_r2(by[cond])
        out.append({"condition": condition_label(cond), "n": fit["pooled_fit"]["n"], "curves": sorted(fit["per_optimizer"]),
                    "r2_pooled": fit["r2_pooled"], "r2_stratified": fit["r2_stratified"]})
    return out


def analyse(runs: Sequence[dict], coherence_floor: float = COHERENCE_FLOOR, resamples: int = DEFAULT_RESAMPLES, seed: int = 0,
            confidence: float = DEFAULT_CONFIDENCE, baseline: dict | None = None) -> dict:
    """Everything the study reports (``results.json``'s ``analysis``).

    Runs whose mean coherence is below ``coherence_floor`` (or unknown) are listed in
    ``incoherent_runs`` with both rates and left out of everything else. On the others:

    * ``matched_loss`` (the headline, :func:`matched_loss`: optimisers compared within each
      condition), ``cells`` and ``icc`` (:func:`cell_estimates`), with the resampling described in
      ``bootstrap``; ``matched_loss_across``: the penalty (against λ = 0), the LoRA rank and
      rsLoRA, and the organism (against ``baseline``'s) compared within each optimiser;
    * ``f_tests`` (:func:`optimizer_f_tests`), ``r2_pooled``, ``r2_stratified``, ``loss_alignment``
      and ``spread``/``spread_all`` (per-optimiser mean, min and max of each rate over *its*
      learning rates, which depends on the learning-rate grid) on the runs of the ``baseline``
      condition (sweep-point keys → values, :func:`in_condition`; the study passes λ = 0 and its
      default organism, option set, rank and rsLoRA, so no other axis is pooled into them; None:
      every run); ``loss_alignment_by_condition``: R² pooled and stratified within each condition;
    * ``matched_spread`` (:func:`matched_spread`): max/min of the rates across the optimisers at
      matched loss in the ``baseline`` condition;
    * ``penalty_cost`` (:func:`penalty_cost`): each penalised cell against λ = 0 at the same rate;
      ``matched_relative_loss``: the organisms at matched L/L̄₀ (:func:`_matched_relative_loss`,
      the base losses from all runs, coherent or not);
    * the Spearman correlation of flatness with rate (a) and the mean rate (a) per spectral
      coefficient, both over all runs."""
    kept = [r for r in runs if is_coherent(r, coherence_floor)]
    flagged = [r for r in runs if not is_coherent(r, coherence_floor)]
    base = kept if baseline is None else [r for r in kept if in_condition(r, baseline)]
    r2 = loss_alignment_r2(base)
    flat = [(r["flatness"], r["misalignment_rate"]) for r in kept if r.get("flatness") is not None and r.get("misalignment_rate") is not None]
    by_penalty: dict[float, list[float]] = defaultdict(list)
    for r in kept:
        if r.get("misalignment_rate") is not None:
            by_penalty[float(r.get("spectral_coef", 0.0))].append(r["misalignment_rate"])
    rep = replicates(kept, resamples, seed)
    cells, icc = cell_estimates(rep, flagged, confidence)
    n_seeds = len(rep.table.seeds)
    if not rep.runs:
        method = "none: no coherent run with a final loss"
    elif rep.table.by_question:
        method = "two-way cluster bootstrap (seeds × questions), percentile"
    else:  # the seeds alone: with S seeds, at most C(2S − 1, S) distinct resamples
        method = (f"run-level bootstrap (seeds only, at most {math.comb(2 * n_seeds - 1, n_seeds)} distinct resamples), percentile: "
                  "some rows have no per_question counts")
    return {
        "baseline": {"condition": None if baseline is None else json.loads(json.dumps(baseline)), "n_runs": len(base)},
        "r2_pooled": r2["r2_pooled"],
        "r2_stratified": r2["r2_stratified"],
        "loss_alignment": r2,
        "loss_alignment_by_condition": loss_alignment_by_condition(kept),
        "f_tests": optimizer_f_tests(base),
        "coherence_floor": float(coherence_floor),
        "incoherent_runs": [
            {**{k: r.get(k) for k in RUN_KEYS if k in r}, "coherence": r.get("coherence"), "final_train_loss": r.get("final_train_loss"),
             **{name: r.get(name) for name in RATE_NAMES.values()}}
            for r in flagged
        ],
        "bootstrap": {"method": method, "by_question": rep.table.by_question, "resamples": int(resamples), "seed": int(seed),
                      "confidence": float(confidence), "n_seeds": n_seeds, "n_questions": len(rep.table.questions) if rep.table.by_question else None},
        "matched_loss": matched_loss(rep, confidence),
        "matched_loss_across": {across: matched_loss(rep, confidence, across=across, reference=baseline) for across in COMPARED if across != "optimizer"},
        "matched_relative_loss": _matched_relative_loss(rep, base_losses(runs), confidence, baseline),
        "penalty_cost": penalty_cost(rep, confidence),
        "matched_spread": matched_spread(rep, baseline, confidence),
        "cells": cells,
        "icc": icc,
        "spread": optimizer_spread(base),
        "spread_all": optimizer_spread(base, "misalignment_rate_all"),
        "flatness_vs_misalignment_spearman": spearman([f for f, _ in flat], [m for _, m in flat]),
        "misalignment_by_spectral_coef": {str(c): float(np.mean(v)) for c, v in sorted(by_penalty.items())},
    }


def _matched_relative_loss(rep: Replicates, base: dict, confidence: float, baseline: dict | None) -> dict | None:
    """The organisms compared at matched *relative* final loss L/L̄₀ (:func:`relative_loss`), where
    the study has more than one organism: organisms whose base losses differ have fitted the narrow
    data to different degrees at one absolute loss."""
    rel = relative_loss(rep, base)
    if rel is None or len({r.get("organism") for r in rep.runs}) < 2:
        return None
    return {"base_loss": base, "loss": "final_train_loss / base_loss", "organism": matched_loss(rel, confidence, across="organism", reference=baseline)}


def format_estimate(e: dict | None, signed: bool = False, digits: int = 3) -> str:
    """An estimate ``{"value", "ci"}`` as ``0.123 [0.100, 0.150]`` (``signed``: with its sign;
    ``n/a`` without a value)."""
    if e is None or e.get("value") is None:
        return "n/a"
    f = f"{{:{'+' if signed else ''}.{digits}f}}"
    ci = "" if not e.get("ci") else " [" + ", ".join(f.format(v) for v in e["ci"]) + "]"
    return f.format(e["value"]) + ci


def format_difference(e: dict) -> str:
    """A difference as :func:`format_estimate` writes it signed, with ``*`` where its interval
    excludes 0."""
    ci = e.get("ci")
    return format_estimate(e, signed=True) + ("*" if ci and (ci[0] > 0 or ci[1] < 0) else "")


def _pair_lines(block: dict) -> list[str]:
    """One block of :func:`matched_loss` as lines: per pair and definition, each curve's rate and the
    difference at each loss level (``*`` where its interval excludes 0)."""
    where, lines = block["condition"], []
    for name, why in block["excluded"].items():
        lines.append(f"  {where} {name}: not compared ({why})")
    for pair in block["pairs"]:
        g, h = pair["optimizers"]
        if not pair["levels"]:
            rg, rh = (block["curves"][n]["final_train_loss"] for n in (g, h))
            lines.append(f"  {where} {g} vs {h}: final losses do not overlap ({min(rg):.3f}–{max(rg):.3f} vs {min(rh):.3f}–{max(rh):.3f})")
            continue
        for d in RATE_NAMES:
            parts = []
            for level in pair["levels"]:
                e = level[d]
                parts.append(f"{level['final_train_loss']:.3f}: {format_estimate(e[g])} vs {format_estimate(e[h])}, diff {format_difference(e['difference'])}")
            lines.append(f"  {where} ({d}) {g} vs {h} at loss " + "; ".join(parts))
    return lines


ACROSS_TITLES = {"penalty": "the spectral penalty against λ = 0", "lora": "LoRA rank and rsLoRA", "organism": "the organism"}


def headline_lines(analysis: dict) -> list[str]:
    """The analysis as a short report: the matched-loss comparisons of the optimisers within each
    condition, then (where the sweep varies them) of the penalty, the LoRA scaling and the organism
    within each optimiser (:func:`_pair_lines`), the F-tests and R² in the baseline condition, and
    the runs left out for low coherence."""
    b = analysis["bootstrap"]
    lines = [f"Misalignment at matched final training loss ({100 * b['confidence']:g} % CI: {b['method']}, {b['resamples']} resamples, "
             f"{b['n_seeds']} seeds" + (f" × {b['n_questions']} questions" if b["by_question"] else "") + f"; runs with coherence < {analysis['coherence_floor']:g} left out):"]
    for block in analysis["matched_loss"]:
        lines += _pair_lines(block)
    for across, blocks in (analysis.get("matched_loss_across") or {}).items():
        if any(block["pairs"] for block in blocks):
            lines.append(f"Misalignment at matched final training loss across {ACROSS_TITLES.get(across, across)}, within each optimiser:")
            for block in blocks:
                lines += _pair_lines(block)
    spread = analysis.get("matched_spread")
    if spread and spread["levels"]:
        lines.append(f"Spread across {', '.join(spread['curves'])} at matched loss (baseline condition), max/min of rate (a):")
        for level in spread["levels"]:
            e = level["a"]
            rest = "" if e["without_lowest"] is None else f"; without {e['lowest']} {format_estimate(e['without_lowest'])}"
            lines.append(f"  loss {level['final_train_loss']:.3f}: {format_estimate(e['max_over_min'])} ({e['highest']} over {e['lowest']}){rest}")
    relative = analysis.get("matched_relative_loss")
    if relative and any(block["pairs"] for block in relative["organism"]):
        bases = ", ".join(f"{k} {v:.3f}" for k, v in relative["base_loss"].items())
        lines.append(f"Misalignment at matched relative final loss L/L̄₀ across the organism (base losses L̄₀: {bases}):")
        for block in relative["organism"]:
            lines += _pair_lines(block)
    if analysis.get("penalty_cost"):
        lines.append("The spectral penalty at a fixed learning rate against λ = 0 (train loss change, held-out loss change, rate (a) change):")
        for c in analysis["penalty_cost"]:
            lines.append(f"  {c['curve']} lr {c['lr']:g} {c['penalty_kind']} λ={c['spectral_coef']:g}: train loss {format_estimate(c['train_loss_change'], True)} (relative), "
                         f"held-out {format_estimate(c['heldout_loss_change'], True)}, (a) {format_estimate(c['a']['reference'])} → "
                         f"{format_estimate(c['a']['penalised'])}, diff {format_difference(c['a']['difference'])}")
    f = analysis["f_tests"]

    def ftest(t):
        return "n/a" if t is None or t["f"] is None else f"F({t['df1']}, {t['df2']}) = {t['f']:.2f}, p = {t['p']:.3g}"

    r2p, r2s = analysis["r2_pooled"], analysis["r2_stratified"]
    where = (analysis.get("baseline") or {}).get("condition")
    within = "all runs" if where is None else "the baseline condition (" + ", ".join(f"{k}={json.dumps(v)}" for k, v in where.items()) + ")"
    lines.append(f"{f['y']} ~ {f['x']} over the {f['n']} runs of {within}, runs as independent: optimiser intercepts {ftest(f['intercepts'])}; "
                 f"optimiser slopes {ftest(f['slopes'])}; R² pooled {'n/a' if r2p is None else f'{r2p:.3f}'}, stratified {'n/a' if r2s is None else f'{r2s:.3f}'}")
    flagged = analysis["incoherent_runs"]
    if not flagged:
        lines.append(f"No run below coherence {analysis['coherence_floor']:g}.")
    for r in flagged:
        rates = ", ".join(f"({d}) {'n/a' if r[k] is None else f'{r[k]:.3f}'}" for d, k in RATE_NAMES.items())
        coherence = "n/a" if r["coherence"] is None else f"{r['coherence']:.1f}"
        point = f"{curve_name(r)} lr {r['lr']:g} {condition_label(condition(r))} seed {r['seed']}"
        lines.append(f"Left out, coherence {coherence} < {analysis['coherence_floor']:g}: {point}: {rates}")
    return lines
