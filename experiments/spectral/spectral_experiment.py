"""Spectral behaviour of the inner update on a tiny Qwen3 LoRA fine-tune (CPU, minutes).

Question (arXiv 2606.31591): does Muon leave a flatter LoRA spectrum than AdamW at matched
training loss, and does the flatness penalty raise the participation ratio (PR) of AdamW and
Lion adapters at a small loss cost?

Set-up. A tiny Qwen3 (2 layers, width 64, random init) is first trained on all parameters
(150 AdamW steps) on sequences of a random first-order Markov chain over 64 tokens (8 token
clusters, each with 4 likely successors); this is the frozen base. A LoRA adapter (r = 8,
α = 16, all 7 projections) is then fine-tuned by next-token prediction on a second chain with
new successors. Every run uses the same base, adapter initialisation, data and batch order;
only the optimiser and the penalty weight change. Every ``log_every`` steps the exact spectra
of all 14 LoRA updates are logged (:class:`sail.spectral.SpectralLogger`). The entropy rate of
the chain (1.70 nats) bounds the loss from below; an r = 8 adapter on the frozen base plateaus
near 3.0, and the matched-loss comparison happens on the way to that plateau.

Matched loss. L* is the largest final loss among the runs being compared (each run's loss is a
running mean over ``smooth`` steps); a run's "PR at L*" is the PR logged at the first step where
its running loss is ≤ L*, so every run is compared at the same training loss.

Run:  python experiments/spectral/spectral_experiment.py [--steps 200] [--out out/spectral]
Writes ``<out>/spectra.jsonl``, ``<out>/summary.json``, ``<out>/flatness.png`` (PR against
step), ``<out>/spectra.png`` (σ_i/σ₁ over training per run) and ``<out>/loss.png``.
"""

from __future__ import annotations

import argparse
import json
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from matplotlib.figure import Figure

from sail.models.tiny import tiny_qwen3_config
from sail.optim import make_optimizer
from sail.spectral import SpectralLogger, penalty
from sail.spectral.plots import plot_flatness, plot_spectra
from sail.plotting import finish_axes, save_figure

PROJECTIONS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


@dataclass
class FineTuneConfig:
    """One fine-tune: an optimiser, its hyperparameters and the penalty weight λ."""

    label: str
    """The run's name in the logs, the summary and the plots."""
    optimizer: str
    """A :func:`sail.optim.make_optimizer` name (``adamw``, ``muon``, ``lion``, ``sgd``)."""
    hparams: dict
    """Keyword arguments of that optimiser (lr, weight decay, …)."""
    penalty_weight: float = 0.0
    """λ: the training loss is the next-token loss + λ·(flatness penalty); 0 for none."""


def default_runs() -> list[FineTuneConfig]:
    """AdamW, Muon and Lion with λ = 0, and AdamW and Lion with the default penalty (λ = 0.05).

    Lion's lr is 10× smaller than AdamW's (its sign update has size 1 in every coordinate); Muon
    uses ``match_rms_adamw`` so that it shares AdamW's lr. No weight decay, so that only the update
    rule differs.
    """
    adamw = dict(lr=1e-2, weight_decay=0.0)
    lion = dict(lr=1e-3, weight_decay=0.0)
    muon = dict(lr=1e-2, weight_decay=0.0, adjust_lr_fn="match_rms_adamw")
    return [
        FineTuneConfig("adamw", "adamw", adamw),
        FineTuneConfig("muon", "muon", muon),
        FineTuneConfig("lion", "lion", lion),
        FineTuneConfig("adamw+penalty", "adamw", adamw, 0.05),
        FineTuneConfig("lion+penalty", "lion", lion, 0.05),
    ]


