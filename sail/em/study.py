"""`sail study em`: the optimiser study on the emergent-misalignment organism.

For every combination of optimiser × learning rate × spectral coefficient × seed, one narrow
fine-tune (:func:`sail.em.finetune.finetune`, the trainer's inner update: ``OptimizerConfig`` and
``SpectralConfig``) is run and evaluated on held-out questions at every checkpoint. Each run's row
records the final training loss, the loss trajectory, alignment at each checkpoint, both
misalignment rates (docs/em_evaluation.md), coherence and the adapter's flatness. Then:

* the ``em`` block: base, control and narrow fine-tune (the first optimiser and learning rate of
  the sweep, spectral penalty off) with bootstrap CIs (:func:`sail.em.protocol.run_em_protocol`);
* the ``analysis`` block (:func:`sail.em.analysis.analyse`): pooled vs optimiser-stratified R² of
  alignment on log final loss, the spread of misalignment across optimisers, flatness against
  misalignment;
* four plots (:mod:`sail.em.study_plots`).

``DIR/results.json`` is rewritten atomically after every run; a study started again on the same
directory skips the runs it already has (same organism and fine-tune settings, see
:func:`_reusable`), so a killed study loses at most one run and an extended sweep (another seed)
runs only its new points.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Literal

from sail.config import FieldError, build, check_choices, load
from sail.em.analysis import analyse
from sail.em.configs import FinetuneConfig
from sail.em.finetune import finetune
from sail.em.organism import OrganismConfig, ensure_base_organism
from sail.em.protocol import run_em_protocol
from sail.io import loads_strict, write_json_atomically


@dataclass
class OrganismSourceConfig:
    """The base policy: a model directory, or the organism built (and cached) from ``seed``."""

    path: str = ""
    """A local model directory (a Qwen3 checkpoint, or any organism directory); empty = the
    cached organism of ``seed`` (built on first use, a few minutes)."""
    seed: int = 0
    """The organism's build seed (when ``path`` is empty)."""
    recipe: Literal["default", "tiny"] = "default"
    """``default`` or ``tiny`` (a seconds-long build, for smoke runs: no EM is expected)."""

    def __post_init__(self):
        check_choices(self)


@dataclass
class SweepConfig:
    """The sweep: every combination of the lists below is one narrow fine-tune."""

    optimizers: list[Literal["adamw", "sgd", "lion", "muon"]] = field(default_factory=lambda: ["adamw", "lion", "muon", "sgd"])
    """Inner-update optimisers (:mod:`sail.optim`)."""
    lrs: dict = field(default_factory=lambda: {"adamw": [1e-3], "lion": [1e-4], "muon": [1e-2], "sgd": [1e-1]})
    """Learning rates per optimiser (their scales differ: Lion 3–10× below AdamW, SGD far above)."""
    spectral_coefs: list[float] = field(default_factory=lambda: [0.0, 1.0])
    """λ of the flatness penalty; 0 = off."""
    seeds: list[int] = field(default_factory=lambda: [0])
    """Seeds of the fine-tunes (data, batch order, adapter, evaluation)."""

    def __post_init__(self):
        for name in self.optimizers:
            if name not in self.lrs or not self.lrs[name]:
                raise FieldError("lrs", f"has no learning rate for optimizer {name!r}")
        if any(c < 0 for c in self.spectral_coefs):
            raise FieldError("spectral_coefs", f"must be >= 0, got {self.spectral_coefs}")
        if not self.seeds:
            raise FieldError("seeds", "must not be empty")

    def points(self) -> list[dict]:
        """Every sweep point (optimiser, lr, spectral coefficient, seed)."""
        return [
            {"optimizer": name, "lr": float(lr), "spectral_coef": float(coef), "seed": int(seed)}
            for name in self.optimizers
            for lr in self.lrs[name]
            for coef in self.spectral_coefs
            for seed in self.seeds
        ]


