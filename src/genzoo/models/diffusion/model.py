"""The diffusion / flow-matching model: one class for DDPM, DDIM, score SDEs, EDM and flow matching.

Papers and the equations implemented
------------------------------------
Everything is written on the one form x_t = s(t) (x_0 + sigma(t) eps) of Karras et al. 2022
(see :mod:`.process`); this module only wires the pieces together:

* the process (:func:`~.process.make_process`): "vp" (Ho et al. 2020, DDPM, discrete 1000-step
  linear betas; ``process_args={"discrete": False}`` for the VP-SDE of Song et al. 2021),
  "vp-cosine" (Nichol & Dhariwal 2021), "ve" (Song & Ermon 2019 / Song et al. 2021), "edm"
  (Karras et al. 2022), "flow" (Lipman et al. 2023; Liu et al. 2023, x_t = (1 - t) x_0 + t eps);
* the network's output parameterisation -> denoiser D(x_t; t) (:func:`~.precond.denoise`):
  "eps", "x0", "v", "velocity", "edm";
* the training loss (:func:`~.losses.diffusion_loss`): "simple" (DDPM eq. 14), "edm" (EDM
  eq. 8), "cfm" (conditional flow matching, Lipman et al. eq. 9 / 22);
* a sampler (:data:`~.samplers.SAMPLERS`) on a time grid (:func:`~.process.time_grid`);
* the exact log-likelihood of the probability-flow ODE (:func:`~.likelihood.ode_log_prob`;
  Song et al. 2021 eq. 13 / appendix D.2, Hutchinson trace as in FFJORD).

Classifier-free guidance (Ho & Salimans 2021, eq. 6, written for the denoiser): with
``num_classes > 0`` the network sees a class label, replaced during training by the extra
"no label" index ``num_classes`` with probability ``label_dropout``; at sampling time

    D_w(x; t, y) = D(x; t, null) + w (D(x; t, y) - D(x; t, null)),

so w = 0 is the unconditional model, w = 1 the conditional one, w > 1 guided. (Ho &
Salimans write eps~ = (1 + w') eps(y) - w' eps(null); their w' is our w - 1. Denoiser and
eps guidance coincide because x0 = (x_t - std eps) / s is affine in eps.)

Units and conventions
---------------------
* Data: images (C, H, W) in ``data_range`` (default [-1, 1]) or vectors (D,); for an exact
  likelihood the images must be dequantised (``data.dequantize=uniform``): ``log_prob`` is a
  density over continuous data in nats per example, and bits/dim adds
  log2(levels / (hi - lo)) (+7 for 8-bit data in [-1, 1]; :mod:`genzoo.units`).
* ``log_prob`` is the density of the process marginal at t_min (data convolved with
  N(0, std(t_min)^2): 0.01 for DDPM's t_min = 1/1000, 0.002 for EDM, 1e-3 for flow); it is
  an estimate (Hutchinson trace, ODE tolerance) of an exact likelihood, ``likelihood="exact"``.
* Samples of image models are clamped to ``data_range`` (vectors are left as they are).
* Randomness: training draws (t, eps, label dropout) from the ``generator`` argument of
  ``loss`` or the global RNG (the trainer seeds it per step); sampling draws the prior, then
  every sampler noise, from ``generator``.
"""
from __future__ import annotations

import contextlib
import math

import torch
from torch import nn

from ...core.precision import PRECISIONS, resolve_precision  # fp32 | bf16 | auto, as train.precision
from ...errors import ConfigError, DataError, did_you_mean
from ...nn.denoiser import DenoiserConfig
from ...nn.unet import UNet
from ...registry import register
from ..base import GenerativeModel, resolve_labels
from ..data_needs import IMAGE_OR_VECTOR, DataNeeds, Opt
from .likelihood import ode_log_prob
from .losses import LOSSES, diffusion_loss
from .precond import PARAMS, denoise
from .process import GRID_KINDS, PROCESSES, make_process, time_grid
from .samplers import SAMPLERS, run_sampler, sampler_options

