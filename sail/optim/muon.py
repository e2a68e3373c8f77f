"""Muon with ``torch.optim.Muon``'s update, batched across factors and run in the Gram space.

For a 2-D parameter W (rows × cols) with gradient g, momentum μ, learning rate η and weight
decay λ, one step is (the same update as ``torch.optim.Muon``):

    M ← μ M + (1 − μ) g                          (momentum buffer, an EMA)
    U ← (1 − μ) g + μ M   if nesterov, else M
    O ← NS_K(U)                                  (:mod:`sail.optim.newton_schulz`)
    W ← (1 − ηλ) W − η·s(rows, cols)·O           (decoupled weight decay, with the unscaled η)

with the learning-rate scaling s:

    ``original``         s = √max(1, rows/cols)       (Keller Jordan's Muon; torch's default)
    ``match_rms_adamw``  s = 0.2·√max(rows, cols)     (Moonshot; the update's RMS ≈ AdamW's)

For a LoRA adapter, A is r × d_in (s = 1 under ``original``) and B is d_out × r
(s = √(d_out/r) under ``original``).

Speed: factors are bucketed by shape; for thin factors (long side ≥ ``gram_ratio`` × short
side) each factor contributes one Gram product and one final product, and the m × m core runs
once for the whole bucket (stacked). On CPU the two products run per factor, straight from the
gradient and into the parameter (``addmm_``), which avoids copying into stacks; on CUDA they run
as one ``bmm`` per bucket (fewer kernel launches). Near-square factors use the stacked
data-space iteration. Precision ``auto`` is bfloat16 on CUDA and float32 elsewhere; both agree
with torch's bfloat16 iteration to within its rounding.

Parameter groups with ``use_muon=False`` are updated by AdamW (torch's functional AdamW with
that group's ``lr``, ``betas``, ``adam_eps`` and ``weight_decay``): biases, norms, embeddings
and, for PEFT models, everything except the LoRA factors (see :mod:`sail.optim.routing`).
"""

from __future__ import annotations

import math
from collections import defaultdict

import torch
from torch.optim import Optimizer
from torch.optim.adam import adam as functional_adam

from sail.optim.newton_schulz import (
    DEFAULT_GRAM_RATIO,
    NS_COEFFICIENTS,
    NS_EPS,
    NS_STEPS,
    left_factor,
    newton_schulz_direct,
    use_gram,
    work_dtype,
)

ADJUST_LR_FNS = ("original", "match_rms_adamw")
BATCHING = ("auto", "loop", "stack")


def adjusted_lr(lr: float, adjust_lr_fn: str | None, shape) -> float:
    """η·s(rows, cols): ``original`` √max(1, rows/cols), ``match_rms_adamw`` 0.2·√max(rows, cols)."""
    rows, cols = shape[:2]
    if adjust_lr_fn is None or adjust_lr_fn == "original":
        return lr * math.sqrt(max(1.0, rows / cols))
    if adjust_lr_fn == "match_rms_adamw":
        return lr * 0.2 * math.sqrt(max(rows, cols))
    raise ValueError(f"adjust_lr_fn must be one of {ADJUST_LR_FNS} or None, got {adjust_lr_fn!r}")


