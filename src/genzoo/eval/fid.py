"""Frechet distance (FID) and kernel distance (KID) between two sets of features.

FID: Heusel, Ramsauer, Unterthiner, Nessler & Hochreiter, "GANs Trained by a Two
Time-Scale Update Rule Converge to a Local Nash Equilibrium", NeurIPS 2017. Fit a
Gaussian to each feature set and take the Frechet (2-Wasserstein) distance::

    FID = |mu1 - mu2|^2 + Tr(S1 + S2 - 2 (S1 S2)^{1/2})

computed as in the reference code (pytorch-fid / TTUR): ``scipy.linalg.sqrtm`` of
S1 S2, retried with ``eps * I`` added to both covariances when the square root is not
finite, real part taken. Covariances are unbiased (ddof = 1). FID is biased upwards for
small sets: compare numbers computed with the same set sizes and feature network.

KID: Binkowski, Sutherland, Arbel & Gretton, "Demystifying MMD GANs", ICLR 2018. The
unbiased estimator of the squared MMD with the cubic polynomial kernel
``k(x, y) = (x . y / d + 1)^3`` (d = feature dimension), averaged over random subsets
of equal size m::

    MMD^2_u = [sum_{i != j} k(x_i, x_j) + sum_{i != j} k(y_i, y_j)] / (m (m - 1))
              - 2 sum_{i, j} k(x_i, y_j) / m^2

as in torch-fidelity (mean and population std over ``num_subsets`` subsets). KID is
unbiased, so it can be slightly negative when the two sets come from one distribution.
"""
from __future__ import annotations

import warnings

import numpy as np
import scipy.linalg
import torch

from ..errors import DataError


def _as_2d_float64(f, what: str) -> np.ndarray:
    if isinstance(f, torch.Tensor):
        f = f.detach().to("cpu", torch.float64).numpy()
    f = np.asarray(f, dtype=np.float64)
    if f.ndim != 2:
        raise DataError(f"{what} must be a (N, D) array of features, got shape {f.shape}")
    if f.shape[0] < 2:
        raise DataError(f"{what} needs at least 2 examples, got {f.shape[0]}")
    if not np.isfinite(f).all():
        raise DataError(f"{what} contains NaN or inf")
    return f


def feature_stats(f) -> tuple[np.ndarray, np.ndarray]:
    """Mean (D,) and unbiased covariance (D, D) of features (N, D), float64."""
    f = _as_2d_float64(f, "features")
    return f.mean(axis=0), np.atleast_2d(np.cov(f, rowvar=False))


def frechet_distance(mu1, sigma1, mu2, sigma2, eps: float = 1e-6) -> float:
    """Frechet distance between N(mu1, sigma1) and N(mu2, sigma2).

    Args:
        mu1, mu2: (D,) means. sigma1, sigma2: (D, D) covariances (array-likes or tensors).
        eps: diagonal offset added to both covariances if sqrtm(sigma1 @ sigma2) is not finite.
    Returns: float64 ``|mu1 - mu2|^2 + Tr(sigma1) + Tr(sigma2) - 2 Tr((sigma1 sigma2)^{1/2})``.
    """
    def arr(a):
        if isinstance(a, torch.Tensor):
            a = a.detach().to("cpu", torch.float64).numpy()
        return np.asarray(a, dtype=np.float64)

    mu1, mu2 = np.atleast_1d(arr(mu1)), np.atleast_1d(arr(mu2))
    sigma1, sigma2 = np.atleast_2d(arr(sigma1)), np.atleast_2d(arr(sigma2))
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape or sigma1.shape != (mu1.shape[0],) * 2:
        raise DataError(f"mismatched Gaussian statistics: mu {mu1.shape} vs {mu2.shape}, sigma {sigma1.shape} vs {sigma2.shape}")
    diff = mu1 - mu2
    with warnings.catch_warnings():  # singular products are expected (dead features); handled below
        warnings.simplefilter("ignore", scipy.linalg.LinAlgWarning)
        covmean = scipy.linalg.sqrtm(sigma1 @ sigma2)
        if not np.isfinite(covmean).all():
            offset = np.eye(sigma1.shape[0]) * eps
            covmean = scipy.linalg.sqrtm((sigma1 + offset) @ (sigma2 + offset))
    covmean = np.real(covmean)
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * np.trace(covmean))


def fid_from_features(f1, f2) -> float:
    """FID between two feature sets (N1, D) and (N2, D) (tensors or arrays)."""
    f1 = _as_2d_float64(f1, "first feature set")
    f2 = _as_2d_float64(f2, "second feature set")
    if f1.shape[1] != f2.shape[1]:
        raise DataError(f"feature dimensions differ: {f1.shape[1]} vs {f2.shape[1]}")
    mu1, s1 = feature_stats(f1)
    mu2, s2 = feature_stats(f2)
    return frechet_distance(mu1, s1, mu2, s2)


def polynomial_mmd2_unbiased(x: torch.Tensor, y: torch.Tensor, degree: int = 3, coef0: float = 1.0) -> float:
    """Unbiased MMD^2 between equal-size sets x, y (m, d) with k(a, b) = (a.b / d + coef0)^degree."""
    m, d = x.shape
    if y.shape[0] != m:
        raise DataError(f"the unbiased KID estimator here needs equal subset sizes, got {m} and {y.shape[0]}")
    kxx = (x @ x.T / d + coef0) ** degree
    kyy = (y @ y.T / d + coef0) ** degree
    kxy = (x @ y.T / d + coef0) ** degree
    sxx = kxx.sum() - kxx.diagonal().sum()
    syy = kyy.sum() - kyy.diagonal().sum()
    return float((sxx + syy) / (m * (m - 1)) - 2.0 * kxy.sum() / (m * m))


def kid_from_features(f1, f2, num_subsets: int = 100, subset_size: int = 1000, seed: int = 0) -> tuple[float, float]:
    """KID between two feature sets: mean and std of the unbiased polynomial MMD^2 over subsets.

    Args:
        f1, f2: (N1, D), (N2, D) features (tensors or arrays).
        num_subsets: number of random subset pairs.
        subset_size: m, clipped to min(N1, N2); each subset is drawn without replacement.
        seed: seed of the ``torch.Generator`` that draws the subsets.
    Returns: (kid_mean, kid_std), float64; the std is over subsets (ddof = 0, as torch-fidelity).
    """
    a = torch.from_numpy(_as_2d_float64(f1, "first feature set"))
    b = torch.from_numpy(_as_2d_float64(f2, "second feature set"))
    if a.shape[1] != b.shape[1]:
        raise DataError(f"feature dimensions differ: {a.shape[1]} vs {b.shape[1]}")
    m = int(min(subset_size, a.shape[0], b.shape[0]))
    g = torch.Generator().manual_seed(int(seed))
    vals = np.empty(int(num_subsets), dtype=np.float64)
    for i in range(int(num_subsets)):
        ia = torch.randperm(a.shape[0], generator=g)[:m]
        ib = torch.randperm(b.shape[0], generator=g)[:m]
        vals[i] = polynomial_mmd2_unbiased(a[ia], b[ib])
    return float(vals.mean()), float(vals.std())
