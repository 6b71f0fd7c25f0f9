"""NVAE-style hierarchical VAE: a bidirectional encoder, residual-normal groups, spectral
regularisation, KL warm-up and balancing, and an IWAE-bound ``log_prob``.

Paper and the equations implemented
-----------------------------------
Vahdat & Kautz 2020, "NVAE: A Deep Hierarchical Variational Autoencoder" (NeurIPS).

* Hierarchy (section 3.1, fig. 2). The latents are L groups z_1 (top, coarsest) .. z_L.
  A bottom-up deterministic path r(x) gives a feature e_l for every group; a top-down path
  with state h_l, *shared* by the generative model and the inference model, carries the
  groups downwards:
      p(z) = prod_l p(z_l | z_<l),            q(z | x) = prod_l q(z_l | x, z_<l),
      p(z_1) = N(0, I),  h_1 = a learned constant,  h_{l+1} = T_l(h_l, z_l).
  log p(x) >= ELBO = E_q[log p(x | z)] - KL(q(z_1|x) || p(z_1))
                     - sum_{l>=2} E_{q(z_<l|x)}[KL(q(z_l | x, z_<l) || p(z_l | z_<l))]   (eq. 1)
* Residual normal distributions (eq. 2). With p(z_l^i | z_<l) = N(mu_p, sigma_p^2) per
  latent variable i, the posterior is parameterised *relative to the prior*:
      q(z_l^i | x, z_<l) = N(mu_p + dmu, (sigma_p * dsigma)^2),
  (dmu, log dsigma) = a conv of the combination of e_l with h_l, and
      KL(q || p) = 1/2 (dmu^2 / sigma_p^2 + dsigma^2 - 1 - log dsigma^2).
  The top group has the fixed prior N(0, I), so there (dmu, dsigma) are q's own (mu, sigma).
  As in the paper's code, every mean and log-scale is soft-clamped to (-5, 5) by
  5 tanh(./5); the clamp is applied to mu_p, log sigma_p, dmu and log dsigma separately, so
  the residual form and the closed-form KL above are exact.
* Spectral regularisation (section 3.2):
      L_SR = lambda * sum_i s(i),
  s(i) the largest singular value of conv layer i's weight reshaped to out x (in*kh*kw),
  estimated by power iteration (Yoshida & Miyato 2017) with the left and right singular
  vectors u_i, v_i kept as persistent buffers (saved in checkpoints): every training step
  does ``power_iterations`` updates (default 1; the authors' released code does 4, and 40
  at its first call; here 20 run once at build time, so the estimate starts converged)
      v <- normalise(W^T u),  u <- normalise(W v),  s = u^T W v   (gradient through W only).
  The authors' code also penalises the BatchNorm scales, lambda * sum_BN max |gamma| (the
  paper's remedy for BN instability); the same lambda is used here (``bn_reg=True``).
  lambda (``sr_lambda``) defaults to 1e-2, the authors' setting for MNIST (``--weight_decay_norm
  1e-2``; 1e-1 for CelebA 64 and FFHQ).
* KL warm-up (the paper's training setup; ``kl_anneal_portion = 0.3`` in the authors' code):
  the KL term's weight beta rises linearly over the first 30 % of training,
      beta(step) = max(beta_min, min(1, step / warmup)),
  beta_min = 1e-4 as in the authors' code (``kl_const_coeff``). The step is the trainer's
  (``loss(batch, ctx=...)``, a :class:`~genzoo.models.base.TrainContext`; a resumed run continues
  the schedule); called without a context, the loss is the plain ELBO's (beta = 1).
  ``kl_warmup_steps`` is absolute: recipes set it to 30 % of ``train.steps``.
* KL balancing (the paper's implementation details; the authors' ``kl_balancer``): during
  warm-up (beta < 1) the KL of group l is weighted by gamma_l proportional to (E_batch|KL_l| + 0.01) / alpha_l,
  normalised to mean 1 and not differentiated, alpha_l proportional to the spatial size of
  l's scale over the number of groups at that scale (their "square" rule). Groups with
  little KL are pushed less, so fewer groups collapse. ``kl_balance=False`` turns it off;
  after warm-up (beta = 1) the objective is the plain ELBO.
* Validation (the trainer's ``valid_loss`` and ``train.keep_best``) scores ``nelbo``, the plain
  negative ELBO, not ``loss``: during the warm-up ``loss`` is far below the ELBO and would make the
  first validation the "best".

Architecture (scaled to a CPU; the paper's MNIST model has 15 groups of 20 latent maps at
8x8 and 4x4, 32 channels, 2 cells per group and an MBConv decoder, trained 400 epochs on
two V100s for 21 hours). Images (C, H, W) with H, W divisible by 4:

* latent groups at two scales: ``groups = (n_top, n_fine)`` groups of ``latent_channels``
  maps at H/4 x W/4 (7x7 for MNIST) and H/2 x W/2 (14x14); n_fine = 0 gives one scale;
* channels c at H x W, 2c at H/2, 4c at H/4 (``channels = c``; each conv costs the same at
  every scale);
* residual cell (the paper's encoder cell, used in both towers here; the paper's decoder
  uses a costlier depthwise MBConv cell): x + 0.1 * SE(conv3x3(Swish(BN(conv3x3(Swish(BN(x))))))),
  SE = squeeze-and-excitation with max(C/16, 4) hidden units, BN momentum 0.05 as the paper;
* bottom-up: stem conv3x3, ``pre_post_cells`` cells, a stride-2 conv, ``cells_per_group``
  cells per fine group (recording e_l after each group), a stride-2 conv, the same per top
  group; the groups read the features in reverse (the last, deepest feature feeds z_1
  through an ELU-conv1x1-ELU, as the paper's ``enc0``);
* top-down: h_1 learned; for l >= 2 ``cells_per_group`` cells, then the prior's
  (mu_p, log sigma_p) = conv1x1(ELU(h)); the posterior's (dmu, log dsigma) = conv3x3 of
  e_l + conv1x1(h) (the paper's encoder combiner); h <- conv1x1([h, z_l]) (decoder
  combiner); nearest-upsample + conv3x3 between scales; ``pre_post_cells`` cells at full
  resolution; ELU + conv3x3 to the likelihood parameters.
* no normalising flows in q, no weight normalisation, no BN re-adjustment before
  sampling, Adam/AdamW as the trainer offers instead of Adamax (differences from the paper).

Decoders (``decoder=``) and the data each expects
-------------------------------------------------
* "bernoulli": logits; binary {0, 1} data (data.binarize=static or dynamic). A mass.
* "logistic": discretised logistic (mixture of ``nr_mix``; PixelCNN++) on the 256-level
  grid 2k/255 - 1 in [-1, 1], not dequantised (see :mod:`genzoo.nn.likelihoods`). A mass.
:meth:`HierarchicalVAE.check_data` refuses other data with the setting that fixes it.

Objectives and options
----------------------
``loss(batch)`` returns means over the batch in nats per example:
    "loss"  = rec + beta * sum_l gamma_l KL_l + lambda * (sum_i s(i) + sum_BN max|gamma_BN|)
    "nelbo" = rec + sum_l KL_l (the negative ELBO, always), "rec" = -log p(x|z), "kl",
    "beta", "sr" (sum_i s(i)), "bn_reg", and "kl_1" .. "kl_L" (each group's KL).
The per-group KL is the closed form above at the sampled z_<l (one-sample Monte Carlo over
the upper groups, as the paper).

``log_prob(x, k=100, chunk=None, generator=None)``: the IWAE bound (Burda et al. 2016)
with k importance samples from the hierarchical posterior,
    L_k = logsumexp_i(log w_i) - log k,
    log w_i = log p(x | z^i) + sum_l log p(z^i_l | z^i_<l) - sum_l log q(z^i_l | x, z^i_<l).
With k = 1 it is the single-sample ELBO with a Monte Carlo KL: the same draw as
:meth:`elbo` / :meth:`loss` (equal seeds), whose KL is the closed form instead. Evaluate in
eval mode (``genzoo eval`` does): in training mode BatchNorm uses the statistics of the
k * B examples decoded together, so the value would depend on ``chunk``.

``sample(n, generator=None, temperature=1.0, mean=True)``: ancestral sampling from the
prior top-down, z_1 ~ N(0, t^2 I), z_l ~ N(mu_p, (t sigma_p)^2) (the paper's temperature);
the decoder mean (``mean=True``) or a draw from p(x|z).

``encode(x)``: the top group's posterior mean, flattened (linear probe, interpolations);
``decode(z)``: the decoder mean with z_1 = z and the lower groups at their prior means;
``reconstruct(x)``: the decoder mean with every group at its posterior mean.

Randomness: every draw comes from the ``generator`` argument (torch's global RNG when
None). A posterior pass draws, for each group l = 1..L in top-down order,
``randn((B, latent_channels, H_l, W_l))``; the i-th importance sample of ``log_prob`` makes
exactly these draws after those of samples 1..i-1, so the value does not depend on
``chunk``, and ``log_prob(x, k=1)`` uses the draws of ``elbo(x)`` for equal seeds.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError, DataError
from ..nn.likelihoods import make_likelihood, randn
from ..registry import register
from .base import GenerativeModel, TrainContext
from .data_needs import DataNeeds

_LOG_2PI = math.log(2.0 * math.pi)
DECODERS = ("bernoulli", "logistic")


# ------------------------------------------------------------------------ closed forms
def soft_clamp(x: torch.Tensor, bound: float = 5.0) -> torch.Tensor:
    """bound * tanh(x / bound): the paper code's soft clamp of means and log-scales."""
    return bound * torch.tanh(x / bound)


