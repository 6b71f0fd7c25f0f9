"""Normalizing flows: exact log-likelihoods, exact encodings, sampling by inversion.

* :mod:`.base`            - the :class:`~.base.Transform` abstraction (``forward(x) -> (z, logabsdet)``,
  data -> noise; ``inverse(z) -> x``), :class:`~.base.Chain`, base distributions and the
  :class:`~.base.Flow` model (log_prob, sample with temperature, encode / decode, interpolation).
* :mod:`.transforms`      - couplings and masks, actnorm, batch norm, invertible 1x1 conv (LU),
  squeeze, multi-scale with split priors, NICE's scaling, logit preprocessing.
* :mod:`.nets`            - conditioner networks (MLP, RealNVP ResNet, Glow NN).
* :mod:`.dequantization`  - Flow++ variational dequantisation q(u | x).
* :mod:`.tarflow`         - TARFLOW's patches and Transformer autoregressive affine blocks (on :mod:`genzoo.nn.transformer`).
* models: :class:`~.nice.NICE` ("nice"), :class:`~.realnvp.RealNVP` ("realnvp"), :class:`~.glow.Glow` ("glow"),
  :class:`~.tarflow.TarFlow` ("tarflow").

See docs/flows.md for the conventions (direction, bits/dim) and how to train, sample and evaluate.
"""
from __future__ import annotations

from .base import Chain, Flow, StandardLogistic, StandardNormal, Transform, save_interpolation_grid  # noqa: F401
from .dequantization import VariationalDequantizer  # noqa: F401
from .glow import Glow  # noqa: F401
from .nice import NICE  # noqa: F401
from .realnvp import RealNVP  # noqa: F401
from .tarflow import TarFlow  # noqa: F401
