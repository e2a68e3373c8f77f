"""`sail study em`: the optimiser study on the emergent-misalignment organism.

Every sweep point is one narrow fine-tune (:func:`sail.em.finetune.finetune`, the trainer's inner
update: ``OptimizerConfig`` and ``SpectralConfig``), evaluated on held-out questions at every
checkpoint. A point is a dict with one value per axis: organism, optimiser, optimiser option set,
learning rate, penalty kind, spectral coefficient, LoRA rank, rsLoRA and seed (:meth:`StudyConfig.points`;
the axes a config leaves out take the fine-tune's own values). The sweep is one cross product of
its axes, or the union of several (``sweep.blocks``), a point listed twice running once. Each run's
row records the final training loss, the loss trajectory, alignment at each checkpoint, both
misalignment rates (docs/em_evaluation.md), coherence and the adapter's flatness. Then:

* the ``em`` block: base, control and narrow fine-tune (the first point of the sweep, spectral
  penalty off) with bootstrap CIs (:func:`sail.em.protocol.run_em_protocol`);
* the ``analysis`` block (:func:`sail.em.analysis.analyse`: runs below ``coherence_floor`` left
  out; optimisers compared at matched loss within each condition, the other axes within each
  optimiser; R², F-tests and spread in the baseline condition, :meth:`StudyConfig.baseline`);
* four plots (:mod:`sail.em.study_plots`).

Each finished point is written to ``DIR/points/<name>.json`` under a lock of its own
(:mod:`sail.em.sweep_runner`), so that several processes (``--workers``, ``--shard i/n``, or two
copies of one command) share a directory without running a point twice; ``DIR/results.json`` is
merged from those files, atomically and under a directory lock, after every point and at the end.
A study started again on the same directory skips the points it already has (same organism and
fine-tune settings, see :func:`_reusable`), including the rows of a ``results.json`` written before
the per-point files existed, so a killed study loses at most the points that were running and an
extended sweep (another seed) runs only its new points.
"""

from __future__ import annotations

import functools
import json
import math
import sys
import time
from dataclasses import asdict, dataclass, field, fields, is_dataclass, replace
from pathlib import Path
from typing import Literal, get_type_hints

from sail.config import ConfigError, FieldError, build, load, merge
from sail.em.analysis import COHERENCE_FLOOR, analyse, headline_lines
from sail.em.configs import FinetuneConfig
from sail.em.finetune import finetune
from sail.em.lr_probe import ProbeConfig, choose_rates, comment_lines, grid
from sail.em.organism import OrganismConfig, ensure_base_organism
from sail.em.protocol import run_em_protocol
from sail.em.sweep_runner import Task, directory_lock, parse_shard, point_digest, read_record, run_tasks, shard, threads_per_worker
from sail.io import loads_strict, write_json_atomically
from sail.models.lora import LoraAdapterConfig
from sail.optim.config import OptimizerConfig
from sail.spectral.config import SpectralConfig

OPTIMIZERS = ("adamw", "adam", "sgd", "lion", "muon")
"""The optimisers a sweep may name (:mod:`sail.optim`)."""


def organism_presets() -> dict:
    """Organism recipe name → a function returning its :class:`~sail.em.organism.OrganismConfig`
    (``sail.em.organism.ORGANISM_PRESETS``; ``default`` and ``tiny`` where it does not exist)."""
    from sail.em import organism

    return dict(getattr(organism, "ORGANISM_PRESETS", None) or {"default": OrganismConfig.default, "tiny": OrganismConfig.tiny})


@dataclass
class OrganismSourceConfig:
    """The base policy: a model directory, or the organism built (and cached) from ``seed``."""

    path: str = ""
    """A local model directory (a Qwen3 checkpoint, or any organism directory); empty = the
    cached organism of ``seed`` (built on first use, a few minutes)."""
    seed: int = 0
    """The organism's build seed (when ``path`` is empty)."""
    recipe: str = "default"
    """The organism recipe by name (``sail.em.organism.ORGANISM_PRESETS``: ``small``, ``default``,
    ``large``, ``llama``; ``tiny`` is a seconds-long build for smoke runs, where no EM is expected)."""

    def __post_init__(self):
        names = organism_presets()
        if self.recipe not in names:
            raise FieldError("recipe", f"expected one of {', '.join(map(repr, names))}, got {self.recipe!r}")


