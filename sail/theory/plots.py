"""PNG figures for the checkers: convergence rate, curvature against γ, samples against 1/ε.

Each ``*_figure(report)`` builds the :class:`~matplotlib.figure.Figure` from the report alone;
``plot_*(report, path)`` saves it (:func:`save_figure`). The figures are plain ``Figure`` objects,
outside pyplot's global state.
"""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib.ticker
import numpy as np
from matplotlib.figure import Figure

from sail.plotting import finish_axes, save_figure

FIGSIZE = (6.4, 4.2)


def is_finite_number(x) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x)


def rate_figure(report: dict) -> Figure:
    """Gap J_γ* − J_γ(θ_k) on a log scale (line 0, its positive entries) with the rate lines
    gap₀(1 − μ/L̂)^k for μ̂ and the template μ (the next lines, each where 0 < μ < L̂)."""
    gaps = np.asarray(report["gap_trajectory"])
    k = np.arange(gaps.size)
    fig = Figure(figsize=FIGSIZE)
    ax = fig.add_subplot()
    positive = gaps > 0
    ax.semilogy(k[positive], gaps[positive], "o-", ms=2.5, lw=1.2, label="projected ascent, η = 1/L̂")
    L = report["smoothness_hat"]
    for mu, style, name in [
        (report["pl_mu_hat"], "--", "bound (1 − μ̂/L̂)^k"),
        (report["theory"]["mu"], ":", "template μ = γλ_F − M"),
    ]:
        if is_finite_number(mu) and 0 < mu < L:
            ax.semilogy(k, gaps[0] * (1 - mu / L) ** k, style, lw=1.5, label=f"{name}, μ={mu:.3g}")
    slope = report["rate_slope"]
    title = f"Linear rate: fitted slope {slope:.4g} vs bound {report['rate_slope_bound']:.4g}"
    floor = max(gaps[positive].min() if positive.any() else 1e-16, 1e-16)
    ax.set_ylim(bottom=floor / 3)
    finish_axes(ax, "iteration k", "J_γ* − J_γ(θ_k)", title)
    return fig


def gamma_scan_figure(report: dict) -> Figure:
    """max_θ λ_max(∇²J_γ) against γ (line 0), the template's upper bounds M − γλ_F (line 1), the
    zero line, and vertical lines at the empirical and template γ_c where finite."""
    curve = report["curve"]
    gammas = np.asarray(curve["gamma"])
    fig = Figure(figsize=FIGSIZE)
    ax = fig.add_subplot()
    ax.plot(gammas, curve["max_hessian_eig"], "o-", ms=3, label="max λ_max(∇²J_γ) over the ball (searched)")
    ax.plot(gammas, curve["template_bound"], "--", label="template M − γλ_F")
    ax.axhline(0.0, color="k", lw=0.8)
    gc = report["gamma_c_empirical"]
    if is_finite_number(gc):
        ax.axvline(gc, color="C2", ls=":", label=f"empirical γ_c = {gc:.3g}")
    gt = report["gamma_c_theory"]
    if is_finite_number(gt) and gt <= gammas.max():
        ax.axvline(gt, color="C1", ls=":", label=f"template γ_c = M/λ_F = {gt:.3g}")
    title = f"Curvature vs γ (explicit-bound γ_c = {report['gamma_c_explicit']:.3g})"
    finish_axes(ax, "γ", "largest Hessian eigenvalue", title, title_size=10, grid="major")
    return fig


def _samples(values) -> np.ndarray:
    return np.array([np.nan if s is None else s for s in values], dtype=float)


def sample_complexity_figure(report: dict) -> Figure:
    """Samples to reach E[gap] ≤ ε against 1/ε (log-log): per seed (the first lines, grey dots),
    their geometric mean with the fitted slope and its CI, and slope-1, ε⁻¹log(Δ₀/ε) and ε⁻²
    references through the first point."""
    eps = np.asarray(report["epsilons"])
    samples = _samples(report["samples"])
    ok = np.isfinite(samples)
    fig = Figure(figsize=FIGSIZE)
    ax = fig.add_subplot()
    for row in report.get("samples_by_seed", []):
        ax.loglog(1 / eps, _samples(row), ".", color="0.6", ms=4)
    slope, ci = report["slope"], report.get("slope_ci95")
    label = "measured, geometric mean over seeds"
    if slope is not None:
        label += f" (slope {slope:.3g}" + (f", 95% CI [{ci[0]:.3g}, {ci[1]:.3g}])" if ci else ")")
    ax.loglog(1 / eps[ok], samples[ok], "o-", label=label)
    if ok.sum() >= 1:
        i = int(np.nonzero(ok)[0][0])
        ref = samples[i] * (eps[i] / eps)
        ax.loglog(1 / eps, ref, "--", label="slope 1 reference")
        logc = samples[i] * (eps[i] / eps) * np.log(report["gap0"] / eps) / np.log(report["gap0"] / eps[i])
        ax.loglog(1 / eps, logc, ":", label="ε⁻¹ log(Δ₀/ε) reference")
        ax.loglog(1 / eps, samples[i] * (eps[i] / eps) ** 2, "-.", label="ε⁻² reference")
    ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    title = "Samples of constant-step SGD, best constant batch"
    finish_axes(ax, "1/ε", "labelled pairs to reach E[gap] ≤ ε", title, title_size=10)
    return fig


def plot_rate(report: dict, path: Path) -> Path:
    return save_figure(rate_figure(report), path)


def plot_gamma_scan(report: dict, path: Path) -> Path:
    return save_figure(gamma_scan_figure(report), path)


def plot_sample_complexity(report: dict, path: Path) -> Path:
    return save_figure(sample_complexity_figure(report), path)
