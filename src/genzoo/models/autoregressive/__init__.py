"""Autoregressive models: exact likelihoods by the chain rule, pixel-by-pixel sampling, inpainting.

* :mod:`.base`: :class:`AutoregressiveModel` (exact ``log_prob``, sequential ``sample``
  with temperature, ``observed`` + ``mask`` inpainting) and the per-pixel output
  distributions (Bernoulli, 256-way softmax, discretised logistic mixture);
* :mod:`.fvsbn`: FVSBN (Frey 1998), a logistic regression per pixel;
* :mod:`.nade`: NADE (Larochelle & Murray 2011), O(HD) shared weights, order-agnostic option;
* :mod:`.made`: MADE (Germain et al. 2015), masks from degrees, mask/order ensembles;
* :mod:`.pixelcnn`: PixelCNN (van den Oord et al. 2016, masks A/B) and the gated PixelCNN.

Every module in this package is imported (and so registers its models), so a new
autoregressive model is added by adding a file here; see docs/autoregressive.md.
"""
from __future__ import annotations

import importlib
import pkgutil

from .base import AutoregressiveModel, make_output, region_mask  # noqa: F401

for _m in sorted(m.name for m in pkgutil.iter_modules(__path__)):
    if _m != "base" and not _m.startswith("_"):
        importlib.import_module(f"{__name__}.{_m}")

from .fvsbn import FVSBN  # noqa: E402,F401
from .made import MADE  # noqa: E402,F401
from .nade import NADE  # noqa: E402,F401
from .pixelcnn import GatedPixelCNN, PixelCNN, raster_order  # noqa: E402,F401
