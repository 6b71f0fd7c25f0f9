"""Mode coverage on a mixture of isotropic Gaussians (the 8-Gaussians toy), the usual check for mode collapse.

Protocol (the VEEGAN / Unrolled-GAN convention, Srivastava et al. 2017; Metz et al. 2017):
a sample is *high quality* when it lies within ``radius`` = 3 standard deviations of the
nearest mixture centre; a mode is *covered* when at least ``min_share`` (default 0.25) of
its fair share of the samples, ``min_share * n / K``, are high-quality samples nearest to it.
With 8 equal modes and 2,000 samples a mode therefore needs 63 samples within 3 sigma.
"""
from __future__ import annotations

import torch

from ..errors import ConfigError, DataError

#: data sets whose modes are known in closed form
MODE_DATASETS = ("8gaussians",)


def mode_coverage(x: torch.Tensor, centres: torch.Tensor, std: float, *, radius: float = 3.0, min_share: float = 0.25) -> dict:
    """Coverage of the K modes ``centres`` (K, D) by samples ``x`` (N, D).

    Returns {"modes_covered": int, "num_modes": K, "high_quality": fraction of samples within
    ``radius * std`` of their nearest centre, "per_mode": [high-quality count of each mode],
    "num_samples": N, "protocol": str}.
    """
    if x.dim() != 2 or x.shape[1] != centres.shape[1]:
        raise DataError(f"mode coverage needs samples of shape (N, {centres.shape[1]}), got {tuple(x.shape)}")
    if x.shape[0] < 1:
        raise DataError("mode coverage needs at least one sample")
    x = x.detach().double().cpu()
    c = centres.detach().double().cpu()
    d = torch.cdist(x, c)  # (N, K)
    dist, nearest = d.min(1)
    good = torch.isfinite(dist) & (dist <= radius * std)
    k = c.shape[0]
    per_mode = torch.bincount(nearest[good], minlength=k)
    need = min_share * x.shape[0] / k
    return {
        "modes_covered": int((per_mode >= need).sum()),
        "num_modes": int(k),
        "high_quality": float(good.double().mean()),
        "per_mode": per_mode.tolist(),
        "num_samples": int(x.shape[0]),
        "protocol": f"mode covered if >= {min_share:g} x N/{k} samples lie within {radius:g} std of its centre",
    }


def eight_gaussians_coverage(x: torch.Tensor, **kw) -> dict:
    """:func:`mode_coverage` for genzoo's ``8gaussians`` toy (centres and std from :mod:`genzoo.data.toys`)."""
    from ..data.toys import _EIGHT_STD, _eight_centres

    return mode_coverage(x, _eight_centres(), _EIGHT_STD, **kw)


def coverage_for(spec, x: torch.Tensor, **kw) -> dict:
    """Mode coverage of samples ``x`` for the data set described by ``spec`` (a DataSpec)."""
    if spec.name not in MODE_DATASETS:
        raise ConfigError(f"the modes metric needs a data set with known modes ({', '.join(MODE_DATASETS)}), "
                          f"not {spec.name!r}; use fid,kid,pr for images")
    return eight_gaussians_coverage(x, **kw)
