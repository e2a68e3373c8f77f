"""The optimiser study's plots (PNG), from ``results.json``'s ``runs`` rows.

* :func:`plot_loss_vs_alignment`: final alignment against log final training loss over the
  coherent runs of the baseline condition, one colour per optimiser, the pooled OLS line and one
  line per optimiser (R² pooled vs stratified in the title, as ``analysis.loss_alignment``);
* :func:`plot_trajectories`: each run's path in (log training loss, alignment) space over its
  checkpoints;
* :func:`plot_misalignment_by_optimizer`: misalignment rate per optimiser and spectral coefficient
  over the coherent runs of the baseline condition but for λ (mean over seeds and learning rates,
  whiskers min–max);
* :func:`plot_flatness_vs_misalignment`: the adapter's flatness against the misalignment rate;
* :func:`plot_matched_loss`: both misalignment rates against final training loss (log scale), one
  row per condition (spectral coefficient, and penalty kind, LoRA rank, rsLoRA or organism where
  the sweep varies them): per optimiser its runs (hollow: coherence below the floor, left out
  of the curves), the curve through its learning-rate cells (seeds pooled) and the band of
  cluster-bootstrap percentile intervals (:mod:`sail.em.analysis`, :mod:`sail.em.stats`).

Each function saves its PNG and returns the matplotlib ``Figure`` (closed), whose artists hold the
data drawn.
"""

from __future__ import annotations

import functools
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.ticker import FormatStrFormatter  # noqa: E402

from sail.em.analysis import (  # noqa: E402
    COHERENCE_FLOOR,
    DEFAULT_CONFIDENCE,
    DEFAULT_RESAMPLES,
    RATE_NAMES,
    condition,
    condition_label,
    condition_order,
    curve_name,
    in_condition,
    is_coherent,
    loss_alignment_r2,
    loss_curve,
    replicates,
    spearman,
)
from sail.plotting import save_figure  # noqa: E402

OPTIMIZER_COLOURS = {"adamw": "tab:blue", "adam": "tab:purple", "lion": "tab:orange", "muon": "tab:green", "sgd": "tab:red"}


def _colour(name: str) -> str:
    return OPTIMIZER_COLOURS.get(name, "tab:grey")


def _distinct(runs, key: str) -> list:
    """The values of ``key`` over ``runs``, each once, in order of first appearance."""
    return list(dict.fromkeys(r[key] for r in runs))


def _optimizers(runs) -> list[str]:
    return _distinct(runs, "optimizer")


