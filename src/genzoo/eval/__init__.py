"""Metrics: likelihood (NLL, bits/dim) and sample quality (FID, KID, precision/recall).

Likelihood: :func:`evaluate_nll` (exact or bound models; bits/dim per
:mod:`genzoo.units`). Sample quality: :func:`sample_metrics` compares generated samples
with real data through a pluggable feature extractor (:mod:`genzoo.eval.features`;
``"mnist"`` by default for 28x28 digits, ``"raw"`` for vectors, ``"inception"`` via
torch-fidelity), and :func:`fid_floor` gives the FID between two *real* sets (test vs
train), the floor any model's FID should be read against.

Protocol, stated with every number: the feature network (``result["extractor"]``), the
sizes of both sets (FID is biased upwards for small sets), and the data description.
"""
from __future__ import annotations

import torch

from ..errors import DataError
from .features import (
    CIFAR10Extractor,
    CIFAR10FeatureNet,
    FeatureExtractor,
    InceptionExtractor,
    MNISTExtractor,
    MNISTFeatureNet,
    RawExtractor,
    feature_net_metadata,
    get_extractor,
    load_feature_net,
    load_mnist_feature_net,
    mnist_feature_metadata,
)
from .fid import feature_stats, fid_from_features, frechet_distance, kid_from_features
from .nll import evaluate_nll
from .prdc import precision_recall, precision_recall_density_coverage
from ..metric_registry import check_metrics, metric_names

#: the feature-space sample metrics :func:`sample_metrics` computes (genzoo.metric_registry: features=True)
METRICS = metric_names(features=True)

__all__ = [
    "METRICS", "sample_metrics", "fid_floor", "evaluate_nll",
    "frechet_distance", "fid_from_features", "kid_from_features", "feature_stats",
    "precision_recall", "precision_recall_density_coverage",
    "FeatureExtractor", "get_extractor", "load_mnist_feature_net", "mnist_feature_metadata",
    "MNISTFeatureNet", "MNISTExtractor", "RawExtractor", "InceptionExtractor",
    "CIFAR10FeatureNet", "CIFAR10Extractor", "load_feature_net", "feature_net_metadata",
]


def _check_metrics(metrics) -> tuple[str, ...]:
    return check_metrics(metrics, METRICS)


def _check_pair(a: torch.Tensor, b: torch.Tensor, names=("fake", "real")) -> None:
    for t, n in zip((a, b), names):
        if not isinstance(t, torch.Tensor):
            raise DataError(f"{n} must be a torch.Tensor (B, ...), got {type(t).__name__}")
        if t.shape[0] < 2:
            raise DataError(f"{n} needs at least 2 examples, got shape {tuple(t.shape)}")
    if tuple(a.shape[1:]) != tuple(b.shape[1:]):
        raise DataError(f"{names[0]} and {names[1]} have different per-example shapes: {tuple(a.shape[1:])} vs {tuple(b.shape[1:])}")


def sample_metrics(
    fake: torch.Tensor,
    real: torch.Tensor,
    metrics=("fid", "kid", "pr"),
    extractor="auto",
    spec=None,
    *,
    value_range: tuple[float, float] | None = None,
    k: int = 3,
    kid_subsets: int = 100,
    kid_subset_size: int = 1000,
    seed: int = 0,
    device=None,
) -> dict:
    """Sample-quality metrics of ``fake`` against ``real``, both in data space.

    Args:
        fake: (M, ...) generated samples. real: (N, ...) real data, same per-example shape
            and value range (e.g. ``dataset.tensor()``).
        metrics: any of "fid", "kid", "pr" (precision/recall, Kynkaanniemi et al. 2019),
            "prdc" (precision, recall, density, coverage).
        extractor: "auto" | "mnist" | "cifar10" | "inception" | "raw" or an extractor object
            (see :func:`genzoo.eval.features.get_extractor`).
        spec: the data set's DataSpec (value range, binarisation) for the extractor.
        value_range: (lo, hi) of the inputs when no spec is given (default (-1, 1)).
        k: neighbourhood size for pr/prdc.
        kid_subsets, kid_subset_size, seed: KID subsets (size clipped to the set sizes).
        device: device of the feature network.
    Returns: dict with the requested numbers among fid, kid, kid_std, precision, recall,
        density, coverage; plus extractor (name), feature_dim, num_fake, num_real.
    """
    metrics = _check_metrics(metrics)
    _check_pair(fake, real)
    ext = get_extractor(extractor, spec, shape=tuple(real.shape[1:]), value_range=value_range, device=device)
    ff = ext(fake)
    fr = ext(real)
    out: dict = {"extractor": ext.name, "feature_dim": int(fr.shape[1]), "num_fake": int(fake.shape[0]), "num_real": int(real.shape[0])}
    if "fid" in metrics:
        out["fid"] = fid_from_features(fr, ff)
    if "kid" in metrics:
        out["kid"], out["kid_std"] = kid_from_features(fr, ff, num_subsets=kid_subsets, subset_size=kid_subset_size, seed=seed)
        out["kid_subset_size"] = int(min(kid_subset_size, fake.shape[0], real.shape[0]))
    if "prdc" in metrics:
        out.update(precision_recall_density_coverage(fr, ff, k=k))
    elif "pr" in metrics:
        out.update(precision_recall(fr, ff, k=k))
    return out


def fid_floor(real_a: torch.Tensor, real_b: torch.Tensor, extractor="auto", spec=None, *,
              value_range: tuple[float, float] | None = None, device=None) -> float:
    """FID between two sets of *real* data (e.g. test set vs an equal-size slice of the
    training set): the floor that a perfect model's FID, at these set sizes and with this
    feature network, would reach. Report it beside every model FID.
    """
    _check_pair(real_a, real_b, names=("real_a", "real_b"))
    ext = get_extractor(extractor, spec, shape=tuple(real_a.shape[1:]), value_range=value_range, device=device)
    return fid_from_features(ext(real_a), ext(real_b))
