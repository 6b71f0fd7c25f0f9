"""Masked layers for autoregressive models: MADE's masked linear layers and PixelCNN's masked convolutions.

MADE (Germain, Gregor, Murray & Larochelle 2015, "MADE: Masked Autoencoder for
Distribution Estimation", ICML), section 4
---------------------------------------------------------------------------
Every unit gets a *connectivity degree*. Inputs get m^0(d) in {1..D}, the position of
dimension d in the ordering; the k-th hidden unit of layer l gets
m^l(k) ~ Uniform{min_k' m^{l-1}(k'), ..., D - 1}. The masks are (eqs. 12, 13)::

    M^{W^l}[k, k'] = 1[m^l(k) >= m^{l-1}(k')]          hidden layers
    M^V[d, k]      = 1[m^0(d) > m^L(k)]                output layer (strict)

so output d can only see inputs with a smaller degree: a valid autoregressive net.
:func:`made_degrees` draws the degrees, :func:`degree_mask` turns two degree vectors
into a mask and :class:`MaskedLinear` applies it (``W * M``). ``mask_conditioning`` adds
MADE's eq. 16 term ``(U^l * M^{W^l}) 1``: a bias that tells each unit which mask it is
under, for connectivity-agnostic training.

PixelCNN (van den Oord, Kalchbrenner & Kavukcuoglu 2016, "Pixel Recurrent Neural
Networks", ICML, section 3.4 and fig. 2)
--------------------------------------------------------------------------------
A k x k convolution whose kernel is zeroed below the centre row and right of the
centre tap, so output (i, j) sees only pixels (i', j') earlier in raster order. With C
data channels (R, G, B) the feature maps are split into C groups and the centre tap
connects input group g_in to output group g_out only if ``g_in < g_out`` (mask **A**,
the first layer: a pixel's own value is hidden) or ``g_in <= g_out`` (mask **B**, every
later layer). :class:`MaskedConv2d` builds both from :func:`pixelcnn_mask`.

Gated PixelCNN (van den Oord, Kalchbrenner, Vinyals, Espeholt, Graves & Kavukcuoglu
2016, "Conditional Image Generation with PixelCNN Decoders", NeurIPS, section 2.2, fig. 2)
----------------------------------------------------------------------------------------
Stacked masked convolutions have a *blind spot*: pixels above and to the right of the
current one never enter its receptive field. The gated PixelCNN removes it with two
stacks. The **vertical** stack convolves a (k//2 + 1) x k window of the current row
and the rows above it (no mask), the **horizontal** stack a 1 x (k//2 + 1) window of
the current row up to the current pixel (masked like PixelCNN). The vertical features,
shifted down one row so that row i only sees rows < i, are added to the horizontal
stack through a 1x1 convolution. Each stack uses the gated activation (eq. 2)::

    y = tanh(W_f * x) . sigmoid(W_g * x)

and the horizontal stack is residual (h_out = h + 1x1(y)). :class:`GatedPixelCNNBlock`
is one such layer.

Shapes: linear layers (B, in) -> (B, out); convolutions (B, C, H, W) -> (B, C', H, W).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

# ----------------------------------------------------------------------------- MADE


def made_degrees(
    in_degrees: torch.Tensor, hidden_sizes: list[int] | tuple[int, ...], generator: torch.Generator | None = None
) -> list[torch.Tensor]:
    """Connectivity degrees of the hidden layers of a MADE (Germain et al. 2015, sec. 4.2).

    Args:
        in_degrees: (D,) int64, m^0(d) in {1..D}: the 1-based position of dimension d in
            the ordering.
        hidden_sizes: widths of the hidden layers.
        generator: source of the random degrees (global RNG when None).
    Returns: one (H_l,) int64 tensor per hidden layer, m^l(k) ~ Uniform{min m^{l-1}, ..., D - 1}
    (for D = 1 the range is empty and every hidden degree is 1, which no output can see).
    """
    D = int(in_degrees.numel())
    degrees = []
    prev = in_degrees
    for h in hidden_sizes:
        low = int(prev.min())
        high = max(D - 1, low)
        m = torch.randint(low, high + 1, (int(h),), generator=generator)
        degrees.append(m)
        prev = m
    return degrees


def degree_mask(in_degrees: torch.Tensor, out_degrees: torch.Tensor, strict: bool) -> torch.Tensor:
    """Mask (out, in) with 1 where out_degree > in_degree (``strict``, output layers and
    direct connections) or out_degree >= in_degree (hidden layers); float32."""
    o, i = out_degrees[:, None], in_degrees[None, :]
    return (o > i if strict else o >= i).to(torch.float32)


class MaskedLinear(nn.Linear):
    """``y = x (W * M)^T + b`` with a fixed binary mask M (a buffer, set by :meth:`set_mask`).

    Args:
        in_features, out_features, bias: as ``nn.Linear``.
        mask_conditioning: add MADE's eq. 16 term ``(U * M) 1`` (U a learned matrix the
            shape of W): a mask-dependent bias for connectivity-agnostic training.
    The mask starts as all ones (an ordinary linear layer).
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True, mask_conditioning: bool = False):
        super().__init__(in_features, out_features, bias)
        self.register_buffer("mask", torch.ones(out_features, in_features))
        self.u = nn.Parameter(torch.zeros(out_features, in_features)) if mask_conditioning else None

    def set_mask(self, mask: torch.Tensor) -> None:
        """Use ``mask`` (out_features, in_features) of 0/1 from now on."""
        if tuple(mask.shape) != tuple(self.weight.shape):
            raise ValueError(f"mask of shape {tuple(mask.shape)} for a weight of shape {tuple(self.weight.shape)}")
        self.mask.copy_(mask)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.linear(x, self.weight * self.mask, self.bias)
        if self.u is not None:
            y = y + (self.u * self.mask).sum(1)
        return y