def _write(fig: Figure, path) -> Figure:
    """Save ``fig`` as a PNG at ``path`` (directories made) and close it; returns ``fig``, whose
    artists keep the data drawn."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return fig


def _save(fig: Figure, path) -> Figure:
    """:func:`sail.plotting.save_figure` (``tight_layout``, then the PNG), then close ``fig``; returns it."""
    save_figure(fig, path)
    plt.close(fig)
    return fig


def _fmt(value) -> str:
    return "n/a" if value is None else f"{value:.2f}"


def plot_loss_vs_alignment(runs, path, baseline: dict | None = None, coherence_floor: float = COHERENCE_FLOOR) -> Figure:
    """Alignment against log final loss over the coherent runs of the ``baseline`` condition (all
    coherent runs without one): the runs, one fitted line per optimiser and the pooled line, as
    ``analysis.loss_alignment`` fits them."""
    runs = [r for r in runs if is_coherent(r, coherence_floor) and (baseline is None or in_condition(r, baseline))]
    fit = loss_alignment_r2(runs)
    fig, ax = plt.subplots(figsize=(6, 4.2))
    xs_all = [np.log(r["final_train_loss"]) for r in runs if r.get("final_train_loss", 0) > 0]
    grid = np.linspace(min(xs_all), max(xs_all), 50) if xs_all else np.array([])
    for name in _optimizers(runs):
        rows = [r for r in runs if r["optimizer"] == name and r.get("final_train_loss", 0) > 0 and r.get("alignment") is not None]
        x = [np.log(r["final_train_loss"]) for r in rows]
        y = [r["alignment"] for r in rows]
        marker = ["o" if not r.get("spectral_coef") else "^" for r in rows]
        for xi, yi, m in zip(x, y, marker):
            ax.scatter(xi, yi, color=_colour(name), marker=m, s=22, alpha=0.8)
        line = fit["per_optimizer"].get(name)
        if line and x:
            own = np.linspace(min(x), max(x), 20)  # each optimiser's fit over its own range of losses
            ax.plot(own, line["intercept"] + line["slope"] * own, color=_colour(name), lw=1, label=f"{name} (R² {_fmt(line['r2'])})")
    if len(grid):
        p = fit["pooled_fit"]
        ax.plot(grid, p["intercept"] + p["slope"] * grid, "k--", lw=1.2, label="pooled")
    ax.set_xlabel("log final training loss (narrow fine-tune)")
    ax.set_ylabel("held-out mean alignment (0–100)")
    where = "all coherent runs" if baseline is None else "coherent runs of the baseline condition"
    if any(r.get("spectral_coef") for r in runs):
        where += "; ▲ = spectral penalty on"
    ax.set_title(f"R² pooled {_fmt(fit['r2_pooled'])} vs optimiser-stratified {_fmt(fit['r2_stratified'])}\n({where})", fontsize=9)
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7)
    return _save(fig, path)


def plot_trajectories(runs, path) -> Figure:
    fig, ax = plt.subplots(figsize=(6, 4.2))
    labelled = set()
    for r in runs:
        pts = [(c["train_loss"], c["alignment"]) for c in r.get("trajectory", []) if c.get("train_loss", 0) > 0 and c.get("alignment") is not None]
        if not pts:
            continue
        name = r["optimizer"]
        ax.plot(np.log([p[0] for p in pts]), [p[1] for p in pts], "-", color=_colour(name), alpha=0.6, lw=1,
                marker="o", ms=2.5, label=None if name in labelled else name)
        ax.scatter(np.log(pts[-1][0]), pts[-1][1], color=_colour(name), s=14, zorder=3)
        labelled.add(name)
    ax.set_xlabel("log training loss at checkpoint")
    ax.set_ylabel("held-out mean alignment")
    ax.set_title("trajectories in (log loss, alignment) space (dot = last checkpoint)", fontsize=10)
    ax.invert_xaxis()
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, path)


def plot_misalignment_by_optimizer(runs, path, rate_key: str = "misalignment_rate", baseline: dict | None = None,
                                   coherence_floor: float = COHERENCE_FLOOR) -> Figure:
    """Rate per optimiser and spectral coefficient over the coherent runs of the ``baseline``
    condition but for λ (all coherent runs without one): mean over seeds and learning rates."""
    fixed = {k: v for k, v in (baseline or {}).items() if k != "spectral_coef"}
    runs = [r for r in runs if is_coherent(r, coherence_floor) and in_condition(r, fixed)]
    names = _optimizers(runs)
    coefs = sorted({float(r.get("spectral_coef", 0.0)) for r in runs})
    width = 0.8 / max(1, len(coefs))
    fig, ax = plt.subplots(figsize=(6, 4))
    for j, coef in enumerate(coefs):
        means, lows, highs = [], [], []
        for name in names:
            v = [r[rate_key] for r in runs if r["optimizer"] == name and float(r.get("spectral_coef", 0.0)) == coef and r.get(rate_key) is not None]
            m = float(np.mean(v)) if v else np.nan
            means.append(m)
            lows.append(max(0.0, m - min(v)) if v else 0)
            highs.append(max(0.0, max(v) - m) if v else 0)
        x = np.arange(len(names)) + (j - (len(coefs) - 1) / 2) * width
        ax.bar(x, means, width, yerr=[lows, highs], capsize=3, label=f"spectral coef {coef:g}", alpha=0.85)
    ax.set_xticks(np.arange(len(names)), names)
    ax.set_ylabel("held-out misalignment rate" + (" (def. a)" if rate_key == "misalignment_rate" else " (def. b)"))
    where = "coherent runs" + ("" if baseline is None else ", baseline condition but λ")
    ax.set_title(f"misalignment after the narrow fine-tune ({where})\nmean over seeds and learning rates, whiskers min–max", fontsize=9)
    ax.grid(alpha=0.3, axis="y")
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8)
    return _save(fig, path)


def plot_flatness_vs_misalignment(runs, path) -> Figure:
    fig, ax = plt.subplots(figsize=(6, 4))
    for name in _optimizers(runs):
        rows = [r for r in runs if r["optimizer"] == name and r.get("flatness") is not None and r.get("misalignment_rate") is not None]
        ax.scatter([r["flatness"] for r in rows], [r["misalignment_rate"] for r in rows], color=_colour(name), s=20, label=name, alpha=0.8)
    rows = [r for r in runs if r.get("flatness") is not None and r.get("misalignment_rate") is not None]
    rho = spearman([r["flatness"] for r in rows], [r["misalignment_rate"] for r in rows])
    ax.set_xlabel("adapter flatness: mean participation ratio / rank (1 = flat)")
    ax.set_ylabel("held-out misalignment rate")
    ax.set_title(f"flatness vs misalignment (Spearman ρ = {_fmt(rho)})", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, path)


def plot_matched_loss(runs, path, coherence_floor: float = COHERENCE_FLOOR, resamples: int = DEFAULT_RESAMPLES, seed: int = 0,
                      confidence: float = DEFAULT_CONFIDENCE) -> Figure:
    coherent = [r for r in runs if is_coherent(r, coherence_floor)]
    rep = replicates(coherent, resamples, seed)
    conditions = sorted({condition(r) for r in runs}, key=condition_order) or [condition({})]
    curves = list(dict.fromkeys(curve_name(r) for r in runs))
    styles = {}  # one colour per optimiser; its further option sets dashed, dotted, …
    for name in curves:
        base = name.split(" ")[0]
        styles[name] = (_colour(base), ("-", "--", ":", "-.")[sum(1 for other in styles if other.split(" ")[0] == base) % 4])
    fig, axes = plt.subplots(len(conditions), 2, figsize=(10, 3.3 * len(conditions)), squeeze=False)
    for i, cond in enumerate(conditions):
        cells = rep.cells([j for j, r in enumerate(rep.runs) if condition(r) == cond])
        for ax, (d, key) in zip(axes[i], RATE_NAMES.items()):
            for name in curves:
                colour, style = styles[name]
                curve = loss_curve(rep, [idx for k, idx in cells.items() if k[0] == name], d, confidence)
                if curve is not None:
                    ax.fill_between(curve["grid"], curve["lower"], curve["upper"], color=colour, alpha=0.18, lw=0)
                    ax.plot(curve["loss"], curve["rate"], style, color=colour, lw=1.4, label=name)
                mine = [r for r in runs if curve_name(r) == name and condition(r) == cond and r.get(key) is not None and (r.get("final_train_loss") or 0) > 0]
                for hollow in (False, True):
                    rows = [r for r in mine if is_coherent(r, coherence_floor) == (not hollow)]
                    if rows:
                        ax.scatter([r["final_train_loss"] for r in rows], [r[key] for r in rows], s=18, zorder=3, linewidths=1.0,
                                   facecolors="none" if hollow else colour, edgecolors=colour, alpha=0.8)
            ax.set_xscale("log")
            ax.xaxis.set_major_formatter(FormatStrFormatter("%.2g"))
            ax.xaxis.set_minor_formatter(FormatStrFormatter("%.2g"))
            definition = "(a) misaligned among coherent" if d == "a" else "(b) coherent & misaligned among scored"
            ax.set_xlabel("final training loss (log scale)")
            ax.set_ylabel(f"misalignment rate {d}")
            ax.set_title(f"{condition_label(cond)}\n{definition}", fontsize=7)
            ax.grid(alpha=0.3, which="both")
            if d == "a" and ax.get_legend_handles_labels()[0]:
                ax.legend(fontsize=6, loc="upper right", framealpha=0.7)
    fig.suptitle(f"misalignment against final loss: curve through each optimiser's learning rates (seeds pooled),\n"
                 f"{100 * confidence:g} % cluster-bootstrap band; hollow = coherence < {coherence_floor:g}, left out", fontsize=9)
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.45 / fig.get_figheight()))  # room for the two-line title
    return _write(fig, path)


def plot_all(runs, out_dir, coherence_floor: float = COHERENCE_FLOOR, baseline: dict | None = None) -> dict[Path, Figure]:
    """The study's five plots, saved in ``out_dir``: PNG path → the figure drawn into it
    (``coherence_floor``: the runs left out; ``baseline``: the condition of
    :func:`plot_loss_vs_alignment` and :func:`plot_misalignment_by_optimizer`)."""
    out = Path(out_dir)
    plots = {
        "loss_vs_alignment.png": functools.partial(plot_loss_vs_alignment, baseline=baseline, coherence_floor=coherence_floor),
        "trajectories.png": plot_trajectories,
        "misalignment_by_optimizer.png": functools.partial(plot_misalignment_by_optimizer, baseline=baseline, coherence_floor=coherence_floor),
        "flatness_vs_misalignment.png": plot_flatness_vs_misalignment,
        "misalignment_at_matched_loss.png": functools.partial(plot_matched_loss, coherence_floor=coherence_floor),
    }
    return {out / name: plot(runs, out / name) for name, plot in plots.items()}

