"""RealNVP: Density estimation using Real NVP (Dinh, Sohl-Dickstein & Bengio 2017, ICLR).

Equations implemented
---------------------
* Affine coupling layer: y_{1:d} = x_{1:d}, y_{d+1:D} = x_{d+1:D} * exp(s(x_{1:d})) + t(x_{1:d}),
  log|det| = sum_j s(x_{1:d})_j; inverse x_{d+1:D} = (y_{d+1:D} - t(y_{1:d})) * exp(-s(y_{1:d})).
* Masked form: y = b * x + (1 - b) * (x * exp(s(b * x)) + t(b * x)) with a
  checkerboard mask b (spatial) or a channel-wise mask (after a squeeze), alternating
  b and 1 - b between layers ("combining coupling layers").
* s = c * tanh(h) with a learned per-channel scale c (the paper's "tanh ... multiplied by a
  learned scale"); s and t from one deep residual network (the experiments).
* Squeeze: (C, H, W) -> (4C, H/2, W/2).
* Multi-scale architecture: each scale is 3 checkerboard couplings,
  a squeeze, 3 channel-wise couplings, then half of the channels are factored out as
  latents (z_i ~ N(0, I)); the last scale is 4 checkerboard couplings.
* Batch normalisation after every coupling, with the running averages in
  evaluation (``norm="batch"``); ``norm="act"`` uses Glow's actnorm instead.
* Preprocessing (the experiments): y = logit(alpha + (1 - 2 alpha) x01) of the dequantised data
  x01 in [0, 1] (``logit_alpha``; 0 turns it off); its log-det is part of log p(x).

For 28x28 MNIST two scales fit (28 -> 14 -> 7, then 7 is odd): 1x28x28 -> (3 checkerboard,
squeeze, 3 channel) -> 4x14x14, factor out 2 -> (3 checkerboard, squeeze, 3 channel) ->
8x7x7, factor out 4 -> 4 checkerboard couplings on 4x7x7.

Vectors (2-D toys, arrays) get ``2 * couplings`` affine couplings with alternating masks,
MLP networks for s and t, and a norm layer after each.
"""
from __future__ import annotations

from ...errors import ConfigError
from ...registry import register
from .base import Chain, Flow
from .nets import MLP, ResNet
from .transforms import ActNorm, BatchNorm, Coupling, Logit, MultiScale, Squeeze, alternating_mask, channel_mask, checkerboard_mask

NORMS = ("batch", "act", "none")


def _norm(kind: str, channels: int):
    if kind == "batch":
        return [BatchNorm(channels)]
    if kind == "act":
        return [ActNorm(channels)]
    return []


@register("realnvp", family="flows", paper="Dinh, Sohl-Dickstein & Bengio 2017 (RealNVP)",
          summary="RealNVP: affine couplings (checkerboard + channel masks), squeeze, multi-scale, batch norm")
class RealNVP(Flow):
    """RealNVP (Dinh et al. 2017): multi-scale affine coupling flow for images, alternating couplings for vectors.

    Args:
        shape: per-example shape, (C, H, W) or (D,) with D >= 2.
        num_scales: images: number of (couplings, squeeze, couplings, factor-out) scales
            before the final scale; H and W must be divisible by 2^num_scales.
        couplings: images: couplings per mask type per scale (3 in the paper; the final
            scale has couplings + 1); vectors: the flow has 2 * couplings layers.
        hidden: feature maps (images) / units (vectors) of the s, t networks.
        blocks: residual blocks of the image ResNet.
        depth: hidden layers of the vector MLP.
        norm: "batch" (the paper), "act" (actnorm) or "none", after every coupling.
        logit_alpha: images: logit preprocessing constant (0.05 in the paper; 0 = off).
        dequantization, levels, data_range, deq_steps, deq_hidden: as in :class:`~.base.Flow`.
    """

    def __init__(
        self,
        shape: tuple = (1, 28, 28),
        num_scales: int = 2,
        couplings: int = 3,
        hidden: int = 64,
        blocks: int = 4,
        depth: int = 2,
        norm: str = "batch",
        logit_alpha: float = 0.05,
        dequantization: str = "uniform",
        levels: int = 256,
        data_range: tuple = (-1.0, 1.0),
        deq_steps: int = 4,
        deq_hidden: int = 32,
    ):
        super().__init__()
        shape = tuple(int(s) for s in shape)
        if norm not in NORMS:
            raise ConfigError(f"unknown RealNVP norm {norm!r}; valid: {', '.join(NORMS)}")
        couplings, hidden, blocks, depth = int(couplings), int(hidden), int(blocks), int(depth)
        if couplings < 1 or hidden < 1:
            raise ConfigError(f"RealNVP needs couplings >= 1 and hidden >= 1, got {couplings}, {hidden}")
        if len(shape) == 3:
            transform = self._image_flow(shape, int(num_scales), couplings, hidden, blocks, norm, float(logit_alpha), data_range)
        elif len(shape) == 1 and shape[0] >= 2:
            d = shape[0]
            layers = []
            for i in range(2 * couplings):
                m = alternating_mask(d, i % 2)
                layers.append(Coupling(m, MLP(int(m.sum()), 2 * int((~m).sum()), hidden, depth), kind="affine", scale="tanh"))
                layers += _norm(norm, d)
            transform = Chain(layers)
        else:
            raise ConfigError(f"RealNVP needs an image shape (C, H, W) or a vector shape (D,) with D >= 2, got {shape}")
        self._setup(shape, transform, "gaussian", dequantization, levels, data_range, deq_steps, deq_hidden)

    @staticmethod
    def _image_flow(shape, num_scales, couplings, hidden, blocks, norm, alpha, data_range):
        c, h, w = shape
        if num_scales < 0:
            raise ConfigError(f"RealNVP num_scales must be >= 0, got {num_scales}")
        if h % (2 ** num_scales) or w % (2 ** num_scales):
            fit = 0
            while h % (2 ** (fit + 1)) == 0 and w % (2 ** (fit + 1)) == 0:
                fit += 1
            raise ConfigError(f"RealNVP num_scales={num_scales} needs height and width divisible by 2^{num_scales}, "
                              f"got {h}x{w}; use model.num_scales={fit} or less")

        def checkerboard(c, h, w, n):
            out = []
            for j in range(n):
                out.append(Coupling(checkerboard_mask(h, w, j % 2), ResNet(c, 2 * c, hidden, blocks),
                                    kind="affine", scale="tanh", channels=c))
                out += _norm(norm, c)
            return out

        stages = []
        for _ in range(num_scales):
            layers = checkerboard(c, h, w, couplings) + [Squeeze()]
            c, h, w = 4 * c, h // 2, w // 2
            for j in range(couplings):
                m = channel_mask(c, j % 2)
                layers.append(Coupling(m, ResNet(int(m.sum()), 2 * int((~m).sum()), hidden, blocks), kind="affine", scale="tanh"))
                layers += _norm(norm, c)
            stages.append(Chain(layers))
            c = c // 2
        stages.append(Chain(checkerboard(c, h, w, couplings + 1)))
        pre = [Logit(data_range, alpha)] if alpha > 0 else []
        return Chain(pre + [MultiScale(shape, stages)])