# ----------------------------------------------------------------------------- PixelCNN


def channel_groups(n: int, data_channels: int) -> torch.Tensor:
    """Group of each of ``n`` feature channels when there are ``data_channels`` colour channels:
    contiguous blocks, ``g(c) = c * C // n`` (n must be a multiple of C). (n,) int64."""
    if n % data_channels:
        raise ValueError(f"{n} feature channels cannot be split into {data_channels} colour groups; use a multiple of {data_channels}")
    return torch.arange(n) * data_channels // n


def pixelcnn_mask(
    kernel_size: tuple[int, int],
    center: tuple[int, int],
    mask_type: str,
    in_groups: torch.Tensor,
    out_groups: torch.Tensor,
) -> torch.Tensor:
    """PixelCNN kernel mask (out, in, kh, kw): taps in rows above ``center`` and left of it
    in the centre row are open; the centre tap connects input group a to output group b
    iff a < b (``mask_type="A"``) or a <= b (``"B"``); taps below or to the right are closed."""
    if mask_type not in ("A", "B"):
        raise ValueError(f"mask_type must be 'A' or 'B', got {mask_type!r}")
    kh, kw = kernel_size
    ci, cj = center
    m = torch.zeros(len(out_groups), len(in_groups), kh, kw)
    m[:, :, :ci, :] = 1.0
    m[:, :, ci, :cj] = 1.0
    g_out, g_in = out_groups[:, None], in_groups[None, :]
    m[:, :, ci, cj] = (g_in < g_out if mask_type == "A" else g_in <= g_out).to(torch.float32)
    return m


