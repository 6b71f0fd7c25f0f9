"""The Skip-Tuning search (Ma et al. 2024; the method is :mod:`genzoo.models.diffusion.skip_tuning`):
sample a trained UNet diffusion model with its skips scaled by :func:`skip_schedule` for each
candidate rho_inner and keep the one with the lowest held-out FID. A pipeline: it samples
(:func:`genzoo.eval.runner.draw_samples`) and scores (:func:`genzoo.eval.sample_metrics`),
so it sits above the models and the evaluator."""
from __future__ import annotations

import torch

from ..errors import ConfigError
from ..models.diffusion.skip_tuning import skip_schedule


@torch.no_grad()
def search(model, real: torch.Tensor, spec, *, sampler: str, steps: int, rhos=(1.0, 0.95, 0.9, 0.85, 0.8, 0.75, 0.7),
           n: int = 1000, seed: int = 0, batch_size: int = 250, progress: bool = False, **opts) -> dict:
    """FID of ``sampler`` at ``steps`` for each rho_inner in ``rhos`` against ``real`` (held-out
    images, n of them); returns {"fids": {rho: fid}, "best_rho": rho, "best_scales": [...]}."""
    from ..eval import sample_metrics
    from ..eval.runner import draw_samples

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
