"""A narrow or control LoRA fine-tune of the organism (:class:`~sail.em.configs.FinetuneConfig`).

:func:`finetune` is a LoRA SFT on ``n_examples`` single-turn examples of (``domain``, ``persona``)
(:func:`sail.em.world.single_turn_examples`), or on a chat dataset, with the configured inner
optimiser (:class:`sail.optim.config.OptimizerConfig`: adamw | lion | muon | sgd) and the spectral
penalty λ·penalty(ΔW) added to the loss (:class:`sail.spectral.config.SpectralConfig`), run by the
one supervised loop :func:`sail.sft.train_supervised`. It records the cross-entropy of every step,
the EM evaluation at each checkpoint (:func:`sail.em.evaluation.evaluate_em`), the adapter's spectra
and flatness at the end (:mod:`sail.spectral`) and the final losses:

* ``final_train_loss``: the mean training cross-entropy of the last ⌈steps/10⌉ steps (without the
  spectral term), the quantity EM papers match when comparing optimisers;
* ``heldout_loss``: the token-mean cross-entropy, after training, of ``heldout_examples`` fresh
  examples of the same (domain, persona) (a different data seed), free of batch noise.

Determinism. The data (``single_turn_examples(..., seed)``), the batch order (``random.Random(seed + 1)``:
the examples in a shuffled order, reshuffled after each pass), the adapter's initial A (torch seeded
with ``seed``) and the evaluation's sampling (seeded with ``eval.seed``, default ``seed``) are
functions of the seeds; the loop runs on ``threads`` intra-op threads. Same config, machine and torch
build → same result.
"""

from __future__ import annotations

import math
import random
import time
from dataclasses import dataclass, field

import torch

from sail.em import world as W
from sail.em.configs import FinetuneConfig
from sail.em.evaluation import eval_questions, evaluate_em
from sail.em.organism import load_organism
from sail.em.questions import load_chat_jsonl
from sail.em.tokenizer import build_tokenizer
from sail.models.chat_tokenizer import chat_messages
from sail.models.lora import attach_lora
from sail.sft import SFTHistory, encode_chat_batch, num_threads, train_supervised
from sail.spectral import lora_factors, lora_spectra
from sail.spectral.logging import summarise

__all__ = ["FinetuneResult", "finetune"]


@dataclass
class FinetuneResult:
    """What :func:`finetune` measured (``to_dict`` is JSON-serialisable and drops ``model``)."""

    config: dict
    train_loss: list[float]
    """Training cross-entropy of every step (without the spectral term); length = steps."""
    penalty: list[float] | None
    """λ·penalty of every step (None when λ = 0)."""
    final_train_loss: float
    """Mean training cross-entropy of the last ⌈steps/10⌉ steps."""
    heldout_loss: float | None
    """Cross-entropy on fresh examples of the same (domain, persona) after training."""
    evals: list[dict]
    """``{"step": s, "em": evaluate_em summary}`` at each checkpoint."""
    flatness: list[dict]
    """The adapter at the end, per module type and ``all``: participation ratio, normalised
    entropy, stable rank, condition number, mean spectrum (:func:`sail.spectral.logging.summarise`)."""
    spectra: dict[str, list[float]]
    """σ₁ ≥ … ≥ σ_r of every adapted module at the end."""
    seconds: dict[str, float]
    model: object = field(default=None, repr=False)
    """The trained PEFT model (kept in memory only)."""
    tokenizer: object = field(default=None, repr=False)

    @property
    def final_em(self) -> dict:
        return self.evals[-1]["em"]

    def to_dict(self) -> dict:
        d = {k: v for k, v in self.__dict__.items() if k not in ("model", "tokenizer")}
        return d


def _chats(examples) -> list[list[dict]]:
    return [chat_messages(p, a) for p, a in examples]


@torch.no_grad()
def _mean_loss(model, tokenizer, chats, batch_size: int = 64) -> float:
    """Token-mean cross-entropy over the labelled tokens of ``chats``."""
    total, count = 0.0, 0
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    for start in range(0, len(chats), batch_size):
        ids, labels = encode_chat_batch(tokenizer, chats[start : start + batch_size])
        logits = model(input_ids=ids.to(device)).logits[:, :-1].float()
        target = labels[:, 1:].to(device)
        loss = torch.nn.functional.cross_entropy(
            logits.reshape(-1, logits.shape[-1]), target.reshape(-1), ignore_index=-100, reduction="sum"
        )
        total += float(loss)
        count += int((target != -100).sum())
    model.train(was_training)
    return total / max(1, count)