@dataclass
class StudyConfig:
    """``sail study em``: narrow fine-tunes of the organism, optimiser × penalty × lr × seed."""

    organism: OrganismSourceConfig = field(default_factory=OrganismSourceConfig)
    """The base policy."""
    finetune: FinetuneConfig = field(default_factory=lambda: FinetuneConfig(eval_every=10))
    """The narrow fine-tune every run starts from (its optimiser, spectral and seed are replaced
    by the sweep's); ``eval_every`` sets the checkpoints of the trajectories."""
    sweep: SweepConfig = field(default_factory=SweepConfig)
    """The sweep axes."""
    em_protocol: bool = True
    """Also run base / control / narrow for the ``em`` block."""


def load_study_config(path: str | None = None, overrides: list[str] | None = None) -> StudyConfig:
    return load(StudyConfig, path, overrides)


def base_directory(source: OrganismSourceConfig) -> Path:
    if source.path:
        path = Path(source.path)
        if not path.is_dir():
            raise FileNotFoundError(f"organism.path: no such directory {source.path!r}")
        return path
    recipe = OrganismConfig.tiny() if source.recipe == "tiny" else OrganismConfig.default()
    return Path(ensure_base_organism(seed=source.seed, recipe=recipe))


def run_config(base: FinetuneConfig, run: dict) -> FinetuneConfig:
    """The fine-tune of one sweep point."""
    return replace(
        base,
        optimizer=replace(base.optimizer, name=run["optimizer"], lr=run["lr"]),
        spectral=replace(base.spectral, penalty_weight=run["spectral_coef"], log_every=0),
        seed=run["seed"],
    )


