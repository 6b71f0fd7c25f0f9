"""Skip-Tuning (Ma, Xue, Hu, Wang, Liu, Li, Ma & Kawaguchi 2024, "The Surprising Effectiveness of
Skip-Tuning in Diffusion Sampling", ICML): training-free, the encoder->decoder skip connections
of a trained UNet are multiplied by factors rho_i < 1 while sampling, which at low NFE moves the
network's output towards a more complex push-forward and improves FID.

genzoo's UNet takes one factor per level (:attr:`genzoo.nn.unet.UNet.skip_scales`, level 0 = full
resolution). The paper scales the skips with coefficients that go linearly from the innermost
(lowest-resolution) skip to the outermost one; :func:`skip_schedule` builds that family from one
number, ``rho_inner`` (outermost level at ``rho_outer`` = 1 by default), and :func:`search` picks
it on held-out FID (the validation split, never the test split) for a given sampler and NFE.
With every factor 1 the sampler is the untuned one bit for bit (tests/test_diffusion_model.py).
"""
from __future__ import annotations

import torch

from ...errors import ConfigError


def skip_schedule(levels: int, rho_inner: float, rho_outer: float = 1.0) -> list[float]:
    """Per-level factors, level 0 (full resolution) = ``rho_outer`` ... last level = ``rho_inner``, linear."""
    if levels < 1:
        raise ConfigError(f"levels must be >= 1, got {levels}")
    if levels == 1:
        return [float(rho_inner)]
    return [float(rho_outer + (rho_inner - rho_outer) * i / (levels - 1)) for i in range(levels)]


@torch.no_grad()
def search(model, real: torch.Tensor, spec, *, sampler: str, steps: int, rhos=(1.0, 0.95, 0.9, 0.85, 0.8, 0.75, 0.7),
           n: int = 1000, seed: int = 0, batch_size: int = 250, progress: bool = False, **opts) -> dict:
    """FID of ``sampler`` at ``steps`` for each rho_inner in ``rhos`` against ``real`` (held-out
    images, n of them); returns {"fids": {rho: fid}, "best_rho": rho, "best_scales": [...]}."""
    from ...eval import sample_metrics
    from ...eval.runner import draw_samples

    net = getattr(model, "net", None)
    if not hasattr(net, "skip_scales"):
        raise ConfigError("Skip-Tuning needs a Diffusion model with net='unet'")
    fids = {}
    for rho in rhos:
        scales = skip_schedule(net.num_levels, rho)
        fake = draw_samples(model, n, seed=seed, progress=progress, batch_size=batch_size, sampler=sampler, steps=steps,
                            skip_scales=scales, **opts)
        fids[float(rho)] = float(sample_metrics(fake, real[:n], metrics=("fid",), spec=spec)["fid"])
    best = min(fids, key=fids.get)
    return {"fids": fids, "best_rho": best, "best_scales": skip_schedule(net.num_levels, best)}
