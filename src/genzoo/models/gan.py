"""Generative adversarial networks and adversarial encoders, on the one multi-player interface.

Every model here has two players that the one trainer alternates (``players()``, then
``loss(batch, player=name)``): ``"discriminator"`` (called the critic in the Wasserstein
papers; updated ``d_steps`` times per training step) and ``"generator"`` (once). Each
player's loss is a mean over the batch. ``likelihood = "none"``: judge these models with
``genzoo eval --metrics fid,kid,pr`` (images), ``modes`` (8 Gaussians) and ``probe``
(encoders). z ~ N(0, I_latent_dim) throughout; x in the data set's value range.

Papers and the equations implemented (T is the discriminator's output, x_r real, x_f = G(z))
-----------------------------------------------------------------------------------------
* **GAN**, Goodfellow et al. 2014, "Generative Adversarial Nets" (NeurIPS), eq. 1:
  min_G max_D E[log D(x_r)] + E[log(1 - D(G(z)))], D = sigmoid(T). With logits:
      L_D = E[softplus(-T(x_r))] + E[softplus(T(x_f))]
      L_G = E[log(1 - sigmoid(T(x_f)))] = -E[softplus(T(x_f))]        (minimax, eq. 1)
      L_G = -E[log sigmoid(T(x_f))]     =  E[softplus(-T(x_f))]        (non-saturating, sec. 3)
* **WGAN**, Arjovsky, Chintala & Bottou 2017 (ICML), Algorithm 1: the critic T maximises the
  Kantorovich-Rubinstein dual E[T(x_r)] - E[T(x_f)] over (roughly) K-Lipschitz functions,
  enforced by clipping every critic weight to [-c, c] (c = 0.01), n_critic = 5:
      L_T = E[T(x_f)] - E[T(x_r)],   L_G = -E[T(x_f)],
  logged W1 estimate ``w1`` = E[T(x_r)] - E[T(x_f)] (before the update, on the step's batch).
* **WGAN-GP**, Gulrajani et al. 2017, "Improved Training of Wasserstein GANs", Algorithm 1:
      L_T = E[T(x_f)] - E[T(x_r)] + lambda E[(||grad_x T(x_hat)||_2 - 1)^2],
      x_hat = eps x_r + (1 - eps) x_f, eps ~ U[0, 1] per example, lambda = 10, n_critic = 5,
  Adam(1e-4, betas (0, 0.9)); no batch norm in the critic (genzoo's critics have none).
* **GAN-QP**, Su 2018, "GAN-QP: A Novel GAN Framework without Gradient Vanishing and
  Lipschitz Constraint" (arXiv:1811.07296), and the author's code (github.com/bojone/gan-qp):
      D   = T(x_r) - T(x_f)                                       (paired examples)
      L_T = E[-D + D^2 / (2 lambda d(x_r, x_f))],  lambda = 10,
      d   = RMS distance sqrt(mean (x_r - x_f)^2) ("l2") or mean |x_r - x_f| ("l1"),
      L_G = E[T(x_r) - T(x_f)]          (no quadratic term), D:G updates 2:1, Adam(2e-4, 0.5).
  For a fixed pair the optimal D is lambda d(x_r, x_f), where L_T = -lambda d / 2.
* **BiGAN / ALI**, Donahue, Kraehenbuehl & Darrell 2017, "Adversarial Feature Learning";
  Dumoulin et al. 2017, "Adversarially Learned Inference" (ICLR). An encoder E and a
  discriminator on joint pairs:  min_{G,E} max_D E_x[log D(x, E(x))] + E_z[log(1 - D(G(z), z))];
      L_D    = E[softplus(-T(x_r, E(x_r)))] + E[softplus(T(G(z), z))]
      L_{GE} = E[softplus(T(x_r, E(x_r)))] + E[softplus(-T(G(z), z))]   (the inverted-label
  objective both papers train with; ``gen_loss="minimax"`` gives -L_D). The encoder is
  BiGAN's deterministic E(x); ALI's is a Gaussian q(z|x) (not offered).
* **BiGAN-QP**, Su 2018 (the bigan-qp folder of github.com/bojone/gan-qp): the GAN-QP
  objective on joint pairs, D = T(x_r, E(x_r)) - T(G(z), z) with
      d = mean |x_r - G(z)| + mean |E(x_r) - z|   (l1; or the RMS of each, l2),
  and two reconstruction terms for the generator player (weights of the author's code):
      L_{GE} = E[D] + 3 E[(x_r - G(sg E(x_r)))^2] + 2 E[(z - E(sg G(z)))^2]   (sg: stop-gradient)
* **O-GAN**, Su 2019, "O-GAN: Extremely Concise Approach for Auto-Encoding Generative
  Adversarial Networks" (arXiv:1903.01931), eq. 12, and github.com/bojone/o-gan: the
  discriminator E maps x to a latent_dim feature vector, its mean avg(E(x)) is the
  realness score T, and the Pearson correlation (per example, across the latent_dim
  coordinates) rho(z, E(G(z))) = cos(z - mean z, E(G(z)) - mean E(G(z))) is added to both players:
      L_E = L_D(T) - lambda rho(z, E(G(z))),   L_G = L_G(T) - lambda rho(z, E(G(z))),  lambda = 0.5.
  Since rho ignores each example's mean and scale, E doubles as the encoder at no extra
  network: ``encode(x)`` standardises E(x) per example (subtract the mean, divide by the
  std), the author's z estimate. ``objective="qp"`` (default, the author's code) is GAN-QP
  with d = mean (x_r - x_f)^2 and lambda = 2, i.e. the quadratic term 0.25 D^2 / mean (x_r - x_f)^2;
  ``objective="gan"`` the non-saturating GAN losses above. The author's code writes the
  score with the opposite sign (low = real); rho is unchanged under E -> E - 2 avg(E) 1,
  so the two conventions are the same model.

Networks (``arch``)
-------------------
* ``"conv"`` (DCGAN, Radford et al. 2016, sized for a CPU): G: linear to (2c, H/4, W/4),
  two stride-2 4x4 transposed convs (2c -> c -> C) with batch norm + ReLU (``g_batchnorm``),
  tanh scaled to ``value_range``; D/E: two stride-2 4x4 convs (C -> c -> 2c) with
  LeakyReLU(0.2) and a linear head; weights ~ N(0, 0.02). The critics have no batch norm
  (it would couple the examples of a batch, which the gradient penalty forbids).
* ``"mlp"``: G: ReLU MLP; D/E: LeakyReLU(0.2) MLP (``hidden`` x ``depth``): 2-D toys, vectors.
* ``"auto"``: conv for images with H, W divisible by 4, mlp otherwise.
* ``spectral_norm=True`` (Miyato et al. 2018) wraps every linear/conv weight of D (and E).
* The joint BiGAN discriminator: the critic's conv (or MLP) features of x concatenated with
  z, a LeakyReLU, then LeakyReLU MLP (hidden, hidden) -> 1: the layout of the BiGAN-QP code,
  not its parts (the author's x features have batch norm and no biases, [features, z] enters
  the first dense layer un-rectified, and the head is 1024 wide without biases; docs/gans.md).

EMA of G: the trainer's EMA (``train.ema_decay``) averages the whole model; ``genzoo sample``
and ``genzoo eval`` use it (``--raw`` for the raw weights). Sampling option ``truncation=t``
draws z from N(0, I) truncated to [-t, t] per coordinate (the truncation trick of Brock et
al. 2019, BigGAN), by inverse-CDF sampling.

WGAN's clipping (Algorithm 1, line 7) runs in :meth:`WGAN.after_step`, which the trainer
calls right after each critic update; the initial critic is clipped when the model is built,
so every forward pass sees clipped weights. A loop of one's own calls
``model.after_step("discriminator", ctx)`` (or ``model.clip_critic()``) after each critic step.
"""
from __future__ import annotations

