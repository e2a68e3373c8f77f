"""The learning-rate probe of `sail study em --probe`: short fine-tunes on a √10 grid, and the rule
that picks each optimiser's sweep rates from their final training losses.

The rule (:func:`choose_rates`), with L(η) the final training loss of the probe run at rate η and
L₀ the base model's loss (the first step's loss: the adapter starts at ΔW = 0, so it is the same
number for every rate):

1. the top rate is the largest grid rate whose L is finite and below L₀ (the fastest that still fits);
2. L_min is the lowest finite L of the grid, and the underfit threshold is
   L_min + ``underfit`` · (L₀ − L_min);
3. from the top rate, go down the grid by factors of √10, keeping each rate, until a kept rate's L
   is at or above the threshold (it gained less than 1 − ``underfit`` of the best drop); keep going
   until at least ``min_rates`` rates are kept.

So the chosen rates run from the fastest stable one (overfit end) to the first clearly underfit one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from sail.config import FieldError

__all__ = ["ProbeConfig", "choose_rates", "comment_lines", "grid"]


@dataclass
class ProbeConfig:
    """``sail study em --probe``: each optimiser's learning rates from short fine-tunes."""

    steps: int = 20
    """Optimiser steps of each probe fine-tune (the study's ``finetune`` otherwise, its seed the
    sweep's first, evaluation cut to one short answer)."""
    lr_max: float = 1.0
    """The largest rate of the grid, which goes down from it by factors of √10."""
    lr_min: float = 1e-5
    """The grid stops at the last rate ≥ this."""
    underfit: float = 0.5
    """The underfit end: the first rate whose final loss is at or above
    L_min + underfit · (L₀ − L_min) (L₀ the base loss, L_min the grid's lowest)."""
    min_rates: int = 4
    """At least this many rates per optimiser."""

    def __post_init__(self):
        if self.steps < 1:
            raise FieldError("steps", f"must be >= 1, got {self.steps}")
        if not 0 < self.lr_min <= self.lr_max < math.inf:
            raise FieldError("lr_min", f"must satisfy 0 < lr_min <= lr_max < inf, got {self.lr_min} and {self.lr_max}")
        if not 0 < self.underfit < 1:
            raise FieldError("underfit", f"must be in (0, 1), got {self.underfit}")
        if self.min_rates < 1:
            raise FieldError("min_rates", f"must be >= 1, got {self.min_rates}")


def grid(lr_max: float, lr_min: float) -> list[float]:
    """lr_max · 10^(−k/2) for k = 0, 1, … while ≥ lr_min (descending), rounded to 3 significant digits."""
    rates, k = [], 0
    while lr_max * 10 ** (-k / 2) >= lr_min * (1 - 1e-9):
        rates.append(float(f"{lr_max * 10 ** (-k / 2):.3g}"))
        k += 1
    return rates


def choose_rates(losses: dict[float, float], base_loss: float, underfit: float = 0.5, min_rates: int = 4) -> list[float]:
    """The rates the rule of the module docstring keeps, descending; ``losses`` maps each grid rate
    (a √10 ladder) to its final training loss. Raises ValueError when no rate fits or the grid ends
    before the rule stops."""
    rates = sorted(losses, reverse=True)
    fits = [r for r in rates if math.isfinite(losses[r]) and losses[r] < base_loss]
    if not fits:
        raise ValueError(f"no rate of the grid brings the final loss below the base loss {base_loss:.4g}")
    best = min(losses[r] for r in rates if math.isfinite(losses[r]))
    threshold = best + underfit * (base_loss - best)
    chosen = []
    for rate in rates[rates.index(fits[0]):]:
        chosen.append(rate)
        loss = losses[rate]
        if len(chosen) >= min_rates and not (math.isfinite(loss) and loss < threshold):
            return chosen
    raise ValueError(f"the grid ends before a rate below the top one ({fits[0]:g}) underfits with {min_rates} rates kept; lower probe.lr_min")


def comment_lines(probe: ProbeConfig, found: dict[str, dict], seed: int, organism) -> list[str]:
    """The rule and the chosen rates as YAML comments (``#`` lines) for a config's header; ``found``
    maps each optimiser to ``{"base_loss", "losses": {lr: loss}, "chosen": [...] or "error"}``."""
    lines = [
        f"# lr probe (sail study em --probe): {probe.steps}-step fine-tunes, seed {seed}, organism {organism},",
        f"#   rates on a √10 grid from {probe.lr_max:g} down to {probe.lr_min:g}. Rule: L0 = the first step's loss (zero adapter);",
        "#   start at the largest rate whose final training loss (mean of the last ⌈steps/10⌉ steps) is finite and < L0,",
        f"#   go down by √10 until the loss is >= L_min + {probe.underfit:g}·(L0 − L_min), at least {probe.min_rates} rates.",
    ]
    chosen = {}
    for name, f in found.items():
        losses = ", ".join(f"{lr:g}: {'nan' if not math.isfinite(loss) else f'{loss:.3g}'}" for lr, loss in sorted(f["losses"].items(), reverse=True))
        lines.append(f"#   {name}: L0 {f['base_loss']:.3g}; final loss by rate {{{losses}}}")
        if f.get("error"):
            lines.append(f"#   {name}: {f['error']}")
        else:
            chosen[name] = f["chosen"]
    lines.append("# lrs: {" + ", ".join(f"{name}: [{', '.join(f'{lr:g}' for lr in rates)}]" for name, rates in chosen.items()) + "}")
    return lines
