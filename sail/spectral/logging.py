"""Periodic spectral logging: per-module-type spectra and flatness, as JSONL rows.

:class:`SpectralLogger` is a callback ``logger(step, stats)`` (the signature of
:func:`sail.loop.run_loop`'s callbacks). Every ``every`` steps it computes the exact spectra of
all LoRA modules, aggregates them per module type (``q_proj``, …) and over ``all`` modules,
appends one row per type to ``path`` and adds ``spectral/<metric>/<type>`` means to ``stats``.

A row: ``{"step", "label", "kind", "n_modules", "participation_ratio", "normalised_entropy",
"stable_rank", "condition_number", "spectrum", "spectrum_normalised"}`` where the metrics are
means over the type's modules (the condition number is the median; None when infinite),
``spectrum`` is the mean of the sorted σ vectors and ``spectrum_normalised`` the mean of σ/σ₁
(zero-padded to the longest k).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch

from sail.io import dumps_strict, write_text_atomically
from sail.spectral.factors import lora_factors
from sail.spectral.metrics import METRICS, flatness
from sail.spectral.spectra import lora_spectra

SPECTRA_FILE = "spectra.jsonl"
"""The file a training run's :class:`SpectralLogger` writes in its run directory."""


def _finite(x: float) -> float | None:
    return x if math.isfinite(x) else None


def _pad(vectors: list[torch.Tensor]) -> torch.Tensor:
    k = max(v.numel() for v in vectors)
    return torch.stack([torch.nn.functional.pad(v, (0, k - v.numel())) for v in vectors])


def summarise(spectra: dict[str, torch.Tensor], kinds: dict[str, str]) -> list[dict]:
    """Rows (without step/label) per module type and for ``all``, from {name: σ}."""
    groups: dict[str, list[str]] = {}
    for name in spectra:
        groups.setdefault(kinds[name], []).append(name)
    groups["all"] = list(spectra)
    rows = []
    for kind, names in groups.items():
        if not names:
            continue
        sig = [spectra[n].double().cpu() for n in names]
        metrics = {m: [] for m in METRICS}
        for s in sig:
            for m, v in flatness(s).items():
                metrics[m].append(float(v))
        padded = _pad(sig)
        top = padded[:, :1]
        normalised = torch.where(top > 0, padded / torch.where(top > 0, top, torch.ones_like(top)), torch.zeros_like(padded))
        conds = sorted(metrics["condition_number"])
        rows.append(
            {
                "kind": kind,
                "n_modules": len(names),
                "participation_ratio": sum(metrics["participation_ratio"]) / len(names),
                "normalised_entropy": sum(metrics["normalised_entropy"]) / len(names),
                "stable_rank": sum(metrics["stable_rank"]) / len(names),
                "condition_number": _finite(conds[len(conds) // 2]),
                "spectrum": padded.mean(0).tolist(),
                "spectrum_normalised": normalised.mean(0).tolist(),
            }
        )
    return rows


class SpectralLogger:
    """Every ``every`` steps: per-type spectra and flatness of ``model``'s LoRA adapter → JSONL.

    Args:
        model: a PEFT model (or a list of :class:`~sail.spectral.factors.LoraFactor`).
        path: JSONL file to append to (None keeps the rows in memory only).
        every: logging period N (steps 0, N, 2N, …).
        label: stored in every row (e.g. the optimiser's name), used by the plots.
        adapter: restrict to one adapter.
    """

    def __init__(self, model, path: str | Path | None = None, every: int = 50, label: str = "", adapter: str | None = None):
        if every < 1:
            raise ValueError(f"every must be >= 1, got {every}")
        self.model = model
        self.path = Path(path) if path is not None else None
        self.every = every
        self.label = label
        self.adapter = adapter
        self.rows: list[dict] = []
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)

    def log(self, step: int, stats: dict | None = None) -> list[dict]:
        """Compute and record the rows for ``step`` now, whatever the period."""
        factors = lora_factors(self.model, self.adapter)
        spectra = lora_spectra(factors)
        rows = [{"step": int(step), "label": self.label, **row} for row in summarise(spectra, {f.name: f.kind for f in factors})]
        self.rows.extend(rows)
        if self.path is not None:
            with self.path.open("a") as fh:
                for row in rows:
                    fh.write(dumps_strict(row) + "\n")
        if stats is not None:
            for row in rows:
                for metric in ("participation_ratio", "normalised_entropy", "stable_rank"):
                    stats[f"spectral/{metric}/{row['kind']}"] = row[metric]
        return rows

    def __call__(self, step: int, stats: dict | None = None) -> list[dict] | None:
        if step % self.every != 0:
            return None
        return self.log(step, stats)


def read_jsonl(path: str | Path) -> list[dict]:
    with Path(path).open() as fh:
        return [json.loads(line) for line in fh if line.strip()]


def drop_rows_after(path: str | Path, step: int | None) -> None:
    """Keep the rows of the JSONL file ``path`` up to ``step`` (rewritten atomically): a run resumed
    from its checkpoint of ``step`` logs the later steps again. Nothing to do for ``step`` None (a
    new run) or a missing file."""
    path = Path(path)
    if step is None or not path.exists():
        return
    kept = [line for line in path.read_text().splitlines() if line.strip() and json.loads(line)["step"] <= step]
    write_text_atomically(path, "".join(line + "\n" for line in kept))
