"""PixelCNN (masks A and B) and the gated PixelCNN (vertical and horizontal stacks, no blind spot).

Papers and the equations implemented
------------------------------------
* van den Oord, Kalchbrenner & Kavukcuoglu 2016, "Pixel Recurrent Neural Networks"
  (ICML). An image (C, H, W) is generated pixel by pixel in raster order (row by row,
  left to right) and, within a pixel, channel by channel (R, then G given R, then B given
  R and G)::

      p(x) = prod_{i=1..H*W} p(x_{i,R} | x_<i) p(x_{i,G} | x_<i, x_{i,R}) p(x_{i,B} | x_<i, x_{i,R}, x_{i,G})   (eqs. 1-2)

  PixelCNN (sec. 3.4) computes all the conditionals at once with masked convolutions
  (:class:`~genzoo.nn.masked.MaskedConv2d`): a 7x7 mask-A convolution (a pixel cannot
  see itself), residual blocks (fig. 5: ReLU, 1x1 conv 2h -> h, ReLU, 3x3 mask-B conv,
  ReLU, 1x1 conv h -> 2h, plus the identity), then two ReLU + 1x1 mask-B layers to the
  outputs: a 256-way softmax per channel (sec. 5.1) or, for binarised MNIST, a sigmoid
  (sec. 5.3; 81.30 nats on the static binarised MNIST test set, Table 4). Its receptive
  field has a *blind spot* (pixels up and to the right are never seen).
* van den Oord, Kalchbrenner, Vinyals, Espeholt, Graves & Kavukcuoglu 2016, "Conditional
  Image Generation with PixelCNN Decoders" (NeurIPS), sec. 2: the gated PixelCNN. Each
  layer (:class:`~genzoo.nn.masked.GatedPixelCNNBlock`, fig. 2) has a vertical stack
  (the rows above, unmasked) and a horizontal stack (the current row up to the pixel,
  masked), joined by a 1x1 convolution from the vertical to the horizontal stack after a
  one-row shift, which removes the blind spot; activations are gated,
  y = tanh(W_f * x) . sigmoid(W_g * x) (eq. 2), and the horizontal stack is residual.
  The class-conditional part of that paper is not included.
* Salimans, Karpathy, Chen & Kingma 2017, "PixelCNN++" (ICLR), eq. 2: the discretised
  logistic mixture output (``output="logistic"``), here per channel (without PixelCNN++'s
  linear coupling of the colour channels).

Implementation notes: feature channels are split into C colour groups for C > 1 (so
``channels`` must be a multiple of C); the output layer emits P parameters per colour in
parameter-major order (channel p * C + c). Inputs are fed as they are ({0, 1} or grey
values in the data's range).
"""
from __future__ import annotations

import torch
from torch import nn

from ...errors import ConfigError
from ...nn.masked import GatedPixelCNNBlock, MaskedConv2d
from ...registry import register
from .base import AutoregressiveModel


def raster_order(shape: tuple[int, int, int]) -> torch.Tensor:
    """Flat indices of (C, H, W) in PixelCNN order: pixels row by row, channels within a pixel. (D,) int64."""
    C, H, W = shape
    return torch.arange(C * H * W).reshape(C, H * W).T.reshape(-1)


