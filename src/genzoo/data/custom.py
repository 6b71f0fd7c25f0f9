"""Your own data without code edits: a folder of images, or a .npy / .npz array.

``genzoo train vae --data ./my_images`` (a folder) or ``--data faces.npz`` (an array)
resolve through :func:`genzoo.data.infer_dataset_from_path` to these loaders.

Folder ("folder", option ``path``): every ``*.png``, ``*.jpg``, ``*.jpeg`` below
``path`` (case-insensitive, recursive, sorted by relative path) is opened with PIL,
converted to "L" (``channels=1``) or "RGB" (``channels=3``; the default ``channels="auto"`` keeps
colour unless every image is grey, R = G = B), centre-cropped to a square
and resized to ``image_size`` x ``image_size`` with LANCZOS (antialiased), and kept as uint8
(N, C, H, W). No labels.

Array ("array", option ``path``): ``np.load(path, allow_pickle=False)`` (pickled object
arrays are refused). For a .npz the array is ``key``, or the only array in the file, or
the first of "x", "train", "data" present; ``labels_key`` names an optional (N,) integer
label array in the same .npz. Accepted:

* uint8 images (N, H, W), (N, C, H, W) or (N, H, W, C) with C in {1, 3}: the same options
  as mnist (``binarize``, ``value_range``, ``dequantize``; see :mod:`genzoo.data.transforms`);
* float images of the same shapes with values in [0, 1]: quantised to k = round(255 x)
  and then treated as uint8 images (values outside [0, 1] are refused);
* float vectors (N, D): used as they are (float32, DataSpec kind "vector", value_range None).

Both use one deterministic split: a fixed permutation (seed 0) of the N examples;
"valid" and "test" are the *same* last ``round(valid_fraction * N)`` examples of it
(at least one when valid_fraction > 0), "train" the rest, "full" all N in file order.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..errors import ConfigError, DataError
from .base import ArrayDataset, DataSpec
from .transforms import image_dataset, prepare_static

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
ARRAY_SUFFIXES = (".npy", ".npz")
NPZ_DEFAULT_KEYS = ("x", "train", "data")


def split_indices(n: int, split: str, valid_fraction: float, seed: int = 0) -> torch.Tensor:
    """Indices of ``split`` among n examples: fixed permutation (``seed``), last ``valid_fraction`` = valid/test."""
    if split == "full":
        return torch.arange(n)
    perm = torch.from_numpy(np.random.default_rng(seed).permutation(n))
    n_valid = int(round(valid_fraction * n))
    if valid_fraction > 0 and n_valid == 0 and n > 1:
        n_valid = 1
    if split == "train":
        idx = perm[: n - n_valid]
    else:
        idx = perm[n - n_valid:]
    if idx.numel() == 0:
        raise ConfigError(
            f"the {split!r} split is empty ({n} examples, valid_fraction={valid_fraction}); "
            "use split='full', change valid_fraction, or add data"
        )
    return idx


def list_images(path: Path) -> list[Path]:
    """Every image file below ``path``, sorted by relative path."""
    files = [p for p in path.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()]
    return sorted(files, key=lambda p: p.relative_to(path).as_posix())


def _load_image(file: Path, channels: int, size: int) -> np.ndarray:
    """One image -> uint8 (C, size, size): convert, centre-crop to square, LANCZOS resize."""
    from PIL import Image

    try:
        with Image.open(file) as im:
            im.load()
            if im.mode in ("I;16", "I;16B", "I;16L", "I"):  # 16-bit grey: keep the top 8 bits
                arr = np.asarray(im, dtype=np.int64)
                im = Image.fromarray((arr >> 8 if arr.max() > 255 else arr).clip(0, 255).astype(np.uint8), "L")
            im = im.convert("L" if channels == 1 else "RGB")
            w, h = im.size
            s = min(w, h)
            if w != h:
                left, top = (w - s) // 2, (h - s) // 2
                im = im.crop((left, top, left + s, top + s))
            if s != size:
                im = im.resize((size, size), Image.LANCZOS)
            arr = np.asarray(im, dtype=np.uint8)
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
        raise DataError(f"cannot read image {file}: {e}; fix or remove the file") from None
    if arr.ndim == 2:
        arr = arr[None]
    else:
        arr = arr.transpose(2, 0, 1)
    return arr


def load_folder(split: str = "train", *, path, image_size: int = 28, channels="auto", binarize: str = "none",
                value_range=(-1.0, 1.0), dequantize: str = "none", valid_fraction: float = 0.1) -> ArrayDataset:
    """A folder of images as an ArrayDataset of uint8 (N, channels, image_size, image_size)."""
    root = Path(path).expanduser()
    if not root.exists():
        raise DataError(f"image folder {root} does not exist; pass path=DIR (or --data DIR) of an existing folder")
    if not root.is_dir():
        raise DataError(f"{root} is not a folder; for a .npy/.npz file use the 'array' data set")
    files = list_images(root)
    if not files:
        raise DataError(f"no images found in {root} (looked for {', '.join(IMAGE_SUFFIXES)} recursively); add images or fix the path")
    if channels not in ("auto", 1, 3):
        raise ConfigError(f"channels must be auto, 1 or 3, got {channels!r}")
    data = torch.from_numpy(np.stack([_load_image(f, 1 if channels == 1 else 3, image_size) for f in files]))
    if channels == "auto":
        # colour unless every image is grey (R = G = B everywhere): a folder of RGB images keeps its colour
        grey = bool((data[:, 0] == data[:, 1]).all() and (data[:, 1] == data[:, 2]).all())
        if grey:
            data = data[:, :1].contiguous()
        how = "grey: every image is" if grey else "colour: some image is not"
        how += " grey; data.channels=1 or 3 chooses"
    else:
        how = f"data.channels={channels}"
    data = prepare_static(data, 256, binarize)
    idx = split_indices(len(files), split, valid_fraction)
    ds = image_dataset("folder", data[idx].clone(), None, levels=256, binarize=binarize,
                       value_range=value_range, dequantize=dequantize)
    ds.files = [files[i] for i in idx.tolist()]
    ds.source = f"{len(files)} images from {root}, {data.shape[1]} channel{'s' if data.shape[1] > 1 else ''} ({how}), " \
                f"resized to {image_size}x{image_size} (data.image_size)"
    return ds


def _npz_pick(z, key, path: Path) -> str:
    keys = list(z.files)
    if key is not None:
        if key not in keys:
            raise DataError(f"{path} has no array {key!r}; its arrays: {', '.join(keys) or '(none)'}")
        return key
    if len(keys) == 1:
        return keys[0]
    for k in NPZ_DEFAULT_KEYS:
        if k in keys:
            return k
    raise DataError(
        f"{path} holds several arrays ({', '.join(keys)}) and none is called {', '.join(NPZ_DEFAULT_KEYS)}; "
        "choose one with key=NAME"
    )


def read_array(path, key: str | None = None, labels_key: str | None = None) -> tuple[np.ndarray, np.ndarray | None]:
    """(array, labels or None) from a .npy / .npz, never unpickling."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise DataError(f"array file {path} does not exist; pass path=FILE.npy or FILE.npz")
    suffix = path.suffix.lower()
    if suffix not in ARRAY_SUFFIXES:
        raise DataError(f"{path} is not a .npy or .npz file")
    try:
        if suffix == ".npy":
            if key is not None or labels_key is not None:
                raise ConfigError(f"key/labels_key apply to .npz files only, but {path.name} is a .npy")
            return np.load(path, allow_pickle=False), None
        with np.load(path, allow_pickle=False) as z:
            x = np.asarray(z[_npz_pick(z, key, path)])
            labels = None
            if labels_key is not None:
                if labels_key not in z.files:
                    raise DataError(f"{path} has no labels array {labels_key!r}; its arrays: {', '.join(z.files)}")
                labels = np.asarray(z[labels_key])
            return x, labels
    except ValueError as e:
        if "allow_pickle" in str(e) or "Object arrays" in str(e):
            raise DataError(f"{path} holds a pickled (object) array; genzoo never unpickles data: save a numeric array instead") from None
        raise DataError(f"cannot read {path}: {e}") from None
    except (OSError, EOFError) as e:
        raise DataError(f"cannot read {path}: {e}") from None