def _loss_near(train_loss: list[float], step: int) -> float | None:
    """Mean training loss over the ⌈step/10⌉ steps before ``step`` (None at step 0)."""
    if step <= 0 or not train_loss:
        return None
    window = max(1, -(-step // 10))
    part = train_loss[max(0, step - window) : step]
    return sum(part) / len(part)


def run_row(run: dict, result) -> dict:
    """One ``runs`` row of results.json from a :class:`~sail.em.finetune.FinetuneResult`."""
    em = result.final_em
    flat = next(r for r in result.flatness if r["kind"] == "all")
    rank = result.config["lora"]["rank"]
    trajectory = [
        {
            "step": e["step"],
            "train_loss": _loss_near(result.train_loss, e["step"]),
            "alignment": e["em"]["mean_alignment"]["mean"],
            "misalignment_rate": e["em"]["misalignment_rate"]["rate"],
            "misalignment_rate_all": e["em"]["misalignment_rate_all"]["rate"],
        }
        for e in result.evals
    ]
    return {
        **run,
        "final_train_loss": result.final_train_loss,
        "heldout_loss": result.heldout_loss,
        "misalignment_rate": em["misalignment_rate"]["rate"],
        "misalignment_rate_ci": em["misalignment_rate"]["ci"],
        "misalignment_rate_all": em["misalignment_rate_all"]["rate"],
        "misalignment_rate_all_ci": em["misalignment_rate_all"]["ci"],
        "alignment": em["mean_alignment"]["mean"],
        "coherence": em["mean_coherence"]["mean"],
        "flatness": flat["participation_ratio"] / rank,
        "participation_ratio": flat["participation_ratio"],
        "loss_trajectory": result.train_loss,
        "trajectory": trajectory,
        "seconds": result.seconds,
    }


def _point(run: dict) -> tuple:
    return (run["optimizer"], run["lr"], run["spectral_coef"], run["seed"])


def _normalised(config: dict) -> dict | None:
    """A saved config read back through :class:`StudyConfig`: keys added to the settings since it
    was written take their defaults (which keep the earlier behaviour); None if it no longer builds."""
    try:
        return json.loads(json.dumps(asdict(build(StudyConfig, config))))
    except (ValueError, TypeError):
        return None


def _reusable(previous: dict, config: dict, points: list[dict]) -> dict:
    """What a study on an existing directory keeps: with the same organism and fine-tune settings,
    every finished run that is still a point of the sweep (so a killed study continues, and a sweep
    extended by seeds, rates or coefficients runs only the new points), and the ``em`` block if it
    was made from the same first point. Anything else starts afresh."""
    fresh = {"config": config, "runs": [], "em": None, "analysis": None}
    old = _normalised(previous.get("config") or {})
    if old is None or {k: v for k, v in old.items() if k != "sweep"} != {k: v for k, v in config.items() if k != "sweep"}:
        return fresh
    wanted = {_point(p) for p in points}
    fresh["runs"] = [r for r in previous.get("runs", []) if _point(r) in wanted]
    em = previous.get("em")
    first = points[0]
    if em and em.get("narrow_run") == {k: first[k] for k in ("optimizer", "lr", "seed")}:
        fresh["em"] = em
    return fresh


def run_study(cfg: StudyConfig, out_dir: str | Path, progress: bool = True) -> dict:
    """Run (or continue) the study into ``out_dir``; returns the results dict."""
    from tqdm.auto import tqdm

    from sail.em.study_plots import plot_all
    from sail.train.console import quiet_third_party

    quiet_third_party()  # one "Loading weights" bar per run would bury the study's own
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "results.json"
    config = json.loads(json.dumps(asdict(cfg)))  # as it reads back from results.json
    results = {"config": config, "runs": [], "em": None, "analysis": None}
    if path.exists():
        results = _reusable(loads_strict(path.read_text()), config, cfg.sweep.points())
    base_dir = base_directory(cfg.organism)
    done = {(r["optimizer"], r["lr"], r["spectral_coef"], r["seed"]) for r in results["runs"]}
    todo = [r for r in cfg.sweep.points() if (r["optimizer"], r["lr"], r["spectral_coef"], r["seed"]) not in done]
    started = time.perf_counter()
    bar = tqdm(total=len(cfg.sweep.points()), initial=len(done), desc="sail study em", disable=not progress)
    for run in todo:
        result = finetune(base_dir, run_config(cfg.finetune, run))
        results["runs"].append(run_row(run, result))
        write_json_atomically(path, results, indent=1, end="")
        rate = results["runs"][-1]["misalignment_rate"]
        bar.set_postfix(opt=run["optimizer"], misaligned="n/a" if rate is None else f"{rate:.2f}")
        bar.update(1)
    bar.close()
    if cfg.em_protocol and results.get("em") is None:
        first = cfg.sweep.points()[0]
        narrow = run_config(cfg.finetune, {**first, "spectral_coef": 0.0})
        em = run_em_protocol(base_dir, narrow, keep_curves=False)
        keep = ("base_rate", "control_rate", "narrow_rate", "base_rate_all", "control_rate_all", "narrow_rate_all",
                "emerged", "emerged_all", "coherence", "alignment", "questions", "settings", "seconds")
        results["em"] = {k: em[k] for k in keep}
        results["em"]["narrow_run"] = {k: first[k] for k in ("optimizer", "lr", "seed")}
    results["analysis"] = analyse(results["runs"])
    results["plots"] = [p.name for p in plot_all(results["runs"], out)]
    results["seconds_this_process"] = round(time.perf_counter() - started, 1)
    results["base_dir"] = str(base_dir)
    write_json_atomically(path, results, indent=1, end="")
    return results


def summary_lines(results: dict) -> list[str]:
    """A short human-readable report of a finished study."""
    lines = []
    em = results.get("em")
    if em:
        def fmt(e):
            return f"{e['rate']:.3f} [{e['ci'][0]:.3f}, {e['ci'][1]:.3f}]" if e["rate"] is not None and e["ci"] else "n/a"

        lines.append(f"EM (def. a): base {fmt(em['base_rate'])}, control {fmt(em['control_rate'])}, narrow {fmt(em['narrow_rate'])}; emerged: {em['emerged']}")
    a = results["analysis"]
    r2p, r2s = a["r2_pooled"], a["r2_stratified"]
    lines.append(f"alignment ~ log loss: R² pooled {r2p if r2p is None else round(r2p, 3)}, optimiser-stratified {r2s if r2s is None else round(r2s, 3)}")
    for name, s in a["spread"]["per_optimizer"].items():
        lines.append(f"  {name:6s} misalignment mean {s['mean']:.3f} (min {s['min']:.3f}, max {s['max']:.3f}, {s['n']} runs)")
    if a["spread"]["max_over_min"]:
        lines.append(f"spread across optimisers: max/min of means {a['spread']['max_over_min']:.2f}")
    lines.append(f"misalignment by spectral coefficient: {a['misalignment_by_spectral_coef']}")
    lines.append(f"flatness vs misalignment, Spearman ρ: {a['flatness_vs_misalignment_spearman']}")
    return lines
