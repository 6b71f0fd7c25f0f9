"""The denoiser network's settings: one nested, validated section of a diffusion-family model.

The diffusion models (:class:`~genzoo.models.diffusion.model.Diffusion` and its subclasses such as
the shortcut model, and PFGM) all learn a network of the noisy input and the noise level: the
:class:`~genzoo.nn.unet.UNet` for images (Ho et al. 2020's DDPM architecture, scaled down for a
CPU) or the :class:`~genzoo.nn.time_mlp.TimeMLP` for vectors. The settings a user chooses are one
section of the model's config::

    model:
      denoiser: {net: unet, channels: 64, channel_mult: [1, 2, 2], attn_resolutions: [16]}

``model.denoiser.channels=64`` on the command line; the flat ``model.channels=64`` of configs
written before the section still works (the registry maps a bare field to its section). The
arguments the data fixes (the input channels and image size, the vector dimension, the number
of classes, extra output channels) stay the model's: :meth:`DenoiserConfig.unet` and
:meth:`DenoiserConfig.mlp` take them.
"""
from __future__ import annotations

import dataclasses

from .time_mlp import TimeMLP
from .unet import TIME_EMBEDDINGS, UNet

#: the denoiser networks: "unet" (images, (C, H, W)), "mlp" (any shape, flattened), "auto" (unet for images, else mlp)
NETS = ("unet", "mlp", "auto")


@dataclasses.dataclass(frozen=True)
class DenoiserConfig:
    """The denoiser's settings (``model.denoiser``). Validated by its fields: a ValueError names the bad one.

    Args:
        net: "unet", "mlp" or "auto" (the UNet for image data (C, H, W), the MLP otherwise).
        channels, channel_mult, num_res_blocks, attn_resolutions: the UNet's base width, the width
            multiplier of each resolution level, residual blocks per level, and the resolutions
            (feature-map heights) with self-attention.
        hidden, depth: the MLP's width and number of residual blocks.
        dropout: dropout inside the residual blocks (either net).
        time_embedding: "sinusoidal" (DDPM) or "fourier" (random Fourier features, Song et al. 2021).
    """

    net: str = "unet"
    channels: int = 32
    channel_mult: tuple = (1, 2, 2)
    num_res_blocks: int = 1
    attn_resolutions: tuple = (7,)
    hidden: int = 256
    depth: int = 3
    dropout: float = 0.0
    time_embedding: str = "sinusoidal"

    def __post_init__(self):
        for name, valid in (("net", NETS), ("time_embedding", TIME_EMBEDDINGS)):
            if getattr(self, name) not in valid:
                raise ValueError(f"unknown denoiser {name} {getattr(self, name)!r}; valid: {', '.join(valid)}")
        for name in ("channel_mult", "attn_resolutions"):
            value = getattr(self, name)
            if isinstance(value, int):
                value = (value,)
            if not isinstance(value, (list, tuple)) or not all(isinstance(v, int) and not isinstance(v, bool)
                                                              for v in value):
                raise ValueError(f"denoiser {name} must be a list of ints, got {value!r}")
            object.__setattr__(self, name, tuple(value))  # a YAML list -> a tuple: equal configs compare equal
        if not self.channel_mult or min(self.channel_mult) < 1:
            raise ValueError(f"denoiser channel_mult must be a non-empty list of positive ints, got {list(self.channel_mult)}")
        for name, low in (("channels", 1), ("num_res_blocks", 1), ("hidden", 2), ("depth", 1)):
            if int(getattr(self, name)) < low:
                raise ValueError(f"denoiser {name} must be >= {low}, got {getattr(self, name)}")
        if not 0.0 <= float(self.dropout) < 1.0:
            raise ValueError(f"denoiser dropout must be in [0, 1), got {self.dropout}")

    @classmethod
    def of(cls, value: "DenoiserConfig | dict | None", **defaults) -> "DenoiserConfig":
        """``value`` as a config: a config itself, a dict of some fields (the rest from ``defaults``, then
        the class's), or None (``defaults`` alone: PFGM's ``net="auto"``)."""
        if isinstance(value, cls):
            return value
        if value is None:
            value = {}
        if not isinstance(value, dict):
            raise TypeError(f"a denoiser config is a DenoiserConfig or a dict, got {type(value).__name__}")
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = [k for k in list(value) + list(defaults) if k not in names]
        if unknown:
            raise ValueError(f"unknown denoiser setting {unknown[0]!r}; valid: {', '.join(sorted(names))}")
        return cls(**{**defaults, **value})

    def net_for(self, shape: tuple) -> str:
        """"unet" or "mlp" for data of ``shape`` ("auto" resolved); ValueError for a UNet on non-image data."""
        net = ("unet" if len(shape) == 3 else "mlp") if self.net == "auto" else self.net
        if net == "unet" and len(shape) != 3:
            raise ValueError(f"net='unet' needs image data (C, H, W), got shape {tuple(shape)}; "
                             "use model.denoiser.net=mlp (or auto)")
        return net

    def unet(self, in_channels: int, image_size: tuple, **data_bound) -> UNet:
        """The UNet of these settings for ``in_channels`` x ``image_size`` images; ``data_bound``: the
        model's own UNet arguments (out_channels, num_classes, skip_scale, ...)."""
        return UNet(in_channels=in_channels, channels=self.channels, channel_mult=self.channel_mult,
                    num_res_blocks=self.num_res_blocks, attn_resolutions=self.attn_resolutions,
                    image_size=image_size, dropout=self.dropout, time_embedding=self.time_embedding, **data_bound)

    def mlp(self, dim: int, **data_bound) -> TimeMLP:
        """The TimeMLP of these settings on ``dim``-dimensional vectors; ``data_bound``: out_dim, num_classes."""
        return TimeMLP(dim, hidden=self.hidden, depth=self.depth, time_embedding=self.time_embedding,
                       dropout=self.dropout, **data_bound)

