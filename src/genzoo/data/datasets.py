"""The data set registry: ``load_dataset(name, split, root=..., **options)``.

Every data set has a fixed set of options with defaults (:func:`dataset_options`); an
unknown name, split or option, or a bad option value, is a :class:`ConfigError` that
lists the valid choices. Option values may come from Python, YAML (lists for
``value_range``) or the command line (strings such as ``"0,1"`` or ``"3"``); ``None``
means the default.

MNIST ("mnist"; LeCun et al. 1998), 1x28x28 grey, 10 classes, from the IDX files:

* splits: "train" = the first 50,000 of the 60k training file, "valid" = its last
  ``valid_size`` (default 10,000), "test" = the 10k test file, "full" = all 60k;
* ``binarize="none"``, ``dequantize="none"``: ``x = lo + (hi - lo) * k / 255`` for grey level
  k in 0..255 and ``value_range=(lo, hi)`` (default (-1, 1); (0, 1) also common): a grid of
  256 values including both ends (the PixelCNN++ discretised-logistic convention);
  DataSpec ``discrete=None, dequantization=None, value_range=(lo, hi), levels=256``;
* ``dequantize="uniform"``: ``x = lo + (hi - lo) * (k + u) / 256``, ``u ~ U[0, 1)`` drawn from
  the batch's generator; DataSpec ``dequantization="uniform"``; bits/dim then adds
  ``log2(256 / (hi - lo))`` (8 for [0, 1], 7 for [-1, 1]; :mod:`genzoo.units`);
* ``binarize="dynamic"``: ``x ~ Bernoulli(k / 255)`` drawn from the generator for every
  batch (fresh each epoch because the trainer seeds the generator by step), values
  {0., 1.}; DataSpec ``discrete="binary", value_range=None, binarization="dynamic"``;
* ``binarize="static"``: the fixed binarised MNIST of Larochelle & Murray (2011) from
  ``binarized_mnist.npz`` with its own 50k/10k/10k train/valid/test ("full" = train +
  valid), no labels (the file has none); ``binarization="static"``. Alias:
  "binarized_mnist". Static and dynamic NLLs differ by 1-2 nats: always name which.

Binarising excludes ``dequantize`` and ``value_range`` (the values are {0, 1}).

Digits ("digits"): scikit-learn's 8x8 digits (1797 images, grey levels 0..16, 10
classes), 1x8x8, ``levels=17``, the same options with 16 in place of 255 and 17 in
place of 256; static binarisation is one fixed Bernoulli(v / 16) draw with seed 0.
Splits from a fixed permutation (numpy ``default_rng(0)``): train 1297, valid 250, test
250, "full" all 1797 in file order.

CIFAR-10 ("cifar10"; Krizhevsky 2009), 3x32x32 colour, 10 classes, from the official binary
version (:mod:`genzoo.data.cifar`: where it is looked for, the md5 check, the record layout):
"train" = the first 45,000 of the 50,000 training records, "valid" = the last ``valid_size``
(default 5,000), "test" = the 10,000 test records, "full" = all 50,000 training records; the
grey-image options of MNIST without binarisation (``value_range``, ``dequantize``: bits/dim over
3,072 dimensions adds the same 7 or 8 bits). ``dataset.source`` says where the records came from.

Toys (:mod:`genzoo.data.toys`), text (:mod:`genzoo.data.text`) and your own folders and
arrays (:mod:`genzoo.data.custom`) are documented in their modules.
"""
from __future__ import annotations

import functools
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from ..errors import ConfigError, DataError, did_you_mean
from .base import ArrayDataset
from .files import find_file
from .transforms import BINARIZE_CHOICES, DEQUANTIZE_CHOICES, image_dataset, parse_value_range, prepare_static

SPLITS_4 = ("train", "valid", "test", "full")
SPLITS_3 = ("train", "valid", "test")


