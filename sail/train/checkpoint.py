"""Atomic, exact checkpoints of a training run.

A checkpoint directory holds the trainable (adapter) parameters as safetensors, the optimiser
state, the sampling generator's state and the loop's own state (step, baseline, counters) as JSON.
It is written into ``checkpoint.tmp/`` with a ``COMPLETE`` marker last, then swapped in by renames
(``checkpoint/`` → ``checkpoint.old/``, ``checkpoint.tmp/`` → ``checkpoint/``); a run killed at any
moment leaves either the previous or the new complete checkpoint, and :func:`find_checkpoint`
picks it up.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

MARKER = "COMPLETE"


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory fds
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def save_checkpoint(run_dir: Path, params: dict[str, torch.Tensor], optimizer_state: dict, generator_state: torch.Tensor, state: dict) -> Path:
    """Write the checkpoint atomically; refuses non-finite parameters."""
    for name, p in params.items():
        if not torch.isfinite(p).all():
            raise ValueError(f"refusing to checkpoint non-finite parameter {name}")
    run_dir = Path(run_dir)
    tmp, final, old = run_dir / "checkpoint.tmp", run_dir / "checkpoint", run_dir / "checkpoint.old"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    save_file({k: v.detach().cpu().contiguous() for k, v in params.items()}, str(tmp / "adapter.safetensors"))
    torch.save(optimizer_state, tmp / "optimizer.pt")
    torch.save(generator_state.clone(), tmp / "generator.pt")
    (tmp / "state.json").write_text(json.dumps(state, indent=1))
    for f in tmp.iterdir():
        with open(f, "rb") as fh:
            os.fsync(fh.fileno())
    (tmp / MARKER).write_text("ok")
    _fsync_dir(tmp)
    shutil.rmtree(old, ignore_errors=True)
    if final.exists():
        os.replace(final, old)
    os.replace(tmp, final)
    _fsync_dir(run_dir)
    shutil.rmtree(old, ignore_errors=True)
    return final


def find_checkpoint(run_dir: Path) -> Path | None:
    """The newest complete checkpoint directory of a run (``checkpoint``, else a swapped-out one)."""
    for name in ("checkpoint", "checkpoint.tmp", "checkpoint.old"):
        path = Path(run_dir) / name
        if (path / MARKER).is_file():
            return path
    return None


def load_checkpoint(path: Path) -> tuple[dict[str, torch.Tensor], dict, torch.Tensor, dict]:
    params = load_file(str(path / "adapter.safetensors"))
    optimizer_state = torch.load(path / "optimizer.pt", weights_only=True)
    generator_state = torch.load(path / "generator.pt", weights_only=True)
    state = json.loads((path / "state.json").read_text())
    return params, optimizer_state, generator_state, state