class Muon(Optimizer):
    """Muon for 2-D parameters (``use_muon`` groups) plus AdamW for the rest.

    Args:
        params: parameters or groups; a group may set ``use_muon=False`` for AdamW.
        lr: η (default 1e-3, as torch).
        weight_decay: λ, decoupled: W ← (1 − ηλ)W (default 0.1, as torch).
        momentum: μ (default 0.95).
        nesterov: use (1 − μ)g + μM instead of M (default True).
        ns_coefficients, ns_steps, eps: the Newton–Schulz quintic, its step count and the
            normalisation floor (torch's defaults).
        adjust_lr_fn: ``original`` (default, = torch's None) or ``match_rms_adamw``.
        precision: dtype of the m × n products, ``auto`` | ``fp32`` | ``bf16``.
        gram_ratio: Gram-space iteration when long/short side ≥ this (``inf`` disables it).
        batching: ``auto`` (per-factor products on CPU, stacked ``bmm`` elsewhere), ``loop`` or
            ``stack``.
        betas, adam_eps: AdamW's (β₁, β₂) and ε for ``use_muon=False`` groups.
    """

    def __init__(
        self,
        params,
        lr: float = 1e-3,
        weight_decay: float = 0.1,
        momentum: float = 0.95,
        nesterov: bool = True,
        ns_coefficients=NS_COEFFICIENTS,
        eps: float = NS_EPS,
        ns_steps: int = NS_STEPS,
        adjust_lr_fn: str | None = None,
        precision: str = "auto",
        gram_ratio: float = DEFAULT_GRAM_RATIO,
        batching: str = "auto",
        betas: tuple[float, float] = (0.9, 0.999),
        adam_eps: float = 1e-8,
    ):
        if not lr >= 0:
            raise ValueError(f"lr must be >= 0, got {lr}")
        if not weight_decay >= 0:
            raise ValueError(f"weight_decay must be >= 0, got {weight_decay}")
        if not 0 <= momentum < 1:
            raise ValueError(f"momentum must be in [0, 1), got {momentum}")
        adjusted_lr(1.0, adjust_lr_fn, (1, 1))
        work_dtype(precision)
        if batching not in BATCHING:
            raise ValueError(f"batching must be one of {BATCHING}, got {batching!r}")
        defaults = dict(
            lr=lr,
            weight_decay=weight_decay,
            momentum=momentum,
            nesterov=nesterov,
            ns_coefficients=tuple(ns_coefficients),
            eps=eps,
            ns_steps=ns_steps,
            adjust_lr_fn=adjust_lr_fn,
            precision=precision,
            gram_ratio=gram_ratio,
            batching=batching,
            betas=tuple(betas),
            adam_eps=adam_eps,
            use_muon=True,
        )
        super().__init__(params, defaults)
        self._scratch: dict = {}  # per-bucket Nesterov update buffers; not part of the state
        for group in self.param_groups:
            if group["use_muon"]:
                for p in group["params"]:
                    if p.ndim != 2:
                        raise ValueError(f"Muon groups take 2-D parameters only, got shape {tuple(p.shape)}")

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            if group["use_muon"]:
                self._muon_group(group)
            else:
                self._adamw_group(group)
        return loss

    # --- Muon ----------------------------------------------------------------------------
    def _muon_group(self, group) -> None:
        params = [p for p in group["params"] if p.grad is not None]
        if not params:
            return
        grads = [p.grad for p in params]
        if any(g.is_sparse for g in grads):
            raise RuntimeError("Muon does not support sparse gradients")
        bufs = []
        for p in params:
            state = self.state[p]
            if "momentum_buffer" not in state:
                state["momentum_buffer"] = torch.zeros_like(p)
            bufs.append(state["momentum_buffer"])
        torch._foreach_lerp_(bufs, grads, 1.0 - group["momentum"])  # M ← μM + (1 − μ)g
        buckets: dict = defaultdict(list)
        for i, p in enumerate(params):
            buckets[(tuple(p.shape), p.device, p.dtype)].append(i)
        for key, idx in buckets.items():
            U = self._updates(group, key, [grads[i] for i in idx], [bufs[i] for i in idx])
            self._muon_bucket(group, key[0], key[1], [params[i] for i in idx], U)

    def _updates(self, group, key, grads, bufs) -> torch.Tensor:
        """The stacked updates [n, rows, cols]: U = (1 − μ)g + μM (Nesterov) or M.

        The stack is a persistent per-bucket scratch buffer (not part of the optimiser state),
        so no fresh memory is faulted in at every step.
        """
        shape, device, dtype = key
        slot = (id(group), key)
        scratch = self._scratch.get(slot)
        if scratch is None or scratch.shape[0] != len(grads):
            scratch = self._scratch[slot] = torch.empty((len(grads), *shape), device=device, dtype=dtype)
        if group["nesterov"]:
            for g, m, out in zip(grads, bufs, scratch.unbind(0)):
                torch.lerp(g, m, group["momentum"], out=out)
        else:
            torch.stack(bufs, out=scratch)
        return scratch

    def _muon_bucket(self, group, shape, device, params, U: torch.Tensor) -> None:
        lr, wd = group["lr"], group["weight_decay"]
        decay = 1.0 - lr * wd
        step_size = adjusted_lr(lr, group["adjust_lr_fn"], shape)
        coeffs, steps, eps = group["ns_coefficients"], group["ns_steps"], group["eps"]
        dtype = work_dtype(group["precision"], device)
        tall = shape[0] > shape[1]
        Uw = (U.mT if tall else U).to(dtype)  # wide: [n, m, n'] with m ≤ n'
        if not use_gram(shape, group["gram_ratio"]):
            out = newton_schulz_direct(Uw, coeffs, steps, eps)
            self._apply(params, list((out.mT if tall else out).unbind(0)), decay, step_size)
            return
        batching = group["batching"]
        if batching == "auto":
            batching = "loop" if device.type == "cpu" else "stack"
        if batching == "stack":
            F = left_factor(torch.bmm(Uw, Uw.mT), coeffs, steps, eps)
            out = torch.bmm(F.to(dtype), Uw)
            self._apply(params, list((out.mT if tall else out).unbind(0)), decay, step_size)
            return
        wide = Uw.unbind(0)
        gram = torch.stack([u @ u.mT for u in wide])
        F = left_factor(gram, coeffs, steps, eps).mul_(-step_size).to(dtype)
        for p, u, f in zip(params, wide, F.unbind(0)):
            if p.dtype != dtype:
                out = f @ u
                p.mul_(decay).add_(out.mT if tall else out)
            elif tall:
                p.addmm_(u.mT, f.mT, beta=decay)  # W ← (1 − ηλ)W + U Fᵀ
            else:
                p.addmm_(f, u, beta=decay)  # W ← (1 − ηλ)W + F U

    @staticmethod
    def _apply(params, outs, decay: float, step_size: float) -> None:
        """W ← (1 − ηλ) W − step_size·O for every (W, O)."""
        if decay != 1.0:
            torch._foreach_mul_(params, decay)
        outs = [o.to(p.dtype) for p, o in zip(params, outs)]
        torch._foreach_add_(params, outs, alpha=-step_size)

    # --- AdamW for everything else ---------------------------------------------------------
    def _adamw_group(self, group) -> None:
        params, grads, exp_avgs, exp_avg_sqs, steps = [], [], [], [], []
        for p in group["params"]:
            if p.grad is None:
                continue
            if p.grad.is_sparse:
                raise RuntimeError("AdamW does not support sparse gradients")
            state = self.state[p]
            if "step" not in state:
                state["step"] = torch.tensor(0.0, dtype=torch.float32)
                state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            params.append(p)
            grads.append(p.grad)
            exp_avgs.append(state["exp_avg"])
            exp_avg_sqs.append(state["exp_avg_sq"])
            steps.append(state["step"])
        if not params:
            return
        beta1, beta2 = group["betas"]
        functional_adam(
            params,
            grads,
            exp_avgs,
            exp_avg_sqs,
            [],
            steps,
            decoupled_weight_decay=True,
            amsgrad=False,
            beta1=beta1,
            beta2=beta2,
            lr=group["lr"],
            weight_decay=group["weight_decay"],
            eps=group["adam_eps"],
            maximize=False,
        )