@dataclass(frozen=True)
class DatasetEntry:
    """One registered data set.

    Attributes:
        name: the name given to :func:`load_dataset`.
        description: one line for ``genzoo list``.
        options: option -> default.
        splits: the valid split names.
        loader: ``loader(split, root=..., given=..., **options) -> ArrayDataset``; ``given``
            is the frozenset of options the user set explicitly.
        choices: option -> tuple of its valid values (for categorical options).
        required: options that must be given (default None).
        fixed: options an alias pins (e.g. binarized_mnist: binarize="static").
    """

    name: str
    description: str
    options: dict
    splits: tuple
    loader: Callable
    choices: dict = field(default_factory=dict)
    required: tuple = ()
    fixed: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"description": self.description, "options": dict(self.options), "splits": list(self.splits),
                "choices": {k: list(v) for k, v in self.choices.items()}, "required": list(self.required)}

    def usage(self) -> str:
        """e.g. 'mnist [binarize=none|dynamic|static value_range=(-1.0, 1.0) ...]'."""
        parts = []
        for k, v in self.options.items():
            if k in self.choices:
                parts.append(f"{k}={'|'.join(str(c) for c in self.choices[k])}")
            else:
                parts.append(f"{k}={'REQUIRED' if k in self.required else v}")
        return f"{self.name} " + " ".join(parts) if parts else self.name


_DATASETS: dict[str, DatasetEntry] = {}

# value checks: option -> (predicate, description of the valid values)
_CHECKS = {
    "valid_size": (lambda v: 1 <= v <= 59999, "an integer in 1..59999"),
    "n": (lambda v: v >= 1, "a positive integer"),
    "n_eval": (lambda v: v >= 1, "a positive integer"),
    "block_size": (lambda v: v >= 1, "a positive integer"),
    "image_size": (lambda v: v >= 1, "a positive integer"),
    "valid_fraction": (lambda v: 0.0 <= v < 1.0, "a number in [0, 1)"),
}
_STR_OPTIONS = {"path", "key", "labels_key"}


def register_dataset(name: str, loader: Callable, *, description: str, options: dict, splits=SPLITS_4,
                     choices: dict | None = None, required=(), fixed: dict | None = None) -> DatasetEntry:
    """Add a data set to the registry (see :class:`DatasetEntry` for the loader's signature)."""
    entry = DatasetEntry(name, description, dict(options), tuple(splits), loader, dict(choices or {}),
                         tuple(required), dict(fixed or {}))
    _DATASETS[name] = entry
    return entry


def list_datasets() -> dict[str, DatasetEntry]:
    """name -> :class:`DatasetEntry` (``.description``, ``.options`` with defaults, ``.splits``), in registry order."""
    return dict(_DATASETS)


def get_dataset_entry(name: str) -> DatasetEntry:
    if name not in _DATASETS:
        raise ConfigError(
            f"unknown data set {name!r}{did_you_mean(name, _DATASETS)}; valid data sets: {', '.join(_DATASETS)}"
        )
    return _DATASETS[name]


def dataset_options(name: str) -> dict:
    """Option -> default of data set ``name`` (ConfigError listing the data sets if unknown)."""
    return dict(get_dataset_entry(name).options)


def _coerce(entry: DatasetEntry, key: str, value):
    """Check and convert one option value; ConfigError naming the valid values."""
    default = entry.options[key]
    where = f"option {key!r} of data set {entry.name!r}"
    if key == "value_range":
        try:
            return parse_value_range(value)
        except ConfigError as e:
            raise ConfigError(f"{where}: {e}") from None
    if key == "channels":  # "auto" or a number of channels, from Python (3), YAML (3) or the CLI ("3", "auto")
        out = str(value).strip().lower() if not isinstance(value, bool) else value
        out = int(out) if isinstance(out, str) and out.isdigit() else out
        if out not in entry.choices.get(key, (out,)):
            raise ConfigError(f"bad value for {where}: {value!r}; valid values: {', '.join(map(str, entry.choices[key]))}")
        return out
    if key in _STR_OPTIONS:
        if isinstance(value, (str, os.PathLike)):
            return os.fspath(value)
        raise ConfigError(f"bad value for {where}: {value!r}; expected a string")
    out = value
    try:
        if isinstance(value, bool):
            raise ValueError
        if isinstance(default, int):
            if isinstance(value, float) and not value.is_integer():
                raise ValueError
            out = int(value)
        elif isinstance(default, float):
            out = float(value)
        elif isinstance(default, str):
            if not isinstance(value, str):
                raise ValueError
            out = value.strip().lower()
    except (TypeError, ValueError):
        valid = "one of " + ", ".join(map(str, entry.choices[key])) if key in entry.choices else f"{type(default).__name__}, like {default!r}"
        raise ConfigError(f"bad value for {where}: {value!r}; expected {valid}") from None
    if key in entry.choices and out not in entry.choices[key]:
        raise ConfigError(
            f"bad value for {where}: {value!r}{did_you_mean(out, entry.choices[key])}; "
            f"valid values: {', '.join(map(str, entry.choices[key]))}"
        )
    if key in _CHECKS and not _CHECKS[key][0](out):
        raise ConfigError(f"bad value for {where}: {value!r}; expected {_CHECKS[key][1]}")
    return out


