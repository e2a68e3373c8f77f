"""`sail study realign`: realigning the emergent-misaligned policy, method × inner update.

Every run is one ``sail train`` run (:class:`sail.train.trainer.Trainer`, the same objective,
estimator and loop as everywhere else) on the misaligned policy, with the judge as the oracle:

* methods: ``sail-revkl`` (the train config's objective, γ > 0: reverse-KL penalty to the
  reference), ``sail`` (vanilla SAIL, γ = 0) and ``online-dpo`` (no score term);
* inner update: optimiser (learning rate per optimiser) × flatness-penalty coefficient λ × seed;
* optionally the KL weight γ (``gammas``) and the projection radius R (``radii``): the γ study asks
  whether the KL term keeps SAIL stable where vanilla SAIL (γ = 0) diverges.

Each run lives in ``DIR/runs/<name>/`` (config, metrics.jsonl, checkpoints, summary.json), its row in
``DIR/points/<name>.json``, written under a lock of its own (:mod:`sail.em.sweep_runner`), so that
several processes (``--workers``, ``--shard i/n``) share a directory without training a run twice. A
study started again on the same directory skips finished runs and resumes a killed run exactly from
its last checkpoint (the trainer's ``--resume``); a run directory written with a different config
is an error, never overwritten. ``DIR/results.json`` (merged from the per-point files, atomically
and under a directory lock, after every run and at the end) holds:

* ``runs``: per run, its sweep point, misalignment (definitions a and b, docs/em_evaluation.md), alignment,
  coherence, judge reward, win rate and KL(π‖π_ref) at the end, and the curve of all of them
  against the training step;
* ``analysis`` (:func:`analyse_realignment`): per method, per optimiser and per penalty setting,
  the mean final misalignment and KL; the optimiser spread (max/min of per-optimiser means) within
  each method; the paired penalty effect m(λ) − m(0) at equal method, optimiser and seed;
* two plots (:mod:`sail.em.realign_plots`): the curves per method, and final misalignment against
  KL to the reference.
"""

from __future__ import annotations

import json
import math
import sys
import time
import warnings
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

from sail.config import FieldError, build, load, load_yaml, merge
from sail.em.analysis import diverged
from sail.em.recipes import REALIGN
from sail.em.sweep_runner import Task, directory_lock, parse_shard, read_record, run_tasks, shard
from sail.io import loads_strict, write_json_atomically
from sail.train.checkpoint import find_checkpoint
from sail.train.config import TrainConfig
from sail.train.errors import TrainingError
from sail.train.run_dir import CONFIG_FILE, clear_run_dir, read_run_config
from sail.train.trainer import Trainer

METHODS = {
    "sail-revkl": {},
    "sail": {"objective": {"gamma": 0.0}},
    "online-dpo": {"objective": {"score_term": False}},
}
"""Each method as overrides of the train config's ``objective`` (SAIL-RevKL keeps it as given)."""

CURVE_KEYS = {
    "misalignment_rate": "eval/misalignment_rate",
    "misalignment_rate_all": "eval/misalignment_rate_all",
    "alignment": "eval/alignment",
    "coherence": "eval/coherence",
    "reward": "eval/reward_mean",
    "win_rate": "eval/win_rate_vs_reference",
    "kl": "eval/kl_policy_to_ref",
    "kl_ref_to_policy": "eval/kl_ref_to_policy",
}
"""``runs`` row key → the trainer's evaluation key."""