#: default time grid per process when ``grid="auto"``
DEFAULT_GRID = {"edm": "karras", "vp": "uniform", "vp-cosine": "uniform", "ve": "uniform", "flow": "uniform"}
#: alias accepted for the adaptive probability-flow ODE sampler
SAMPLER_ALIASES = {"ode": "ode_adaptive"}
#: the samplers' own options (eta, S_churn, rtol, ...), each taken by one or more samplers
_SAMPLER_SPECIFIC = tuple(dict.fromkeys(o for name in SAMPLERS for o in sampler_options(name)))


class _FlatNet(nn.Module):
    """Runs a vector network on examples of any shape by flattening them: (B, *shape) -> (B, *shape)."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, x, noise_label, cond=None):
        return self.net(x.reshape(x.shape[0], -1), noise_label, cond).reshape(x.shape)


class _Autocast(nn.Module):
    """Evaluates ``net`` under bfloat16 autocast and returns its output in the input's dtype: the
    network runs in bf16, the sampler's arithmetic (preconditioning, updates) stays in float32."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, x, noise_label, cond=None):
        with torch.autocast(device_type=x.device.type, dtype=torch.bfloat16):
            out = self.net(x, noise_label, cond)
        return out.to(x.dtype)


def with_precision(net: nn.Module, precision: str) -> nn.Module:
    """``net`` itself ("fp32") or wrapped to run under bfloat16 autocast ("bf16"); "auto" is bf16 where it is fast
    on the network's device (CUDA with bf16, a CPU with AVX-512/AMX) and fp32 elsewhere, as ``train.precision=auto``
    (core/precision.resolve_precision). A ConfigError names any other value."""
    if precision not in PRECISIONS:
        raise ConfigError(f"bad precision {precision!r}; valid: {', '.join(PRECISIONS)}")
    if precision == "auto":
        param = next(net.parameters(), None)
        precision = resolve_precision("auto", "cpu" if param is None else param.device.type)
    return _Autocast(net) if precision == "bf16" else net


def _on_device(generator: torch.Generator | None, device) -> torch.Generator | None:
    """A generator the core's draws can use on ``device``: ``generator`` itself when it lives
    there (or is None), else a generator on ``device`` seeded by one draw from it (so a CPU
    generator, as the trainer and ``genzoo sample`` pass, still gives reproducible draws for
    a CUDA model)."""
    device = torch.device(device)
    if generator is None or generator.device.type == device.type:
        return generator
    seed = int(torch.randint(0, 2**62, (1,), generator=generator))
    return torch.Generator(device=device).manual_seed(seed)


def _null_labels(n: int, num_classes: int, device) -> torch.Tensor:
    return torch.full((n,), num_classes, dtype=torch.long, device=device)


@register("diffusion", family="diffusion",
          paper="Karras et al. 2022 (EDM); Ho et al. 2020 (DDPM); Song et al. 2021 (score SDE, DDIM); "
                "Lipman et al. 2023 / Liu et al. 2022 (flow matching)",
          summary="Diffusion / flow matching on one form: any process x param x loss x sampler, ODE likelihood, CFG")