def resolve_options(name: str, options: dict) -> tuple[dict, frozenset]:
    """(all options with defaults filled and values checked, the set the user gave)."""
    entry = get_dataset_entry(name)
    out = dict(entry.options)
    given = set()
    for k, v in options.items():
        if k in entry.fixed:
            if v is not None and v != entry.fixed[k]:
                raise ConfigError(f"data set {name!r} always has {k}={entry.fixed[k]!r}; got {k}={v!r}")
            continue
        if k not in entry.options:
            valid = ", ".join(entry.options) or "(none)"
            raise ConfigError(f"unknown option {k!r} for data set {name!r}{did_you_mean(k, entry.options)}; valid options: {valid}")
        if v is None:
            continue
        out[k] = _coerce(entry, k, v)
        given.add(k)
    for k in entry.required:
        if out.get(k) is None:
            raise ConfigError(f"data set {name!r} needs the option {k}=...; e.g. load_dataset({name!r}, {k}='...') or --data PATH")
    out.update(entry.fixed)
    if "binarize" in out and out["binarize"] != "none":
        if out.get("dequantize", "none") != "none":
            raise ConfigError(
                f"binarize={out['binarize']!r} gives {{0, 1}} pixels and cannot be combined with dequantize={out['dequantize']!r}; "
                "set dequantize=none or binarize=none"
            )
        if "value_range" in given:
            raise ConfigError(f"value_range has no effect with binarize={out['binarize']!r} (pixels are {{0, 1}}); drop value_range")
    return out, frozenset(given)


def load_dataset(name: str, split: str = "train", *, root: str | os.PathLike | None = None, **options) -> ArrayDataset:
    """Load data set ``name``'s ``split`` as an :class:`~genzoo.data.base.ArrayDataset`.

    Args:
        name: a registered data set (see :func:`list_datasets`).
        split: one of the data set's splits (usually "train", "valid", "test", "full").
        root: folder holding the data files (else GENZOO_DATA, then the vendored copies,
            then a download).
        **options: data-set options (see :func:`dataset_options`).
    Returns:
        a data set whose ``get_batch(indices, generator)`` gives x float32 (B, *spec.shape)
        (int64 for text) and y int64 (B,) or None.
    """
    entry = get_dataset_entry(name)
    if split not in entry.splits:
        raise ConfigError(
            f"unknown split {split!r} for data set {name!r}{did_you_mean(split, entry.splits)}; valid splits: {', '.join(entry.splits)}"
        )
    opts, given = resolve_options(name, options)
    return entry.loader(split, root=root, given=given, **opts)


def infer_dataset_from_path(path: str | os.PathLike) -> tuple[str, dict]:
    """A path given as ``--data``: a folder -> ("folder", {"path": ...}); .npy/.npz -> ("array", {"path": ...})."""
    p = Path(path).expanduser()
    if p.is_dir():
        return "folder", {"path": str(p)}
    if p.suffix.lower() in (".npy", ".npz"):
        if not p.is_file():
            raise DataError(f"array file {p} does not exist")
        return "array", {"path": str(p)}
    if not p.exists():
        raise DataError(f"{p} does not exist; give a folder of images or a .npy/.npz file (or a data set name: see `genzoo list`)")
    raise DataError(f"cannot tell the data set of {p}: give a folder of images or a .npy/.npz file")


# ---------------------------------------------------------------- MNIST and digits


@functools.lru_cache(maxsize=2)
def _mnist_cached(train: bool, key: tuple) -> tuple[np.ndarray, np.ndarray]:
    from .mnist import read_idx

    images, labels = read_idx(key[0][0]), read_idx(key[1][0]).astype(np.int64)
    if images.shape[0] != labels.shape[0] or images.shape[1:] != (28, 28):
        raise DataError(f"MNIST files disagree: images {images.shape}, labels {labels.shape}")
    images.flags.writeable = False
    labels.flags.writeable = False
    return images, labels