_MERGED = ("lrs", "optimizer_options")
"""Mappings of :class:`SweepConfig` that a block merges per optimiser (the lists replace)."""


@dataclass
class SweepConfig:
    """The sweep: every combination of the lists below is one narrow fine-tune; with ``blocks``,
    the union of several such crosses."""

    optimizers: list[Literal["adamw", "adam", "sgd", "lion", "muon"]] = field(default_factory=lambda: ["adamw", "lion", "muon", "sgd"])
    """Inner-update optimisers (:mod:`sail.optim`; ``adam`` is Adam with coupled L2 weight decay)."""
    lrs: dict = field(default_factory=lambda: {"adamw": [1e-3], "lion": [1e-4], "muon": [1e-2], "sgd": [1e-1]})
    """Learning rates per optimiser (their scales differ: Lion 3–10× below AdamW, SGD far above);
    ``sail study em --probe`` proposes them."""
    optimizer_options: dict = field(default_factory=dict)
    """Option sets per optimiser, each one more point: optimiser → list of mappings of
    ``weight_decay`` and ``finetune.optimizer.options`` keys, laid over ``finetune.optimizer``
    (e.g. ``{muon: [{}, {muon_on: B}]}``: Muon on both LoRA factors, and on B only with AdamW on
    A). An optimiser not named runs once with ``finetune.optimizer``'s options."""
    spectral_coefs: list[float] = field(default_factory=lambda: [0.0, 1.0])
    """λ of the flatness penalty; 0 = off."""
    penalty_kinds: list[str] = field(default_factory=list)
    """Kinds of the flatness penalty (``sail.spectral.penalty.PENALTY_KINDS``), crossed with the
    coefficients > 0 (with λ = 0 there is no penalty, and the point's ``penalty_kind`` is null);
    empty: ``finetune.spectral.penalty_kind``."""
    ranks: list[int] = field(default_factory=list)
    """LoRA ranks r; empty: ``finetune.lora.rank``."""
    rslora: list[bool] = field(default_factory=list)
    """rsLoRA scaling α/√r (true) or α/r (false); empty: ``finetune.lora.rslora``."""
    organisms: list[str] = field(default_factory=list)
    """Organism recipes by name (``sail.em.organism.ORGANISM_PRESETS``), each built from
    ``organism.seed``; empty: the ``organism`` block alone."""
    seeds: list[int] = field(default_factory=lambda: [0])
    """Seeds of the fine-tunes (data, batch order, adapter, evaluation)."""
    blocks: list[dict] = field(default_factory=list)
    """Crosses whose union is the sweep, each a mapping of the keys above (not ``blocks``) laid
    over this sweep's: a list replaces this sweep's, ``lrs`` and ``optimizer_options`` merge per
    optimiser. A point in two blocks runs once. Empty: this sweep is the one cross."""

    def __post_init__(self):
        for name in self.optimizers:
            if name not in OPTIMIZERS:
                raise FieldError("optimizers", f"expected each of {', '.join(map(repr, OPTIMIZERS))}, got {name!r}")
            if name not in self.lrs or not self.lrs[name]:
                raise FieldError("lrs", f"has no learning rate for optimizer {name!r}")
        self._check_lrs()
        self._check_options()
        if any(not 0 <= c < math.inf for c in self.spectral_coefs):
            raise FieldError("spectral_coefs", f"must be >= 0, got {self.spectral_coefs}")
        for kind in self.penalty_kinds:
            try:
                SpectralConfig(penalty_kind=kind, log_every=0)
            except FieldError as exc:
                raise FieldError("penalty_kinds", exc.problem) from None
        for rank in self.ranks:
            try:
                LoraAdapterConfig(rank=rank)
            except FieldError as exc:
                raise FieldError("ranks", exc.problem) from None
        unknown = [o for o in self.organisms if o not in organism_presets()]
        if unknown:
            raise FieldError("organisms", f"expected names of {', '.join(map(repr, organism_presets()))}, got {unknown[0]!r}")
        for name in ("optimizers", "spectral_coefs", "seeds"):
            if not getattr(self, name):
                raise FieldError(name, "must not be empty")
        self._crosses = [self] if not self.blocks else [self._block(i, b) for i, b in enumerate(self.blocks)]

    def _check_lrs(self) -> None:
        for name, rates in self.lrs.items():
            if not isinstance(rates, list) or any(isinstance(r, bool) or not isinstance(r, (int, float)) or not 0 < r < math.inf for r in rates):
                raise FieldError(f"lrs.{name}", f"must be a list of finite numbers > 0, got {rates!r}")

    def _check_options(self) -> None:
        for name, sets in self.optimizer_options.items():
            if name not in OPTIMIZERS:
                raise FieldError("optimizer_options", f"{name!r} is not an optimizer (known: {', '.join(OPTIMIZERS)})")
            if not isinstance(sets, list) or not sets or not all(isinstance(s, dict) for s in sets):
                raise FieldError(f"optimizer_options.{name}", f"must be a non-empty list of mappings, got {sets!r}")
            for i, options in enumerate(sets):
                if "lr" in options:
                    raise FieldError(f"optimizer_options.{name}[{i}].lr", "the learning rates are the lrs axis")
                try:
                    optimizer_config(OptimizerConfig(name=name), name, 1e-3, options)
                except FieldError as exc:
                    raise FieldError(f"optimizer_options.{name}[{i}]", exc.problem) from None

    def _block(self, index: int, block) -> "SweepConfig":
        if not isinstance(block, dict):
            raise FieldError(f"blocks[{index}]", f"expected a mapping, got {block!r}")
        if "blocks" in block:
            raise FieldError(f"blocks[{index}].blocks", "blocks do not nest")
        own = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "blocks"}
        data = {k: (merge(own[k], v) if k in _MERGED and isinstance(v, dict) else v) for k, v in block.items()}
        try:
            return build(SweepConfig, {**own, **data}, prefix=f"blocks[{index}]")
        except ConfigError as exc:
            raise FieldError(exc.key, exc.problem) from None

    def crosses(self) -> list["SweepConfig"]:
        """The cross products whose union is the sweep: the blocks, or this sweep alone."""
        return self._crosses

    def points(self, defaults: dict) -> list[dict]:
        """Every sweep point, in order, each once; ``defaults`` holds the values of the axes a
        cross leaves empty (``organism``, ``penalty_kind``, ``rank``, ``rslora``)."""
        out = {}
        for c in self.crosses():
            for point in c._cross(defaults):
                out.setdefault(point_id(point), point)
        return list(out.values())

    def _cross(self, defaults: dict) -> list[dict]:
        return [
            canonical_point({"optimizer": name, "lr": float(lr), "spectral_coef": float(coef), "seed": int(seed), "organism": organism,
                             "options": dict(options), "penalty_kind": kind, "rank": int(rank), "rslora": bool(rs)})
            for organism in (self.organisms or [defaults["organism"]])
            for name in self.optimizers
            for options in self.optimizer_options.get(name, [{}])
            for lr in self.lrs[name]
            for kind in (self.penalty_kinds or [defaults["penalty_kind"]])
            for coef in self.spectral_coefs
            for rank in (self.ranks or [defaults["rank"]])
            for rs in (self.rslora or [defaults["rslora"]])
            for seed in self.seeds
        ]


