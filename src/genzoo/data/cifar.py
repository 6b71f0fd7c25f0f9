"""CIFAR-10 (Krizhevsky 2009) from its official binary version, read without pickle.

The binary version (``cifar-10-binary.tar.gz``, md5 c32a1d4ab5d03f1284b67883e8d87530) holds
``cifar-10-batches-bin/data_batch_{1..5}.bin`` (10,000 records each: the 50,000 training images) and
``test_batch.bin`` (10,000 test images). A record is 3,073 bytes: one label byte (0..9), then the
1,024 red, 1,024 green and 1,024 blue bytes of a 32x32 image, row by row. That is (C, H, W) order as
genzoo keeps images, so a file is ``np.frombuffer(...).reshape(-1, 3073)`` and two slices.

Where the files are looked for, in order (the first that exists is used):

1. ``root`` (``--data-root``) or ``$GENZOO_DATA``, and its ``cifar10/`` subfolder: the six ``.bin``
   files directly, or a ``cifar-10-batches-bin/`` folder holding them, or an archive holding them
   (``cifar-10-binary.tar.gz`` or any ``*.tar``, ``*.tar.gz``, ``*.tgz``, ``*.tar.xz``), read in memory
   without extracting it;
2. ``~/.cache/genzoo/cifar10/``, the same way;
3. online: a download of the official archive into that cache, checked by its md5 before use.

An archive named ``cifar-10-binary.tar.gz`` must have the official md5. Any other source is read in
the same layout and checked record by record (sizes, label bytes), and the data set says where its
records came from (``spec.source``), so that a figure made on a re-encoded copy (e.g. one decoded
from JPEG) is never mistaken for one on the official data.
"""
from __future__ import annotations

import functools
import hashlib
import os
import tarfile
from pathlib import Path

import numpy as np

from ..errors import DataError

URL = "https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz"
ARCHIVE = "cifar-10-binary.tar.gz"
MD5 = "c32a1d4ab5d03f1284b67883e8d87530"
TRAIN_FILES = tuple(f"data_batch_{i}.bin" for i in range(1, 6))
TEST_FILE = "test_batch.bin"
RECORD = 3073
CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
_ARCHIVE_SUFFIXES = (".tar", ".tar.gz", ".tgz", ".tar.xz")


def md5_of(path: Path) -> str:
    st = Path(path).stat()
    return _md5_cached(str(path), st.st_size, st.st_mtime)


@functools.lru_cache(maxsize=8)
def _md5_cached(path: str, size: int, mtime: float) -> str:
    h = hashlib.md5()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def parse_records(raw: bytes, where: str) -> tuple[np.ndarray, np.ndarray]:
    """(images (N, 3, 32, 32) uint8, labels (N,) int64) from the bytes of one .bin file."""
    if len(raw) == 0 or len(raw) % RECORD:
        raise DataError(f"{where}: {len(raw)} bytes is not a whole number of {RECORD}-byte CIFAR-10 records "
                        "(a label byte, then 3,072 pixel bytes); is it the binary version of CIFAR-10?")
    rec = np.frombuffer(raw, dtype=np.uint8).reshape(-1, RECORD)
    labels = rec[:, 0].astype(np.int64)
    if labels.max() > 9:
        raise DataError(f"{where}: label byte {int(labels.max())} outside 0..9; not a CIFAR-10 binary batch file")
    return rec[:, 1:].reshape(-1, 3, 32, 32).copy(), labels


def _dirs(root: Path | None) -> list[Path]:
    out = []
    if root is not None:
        out += [root, root / "cifar10"]
    out.append(cache_dir())
    return out


def cache_dir() -> Path:
    return Path.home() / ".cache" / "genzoo" / "cifar10"


def _folder_source(d: Path) -> Path | None:
    for cand in (d, d / "cifar-10-batches-bin"):
        if all((cand / f).is_file() for f in (*TRAIN_FILES, TEST_FILE)):
            return cand
    return None


def _archives(d: Path) -> list[Path]:
    if not d.is_dir():
        return []
    return sorted(p for p in d.iterdir() if p.is_file() and p.name.endswith(_ARCHIVE_SUFFIXES))