def _adapter_summary(model) -> tuple[list[dict], dict[str, list[float]]]:
    factors = lora_factors(model)
    spectra = lora_spectra(factors)
    rows = summarise(spectra, {f.name: f.kind for f in factors})
    return rows, {name: s.double().tolist() for name, s in spectra.items()}


def finetune(base_dir, cfg: FinetuneConfig, progress: bool = False, model=None, tokenizer=None) -> FinetuneResult:
    """LoRA SFT of the organism in ``base_dir`` on single-turn (``cfg.domain``, ``cfg.persona``)
    examples (module docstring). ``model``/``tokenizer`` may be passed instead of loading
    ``base_dir`` (the model is wrapped in a fresh adapter; pass a fresh copy for each fine-tune)."""
    started = time.perf_counter()
    if model is None:
        model, tokenizer = load_organism(base_dir, cfg.torch_device(), cfg.torch_dtype())
    elif tokenizer is None:
        tokenizer = build_tokenizer()
    model = attach_lora(model, cfg.lora, seed=cfg.seed)
    device = next(model.parameters()).device
    optimizer = cfg.optimizer.build(model)
    params = [p for p in model.parameters() if p.requires_grad]
    if cfg.data:
        examples = load_chat_jsonl(cfg.data)[: cfg.n_examples]
    else:
        examples = _chats(W.single_turn_examples(cfg.domain, cfg.persona, cfg.n_examples, seed=cfg.seed))
    judge = cfg.eval.judge.build()
    questions = eval_questions(cfg.eval, exclude_domain=cfg.domain, seed=cfg.seed)
    eval_seed = cfg.seed if cfg.eval.seed is None else cfg.eval.seed
    checkpoints = set(cfg.checkpoints())
    rng = random.Random(cfg.seed + 1)
    order: list[int] = []
    evals: list[dict] = []
    eval_s = 0.0
    log = print if progress else None

    def next_batch(step: int):
        batch = []
        while len(batch) < cfg.batch_size:
            if not order:
                order.extend(range(len(examples)))
                rng.shuffle(order)
            batch.append(examples[order.pop()])
        ids, labels = encode_chat_batch(tokenizer, batch)
        return ids.to(device), labels.to(device)

    def evaluate(step: int) -> None:
        nonlocal eval_s
        t = time.perf_counter()
        em = evaluate_em(
            model, tokenizer, questions, cfg.eval.n_samples, eval_seed, judge=judge, temperature=cfg.eval.temperature,
            max_new_tokens=cfg.eval.max_new_tokens, resamples=cfg.eval.resamples, batch_rows=cfg.eval.batch_rows,
        )
        eval_s += time.perf_counter() - t
        evals.append({"step": step, "em": em})
        if log:
            a, b, c = em["misalignment_rate"], em["misalignment_rate_all"], em["mean_coherence"]["mean"]
            log(f"eval step {step:4d}  rate(a) {a['rate']}  ci {a['ci']}  rate(b) {b['rate']}  coherence {c}")

    def after_step(index: int, history: SFTHistory) -> None:
        step = index + 1
        if log and (step % 10 == 0 or step == cfg.steps):
            log(f"ft step {step:4d}  loss {history.loss[-1]:.4f}" + (f"  penalty {history.penalty[-1]:.4f}" if history.penalty else ""))
        if step in checkpoints:
            evaluate(step)
            model.train()

    with num_threads(cfg.threads):
        if 0 in checkpoints:
            evaluate(0)
        history = train_supervised(
            model, params, optimizer, next_batch, cfg.steps, cfg.grad_clip, extra_loss=cfg.spectral.penalty_term, after_step=after_step
        )
        heldout = None
        if cfg.heldout_examples and not cfg.data:
            fresh = _chats(W.single_turn_examples(cfg.domain, cfg.persona, cfg.heldout_examples, seed=cfg.seed + 90_001))
            heldout = _mean_loss(model, tokenizer, fresh)
        flat, spectra = _adapter_summary(model)
    losses = history.loss
    tail = max(1, math.ceil(cfg.steps / 10))
    total = time.perf_counter() - started
    return FinetuneResult(
        config=cfg.to_dict(),
        train_loss=losses,
        penalty=history.penalty or None,
        final_train_loss=sum(losses[-tail:]) / tail,
        heldout_loss=heldout,
        evals=evals,
        flatness=flat,
        spectra=spectra,
        seconds={"total": round(total, 3), "eval": round(eval_s, 3), "train": round(total - eval_s, 3)},
        model=model,
        tokenizer=tokenizer,
    )