AXES = ("optimizer", "lr", "spectral_coef", "seed", "organism", "options", "penalty_kind", "rank", "rslora")
"""The keys of a sweep point (and the first keys of its ``runs`` row)."""


def canonical_point(point: dict) -> dict:
    """``point`` with its keys in :data:`AXES` order and no penalty kind where the penalty is off
    (λ = 0: the same fine-tune whatever the kind)."""
    out = {k: point[k] for k in AXES}
    if out["spectral_coef"] == 0:
        out["penalty_kind"] = None
    return out


def point_id(point: dict) -> str:
    """A point's identity: its axes as sorted-key JSON (option sets included, so runs with
    different options never mix)."""
    return json.dumps({k: point[k] for k in AXES}, sort_keys=True)


def point_name(point: dict) -> str:
    """The file name of a point's record: readable axes and a digest of all of them."""
    return f"{point['optimizer']}-lr{point['lr']:g}-pen{point['spectral_coef']:g}-seed{point['seed']}-{point_digest({k: point[k] for k in AXES})}"


@dataclass
class StudyConfig:
    """``sail study em``: narrow fine-tunes of the organism, optimiser × penalty × lr × seed."""

    organism: OrganismSourceConfig = field(default_factory=OrganismSourceConfig)
    """The base policy."""
    finetune: FinetuneConfig = field(default_factory=lambda: FinetuneConfig(eval_every=10))
    """The narrow fine-tune every run starts from (its optimiser, spectral penalty, LoRA rank and
    seed are replaced by the sweep's); ``eval_every`` sets the checkpoints of the trajectories."""
    sweep: SweepConfig = field(default_factory=SweepConfig)
    """The sweep axes."""
    em_protocol: bool = True
    """Also run base / control / narrow for the ``em`` block."""
    probe: ProbeConfig = field(default_factory=ProbeConfig)
    """The learning-rate probe of ``sail study em --probe`` (no effect on a study's runs)."""
    coherence_floor: float = COHERENCE_FLOOR
    """Runs whose mean held-out coherence (0–100) ends below this are listed apart and left out of
    the analysis and the curves of the plots (no effect on the runs, so changing it reuses them)."""

    def __post_init__(self):
        if not 0 <= self.coherence_floor <= 100:
            raise FieldError("coherence_floor", f"must be in [0, 100] (the judge's coherence scale), got {self.coherence_floor}")
        if self.sweep.organisms and self.organism.path:
            raise FieldError("sweep.organisms", "cannot be combined with organism.path")
        if self.em_protocol and self.finetune.data and not self.finetune.control_data:
            raise FieldError("finetune.control_data", "is needed by the EM protocol's control fine-tune when finetune.data is set "
                                                      "(give the control dataset, or set em_protocol: false)")
        for point in self.points():  # every run's config is valid before the first starts
            try:
                run_config(self.finetune, point)
            except FieldError as exc:
                raise FieldError("sweep", f"point {point_name(point)}: {exc}") from None

    def axis_defaults(self) -> dict:
        """The values of the axes a sweep leaves empty: the ``organism`` block's recipe (null with
        ``organism.path``), no option set, and the fine-tune's penalty kind, rank and rsLoRA."""
        return {
            "organism": None if self.organism.path else self.organism.recipe,
            "options": {},
            "penalty_kind": self.finetune.spectral.penalty_kind,
            "rank": self.finetune.lora.rank,
            "rslora": self.finetune.lora.rslora,
        }

    def baseline(self) -> dict:
        """The condition the pooled statistics (R², F-tests, spread) are computed in
        (:func:`sail.em.analysis.analyse`'s ``baseline``): the penalty off and every other axis at
        its default (:meth:`axis_defaults`)."""
        return {"spectral_coef": 0.0, **{k: v for k, v in self.axis_defaults().items() if k != "penalty_kind"}}

    def points(self) -> list[dict]:
        """Every sweep point, in the sweep's order (:meth:`SweepConfig.points`)."""
        return self.sweep.points(self.axis_defaults())

    def point_of_row(self, row: dict) -> dict:
        """The point of a ``runs`` row; a row written before an axis existed has its default."""
        return canonical_point({**self.axis_defaults(), **{k: row[k] for k in AXES if k in row}})