import contextlib
import functools
import math

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError, DataError
from ..registry import register
from .base import GenerativeModel
from .data_needs import IMAGE_OR_VECTOR, DataNeeds, Opt

ARCHS = ("auto", "conv", "mlp")
QP_NORMS = ("l1", "l2")
PLAYERS = ("discriminator", "generator")
_LeakyReLU = functools.partial(nn.LeakyReLU, 0.2)


# =============================================================================================
# Losses as pure functions of the discriminator's outputs (tests pin each to hand values)
# =============================================================================================
def gan_d_loss(t_real: torch.Tensor, t_fake: torch.Tensor) -> torch.Tensor:
    """GAN discriminator loss (Goodfellow et al. 2014, eq. 1) on logits (B,) or (B, 1):
    E[-log sigmoid(t_real)] + E[-log(1 - sigmoid(t_fake))] = E[softplus(-t_real)] + E[softplus(t_fake)]. Scalar, nats."""
    return F.softplus(-t_real).mean() + F.softplus(t_fake).mean()


def gan_g_loss(t_fake: torch.Tensor, kind: str = "non_saturating") -> torch.Tensor:
    """GAN generator loss on logits: "minimax" E[log(1 - sigmoid(t))] = -E[softplus(t)];
    "non_saturating" -E[log sigmoid(t)] = E[softplus(-t)] (Goodfellow et al. 2014, sec. 3). Scalar."""
    if kind == "minimax":
        return -F.softplus(t_fake).mean()
    if kind == "non_saturating":
        return F.softplus(-t_fake).mean()
    raise ConfigError(f"unknown GAN generator loss {kind!r}; valid: non_saturating, minimax")


def wgan_critic_loss(t_real: torch.Tensor, t_fake: torch.Tensor) -> torch.Tensor:
    """WGAN critic loss E[T(x_f)] - E[T(x_r)] (minus the Kantorovich-Rubinstein dual). Scalar."""
    return t_fake.mean() - t_real.mean()


def wgan_g_loss(t_fake: torch.Tensor) -> torch.Tensor:
    """WGAN generator loss -E[T(G(z))]. Scalar."""
    return -t_fake.mean()


def gradient_penalty(critic, x_real: torch.Tensor, x_fake: torch.Tensor, eps: torch.Tensor | None = None) -> torch.Tensor:
    """WGAN-GP penalty E[(||grad_x T(x_hat)||_2 - 1)^2], x_hat = eps x_r + (1 - eps) x_f (Gulrajani et al. 2017).

    Args:
        critic: callable (B, ...) -> (B,) or (B, 1).
        x_real, x_fake: (B, ...) paired examples (x_fake is detached here).
        eps: (B,) interpolation weights in [0, 1]; drawn U[0, 1] from the global RNG when None.
    Returns a scalar that is differentiable in the critic's parameters (create_graph=True).
    """
    b = x_real.shape[0]
    if eps is None:
        eps = torch.rand(b, device=x_real.device, dtype=x_real.dtype)
    e = eps.reshape(b, *([1] * (x_real.dim() - 1)))
    x_hat = (e * x_real.detach() + (1 - e) * x_fake.detach()).requires_grad_(True)
    t = critic(x_hat)
    (grad,) = torch.autograd.grad(t.sum(), x_hat, create_graph=True)
    return ((grad.reshape(b, -1).norm(dim=1) - 1.0) ** 2).mean()


