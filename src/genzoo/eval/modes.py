"""Mode coverage on a mixture of isotropic Gaussians (the 8-Gaussians toy), the usual check for mode collapse.

Protocol (after the VEEGAN / Unrolled-GAN convention, Srivastava et al. 2017; Metz et al. 2017,
made strict enough that a ring or a blob cannot pass):

* ``high_quality``: the share of samples within ``radius`` = 3 standard deviations of the
  nearest mixture centre (as in those papers).
* A sample counts for a mode only inside the mode's *ball*: within
  ``r = min(radius * std, mode_radius * d_min)`` of its centre, where ``d_min`` is the
  minimum distance between mode centres and ``mode_radius`` = 1/4. The balls of neighbouring
  modes are then at least ``d_min / 2`` apart, so no sample counts for two modes. (On the
  8-Gaussians toy, d_min = 2.16 and 3 std = 1.06, so r = 0.54 = 1.53 std.)
* A mode is *covered* when (1) at least ``min_share`` (default 0.25) of its fair share of the
  samples, ``min_share * N / K``, lie in its ball, and (2) it is separated from its neighbours:
  its ball holds at least ``contrast`` (default 2) times as many samples as an equal ball at the
  midpoint between its centre and each neighbouring centre (the centres within 1.5 times its
  nearest-centre distance).

Why (2): counting alone cannot tell eight modes from a ring. Samples spread uniformly on the
circle through the 8 centres put at least 70% of the true per-mode count into every ball,
at any radius, so a ring scored 8 of 8 with (1) only. At the midpoints of a ring, or of a broad
blob, there are as many samples as at the centres; true 8-Gaussian samples have 7-8 times fewer
there (2,000 samples: about 170 per ball, 20-25 per midpoint ball). A blob at the origin covers 0
modes, a blob at one mode 1. Samples smeared along the circle (a GAN after a few hundred steps,
with as many samples between the modes as on them) are a ring by this measure, not 8 modes.
"""
from __future__ import annotations

import torch

from ..errors import ConfigError, DataError

#: data sets whose modes are known in closed form
MODE_DATASETS = ("8gaussians",)


def mode_coverage(x: torch.Tensor, centres: torch.Tensor, std: float, *, radius: float = 3.0, min_share: float = 0.25,
                  mode_radius: float = 0.25, contrast: float = 2.0) -> dict:
    """Coverage of the K modes ``centres`` (K, D) by samples ``x`` (N, D) (protocol in the module docstring).

    Args:
        x: (N, D) samples. centres: (K, D) mode centres. std: the modes' standard deviation.
        radius: high quality = within ``radius * std`` of the nearest centre (3, VEEGAN).
        min_share: a covered mode holds at least ``min_share * N / K`` samples in its ball.
        mode_radius: the ball radius is at most ``mode_radius`` times the minimum distance between centres.
        contrast: a covered mode's ball holds at least ``contrast`` times the samples of a ball at the
            midpoint towards each neighbouring centre.
    Returns {"modes_covered": int, "num_modes": K, "high_quality": fraction of samples within
    ``radius * std`` of their nearest centre, "per_mode": [samples in each mode's ball],
    "gap_max": [most samples in a midpoint ball next to each mode], "mode_radius": the ball radius,
    "num_samples": N, "protocol": str}.
    """
    if x.dim() != 2 or x.shape[1] != centres.shape[1]:
        raise DataError(f"mode coverage needs samples of shape (N, {centres.shape[1]}), got {tuple(x.shape)}")
    if x.shape[0] < 1:
        raise DataError("mode coverage needs at least one sample")
    x = x.detach().double().cpu()
    c = centres.detach().double().cpu()
    k = c.shape[0]
    x = x[torch.isfinite(x).all(1)] if not torch.isfinite(x).all() else x
    n = x.shape[0] if x.shape[0] else 1
    d = torch.cdist(x, c)  # (N, K)
    dist = d.min(1).values if x.shape[0] else torch.zeros(0, dtype=torch.float64)
    good = dist <= radius * std
    cc = torch.cdist(c, c)
    cc.fill_diagonal_(float("inf"))
    d_min = float(cc.min()) if k > 1 else float("inf")
    r = min(radius * std, mode_radius * d_min)
    per_mode = (d <= r).sum(0)  # disjoint balls: r <= d_min / 4
    gap_max = torch.zeros(k, dtype=torch.long)
    if k > 1:
        nearest_c = cc.min(1).values
        for j in range(k):
            for i in torch.nonzero(cc[j] <= 1.5 * nearest_c[j]).flatten().tolist():
                mid = (c[j] + c[i]) / 2
                gap_max[j] = max(int(gap_max[j]), int(((x - mid).norm(dim=1) <= r).sum()))
    need = min_share * x.shape[0] / k
    covered = (per_mode >= need) & (per_mode > 0) & (per_mode >= contrast * gap_max)
    return {
        "modes_covered": int(covered.sum()),
        "num_modes": int(k),
        "high_quality": float(good.double().sum() / n),
        "per_mode": per_mode.tolist(),
        "gap_max": gap_max.tolist(),
        "mode_radius": r,
        "num_samples": int(x.shape[0]),
        "protocol": (f"mode covered if >= {min_share:g} x N/{k} samples lie within r = min({radius:g} std, "
                     f"{mode_radius:g} x the minimum distance between centres) = {r:.3g} of its centre, and >= "
                     f"{contrast:g} x as many as within r of each midpoint towards a neighbouring centre; "
                     f"high quality: within {radius:g} std of the nearest centre"),
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