@dataclass
class ExperimentConfig:
    """The shared set-up of every run."""

    steps: int = 200
    """Optimiser steps per run."""
    batch_size: int = 32
    """Sequences per step."""
    seq_len: int = 32
    """Tokens per sequence (and the model's context length)."""
    vocab: int = 64
    """Tokens of the Markov chain (and the model's vocabulary)."""
    clusters: int = 8
    """Token clusters of the chain: the next-token law depends only on the current token's cluster."""
    successors: int = 4
    """Likely successors per cluster (the rest share ``noise`` of the mass)."""
    noise: float = 0.05
    """Probability mass spread uniformly over all tokens in every row of the chain."""
    hidden: int = 64
    """Width of the tiny Qwen3 (4 heads, 2 key-value heads, MLP width 2·hidden)."""
    layers: int = 2
    """Decoder layers of the tiny Qwen3."""
    rank: int = 8
    """LoRA rank r on all 7 projections."""
    alpha: float = 16.0
    """LoRA α (scaling α/r)."""
    pretrain_steps: int = 150
    """Full-parameter AdamW steps of the base on the pretraining chain (before any adapter)."""
    pretrain_lr: float = 3e-3
    """Learning rate of that pretraining."""
    log_every: int = 10
    """Steps between two logged spectra (and the last step)."""
    smooth: int = 20
    """Running-mean window for the training loss."""
    seed: int = 0
    """Seed of the chains, the base, the adapter initialisation and the batches."""
    threads: int = 1
    """torch CPU threads during the runs."""
    runs: list[FineTuneConfig] = field(default_factory=default_runs)
    """The fine-tunes compared (:func:`default_runs`)."""


def markov_chain(cfg: ExperimentConfig, gen: torch.Generator) -> torch.Tensor:
    """Transition matrix [V, V] of rank ≤ ``clusters`` + 1: token i belongs to cluster i mod C,
    and each cluster has ``successors`` random likely next tokens (``noise`` spread uniformly)."""
    V, C = cfg.vocab, cfg.clusters
    rows = torch.full((C, V), cfg.noise / V)
    for c in range(C):
        nxt = torch.randperm(V, generator=gen)[: cfg.successors]
        rows[c, nxt] += (1 - cfg.noise) / cfg.successors
    probs = rows[torch.arange(V) % C]
    return probs / probs.sum(1, keepdim=True)


def sample_sequences(probs: torch.Tensor, n: int, length: int, gen: torch.Generator) -> torch.Tensor:
    seqs = torch.empty(n, length, dtype=torch.long)
    seqs[:, 0] = torch.randint(probs.shape[0], (n,), generator=gen)
    for t in range(1, length):
        seqs[:, t] = torch.multinomial(probs[seqs[:, t - 1]], 1, generator=gen)[:, 0]
    return seqs


def base_config(cfg: ExperimentConfig):
    """The tiny Qwen3's ``Qwen3Config``: 4 heads, 2 key-value heads, untied embeddings."""
    return tiny_qwen3_config(
        cfg.vocab, cfg.hidden, cfg.layers, heads=4, kv_heads=2, max_position_embeddings=cfg.seq_len, tie_word_embeddings=False
    )


def build_base(cfg: ExperimentConfig):
    from transformers import Qwen3ForCausalLM

    torch.manual_seed(cfg.seed)
    return Qwen3ForCausalLM(base_config(cfg))


def pretrain_base(cfg: ExperimentConfig, batches: torch.Tensor):
    """Full-parameter AdamW training of the base on the pretraining chain; returns its state."""
    base = build_base(cfg)
    opt = torch.optim.AdamW(base.parameters(), lr=cfg.pretrain_lr)
    for step in range(cfg.pretrain_steps):
        ids = batches[step % batches.shape[0]]
        opt.zero_grad(set_to_none=True)
        base(input_ids=ids, labels=ids).loss.backward()
        opt.step()
    return {k: v.detach().clone() for k, v in base.state_dict().items()}