@dataclass
class RealignSweepConfig:
    """The sweep: every combination of the lists below is one ``sail train`` run."""

    methods: list[Literal["sail-revkl", "sail", "online-dpo"]] = field(default_factory=lambda: list(METHODS))
    """``sail-revkl`` (the recipe's objective), ``sail`` (vanilla SAIL, γ = 0), ``online-dpo`` (no score term)."""
    optimizers: list[Literal["adamw", "adam", "sgd", "lion", "muon"]] = field(default_factory=lambda: ["adamw", "lion", "muon", "sgd"])
    """Inner-update optimisers (:mod:`sail.optim`)."""
    lrs: dict = field(default_factory=lambda: {"adamw": [1e-3], "lion": [3e-4], "muon": [1e-3], "sgd": [0.1]})
    """Learning rates per optimiser (see docs/em_study.md for how the defaults were chosen)."""
    spectral_coefs: list[float] = field(default_factory=lambda: [0.0, 1.0])
    """λ of the flatness penalty on the adapter (``spectral.penalty_weight``); 0 = off."""
    seeds: list[int] = field(default_factory=lambda: [0])
    """``run.seed`` of each run."""
    gammas: list[float] = field(default_factory=list)
    """KL weights γ to sweep for ``sail-revkl`` (γ = 0 is vanilla SAIL); empty: the train config's γ."""
    radii: list[float | None] = field(default_factory=lambda: [None])
    """Radii R of the ball ‖θ − θ₀‖ ≤ R (``objective.radius``); null: unconstrained."""
    lr_gamma_scales: list[float] = field(default_factory=lambda: [0.0])
    """γ-aware step sizes c: each run's learning rate is lr/(1 + c·γ), the step η ∝ 1/L_γ of the
    theory with L_γ = L_J + γ·L_KL and c standing for L_KL/L_J; 0 keeps lr whatever γ."""

    def __post_init__(self):
        if self.gammas and "sail" in self.methods:
            raise FieldError("gammas", "vanilla SAIL is γ = 0 on the γ axis; drop method 'sail' from methods")
        if any(not 0 <= g < math.inf for g in self.gammas):
            raise FieldError("gammas", f"must be finite and >= 0, got {self.gammas}")
        if not self.radii or any(r is not None and not 0 < r < math.inf for r in self.radii):
            raise FieldError("radii", f"must be a non-empty list of null or finite numbers > 0, got {self.radii}")
        if not self.lr_gamma_scales or any(not 0 <= c < math.inf for c in self.lr_gamma_scales):
            raise FieldError("lr_gamma_scales", f"must be a non-empty list of finite numbers >= 0, got {self.lr_gamma_scales}")
        if any(c > 0 for c in self.lr_gamma_scales) and not self.gammas:
            raise FieldError("lr_gamma_scales", "> 0 needs the gammas axis")
        for name in ("methods", "optimizers", "spectral_coefs", "seeds"):
            if not getattr(self, name):
                raise FieldError(name, "must not be empty")
        for name in self.optimizers:
            if not self.lrs.get(name):
                raise FieldError("lrs", f"has no learning rate for optimizer {name!r}")
            if any(not float(lr) > 0 for lr in self.lrs[name]):
                raise FieldError(f"lrs.{name}", f"must be > 0, got {self.lrs[name]}")
        if any(c < 0 for c in self.spectral_coefs):
            raise FieldError("spectral_coefs", f"must be >= 0, got {self.spectral_coefs}")

    def points(self) -> list[dict]:
        """Every sweep point; ``gamma`` and ``radius`` are None when not swept (the config's), and
        ``lr`` is the base rate before the γ-aware scaling ``lr_gamma_scale``."""
        return [
            {"method": m, "optimizer": o, "lr": float(lr), "spectral_coef": float(c), "seed": int(s), "gamma": g, "radius": r,
             "lr_gamma_scale": float(k)}
            for m in self.methods
            for g in (self.gammas or [None])
            for r in self.radii
            for k in self.lr_gamma_scales
            for o in self.optimizers
            for lr in self.lrs[o]
            for c in self.spectral_coefs
            for s in self.seeds
        ]


@dataclass
class RealignStudyConfig:
    """``sail study realign``: a sweep of ``sail train`` runs on the recipe ``em-realign``."""

    train: dict = field(default_factory=dict)
    """Overrides of the ``sail train`` recipe ``em-realign`` (sail/em/recipes/realign.yaml) that every
    run starts from (same keys as a train YAML; empty: the recipe itself, which realigns the misaligned
    organism with the judge as the oracle)."""
    sweep: RealignSweepConfig = field(default_factory=RealignSweepConfig)
    """The sweep axes."""

    def __post_init__(self):
        for point in self.sweep.points():  # every run's config is valid before the first starts
            train_config(self.train, point)


def load_realign_config(path: str | None = None, overrides: list[str] | None = None) -> RealignStudyConfig:
    return load(RealignStudyConfig, path, overrides)