ACCEPTED_SHAPES = ("uint8 (or float in [0, 1]) images (N, H, W), (N, C, H, W) or (N, H, W, C) with C in {1, 3}, "
                   "or float vectors (N, D)")


def load_array(split: str = "train", *, path, key: str | None = None, labels_key: str | None = None,
               binarize: str = "none", value_range=(-1.0, 1.0), dequantize: str = "none",
               valid_fraction: float = 0.1, given: frozenset = frozenset()) -> ArrayDataset:
    """An array file as an ArrayDataset: uint8 images with the image options, or float vectors.

    ``given`` names the options the user set explicitly; image-only options set for vector
    data are an error rather than silently ignored.
    """
    x, labels = read_array(path, key, labels_key)
    if np.issubdtype(x.dtype, np.floating) and x.ndim in (3, 4) and x.size:
        # float images: accepted in [0, 1] (the usual convention), quantised to the 256 levels
        # k = round(255 x) so that every image option (binarize, dequantize, ranges) applies
        if not np.isfinite(x).all():
            raise DataError(f"{path}: the array holds NaN or inf values")
        lo, hi = float(x.min()), float(x.max())
        if lo < 0.0 or hi > 1.0:
            raise DataError(f"{path}: float images must lie in [0, 1] (got values in [{lo:.3g}, {hi:.3g}]); "
                            "rescale them, or save uint8 levels 0..255")
        x = np.rint(x * 255.0).astype(np.uint8)
    if x.dtype == np.uint8 and x.ndim == 3 and min(x.shape) > 0:
        images = x[:, None]
    elif x.dtype == np.uint8 and x.ndim == 4 and x.shape[1] in (1, 3):
        images = x
    elif x.dtype == np.uint8 and x.ndim == 4 and x.shape[3] in (1, 3):
        images = x.transpose(0, 3, 1, 2)
    elif np.issubdtype(x.dtype, np.floating) and x.ndim == 2:
        images = None
    else:
        raise DataError(f"{path}: got a {x.dtype} array of shape {tuple(x.shape)}; accepted: {ACCEPTED_SHAPES}")
    n = x.shape[0]
    if n == 0:
        raise DataError(f"{path}: the array holds no examples (shape {tuple(x.shape)})")
    y = None
    num_classes = None
    if labels is not None:
        if labels.shape != (n,) or not np.issubdtype(labels.dtype, np.integer):
            raise DataError(f"{path}: labels {labels_key!r} must be integers of shape ({n},), got {labels.dtype} {tuple(labels.shape)}")
        y = torch.from_numpy(labels.astype(np.int64))
        num_classes = int(y.max()) + 1
    idx = split_indices(n, split, valid_fraction)
    ys = y[idx] if y is not None else None
    if images is None:
        bad = [k for k, v in (("binarize", binarize), ("dequantize", dequantize)) if v != "none"]
        bad += ["value_range"] if "value_range" in given else []
        if bad:
            raise ConfigError(f"{', '.join(bad)} apply to uint8 image arrays only; {path} holds float vectors {tuple(x.shape)}")
        data = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))[idx].clone()
        if not torch.isfinite(data).all():
            raise DataError(f"{path}: the array holds NaN or inf values")
        spec = DataSpec(name="array", kind="vector", shape=(int(x.shape[1]),), value_range=None, discrete=None,
                        num_classes=num_classes)
        return ArrayDataset(data, ys, spec, None)
    data = prepare_static(torch.from_numpy(np.ascontiguousarray(images)), 256, binarize)
    return image_dataset("array", data[idx].clone(), ys, levels=256, binarize=binarize, value_range=value_range,
                         dequantize=dequantize, num_classes=num_classes)
