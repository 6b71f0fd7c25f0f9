"""Improved precision and recall (and density/coverage) of generated samples.

Kynkaanniemi, Karras, Laine, Lehtinen & Aila, "Improved Precision and Recall Metric for
Assessing Generative Models", NeurIPS 2019. The support of a set of features
Phi = {phi} is approximated by the union of hyperspheres centred at each phi with radius
its distance to its k-th nearest neighbour in Phi (excluding itself)::

    f(phi, Phi) = 1  if  ||phi - phi'|| <= NND_k(phi')  for some phi' in Phi
    precision   = mean_{fake g} f(g, Phi_real)      (fake samples that look real)
    recall      = mean_{real r} f(r, Phi_fake)      (real samples the model covers)

Density and coverage (Naeem, Oh, Uh, Choi & Yoo, "Reliable Fidelity and Diversity
Metrics for Generative Models", ICML 2020) reuse the real balls:
density = (1 / kM) sum_g #{r : g in B(r, NND_k(r))}, coverage = share of real balls that
contain at least one fake sample.

Distances are Euclidean, computed with ``torch.cdist`` in row chunks so that 10k x 10k
(or larger) sets fit in memory.
"""
from __future__ import annotations

import torch

from ..errors import ConfigError, DataError


def _as_features(f, what: str) -> torch.Tensor:
    f = torch.as_tensor(f).detach().to("cpu", torch.float64)
    if f.dim() != 2:
        raise DataError(f"{what} must be (N, D) features, got shape {tuple(f.shape)}")
    if not torch.isfinite(f).all():
        raise DataError(f"{what} contains NaN or inf")
    return f


def _chunks(n: int, m: int, budget: int = 4_000_000):
    step = max(1, budget // max(m, 1))
    for s in range(0, n, step):
        yield s, min(n, s + step)


def knn_radii(f: torch.Tensor, k: int) -> torch.Tensor:
    """Distance from each row of f (N, D) to its k-th nearest other row: (N,)."""
    n = f.shape[0]
    if not 1 <= k < n:
        raise ConfigError(f"k must satisfy 1 <= k < number of samples ({n}), got k={k}")
    out = torch.empty(n, dtype=f.dtype)
    for s, e in _chunks(n, n):
        d = torch.cdist(f[s:e], f)
        d[torch.arange(e - s), torch.arange(s, e)] = 0.0  # self-distance exactly 0 (cdist's mm path is inexact)
        out[s:e] = d.kthvalue(k + 1, dim=1).values  # the 1st smallest is the point itself
    return out


def _ball_counts(queries: torch.Tensor, centres: torch.Tensor, radii: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """For each query, how many balls B(centre, radius) contain it; for each centre, whether any query is inside."""
    counts = torch.empty(queries.shape[0], dtype=torch.long)
    hit = torch.zeros(centres.shape[0], dtype=torch.bool)
    for s, e in _chunks(queries.shape[0], centres.shape[0]):
        inside = torch.cdist(queries[s:e], centres) <= radii[None, :]
        counts[s:e] = inside.sum(1)
        hit |= inside.any(0)
    return counts, hit


def precision_recall_density_coverage(real_feats, fake_feats, k: int = 3) -> dict[str, float]:
    """Precision, recall (Kynkaanniemi et al. 2019), density and coverage (Naeem et al. 2020).

    Args:
        real_feats: (N, D) features of real data. fake_feats: (M, D) of generated samples.
        k: neighbourhood size for the hypersphere radii (3 in Kynkaanniemi et al.; Naeem
            et al. use 5 for density/coverage).
    Returns: dict(precision, recall, density, coverage) of floats; precision/recall/coverage in [0, 1].
    """
    real = _as_features(real_feats, "real features")
    fake = _as_features(fake_feats, "fake features")
    if real.shape[1] != fake.shape[1]:
        raise DataError(f"feature dimensions differ: real {real.shape[1]} vs fake {fake.shape[1]}")
    r_real = knn_radii(real, k)
    r_fake = knn_radii(fake, k)
    counts_fake_in_real, real_hit = _ball_counts(fake, real, r_real)
    counts_real_in_fake, _ = _ball_counts(real, fake, r_fake)
    return {
        "precision": float((counts_fake_in_real > 0).double().mean()),
        "recall": float((counts_real_in_fake > 0).double().mean()),
        "density": float(counts_fake_in_real.double().sum() / (k * fake.shape[0])),
        "coverage": float(real_hit.double().mean()),
    }


def precision_recall(real_feats, fake_feats, k: int = 3) -> dict[str, float]:
    """Improved precision and recall (Kynkaanniemi et al. 2019) with k-NN hyperspheres.

    Args:
        real_feats: (N, D) real features. fake_feats: (M, D) generated features.
        k: the k of the k-th-nearest-neighbour radius (default 3, as in the paper).
    Returns: dict(precision=..., recall=...) floats in [0, 1].
    """
    out = precision_recall_density_coverage(real_feats, fake_feats, k)
    return {"precision": out["precision"], "recall": out["recall"]}