def run_name(point: dict) -> str:
    name = f"{point['method']}-{point['optimizer']}-lr{point['lr']:g}-pen{point['spectral_coef']:g}-seed{point['seed']}"
    if point.get("gamma") is not None:
        name += f"-gamma{point['gamma']:g}"
    if point.get("radius") is not None:
        name += f"-R{point['radius']:g}"
    if point.get("lr_gamma_scale"):
        name += f"-lrscale{point['lr_gamma_scale']:g}"
    return name


def effective_lr(point: dict) -> float:
    """lr/(1 + c·γ) for the γ-aware arm (c = ``lr_gamma_scale``), else lr."""
    scale, gamma = point.get("lr_gamma_scale") or 0.0, point.get("gamma") or 0.0
    return point["lr"] / (1.0 + scale * gamma)


def train_config(overrides: dict, point: dict) -> TrainConfig:
    """The :class:`~sail.train.config.TrainConfig` of one sweep point: the recipe ← ``overrides`` ←
    the method's objective ← optimiser, learning rate, penalty and seed."""
    data = merge(merge(load_yaml(REALIGN), overrides), METHODS[point["method"]])
    data = merge(data, {
        "optimizer": {"name": point["optimizer"], "lr": effective_lr(point)},
        "spectral": {"penalty_weight": point["spectral_coef"]},
        "run": {"seed": point["seed"], "progress": False},
    })
    for key in ("gamma", "radius"):
        if point.get(key) is not None:
            data = merge(data, {"objective": {key: point[key]}})
    return build(TrainConfig, data, prefix="train")


COSMETIC = ("progress", "tensorboard", "wandb", "wandb_project", "wandb_run_name", "save_every", "save_total_limit", "completions_per_eval")
"""``run.*`` keys that do not change a run's results (a finished or half-done run is reused whatever
they are: resuming is exact from any checkpoint, so the checkpoint cadence is one of them)."""


def _comparable(config: dict) -> dict:
    return {**config, "run": {k: v for k, v in config["run"].items() if k not in COSMETIC}}


def _saved_config(run_dir: Path) -> dict | None:
    """The run directory's config read back through the typed loader (:mod:`sail.train.run_dir`):
    older formats migrated, fields added since at their defaults, deprecated names at their new ones
    (``kl_estimator: exact``)."""
    if not (run_dir / CONFIG_FILE).is_file():
        return None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        return json.loads(json.dumps(asdict(read_run_config(run_dir, key=str(run_dir)))))


def _finished_summary(run_dir: Path, steps: int) -> dict | None:
    """The run's summary when it finished ``steps`` steps (``summary.json`` is written atomically)."""
    path = run_dir / "summary.json"
    if not path.is_file():
        return None
    summary = loads_strict(path.read_text())
    return summary if summary.get("steps") == steps else None


def train_run(cfg, run_dir: Path) -> dict:
    """Run (or finish, or just read) one training run in ``run_dir``; returns its summary. A run with
    this config resumes from its newest checkpoint that verifies; one that has none (killed before
    its first save) is deleted and started afresh, saying so. A fresh run never starts in a
    directory that holds anything else."""
    saved = _saved_config(run_dir)
    if saved is not None and _comparable(saved) != _comparable(json.loads(json.dumps(asdict(cfg)))):
        raise TrainingError(f"{run_dir} holds a run with a different config; remove it or choose another --output-dir")
    summary = _finished_summary(run_dir, cfg.run.steps)
    if summary is not None:
        return summary
    if saved is not None and find_checkpoint(run_dir) is not None:
        return Trainer(cfg, run_dir, resume=True).run()
    if run_dir.is_dir() and any(run_dir.iterdir()):
        if saved is None:
            raise TrainingError(f"{run_dir} is not empty and holds no sail run; remove it or choose another --output-dir")
        print(f"sail study realign: {run_dir} holds this run unfinished and no checkpoint that verifies: restarting it from scratch", file=sys.stderr)
        clear_run_dir(run_dir)
    return Trainer(cfg, run_dir).run()


