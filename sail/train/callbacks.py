"""Hooks into a training run: ``Trainer(cfg, run_dir, callbacks=[...])``.

A callback is any object with one or both of the methods of :class:`TrainerCallback` (a method it
leaves out is not called). They run on every process, after the row was written to
``metrics.jsonl``, with the same row on each (``trainer.is_main`` tells the process that writes the
run directory). A callback may read the trainer (``trainer.state["step"]``, ``trainer.model``,
``trainer.last_evaluation``) but should not change what trains, or a resumed run is no longer exact.

    class StopWhenAligned:
        def on_evaluate(self, trainer, row):
            if row.get("eval/misalignment_rate", 1.0) < 0.05:
                print(f"aligned at step {row['step']}")
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol


class TrainerCallback(Protocol):
    def on_step(self, trainer, row: dict) -> None:
        """After each optimiser step: ``row`` is the step's metric row (``step`` is the index of the
        step taken, from 0; losses, ``charts/*`` and ``perf/*``)."""

    def on_evaluate(self, trainer, row: dict) -> None:
        """After each held-out evaluation (at step 0, every ``run.eval_every`` steps and at the end):
        ``row`` holds ``step`` and the ``eval/*`` metrics; ``trainer.last_evaluation.samples`` the
        texts and rewards per prompt."""


def notify(callbacks: Iterable, hook: str, trainer, row: dict) -> None:
    """Call ``hook`` (``on_step`` or ``on_evaluate``) of each callback that has it."""
    for callback in callbacks:
        method = getattr(callback, hook, None)
        if method is not None:
            method(trainer, row)