def residual_normal_kl(dmu: torch.Tensor, log_dsigma: torch.Tensor, log_sigma_p: torch.Tensor) -> torch.Tensor:
    """KL(N(mu_p + dmu, (sigma_p dsigma)^2) || N(mu_p, sigma_p^2)), elementwise (NVAE eq. 2):

        1/2 (dmu^2 / sigma_p^2 + dsigma^2 - 1 - log dsigma^2)     (independent of mu_p)
    """
    return 0.5 * (dmu * dmu * torch.exp(-2.0 * log_sigma_p) + torch.exp(2.0 * log_dsigma) - 1.0 - 2.0 * log_dsigma)


def normal_log_prob(z: torch.Tensor, mu: torch.Tensor, log_sigma: torch.Tensor) -> torch.Tensor:
    """log N(z; mu, exp(log_sigma)^2) elementwise, nats."""
    e = (z - mu) * torch.exp(-log_sigma)
    return -0.5 * e * e - log_sigma - 0.5 * _LOG_2PI


def kl_beta(step: int, warmup_steps: int, beta_min: float = 1e-4) -> float:
    """KL warm-up weight max(beta_min, min(1, step / warmup_steps)); 1 when warmup_steps = 0.

    The authors' ``kl_coeff`` with ``kl_const_portion`` ~ 0 (their default 1e-4 of training).
    """
    if warmup_steps <= 0:
        return 1.0
    return max(float(beta_min), min(1.0, float(step) / float(warmup_steps)))


