"""PNG figures for the checkers: convergence rate, curvature against γ, samples against 1/ε."""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import matplotlib.ticker  # noqa: E402
import numpy as np  # noqa: E402


def _save(fig, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_rate(report: dict, path: Path) -> Path:
    """Gap J_γ* − J_γ(θ_k) on a log scale with the rate lines gap₀(1 − μ/L̂)^k."""
    gaps = np.asarray(report["gap_trajectory"])
    k = np.arange(gaps.size)
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    positive = gaps > 0
    ax.semilogy(k[positive], gaps[positive], "o-", ms=2.5, lw=1.2, label="projected ascent, η = 1/L̂")
    L = report["smoothness_hat"]
    for mu, style, name in [
        (report["pl_mu_hat"], "--", "bound (1 − μ̂/L̂)^k"),
        (report["theory"]["mu"], ":", "template μ = γλ_F − M"),
    ]:
        if isinstance(mu, (int, float)) and math.isfinite(mu) and 0 < mu < L:
            ax.semilogy(k, gaps[0] * (1 - mu / L) ** k, style, lw=1.5, label=f"{name}, μ={mu:.3g}")
    slope = report["rate_slope"]
    ax.set_title(f"Linear rate: fitted slope {slope:.4g} vs bound {report['rate_slope_bound']:.4g}")
    ax.set_xlabel("iteration k")
    ax.set_ylabel("J_γ* − J_γ(θ_k)")
    floor = max(gaps[positive].min() if positive.any() else 1e-16, 1e-16)
    ax.set_ylim(bottom=floor / 3)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, path)


def plot_gamma_scan(report: dict, path: Path) -> Path:
    """max_θ λ_max(∇²J_γ) against γ, with the template's upper bounds M − γλ_F."""
    curve = report["curve"]
    gammas = np.asarray(curve["gamma"])
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    ax.plot(gammas, curve["max_hessian_eig"], "o-", ms=3, label="max λ_max(∇²J_γ) over the ball (searched)")
    ax.plot(gammas, curve["template_bound"], "--", label="template M − γλ_F")
    ax.axhline(0.0, color="k", lw=0.8)
    gc = report["gamma_c_empirical"]
    if isinstance(gc, (int, float)) and math.isfinite(gc):
        ax.axvline(gc, color="C2", ls=":", label=f"empirical γ_c = {gc:.3g}")
    gt = report["gamma_c_theory"]
    if isinstance(gt, (int, float)) and math.isfinite(gt) and gt <= gammas.max():
        ax.axvline(gt, color="C1", ls=":", label=f"template γ_c = M/λ_F = {gt:.3g}")
    ax.set_xlabel("γ")
    ax.set_ylabel("largest Hessian eigenvalue")
    explicit_gc = report["gamma_c_explicit"]
    ax.set_title(f"Curvature vs γ (explicit-bound γ_c = {explicit_gc:.3g})", fontsize=10)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, path)


def plot_sample_complexity(report: dict, path: Path) -> Path:
    """Samples to reach E[gap] ≤ ε against 1/ε (log-log): per seed, their geometric mean with the
    fitted slope and its CI, and slope-1, ε⁻¹log(Δ₀/ε) and ε⁻² references through the first point."""
    eps = np.asarray(report["epsilons"])
    samples = np.array([np.nan if s is None else s for s in report["samples"]], dtype=float)
    ok = np.isfinite(samples)
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for row in report.get("samples_by_seed", []):
        per_seed = np.array([np.nan if s is None else s for s in row], dtype=float)
        ax.loglog(1 / eps, per_seed, ".", color="0.6", ms=4)
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
    ax.set_xlabel("1/ε")
    ax.set_ylabel("labelled pairs to reach E[gap] ≤ ε")
    ax.set_title("Samples of constant-step SGD, best constant batch", fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, path)
