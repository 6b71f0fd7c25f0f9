"""An image transformer: a decoder-only Transformer over the pixels of an image in raster order.

Papers
------
* Parmar et al. 2018, "Image Transformer"; Chen et al. 2020, "Generative Pretraining from
  Pixels" (iGPT): an image is the sequence of its pixels x_1 .. x_D in raster order, modelled
  autoregressively by a causal Transformer,

      log p(x) = sum_{i=1}^{D} log p(x_i | x_<i),      p(x_i | x_<i) = softmax(f_theta(x_<i))_i,

  with a categorical distribution over the pixel's values (2 for binary images, 256 grey levels).
* Su et al. 2021 (RoFormer) with the 2-D extension (see :mod:`genzoo.nn.rope`): the queries and
  keys are rotated by the (row, column) of their pixel, so attention scores depend on the 2-D
  offset between pixels (``pos="rope2d"``, the default).

The sequence fed to the Transformer is [BOS, x_1, ..., x_{D-1}] (BOS = an extra token id); the
output at index i is the distribution of x_{i+1}. Input index i carries the grid position of the
pixel it predicts, so the relative offsets the attention sees are those between pixels.

Colour images (C, H, W) are sequences of sub-pixels (Parmar et al. 2018, sec. 3: the channels of a
pixel one after the other), D = C H W: pixel by pixel in raster order and within a pixel R, then G
given R, then B given R and G, as PixelCNN's order:

    log p(x) = sum_{pixels p} sum_{c=1}^{C} log p(x_{p,c} | x_{<p}, x_{p,<c}).

The C inputs of a pixel share its grid position and carry a learned sub-position embedding (the
Transformer's ``grid_repeat``), so each knows which channel it predicts. One channel (C = 1) is the
plain pixel sequence above.

Sampling is pixel by pixel with a KV cache (one one-token pass per pixel; ``use_cache=False``
recomputes the whole prefix each step and gives the same samples, slower); ``temperature``
divides the logits; ``observed`` + ``mask`` complete a partially observed image (inpainting:
observed pixels are kept and fed to the model, the others sampled).

genzoo's Transformer is the one module in :mod:`genzoo.nn.transformer`; this model only adds the
pixel <-> token mapping. Sized for CPU (4 blocks of width 64 in the MNIST recipe; the iGPT
models are 76 M to 6.8 B parameters).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ..errors import ConfigError, DataError
from ..nn.transformer import TransformerConfig
from ..registry import register
from .base import GenerativeModel
from .data_needs import DataNeeds, Opt


@register("image_transformer", family="autoregressive",
          paper="Parmar et al. 2018 (Image Transformer); Chen et al. 2020 (iGPT); Su et al. 2021 (RoPE, 2-D)",
          summary="decoder-only Transformer over pixels, 2-D RoPE, KV-cached sampling, exact log p(x)")
class ImageTransformer(GenerativeModel):
    likelihood = "exact"
    discrete_likelihood = True

    #: the Transformer's settings are one nested section, ``model.transformer: {dim: 64, pos: rope2d, ...}``
    #: (:class:`~genzoo.nn.transformer.TransformerConfig`; the flat ``model.dim=...`` of earlier configs still works)
    network_specs = {"transformer": TransformerConfig}

    def __init__(self, shape=(1, 28, 28), levels: int = 2,
                 transformer: TransformerConfig | dict = TransformerConfig(dim=64, pos="rope2d"),
                 value_range=(-1.0, 1.0)):
        """shape (C, H, W) (C = 3: colour, sub-pixel order); levels: 2 (binary {0, 1} pixels) or 256 (levels of
        un-dequantised data in ``value_range``); transformer: the network's settings
        (:class:`~genzoo.nn.transformer.TransformerConfig`: dim, depth, heads, pos, mlp_ratio, dropout, ...;
        here dim 64 and pos rope2d by default; any position kind but rope-tie). The vocabulary, the causal
        mask, the length and the pixel grid come from the data."""
        super().__init__()
        shape = tuple(int(s) for s in shape)
        if len(shape) != 3 or shape[0] < 1:
            raise ConfigError(f"image_transformer models images (C, H, W), got shape {shape}")
        if levels not in (2, 256):
            raise ConfigError(f"image_transformer levels must be 2 (binary) or 256 (grey levels), got {levels}")
        try:
            t = TransformerConfig.of(transformer)
        except (TypeError, ValueError) as e:
            raise ConfigError(f"image_transformer: {e}") from e
        if t.pos == "rope-tie":
            raise ConfigError("pos='rope-tie' is for sequences that mix text and image patches; use rope2d (or rope) here")
        self.shape, self.levels, self.value_range = shape, levels, tuple(float(v) for v in value_range)
        self.C = shape[0]
        self.D = shape[0] * shape[1] * shape[2]
        try:
            self.net = t.build(vocab_size=levels + 1, out_dim=levels, causal=True, max_len=self.D,
                               grid=(shape[1], shape[2]), grid_repeat=self.C)
        except ValueError as e:
            raise ConfigError(str(e)) from e
        self.bos = levels

    # -- data <-> tokens ----------------------------------------------------------------------
    #: levels=2: binary {0, 1} data; levels=256: the un-dequantised 256 grey levels in value_range
    data_name = "image_transformer"
    data_needs_by = ("levels", "levels")
    data_needs = {
        2: DataNeeds(discrete=("binary",), alternative="model.levels=256 for grey levels"),
        256: DataNeeds(levels=256, value_range=Opt("value_range"), alternative="model.levels=2 for binary data"),
    }

    def to_tokens(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) data -> (B, D) int64 values 0 .. levels - 1 in sub-pixel raster order (pixels row by
        row, and within a pixel its channels: R, G, B)."""
        x = x.permute(0, 2, 3, 1).reshape(x.shape[0], -1)
        if self.levels == 2:
            k = x.round().long()
        else:
            lo, hi = self.value_range
            k = ((x - lo) / (hi - lo) * 255).round().long()
        if bool(((k < 0) | (k >= self.levels)).any()) or not torch.allclose(self.from_tokens(k), x.float(), atol=1e-3):
            raise DataError(f"image_transformer expects {'binary {0, 1}' if self.levels == 2 else '256-level'} pixels, "
                            f"got values in [{float(x.min()):.3g}, {float(x.max()):.3g}] that are not on that grid")
        return k

    def to_image(self, v: torch.Tensor) -> torch.Tensor:
        """(n, D) in sub-pixel raster order -> (n, C, H, W)."""
        C, H, W = self.shape
        return v.reshape(v.shape[0], H, W, C).permute(0, 3, 1, 2)

    def from_tokens(self, k: torch.Tensor) -> torch.Tensor:
        if self.levels == 2:
            return k.float()
        lo, hi = self.value_range
        return lo + (hi - lo) * k.float() / 255

    def _inputs(self, k: torch.Tensor) -> torch.Tensor:
        return torch.cat((torch.full_like(k[:, :1], self.bos), k[:, :-1]), dim=1)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> (B, D, levels): logits of p(x_i | x_<i) for every sub-pixel i (sub-pixel raster order)."""
        return self.net(self._inputs(self.to_tokens(x)))

    # -- interface -------------------------------------------------------------------------------
    def _log_prob_aux(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        k = self.to_tokens(x)
        logits, aux = self.net(self._inputs(k), return_aux=True)
        logp = F.log_softmax(logits.float(), dim=-1)
        return logp.gather(-1, k[..., None]).squeeze(-1).sum(-1), aux

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """log p(x) in nats per image, (B,)."""
        return self._log_prob_aux(x)[0]

    def loss(self, batch, **kwargs) -> dict[str, torch.Tensor]:
        """Cross-entropy in nats per pixel (the optimised loss) and nats per image (logged)."""
        self.check_options(kwargs, (), what="loss")
        lp, aux = self._log_prob_aux(batch)
        nll = -lp
        return {"loss": nll.mean() / self.D + aux, "nll": nll.mean().detach()}

    @torch.no_grad()
    def sample(self, n: int, *, generator: torch.Generator | None = None, temperature: float = 1.0, observed=None,
               mask=None, use_cache: bool = True, progress: bool = False) -> torch.Tensor:
        """n images (n, 1, H, W) drawn pixel by pixel.

        Options: temperature (logits / T, default 1); observed (n, 1, H, W) and mask (same shape,
        True = keep the observed pixel; inpainting); use_cache (default True: KV-cached decoding;
        False recomputes the prefix each step, same samples); progress (tqdm bar over pixels)."""
        T = float(temperature)
        if T <= 0:
            raise ConfigError(f"temperature must be > 0, got {T}")
        obs = observed
        if (obs is None) != (mask is None):
            raise ConfigError("inpainting needs both observed (images) and mask (True = observed pixel)")
        dev = self.device
        if obs is not None:
            if tuple(obs.shape) != (n, *self.shape) or tuple(mask.shape) != (n, *self.shape):
                raise ConfigError(f"observed and mask must have shape {(n, *self.shape)}, got "
                                  f"{tuple(obs.shape)} and {tuple(mask.shape)}")
            obs_k = self.to_tokens(obs.to(dev))
            mask = mask.to(dev).permute(0, 2, 3, 1).reshape(n, -1).bool()
        k = self.net.generate(n, self.D, self.bos, temperature=T, generator=generator,
                              observed=obs_k if obs is not None else None, mask=mask if obs is not None else None,
                              use_cache=bool(use_cache), progress=bool(progress),
                              desc="pixels")
        return self.to_image(self.from_tokens(k))