def run_row(point: dict, summary: dict, run_dir: str, objective=None) -> dict:
    """One ``runs`` row of results.json from a trainer summary; ``gamma``, ``radius`` and
    ``estimator`` are the run's own (from its ``objective``)."""
    curve = [{"step": e["step"], **{k: e.get(key) for k, key in CURVE_KEYS.items()}} for e in summary["evals"]]
    first, last = curve[0], curve[-1]
    explicit = {}
    if objective is not None:
        explicit = {"gamma": objective.gamma, "radius": objective.radius, "estimator": objective.kl_estimator}
    return {
        **point,
        **explicit,
        "run_dir": run_dir,
        **{f"{k}_start": first[k] for k in ("misalignment_rate", "misalignment_rate_all", "alignment")},
        **{k: last[k] for k in CURVE_KEYS},
        "curve": curve,
        "seconds": summary.get("seconds_this_process"),
    }


def _mean(values) -> float | None:
    values = [v for v in values if v is not None and math.isfinite(v)]
    return sum(values) / len(values) if values else None


def _group_means(runs, key) -> dict:
    groups = defaultdict(list)
    for r in runs:
        groups[r[key]].append(r)
    return {
        str(g): {
            "misalignment_rate": _mean(r["misalignment_rate"] for r in rs),
            "misalignment_rate_all": _mean(r["misalignment_rate_all"] for r in rs),
            "kl": _mean(r["kl"] for r in rs),
            "n": len(rs),
        }
        for g, rs in groups.items()
    }


def analyse_realignment(runs: list[dict]) -> dict:
    """Means of final misalignment and KL by method, by optimiser within each method and by
    penalty; the optimiser spread max/min within each method; the paired penalty effect
    m(λ) − m(0) and KL(λ) − KL(0) at equal method, optimiser, learning rate and seed (means over
    the pairs in which neither run diverged, i.e. both still have coherent answers)."""
    by_method = defaultdict(list)
    for r in runs:
        by_method[r["method"]].append(r)
    per_method_optimizer = {m: _group_means(rs, "optimizer") for m, rs in by_method.items()}
    spread = {}
    for m, groups in per_method_optimizer.items():
        means = [g["misalignment_rate"] for g in groups.values() if g["misalignment_rate"] is not None]
        spread[m] = max(means) / min(means) if len(means) > 1 and min(means) > 0 else None
    off = {(r["method"], r["optimizer"], r["lr"], r["seed"]): r for r in runs if r["spectral_coef"] == 0}
    penalty_effect = defaultdict(list)
    for r in runs:
        pair = off.get((r["method"], r["optimizer"], r["lr"], r["seed"]))
        if r["spectral_coef"] > 0 and pair is not None:
            rates = (r["misalignment_rate"], pair["misalignment_rate"])
            penalty_effect[str(r["spectral_coef"])].append({
                "method": r["method"], "optimizer": r["optimizer"], "seed": r["seed"],
                "delta_misalignment": None if None in rates else rates[0] - rates[1],
                "delta_kl": r["kl"] - pair["kl"],
            })
    return {
        "start_misalignment_rate": _mean(r["misalignment_rate_start"] for r in runs),
        "by_gamma": analyse_gamma(runs),
        "by_method": _group_means(runs, "method"),
        "by_optimizer": _group_means(runs, "optimizer"),
        "by_spectral_coef": _group_means(runs, "spectral_coef"),
        "by_method_optimizer": per_method_optimizer,
        "optimizer_spread": spread,
        "penalty_effect": {
            coef: {"mean_delta_misalignment": _mean(d["delta_misalignment"] for d in ds),
                   # over the pairs where neither run diverged (a diverged run's KL is in the hundreds)
                   "mean_delta_kl": _mean(d["delta_kl"] for d in ds if d["delta_misalignment"] is not None),
                   "pairs_with_a_diverged_run": sum(d["delta_misalignment"] is None for d in ds),
                   "lower_misalignment": sum(d["delta_misalignment"] is not None and d["delta_misalignment"] < 0 for d in ds),
                   "pairs": ds}
            for coef, ds in penalty_effect.items()
        },
    }