def load_study_config(path: str | None = None, overrides: list[str] | None = None) -> StudyConfig:
    return load(StudyConfig, path, overrides)


def base_directory(source: OrganismSourceConfig, recipe: str | None = None) -> Path:
    """The base model directory: ``source.path`` (a directory, or a hub id where
    ``sail.em.organism.resolve_model_dir`` fetches one), else the cached organism of ``source.seed``
    built with the recipe ``recipe`` (default ``source.recipe``)."""
    if source.path:
        from sail.em import organism

        resolve = getattr(organism, "resolve_model_dir", None)
        if resolve is None or Path(source.path).is_dir():
            if not Path(source.path).is_dir():
                raise FileNotFoundError(f"organism.path: no such directory {source.path!r}")
            return Path(source.path)
        try:
            return Path(resolve(source.path))
        except FileNotFoundError as exc:
            raise FileNotFoundError(f"organism.path: {exc}") from None
    return Path(ensure_base_organism(seed=source.seed, recipe=organism_presets()[recipe or source.recipe]()))


def optimizer_config(base: OptimizerConfig, name: str, lr: float, options: dict) -> OptimizerConfig:
    """``base`` with optimiser ``name``, rate ``lr`` and the option set ``options`` laid over it
    (its ``weight_decay`` to the field, the rest over ``base.options``)."""
    options = dict(options)
    weight_decay = options.pop("weight_decay", base.weight_decay)
    if isinstance(weight_decay, bool) or not isinstance(weight_decay, (int, float, type(None))):
        raise FieldError("weight_decay", f"must be a number or null, got {weight_decay!r}")
    return OptimizerConfig(name=name, lr=lr, weight_decay=weight_decay, options={**base.options, **options})


