"""What a run records: the environment it ran in, and the metric rows (``metrics.jsonl``, optionally
TensorBoard and wandb)."""

from __future__ import annotations

import dataclasses
import json
import subprocess
from pathlib import Path

import torch

from sail.io import write_text_atomically
from sail.train.config import TrainConfig
from sail.train.errors import TrainingError

def environment() -> dict:
    import peft
    import transformers

    import sail

    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, cwd=Path(__file__).parent, timeout=5
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        commit = ""
    return {
        "sail": str(sail.__version__),
        "torch": str(torch.__version__),
        "transformers": str(transformers.__version__),
        "peft": str(peft.__version__),
        "git_commit": commit or None,
    }


def _kept_on_resume(row: dict, resume_step: int) -> bool:
    """Rows before the checkpoint's step, and its own evaluation (written before it was saved)."""
    step = row.get("step", 0)
    return step < resume_step or (step == resume_step and "eval/reward_mean" in row)


class NullWriter:
    """What processes other than the main one write: nothing."""

    def write(self, row: dict) -> None:
        pass


class MetricsWriter:
    """Appends metric rows to ``metrics.jsonl`` (optionally TensorBoard / wandb)."""

    def __init__(self, run_dir: Path, cfg: TrainConfig, resume_step: int | None):
        self.path = run_dir / "metrics.jsonl"
        if resume_step is not None and self.path.exists():  # drop rows the resumed run will repeat
            kept = [line for line in self.path.read_text().splitlines() if line and _kept_on_resume(json.loads(line), resume_step)]
            write_text_atomically(self.path, "".join(line + "\n" for line in kept))
        elif resume_step is None:
            self.path.write_text("")
        self.tb = self.wandb = None
        if cfg.run.tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError as exc:
                raise TrainingError("run.tensorboard needs the 'tensorboard' package") from exc
            self.tb = SummaryWriter(str(run_dir / "tensorboard"))
        if cfg.run.wandb:
            try:
                import wandb
            except ImportError as exc:
                raise TrainingError("run.wandb needs the 'wandb' package") from exc
            self.wandb = wandb.init(config=dataclasses.asdict(cfg), dir=str(run_dir))

    def write(self, row: dict) -> None:
        with self.path.open("a") as fh:
            fh.write(json.dumps(row) + "\n")
        for key, value in row.items():
            if key != "step" and isinstance(value, (int, float)):
                if self.tb is not None:
                    self.tb.add_scalar(key, value, row["step"])
        if self.wandb is not None:
            self.wandb.log(row, step=row["step"])