def mnist_arrays(train: bool, root=None) -> tuple[np.ndarray, np.ndarray]:
    """Read-only (N, 28, 28) uint8 images and (N,) int64 labels of the MNIST train/test file (cached)."""
    prefix = "train" if train else "t10k"
    paths = [find_file(f"{prefix}-images-idx3-ubyte.gz", root), find_file(f"{prefix}-labels-idx1-ubyte.gz", root)]
    key = tuple((str(p), p.stat().st_size, p.stat().st_mtime) for p in paths)
    return _mnist_cached(train, key)


def _load_mnist(split, *, root, given, binarize, value_range, dequantize, valid_size, name="mnist"):
    if binarize == "static":
        if "valid_size" in given and valid_size != 10000:
            raise ConfigError("valid_size does not apply to the static binarised MNIST (its file fixes 50k/10k/10k); drop it")
        from .mnist import load_binarized_mnist_arrays

        arrs = load_binarized_mnist_arrays(root)
        flat = np.concatenate([arrs["train"], arrs["valid"]]) if split == "full" else arrs[split]
        data = torch.from_numpy(np.ascontiguousarray(flat.reshape(-1, 1, 28, 28)))
        return image_dataset(name, data, None, levels=2, binarize="static")
    images, labels = mnist_arrays(split != "test", root)
    n = images.shape[0]
    sl = {"train": slice(0, n - valid_size), "valid": slice(n - valid_size, n)}.get(split, slice(0, n))
    data = torch.from_numpy(images[sl].copy()).unsqueeze(1)
    y = torch.from_numpy(labels[sl].copy())
    return image_dataset(name, data, y, levels=256, binarize=binarize, value_range=value_range,
                         dequantize=dequantize, num_classes=10)


@functools.lru_cache(maxsize=2)
def _digits_cached(path: str, size: int, mtime: float) -> np.ndarray:
    arr = np.loadtxt(path, delimiter=",", dtype=np.float64)
    if arr.ndim != 2 or arr.shape[1] != 65:
        raise DataError(f"{path}: expected rows of 64 pixels and a label, got shape {arr.shape}")
    if arr[:, :64].min() < 0 or arr[:, :64].max() > 16 or (arr != np.round(arr)).any():
        raise DataError(f"{path}: pixel values must be integers in 0..16")
    arr = arr.astype(np.int64)
    arr.flags.writeable = False
    return arr


DIGITS_SPLIT_SIZES = {"train": 1297, "valid": 250, "test": 250}


def _load_digits(split, *, root, given, binarize, value_range, dequantize):
    path = find_file("digits.csv.gz", root)
    st = path.stat()
    arr = _digits_cached(str(path), st.st_size, st.st_mtime)
    n = arr.shape[0]
    images = torch.from_numpy(arr[:, :64].astype(np.uint8).reshape(n, 1, 8, 8))
    labels = torch.from_numpy(arr[:, 64].copy())
    images = prepare_static(images, 17, binarize, seed=0)
    if split == "full":
        idx = torch.arange(n)
    else:
        perm = torch.from_numpy(np.random.default_rng(0).permutation(n))
        a = DIGITS_SPLIT_SIZES["train"]
        b = a + DIGITS_SPLIT_SIZES["valid"]
        idx = {"train": perm[:a], "valid": perm[a:b], "test": perm[b:]}[split]
    return image_dataset("digits", images[idx].clone(), labels[idx].clone(), levels=17, binarize=binarize,
                         value_range=value_range, dequantize=dequantize, num_classes=10)


def _load_cifar10(split, *, root, given, value_range, dequantize, valid_size):
    from .cifar import cifar10_arrays, source_description

    x_train, y_train, x_test, y_test, src = cifar10_arrays(root)
    n = x_train.shape[0]
    if split in ("train", "valid") and not 0 < valid_size < n:
        raise ConfigError(f"cifar10: valid_size must be between 1 and {n - 1}, got {valid_size}")
    if split == "test":
        x, y = x_test, y_test
    else:
        sl = {"train": slice(0, n - valid_size), "valid": slice(n - valid_size, n)}.get(split, slice(0, n))
        x, y = x_train[sl], y_train[sl]
    ds = image_dataset("cifar10", torch.from_numpy(x.copy()), torch.from_numpy(y.copy()), levels=256,
                       value_range=value_range, dequantize=dequantize, num_classes=10)
    ds.source = source_description(src)
    return ds


# ---------------------------------------------------------------- registry

_IMAGE_OPTIONS = {"binarize": "none", "value_range": (-1.0, 1.0), "dequantize": "none"}
_IMAGE_CHOICES = {"binarize": BINARIZE_CHOICES, "dequantize": DEQUANTIZE_CHOICES}