def analyse_gamma(runs: list[dict]) -> dict:
    """Per inner update (optimiser, lr, γ-aware scaling, penalty, radius) and γ: the number of runs, how many diverged
    (:func:`diverged`: collapsed to incoherence), and
    the means over the others of final misalignment (a), coherence, KL(π_ref‖π_θ) and KL(π_θ‖π_ref)."""
    groups = defaultdict(list)
    for r in runs:
        if r.get("gamma") is not None:
            groups[(r["optimizer"], r["lr"], r["spectral_coef"], r.get("radius"), r.get("lr_gamma_scale", 0.0), r["gamma"])].append(r)
    table = []
    order = lambda kv: (*kv[0][:3], -1.0 if kv[0][3] is None else kv[0][3], *kv[0][4:])  # noqa: E731
    for (optimizer, lr, coef, radius, scale, gamma), rs in sorted(groups.items(), key=order):
        stable = [r for r in rs if not diverged(r)]
        table.append({
            "optimizer": optimizer, "lr": lr, "lr_gamma_scale": scale, "effective_lr": lr / (1 + scale * gamma),
            "spectral_coef": coef, "radius": radius, "gamma": gamma,
            "runs": len(rs), "diverged": len(rs) - len(stable),
            "misalignment_rate": _mean(r["misalignment_rate"] for r in stable),
            "coherence": _mean(r["coherence"] for r in stable),
            "kl_ref_to_policy": _mean(r.get("kl_ref_to_policy") for r in stable),
            "kl_policy_to_ref": _mean(r["kl"] for r in stable),
        })
    return {"cells": table}


def realign_tasks(cfg: RealignStudyConfig, out_dir: str | Path) -> list[Task]:
    """The sweep points as tasks (:mod:`sail.em.sweep_runner`): each trains in ``runs/<name>/``."""
    tasks = []
    for point in cfg.sweep.points():
        name = run_name(point)
        settings = _comparable(json.loads(json.dumps(asdict(train_config(cfg.train, point)))))
        payload = {"point": point, "train": cfg.train, "out": str(out_dir), "run_dir": f"runs/{name}", "settings": settings}
        tasks.append(Task(name, payload, name))
    return tasks


def run_realign_task(payload: dict) -> dict:
    """One point, in this process or a worker: train (or finish, or read) its run; the record holds
    the point, its run config (as compared) and its ``runs`` row."""
    point = payload["point"]
    run_cfg = train_config(payload["train"], point)
    summary = train_run(run_cfg, Path(payload["out"]) / payload["run_dir"])
    return {"settings": payload["settings"], "point": point, "row": run_row(point, summary, payload["run_dir"], run_cfg.objective)}


def _realign_matches(task: Task, record: dict) -> bool:
    """A record is the task's when it has the same run config and the run directory still holds the
    finished run (a run whose summary is gone is resumed from its checkpoint)."""
    settings = task.payload["settings"]
    return (record.get("settings") == settings
            and _finished_summary(Path(task.payload["out"]) / task.payload["run_dir"], settings["run"]["steps"]) is not None)


def merge_realign_results(cfg: RealignStudyConfig, out_dir: str | Path, final: bool = True, started: float | None = None) -> dict:
    """``results.json`` from the finished per-point files, under the directory lock: ``runs`` in the
    sweep's order and, when ``final``, the analysis and the plots; ``missing`` names the points not
    finished yet."""
    from sail.em.realign_plots import plot_all

    out = Path(out_dir)
    tasks = realign_tasks(cfg, out)
    with directory_lock(out):
        found = {t.name: r for t in tasks if (r := read_record(out, t.name)) is not None and _realign_matches(t, r)}
        results = {"config": json.loads(json.dumps(asdict(cfg))), "runs": [found[t.name]["row"] for t in tasks if t.name in found]}
        missing = [t.name for t in tasks if t.name not in found]
        if missing:
            results["missing"] = missing
        if final and results["runs"]:
            results["analysis"] = analyse_realignment(results["runs"])
            results["plots"] = [p.name for p in plot_all(results["runs"], out)]
        if started is not None:
            results["seconds_this_process"] = round(time.perf_counter() - started, 1)
        write_json_atomically(out / "results.json", results, indent=1, end="")
    return results