class _ImageAutoregressive(AutoregressiveModel):
    """Shared by the PixelCNNs: image shape checks, raster ordering, the masked 1x1 output head."""

    def _init_image(self, shape, output, levels, value_range, nr_mix, channels, head_channels) -> tuple[int, int]:
        """Checks the shape; returns (channels, head_channels), a default (None) rounded up to a multiple of C."""
        self._init_output(shape, output, levels, value_range, nr_mix)
        if len(self.shape) != 3:
            raise ConfigError(f"{type(self).__name__} needs image data (C, H, W), got shape {self.shape}")
        C = self.shape[0]
        out = []
        for name, value, default in (("channels", channels, 32), ("head_channels", head_channels, 64)):
            if value is None:  # the default width, rounded up so that it splits into C colour groups (32 -> 33 for RGB)
                value = -(-default // C) * C
            if int(value) < 1 or int(value) % C:
                raise ConfigError(f"{type(self).__name__} {name}={value} must be a positive multiple of the "
                                  f"{C} colour channels (one group of feature maps per colour); leave it out for the "
                                  f"default {default} rounded up to a multiple of {C}")
            out.append(int(value))
        return out[0], out[1]

    def _head(self, in_channels: int, hidden: int) -> nn.Sequential:
        """ReLU, 1x1 mask B (in -> hidden), ReLU, 1x1 mask B (hidden -> P * C parameters)."""
        C, P = self.shape[0], self.output.num_params
        return nn.Sequential(
            nn.ReLU(), MaskedConv2d(in_channels, hidden, 1, "B", data_channels=C),
            nn.ReLU(), MaskedConv2d(hidden, P * C, 1, "B", data_channels=C, out_groups=torch.arange(P * C) % C),
        )

    def ordering(self) -> torch.Tensor:
        return raster_order(self.shape)

    def _params(self, out: torch.Tensor) -> torch.Tensor:
        return out.reshape(out.shape[0], self.output.num_params, *self.shape)


class ResidualBlock(nn.Module):
    """PixelRNN fig. 5: x + 1x1(h -> 2h)(relu(kxk mask B(h -> h)(relu(1x1(2h -> h)(relu(x)))))), 2h channels."""

    def __init__(self, channels: int, kernel_size: int, data_channels: int):
        super().__init__()
        h, C = channels, data_channels
        self.net = nn.Sequential(
            nn.ReLU(), MaskedConv2d(2 * h, h, 1, "B", data_channels=C),
            nn.ReLU(), MaskedConv2d(h, h, kernel_size, "B", data_channels=C),
            nn.ReLU(), MaskedConv2d(h, 2 * h, 1, "B", data_channels=C),
        )

    def forward(self, x):
        return x + self.net(x)


@register("pixelcnn", family="autoregressive", paper="van den Oord, Kalchbrenner & Kavukcuoglu 2016 (PixelRNN paper)",
          summary="PixelCNN: a 7x7 mask-A conv, residual mask-B blocks, 1x1 output layers")
class PixelCNN(_ImageAutoregressive):
    """PixelCNN (van den Oord et al. 2016, sec. 3.4) with masks A and B.

    Args:
        shape: (C, H, W).
        channels: h; the residual stream has 2h feature maps (a multiple of C). Default: 32, rounded up to a
            multiple of C (33 for colour).
        blocks: number of residual blocks.
        kernel_size: the masked convolution in each block (3 in the paper).
        first_kernel: the mask-A input convolution (7 in the paper).
        head_channels: width of the 1x1 output layers (a multiple of C; default 64, 66 for colour).
        output, levels, value_range, nr_mix: per-pixel distribution (see
            :mod:`genzoo.models.autoregressive.base`).
    """

    def __init__(self, shape: tuple = (1, 28, 28), channels: int | None = None, blocks: int = 7, kernel_size: int = 3,
                 first_kernel: int = 7, head_channels: int | None = None, output: str = "bernoulli", levels: int = 256,
                 value_range: tuple = (-1.0, 1.0), nr_mix: int = 5):
        super().__init__()
        channels, head_channels = self._init_image(shape, output, levels, value_range, nr_mix, channels, head_channels)
        if kernel_size % 2 == 0 or first_kernel % 2 == 0:
            raise ConfigError(f"PixelCNN kernels must be odd, got kernel_size={kernel_size}, first_kernel={first_kernel}")
        C, h = self.shape[0], int(channels)
        self.input = MaskedConv2d(C, 2 * h, first_kernel, "A", data_channels=C, in_groups=torch.arange(C))
        self.blocks = nn.Sequential(*[ResidualBlock(h, kernel_size, C) for _ in range(int(blocks))])
        self.head = self._head(2 * h, int(head_channels))

    def conditionals(self, x: torch.Tensor) -> torch.Tensor:
        return self._params(self.head(self.blocks(self.input(x))))


@register("gated_pixelcnn", family="autoregressive",
          paper="van den Oord, Kalchbrenner, Vinyals, Espeholt, Graves & Kavukcuoglu 2016",
          summary="Gated PixelCNN: vertical + horizontal stacks (no blind spot), gated units")
class GatedPixelCNN(_ImageAutoregressive):
    """Gated PixelCNN (van den Oord et al. 2016, "Conditional Image Generation with PixelCNN Decoders").

    Args:
        shape: (C, H, W).
        channels: p, feature maps of each stack (a multiple of C). Default: 32, rounded up to a multiple of
            C (33 for colour).
        layers: gated layers; the first uses ``first_kernel`` and mask A, the others
            ``kernel_size`` and mask B with a residual horizontal stack.
        kernel_size, first_kernel: odd kernel widths.
        head_channels: width of the 1x1 output layers (a multiple of C; default 64, 66 for colour).
        output, levels, value_range, nr_mix: per-pixel distribution.
    """

    def __init__(self, shape: tuple = (1, 28, 28), channels: int | None = None, layers: int = 8, kernel_size: int = 3,
                 first_kernel: int = 7, head_channels: int | None = None, output: str = "bernoulli", levels: int = 256,
                 value_range: tuple = (-1.0, 1.0), nr_mix: int = 5):
        super().__init__()
        channels, head_channels = self._init_image(shape, output, levels, value_range, nr_mix, channels, head_channels)
        if kernel_size % 2 == 0 or first_kernel % 2 == 0:
            raise ConfigError(f"gated PixelCNN kernels must be odd, got kernel_size={kernel_size}, first_kernel={first_kernel}")
        if int(layers) < 1:
            raise ConfigError(f"gated PixelCNN needs layers >= 1, got {layers}")
        C, p = self.shape[0], int(channels)
        self.layers = nn.ModuleList(
            [GatedPixelCNNBlock(C, p, first_kernel, "A", data_channels=C, residual=False)]
            + [GatedPixelCNNBlock(p, p, kernel_size, "B", data_channels=C) for _ in range(int(layers) - 1)]
        )
        self.head = self._head(p, int(head_channels))

    def conditionals(self, x: torch.Tensor) -> torch.Tensor:
        v = h = x
        for layer in self.layers:
            v, h = layer(v, h)
        return self._params(self.head(h))
