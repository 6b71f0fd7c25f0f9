"""MNIST (LeCun, Cortes & Burges) from the standard IDX files, and the static binarised
MNIST of the likelihood literature (Larochelle & Murray 2011; 50k/10k/10k).
"""
from __future__ import annotations

import gzip
import os

import numpy as np

from ..errors import DataError
from .files import find_file

_IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path) -> np.ndarray:
    """Parse an IDX file (optionally gzipped) into a numpy array."""
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "rb") as f:
        data = f.read()
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in _IDX_DTYPES:
        raise DataError(f"{path} is not an IDX file (bad magic number)")
    ndim = data[3]
    dims = [int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    dtype = np.dtype(_IDX_DTYPES[data[2]])
    offset = 4 + 4 * ndim
    expected = int(np.prod(dims)) * dtype.itemsize
    if len(data) - offset != expected:
        raise DataError(f"{path} is truncated: {len(data) - offset} bytes of data, expected {expected}")
    return np.frombuffer(data, dtype=dtype, offset=offset).reshape(dims).astype(dtype.newbyteorder("="))


def load_mnist_arrays(train: bool, root: str | os.PathLike | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Images (N, 28, 28) uint8 in 0..255 and labels (N,) int64 of the MNIST train (60k) or test (10k) set."""
    prefix = "train" if train else "t10k"
    images = read_idx(find_file(f"{prefix}-images-idx3-ubyte.gz", root))
    labels = read_idx(find_file(f"{prefix}-labels-idx1-ubyte.gz", root)).astype(np.int64)
    if images.shape[0] != labels.shape[0] or images.shape[1:] != (28, 28):
        raise DataError(f"MNIST {prefix} files disagree: images {images.shape}, labels {labels.shape}")
    return images, labels


def load_binarized_mnist_arrays(root: str | os.PathLike | None = None) -> dict[str, np.ndarray]:
    """The static binarised MNIST: {'train': (50000, 784), 'valid': (10000, 784), 'test': (10000, 784)} uint8 in {0, 1}."""
    path = find_file("binarized_mnist.npz", root)
    with np.load(path, allow_pickle=False) as z:
        out = {k: np.asarray(z[k], dtype=np.uint8) for k in ("train", "valid", "test")}
    return out
