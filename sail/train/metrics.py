"""What a run records: the environment it ran in, the metric rows (``metrics.jsonl``, optionally
TensorBoard and wandb) and the completions sampled at each evaluation (``completions.jsonl``)."""

from __future__ import annotations

import dataclasses
import json
import subprocess
from pathlib import Path

import torch

from sail.io import dumps_strict, write_text_atomically
from sail.loop import SailConfig
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


COMPLETIONS_FILE = "completions.jsonl"


def _kept_on_resume(row: dict, resume_step: int) -> bool:
    """Rows before the checkpoint's step, and its own evaluation (written before it was saved)."""
    step = row.get("step", 0)
    return step < resume_step or (step == resume_step and "eval/reward_mean" in row)


def _start_log(path: Path, resume_step: int | None, kept) -> None:
    """A fresh run empties the JSONL file ``path``; a resumed one keeps the rows for which
    ``kept(row, resume_step)`` holds, dropping those the resumed run will write again."""
    if resume_step is None:
        path.write_text("")
    elif path.exists():
        lines = [line for line in path.read_text(encoding="utf-8").splitlines() if line and kept(json.loads(line), resume_step)]
        write_text_atomically(path, "".join(line + "\n" for line in lines))


class NullWriter:
    """What processes other than the main one write: nothing."""

    def write(self, *args) -> None:
        pass


class CompletionsWriter:
    """Appends the completions of each evaluation to ``completions.jsonl``: per prompt one row with
    ``step``, ``prompt``, ``response``, ``reward``, ``reference_response`` and ``reference_reward``
    (:class:`sail.train.evaluation.Evaluation`'s samples, the first ``per_eval`` of them). On resume
    the rows after the checkpoint's step are dropped, as in ``metrics.jsonl``; ``per_eval`` 0
    writes no file (and removes a stale one from an earlier run in the directory)."""

    def __init__(self, run_dir: Path, per_eval: int, resume_step: int | None):
        self.path, self.per_eval = run_dir / COMPLETIONS_FILE, per_eval
        if per_eval:
            _start_log(self.path, resume_step, lambda row, step: row["step"] <= step)
        elif resume_step is None:
            self.path.unlink(missing_ok=True)

    def write(self, step: int, samples: list[dict]) -> None:
        if not self.per_eval:
            return
        with self.path.open("a", encoding="utf-8") as fh:
            for sample in samples[: self.per_eval]:
                fh.write(dumps_strict({"step": step, **sample}, ensure_ascii=False) + "\n")


class MetricsWriter:
    """Appends metric rows to ``metrics.jsonl`` (optionally TensorBoard / wandb)."""

    def __init__(self, run_dir: Path, cfg: TrainConfig, resume_step: int | None):
        self.path = run_dir / "metrics.jsonl"
        _start_log(self.path, resume_step, _kept_on_resume)
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
            self.wandb = wandb.init(
                project=cfg.run.wandb_project or None, name=cfg.run.wandb_run_name or Path(run_dir).resolve().name,
                config=dataclasses.asdict(cfg), dir=str(run_dir),
            )

    def write(self, row: dict) -> None:
        with self.path.open("a") as fh:
            fh.write(dumps_strict(row) + "\n")
        for key, value in row.items():
            if key != "step" and isinstance(value, (int, float)):
                if self.tb is not None:
                    self.tb.add_scalar(key, value, row["step"])
        if self.wandb is not None:
            self.wandb.log(row, step=row["step"])


ONLINE_ROUTES = ("online_oracle", "online_self")
"""Routes whose pairs are sampled from π_θ (the others read them from the pair file)."""


def ends_with_eos(responses, eos_token_id: int | None) -> torch.Tensor:
    """[B, n] booleans: the response holds its EOS token (it was not cut at ``max_new_tokens``)."""
    if eos_token_id is None:
        return torch.zeros(responses.tokens.shape[:2], dtype=torch.bool, device=responses.tokens.device)
    return ((responses.tokens == eos_token_id) & responses.mask.bool()).any(-1)


def route_metrics(stats: dict, route: str, objective: SailConfig) -> dict:
    """A step's loss statistics, named per route where their scale depends on it.

    ``losses/<route>/loss`` is what the step minimised (−surrogate + γ·KL term + penalty): its value
    has no common scale across routes (the surrogate's score term grows with response length and is
    absent on dataset pairs). ``losses/<route>/pair_log_likelihood`` is the mean of
    ℓ = p log σ(βΔ) + (1 − p) log σ(−βΔ) on the step's pairs. On ``online_oracle`` steps,
    ``objective/j_gamma`` = mean ℓ − γ·(the KL estimate) estimates the objective J_γ(θ) that the
    step ascends (pairs from π_θ, oracle labels). Other statistics keep their names."""
    out = {k: v for k, v in stats.items() if k not in ("losses/loss", "losses/pair_term")}
    out[f"losses/{route}/loss"] = stats["losses/loss"]
    out[f"losses/{route}/pair_log_likelihood"] = stats["losses/pair_term"]
    if route == "online_oracle":
        out["objective/j_gamma"] = stats["losses/pair_term"] - objective.gamma * stats[f"charts/kl_{objective.kl_direction}"]
    return out

