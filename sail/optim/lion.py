"""Lion (EvoLved Sign Momentum; Chen et al., 2023, "Symbolic Discovery of Optimization Algorithms").

With gradient g, momentum m, learning rate η, weight decay λ and (β₁, β₂):

    c ← β₁ m + (1 − β₁) g              (interpolated momentum)
    θ ← θ − η (sign(c) + λ θ)          (= (1 − ηλ) θ − η sign(c): decoupled weight decay)
    m ← β₂ m + (1 − β₂) g

Every coordinate moves by exactly ±η (or 0 where c = 0) plus the decay, so Lion wants a learning
rate 3–10× smaller and a weight decay 3–10× larger than AdamW's. Defaults: η = 1e-4,
(β₁, β₂) = (0.9, 0.99), λ = 0.
"""

from __future__ import annotations

import torch
from torch.optim import Optimizer


class Lion(Optimizer):
    """Lion; see the module docstring for the update. ``foreach`` batches the element-wise ops."""

    def __init__(self, params, lr: float = 1e-4, betas=(0.9, 0.99), weight_decay: float = 0.0, foreach: bool = True):
        if not lr >= 0:
            raise ValueError(f"lr must be >= 0, got {lr}")
        if not (0 <= betas[0] <= 1 and 0 <= betas[1] <= 1):
            raise ValueError(f"betas must be in [0, 1], got {betas}")
        if not weight_decay >= 0:
            raise ValueError(f"weight_decay must be >= 0, got {weight_decay}")
        super().__init__(params, dict(lr=lr, betas=tuple(betas), weight_decay=weight_decay, foreach=foreach))

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if not params:
                continue
            grads = [p.grad for p in params]
            if any(g.is_sparse for g in grads):
                raise RuntimeError("Lion does not support sparse gradients")
            moms = []
            for p in params:
                state = self.state[p]
                if "exp_avg" not in state:
                    state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                moms.append(state["exp_avg"])
            lr, wd = group["lr"], group["weight_decay"]
            beta1, beta2 = group["betas"]
            if group["foreach"]:
                direction = torch._foreach_lerp(grads, moms, beta1)  # g + β₁(m − g) = β₁m + (1 − β₁)g
                torch._foreach_sign_(direction)
                if wd != 0:
                    torch._foreach_mul_(params, 1.0 - lr * wd)
                torch._foreach_add_(params, direction, alpha=-lr)
                torch._foreach_lerp_(moms, grads, 1.0 - beta2)  # m + (1 − β₂)(g − m)
            else:
                for p, g, m in zip(params, grads, moms):
                    direction = g.lerp(m, beta1).sign_()
                    p.mul_(1.0 - lr * wd).add_(direction, alpha=-lr)
                    m.lerp_(g, 1.0 - beta2)
        return loss