class Diffusion(GenerativeModel):
    """Diffusion or flow-matching model (DDPM, DDIM, VP/VE SDE, EDM, flow matching) with an exact ODE likelihood.

    Args:
        shape: per-example data shape, (C, H, W) images or (D,) vectors (taken from the data).
        process: "vp" | "vp-cosine" | "ve" | "edm" | "flow" (see :mod:`.process`).
        process_args: keywords of the process, e.g. {"discrete": False} (VP-SDE),
            {"sigma_min": 0.01, "sigma_max": 50} (VE), {"P_mean": -1.2, "P_std": 1.2} (EDM),
            {"t_dist": "logit_normal"} (flow). None = the paper's defaults.
        param: network output "eps" | "x0" | "v" | "velocity" | "edm" (see :mod:`.precond`).
        loss: "simple" (DDPM) | "edm" (EDM weighting) | "cfm" (flow matching).
        denoiser: the network's settings, one section ``model.denoiser: {net: unet, channels: 32, ...}``
            (:class:`~genzoo.nn.denoiser.DenoiserConfig`; a dict of some fields, the rest default; the
            flat ``model.channels=...`` of configs written before the section still works): net "unet"
            (images, :class:`~genzoo.nn.unet.UNet`; the default is ~1.2 M parameters for 28x28 MNIST),
            "mlp" (any shape, flattened, :class:`~genzoo.nn.time_mlp.TimeMLP`) or "auto" (the UNet for
            images, else the MLP); channels, channel_mult, num_res_blocks, attn_resolutions (the UNet's
            sizes); hidden, depth (the MLP's); dropout; time_embedding "sinusoidal" (noise labels of
            order 1..1000: vp, flow, and edm's ln(sigma)/4 works too) or "fourier" (random Fourier
            features, scale 16; labels of order 1: param="edm", VE).
        num_classes: 0 = unconditional; K > 0: class-conditional on labels 0..K-1, with the
            null label K for classifier-free guidance (then ``loss`` takes (x, y) batches).
        label_dropout: probability of replacing a training label by the null label (0.1
            for classifier-free guidance; 0 gives a purely conditional model).
        sampler: default sampler (a key of :data:`~.samplers.SAMPLERS`, or "ode" for the
            adaptive probability-flow ODE).
        steps: default number of sampling steps.
        grid: default time grid kind ("auto" = karras for edm, uniform otherwise).
        data_range: (lo, hi) of image data; image samples are clamped to it.
        coupling: "independent" (default: eps drawn afresh for every x_0) or "paired": batches
            are (x_0, z) pairs and z is the noise of x_0 (rectified flow's reflow, Liu et al.
            2022: the pairs come from the ODE of a trained model; see :mod:`.reflow`), or
            "distill": the same pairs train the one-step generator x_0 ~ D(z; t_max) (one
            Euler step from t_max to 0) with the L2 loss || D(z; t_max) - x_0 ||^2 only at
            t = t_max (Liu et al.'s distillation, their Sec. 2.3; flow process only). In eval mode
            (the trainer's validation) a batch without z, such as the source data's valid split,
            gets the independent flow-matching loss instead.
    """

    likelihood = "exact"
    discrete_likelihood = False
    #: the network's settings are one nested section, ``model.denoiser: {net: unet, channels: 32, ...}``
    network_specs = {"denoiser": DenoiserConfig}
    #: the samplers' own options (eta, S_churn, rtol, ...) that ``sample``'s ``**sampler_opts`` forwards;
    #: ``sample_options`` is ``sample``'s keywords followed by these
    sample_forwarded_options = _SAMPLER_SPECIFIC
    #: images per sample() call in genzoo sample / eval (measured, benchmarks/sampling_speed.py --only chunks:
    #: with freed memory kept the cost per image is flat from 200 to 500 images within 1 %; 250 bounds the memory)
    sample_chunk = 250
    #: examples per log_prob() call in genzoo eval: dopri5 shares its step size across a batch, so the stiffest
    #: example sets everyone's steps (benchmarks/sampling_speed.py --only likelihood: 1.33 s per image in chunks
    #: of 16 against 1.55 in chunks of 64 on 2 cores; eval.batch_size's 256 would be slower still)
    log_prob_chunk = 16

    def __init__(
        self,
        shape: tuple = (1, 28, 28),
        process: str = "edm",
        process_args: dict | None = None,
        param: str = "edm",
        loss: str = "edm",
        denoiser: DenoiserConfig | dict | None = None,
        num_classes: int = 0,
        label_dropout: float = 0.1,
        sampler: str = "heun",
        steps: int = 18,
        grid: str = "auto",
        data_range: tuple = (-1.0, 1.0),
        coupling: str = "independent",
    ):
        super().__init__()
        if coupling not in ("independent", "paired", "distill"):
            raise ConfigError(f"unknown coupling {coupling!r}; valid: independent, paired, distill")
        if coupling != "independent" and int(num_classes) > 0:
            raise ConfigError(f"coupling={coupling!r} (reflow) is for unconditional models; set num_classes=0")
        if coupling == "distill" and process != "flow":
            raise ConfigError("coupling='distill' distils a rectified flow (model.process=flow) into one step; "
                              f"this model's process is {process!r}")
        shape = tuple(int(s) for s in shape)
        if not shape or any(s <= 0 for s in shape):
            raise ConfigError(f"Diffusion shape must be a non-empty tuple of positive ints, got {shape}")
        try:
            spec = DenoiserConfig.of(denoiser)
            net = spec.net_for(shape)
        except (TypeError, ValueError) as e:
            raise ConfigError(f"Diffusion: {e}") from e
        for what, val, valid in (("param", param, PARAMS), ("loss", loss, LOSSES)):
            if val not in valid:
                raise ConfigError(f"unknown Diffusion {what} {val!r}{did_you_mean(val, valid)}; valid: {', '.join(valid)}")
        if process not in PROCESSES:
            raise ConfigError(f"unknown diffusion process {process!r}{did_you_mean(process, PROCESSES)}; "
                              f"valid: {', '.join(PROCESSES)}")
        if process_args is not None and not isinstance(process_args, dict):
            raise ConfigError("process_args must be a mapping of the process's keywords, e.g. {discrete: false}; "
                              f"got {process_args!r}")
        if int(num_classes) < 0:
            raise ConfigError(f"num_classes must be >= 0, got {num_classes}")
        if not 0.0 <= float(label_dropout) < 1.0:
            raise ConfigError(f"label_dropout must be in [0, 1), got {label_dropout}")
        lo, hi = (float(v) for v in data_range)
        if not hi > lo:
            raise ConfigError(f"data_range must be (lo, hi) with hi > lo, got {data_range}")
        self.shape = shape
        self.process_name = process
        self.process_args = dict(process_args or {})
        self.process = make_process(process, **self.process_args)
        self.param, self.loss_name, self.net_name = param, loss, net
        #: the network's settings (``model.denoiser``; not ``self.denoiser``, which is the D(x, t) of the samplers)
        self.denoiser_spec = spec
        s_T = float(self.process.s(torch.tensor(float(self.process.t_max), dtype=torch.float64)))
        if param in ("eps", "edm") and s_T == 0.0:
            raise ConfigError(
                f"param={param!r} needs s(t) > 0 but the {process!r} process reaches s = 0 at t_max = {self.process.t_max}; "
                "use param=velocity, v or x0, or process_args={t_max: 0.999}"
            )
        self.num_classes = int(num_classes)
        #: instance attribute: the trainer passes (x, y) batches only to class-conditional models
        self.coupling = coupling
        self.uses_labels = self.num_classes > 0 or coupling != "independent"  # paired/distill: the second element is z
        self.label_dropout = float(label_dropout)
        self.data_range = (lo, hi)
        #: range image samples are clamped to; None for vectors (no fixed range)
        self.sample_range = (lo, hi) if len(shape) == 3 else None
        self.default_sampler = self._sampler_name(sampler)
        if int(steps) < 1:
            raise ConfigError(f"steps must be >= 1, got {steps}")
        self.default_steps = int(steps)
        if grid != "auto" and grid not in GRID_KINDS:
            raise ConfigError(f"unknown time grid {grid!r}{did_you_mean(grid, GRID_KINDS)}; valid: auto, {', '.join(GRID_KINDS)}")
        self.default_grid = DEFAULT_GRID[process] if grid == "auto" else grid
        try:
            if net == "unet":
                C, H, W = shape
                self.net = spec.unet(C, (H, W), num_classes=self.num_classes)
            else:
                mlp = spec.mlp(math.prod(shape), num_classes=self.num_classes)
                self.net = mlp if len(shape) == 1 else _FlatNet(mlp)
        except ValueError as e:
            raise ConfigError(f"cannot build the Diffusion network: {e}".replace("model.attn_", "model.denoiser.attn_")) from e

    # -- data compatibility -----------------------------------------------------------------
    #: continuous images or vectors (Gaussian diffusion: token, binary and integer-level data are
    #: refused, a density on a lattice is unbounded; use data.binarize=none data.dequantize=uniform);
    #: images in data_range (samples are clamped to it); a class-conditional model (num_classes > 0)
    #: needs labelled data with at most num_classes classes. Images that are not dequantised train
    #: fine (DDPM did), but log_prob is then a density on a 256-point grid per pixel, not comparable
    #: to published bits/dim: a warning says so.
    data_needs = DataNeeds(IMAGE_OR_VECTOR, (None,), dequantized="warn", value_range=Opt("data_range"),
                           labels=Opt("num_classes"))

    # -- pieces -------------------------------------------------------------------------------
    def _sampler_name(self, name: str) -> str:
        name = SAMPLER_ALIASES.get(name, name)
        if name not in SAMPLERS:
            valid = list(SAMPLERS) + list(SAMPLER_ALIASES)
            raise ConfigError(f"unknown sampler {name!r}{did_you_mean(name, valid)}; valid: {', '.join(valid)}")
        return name

    def _split(self, batch):
        if isinstance(batch, (tuple, list)):
            x, y = batch[0], (batch[1] if len(batch) > 1 else None)
        else:
            x, y = batch, None
        if tuple(x.shape[1:]) != self.shape:
            raise DataError(f"Diffusion built for examples of shape {self.shape} got a batch of shape {tuple(x.shape)}")
        return x, y

    def _labels(self, labels, n: int, device) -> torch.Tensor | None:
        """Class labels (n,) int64 for the network, or None for an unconditional network.

        ``labels``: None (conditional models: classes 0, 1, ..., K-1, 0, ... cycled), an int
        (every example), a sequence or tensor of n ints, or "none"/"null" (the null label:
        the unconditional model of classifier-free guidance)."""
        return resolve_labels(labels, n, self.num_classes, device, model="Diffusion model")

    def denoiser(self, labels: torch.Tensor | None = None, guidance: float = 1.0, precision: str = "fp32"):
        """``D(x_t, t) -> x0_hat`` for the samplers and the likelihood.

        labels: (B,) int64 (None: the null label for a conditional model, nothing for an
        unconditional one). guidance w: D_null + w (D_y - D_null); w = 1 (default) is the
        plain conditional denoiser, w = 0 the unconditional one (each then costs one
        network call; any other w two). precision "bf16": the network runs under bfloat16
        autocast (about 2x faster on CPUs with native bf16), everything else in float32."""
        net, process, param = with_precision(self.net, precision), self.process, self.param
        K = self.num_classes

        def uncond(x):
            return None if K == 0 else _null_labels(x.shape[0], K, x.device)

        if labels is None or K == 0 or guidance == 0.0:
            return lambda x, t: denoise(net, x, t, process, param, uncond(x))
        if guidance == 1.0:
            return lambda x, t: denoise(net, x, t, process, param, labels)

        w = float(guidance)

        def guided(x, t):
            d_u = denoise(net, x, t, process, param, uncond(x))
            d_c = denoise(net, x, t, process, param, labels)
            return d_u + w * (d_c - d_u)

        return guided

    # -- objective ----------------------------------------------------------------------------
    def loss(self, batch, generator: torch.Generator | None = None, **kwargs) -> dict[str, torch.Tensor]:
        """Training loss: {"loss": mean over the batch of the per-example loss} (see :mod:`.losses`).

        ``batch`` is x (B, *shape), or (x, y) for a class-conditional model (y (B,) int64);
        labels are replaced by the null label with probability ``label_dropout`` (drawn
        before t and eps, from ``generator`` or the global RNG)."""
        self.check_options(kwargs, (), what="loss")
        x, y = self._split(batch)
        generator = _on_device(generator, x.device)
        paired = self.coupling != "independent" and y is not None and tuple(y.shape) == tuple(x.shape)
        if self.coupling != "independent" and not paired:
            if self.training:
                raise DataError(f"coupling={self.coupling!r} needs (x_0, z) batches with z of x_0's shape (the reflow pairs "
                                "data set, `genzoo reflow RUN`); got " + ("no z" if y is None else f"z of shape {tuple(y.shape)}"))
            y = None  # validation on the source data (the pairs data set holds pairs only in train): flow-matching loss
        if paired:
            if self.coupling == "distill":  # one Euler step from t_max: x_0_hat = D(z; t_max)
                t = torch.full((x.shape[0],), float(self.process.t_max), device=x.device, dtype=x.dtype)
                x0_hat = denoise(self.net, y.to(x.device, x.dtype), t, self.process, self.param)
                return {"loss": ((x0_hat - x) ** 2).flatten(1).mean(1).mean()}
            per_example = diffusion_loss(self.net, x, self.process, self.param, self.loss_name, generator=generator,
                                         noise=y.to(x.device, x.dtype))
            return {"loss": per_example.mean()}
        cond = None
        if self.num_classes > 0:
            if y is None:
                raise DataError(f"this Diffusion model is class-conditional (num_classes={self.num_classes}) "
                                "but the batch has no labels; use labelled data or model.num_classes=0")
            cond = y.to(x.device).long()
            if self.label_dropout > 0:
                drop = torch.rand(cond.shape, generator=generator, device=x.device)
                cond = torch.where(drop < self.label_dropout, torch.full_like(cond, self.num_classes), cond)
        per_example = diffusion_loss(self.net, x, self.process, self.param, self.loss_name, cond=cond, generator=generator)
        return {"loss": per_example.mean()}

    # -- generation ----------------------------------------------------------------------------
    def time_grid(self, steps: int | None = None, grid: str | None = None, rho: float | None = None) -> torch.Tensor:
        """The sampling grid (steps + 1,) float64, t_max .. 0 (defaults: the model's steps and grid)."""
        return time_grid(self.process, int(steps or self.default_steps), grid or self.default_grid, rho)

    @torch.no_grad()
    def sample(self, n: int, *, generator: torch.Generator | None = None, sampler: str | None = None,
               steps: int | None = None, grid: str | None = None, rho: float | None = None,
               guidance: float | None = None, labels=None, temperature: float = 1.0, clamp: bool = True,
               skip_scales=None, progress: bool = False, precision: str = "fp32", **sampler_opts) -> torch.Tensor:
        """n samples (n, *shape) in data space (images clamped to ``data_range``).

        Options:
            sampler: "ddpm" | "ddim" | "euler" | "heun" | "heun_stochastic" | "dpmpp_2m" |
                "euler_maruyama" | "ode_adaptive" (alias "ode") (default: the model's ``sampler``).
            steps: grid steps (default: the model's ``steps``; NFE = steps, 2 steps - 1 for
                heun; ignored by ode_adaptive, whose NFE follows rtol/atol).
            grid: "uniform" | "quadratic" | "karras" | "leading" | "trailing" | "linspace"
                (default: the model's ``grid``; see :func:`~.process.time_grid`).
            rho: exponent of the karras grid (default 7).
            eta: DDIM noise (ddim only; 0 = deterministic, 1 = DDPM ancestral).
            S_churn, S_tmin, S_tmax, S_noise: EDM Algorithm 2 (heun_stochastic only).
            rtol, atol, method, t_end: torchdiffeq settings and end time (ode_adaptive only).
            (Each sampler's own options are ``sampler_options(name)``; giving one that the
            chosen sampler does not take is an error.)
            guidance: classifier-free guidance w, D = D_null + w (D_y - D_null) (default 1.0 =
                conditional; 0 = unconditional); conditional models only.
            labels: class labels (conditional models only): None = classes cycled 0..K-1,
                an int, a list of n ints, or "none" (the null label).
            temperature: the prior draw is multiplied by this (default 1.0).
            clamp: clamp image samples to ``data_range`` (default True).
            skip_scales: Skip-Tuning (Ma et al. 2024): a float or one float per UNet level
                multiplying the UNet's skip connections while sampling (UNet only; default 1).
            progress: tqdm bar over the steps (default False).
            precision: "fp32" (default) | "bf16": network evaluations under bfloat16 autocast
                (sampler arithmetic stays float32); about 2x faster on CPUs with native bf16 and
                several times slower on AVX2-only CPUs, where torch emulates it | "auto": bf16
                where it is fast, else fp32 (as train.precision=auto).
        Reproducible: the prior draw and then every sampler noise come from ``generator``.
        """
        name = self._sampler_name(self.default_sampler if sampler is None else sampler)
        steps = int(self.default_steps if steps is None else steps)
        if steps < 1:
            raise ConfigError(f"steps must be >= 1, got {steps}")
        grid = self.default_grid if grid is None else grid
        temperature, clamp, progress = float(temperature), bool(clamp), bool(progress)
        valid = sampler_options(name)
        for k in sampler_opts:
            if k not in valid:
                raise ConfigError(f"sample option {k!r} does not apply to sampler {name!r} "
                                  f"(its options: {', '.join(valid) if valid else '(none)'})")
        if guidance is not None and self.num_classes == 0:
            raise ConfigError("guidance needs a class-conditional model (num_classes > 0); this one is unconditional")
        if skip_scales is not None and not isinstance(self.net, UNet):
            raise ConfigError("skip_scales (Skip-Tuning) needs net='unet'")
        n = int(n)
        dev = self.device
        dtype = next(self.parameters()).dtype
        generator = _on_device(generator, dev)
        labels = self._labels(labels, n, dev)
        D = self.denoiser(labels, 1.0 if guidance is None else float(guidance), precision)
        ts = time_grid(self.process, steps, grid, rho)
        x = self.process.prior_sample((n, *self.shape), generator=generator, device=dev, dtype=dtype) * temperature
        if skip_scales is not None:
            if isinstance(skip_scales, str):
                import yaml

                skip_scales = yaml.safe_load(skip_scales)
            try:
                skip_scales = self.net._check_skip_scales(skip_scales)
            except (TypeError, ValueError) as e:
                raise ConfigError(f"bad skip_scales {skip_scales!r}: {e}") from e
            ctx = self.net.skip_scaling(skip_scales)
        else:
            ctx = contextlib.nullcontext()
        with ctx:
            x = run_sampler(name, D, x, ts, self.process, generator=generator, progress=progress, **sampler_opts)
        if clamp and self.sample_range is not None:
            x = x.clamp(*self.sample_range)
        return x

    # -- likelihood ---------------------------------------------------------------------------
    def log_prob(self, x: torch.Tensor, *, exact_trace: bool = False, num_probes: int = 1, rtol: float = 1e-5,
                 atol: float = 1e-5, t_min: float | None = None, method: str = "dopri5",
                 generator: torch.Generator | None = None, labels=None) -> torch.Tensor:
        """log p(x) by the probability-flow ODE: (B,) nats per example (see :func:`~.likelihood.ode_log_prob`).

        Options:
            exact_trace: exact divergence (D vector-Jacobian products per evaluation; small D
                only) instead of Hutchinson's estimator (default False).
            num_probes: Rademacher probes per example for Hutchinson (default 1).
            rtol, atol: dopri5 tolerances (default 1e-5, Song et al. 2021).
            t_min: start of the ODE (default the process's t_min).
            method: torchdiffeq method (default "dopri5").
            generator: draws the probes (default the global RNG).
            labels: for a conditional model, the class labels (B,) of a conditional
                likelihood log p(x | y); default the null label, i.e. the unconditional
                model that classifier-free guidance training learns (comparable with other
                models' NLLs).
        The value is a density over continuous data: for dequantised images bits/dim adds
        log2(levels / (hi - lo)) (:func:`genzoo.units.bits_per_dim`).
        """
        x, _ = self._split(x)
        y = resolve_labels(labels, x.shape[0], self.num_classes, x.device, default="null", model="Diffusion model")
        D = self.denoiser(y, 1.0)
        return ode_log_prob(D, x, self.process, exact_trace=bool(exact_trace), num_probes=int(num_probes),
                            rtol=float(rtol), atol=float(atol), t_min=None if t_min is None else float(t_min),
                            method=method, generator=_on_device(generator, x.device))