def build_model(cfg: ExperimentConfig, base_state: dict | None = None):
    """The base (pretrained weights if given) with a fresh LoRA adapter (seeded)."""
    from peft import LoraConfig, get_peft_model

    base = build_base(cfg)
    if base_state is not None:
        base.load_state_dict(base_state)
    torch.manual_seed(cfg.seed + 1)
    lora = LoraConfig(r=cfg.rank, lora_alpha=cfg.alpha, target_modules=PROJECTIONS, lora_dropout=0.0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return get_peft_model(base, lora)


def train_run(cfg: ExperimentConfig, spec: FineTuneConfig, batches: torch.Tensor, init_state: dict, log_path: Path | None):
    """Fine-tune from ``init_state``; returns (losses per step, logger rows)."""
    model = build_model(cfg)
    model.load_state_dict(init_state)
    model.train()
    opt = make_optimizer(spec.optimizer, model, **spec.hparams)
    logger = SpectralLogger(model, log_path, every=cfg.log_every, label=spec.label)
    losses = []
    logger.log(0)
    for step in range(cfg.steps):
        ids = batches[step % batches.shape[0]]
        opt.zero_grad(set_to_none=True)
        loss = model(input_ids=ids, labels=ids).loss
        total = loss + spec.penalty_weight * penalty(model) if spec.penalty_weight else loss
        total.backward()
        opt.step()
        losses.append(loss.item())
        logger(step + 1)
    if cfg.steps % cfg.log_every:
        logger.log(cfg.steps)
    return losses, logger.rows


def running_mean(values: list[float], window: int) -> list[float]:
    out, acc = [], 0.0
    for i, v in enumerate(values):
        acc += v
        if i >= window:
            acc -= values[i - window]
        out.append(acc / min(i + 1, window))
    return out


def pr_at_loss(rows: list[dict], smooth: list[float], target: float) -> tuple[int, float] | None:
    """(step, PR of all modules) at the first logged step whose running loss is ≤ target."""
    for row in sorted((r for r in rows if r["kind"] == "all"), key=lambda r: r["step"]):
        if row["step"] > 0 and smooth[row["step"] - 1] <= target:
            return row["step"], row["participation_ratio"]
    return None


def run(cfg: ExperimentConfig, out: Path | None = None) -> dict:
    """All runs; returns the summary (and writes logs and plots under ``out``)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(cfg.threads)
    try:
        return _run(cfg, out)
    finally:
        torch.set_num_threads(threads)


def _run(cfg: ExperimentConfig, out: Path | None) -> dict:
    gen = torch.Generator().manual_seed(cfg.seed)
    n_batches = 16
    shape = (n_batches, cfg.batch_size, cfg.seq_len)
    pre_probs = markov_chain(cfg, gen)
    pre_batches = sample_sequences(pre_probs, n_batches * cfg.batch_size, cfg.seq_len, gen).view(shape)
    probs = markov_chain(cfg, gen)
    batches = sample_sequences(probs, n_batches * cfg.batch_size, cfg.seq_len, gen).view(shape)
    entropy_rate = -(probs * probs.log()).sum(1).mean().item()
    base_state = pretrain_base(cfg, pre_batches)
    init_state = {k: v.clone() for k, v in build_model(cfg, base_state).state_dict().items()}
    log_path = None
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        log_path = out / "spectra.jsonl"
        log_path.unlink(missing_ok=True)
    results, all_rows = {}, []
    for spec in cfg.runs:
        start = time.perf_counter()
        losses, rows = train_run(cfg, spec, batches, init_state, log_path)
        smooth = running_mean(losses, cfg.smooth)
        final = [r for r in rows if r["kind"] == "all" and r["step"] == cfg.steps][0]
        results[spec.label] = {
            "optimizer": spec.optimizer,
            "hparams": spec.hparams,
            "penalty_weight": spec.penalty_weight,
            "final_loss": smooth[-1],
            "final_pr": final["participation_ratio"],
            "final_entropy": final["normalised_entropy"],
            "final_stable_rank": final["stable_rank"],
            "seconds": time.perf_counter() - start,
            "losses": losses,
        }
        all_rows.extend(rows)
    matched = matched_comparisons(cfg, results, all_rows)
    summary = {
        "config": {k: v for k, v in asdict(cfg).items() if k != "runs"},
        "entropy_rate": entropy_rate,
        "max_pr": min(cfg.rank, cfg.hidden),
        "runs": {k: {kk: vv for kk, vv in v.items() if kk != "losses"} for k, v in results.items()},
        "matched": matched,
    }
    if out is not None:
        (out / "summary.json").write_text(json.dumps(summary, indent=2))
        dashed = {spec.label: "--" for spec in cfg.runs if spec.penalty_weight}
        title = "participation ratio of ΔW (mean over all LoRA modules)"
        plot_flatness(all_rows, out / "flatness.png", rank=cfg.rank, title=title, linestyles=dashed)
        plot_spectra(all_rows, out / "spectra.png")
        plot_losses(results, cfg, out / "loss.png")
    return summary


def matched_comparisons(cfg: ExperimentConfig, results: dict, rows: list[dict]) -> dict:
    """PR at matched loss: Muon vs AdamW (and Lion), and each optimiser with vs without penalty."""
    smooth = {k: running_mean(v["losses"], cfg.smooth) for k, v in results.items()}
    by_label = {k: [r for r in rows if r["label"] == k] for k in results}
    groups = {
        "optimizers": [k for k in ("adamw", "muon", "lion") if k in results],
        "adamw_penalty": [k for k in ("adamw", "adamw+penalty") if k in results],
        "lion_penalty": [k for k in ("lion", "lion+penalty") if k in results],
    }
    out = {}
    for name, labels in groups.items():
        if len(labels) < 2:
            continue
        target = max(results[k]["final_loss"] for k in labels)
        out[name] = {"target_loss": target}
        for k in labels:
            hit = pr_at_loss(by_label[k], smooth[k], target)
            out[name][k] = {"step": hit[0], "pr": hit[1], "final_loss": results[k]["final_loss"]} if hit else None
    return out


def plot_losses(results: dict, cfg: ExperimentConfig, path: Path) -> None:
    """The running training loss of every run against step (dashed with the penalty)."""
    fig = Figure(figsize=(6, 4))
    ax = fig.add_subplot()
    for label, res in results.items():
        style = "--" if res["penalty_weight"] else "-"
        ax.plot(range(1, cfg.steps + 1), running_mean(res["losses"], cfg.smooth), style, label=label)
    finish_axes(ax, "step", f"training loss (running mean, {cfg.smooth} steps)", "", grid="major")
    save_figure(fig, path)


def format_summary(summary: dict) -> str:
    lines = [
        f"entropy rate of the chain (best achievable loss): {summary['entropy_rate']:.3f} nats; "
        f"max PR = {summary['max_pr']}",
        f"{'run':<16}{'final loss':>12}{'final PR':>10}{'entropy':>9}{'stable rank':>13}{'s':>7}",
    ]
    for label, r in summary["runs"].items():
        lines.append(
            f"{label:<16}{r['final_loss']:>12.4f}{r['final_pr']:>10.3f}{r['final_entropy']:>9.3f}"
            f"{r['final_stable_rank']:>13.3f}{r['seconds']:>7.1f}"
        )
    for name, group in summary["matched"].items():
        parts = []
        for k, v in group.items():
            if k != "target_loss":
                parts.append(f"{k}: " + (f"PR {v['pr']:.3f} @ step {v['step']}" if v else "not reached"))
        lines.append(f"matched loss {group['target_loss']:.4f} [{name}] " + "; ".join(parts))
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--out", type=Path, default=Path("out/spectral"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    summary = run(ExperimentConfig(steps=args.steps, seed=args.seed, threads=args.threads), args.out)
    print(format_summary(summary))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
