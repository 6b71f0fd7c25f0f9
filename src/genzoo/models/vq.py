"""Vector-quantised autoencoders and two-stage generation: VQ-VAE, VQGAN and a Transformer prior.

Papers and the equations implemented
------------------------------------
* van den Oord, Vinyals & Kavukcuoglu 2017, "Neural Discrete Representation Learning" (VQ-VAE).
  An encoder maps x to a grid of vectors z_e(x) (here 28x28 -> 7x7 with two stride-2 4x4 convs
  and two residual blocks 3x3 -> 1x1, as the paper's architecture at a smaller width), each is
  replaced by its nearest code (:mod:`genzoo.nn.quantize`), and the decoder mirrors the encoder.
  Loss (eq. 3): L = ||x - D(z_q)||^2 + ||sg[z_e] - e||^2 + beta ||z_e - sg[e]||^2, beta = 0.25
  (the reconstruction term is the Gaussian log-likelihood up to constants; the middle term is
  replaced by EMA updates with ``update="ema"``). During training the prior over codes is
  uniform, so :meth:`VQVAE.sample` decodes uniformly drawn code grids; the second stage learns
  the prior (:class:`VQPrior`).
* Quantisers (``quantizer=``): "vq" with a straight-through (``gradient="ste"``) or rotation-trick
  (``gradient="rotation"``, Fifty et al. 2024) gradient, a gradient (``update="grad"``) or EMA
  (``update="ema"``) codebook, dead-code restarts (``restart_threshold``) and cosine codes; or
  "fsq" (Mentzer et al. 2023) with the paper's recommended levels for ``codebook_size`` (or
  explicit ``levels``); the code dimension is then len(levels).
* Esser, Rombach & Ommer 2021, "Taming Transformers for High-Resolution Image Synthesis"
  (VQGAN, :class:`VQGAN`). The autoencoder loss (eq. 4-5) is

      L = L_rec + L_VQ + lambda * L_GAN,   lambda = grad_{G_L}[L_rec] / (||grad_{G_L}[L_GAN]|| + delta),

  with G_L the decoder's last layer, delta = 1e-6 and L_GAN the generator's hinge term
  -mean D(x^) against a patch discriminator (PatchGAN: a map of real/fake logits over
  overlapping patches, trained with the hinge loss 1/2 (mean relu(1 - D(x)) + mean relu(1 + D(x^)))).
  As the authors' code, the discriminator is off (weight 0) for the first ``disc_start``
  autoencoder steps and lambda is multiplied by ``disc_weight`` (0.8 in their configs).
  L_rec is the L1 error plus a perceptual loss. The paper's perceptual loss is LPIPS on VGG
  features; genzoo has no ImageNet network offline, so it uses the same construction on the
  conv stages of genzoo's shipped feature networks (:mod:`genzoo.nn.feature_nets`: the MNIST net for
  (1, 28, 28) images, the CIFAR-10 net for (3, 32, 32)): features unit-normalised over channels,
  squared differences averaged over space and summed over the three stages, without LPIPS's
  learned channel weights. Other shapes need ``perceptual_weight=0``.
* The prior (:class:`VQPrior`, Esser et al. section 3.2; van den Oord et al. section 3.3 use a
  PixelCNN): p(s) = prod_i p(s_i | s_<i) over the raster-scanned code grid, modelled by genzoo's one
  decoder-only Transformer (:class:`genzoo.nn.transformer.Transformer`) with 2-D RoPE over the
  code grid; samples are drawn code by code (temperature, top-k) with a KV cache and decoded by
  the tokenizer. The two-stage model is a :class:`~genzoo.models.base.GenerativeModel` judged
  by FID like any other.

Scaled for a 2-core CPU: MNIST at 28x28 -> a 7x7 grid of codes, 64 channels, code dimension 16.
"""
from __future__ import annotations

import copy
import math
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError, DataError
from ..nn.quantize import FSQ, FSQ_LEVELS, GRADIENTS, UPDATES, VectorQuantizer, codebook_stats
from ..nn.transformer import TransformerConfig
from ..registry import register
from .base import GenerativeModel, TrainContext
from .data_needs import DataNeeds, Opt