def kl_balance_coeffs(kl_all: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
    """NVAE's KL balancing coefficients gamma (L,) for per-example group KLs ``kl_all`` (B, L).

    gamma_l = c_l / mean(c), c_l = (mean_b |KL_l| + 0.01) / alpha_l * sum_j (mean_b |KL_j| + 0.01)
    (the authors' ``kl_balancer``); returned detached: the weights are constants.
    """
    c = kl_all.detach().abs().mean(0) + 0.01
    c = c / alpha * c.sum()
    return c / c.mean()


@torch.no_grad()
def power_iteration(w2d: torch.Tensor, u: torch.Tensor, v: torch.Tensor, iterations: int = 1):
    """``iterations`` power-iteration updates of the top singular vectors of ``w2d`` (out, in):
    v <- normalise(W^T u), u <- normalise(W v). Returns the new (u, v); s = u^T W v."""
    for _ in range(int(iterations)):
        v = F.normalize(w2d.t() @ u, dim=0)
        u = F.normalize(w2d @ v, dim=0)
    return u, v


class SpectralRegularizer(nn.Module):
    """sum_i s(i), s(i) ~ the largest singular value of weight i reshaped to (out, -1).

    Holds the power-iteration vectors u_i (out,) and v_i (in*kh*kw,) as buffers ``u{i}``,
    ``v{i}`` (persistent: saved and restored with the model's state_dict).

    Args:
        shapes: the weights' shapes, in the order :meth:`forward` receives them.
    """

    def __init__(self, shapes):
        super().__init__()
        self.num = len(shapes)
        for i, shape in enumerate(shapes):
            out, rest = int(shape[0]), int(math.prod(shape[1:]))
            self.register_buffer(f"u{i}", F.normalize(torch.randn(out), dim=0))
            self.register_buffer(f"v{i}", F.normalize(torch.randn(rest), dim=0))

    def forward(self, weights, iterations: int = 0) -> torch.Tensor:
        """sum_i u_i^T W_i v_i (differentiable in W_i), after ``iterations`` in-place updates of u_i, v_i."""
        if len(weights) != self.num:
            raise ValueError(f"SpectralRegularizer holds {self.num} vector pairs, got {len(weights)} weights")
        total = 0.0
        for i, w in enumerate(weights):
            w2d = w.reshape(w.shape[0], -1)
            u, v = getattr(self, f"u{i}"), getattr(self, f"v{i}")
            if iterations > 0:
                nu, nv = power_iteration(w2d.detach().to(u.dtype), u, v, iterations)
                u.copy_(nu)
                v.copy_(nv)
            total = total + u.to(w2d.dtype) @ (w2d @ v.to(w2d.dtype))
        return total if torch.is_tensor(total) else torch.zeros(())

    def sigmas(self, weights) -> torch.Tensor:
        """The current estimates s(i) (no update), (num,)."""
        with torch.no_grad():
            return torch.stack([getattr(self, f"u{i}") @ (w.reshape(w.shape[0], -1) @ getattr(self, f"v{i}"))
                                for i, w in enumerate(weights)])


# ------------------------------------------------------------------------ layers
class SqueezeExcite(nn.Module):
    """x * sigmoid(W2 relu(W1 mean_hw(x))), hidden max(C/16, 4) (Hu et al. 2018, as NVAE)."""

    def __init__(self, c: int):
        super().__init__()
        hidden = max(c // 16, 4)
        self.fc1, self.fc2 = nn.Linear(c, hidden), nn.Linear(hidden, c)

    def forward(self, x):
        s = torch.sigmoid(self.fc2(F.relu(self.fc1(x.mean((2, 3))))))
        return x * s[:, :, None, None]


class ResidualCell(nn.Module):
    """NVAE's residual cell: x + 0.1 * SE(conv3x3(Swish(BN(conv3x3(Swish(BN(x))))))), BN momentum 0.05."""

    def __init__(self, c: int, se: bool = True):
        super().__init__()
        self.bn1, self.conv1 = nn.BatchNorm2d(c, momentum=0.05), nn.Conv2d(c, c, 3, padding=1)
        self.bn2, self.conv2 = nn.BatchNorm2d(c, momentum=0.05), nn.Conv2d(c, c, 3, padding=1)
        self.se = SqueezeExcite(c) if se else nn.Identity()

    def forward(self, x):
        h = self.conv1(F.silu(self.bn1(x)))
        h = self.conv2(F.silu(self.bn2(h)))
        return x + 0.1 * self.se(h)


class Up(nn.Module):
    """Nearest-neighbour x2 upsampling then conv3x3 (cin -> cout)."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, 3, padding=1)

    def forward(self, x):
        return self.conv(F.interpolate(F.silu(x), scale_factor=2.0, mode="nearest"))


class EncCombiner(nn.Module):
    """e + conv1x1(h): the bottom-up feature plus the top-down state (the paper's encoder combiner)."""

    def __init__(self, c: int):
        super().__init__()
        self.conv = nn.Conv2d(c, c, 1)

    def forward(self, e, h):
        return e + self.conv(h)


class DecCombiner(nn.Module):
    """conv1x1([h, z]) -> h (the paper's decoder combiner)."""

    def __init__(self, c: int, zc: int):
        super().__init__()
        self.conv = nn.Conv2d(c + zc, c, 1)

    def forward(self, h, z):
        return self.conv(torch.cat([h, z], 1))


def _cells(n: int, c: int, se: bool) -> nn.Sequential:
    return nn.Sequential(*[ResidualCell(c, se) for _ in range(n)])


# ------------------------------------------------------------------------ the model
@register("nvae", family="vae", paper="Vahdat & Kautz 2020 (NVAE); Burda et al. 2016 (IWAE bound)",
          summary="NVAE-style hierarchical VAE: residual-normal groups at two scales, spectral "
                  "regularisation, KL warm-up, IWAE-bound log_prob")
class HierarchicalVAE(GenerativeModel):
    """NVAE-style hierarchical VAE (Vahdat & Kautz 2020); see the module docstring for the equations.

    Args:
        shape: per-example image shape (C, H, W), H and W divisible by 4.
        channels: channels c at full resolution (2c at H/2, 4c at H/4).
        latent_channels: latent maps per group (the paper: 20).
        groups: (groups at H/4, groups at H/2); the second may be 0 (one scale).
        cells_per_group: residual cells per group in each tower (the paper's MNIST model: 2).
        pre_post_cells: residual cells at full resolution after the stem and before the output.
        se: squeeze-and-excitation in the residual cells.
        decoder: "bernoulli" (binary data) or "logistic" (256-level data in [-1, 1]).
        nr_mix: mixture components of the "logistic" decoder.
        kl_warmup_steps: training steps over which beta rises linearly to 1 (0: no warm-up);
            set it to 30 % of train.steps (the paper's warm-up).
        kl_min: the smallest beta (the authors' code: 1e-4).
        kl_balance: NVAE's KL balancing coefficients during warm-up.
        sr_lambda: lambda of the spectral (and BN-scale) regularisation; 0 turns it off.
        power_iterations: power-iteration updates per training step (the paper: 1).
        bn_reg: add lambda * sum_BN max|gamma| (the authors' code) to the loss.
    """

    likelihood = "bound"
    #: validation (and train.keep_best) scores the negative ELBO: "loss" carries beta < 1 during the KL warm-up
    #: (its early values are far below the ELBO's) and the spectral penalty
    valid_metric = "nelbo"
    retired_state = ("global_step",)  # the KL warm-up's own step counter (the trainer's step is in ctx)
    #: images per sample() call in genzoo sample / eval (benchmarks/sampling_speed.py --only families: 0.29 / 0.36 /
    #: 0.41 ms per image at 64 / 16 / 256 for the recipe's untrained net on 2 cores)
    sample_chunk = 64

    def __init__(
        self,
        shape: tuple = (1, 28, 28),
        channels: int = 16,
        latent_channels: int = 4,
        groups: tuple = (2, 2),
        cells_per_group: int = 1,
        pre_post_cells: int = 1,
        se: bool = True,
        decoder: str = "bernoulli",
        nr_mix: int = 1,
        kl_warmup_steps: int = 3000,
        kl_min: float = 1e-4,
        kl_balance: bool = True,
        sr_lambda: float = 1e-2,
        power_iterations: int = 1,
        bn_reg: bool = True,
    ):
        super().__init__()
        shape = tuple(int(s) for s in shape)
        if len(shape) != 3 or any(s <= 0 for s in shape) or shape[1] % 4 or shape[2] % 4:
            raise ConfigError(f"nvae needs an image shape (C, H, W) with H and W divisible by 4, got {shape}; "
                              "use the vae model (arch=mlp) for other shapes")
        if decoder not in DECODERS:
            raise ConfigError(f"unknown nvae decoder {decoder!r}; valid: {', '.join(DECODERS)}")
        groups = tuple(int(g) for g in groups)
        if len(groups) != 2 or groups[0] < 1 or groups[1] < 0:
            raise ConfigError(f"nvae groups must be (groups at H/4 >= 1, groups at H/2 >= 0), got {groups}; "
                              "e.g. groups=[2,2]")
        for name, v, lo in (("channels", channels, 1), ("latent_channels", latent_channels, 1),
                            ("cells_per_group", cells_per_group, 0), ("pre_post_cells", pre_post_cells, 0),
                            ("kl_warmup_steps", kl_warmup_steps, 0), ("power_iterations", power_iterations, 0)):
            if int(v) < lo:
                raise ConfigError(f"nvae {name} must be >= {lo}, got {v}")
        if not 0.0 < float(kl_min) <= 1.0:
            raise ConfigError(f"nvae kl_min must be in (0, 1], got {kl_min}")
        if float(sr_lambda) < 0:
            raise ConfigError(f"nvae sr_lambda must be >= 0, got {sr_lambda}")
        self.shape, self.groups, self.decoder_name = shape, groups, decoder
        self.latent_channels = zc = int(latent_channels)
        self.kl_warmup_steps, self.kl_min, self.kl_balance = int(kl_warmup_steps), float(kl_min), bool(kl_balance)
        self.sr_lambda, self.power_iterations, self.bn_reg = float(sr_lambda), int(power_iterations), bool(bn_reg)
        self.lik = make_likelihood(decoder, nr_mix=nr_mix) if decoder == "logistic" else make_likelihood(decoder)
        self.discrete_likelihood = self.lik.discrete
        C, H, W = shape
        c = int(channels)
        c1, c2 = 2 * c, 4 * c
        n_top, n_fine = groups
        L = n_top + n_fine
        #: per group (top-down order): (channels of the state, latent H, latent W)
        self.group_dims = [(c2, H // 4, W // 4)] * n_top + [(c1, H // 2, W // 2)] * n_fine
        # -- bottom-up
        self.stem = nn.Conv2d(C, c, 3, padding=1)
        self.pre = _cells(int(pre_post_cells), c, se)
        self.down1 = nn.Conv2d(c, c1, 3, stride=2, padding=1)
        self.enc_fine = nn.ModuleList([_cells(int(cells_per_group), c1, se) for _ in range(n_fine)])
        self.down2 = nn.Sequential(nn.SiLU(), nn.Conv2d(c1, c2, 3, stride=2, padding=1))
        self.enc_top = nn.ModuleList([_cells(int(cells_per_group), c2, se) for _ in range(n_top)])
        self.enc0 = nn.Sequential(nn.ELU(), nn.Conv2d(c2, c2, 1), nn.ELU())
        # -- top-down
        self.h0 = nn.Parameter(torch.randn(1, c2, H // 4, W // 4) * 0.1)
        self.dec_cells = nn.ModuleList([_cells(int(cells_per_group), gc, se) for gc, _, _ in self.group_dims[1:]])
        self.prior_nets = nn.ModuleList([nn.Sequential(nn.ELU(), nn.Conv2d(gc, 2 * zc, 1))
                                         for gc, _, _ in self.group_dims[1:]])
        self.enc_combiners = nn.ModuleList([EncCombiner(gc) for gc, _, _ in self.group_dims[1:]])
        self.q_nets = nn.ModuleList([nn.Conv2d(gc, 2 * zc, 3, padding=1) for gc, _, _ in self.group_dims])
        self.dec_combiners = nn.ModuleList([DecCombiner(gc, zc) for gc, _, _ in self.group_dims])
        self.up1 = Up(c2, c1)
        self.up2 = Up(c1, c)
        self.post = _cells(int(pre_post_cells), c, se)
        self.out = nn.Sequential(nn.ELU(), nn.Conv2d(c, self.lik.num_params * C, 3, padding=1))
        with torch.no_grad():  # start with q close to p and p close to N(0, I)
            for m in list(self.q_nets) + [net[-1] for net in self.prior_nets]:
                m.weight.mul_(0.1)
                m.bias.zero_()
        # KL balancing weights alpha_l ~ (spatial size / size at the top) / (groups at that scale), min 1
        alpha = torch.tensor([(h * w) / ((H // 4) * (W // 4)) / (n_top if h == H // 4 else n_fine)
                              for _, h, w in self.group_dims], dtype=torch.float32)
        self.register_buffer("kl_alpha", alpha / alpha.min(), persistent=False)
        # spectral regularisation: persistent power-iteration vectors, warmed up on the initial weights
        convs = self._conv_weights()
        self.sr = SpectralRegularizer([w.shape for w in convs])
        with torch.no_grad():
            self.sr(convs, iterations=20)
        self.num_groups = L

    # -- data compatibility -----------------------------------------------------------
    #: images only; "bernoulli" needs binary {0, 1} data, "logistic" the un-dequantised 256-level grid of [-1, 1]
    data_name = "nvae"
    data_needs_by = ("decoder", "decoder_name")
    data_needs = {
        "bernoulli": DataNeeds(("image",), ("binary",), alternative="model.decoder=logistic (256-level data in [-1, 1])"),
        "logistic": DataNeeds(("image",), levels=256, value_range=(-1.0, 1.0),
                              alternative="model.decoder=bernoulli with data.binarize=static"),
    }

    # -- helpers -------------------------------------------------------------------------
    def _check_x(self, x) -> torch.Tensor:
        if isinstance(x, (tuple, list)):
            x = x[0]
        if tuple(x.shape[1:]) != self.shape:
            raise DataError(f"nvae built for examples of shape {self.shape} got a batch of shape {tuple(x.shape)}")
        return x

    def _conv_weights(self) -> list[torch.Tensor]:
        """The weights of every conv layer, in module order (the spectral regulariser's layers)."""
        return [m.weight for m in self.modules() if isinstance(m, nn.Conv2d)]

    def _bn_layers(self) -> list[nn.BatchNorm2d]:
        return [m for m in self.modules() if isinstance(m, nn.BatchNorm2d)]

    @staticmethod
    def _split(params):
        mu, log_sigma = params.chunk(2, dim=1)
        return soft_clamp(mu), soft_clamp(log_sigma)

    def kl_weight(self, step: int | None = None) -> float:
        """beta at training step ``step`` (None: after the warm-up, 1)."""
        return 1.0 if step is None else kl_beta(int(step), self.kl_warmup_steps, self.kl_min)

    def _draw_noise(self, n: int, generator, device, dtype) -> list[torch.Tensor]:
        """One draw per group, top-down order: randn((n, latent_channels, H_l, W_l))."""
        return [randn((n, self.latent_channels, h, w), generator, device=device, dtype=dtype)
                for _, h, w in self.group_dims]

    def bottom_up(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Bottom-up features e_l for the groups in top-down order (e_1 first)."""
        h = self.stem(2.0 * x - 1.0 if self.decoder_name == "bernoulli" else x)
        h = self.down1(self.pre(h))
        fine = []
        for cells in self.enc_fine:
            h = cells(h)
            fine.append(h)
        h = self.down2(h)
        top = []
        for cells in self.enc_top:
            h = cells(h)
            top.append(h)
        return top[::-1] + fine[::-1]

    def _output(self, h: torch.Tensor) -> torch.Tensor:
        if self.groups[1] == 0:
            h = self.up1(h)
        h = self.post(self.up2(h))
        return self.out(h).reshape(h.shape[0], self.lik.num_params, *self.shape)

    def top_down(self, n: int, feats=None, noises=None, *, temperature: float = 1.0, z_top=None,
                 trace: bool = False) -> dict:
        """Run the shared top-down path for n examples.

        * ``feats`` given (bottom-up features, n examples each): z_l from the posterior,
          z_l = mu_q + sigma_q * noise_l (noise_l = 0 when ``noises`` is None: posterior means);
          returns "kl", "log_p", "log_q" (each (n, L), nats per group).
        * ``feats`` None: z_l from the prior, z_l = mu_p + temperature * sigma_p * noise_l
          (prior means when ``noises`` is None); ``z_top`` fixes z_1 instead.
        Always returns "params", the likelihood parameters (n, P, *shape); with ``trace`` also
        "groups": per group a dict of mu_p, log_sigma_p, (mu_q, log_sigma_q,) z.
        """
        h = self.h0.expand(n, -1, -1, -1)
        kls, lps, lqs, info = [], [], [], []
        for l in range(self.num_groups):
            if l == self.groups[0]:
                h = self.up1(h)
            if l > 0:
                h = self.dec_cells[l - 1](h)
                mu_p, ls_p = self._split(self.prior_nets[l - 1](h))
            else:
                _, gh, gw = self.group_dims[0]
                mu_p = ls_p = torch.zeros((n, self.latent_channels, gh, gw), device=h.device, dtype=h.dtype)
            eps = noises[l] if noises is not None else None
            if feats is not None:
                ftr = self.enc0(feats[l]) if l == 0 else self.enc_combiners[l - 1](feats[l], h)
                dmu, ls_d = self._split(self.q_nets[l](ftr))
                mu_q, ls_q = mu_p + dmu, ls_p + ls_d
                z = mu_q if eps is None else mu_q + torch.exp(ls_q) * eps
                kls.append(residual_normal_kl(dmu, ls_d, ls_p).flatten(1).sum(1))
                lps.append(normal_log_prob(z, mu_p, ls_p).flatten(1).sum(1))
                lq = normal_log_prob(z, mu_q, ls_q) if eps is None else -0.5 * eps * eps - ls_q - 0.5 * _LOG_2PI
                lqs.append(lq.flatten(1).sum(1))
                if trace:
                    info.append({"mu_p": mu_p, "log_sigma_p": ls_p, "mu_q": mu_q, "log_sigma_q": ls_q, "z": z})
            else:
                if l == 0 and z_top is not None:
                    z = z_top.reshape(n, self.latent_channels, *self.group_dims[0][1:]).to(h.dtype)
                else:
                    z = mu_p if eps is None else mu_p + temperature * torch.exp(ls_p) * eps
                if trace:
                    info.append({"mu_p": mu_p, "log_sigma_p": ls_p, "z": z})
            h = self.dec_combiners[l](h, z)
        out = {"params": self._output(h)}
        if feats is not None:
            out.update(kl=torch.stack(kls, 1), log_p=torch.stack(lps, 1), log_q=torch.stack(lqs, 1))
        if trace:
            out["groups"] = info
        return out

    # -- objectives ----------------------------------------------------------------------
    def _elbo_terms(self, x, generator=None, trace: bool = False) -> dict:
        """One posterior pass: "rec" = log p(x|z) (B,), "kl" / "log_p" / "log_q" (B, L), "params"."""
        feats = self.bottom_up(x)
        noises = self._draw_noise(x.shape[0], generator, x.device, feats[0].dtype)
        out = self.top_down(x.shape[0], feats, noises, trace=trace)
        out["rec"] = self.lik.log_prob(out["params"], x)
        return out

    def elbo(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Single-sample ELBO log p(x|z) - sum_l KL_l with the closed-form group KLs: (B,) nats."""
        t = self._elbo_terms(self._check_x(x), generator)
        return t["rec"] - t["kl"].sum(1)

    def regularizers(self, update: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """(sum_i s(i) over conv layers, sum_BN max|gamma|); ``update`` runs the power iteration."""
        sr = self.sr(self._conv_weights(), iterations=self.power_iterations if update else 0)
        bns = [m.weight.abs().max() for m in self._bn_layers() if m.weight is not None]
        bn = torch.stack(bns).sum() if bns else torch.zeros((), device=sr.device)
        return sr, bn

    def loss(self, batch, generator: torch.Generator | None = None, *, ctx: TrainContext | None = None,
             **kwargs) -> dict[str, torch.Tensor]:
        """Training loss (means over the batch, nats per example); see the module docstring.
        ``ctx`` (the trainer's) gives the step of the KL warm-up; without it beta = 1."""
        self.check_options(kwargs, (), what="loss")
        x = self._check_x(batch)
        training = self.training and torch.is_grad_enabled()
        beta = self.kl_weight(ctx.step if ctx is not None else None)
        t = self._elbo_terms(x, generator)
        rec = -t["rec"].mean()
        kl_groups = t["kl"].mean(0)
        kl = kl_groups.sum()
        if self.kl_balance and beta < 1.0:
            gamma = kl_balance_coeffs(t["kl"], self.kl_alpha.to(t["kl"].dtype))
            kl_train = (t["kl"] * gamma).sum(1).mean()
        else:
            kl_train = kl
        loss = rec + beta * kl_train
        zero = torch.zeros((), device=x.device)
        sr, bn = zero, zero
        if self.sr_lambda > 0:
            sr, bn = self.regularizers(update=training)
            loss = loss + self.sr_lambda * (sr + (bn if self.bn_reg else 0.0))
        out = {"loss": loss, "nelbo": rec + kl, "rec": rec, "kl": kl,
               "beta": torch.tensor(beta, device=x.device), "sr": sr.detach(), "bn_reg": bn.detach()}
        out.update({f"kl_{l + 1}": kl_groups[l].detach() for l in range(self.num_groups)})
        return out

    def _auto_chunk(self, batch: int) -> int:
        C, H, W = self.shape
        c = self.out[-1].in_channels
        per_sample = batch * c * H * W * 8  # the largest activations of one top-down pass
        return max(1, (1 << 24) // max(per_sample, 1))

    def log_prob(self, x: torch.Tensor, *, k: int = 100, chunk: int | None = None,
                 generator: torch.Generator | None = None) -> torch.Tensor:
        """IWAE lower bound L_k on log p(x): (B,) nats per example (module docstring).

        Options:
            k: importance samples (default 100; ``genzoo eval RUN k=1000`` for the benchmark).
            chunk: importance samples decoded at once (default: ~64 MB of activations);
                changes memory and speed, not the value (in eval mode).
            generator: torch.Generator for the draws (global RNG when None).
        Gradients flow through; wrap in torch.no_grad() to evaluate.
        """
        k = int(k)
        if k < 1:
            raise ConfigError(f"log_prob needs k >= 1 importance samples, got {k}")
        x = self._check_x(x)
        B = x.shape[0]
        chunk = max(1, min(int(chunk or self._auto_chunk(B)), k))
        feats = self.bottom_up(x)
        log_ws = []
        for start in range(0, k, chunk):
            c = min(chunk, k - start)
            draws = [self._draw_noise(B, generator, x.device, feats[0].dtype) for _ in range(c)]  # sample-major order
            noises = [torch.cat([d[l] for d in draws], 0) for l in range(self.num_groups)]
            fr = [f.repeat(c, 1, 1, 1) for f in feats]
            t = self.top_down(c * B, fr, noises)
            xr = x.repeat(c, *([1] * (x.dim() - 1)))
            log_px = self.lik.log_prob(t["params"], xr)
            log_ws.append((log_px + t["log_p"].sum(1) - t["log_q"].sum(1)).reshape(c, B))
        log_w = torch.cat(log_ws, 0)  # (k, B)
        return torch.logsumexp(log_w, dim=0) - math.log(k)

    # -- generation, encoding ------------------------------------------------------------
    @torch.no_grad()
    def sample(self, n: int, *, generator: torch.Generator | None = None, temperature: float = 1.0,
               mean: bool = True) -> torch.Tensor:
        """n samples (n, *shape) drawn top-down from the prior.

        Options:
            temperature: scales every prior sigma (z_1 ~ N(0, t^2), z_l ~ N(mu_p, (t sigma_p)^2));
                default 1.0 (the paper shows samples at t = 0.6 .. 1.0).
            mean: True (default): the decoder mean (Bernoulli probabilities, logistic means);
                False: a draw from p(x|z) ({0, 1} pixels or grid values).
        """
        temperature, use_mean = float(temperature), bool(mean)
        n = int(n)
        dtype = next(self.parameters()).dtype
        noises = self._draw_noise(n, generator, self.device, dtype)
        params = self.top_down(n, None, noises, temperature=temperature)["params"]
        return self.lik.mean(params) if use_mean else self.lik.sample(params, generator)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """The top group's posterior mean, flattened: (B, *shape) -> (B, latent_channels * H/4 * W/4)."""
        x = self._check_x(x)
        f = self.bottom_up(x)[0]
        mu, _ = self._split(self.q_nets[0](self.enc0(f)))
        return mu.flatten(1)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Decoder mean with z_1 = z (N, latent_channels * H/4 * W/4) and the lower groups at their prior means."""
        return self.lik.mean(self.top_down(z.shape[0], None, None, z_top=z)["params"])

    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        """Decoder mean with every group at its posterior mean: (B, *shape) -> (B, *shape)."""
        x = self._check_x(x)
        return self.lik.mean(self.top_down(x.shape[0], self.bottom_up(x), None)["params"])