def locate(root=None, download: bool = True) -> Path:
    """The folder or archive that holds the six CIFAR-10 batch files (see the module docstring)."""
    from .files import default_root

    root = Path(root).expanduser() if root is not None else default_root()
    for d in _dirs(root):
        folder = _folder_source(d)
        if folder is not None:
            return folder
        for a in _archives(d):
            if a.name == ARCHIVE and md5_of(a) != MD5:
                raise DataError(f"{a} is not the official CIFAR-10 binary archive (md5 {md5_of(a)[:12]}..., expected "
                                f"{MD5[:12]}...); delete it and let genzoo download it again, or rename a copy you "
                                "trust to another name")
            return a
    if not download:
        where = f"{root} (or {root}/cifar10/)" if root is not None else "the folder given by --data-root / GENZOO_DATA"
        raise DataError(f"CIFAR-10 not found; put {ARCHIVE} (or its cifar-10-batches-bin/ folder) in {where}")
    return _download(cache_dir())


def _download(dest_dir: Path) -> Path:
    import tempfile
    import urllib.request

    dest_dir.mkdir(parents=True, exist_ok=True)
    dest = dest_dir / ARCHIVE
    fd, tmp = tempfile.mkstemp(dir=dest_dir, prefix=".download-")
    os.close(fd)
    try:
        try:
            with urllib.request.urlopen(URL, timeout=60) as r, open(tmp, "wb") as f:
                while chunk := r.read(1 << 20):
                    f.write(chunk)
        except OSError as e:
            raise DataError(f"could not download CIFAR-10 from {URL} ({e}); offline, put {ARCHIVE} in --data-root / "
                            "GENZOO_DATA") from None
        got = md5_of(Path(tmp))
        if got != MD5:
            raise DataError(f"the CIFAR-10 download from {URL} has md5 {got[:12]}..., expected {MD5[:12]}...; try again")
        os.replace(tmp, dest)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return dest


def _read_source(src: Path) -> dict[str, bytes]:
    if src.is_dir():
        return {f: (src / f).read_bytes() for f in (*TRAIN_FILES, TEST_FILE)}
    out: dict[str, bytes] = {}
    try:
        with tarfile.open(src, "r:*") as tar:
            for m in tar.getmembers():
                base = m.name.rsplit("/", 1)[-1]
                if m.isfile() and base in (*TRAIN_FILES, TEST_FILE) and base not in out:
                    out[base] = tar.extractfile(m).read()
    except (tarfile.TarError, OSError, EOFError) as e:
        raise DataError(f"{src} cannot be read as a tar archive ({e}); give the CIFAR-10 binary archive or its folder") from None
    missing = [f for f in (*TRAIN_FILES, TEST_FILE) if f not in out]
    if missing:
        raise DataError(f"{src} holds no {', '.join(missing)}: not the binary version of CIFAR-10 (cifar-10-binary.tar.gz)")
    return out


@functools.lru_cache(maxsize=1)
def _arrays_cached(src: str, size: int, mtime: float):
    raw = _read_source(Path(src))
    train = [parse_records(raw[f], f"{src}:{f}") for f in TRAIN_FILES]
    x_train = np.concatenate([t[0] for t in train])
    y_train = np.concatenate([t[1] for t in train])
    x_test, y_test = parse_records(raw[TEST_FILE], f"{src}:{TEST_FILE}")
    for a in (x_train, y_train, x_test, y_test):
        a.flags.writeable = False
    return x_train, y_train, x_test, y_test


def cifar10_arrays(root=None, download: bool = True):
    """Read-only (x_train (50000, 3, 32, 32), y_train, x_test (10000, ...), y_test, source) of CIFAR-10."""
    src = locate(root, download)
    st = src.stat()
    return (*_arrays_cached(str(src), st.st_size, st.st_mtime), src)


def source_description(src: Path) -> str:
    """'official' for the md5-checked archive, else the path the records came from."""
    if src.is_file() and src.name == ARCHIVE:
        return "official binary archive (md5 checked)"
    return f"records read from {src} (not checked against the official archive)"