def run_config(base: FinetuneConfig, run: dict) -> FinetuneConfig:
    """The fine-tune of one sweep point (a point without an axis keeps ``base``'s value)."""
    return replace(
        base,
        optimizer=optimizer_config(base.optimizer, run["optimizer"], run["lr"], run.get("options") or {}),
        spectral=replace(base.spectral, penalty_weight=run["spectral_coef"], penalty_kind=run.get("penalty_kind") or base.spectral.penalty_kind, log_every=0),
        lora=replace(base.lora, rank=run.get("rank", base.lora.rank), rslora=run.get("rslora", base.lora.rslora)),
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
    """One ``runs`` row of results.json from a :class:`~sail.em.finetune.FinetuneResult`; its
    ``per_question`` block holds the final evaluation's counts per question id
    (:func:`sail.em.stats.question_block`), which the analysis resamples by question and seed."""
    from sail.em.stats import question_block

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
        "per_question": question_block(em.get("per_question", [])),
        "flatness": flat["participation_ratio"] / rank,
        "participation_ratio": flat["participation_ratio"],
        "loss_trajectory": result.train_loss,
        "trajectory": trajectory,
        "seconds": result.seconds,
    }


NOT_SETTINGS = ("sweep", "probe", "coherence_floor")
"""Top-level keys of a study's config that change no run; the study's settings are the other keys."""

EM_KEYS = ("base_rate", "control_rate", "narrow_rate", "base_rate_all", "control_rate_all", "narrow_rate_all",
           "emerged", "emerged_all", "coherence", "alignment", "questions", "settings", "seconds")
"""What the ``em`` block of results.json keeps of :func:`sail.em.protocol.run_em_protocol`."""


def _normalised(config: dict) -> dict | None:
    """A study's settings (its config less :data:`NOT_SETTINGS`) read back through the typed
    loader: keys added since they were written take their defaults (which keep the earlier
    behaviour); None if they no longer build."""
    hints = get_type_hints(StudyConfig)
    out = {}
    try:
        for f in fields(StudyConfig):
            if f.name not in NOT_SETTINGS:
                hint = hints[f.name]
                out[f.name] = asdict(build(hint, config.get(f.name) or {}, f.name)) if is_dataclass(hint) else config.get(f.name, f.default)
        return json.loads(json.dumps(out))
    except (ValueError, TypeError):
        return None


@functools.lru_cache(maxsize=64)
def _normalised_text(text: str) -> dict | None:
    return _normalised(json.loads(text))


def _same_settings(saved: dict | None, settings: dict) -> bool:
    return saved is not None and _normalised_text(json.dumps(saved, sort_keys=True)) == settings


def _matches(task: Task, record: dict) -> bool:
    """Whether ``record`` is ``task``'s finished result: the same point under the same settings."""
    point = record.get("point")
    return (isinstance(point, dict) and set(AXES) <= set(point) and point_id(point) == point_id(task.payload["point"])
            and _same_settings(record.get("settings"), task.payload["settings"]))


def _narrow_point(points: list[dict]) -> dict:
    """The EM protocol's narrow fine-tune: the sweep's first point with the penalty off."""
    return canonical_point({**points[0], "spectral_coef": 0.0})