def run_realign_study(cfg: RealignStudyConfig, out_dir: str | Path, progress: bool = True, workers: int = 1,
                      shard_spec: str | None = None, merge_only: bool = False) -> dict:
    """Run (or continue) the study into ``out_dir`` and merge its ``results.json``; returns it.
    ``workers`` processes train points at once (one per CUDA device where there are any);
    ``shard_spec`` ``"i/n"`` trains only the points whose index is i modulo n; ``merge_only`` trains
    nothing."""
    import torch
    from tqdm.auto import tqdm

    from sail.train.console import quiet_third_party

    quiet_third_party()  # one "Loading weights" bar per run would bury the study's own
    index, count = parse_shard(shard_spec)
    out = Path(out_dir).absolute()
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    if not merge_only:
        tasks = shard(realign_tasks(cfg, out), index, count)
        bar = tqdm(total=len(tasks), desc="sail study realign", disable=not progress)

        def finished(task: Task, status: str) -> None:
            if status == "ran":
                merge_realign_results(cfg, out, final=False)
            bar.set_postfix(run=task.label, refresh=False)
            bar.update(1)

        try:
            run_tasks(tasks, out, run_realign_task, _realign_matches, workers=workers, cuda_devices=torch.cuda.device_count(), on_finished=finished, setup=quiet_third_party)
        finally:
            bar.close()
    return merge_realign_results(cfg, out, final=True, started=started)


def gamma_table(cells: list[dict]) -> str:
    """``analysis.by_gamma`` as a Markdown table (means over the runs that did not diverge)."""
    fmt = lambda v, spec: "n/a" if v is None else format(v, spec)  # noqa: E731
    rows = ["| inner update | γ | R | diverged / runs | misalignment (a) | coherence | KL(π_ref‖π_θ) | KL(π_θ‖π_ref) |",
            "|---|---|---|---|---|---|---|---|"]
    for c in cells:
        update = f"{c['optimizer']} {c['effective_lr']:g}" + (f" (lr/(1 + {c['lr_gamma_scale']:g}γ))" if c["lr_gamma_scale"] else "")
        rows.append(f"| {update} | {c['gamma']:g} | {fmt(c['radius'], 'g')} | {c['diverged']} / {c['runs']} | "
                    f"{fmt(c['misalignment_rate'], '.3f')} | {fmt(c['coherence'], '.1f')} | {fmt(c['kl_ref_to_policy'], '.3f')} | "
                    f"{fmt(c['kl_policy_to_ref'], '.3f')} |")
    return "\n".join(rows)


def summary_lines(results: dict) -> list[str]:
    """A short report: final misalignment and KL per method × optimiser × penalty."""
    if not results.get("analysis"):
        return ["no finished runs yet"]
    a = results["analysis"]
    start = a["start_misalignment_rate"]
    lines = [f"misalignment (def. a) at the start: {'n/a' if start is None else f'{start:.3f}'}"]
    lines.append(f"{'method':11s} {'optimizer':9s} {'lr':>7s} {'λ':>4s} {'misaligned':>10s} {'KL':>8s} {'reward':>6s}")
    for r in results["runs"]:
        m = "n/a" if r["misalignment_rate"] is None else f"{r['misalignment_rate']:.3f}"
        lines.append(f"{r['method']:11s} {r['optimizer']:9s} {r['lr']:7g} {r['spectral_coef']:4g} {m:>10s} {r['kl']:8.3f} {r['reward']:6.2f}")
    cells = a.get("by_gamma", {}).get("cells", [])
    if cells:
        lines.append(gamma_table(cells))
    for m, s in a["optimizer_spread"].items():
        if s is not None:
            lines.append(f"{m}: optimiser spread (max/min of mean final misalignment) {s:.2f}")
    for coef, e in a["penalty_effect"].items():
        if e["mean_delta_misalignment"] is None:
            continue
        lines.append(f"penalty λ={coef}: mean Δ misalignment {e['mean_delta_misalignment']:+.3f}, mean Δ KL {e['mean_delta_kl']:+.3f} "
                     f"over {len(e['pairs']) - e['pairs_with_a_diverged_run']} pairs ({e['lower_misalignment']} lower); "
                     f"{e['pairs_with_a_diverged_run']} pairs with a diverged run")
    return lines