def qp_distance(a: torch.Tensor, b: torch.Tensor, norm: str = "l2") -> torch.Tensor:
    """GAN-QP's per-example distance d(a, b): (B, ...) -> (B,).

    "l2": the RMS distance sqrt(mean (a - b)^2); "l1": mean |a - b| (means over all but the batch dim).
    """
    diff = (a - b).reshape(a.shape[0], -1)
    if norm == "l2":
        return diff.pow(2).mean(1).sqrt()
    if norm == "l1":
        return diff.abs().mean(1)
    raise ConfigError(f"unknown GAN-QP distance {norm!r}; valid: {', '.join(QP_NORMS)}")


def gan_qp_critic_loss(t_real: torch.Tensor, t_fake: torch.Tensor, dist: torch.Tensor, lam: float = 10.0) -> torch.Tensor:
    """GAN-QP critic loss E[-D + D^2 / (2 lam d)], D = t_real - t_fake (Su 2018).

    t_real, t_fake: (B,) scores of paired examples; dist: (B,) d(x_r, x_f) > 0. Scalar.
    For fixed scores its minimiser is D = lam d, with value -lam d / 2.
    """
    d = (t_real - t_fake).reshape(-1)
    return (-d + d * d / (2.0 * lam * dist.reshape(-1).clamp_min(1e-12))).mean()


def gan_qp_g_loss(t_real: torch.Tensor, t_fake: torch.Tensor) -> torch.Tensor:
    """GAN-QP generator loss E[T(x_r) - T(x_f)] (the critic's D, no quadratic term). Scalar."""
    return (t_real - t_fake).mean()