QUANTIZERS = ("vq", "fsq")

#: the image shapes VQGAN's perceptual loss has a shipped feature network for
PERCEPTUAL_NETS = {(1, 28, 28): "mnist", (3, 32, 32): "cifar10"}


class ResBlock(nn.Module):
    """x + conv1x1(relu(conv3x3(relu(x)))) (van den Oord et al. 2017, section 4.1)."""

    def __init__(self, ch: int, hidden: int):
        super().__init__()
        self.net = nn.Sequential(nn.ReLU(), nn.Conv2d(ch, hidden, 3, padding=1), nn.ReLU(), nn.Conv2d(hidden, ch, 1))

    def forward(self, x):
        return x + self.net(x)


class VQEncoder(nn.Module):
    """(B, C, H, W) -> (B, code_dim, H/4, W/4): two stride-2 4x4 convs, residual blocks, 1x1 to code_dim."""

    def __init__(self, in_ch: int, channels: int, res_blocks: int, code_dim: int):
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(in_ch, channels, 4, 2, 1), nn.ReLU(), nn.Conv2d(channels, channels, 4, 2, 1),
            *[ResBlock(channels, channels // 2) for _ in range(res_blocks)], nn.ReLU(), nn.Conv2d(channels, code_dim, 1))

    def forward(self, x):
        return self.net(x)


class VQDecoder(nn.Module):
    """(B, code_dim, h, w) -> (B, C, 4h, 4w): the mirror of :class:`VQEncoder`; ``out`` is its last layer."""

    def __init__(self, out_ch: int, channels: int, res_blocks: int, code_dim: int):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(code_dim, channels, 3, padding=1), *[ResBlock(channels, channels // 2) for _ in range(res_blocks)],
            nn.ReLU(), nn.ConvTranspose2d(channels, channels, 4, 2, 1), nn.ReLU())
        self.out = nn.ConvTranspose2d(channels, out_ch, 4, 2, 1)

    def forward(self, z):
        return self.out(self.body(z))


@register("vqvae", family="vq", paper="van den Oord et al. 2017 (VQ-VAE); Fifty et al. 2024 (rotation trick); "
          "Mentzer et al. 2023 (FSQ)",
          summary="VQ-VAE tokenizer: conv autoencoder with VQ (STE / rotation trick, grad / EMA codebook) or FSQ codes")
class VQVAE(GenerativeModel):
    """VQ-VAE (van den Oord et al. 2017): an image tokenizer with a discrete code grid.

    Args:
        shape: (C, H, W) with H, W divisible by 4 (the code grid is H/4 x W/4).
        channels, res_blocks: width and residual blocks of the encoder and decoder.
        quantizer: "vq" | "fsq".
        codebook_size: K codes (for "fsq": picks the paper's levels, one of 256, 1024, 4096, 16384, 65536).
        code_dim: code dimension d for "vq" (for "fsq" it is len(levels)).
        levels: explicit FSQ levels (overrides codebook_size), e.g. [8, 5, 5, 5].
        update, gradient, restart_threshold, cosine, beta, decay: the VQ layer's options
            (:class:`genzoo.nn.quantize.VectorQuantizer`).
        value_range: the data's (lo, hi); samples and reconstructions are clamped to it.
    """

    likelihood = "none"

    def __init__(self, shape=(1, 28, 28), channels: int = 64, res_blocks: int = 2, quantizer: str = "vq",
                 codebook_size: int = 256, code_dim: int = 16, levels=(), update: str = "ema", gradient: str = "ste",
                 restart_threshold: float = 0.0, cosine: bool = False, beta: float = 0.25, decay: float = 0.99,
                 value_range=(-1.0, 1.0)):
        super().__init__()
        shape = tuple(int(s) for s in shape)
        if len(shape) != 3 or shape[1] % 4 or shape[2] % 4:
            raise ConfigError(f"{type(self).__name__} needs images (C, H, W) with H and W divisible by 4, got {shape}")
        if quantizer not in QUANTIZERS:
            raise ConfigError(f"unknown quantizer {quantizer!r}; valid: {', '.join(QUANTIZERS)}")
        if update not in UPDATES:
            raise ConfigError(f"unknown codebook update {update!r}; valid: {', '.join(UPDATES)}")
        if gradient not in GRADIENTS:
            raise ConfigError(f"unknown VQ gradient {gradient!r}; valid: {', '.join(GRADIENTS)}")
        self.shape, self.value_range = shape, tuple(float(v) for v in value_range)
        self.grid = (shape[1] // 4, shape[2] // 4)
        self.quantizer_name = quantizer
        if quantizer == "fsq":
            levels = tuple(int(v) for v in levels) if levels else FSQ_LEVELS.get(int(codebook_size))
            if levels is None:
                raise ConfigError(f"FSQ has recommended levels for codebook_size in {sorted(FSQ_LEVELS)}, got "
                                  f"{codebook_size}; pick one of those or give model.levels=[8,5,5,5]")
            self.quantizer = FSQ(levels)
            code_dim = len(levels)
        else:
            if levels:
                raise ConfigError("levels= is an FSQ setting; set model.quantizer=fsq or drop model.levels")
            self.quantizer = VectorQuantizer(int(code_dim), int(codebook_size), beta=beta, decay=decay, update=update,
                                             gradient=gradient, restart_threshold=restart_threshold, cosine=cosine)
        self.code_dim = int(code_dim)
        self.codebook_size = int(self.quantizer.codebook_size)
        self.encoder = VQEncoder(shape[0], channels, res_blocks, self.code_dim)
        self.decoder = VQDecoder(shape[0], channels, res_blocks, self.code_dim)

    # -- data --------------------------------------------------------------------------------
    #: images in the model's value_range ((0, 1) for binary data)
    data_needs = DataNeeds(("image",), value_range=Opt("value_range"))

    def _x(self, batch) -> torch.Tensor:
        x = batch[0] if isinstance(batch, (tuple, list)) else batch
        if tuple(x.shape[1:]) != self.shape:
            raise DataError(f"{type(self).__name__} built for images {self.shape} got a batch of shape {tuple(x.shape)}")
        return x

    # -- pieces ------------------------------------------------------------------------------
    def quantize(self, ze: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """z_e (B, d, h, w) -> (z_q (B, d, h, w) with the quantizer's gradient, codes (B, h, w), aux loss)."""
        z = ze.permute(0, 2, 3, 1)  # (B, h, w, d)
        if self.quantizer_name == "vq":
            zq, idx, aux = self.quantizer(z[..., None, :])
            zq, idx = zq[..., 0, :], idx[..., 0]
        else:
            zq, idx, aux = self.quantizer(z)
        return zq.permute(0, 3, 1, 2), idx, aux

    def lookup(self, idx: torch.Tensor) -> torch.Tensor:
        """codes (B, h, w) -> z_q (B, d, h, w)."""
        if self.quantizer_name == "vq":
            v = self.quantizer.lookup(idx[..., None])[..., 0, :]
        else:
            v = self.quantizer.lookup(idx)
        return v.permute(0, 3, 1, 2).to(next(self.parameters()).dtype)

    @torch.no_grad()
    def tokenize(self, x: torch.Tensor) -> torch.Tensor:
        """Images (B, C, H, W) -> code grid (B, h, w) int64 (no quantizer update)."""
        ze = self.encoder(self._x(x))
        z = ze.permute(0, 2, 3, 1)
        return self.quantizer.codes(z[..., None, :])[..., 0] if self.quantizer_name == "vq" else self.quantizer.codes(z)

    def detokenize(self, idx: torch.Tensor) -> torch.Tensor:
        """Code grid (B, h, w) -> images (B, C, H, W), clamped to the value range."""
        return self.decoder(self.lookup(idx)).clamp(*self.value_range)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Quantised latents, flattened: (B, d * h * w) (the linear probe's features)."""
        return self.lookup(self.tokenize(x)).reshape(x.shape[0], -1)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """(B, d * h * w) latents (quantised or interpolated) -> images."""
        return self.decoder(z.reshape(z.shape[0], self.code_dim, *self.grid)).clamp(*self.value_range)

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        return self.detokenize(self.tokenize(x))

    def code_stats(self, idx: torch.Tensor) -> dict:
        usage, ppl = codebook_stats(idx, self.codebook_size)
        return {"usage": usage, "perplexity": ppl}

    # -- interface ---------------------------------------------------------------------------
    def loss(self, batch, **kwargs) -> dict[str, torch.Tensor]:
        """MSE reconstruction (per pixel) + the quantizer's loss; logs batch codebook usage and perplexity."""
        self.check_options(kwargs, (), what="loss")
        x = self._x(batch)
        zq, idx, aux = self.quantize(self.encoder(x))
        rec = F.mse_loss(self.decoder(zq).float(), x.float())
        return {"loss": rec + aux, "mse": rec.detach(), "vq_loss": aux.detach(), **self._stats(idx)}

    def _stats(self, idx) -> dict:
        s = self.code_stats(idx.detach())
        out = {"usage": torch.tensor(s["usage"]), "perplexity": torch.tensor(s["perplexity"])}
        if hasattr(self.quantizer, "restarts"):
            out["restarts"] = self.quantizer.restarts.float()
        return out

    @torch.no_grad()
    def sample(self, n: int, *, generator: torch.Generator | None = None) -> torch.Tensor:
        """Decodes code grids drawn from the uniform prior of the first stage (van den Oord et al.:
        the prior is uniform while the VQ-VAE trains). Train a ``vq_prior`` on this run for real samples."""
        idx = torch.randint(0, self.codebook_size, (n, *self.grid), generator=generator)
        return self.detokenize(idx.to(self.device))


class PatchDiscriminator(nn.Module):
    """PatchGAN (Isola et al. 2017; taming's NLayerDiscriminator with 2 layers): (B, C, H, W) ->
    (B, 1, h', w') real/fake logits, one per overlapping patch."""

    def __init__(self, in_ch: int, channels: int = 64):
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(in_ch, channels, 4, 2, 1), nn.LeakyReLU(0.2),
            nn.Conv2d(channels, 2 * channels, 4, 2, 1, bias=False), nn.BatchNorm2d(2 * channels), nn.LeakyReLU(0.2),
            nn.Conv2d(2 * channels, 1, 4, 1, 1))

    def forward(self, x):
        return self.net(x)


def lpips_like(feats_a: list[torch.Tensor], feats_b: list[torch.Tensor], eps: float = 1e-10) -> torch.Tensor:
    """sum over stages of the spatial mean of ||a/||a||_c - b/||b||_c||^2 (LPIPS without learned
    channel weights); lists of (B, C_l, H_l, W_l) features -> (B,)."""
    total = 0
    for a, b in zip(feats_a, feats_b):
        a = a / (a.pow(2).sum(1, keepdim=True).sqrt() + eps)
        b = b / (b.pow(2).sum(1, keepdim=True).sqrt() + eps)
        total = total + (a - b).pow(2).sum(1).mean((1, 2))
    return total


@register("vqgan", family="vq", paper="Esser, Rombach & Ommer 2021 (VQGAN, taming transformers)",
          summary="VQ autoencoder with L1 + perceptual loss and an adaptively weighted patch discriminator")
class VQGAN(VQVAE):
    """VQGAN (Esser et al. 2021): a :class:`VQVAE` trained with L1 + perceptual reconstruction and a
    PatchGAN discriminator switched on after ``disc_start`` steps, weighted by the adaptive lambda.

    Extra args: disc_channels; disc_start (autoencoder steps before the discriminator's loss is on);
    disc_weight (multiplies lambda; 0.8 as the authors' configs); perceptual_weight (1.0);
    codebook_weight (weight of the quantizer loss, 1.0)."""

    retired_state = ("global_step",)  # its own step counter, before the trainer's step came in ctx

    def __init__(self, shape=(1, 28, 28), channels: int = 64, res_blocks: int = 2, quantizer: str = "vq",
                 codebook_size: int = 256, code_dim: int = 16, levels=(), update: str = "ema", gradient: str = "ste",
                 restart_threshold: float = 0.0, cosine: bool = False, beta: float = 0.25, decay: float = 0.99,
                 value_range=(-1.0, 1.0), disc_channels: int = 64, disc_start: int = 1000, disc_weight: float = 0.8,
                 perceptual_weight: float = 1.0, codebook_weight: float = 1.0):
        super().__init__(shape, channels, res_blocks, quantizer, codebook_size, code_dim, levels, update, gradient,
                         restart_threshold, cosine, beta, decay, value_range)
        if perceptual_weight > 0 and tuple(self.shape) not in PERCEPTUAL_NETS:
            raise ConfigError(f"VQGAN's perceptual loss uses genzoo's MNIST (1, 28, 28) or CIFAR-10 (3, 32, 32) feature "
                              f"network, got images of shape {self.shape}; set model.perceptual_weight=0")
        self.disc_start, self.disc_weight = int(disc_start), float(disc_weight)
        self.perceptual_weight, self.codebook_weight = float(perceptual_weight), float(codebook_weight)
        self.discriminator = PatchDiscriminator(shape[0], disc_channels)
        self._percep: dict = {}  # device -> a private copy of the frozen feature network (not a submodule)

    def players(self) -> dict[str, list[nn.Parameter]]:
        disc = set(id(p) for p in self.discriminator.parameters())
        return {"autoencoder": [p for p in self.parameters() if id(p) not in disc],
                "discriminator": list(self.discriminator.parameters())}

    def _feature_net(self, device):
        key = str(device)
        if key not in self._percep:
            from ..nn.feature_nets import load_feature_net

            net = load_feature_net(PERCEPTUAL_NETS[tuple(self.shape)])
            self._percep[key] = copy.deepcopy(net).to(device).eval().requires_grad_(False)
        return self._percep[key]

    def perceptual(self, x: torch.Tensor, xr: torch.Tensor) -> torch.Tensor:
        """The LPIPS-style distance (B,) on the three conv stages of the feature network for this shape."""
        net = self._feature_net(x.device)
        lo, hi = self.value_range
        to_net = lambda v: (v.float() - lo) / (hi - lo) * 2 - 1  # noqa: E731 - the net expects [-1, 1]
        fa, fb, a, b = [], [], to_net(x), to_net(xr)
        for stage in net.conv:
            a, b = stage(a), stage(b)
            fa.append(a)
            fb.append(b)
        return lpips_like(fa, fb)

    def adaptive_weight(self, rec: torch.Tensor, g_loss: torch.Tensor, delta: float = 1e-6) -> torch.Tensor:
        """lambda = ||grad_{G_L} L_rec|| / (||grad_{G_L} L_GAN|| + delta) at the decoder's last layer,
        clamped to [0, 1e4] (as the authors' code), times disc_weight; a constant (no gradient)."""
        last = self.decoder.out.weight
        g_rec = torch.autograd.grad(rec, last, retain_graph=True)[0]
        g_gan = torch.autograd.grad(g_loss, last, retain_graph=True)[0]
        return (g_rec.norm() / (g_gan.norm() + delta)).clamp(0.0, 1e4).detach() * self.disc_weight

    def loss(self, batch, player: str | None = None, *, ctx: TrainContext | None = None,
             **kwargs) -> dict[str, torch.Tensor]:
        """The loss of ``player`` ("autoencoder" or "discriminator"). The adversarial terms start at
        training step ``disc_start`` of ``ctx`` (the trainer's; taming's ``discriminator_iter_start``,
        the same step for both players); without a context they are on."""
        self.check_options(kwargs, (), what="loss")
        x = self._x(batch)
        disc_on = ctx is None or ctx.step >= self.disc_start
        if player == "discriminator":
            if not disc_on:  # warm-up: the discriminator's loss weight is 0 (nothing to compute)
                zero = sum(p.sum() for p in self.discriminator.parameters()) * 0.0
                return {"loss": zero, "d_real": zero.detach(), "d_fake": zero.detach()}
            with torch.no_grad():
                xr = self.decoder(self.quantize(self.encoder(x))[0])
            real, fake = self.discriminator(x), self.discriminator(xr)
            d = 0.5 * (F.relu(1 - real).mean() + F.relu(1 + fake).mean())
            return {"loss": d, "d_real": real.mean().detach(), "d_fake": fake.mean().detach()}
        zq, idx, aux = self.quantize(self.encoder(x))
        xr = self.decoder(zq)
        l1 = (xr.float() - x.float()).abs().mean()
        rec = l1
        p = torch.zeros((), device=x.device)
        if self.perceptual_weight > 0:
            p = self.perceptual(x, xr).mean()
            rec = rec + self.perceptual_weight * p
        out = {"mse": F.mse_loss(xr.float(), x.float()).detach(), "l1": l1.detach(), "perceptual": p.detach(),
               "vq_loss": aux.detach()}
        loss = rec + self.codebook_weight * aux
        if disc_on:
            g_loss = -self.discriminator(xr).mean()
            if self.training and torch.is_grad_enabled():
                lam = self.adaptive_weight(rec, g_loss)
            else:
                lam = torch.zeros((), device=x.device)
            loss = loss + lam * g_loss
            out.update({"g_loss": g_loss.detach(), "adaptive_weight": lam})
        return {"loss": loss, **out, **self._stats(idx)}


@register("vq_prior", family="vq", paper="Esser et al. 2021 (transformer prior); van den Oord et al. 2017 (two stages)",
          summary="two-stage model: the shared Transformer (2-D RoPE) as an autoregressive prior over a tokenizer's codes")
class VQPrior(GenerativeModel):
    """An autoregressive prior over the code grid of a trained tokenizer (a ``vqvae`` or ``vqgan`` run).

    Args:
        tokenizer: the trained tokenizer (required; frozen; the prior's checkpoints keep a copy of its
            weights). In a config or ``genzoo.build`` it is the tokenizer's run folder, whose newest
            checkpoint (EMA weights when kept) is loaded (``run_folder_args``).
        vocab_size: 0 = the tokenizer's codebook size; any other value must equal it.
        transformer: the Transformer's settings, one section ``model.transformer: {dim: 128, depth: 4, ...}``
            (:class:`~genzoo.nn.transformer.TransformerConfig`; pos "rope2d" over the code grid by default,
            any position kind but rope-tie; the flat ``model.dim=...`` still works).

    ``sample`` options: temperature (default 1), top_k (0 = all codes), use_cache, progress.
    ``log_prob_codes(x)``: exact log p(codes of x) in nats per image (a likelihood of the codes, not of x).
    """

    likelihood = "none"

    #: arguments that name a run folder: ``genzoo.build`` / ``genzoo train`` load it (checking its model is a
    #: VQVAE) and pass the built model, its DataSpec as ``.data_spec``
    run_folder_args = {"tokenizer": (VQVAE, "a tokenizer: give the run folder of a vqvae or vqgan")}

    #: the Transformer's settings are one nested section, ``model.transformer: {dim: 128, pos: rope2d, ...}``
    #: (:class:`~genzoo.nn.transformer.TransformerConfig`; the flat ``model.dim=...`` of earlier configs still works)
    network_specs = {"transformer": TransformerConfig}

    def __init__(self, tokenizer: VQVAE | None = None, vocab_size: int = 0,
                 transformer: TransformerConfig | dict = TransformerConfig(pos="rope2d")):
        super().__init__()
        if tokenizer is None or (isinstance(tokenizer, (str, Path)) and not str(tokenizer)):
            raise ConfigError("vq_prior needs model.tokenizer=RUN_DIR, the run folder of a trained vqvae or vqgan "
                              "(`genzoo train vqvae`)")
        if isinstance(tokenizer, (str, Path)):
            raise ConfigError(f"VQPrior takes a built tokenizer; genzoo.build('vq_prior', tokenizer={str(tokenizer)!r}) "
                              "and genzoo train load it from the run folder")
        if not isinstance(tokenizer, VQVAE):
            raise ConfigError(f"VQPrior's tokenizer must be a VQVAE or VQGAN, got {type(tokenizer).__name__}")
        try:
            t = TransformerConfig.of(transformer)
        except (TypeError, ValueError) as e:
            raise ConfigError(f"vq_prior: {e}") from e
        if t.pos == "rope-tie":
            raise ConfigError("pos='rope-tie' is for sequences that mix text and image patches; use rope2d (or rope) here")
        tok, spec = tokenizer, getattr(tokenizer, "data_spec", None)
        K = int(tok.codebook_size)
        if int(vocab_size) and int(vocab_size) != K:
            raise ConfigError(f"the prior's vocabulary (vocab_size={int(vocab_size)}) differs from the codebook size of "
                              f"its tokenizer ({K} codes); set model.vocab_size={K} or 0")
        self.tokenizer = tok.requires_grad_(False).eval()
        self.tokenizer_spec = spec
        self.shape, self.grid, self.K = tok.shape, tok.grid, K
        self.L = self.grid[0] * self.grid[1]
        try:
            self.net = t.build(vocab_size=K + 1, out_dim=K, causal=True, max_len=self.L, grid=self.grid)
        except ValueError as e:
            raise ConfigError(str(e)) from e
        self.bos = K

    def train(self, mode: bool = True):
        super().train(mode)
        self.tokenizer.eval()  # frozen: no BN / EMA-codebook updates
        return self

    def check_data(self, spec) -> None:
        super().check_data(spec)
        t = self.tokenizer_spec
        if t is None:  # a tokenizer built in Python, not loaded from a run: nothing to compare with
            return
        mine = (t.discrete, tuple(t.value_range or ()), t.dequantization)
        theirs = (spec.discrete, tuple(spec.value_range or ()), spec.dequantization)
        if mine != theirs:
            raise ConfigError(f"the prior's data {spec.name!r} (discrete={theirs[0]}, value_range={theirs[1]}, "
                              f"dequantization={theirs[2]}) differs from the tokenizer's {t.name!r} (discrete={mine[0]}, "
                              f"value_range={mine[1]}, dequantization={mine[2]}); use the tokenizer's data settings")

    def codes(self, x: torch.Tensor) -> torch.Tensor:
        """Images -> (B, L) code sequences (raster order)."""
        return self.tokenizer.tokenize(x).reshape(x.shape[0], -1)

    def _logp(self, k: torch.Tensor, return_aux: bool = False):
        inp = torch.cat((torch.full_like(k[:, :1], self.bos), k[:, :-1]), 1)
        logits, aux = self.net(inp, return_aux=True)
        logp = F.log_softmax(logits.float(), -1).gather(-1, k[..., None]).squeeze(-1).sum(-1)
        return (logp, aux) if return_aux else logp

    def log_prob_codes(self, x: torch.Tensor) -> torch.Tensor:
        """log p(codes(x)) in nats per image (B,)."""
        return self._logp(self.codes(x))

    def loss(self, batch, **kwargs) -> dict[str, torch.Tensor]:
        self.check_options(kwargs, (), what="loss")
        x = batch[0] if isinstance(batch, (tuple, list)) else batch
        logp, aux = self._logp(self.codes(x), return_aux=True)
        nll = -logp
        return {"loss": nll.mean() / self.L + aux, "nll_codes": nll.mean().detach(),
                "bits_per_code": (nll.mean() / self.L / math.log(2)).detach()}

    @torch.no_grad()
    def sample_codes(self, n: int, *, generator=None, temperature: float = 1.0, top_k: int = 0, use_cache: bool = True,
                     progress: bool = False) -> torch.Tensor:
        if temperature <= 0:
            raise ConfigError(f"temperature must be > 0, got {temperature}")
        if top_k < 0 or top_k > self.K:
            raise ConfigError(f"top_k must be in 0..{self.K} (0 = all codes), got {top_k}")
        k = self.net.generate(n, self.L, self.bos, temperature=temperature, top_k=top_k, generator=generator,
                              use_cache=use_cache, progress=progress, desc="codes")
        return k.reshape(n, *self.grid)

    @torch.no_grad()
    def sample(self, n: int, *, generator: torch.Generator | None = None, temperature: float = 1.0, top_k: int = 0,
               use_cache: bool = True, progress: bool = False) -> torch.Tensor:
        k = self.sample_codes(n, generator=generator, temperature=float(temperature), top_k=int(top_k),
                              use_cache=bool(use_cache), progress=bool(progress))
        return self.tokenizer.detokenize(k)