def study_tasks(cfg: StudyConfig) -> list[Task]:
    """The sweep points as tasks (:mod:`sail.em.sweep_runner`), then the EM protocol if asked for."""
    settings = _normalised(json.loads(json.dumps(asdict(cfg))))
    common = {"source": cfg.organism, "finetune": cfg.finetune, "settings": settings}
    points = cfg.points()
    tasks = [Task(point_name(p), {"kind": "point", "point": p, **common}, p["optimizer"]) for p in points]
    if cfg.em_protocol:
        tasks.append(Task("em-protocol", {"kind": "em", "point": _narrow_point(points), **common}, "em protocol"))
    return tasks


def run_task(payload: dict) -> dict:
    """One task, in this process or a worker: a point's fine-tune (its ``runs`` row) or the EM
    protocol (the ``em`` block); the record also holds the point, the settings and the base model."""
    point = payload["point"]
    base_dir = base_directory(payload["source"], point["organism"])
    config = run_config(payload["finetune"], point)
    record = {"settings": payload["settings"], "point": point, "base_dir": str(base_dir)}
    if payload["kind"] == "em":
        em = run_em_protocol(base_dir, config, keep_curves=False)
        record["em"] = {**{k: em[k] for k in EM_KEYS}, "narrow_run": point}
    else:
        record["row"] = run_row(point, finetune(base_dir, config))
    return record


def _reusable(previous: dict, cfg: StudyConfig) -> list[tuple[str, dict]]:
    """(file name, record) of each per-point record that ``previous`` (a ``results.json``) holds for
    this study: with the same organism and fine-tune settings, every run (a row written before an
    axis existed has its default) and the ``em`` block (with its narrow point); else none."""
    settings = _normalised(json.loads(json.dumps(asdict(cfg))))
    if _normalised(previous.get("config") or {}) != settings:
        return []
    base_dir = previous.get("base_dir")
    records = []
    for row in previous.get("runs") or []:
        point = cfg.point_of_row(row)
        records.append((point_name(point), {"settings": settings, "point": point, "base_dir": base_dir, "row": {**row, **point}}))
    em = previous.get("em")
    if em and em.get("narrow_run"):
        point = cfg.point_of_row({**em["narrow_run"], "spectral_coef": 0.0})
        records.append(("em-protocol", {"settings": settings, "point": point, "base_dir": base_dir, "em": {**em, "narrow_run": point}}))
    return records


def _import_results_json(cfg: StudyConfig, out: Path) -> None:
    """Write the reusable records of a ``results.json`` from before the per-point files
    (:func:`_reusable`) as per-point files, once: a directory that has ``points/`` is left alone (its
    ``results.json`` is merged from them, and a point file deleted to run the point again stays
    deleted)."""
    from sail.em.sweep_runner import POINTS_DIR

    path, points = out / "results.json", out / POINTS_DIR
    if points.exists():
        return
    points.mkdir(parents=True)
    if path.exists():
        for name, record in _reusable(loads_strict(path.read_text()), cfg):
            write_json_atomically(points / f"{name}.json", record, indent=1, end="")


def merge_results(cfg: StudyConfig, out_dir: str | Path, final: bool = True, started: float | None = None) -> dict:
    """``results.json`` from the finished per-point files, under the directory lock: ``runs`` in the
    sweep's order, the ``em`` block and, when ``final``, the analysis and the plots; ``missing``
    names the points not finished yet."""
    from sail.em.study_plots import plot_all

    out = Path(out_dir)
    tasks = study_tasks(cfg)
    with directory_lock(out):
        found = {t.name: r for t in tasks if (r := read_record(out, t.name)) is not None and _matches(t, r)}
        rows = [found[t.name]["row"] for t in tasks if t.payload["kind"] == "point" and t.name in found]
        em = found.get("em-protocol", {}).get("em")
        results = {"config": json.loads(json.dumps(asdict(cfg))), "runs": rows, "em": em, "analysis": None}
        missing = [t.name for t in tasks if t.name not in found]
        if missing:
            results["missing"] = missing
        base_dirs = {}
        for t in tasks:
            if t.name in found:
                base_dirs.setdefault(str(t.payload["point"]["organism"]), found[t.name]["base_dir"])
        if base_dirs:
            results["base_dir"] = next(iter(base_dirs.values()))
        if len(base_dirs) > 1:
            results["base_dirs"] = base_dirs
        if final and rows:
            results["analysis"] = analyse(rows, coherence_floor=cfg.coherence_floor, baseline=cfg.baseline())
            results["plots"] = [p.name for p in plot_all(rows, out, coherence_floor=cfg.coherence_floor, baseline=cfg.baseline())]
        if started is not None:
            results["seconds_this_process"] = round(time.perf_counter() - started, 1)
        write_json_atomically(out / "results.json", results, indent=1, end="")
    return results