def pearson_correlation(a: torch.Tensor, b: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """Per-row Pearson correlation across the last dim: (B, L), (B, L) -> (B,) in [-1, 1].

    rho = <a - mean a, b - mean b> / (||a - mean a|| ||b - mean b||), as O-GAN's ``correlation``.
    """
    a = a - a.mean(-1, keepdim=True)
    b = b - b.mean(-1, keepdim=True)
    a = a / a.norm(dim=-1, keepdim=True).clamp_min(eps)
    b = b / b.norm(dim=-1, keepdim=True).clamp_min(eps)
    return (a * b).sum(-1)


def truncated_normal(shape, truncation: float | None, generator=None, device=None, dtype=torch.float32) -> torch.Tensor:
    """N(0, 1) draws, truncated to [-t, t] when ``truncation`` = t > 0 (inverse-CDF sampling)."""
    if truncation is None:
        return torch.randn(shape, generator=generator, device=device, dtype=dtype)
    t = float(truncation)
    if not t > 0:
        raise ConfigError(f"truncation must be > 0 (or None for no truncation), got {truncation}")
    lo = 0.5 * (1.0 + math.erf(-t / math.sqrt(2.0)))
    u = torch.rand(shape, generator=generator, device=device, dtype=torch.float64) * (1 - 2 * lo) + lo
    return torch.special.ndtri(u).clamp(-t, t).to(dtype)


@contextlib.contextmanager
def frozen(*modules: nn.Module):
    """Turn off requires_grad for the parameters of ``modules`` inside the block (the other
    player's network: gradients still flow through it to the inputs, not into its weights)."""
    params = [p for m in modules for p in m.parameters()]
    flags = [p.requires_grad for p in params]
    for p in params:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, f in zip(params, flags):
            p.requires_grad_(f)


# =============================================================================================
# Networks
# =============================================================================================
def _dcgan_init(module: nn.Module) -> None:
    """Weights ~ N(0, 0.02), biases 0, batch-norm scales ~ N(1, 0.02) (Radford et al. 2016)."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
            nn.init.normal_(m.weight, 0.0, 0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
            nn.init.normal_(m.weight, 1.0, 0.02)
            nn.init.zeros_(m.bias)


def _spectral(module: nn.Module) -> nn.Module:
    """Spectral normalisation (Miyato et al. 2018) on every linear / conv weight of ``module``."""
    from torch.nn.utils.parametrizations import spectral_norm

    for m in list(module.modules()):
        if isinstance(m, (nn.Linear, nn.Conv2d)):
            spectral_norm(m)
    return module


class ConvGenerator(nn.Module):
    """DCGAN generator (B, latent_dim) -> (B, C, H, W) in ``value_range``; H, W divisible by 4."""

    def __init__(self, latent_dim: int, shape: tuple, channels: int = 64, batchnorm: bool = True, value_range=(-1.0, 1.0)):
        super().__init__()
        C, H, W = shape
        self.start = (2 * channels, H // 4, W // 4)
        n0 = 2 * channels * (H // 4) * (W // 4)
        bn1 = nn.BatchNorm1d(n0) if batchnorm else nn.Identity()
        bn2 = nn.BatchNorm2d(channels) if batchnorm else nn.Identity()
        self.fc = nn.Sequential(nn.Linear(latent_dim, n0), bn1, nn.ReLU())
        self.net = nn.Sequential(
            nn.ConvTranspose2d(2 * channels, channels, 4, 2, 1), bn2, nn.ReLU(),
            nn.ConvTranspose2d(channels, C, 4, 2, 1), nn.Tanh(),
        )
        lo, hi = value_range
        self.register_buffer("_lo", torch.tensor(float(lo)), persistent=False)
        self.register_buffer("_half", torch.tensor((float(hi) - float(lo)) / 2), persistent=False)
        _dcgan_init(self)

    def forward(self, z):
        h = self.fc(z).reshape(z.shape[0], *self.start)
        return self._lo + self._half * (self.net(h) + 1.0)


class ConvFeatures(nn.Module):
    """DCGAN discriminator body (B, C, H, W) -> (B, out_dim): two stride-2 4x4 convs with
    LeakyReLU(0.2) (C -> c -> 2c), flatten, linear. No batch norm."""

    def __init__(self, shape: tuple, out_dim: int, channels: int = 64):
        super().__init__()
        C, H, W = shape
        self.net = nn.Sequential(
            nn.Conv2d(C, channels, 4, 2, 1), _LeakyReLU(),
            nn.Conv2d(channels, 2 * channels, 4, 2, 1), _LeakyReLU(),
            nn.Flatten(), nn.Linear(2 * channels * (H // 4) * (W // 4), out_dim),
        )
        _dcgan_init(self)

    def forward(self, x):
        return self.net(x)


class MLPGenerator(nn.Module):
    """ReLU MLP (B, latent_dim) -> (B, *shape); tanh scaled to ``value_range`` for images, linear for vectors."""

    def __init__(self, latent_dim: int, shape: tuple, hidden: int, depth: int, value_range=None):
        super().__init__()
        from ..nn.blocks import mlp

        self.shape = tuple(shape)
        self.net = mlp(latent_dim, math.prod(shape), hidden, depth)
        self.value_range = value_range

    def forward(self, z):
        x = self.net(z)
        if self.value_range is not None:
            lo, hi = self.value_range
            x = lo + (hi - lo) * (torch.tanh(x) + 1.0) / 2
        return x.reshape(z.shape[0], *self.shape)


class MLPFeatures(nn.Module):
    """LeakyReLU(0.2) MLP (B, *shape) -> (B, out_dim)."""

    def __init__(self, shape: tuple, out_dim: int, hidden: int, depth: int):
        super().__init__()
        from ..nn.blocks import mlp

        self.net = nn.Sequential(nn.Flatten(), mlp(math.prod(shape), out_dim, hidden, depth, activation=_LeakyReLU))

    def forward(self, x):
        return self.net(x)


class JointDiscriminator(nn.Module):
    """BiGAN's D(x, z): features of x (conv or MLP body, ``hidden`` wide) concatenated with z,
    then LeakyReLU(0.2) MLP (hidden, hidden) -> 1."""

    def __init__(self, x_body: nn.Module, feat_dim: int, latent_dim: int, hidden: int):
        super().__init__()
        self.x_body = x_body
        self.joint = nn.Sequential(
            _LeakyReLU(), nn.Linear(feat_dim + latent_dim, hidden), _LeakyReLU(),
            nn.Linear(hidden, hidden), _LeakyReLU(), nn.Linear(hidden, 1),
        )

    def forward(self, x, z):
        return self.joint(torch.cat([self.x_body(x), z], dim=1))


# =============================================================================================
# The shared base: generator, prior, sampling, data checks, players
# =============================================================================================
class AdversarialModel(GenerativeModel):
    """Common part of every model in this module (not registered itself).

    Args (shared by all):
        shape: per-example data shape, (C, H, W) or (D,); taken from the data when omitted.
        latent_dim: dimension of z ~ N(0, I).
        arch: "auto" | "conv" | "mlp" (see the module docstring).
        channels: base width c of the conv nets (G: 2c -> c; D/E: c -> 2c).
        hidden, depth: width and hidden layers of the MLP nets; ``hidden`` is also the width
            of the joint BiGAN discriminator's head.
        g_batchnorm: batch norm in the conv generator (DCGAN).
        spectral_norm: spectral normalisation of the discriminator / encoder weights.
        value_range: (lo, hi) of image data (the generator's tanh is scaled to it); ignored for vectors.
        d_steps: discriminator updates per generator update.
    """

    likelihood = "none"

    def __init__(self, shape: tuple = (1, 28, 28), latent_dim: int = 64, arch: str = "auto", channels: int = 64,
                 hidden: int = 256, depth: int = 2, g_batchnorm: bool = True, spectral_norm: bool = False,
                 value_range: tuple = (-1.0, 1.0), d_steps: int = 1):
        super().__init__()
        shape = tuple(int(s) for s in shape)
        name = type(self).__name__
        if not shape or any(s <= 0 for s in shape) or len(shape) not in (1, 3):
            raise ConfigError(f"{name} shape must be (C, H, W) or (D,) with positive sizes, got {shape}")
        if arch not in ARCHS:
            raise ConfigError(f"unknown {name} arch {arch!r}; valid: {', '.join(ARCHS)}")
        conv_ok = len(shape) == 3 and shape[1] % 4 == 0 and shape[2] % 4 == 0
        if arch == "auto":
            arch = "conv" if conv_ok else "mlp"
        if arch == "conv" and not conv_ok:
            raise ConfigError(f"{name} arch='conv' needs an image shape (C, H, W) with H and W divisible by 4, got {shape}; "
                              "use model.arch=mlp")
        for k, v in (("latent_dim", latent_dim), ("channels", channels), ("hidden", hidden), ("d_steps", d_steps)):
            if int(v) < 1:
                raise ConfigError(f"{name} {k} must be >= 1, got {v}")
        if int(depth) < 0:
            raise ConfigError(f"{name} depth must be >= 0, got {depth}")
        vr = tuple(float(v) for v in value_range) if value_range is not None else None
        if vr is not None and (len(vr) != 2 or not vr[0] < vr[1]):
            raise ConfigError(f"{name} value_range must be [lo, hi] with lo < hi, got {value_range}")
        self.shape, self.latent_dim, self.arch = shape, int(latent_dim), arch
        self.channels, self.hidden, self.depth = int(channels), int(hidden), int(depth)
        self.spectral_norm, self.d_steps = bool(spectral_norm), int(d_steps)
        #: range of generated images (None for vectors: unconstrained)
        self.value_range = vr if len(shape) == 3 else None
        if arch == "conv":
            self.generator = ConvGenerator(self.latent_dim, shape, self.channels, bool(g_batchnorm), self.value_range or (-1.0, 1.0))
        else:
            self.generator = MLPGenerator(self.latent_dim, shape, self.hidden, self.depth, self.value_range)

    # -- building blocks for subclasses --------------------------------------------------------
    def _features(self, out_dim: int) -> nn.Module:
        """A discriminator / encoder body (B, *shape) -> (B, out_dim), spectrally normalised if asked."""
        if self.arch == "conv":
            net = ConvFeatures(self.shape, out_dim, self.channels)
        else:
            net = MLPFeatures(self.shape, out_dim, self.hidden, self.depth)
        return _spectral(net) if self.spectral_norm else net

    def discriminator_modules(self) -> list[nn.Module]:  # pragma: no cover - overridden
        raise NotImplementedError

    def generator_modules(self) -> list[nn.Module]:
        return [self.generator]

    # -- the interface -------------------------------------------------------------------------
    def players(self) -> dict[str, list[nn.Parameter]]:
        return {"discriminator": [p for m in self.discriminator_modules() for p in m.parameters()],
                "generator": [p for m in self.generator_modules() for p in m.parameters()]}

    def player_steps(self) -> dict[str, int]:
        return {"discriminator": self.d_steps, "generator": 1}

    #: continuous images or vectors; images in the generator's value_range
    data_needs = DataNeeds(IMAGE_OR_VECTOR, (None,), value_range=Opt("value_range"))

    def _real(self, batch) -> torch.Tensor:
        x = batch[0] if isinstance(batch, (tuple, list)) else batch
        if not torch.is_tensor(x) or tuple(x.shape[1:]) != self.shape:
            got = tuple(x.shape) if torch.is_tensor(x) else type(x).__name__
            raise DataError(f"{type(self).__name__} built for examples of shape {self.shape} got a batch of shape {got}")
        return x

    def prior(self, n: int, generator: torch.Generator | None = None, truncation: float | None = None) -> torch.Tensor:
        """z ~ N(0, I) (truncated to [-t, t] when ``truncation`` = t): (n, latent_dim)."""
        dtype = next(self.parameters()).dtype
        return truncated_normal((int(n), self.latent_dim), truncation, generator, device=self.device, dtype=dtype)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """G(z): (N, latent_dim) -> (N, *shape) in data space."""
        return self.generator(z)

    @torch.no_grad()
    def sample(self, n: int, *, generator: torch.Generator | None = None, truncation: float | None = None) -> torch.Tensor:
        """n samples G(z), (n, *shape) in data space.

        Options:
            truncation: t > 0 draws z from N(0, I) truncated to [-t, t] per coordinate
                (the truncation trick: higher fidelity, less diversity); default None (no truncation).
        """
        return self.decode(self.prior(n, generator, truncation))

    def loss(self, batch, player: str | None = None, **kwargs) -> dict[str, torch.Tensor]:
        """The loss of ``player`` ("discriminator" or "generator") on a batch of real examples:
        {"loss": scalar, ...logged extras}. The trainer passes ``player``."""
        self.check_options(kwargs, (), what="loss")
        if player not in PLAYERS:
            raise ConfigError(f"{type(self).__name__}.loss needs player='discriminator' or 'generator', got {player!r}")
        x = self._real(batch)
        z = self.prior(x.shape[0])
        if player == "discriminator":
            return self.discriminator_loss(x, z)
        return self.generator_loss(x, z)

    def discriminator_loss(self, x: torch.Tensor, z: torch.Tensor) -> dict:  # pragma: no cover - overridden
        raise NotImplementedError

    def generator_loss(self, x: torch.Tensor, z: torch.Tensor) -> dict:  # pragma: no cover - overridden
        raise NotImplementedError

    def _fake_detached(self, z: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return self.generator(z)


# =============================================================================================
# Unconditional GANs: one critic T(x)
# =============================================================================================
class _CriticGAN(AdversarialModel):
    def __init__(self, **kw):
        super().__init__(**kw)
        self.critic = self._features(1)

    def discriminator_modules(self):
        return [self.critic]

    def score(self, x: torch.Tensor) -> torch.Tensor:
        """The discriminator's output T(x): (B, *shape) -> (B,)."""
        return self.critic(x).reshape(-1)


@register("gan", family="gan", paper="Goodfellow et al. 2014 (GAN); Radford et al. 2016 (DCGAN nets)",
          summary="GAN with the minimax or non-saturating generator loss, DCGAN / MLP nets")
class GAN(_CriticGAN):
    """Generative adversarial net (Goodfellow et al. 2014), DCGAN-style networks (Radford et al. 2016).

    Args:
        gen_loss: "non_saturating" (default, -log D(G(z))) or "minimax" (log(1 - D(G(z))), eq. 1).
        Others: see :class:`AdversarialModel`.
    Logged: d_real, d_fake = mean sigmoid(T) on real / generated examples.
    """

    def __init__(self, gen_loss: str = "non_saturating", **kw):
        if gen_loss not in ("non_saturating", "minimax"):
            raise ConfigError(f"unknown GAN gen_loss {gen_loss!r}; valid: non_saturating, minimax")
        super().__init__(**kw)
        self.gen_loss = gen_loss

    def discriminator_loss(self, x, z):
        t_r, t_f = self.score(x), self.score(self._fake_detached(z))
        return {"loss": gan_d_loss(t_r, t_f), "d_real": torch.sigmoid(t_r).mean().detach(), "d_fake": torch.sigmoid(t_f).mean().detach()}

    def generator_loss(self, x, z):
        with frozen(self.critic):
            t_f = self.score(self.generator(z))
        return {"loss": gan_g_loss(t_f, self.gen_loss)}


@register("wgan", family="gan", paper="Arjovsky, Chintala & Bottou 2017 (WGAN, weight clipping)",
          summary="Wasserstein GAN with weight clipping; logs the critic's W1 estimate")
class WGAN(_CriticGAN):
    """Wasserstein GAN with weight clipping (Arjovsky et al. 2017, Algorithm 1).

    Args:
        clip: every critic weight is clipped to [-clip, clip] (paper: 0.01).
        d_steps: critic updates per generator update (paper: n_critic = 5).
        Others: see :class:`AdversarialModel`.

    The paper trains with RMSProp(5e-5); genzoo's recipe uses Adam with beta1 = 0 (one optimiser
    kind for every player), which is not RMSProp: it keeps Adam's bias-corrected beta2 second
    moment, see docs/gans.md.

    Logged: w1 = E[T(x_r)] - E[T(x_f)], the critic's estimate of K * W1 (K the Lipschitz constant the clipping implies).
    """

    def __init__(self, d_steps: int = 5, clip: float = 0.01, **kw):
        if not clip > 0:
            raise ConfigError(f"WGAN clip must be > 0, got {clip}")
        super().__init__(d_steps=d_steps, **kw)
        self.clip = float(clip)
        self.clip_critic()  # the critic starts inside the box (its first forward pass is clipped)

    @torch.no_grad()
    def clip_critic(self) -> None:
        """Clip every critic parameter to [-clip, clip] in place."""
        for p in self.critic.parameters():
            p.clamp_(-self.clip, self.clip)

    def after_step(self, player, ctx):
        if player == "discriminator":
            self.clip_critic()  # Algorithm 1, line 7: w <- clip(w, -c, c) after every critic update

    def discriminator_loss(self, x, z):
        t_r, t_f = self.score(x), self.score(self._fake_detached(z))
        loss = wgan_critic_loss(t_r, t_f)
        return {"loss": loss, "w1": -loss.detach()}

    def generator_loss(self, x, z):
        with frozen(self.critic):
            return {"loss": wgan_g_loss(self.score(self.generator(z)))}


@register("wgan_gp", family="gan", paper="Gulrajani et al. 2017 (WGAN-GP)",
          summary="Wasserstein GAN with the gradient penalty; logs the critic's W1 estimate")
class WGANGP(_CriticGAN):
    """Wasserstein GAN with gradient penalty (Gulrajani et al. 2017, Algorithm 1).

    Args:
        gp_weight: lambda of the penalty (paper: 10).
        d_steps: critic updates per generator update (paper: 5).
        Others: see :class:`AdversarialModel` (the paper: Adam(1e-4, betas (0, 0.9))).
    Logged: w1 = E[T(x_r)] - E[T(x_f)] (the Wasserstein-1 estimate), gp = the penalty.
    """

    def __init__(self, d_steps: int = 5, gp_weight: float = 10.0, **kw):
        if gp_weight < 0:
            raise ConfigError(f"WGAN-GP gp_weight must be >= 0, got {gp_weight}")
        super().__init__(d_steps=d_steps, **kw)
        self.gp_weight = float(gp_weight)

    def discriminator_loss(self, x, z):
        x_f = self._fake_detached(z)
        t_r, t_f = self.score(x), self.score(x_f)
        wd = wgan_critic_loss(t_r, t_f)
        gp = gradient_penalty(self.score, x, x_f)
        return {"loss": wd + self.gp_weight * gp, "w1": -wd.detach(), "gp": gp.detach()}

    def generator_loss(self, x, z):
        with frozen(self.critic):
            return {"loss": wgan_g_loss(self.score(self.generator(z)))}


@register("gan_qp", family="gan", paper="Su 2018 (GAN-QP, arXiv:1811.07296)",
          summary="GAN with the quadratic potential: no Lipschitz constraint, no gradient penalty")
class GANQP(_CriticGAN):
    """GAN-QP (Su 2018): critic loss E[-D + D^2 / (2 lam d(x_r, x_f))], D = T(x_r) - T(x_f); generator E[D].

    Args:
        lam: lambda (paper and code: 10).
        qp_norm: d, "l2" (RMS distance, the author's 128/gan_qp_l2.py) or "l1" (mean absolute distance).
        d_steps: critic updates per generator update (author's code: 2).
        Others: see :class:`AdversarialModel`.
    Logged: d_mean = E[D] (what the generator minimises), qp_div = -critic loss (the divergence estimate).
    """

    def __init__(self, d_steps: int = 2, lam: float = 10.0, qp_norm: str = "l2", **kw):
        if qp_norm not in QP_NORMS:
            raise ConfigError(f"unknown GAN-QP qp_norm {qp_norm!r}; valid: {', '.join(QP_NORMS)}")
        if not lam > 0:
            raise ConfigError(f"GAN-QP lam must be > 0, got {lam}")
        super().__init__(d_steps=d_steps, **kw)
        self.lam, self.qp_norm = float(lam), qp_norm

    def discriminator_loss(self, x, z):
        x_f = self._fake_detached(z)
        t_r, t_f = self.score(x), self.score(x_f)
        loss = gan_qp_critic_loss(t_r, t_f, qp_distance(x, x_f, self.qp_norm), self.lam)
        return {"loss": loss, "qp_div": -loss.detach(), "d_mean": (t_r - t_f).mean().detach()}

    def generator_loss(self, x, z):
        with torch.no_grad():  # T(x_r) carries no gradient to G; computed for the value of E[D]
            t_r = self.score(x)
        with frozen(self.critic):
            return {"loss": gan_qp_g_loss(t_r, self.score(self.generator(z)))}


# =============================================================================================
# Adversarial encoders
# =============================================================================================
class _EncoderMixin:
    """encode / reconstruct for models with an encoder; ``encode`` is defined by each model."""

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        """G(E(x)): (B, *shape) -> (B, *shape) in data space."""
        return self.decode(self.encode(x))


class _JointModel(_EncoderMixin, AdversarialModel):
    """Generator G, encoder E (both the "generator" player) and a joint discriminator T(x, z)."""

    def _build_encoder_and_joint(self):
        # the encoder belongs to the generator player: no spectral norm (that constrains discriminators)
        self.encoder = ConvFeatures(self.shape, self.latent_dim, self.channels) if self.arch == "conv" else \
            MLPFeatures(self.shape, self.latent_dim, self.hidden, self.depth)
        self.joint = JointDiscriminator(self._features(self.hidden), self.hidden, self.latent_dim, self.hidden)
        if self.spectral_norm:
            _spectral(self.joint.joint)

    def discriminator_modules(self):
        return [self.joint]

    def generator_modules(self):
        return [self.generator, self.encoder]

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """E(x): (B, *shape) -> (B, latent_dim)."""
        return self.encoder(self._real(x))

    def score(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """Joint discriminator output T(x, z): (B,)."""
        return self.joint(x, z).reshape(-1)

    def _pairs_detached(self, x, z):
        with torch.no_grad():
            return self.encoder(x), self.generator(z)


@register("bigan", family="gan", paper="Donahue et al. 2017 (BiGAN); Dumoulin et al. 2017 (ALI)",
          summary="BiGAN / ALI: generator, encoder and a joint discriminator on (x, z)")
class BiGAN(_JointModel):
    """Bidirectional GAN (Donahue et al. 2017) = ALI (Dumoulin et al. 2017) with a deterministic encoder.

    Args:
        gen_loss: "non_saturating" (default: the inverted-label objective for G and E) or
            "minimax" (G and E minimise the discriminator's objective itself).
        Others: see :class:`AdversarialModel`; ``hidden`` is the joint discriminator's width.
    Logged: d_real, d_fake = mean sigmoid(T) on (x, E(x)) and (G(z), z).
    """

    def __init__(self, gen_loss: str = "non_saturating", **kw):
        if gen_loss not in ("non_saturating", "minimax"):
            raise ConfigError(f"unknown BiGAN gen_loss {gen_loss!r}; valid: non_saturating, minimax")
        super().__init__(**kw)
        self.gen_loss = gen_loss
        self._build_encoder_and_joint()

    def discriminator_loss(self, x, z):
        e_x, g_z = self._pairs_detached(x, z)
        t_r, t_f = self.score(x, e_x), self.score(g_z, z)
        return {"loss": gan_d_loss(t_r, t_f), "d_real": torch.sigmoid(t_r).mean().detach(), "d_fake": torch.sigmoid(t_f).mean().detach()}

    def generator_loss(self, x, z):
        with frozen(self.joint):
            t_r, t_f = self.score(x, self.encoder(x)), self.score(self.generator(z), z)
        if self.gen_loss == "minimax":
            return {"loss": -gan_d_loss(t_r, t_f)}
        return {"loss": gan_d_loss(t_f, t_r)}  # labels swapped: softplus(t_r) + softplus(-t_f)


@register("bigan_qp", family="gan", paper="Su 2018 (BiGAN-QP, github.com/bojone/gan-qp)",
          summary="BiGAN with the GAN-QP objective and the author's reconstruction terms")
class BiGANQP(_JointModel):
    """BiGAN-QP (Su 2018): the GAN-QP objective on joint pairs plus reconstruction terms.

    Args:
        lam: lambda of the quadratic potential (10).
        qp_norm: "l1" (the author's code: mean |x_r - G(z)| + mean |E(x_r) - z|) or "l2" (RMS of each).
        rec_x, rec_z: weights of E[(x - G(sg E(x)))^2] and E[(z - E(sg G(z)))^2] in the generator
            player's loss (author's code: 3 and 2; means over all coordinates). 0 turns them off.
        d_steps: discriminator updates per generator update (author's code: 2).
        Others: see :class:`AdversarialModel`.
    Logged: qp_div = -discriminator loss; d_mean; rec_x, rec_z (the unweighted mean squared errors).
    """

    def __init__(self, d_steps: int = 2, lam: float = 10.0, qp_norm: str = "l1", rec_x: float = 3.0, rec_z: float = 2.0,
                 **kw):
        if qp_norm not in QP_NORMS:
            raise ConfigError(f"unknown BiGAN-QP qp_norm {qp_norm!r}; valid: {', '.join(QP_NORMS)}")
        if not lam > 0 or rec_x < 0 or rec_z < 0:
            raise ConfigError(f"BiGAN-QP needs lam > 0 and rec_x, rec_z >= 0, got lam={lam}, rec_x={rec_x}, rec_z={rec_z}")
        super().__init__(d_steps=d_steps, **kw)
        self.lam, self.qp_norm, self.rec_x, self.rec_z = float(lam), qp_norm, float(rec_x), float(rec_z)
        self._build_encoder_and_joint()

    def pair_distance(self, x_r, z_r, x_f, z_f) -> torch.Tensor:
        """d((x_r, z_r), (x_f, z_f)) = d(x_r, x_f) + d(z_r, z_f): (B,)."""
        return qp_distance(x_r, x_f, self.qp_norm) + qp_distance(z_r, z_f, self.qp_norm)

    def discriminator_loss(self, x, z):
        e_x, g_z = self._pairs_detached(x, z)
        t_r, t_f = self.score(x, e_x), self.score(g_z, z)
        loss = gan_qp_critic_loss(t_r, t_f, self.pair_distance(x, e_x, g_z, z), self.lam)
        return {"loss": loss, "qp_div": -loss.detach(), "d_mean": (t_r - t_f).mean().detach()}

    def generator_loss(self, x, z):
        e_x, g_z = self.encoder(x), self.generator(z)
        with frozen(self.joint):
            adv = gan_qp_g_loss(self.score(x, e_x), self.score(g_z, z))
        rec_x = (x - self.generator(e_x.detach())).pow(2).mean()
        rec_z = (z - self.encoder(g_z.detach())).pow(2).mean()
        return {"loss": adv + self.rec_x * rec_x + self.rec_z * rec_z, "d_mean": adv.detach(),
                "rec_x": rec_x.detach(), "rec_z": rec_z.detach()}


@register("ogan", family="gan", paper="Su 2019 (O-GAN, arXiv:1903.01931)",
          summary="O-GAN: the discriminator's features are the encoder (mean = realness), Pearson-correlation term")
class OGAN(_EncoderMixin, AdversarialModel):
    """O-GAN (Su 2019): an auto-encoding GAN from a discriminator with a latent_dim output.

    Args:
        objective: "qp" (the author's code: GAN-QP with d = mean (x_r - x_f)^2, lambda = 2) or
            "gan" (non-saturating GAN on the score avg(E(x))).
        corr_weight: lambda of the correlation term in both players' losses (paper: 0.5).
        Others: see :class:`AdversarialModel`.
    Logged: z_corr = mean rho(z, E(G(z))); d_mean = E[T(x_r) - T(x_f)].
    """

    def __init__(self, objective: str = "qp", corr_weight: float = 0.5, **kw):
        if objective not in ("qp", "gan"):
            raise ConfigError(f"unknown O-GAN objective {objective!r}; valid: qp, gan")
        if corr_weight < 0:
            raise ConfigError(f"O-GAN corr_weight must be >= 0, got {corr_weight}")
        super().__init__(**kw)
        if self.latent_dim < 2:
            raise ConfigError(f"O-GAN needs latent_dim >= 2 (a correlation across coordinates), got {self.latent_dim}")
        self.objective, self.corr_weight = objective, float(corr_weight)
        self.encoder = self._features(self.latent_dim)  # the discriminator itself

    def discriminator_modules(self):
        return [self.encoder]

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The discriminator's raw feature vector E(x): (B, *shape) -> (B, latent_dim)."""
        return self.encoder(x)

    def score(self, x: torch.Tensor) -> torch.Tensor:
        """Realness T(x) = avg(E(x)): (B,)."""
        return self.encoder(x).mean(1)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """z estimate: E(x) standardised per example (zero mean, unit std across coordinates): (B, latent_dim)."""
        e = self.encoder(self._real(x))
        e = e - e.mean(1, keepdim=True)
        return e / e.pow(2).mean(1, keepdim=True).sqrt().clamp_min(1e-12)

    def discriminator_loss(self, x, z):
        x_f = self._fake_detached(z)
        e_r, e_f = self.encoder(x), self.encoder(x_f)
        t_r, t_f = e_r.mean(1), e_f.mean(1)
        if self.objective == "qp":
            adv = gan_qp_critic_loss(t_r, t_f, (x - x_f).reshape(x.shape[0], -1).pow(2).mean(1), lam=2.0)
        else:
            adv = gan_d_loss(t_r, t_f)
        corr = pearson_correlation(z, e_f).mean()
        return {"loss": adv - self.corr_weight * corr, "z_corr": corr.detach(), "d_mean": (t_r - t_f).mean().detach()}

    def generator_loss(self, x, z):
        with frozen(self.encoder):
            e_f = self.encoder(self.generator(z))
            t_f = e_f.mean(1)
            adv = -t_f.mean() if self.objective == "qp" else gan_g_loss(t_f, "non_saturating")
        corr = pearson_correlation(z, e_f).mean()
        return {"loss": adv - self.corr_weight * corr, "z_corr": corr.detach()}
