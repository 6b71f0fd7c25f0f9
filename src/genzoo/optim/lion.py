"""Lion (EvoLved Sign Momentum): Chen et al. 2023, "Symbolic Discovery of Optimization Algorithms".

Algorithm 2 of the paper, with decoupled weight decay (as AdamW):

    c_t     = beta1 m_{t-1} + (1 - beta1) g_t               (interpolation used for the update)
    theta_t = theta_{t-1} - lr (sign(c_t) + lambda theta_{t-1})
    m_t     = beta2 m_{t-1} + (1 - beta2) g_t               (momentum tracked with beta2)

Defaults beta1 = 0.9, beta2 = 0.99 (the paper's). The update has unit magnitude per coordinate,
so the paper recommends a learning rate 3-10x smaller than AdamW's and a weight decay 3-10x
larger (same lr * lambda). One state tensor per parameter (half of Adam's memory).
"""
from __future__ import annotations

import torch


class Lion(torch.optim.Optimizer):
    def __init__(self, params, lr: float = 1e-4, betas: tuple[float, float] = (0.9, 0.99), weight_decay: float = 0.0):
        if lr <= 0:
            raise ValueError(f"Lion lr must be > 0, got {lr}")
        if not all(0.0 <= b < 1.0 for b in betas) or len(betas) != 2:
            raise ValueError(f"Lion betas must be two numbers in [0, 1), got {betas}")
        super().__init__(params, dict(lr=lr, betas=tuple(betas), weight_decay=weight_decay))

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            lr, (b1, b2), wd = group["lr"], group["betas"], group["weight_decay"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if not state:
                    state["exp_avg"] = torch.zeros_like(p)
                m = state["exp_avg"]
                if wd:
                    p.mul_(1 - lr * wd)
                update = m.mul(b1).add_(p.grad, alpha=1 - b1).sign_()
                p.add_(update, alpha=-lr)
                m.mul_(b2).add_(p.grad, alpha=1 - b2)
        return loss