class MaskedConv2d(nn.Conv2d):
    """A PixelCNN masked convolution (mask type "A" or "B"), spatial size preserved.

    Args:
        in_channels, out_channels: feature channels.
        kernel_size: int k (a k x k kernel centred on the pixel) or (kh, kw).
        mask_type: "A" (the pixel's own value hidden; first layer) or "B".
        center: the kernel tap that sits on the output pixel; default (kh // 2, kw // 2).
        pad: (left, right, top, bottom) zero padding; default centred, keeping H and W.
        data_channels: C colour channels; with C > 1 the centre tap is channel-masked.
        in_groups, out_groups: (in,) / (out,) colour group of each channel; default
            contiguous blocks (:func:`channel_groups`). The first layer's inputs are the C
            data channels (groups 0..C-1); an output layer predicting P parameters per
            colour in parameter-major order uses ``arange(P * C) % C``.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size, mask_type: str = "B", *,
                 center: tuple[int, int] | None = None, pad: tuple[int, int, int, int] | None = None,
                 data_channels: int = 1, in_groups: torch.Tensor | None = None, out_groups: torch.Tensor | None = None,
                 bias: bool = True):
        kh, kw = (kernel_size, kernel_size) if isinstance(kernel_size, int) else tuple(kernel_size)
        super().__init__(in_channels, out_channels, (kh, kw), bias=bias)
        center = center if center is not None else (kh // 2, kw // 2)
        self.pad = pad if pad is not None else (kw // 2, kw - 1 - kw // 2, kh // 2, kh - 1 - kh // 2)
        self.mask_type = mask_type
        in_groups = in_groups if in_groups is not None else channel_groups(in_channels, data_channels)
        out_groups = out_groups if out_groups is not None else channel_groups(out_channels, data_channels)
        self.register_buffer("mask", pixelcnn_mask((kh, kw), center, mask_type, in_groups, out_groups))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(F.pad(x, self.pad), self.weight * self.mask, self.bias)


def down_shift(x: torch.Tensor) -> torch.Tensor:
    """Shift feature maps (B, C, H, W) down one row (zeros enter at the top)."""
    return F.pad(x, (0, 0, 1, 0))[:, :, :-1, :]


def gate(x: torch.Tensor) -> torch.Tensor:
    """Gated activation unit tanh(a) * sigmoid(b) for x = [a, b] split on channels: (B, 2p, ...) -> (B, p, ...)."""
    a, b = x.chunk(2, dim=1)
    return torch.tanh(a) * torch.sigmoid(b)


class GatedPixelCNNBlock(nn.Module):
    """One gated PixelCNN layer with a vertical and a horizontal stack (no blind spot).

    Args:
        in_channels: channels of the incoming v and h (the C data channels for the first layer).
        channels: p, the output channels of both stacks (gates use 2p).
        kernel_size: k (odd): the vertical stack sees a (k//2 + 1) x k window (the current
            row and k//2 rows above), the horizontal one a 1 x (k//2 + 1) window.
        mask_type: "A" for the first layer (the current pixel's own value hidden), "B" after.
        data_channels: C colour channels (channel masking of the horizontal centre tap).
        residual: h_out = h + 1x1(gate(...)) (every layer but the first).
    forward(v, h) -> (v', h'), each (B, p, H, W). v' at row i depends on rows <= i (any
    column); h' at (i, j) on rows < i and on row i up to column j (its own value only
    through channel groups allowed by the mask).
    """

    def __init__(self, in_channels: int, channels: int, kernel_size: int = 3, mask_type: str = "B", *,
                 data_channels: int = 1, residual: bool = True):
        super().__init__()
        if kernel_size % 2 == 0:
            raise ValueError(f"gated PixelCNN kernel_size must be odd, got {kernel_size}")
        k, p, C = kernel_size, channels, data_channels
        self.k = k
        self.residual = residual
        in_groups = torch.arange(C) if mask_type == "A" else channel_groups(in_channels, C)
        gate_groups = torch.cat([channel_groups(p, C), channel_groups(p, C)])  # [tanh half | sigmoid half]
        self.v_conv = nn.Conv2d(in_channels, 2 * p, (k // 2 + 1, k))
        self.h_conv = MaskedConv2d(in_channels, 2 * p, (1, k // 2 + 1), mask_type, center=(0, k // 2),
                                   pad=(k // 2, 0, 0, 0), in_groups=in_groups, out_groups=gate_groups)
        self.v_to_h = nn.Conv2d(2 * p, 2 * p, 1)  # the vertical features, shifted down: rows < i only
        self.h_out = MaskedConv2d(p, p, 1, "B", data_channels=C)

    def forward(self, v: torch.Tensor, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        k = self.k
        v_feat = self.v_conv(F.pad(v, (k // 2, k // 2, k // 2, 0)))  # rows i - k//2 .. i
        h_feat = self.h_conv(h) + self.v_to_h(down_shift(v_feat))
        h_new = self.h_out(gate(h_feat))
        return gate(v_feat), (h + h_new if self.residual else h_new)
