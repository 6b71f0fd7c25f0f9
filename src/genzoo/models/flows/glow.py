"""Glow: Generative Flow with Invertible 1x1 Convolutions (Kingma & Dhariwal 2018, NeurIPS).

Equations implemented (Table 1 of the paper)
--------------------------------------------
One step of flow = actnorm -> invertible 1x1 convolution -> affine coupling:

* actnorm (sec. 3.1): y_ij = s * x_ij + b per channel, log|det| = h w sum log|s|;
  s, b initialised from the first minibatch so y has zero mean and unit variance per channel.
* invertible 1x1 convolution (sec. 3.2): y_ij = W x_ij, log|det| = h w log|det W|, W
  initialised to a random rotation; LU option: W = P L (U + diag(s)),
  log|det| = h w sum log|s|, P fixed.
* affine coupling (sec. 3.3): x_a, x_b = split(x) (channel halves); (log s, t) = NN(x_a);
  s = sigmoid(log s + 2) (the released code's choice); y_b = s * x_b + t; y = concat(x_a, y_b);
  log|det| = sum log s. NN: conv3x3 - actnorm - ReLU - conv1x1 - actnorm - ReLU - zero conv3x3
  (zero-initialised so each step starts as the identity). ``coupling="additive"`` uses s = 1.
* multi-scale (Fig. 2b, from RealNVP): each level is squeeze -> K steps -> split; the
  factored-out half z_2 gets a learned prior N(mu(z_1), sigma(z_1)^2) from a zero-initialised
  conv of the kept half (the code's ``split2d``); the last level has no split.
* temperature (the paper samples from a reduced-temperature model): z ~ N(0, T^2 I) at
  every level (the split priors' noise is scaled by T too).

For 28x28 MNIST two levels fit (squeeze 28 -> 14 -> 7): 1x28x28 -> squeeze -> 4x14x14, K steps,
split 2 + 2 -> squeeze -> 8x7x7, K steps. The paper's CIFAR-10 model has 3 levels of K = 32
steps with 512-channel networks; the CPU recipe is far smaller (configs/glow.yaml).

Vectors (2-D toys, arrays): K steps of actnorm, invertible linear map (the 1x1 conv on a
single "pixel") and affine coupling with an MLP.
"""
from __future__ import annotations

from ...errors import ConfigError
from ...registry import register
from .base import Chain, Flow
from .nets import MLP, GlowNet
from .transforms import (COUPLING_KINDS, SCALES, ActNorm, Coupling, InvertibleConv1x1, Logit, MultiScale, SplitPrior, Squeeze,
                         channel_mask)


def flow_step(channels: int, hidden: int, coupling: str, lu: bool, image: bool, depth: int = 2, scale: str = "sigmoid") -> list:
    """One step of Glow: [ActNorm, InvertibleConv1x1, Coupling] on ``channels`` channels (features)."""
    m = channel_mask(channels, 0)
    n_a, n_b = int(m.sum()), int((~m).sum())
    out_ch = (2 if coupling == "affine" else 1) * n_b
    net = GlowNet(n_a, out_ch, hidden) if image else MLP(n_a, out_ch, hidden, depth)
    return [ActNorm(channels), InvertibleConv1x1(channels, lu=lu), Coupling(m, net, kind=coupling, scale=scale)]


@register("glow", family="flows", paper="Kingma & Dhariwal 2018 (Glow)",
          summary="Glow: actnorm + invertible 1x1 conv (LU) + affine coupling, multi-scale with learned split priors")
class Glow(Flow):
    """Glow (Kingma & Dhariwal 2018): multi-scale flow of (actnorm, 1x1 conv, coupling) steps.

    Args:
        shape: per-example shape, (C, H, W) or (D,) with D >= 2.
        num_scales: images: the number of levels L (each: squeeze, K steps, split; no split
            after the last), i.e. of squeezes, as RealNVP's num_scales; H and W must be divisible by 2^L.
        steps: K, flow steps per level (images) or in total (vectors).
        hidden: channels (images) / units (vectors) of the coupling networks.
        depth: hidden layers of the vector MLP.
        coupling: "affine" or "additive".
        scale: the affine coupling's s from the network output h: "sigmoid" (s = sigmoid(h + 2),
            the released code), "exp" (s = exp(h), the paper's Table 1) or "tanh" (log s = c tanh(h)).
        lu: LU-decomposed 1x1 convolutions.
        split_prior: learned prior of the factored-out halves (the paper's); False makes them N(0, I).
        logit_alpha: images: RealNVP's logit preprocessing (0 = off, the paper: Glow models the
            dequantised pixels directly); its log-det is part of log p(x).
        dequantization, levels, data_range, deq_steps, deq_hidden: as in :class:`~.base.Flow`
            (``levels`` is the number of grey levels of the data, as everywhere in genzoo).
    """

    def __init__(
        self,
        shape: tuple = (1, 28, 28),
        num_scales: int = 2,
        steps: int = 8,
        hidden: int = 128,
        depth: int = 2,
        coupling: str = "affine",
        scale: str = "sigmoid",
        lu: bool = True,
        split_prior: bool = True,
        logit_alpha: float = 0.0,
        dequantization: str = "uniform",
        levels: int = 256,
        data_range: tuple = (-1.0, 1.0),
        deq_steps: int = 4,
        deq_hidden: int = 32,
    ):
        super().__init__()
        shape = tuple(int(s) for s in shape)
        if scale not in SCALES:
            raise ConfigError(f"unknown Glow scale {scale!r}; valid: {', '.join(SCALES)}")
        if coupling not in COUPLING_KINDS:
            raise ConfigError(f"unknown Glow coupling {coupling!r}; valid: {', '.join(COUPLING_KINDS)}")
        L, K, hidden = int(num_scales), int(steps), int(hidden)
        if K < 1 or hidden < 1:
            raise ConfigError(f"Glow needs steps >= 1 and hidden >= 1, got steps={K}, hidden={hidden}")
        if len(shape) == 3:
            c, h, w = shape
            if L < 1:
                raise ConfigError(f"Glow num_scales (L) must be >= 1 for images, got {L}")
            if h % (2 ** L) or w % (2 ** L):
                fit = 0
                while h % (2 ** (fit + 1)) == 0 and w % (2 ** (fit + 1)) == 0:
                    fit += 1
                raise ConfigError(f"Glow num_scales={L} needs height and width divisible by 2^{L}, got {h}x{w}; "
                                  f"use model.num_scales={fit} or less")
            stages, priors = [], []
            for i in range(L):
                c, h, w = 4 * c, h // 2, w // 2
                layers = [Squeeze()]
                for _ in range(K):
                    layers += flow_step(c, hidden, coupling, bool(lu), image=True, scale=scale)
                stages.append(Chain(layers))
                if i < L - 1:
                    priors.append(SplitPrior(c // 2, c - c // 2) if split_prior else None)
                    c = c // 2
            transform = MultiScale(shape, stages, priors)
            if logit_alpha > 0:
                transform = Chain(Logit(data_range, float(logit_alpha)), transform)
        elif len(shape) == 1 and shape[0] >= 2:
            layers = []
            for _ in range(K):
                layers += flow_step(shape[0], hidden, coupling, bool(lu), image=False, depth=int(depth), scale=scale)
            transform = Chain(layers)
        else:
            raise ConfigError(f"Glow needs an image shape (C, H, W) or a vector shape (D,) with D >= 2, got {shape}")
        self._setup(shape, transform, "gaussian", dequantization, levels, data_range, deq_steps, deq_hidden)
