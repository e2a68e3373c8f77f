"""The realignment study's plots (PNG), from ``results.json``'s ``runs`` rows.

* :func:`plot_realignment_curves`: one column per method; rows are held-out misalignment
  (definition a), KL(π‖π_ref) and judge reward against the training step; colour = optimiser,
  dashed = flatness penalty on; the KL axis is linear up to 1 and logarithmic above, so a diverged
  run (KL in the hundreds) and the realigning ones fit on one panel;
* :func:`plot_misalignment_vs_kl`: final misalignment against final KL to the reference, one
  marker per method, colour per optimiser, hollow = penalty on (the lower left is better: less
  misalignment for less movement away from the reference). A run with no coherent answer at the
  end has no misalignment rate (definition a, docs/em_evaluation.md): it is listed under the axes as diverged;
* :func:`plot_gamma_frontier` (when γ is swept): final misalignment against KL(π_ref‖π_θ), the
  divergence the objective penalises, and against KL(π_θ‖π_ref), one colour per γ and one marker
  per inner update.

Each function saves its PNG and returns the matplotlib ``Figure`` (closed), whose artists hold the
data drawn.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

from matplotlib.figure import Figure

from sail.em.analysis import diverged
from sail.em.study_plots import _colour, _distinct, _optimizers, _save, _write, plt

METHOD_LABELS = {"sail-revkl": "SAIL-RevKL", "sail": "vanilla SAIL", "online-dpo": "online DPO"}
METHOD_MARKERS = {"sail-revkl": "o", "sail": "s", "online-dpo": "^"}


def _label(r, with_method: bool = False) -> str:
    text = f"{r['optimizer']} lr {r['lr']:g}" + (f", λ={r['spectral_coef']:g}" if r["spectral_coef"] else "")
    return f"{METHOD_LABELS.get(r['method'], r['method'])}, {text}" if with_method else text


def _lr_marker(runs, r) -> str:
    """One marker per learning rate of an optimiser (o, x, ^, ...), so two SGD rates differ."""
    lrs = sorted({q["lr"] for q in runs if q["optimizer"] == r["optimizer"]})
    return "ox^vsd"[lrs.index(r["lr"]) % 6]


def _symlog_kl_axis(ax, values) -> None:
    """Linear on [0, 1] (where realigning runs stay), logarithmic above (diverged runs)."""
    ax.set_yscale("symlog", linthresh=1.0, linscale=2.0)
    top = max(values, default=1.0)
    ticks = [0, 0.25, 0.5, 0.75, 1.0] + [10.0**k for k in range(1, 6) if 10.0 ** (k - 1) < top]
    ax.set_yticks(ticks)
    ax.set_yticklabels([f"{t:g}" for t in ticks])


def plot_realignment_curves(runs, path) -> Figure:
    methods = _distinct(runs, "method")
    panels = [("misalignment_rate", "misalignment rate (def. a)"), ("kl", "KL(π‖π_ref), held-out"), ("reward", "judge reward, held-out")]
    fig, axes = plt.subplots(len(panels), len(methods), figsize=(max(9.0, 4.2 * len(methods)), 2.7 * len(panels)), squeeze=False, sharey="row")
    for j, method in enumerate(methods):
        labelled: set[str] = set()  # one legend entry per setting, not per seed
        for r in (r for r in runs if r["method"] == method):
            first_seed = _label(r) not in labelled
            labelled.add(_label(r))
            for i, (key, title) in enumerate(panels):
                points = [(c["step"], c[key]) for c in r["curve"] if c[key] is not None]
                axes[i, j].plot(*zip(*points), color=_colour(r["optimizer"]), ls="--" if r["spectral_coef"] else "-",
                                marker=_lr_marker(runs, r), ms=3, lw=1.2, alpha=0.85, label=_label(r) if first_seed and i == 0 else None)
        axes[0, j].set_title(METHOD_LABELS.get(method, method), fontsize=11)
        _symlog_kl_axis(axes[1, j], [c["kl"] for r in runs for c in r["curve"] if c["kl"] is not None])
        for i, (_, title) in enumerate(panels):
            axes[i, j].grid(alpha=0.3)
            axes[i, 0].set_ylabel(title, fontsize=9)
            axes[-1, j].set_xlabel("step")
    handles, labels = axes[0, 0].get_legend_handles_labels()
    fig.suptitle("realigning the emergent-misaligned organism: method × inner update (dashed: flatness penalty)", fontsize=11)
    fig.tight_layout(rect=(0, 0.08, 1, 0.97))
    fig.legend(handles, labels, loc="lower center", ncol=min(4, max(1, len(labels))), fontsize=8, frameon=False)
    return _write(fig, path)


def plot_misalignment_vs_kl(runs, path) -> Figure:
    fig, ax = plt.subplots(figsize=(6.4, 4.8))
    unplotted = [r for r in runs if r["misalignment_rate"] is None or r["kl"] is None]
    for r in runs:
        if r in unplotted:
            continue
        colour = _colour(r["optimizer"])
        ax.scatter(r["kl"], r["misalignment_rate"], marker=METHOD_MARKERS.get(r["method"], "D"), s=46,
                   facecolors="none" if r["spectral_coef"] else colour, edgecolors=colour, linewidths=1.4)
    start = [r["misalignment_rate_start"] for r in runs if r["misalignment_rate_start"] is not None]
    if start:
        ax.axhline(start[0], color="k", lw=0.8, ls=":", label=f"misaligned start ({start[0]:.3f})")
    for method in _distinct(runs, "method"):
        ax.scatter([], [], marker=METHOD_MARKERS.get(method, "D"), color="0.4", label=METHOD_LABELS.get(method, method))
    for name in _optimizers(runs):
        ax.scatter([], [], marker="s", color=_colour(name), label=name)
    ax.scatter([], [], marker="o", facecolors="none", edgecolors="0.4", label="flatness penalty on")
    ax.set_xlabel("final KL(π‖π_ref), held-out")
    ax.set_ylabel("final misalignment rate (def. a)")
    ax.set_title("realignment: misalignment left vs distance moved", fontsize=11)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="upper right", ncol=2)
    if unplotted:
        names = "; ".join(dict.fromkeys(_label(r) for r in unplotted))
        ax.set_xlabel(f"final KL(π‖π_ref), held-out\nnot shown: {len(unplotted)} diverged runs (no coherent answer at the end)\n{names}")
    return _save(fig, path)


def plot_gamma_frontier(runs, path) -> Figure:
    gammas = sorted({r["gamma"] for r in runs})
    updates = list(dict.fromkeys((r["optimizer"], r["lr"]) for r in runs))
    cmap = plt.get_cmap("viridis")
    colour = {g: cmap(i / max(1, len(gammas) - 1)) for i, g in enumerate(gammas)}
    fig, axes = plt.subplots(1, 2, figsize=(11.0, 5.4), sharey=True)
    panels = [("kl_ref_to_policy", "final KL(π_ref‖π_θ), held-out (penalised)"), ("kl", "final KL(π_θ‖π_ref), held-out")]
    lost = [r for r in runs if diverged(r)]
    for ax, (key, title) in zip(axes, panels):
        for r in runs:
            if r in lost or r.get(key) is None:
                continue
            ax.scatter(r[key], r["misalignment_rate"], color=colour[r["gamma"]], s=40,
                       marker="ox^vsdP*"[updates.index((r["optimizer"], r["lr"])) % 8], alpha=0.85)
        start = [r["misalignment_rate_start"] for r in runs if r["misalignment_rate_start"] is not None]
        if start:  # the step-0 evaluation differs by seed: the mean
            mean_start = sum(start) / len(start)
            ax.axhline(mean_start, color="k", lw=0.8, ls=":", label=f"misaligned start, mean ({mean_start:.3f})" if key == "kl" else None)
        ax.set_xscale("log")
        ax.set_xlabel(title)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("final misalignment rate (def. a)")
    for g in gammas:
        axes[1].scatter([], [], color=colour[g], marker="s", label=f"γ = {g:g}")
    for i, (optimizer, lr) in enumerate(updates):
        axes[1].scatter([], [], color="0.4", marker="ox^vsdP*"[i % 8], label=f"{optimizer} lr {lr:g}")
    axes[1].legend(fontsize=7, loc="upper right")
    fig.suptitle("does the KL term keep SAIL stable? misalignment against the distance moved, per γ", fontsize=11)
    if lost:
        counts = {}
        for r in lost:
            key = f"{r['optimizer']} lr {r['lr']:g}, γ = {r['gamma']:g}"
            counts[key] = counts.get(key, 0) + 1
        text = "; ".join(f"{k}: {n}" for k, n in counts.items())
        fig.text(0.5, 0.01, "\n".join(textwrap.wrap(f"not shown, diverged (mean held-out coherence below 50 at the end, or none coherent): {text}", 160)), ha="center", fontsize=7)
    fig.tight_layout(rect=(0, 0.1, 1, 0.95))
    return _write(fig, path)  # not _save: its tight_layout would pull the axes over the footnote


def plot_all(runs, out_dir) -> dict[Path, Figure]:
    """The study's plots, saved in ``out_dir`` (the γ frontier when γ is swept): PNG path → figure."""
    out = Path(out_dir)
    plots = {"realignment_curves.png": plot_realignment_curves, "misalignment_vs_kl.png": plot_misalignment_vs_kl}
    if len({r.get("gamma") for r in runs}) > 1:
        plots["gamma_frontier.png"] = plot_gamma_frontier
    return {out / name: plot(runs, out / name) for name, plot in plots.items()}
