"""Shortcut models (Frans, Hafner, Levine & Abbeel 2024, "One Step Diffusion via Shortcut Models").

A flow-matching network that also takes the step size d: s(x_t, t, d) is the average velocity
over a step of size d, so that one step x_{t-d} = x_t - d s(x_t, t, d) lands where the ODE would
(genzoo's time: data at t = 0, noise at t = 1; the paper integrates from noise at t = 0 to data
at t = 1, so its x_{t+d} = x_t + d s is our x_{t-d} = x_t - d s with s = dx/dt).

Training mixes two targets in every batch:

* flow matching at the smallest step size d_min = 1/128: s(x_t, t, d_min) -> eps - x_0 with
  x_t = (1 - t) x_0 + t eps (the conditional flow-matching target), on 1 - 1/k of the batch;
* self-consistency on the other 1/k (k = 8 in the authors' code, ``bootstrap_every``): for d
  in {1/128, ..., 1/2} and t on the grid of multiples of 2d,

      s(x_t, t, 2d) -> sg[(s(x_t, t, d) + s(x'_{t-d}, t - d, d)) / 2],   x'_{t-d} = x_t - d s(x_t, t, d),

  the two half steps computed with the EMA weights of the network in eval mode (no dropout:
  the authors call the network with ``train=False`` for the targets), the mode restored
  afterwards. As in the authors' code (``bootstrap_ema=1``), the EMA is the one the samples
  come from: the trainer's (``train.ema_decay``, 0.999 as theirs), which ``loss`` receives in
  its ``ctx``. Without one (``train.ema_decay=0``, a loop of one's own, or
  ``bootstrap_ema=False``) the targets come from the current weights.

d takes the eight values 2^j / 128, j = 0..7, embedded by a learned table (the UNet's / MLP's
class-embedding slot; the authors embed log2 of the step count). Sampling with 1, 2, 4, ..., 128
steps uses d = 1 / steps. The likelihood is the probability-flow ODE of the d = 1/128 velocity
(the flow-matching model inside), as for :class:`~.model.Diffusion`.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from ...errors import ConfigError
from ...nn.denoiser import DenoiserConfig
from ...registry import register
from ..base import TrainContext
from .model import Diffusion, _on_device, with_precision

LEVELS = 8  # d = 2^j / 128, j = 0 .. 7
MIN_STEPS, MAX_STEPS = 1, 128


def steps_to_index(steps: int) -> int:
    """Number of sampling steps (a power of two in 1..128) -> the index j of d = 1/steps = 2^j / 128."""
    if steps < MIN_STEPS or steps > MAX_STEPS or steps & (steps - 1):
        raise ConfigError(f"shortcut models sample with 1, 2, 4, ..., 128 steps, got steps={steps}")
    return int(round(math.log2(MAX_STEPS / steps)))


@register("shortcut", family="diffusion", paper="Frans, Hafner, Levine & Abbeel 2024 (One Step Diffusion via Shortcut Models)",
          summary="flow matching conditioned on the step size d; 1 to 128 sampling steps from one network")
class Shortcut(Diffusion):
    retired_state = ("target_net.", "target_updates")  # the private EMA copy before the trainer's came in ctx
    retired_options = {"target_ema_decay": "the self-consistency targets use the trainer's EMA (train.ema_decay, "
                                           "0.999 in the recipe); target_ema_decay=0 is now model.bootstrap_ema=false"}

    def __init__(self, shape: tuple = (1, 28, 28), denoiser: DenoiserConfig | dict | None = None, steps: int = 1,
                 bootstrap_every: int = 8, bootstrap_ema: bool = True, data_range: tuple = (-1.0, 1.0)):
        """denoiser: the network's settings, :class:`~.model.Diffusion`'s ``model.denoiser`` section (its
        class slot carries the step size d); steps: default sampling steps;
        bootstrap_every: 1/k of each batch gets the self-consistency target (k = 8, the authors');
        bootstrap_ema: self-consistency targets from the trainer's EMA weights (True, the authors'),
        or from the current weights (False)."""
        super().__init__(shape=shape, process="flow", param="velocity", loss="cfm", denoiser=denoiser,
                         num_classes=LEVELS, label_dropout=0.0, sampler="euler", steps=1, data_range=data_range)
        self.uses_labels = False  # the class slot carries d, not data labels
        self.num_classes = 0  # no class-conditional sampling / guidance
        self.default_steps = int(steps)
        steps_to_index(self.default_steps)
        if int(bootstrap_every) < 2:
            raise ConfigError(f"bootstrap_every must be >= 2 (a fraction 1/k of the batch), got {bootstrap_every}")
        self.bootstrap_every, self.bootstrap_ema = int(bootstrap_every), bool(bootstrap_ema)

    # -- the network as a function of (x_t, t, d) --------------------------------------------------
    def velocity(self, x: torch.Tensor, t: torch.Tensor, d_index: torch.Tensor, net: nn.Module | None = None) -> torch.Tensor:
        """s(x_t, t, d): x (B, ...), t (B,), d_index (B,) int64 (d = 2^j / 128) -> (B, ...)."""
        net = self.net if net is None else net
        return net(x, self.process.noise_label(t).to(x.dtype), d_index)

    def target_network(self, ctx: TrainContext | None) -> nn.Module:
        """The network of the self-consistency targets: the EMA model's in ``ctx`` (bootstrap_ema), else ours."""
        if self.bootstrap_ema and ctx is not None and ctx.ema is not None:
            return ctx.ema.net
        return self.net

    def loss(self, batch, generator: torch.Generator | None = None, *, ctx: TrainContext | None = None,
             **kwargs) -> dict[str, torch.Tensor]:
        self.check_options(kwargs, (), what="loss")
        x0 = batch[0] if isinstance(batch, (tuple, list)) else batch
        if tuple(x0.shape[1:]) != self.shape:
            raise ConfigError(f"Shortcut built for examples of shape {self.shape} got a batch of shape {tuple(x0.shape)}")
        B, dev, dt = x0.shape[0], x0.device, x0.dtype
        generator = _on_device(generator, dev)  # a CPU generator for a CUDA model, as Diffusion.loss
        nb = max(1, B // self.bootstrap_every)
        bc = lambda v: v.view(-1, *([1] * (x0.dim() - 1)))  # noqa: E731
        # self-consistency part: d = 2^j / 128 with j in 0..6 (2d <= 1), t = 2d * m, m in 1..1/(2d)
        j = torch.randint(0, LEVELS - 1, (nb,), generator=generator, device=dev)
        d = (2.0 ** j.to(dt)) / MAX_STEPS
        m = torch.floor(torch.rand(nb, generator=generator, device=dev, dtype=dt) * (1.0 / (2 * d))) + 1
        t_b = (2 * d * m).clamp(max=1.0)
        eps_b = torch.randn(x0[:nb].shape, generator=generator, device=dev, dtype=dt)
        xt_b = self.process.add_noise(x0[:nb], eps_b, t_b)
        target_net = self.target_network(ctx)
        modes = [mod.training for mod in target_net.modules()]
        target_net.eval()  # deterministic targets: no dropout (the authors' train=False)
        try:
            with torch.no_grad():
                s1 = self.velocity(xt_b, t_b, j, target_net)
                x_mid = xt_b - bc(d) * s1
                s2 = self.velocity(x_mid, t_b - d, j, target_net)
                target_b = (s1 + s2) / 2
        finally:
            for mod, mode in zip(target_net.modules(), modes):
                mod.training = mode
        pred_b = self.velocity(xt_b, t_b, j + 1)
        # flow-matching part at the smallest step size
        x_f = x0[nb:]
        t_f = torch.rand(B - nb, generator=generator, device=dev, dtype=dt)
        eps_f = torch.randn(x_f.shape, generator=generator, device=dev, dtype=dt)
        xt_f = self.process.add_noise(x_f, eps_f, t_f)
        pred_f = self.velocity(xt_f, t_f, torch.zeros(B - nb, dtype=torch.long, device=dev))
        err_b = (pred_b - target_b).pow(2).flatten(1).mean(1)
        err_f = (pred_f - (eps_f - x_f)).pow(2).flatten(1).mean(1)
        loss = torch.cat((err_b, err_f)).mean()
        return {"loss": loss, "flow_loss": err_f.mean().detach(), "consistency_loss": err_b.mean().detach()}

    # -- sampling / likelihood -------------------------------------------------------------------
    @torch.no_grad()
    def sample(self, n: int, *, generator: torch.Generator | None = None, steps: int | None = None,
               temperature: float = 1.0, clamp: bool = True, progress: bool = False,
               precision: str = "fp32") -> torch.Tensor:
        """n samples with ``steps`` in {1, 2, 4, ..., 128} shortcut steps of d = 1/steps from t = 1 to 0.
        Options: steps, temperature (scales the prior draw), clamp (images to data_range), progress,
        precision ("fp32" or "bf16": the network under bfloat16 autocast, the updates in float32)."""
        steps = int(self.default_steps if steps is None else steps)
        net = with_precision(self.net, precision)
        j = steps_to_index(steps)
        dev = self.device
        x = torch.randn((n, *self.shape), generator=generator).to(dev) * float(temperature)
        d = 1.0 / steps
        idx = torch.full((n,), j, dtype=torch.long, device=dev)
        from tqdm.auto import tqdm

        for i in tqdm(range(steps), desc="shortcut", disable=not progress, leave=False):
            t = torch.full((n,), 1.0 - i * d, device=dev, dtype=x.dtype)
            x = x - d * self.velocity(x, t, idx, net)
        if clamp and self.sample_range is not None:
            x = x.clamp(*self.sample_range)
        return x

    def denoiser(self, labels=None, guidance: float = 1.0, precision: str = "fp32"):
        """The flow-matching denoiser at the smallest step size d = 1/128 (for the ODE likelihood)."""
        from .precond import denoise

        net, process = self.net, self.process

        def D(x, t):
            return denoise(net, x, t, process, "velocity", torch.zeros(x.shape[0], dtype=torch.long, device=x.device))

        return D

    def self_consistency_error(self, x: torch.Tensor, t: float, steps: int) -> float:
        """Relative error || s(x, t, 2d) - (s(x, t, d) + s(x - d s, t - d, d)) / 2 || / || s(x, t, 2d) ||
        for d = 1/steps (a property a trained shortcut model should have)."""
        j = steps_to_index(steps)
        if j >= LEVELS - 1:
            raise ConfigError("self-consistency needs 2d <= 1: steps >= 2")
        with torch.no_grad():
            n = x.shape[0]
            d = 1.0 / steps
            tt = torch.full((n,), float(t), device=x.device, dtype=x.dtype)
            jj = torch.full((n,), j, dtype=torch.long, device=x.device)
            s1 = self.velocity(x, tt, jj)
            s2 = self.velocity(x - d * s1, tt - d, jj)
            big = self.velocity(x, tt, jj + 1)
            return float((big - (s1 + s2) / 2).norm() / big.norm().clamp(min=1e-12))