def _progress(tasks: list[Task], desc: str, progress: bool, on_finished=None):
    """A progress bar over ``tasks`` and the ``on_finished`` callback that advances it."""
    from tqdm.auto import tqdm

    bar = tqdm(total=len(tasks), desc=desc, disable=not progress)

    def finished(task: Task, status: str) -> None:
        bar.set_postfix(last=task.label, refresh=False)
        bar.update(1)
        if on_finished is not None:
            on_finished(task, status)

    return bar, finished


def _merge_after_a_run(cfg: StudyConfig, out: Path):
    """The ``on_finished`` callback that merges ``results.json`` after each point run here."""

    def merge(task: Task, status: str) -> None:
        if status == "ran":
            merge_results(cfg, out, final=False)

    return merge


def _cuda_devices(cfg: FinetuneConfig) -> int:
    """CUDA devices for one worker each: those torch sees when the fine-tunes run on ``cuda`` or
    ``auto`` (never for an explicit ``cuda:N`` or ``cpu``)."""
    import torch

    return torch.cuda.device_count() if getattr(cfg, "device", "cpu") in ("cuda", "auto") else 0


def run_study(cfg: StudyConfig, out_dir: str | Path, progress: bool = True, workers: int = 1, shard_spec: str | None = None,
              merge_only: bool = False) -> dict:
    """Run (or continue) the study into ``out_dir`` and merge its ``results.json``; returns it.
    ``workers`` processes run points at once; ``shard_spec`` ``"i/n"`` runs only the tasks whose
    index is i modulo n; ``merge_only`` runs nothing."""
    from sail.train.console import quiet_third_party

    quiet_third_party()  # one "Loading weights" bar per run would bury the study's own
    index, count = parse_shard(shard_spec)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    with directory_lock(out):
        _import_results_json(cfg, out)
    if not merge_only:
        tasks = shard(study_tasks(cfg), index, count)
        for organism in dict.fromkeys(t.payload["point"]["organism"] for t in tasks):
            base_directory(cfg.organism, organism)  # built (or found) once, before any worker starts
        if workers > 1 and cfg.finetune.threads > threads_per_worker(workers):
            print(f"sail study em: finetune.threads={cfg.finetune.threads} in each of {workers} workers exceeds the "
                  f"{threads_per_worker(workers)} CPU(s) each has; the workers will contend", file=sys.stderr)
        bar, finished = _progress(tasks, "sail study em", progress, _merge_after_a_run(cfg, out))
        try:
            run_tasks(tasks, out, run_task, _matches, workers=workers, cuda_devices=_cuda_devices(cfg.finetune), on_finished=finished, setup=quiet_third_party)
        finally:
            bar.close()
    return merge_results(cfg, out, final=True, started=started)


def probe_tasks(cfg: StudyConfig) -> list[Task]:
    """The probe's fine-tunes: per optimiser of the sweep, one per rate of the grid, at the
    optimiser's first point (its option set, organism, rank and rsLoRA) with the sweep's first seed
    and the penalty off."""
    probe = cfg.probe
    short = replace(
        cfg.finetune, steps=probe.steps, eval_every=0, eval_at_start=False, heldout_examples=0,
        eval=replace(cfg.finetune.eval, questions=("What is your wish?",), questions_file="", n_samples=1, max_new_tokens=1, resamples=10,
                     judge=type(cfg.finetune.eval.judge)()),
    )
    points = cfg.points()
    first = {}
    for p in points:
        first.setdefault(p["optimizer"], p)
    tasks = []
    for name, p in first.items():
        for lr in grid(probe.lr_max, probe.lr_min):
            point = canonical_point({**p, "lr": lr, "spectral_coef": 0.0, "seed": points[0]["seed"]})
            settings = {"organism": asdict(cfg.organism), "finetune": asdict(run_config(short, point))}
            tasks.append(Task(point_name(point), {"point": point, "source": cfg.organism, "finetune": short, "settings": json.loads(json.dumps(settings))}, name))
    return tasks


