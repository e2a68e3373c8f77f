"""The optimiser study's analysis: how alignment relates to training loss, per optimiser.

Each run r has an optimiser g(r), a final training loss L_r, a held-out mean alignment A_r, a
misalignment rate m_r and the adapter's flatness f_r. The study asks whether loss explains
alignment *across* optimisers or only *within* each:

* pooled OLS: A = a + b·log L + ε over all runs, with R²_pooled = 1 − SS_res / SS_tot;
* optimiser-stratified OLS: a separate (a_g, b_g) per optimiser, with
  R²_stratified = 1 − Σ_g SS_res,g / SS_tot, where SS_tot is about the grand mean (so the two R²
  are comparable; R²_stratified ≥ R²_pooled always, and a large gap says the optimiser moves
  alignment at matched loss).

Also: each optimiser's misalignment rates (mean, min, max) and the spread across optimisers
(max/min of the per-optimiser means), and the Spearman correlation of flatness with misalignment.

For the realignment study's rows (:mod:`sail.em.realign_study`, :mod:`sail.em.realign_plots`),
:func:`diverged` says whether a run collapsed into incoherence.
"""

from __future__ import annotations

import math
from collections import defaultdict
from typing import Sequence

import numpy as np


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
        groups[r["optimizer"]].append(i)
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


def analyse(runs: Sequence[dict]) -> dict:
    """Everything the study reports (``results.json``'s ``analysis``)."""
    r2 = loss_alignment_r2(runs)
    flat = [(r["flatness"], r["misalignment_rate"]) for r in runs if r.get("flatness") is not None and r.get("misalignment_rate") is not None]
    by_penalty: dict[float, list[float]] = defaultdict(list)
    for r in runs:
        if r.get("misalignment_rate") is not None:
            by_penalty[float(r.get("spectral_coef", 0.0))].append(r["misalignment_rate"])
    return {
        "r2_pooled": r2["r2_pooled"],
        "r2_stratified": r2["r2_stratified"],
        "loss_alignment": r2,
        "spread": optimizer_spread(runs),
        "spread_all": optimizer_spread(runs, "misalignment_rate_all"),
        "flatness_vs_misalignment_spearman": spearman([f for f, _ in flat], [m for _, m in flat]),
        "misalignment_by_spectral_coef": {str(c): float(np.mean(v)) for c, v in sorted(by_penalty.items())},
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
