"""Skip-Tuning (Ma, Xue, Hu, Wang, Liu, Li, Ma & Kawaguchi 2024, "The Surprising Effectiveness of
Skip-Tuning in Diffusion Sampling", ICML): training-free, the encoder->decoder skip connections
of a trained UNet are multiplied by factors rho_i < 1 while sampling, which at low NFE moves the
network's output towards a more complex push-forward and improves FID.

genzoo's UNet takes one factor per level (:attr:`genzoo.nn.unet.UNet.skip_scales`, level 0 = full
resolution). The paper scales the skips with coefficients that go linearly from the innermost
(lowest-resolution) skip to the outermost one; :func:`skip_schedule` builds that family from one
number, ``rho_inner`` (outermost level at ``rho_outer`` = 1 by default), and
:func:`genzoo.pipelines.skip_tuning.search` picks it on held-out FID (the validation split, never
the test split) for a given sampler and NFE.
With every factor 1 the sampler is the untuned one bit for bit (tests/test_diffusion_model.py).
"""
from __future__ import annotations

from ...errors import ConfigError


def skip_schedule(levels: int, rho_inner: float, rho_outer: float = 1.0) -> list[float]:
    """Per-level factors, level 0 (full resolution) = ``rho_outer`` ... last level = ``rho_inner``, linear."""
    if levels < 1:
        raise ConfigError(f"levels must be >= 1, got {levels}")
    if levels == 1:
        return [float(rho_inner)]
    return [float(rho_outer + (rho_inner - rho_outer) * i / (levels - 1)) for i in range(levels)]


def __getattr__(name):
    if name == "search":  # a pipeline (sampling + FID) now, above the models and the evaluator
        raise AttributeError("skip_tuning.search moved to genzoo.pipelines.skip_tuning.search")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