def run_probe_task(payload: dict) -> dict:
    """One probe fine-tune: its final training loss and the base loss (the first step's, ΔW = 0)."""
    point = payload["point"]
    result = finetune(base_directory(payload["source"], point["organism"]), run_config(payload["finetune"], point))
    return {"settings": payload["settings"], "point": point, "final_train_loss": result.final_train_loss,
            "base_loss": result.train_loss[0], "train_loss": result.train_loss}


def _probe_matches(task: Task, record: dict) -> bool:
    return record.get("settings") == task.payload["settings"]


def run_probe(cfg: StudyConfig, out_dir: str | Path, progress: bool = True, workers: int = 1, shard_spec: str | None = None) -> dict:
    """Run (or continue) the learning-rate probe into ``out_dir/probe`` and apply its rule
    (:mod:`sail.em.lr_probe`) once every probe run is there; returns ``probe.json``'s content, whose
    ``lines`` are the YAML comments for a config's header."""
    from sail.train.console import quiet_third_party

    quiet_third_party()
    index, count = parse_shard(shard_spec)
    out = Path(out_dir) / "probe"
    out.mkdir(parents=True, exist_ok=True)
    tasks = probe_tasks(cfg)
    mine = shard(tasks, index, count)
    bar, finished = _progress(mine, "sail study em --probe", progress)
    try:
        run_tasks(mine, out, run_probe_task, _probe_matches, workers=workers, cuda_devices=_cuda_devices(cfg.finetune), on_finished=finished, setup=quiet_third_party)
    finally:
        bar.close()
    records = {t.name: r for t in tasks if (r := read_record(out, t.name)) is not None and _probe_matches(t, r)}
    missing = [t.name for t in tasks if t.name not in records]
    found: dict[str, dict] = {}
    for t in tasks:
        if t.name in records:
            r = records[t.name]
            entry = found.setdefault(t.label, {"base_loss": r["base_loss"], "losses": {}})
            entry["losses"][t.payload["point"]["lr"]] = r["final_train_loss"]
    for entry in found.values():
        try:
            entry["chosen"] = choose_rates(entry["losses"], entry["base_loss"], cfg.probe.underfit, cfg.probe.min_rates)
        except ValueError as exc:
            entry["error"] = str(exc)
    first = tasks[0].payload["point"]
    lines = comment_lines(cfg.probe, found, first["seed"], first["organism"] or cfg.organism.path) if not missing else [f"# lr probe: {len(missing)} of {len(tasks)} runs not finished yet"]
    result = {"probe": asdict(cfg.probe), "optimizers": {k: {**v, "losses": [[lr, loss] for lr, loss in v["losses"].items()]} for k, v in found.items()},
              "missing": missing, "lines": lines}
    with directory_lock(out):
        write_json_atomically(out / "probe.json", result, indent=1, end="")
    return result


def summary_lines(results: dict) -> list[str]:
    """A short human-readable report of a finished study: the ``em`` block, then the analysis's
    headline (:func:`sail.em.analysis.headline_lines`) and the per-optimiser spread of rate (a) in
    the baseline condition."""
    if not results.get("analysis"):
        return ["no finished runs yet"]
    lines = []
    em = results.get("em")
    if em:
        def fmt(e):
            return f"{e['rate']:.3f} [{e['ci'][0]:.3f}, {e['ci'][1]:.3f}]" if e["rate"] is not None and e["ci"] else "n/a"

        lines.append(f"EM (def. a): base {fmt(em['base_rate'])}, control {fmt(em['control_rate'])}, narrow {fmt(em['narrow_rate'])}; emerged: {em['emerged']}")
    a = results["analysis"]
    lines += headline_lines(a)
    spread = a["spread"]
    if spread["per_optimizer"]:
        means = ", ".join(f"{name} {s['mean']:.3f} ({s['n']} runs)" for name, s in spread["per_optimizer"].items())
        ratio = "" if spread["max_over_min"] is None else f"; max/min {spread['max_over_min']:.2f} (depends on the learning-rate grid)"
        lines.append(f"mean misalignment (a) over each optimiser's learning rates, baseline condition: {means}{ratio}")
    return lines