def _register_all() -> None:
    from . import custom, text, toys

    register_dataset(
        "mnist", _load_mnist, options={**_IMAGE_OPTIONS, "valid_size": 10000}, choices=_IMAGE_CHOICES,
        description="MNIST digits 1x28x28, 10 classes; train 50k / valid 10k / test 10k; binarize, dequantize, value_range",
    )
    register_dataset(
        "binarized_mnist", functools.partial(_load_mnist, name="binarized_mnist", value_range=None, dequantize="none",
                                             valid_size=10000),
        options={}, fixed={"binarize": "static"},
        description="static binarised MNIST (Larochelle & Murray 2011), {0,1} 1x28x28, 50k/10k/10k, no labels",
    )
    register_dataset(
        "cifar10", _load_cifar10,
        options={"value_range": (-1.0, 1.0), "dequantize": "none", "valid_size": 5000},
        choices={"dequantize": DEQUANTIZE_CHOICES},
        description="CIFAR-10 3x32x32 colour, 10 classes, from the official binary version (--data-root / GENZOO_DATA, "
                    "else downloaded, md5 checked); train 45k / valid 5k / test 10k; dequantize, value_range",
    )
    register_dataset(
        "digits", _load_digits, options=dict(_IMAGE_OPTIONS), choices=_IMAGE_CHOICES,
        description="scikit-learn 8x8 digits, 1x8x8, 17 grey levels, 10 classes; 1297/250/250",
    )
    for tname in toys.TOYS:
        register_dataset(
            tname, functools.partial(_load_toy, tname), options={"n": 20000, "n_eval": 5000, "seed": 0},
            splits=SPLITS_3, description=f"{'8' if tname == 'mixture8d' else '2'}-D toy: {toys.TOY_DESCRIPTIONS[tname]}",
        )
    register_dataset(
        "shakespeare", _load_text, options={"block_size": 256},
        description="tiny shakespeare, 65 characters; first 90% train, last 10% valid (= test)",
    )
    register_dataset(
        "folder", _load_folder,
        options={"path": None, "image_size": 28, "channels": "auto", **_IMAGE_OPTIONS, "valid_fraction": 0.1},
        choices={**_IMAGE_CHOICES, "channels": ("auto", 1, 3)}, required=("path",),
        description="your images: every PNG/JPEG below path=DIR, centre-cropped and resized to image_size",
    )
    register_dataset(
        "array", _load_array,
        options={"path": None, "key": None, "labels_key": None, **_IMAGE_OPTIONS, "valid_fraction": 0.1},
        choices=_IMAGE_CHOICES, required=("path",),
        description="your array: path=FILE.npy/.npz of uint8 images (N,H,W[,C]) / (N,C,H,W) or float vectors (N,D)",
    )
    register_dataset(
        "pairs", _load_pairs, options={"path": None}, required=("path",),
        description="reflow pairs (x0, z) written by `genzoo reflow RUN`: train = the pairs; other splits = the source data's",
    )


def _load_pairs(split, *, root, given, path):
    """The reflow pairs file: the train split holds (x_0, z) pairs (z in the label slot; a
    ``coupling=paired`` Diffusion reads it as the noise); every other split is the split of the
    data the pairs were made from, so evaluation is against real data."""
    from .base import ArrayDataset, DataSpec
    from .pairs import load_pairs

    x, z, source, spec = load_pairs(path)
    if split != "train":
        opts = {k: v for k, v in source.items() if k not in ("name", "root")}
        return load_dataset(source["name"], split, root=source.get("root", root), **opts)
    spec = dict(spec)
    spec["shape"] = tuple(spec["shape"])
    spec["value_range"] = tuple(spec["value_range"]) if spec["value_range"] is not None else None
    spec["num_classes"] = None
    return ArrayDataset(x, z, DataSpec(**spec))


def _load_toy(tname, split, *, root, given, n, n_eval, seed):
    from .toys import load_toy

    return load_toy(tname, split, n=n, n_eval=n_eval, seed=seed)


def _load_text(split, *, root, given, block_size):
    from .text import load_shakespeare

    return load_shakespeare(split, root=root, block_size=block_size)


def _load_folder(split, *, root, given, **opts):
    from .custom import load_folder

    return load_folder(split, **opts)


def _load_array(split, *, root, given, **opts):
    from .custom import load_array

    return load_array(split, given=given, **opts)


_register_all()
