"""Locating, verifying and downloading data files.

Search order for a file ``name`` of data set ``group`` (e.g. ``mnist``):

1. an explicit ``root`` (``--data-root`` on the CLI), else the ``GENZOO_DATA`` environment
   variable: the file may sit directly in it or in ``root/<group>/``;
2. the copies vendored inside the package (``genzoo/data/files``);
3. a download from the usual mirrors into ``root`` (or ``~/.cache/genzoo/<group>``).

Every file is checked against its sha256 before use; a mismatch is a DataError, never a
silent use of the wrong data.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import urllib.request
import zlib
from pathlib import Path

from ..errors import DataError

VENDORED = Path(__file__).resolve().parent / "files"

# name -> (group, sha256, [mirror urls])
KNOWN_FILES: dict[str, tuple[str, str, list[str]]] = {
    "train-images-idx3-ubyte.gz": ("mnist", "db8f937d487057fb14a9f0fbe97f0bc8d311ab41b750d41e1ff37c43b9e55e19", []),
    "train-labels-idx1-ubyte.gz": ("mnist", "51fc562b6747b666fbf6e84ce29d43c3cb5f9c388c664d43b33f02095313405a", []),
    "t10k-images-idx3-ubyte.gz": ("mnist", "cfeddb84311ecf044fc6a5b0f6ee8a24d265d4e83e388400186eb114082f4209", []),
    "t10k-labels-idx1-ubyte.gz": ("mnist", "e41c74e484045d39b462a7790a4af51301bd9b0b24f0154798d713ec68c45920", []),
    "binarized_mnist.npz": ("binarized_mnist", "7a049ae3a0d88e964af4b41bbdb14e4303595e1c5de65f8bd2455cdcebb3514b", []),
    "tinyshakespeare.txt": ("tinyshakespeare", "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed", [
        "https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt",
    ]),
    "digits.csv.gz": ("digits", "09f66e6debdee2cd2b5ae59e0d6abbb73fc2b0e0185d2e1957e9ebb51e23aa22", []),
}
# The gzip wrappers of the vendored MNIST files differ from the mirrors' (same IDX
# content), so files downloaded from a mirror are checked by the sha256 of their
# *decompressed* content instead.
MNIST_MIRRORS = [
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
    "http://yann.lecun.com/exdb/mnist/",
]
for _n in [k for k, v in KNOWN_FILES.items() if v[0] == "mnist"]:
    KNOWN_FILES[_n][2].extend(m + _n for m in MNIST_MIRRORS)
# Alternative names users may have on disk (e.g. the shared folder's input.txt).
ALIASES = {"tinyshakespeare.txt": ["input.txt"]}

_verified: set[tuple[str, int, float]] = set()


def sha256_of(path: Path, decompress: bool = False) -> str:
    h = hashlib.sha256()
    if decompress:
        import gzip

        f = gzip.open(path, "rb")
    else:
        f = open(path, "rb")
    with f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def verify(path: Path, sha256: str) -> None:
    """Raise DataError unless ``path`` has the given sha256 (cached per path/size/mtime)."""
    st = path.stat()
    key = (str(path), st.st_size, st.st_mtime)
    if key in _verified:
        return
    got = sha256_of(path)
    if got != sha256:
        raise DataError(
            f"{path} is corrupt or not the expected file (sha256 {got[:12]}..., expected {sha256[:12]}...); "
            "delete it and let genzoo fetch it again, or point --data-root/GENZOO_DATA at a good copy"
        )
    _verified.add(key)


def default_root() -> Path | None:
    env = os.environ.get("GENZOO_DATA")
    return Path(env).expanduser() if env else None


def _candidates(name: str, group: str, root: Path | None):
    names = [name] + ALIASES.get(name, [])
    if root is not None:
        for n in names:
            yield root / n
            yield root / group / n
    yield VENDORED / name


def find_file(name: str, root: str | os.PathLike | None = None, download: bool = True) -> Path:
    """Path of a known data file, verified by sha256; downloaded if missing and possible."""
    if name not in KNOWN_FILES:
        raise DataError(f"unknown data file {name!r}; known: {', '.join(KNOWN_FILES)}")
    group, sha, urls = KNOWN_FILES[name]
    root = Path(root).expanduser() if root is not None else default_root()
    for cand in _candidates(name, group, root):
        if cand.is_file():
            if group == "mnist" and cand.parent != VENDORED and sha256_of(cand) != sha:
                _verify_mnist_content(cand, name)
            else:
                verify(cand, sha)
            return cand
    if not download or not urls:
        where = f"{root}" if root is not None else "the folder given by --data-root / GENZOO_DATA"
        raise DataError(f"data file {name} not found; put it in {where} (or {where}/{group}/)")
    dest_dir = (root / group) if root is not None else Path.home() / ".cache" / "genzoo" / group
    return _download(name, group, sha, urls, dest_dir)


# sha256 of the decompressed IDX content of the four MNIST files (mirror-independent).
# Pinned here rather than computed from the vendored copies: a download only happens when
# the vendored copy is missing, so it could not serve as the reference then.
MNIST_IDX_SHA256: dict[str, str] = {
    "train-images-idx3-ubyte.gz": "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
    "train-labels-idx1-ubyte.gz": "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
    "t10k-images-idx3-ubyte.gz": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
    "t10k-labels-idx1-ubyte.gz": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
}


def _verify_mnist_content(path: Path, name: str) -> None:
    want = MNIST_IDX_SHA256[name]
    try:
        got = sha256_of(path, decompress=True)
    except (OSError, EOFError, zlib.error) as e:  # not gzip, or a corrupt/truncated stream
        raise DataError(
            f"{path} is corrupt (cannot decompress it: {e}); delete it or point --data-root/GENZOO_DATA at a good copy"
        ) from None
    if got != want:
        raise DataError(
            f"{path} does not hold the standard MNIST IDX content (decompressed sha256 {got[:12]}...); "
            "delete it or point --data-root/GENZOO_DATA at a good copy"
        )


def _download(name: str, group: str, sha: str, urls: list[str], dest_dir: Path) -> Path:
    dest_dir.mkdir(parents=True, exist_ok=True)
    dest = dest_dir / name
    errors = []
    for url in urls:
        tmp_path = None
        try:
            with urllib.request.urlopen(url, timeout=30) as r, tempfile.NamedTemporaryFile(
                dir=dest_dir, delete=False, suffix=".part"
            ) as tmp:
                tmp_path = Path(tmp.name)
                shutil.copyfileobj(r, tmp)
            if group == "mnist":
                _verify_mnist_content(tmp_path, name)
            elif sha256_of(tmp_path) != sha:
                errors.append(f"{url}: wrong sha256")
                continue
            os.replace(tmp_path, dest)
            tmp_path = None
            return dest
        except DataError as e:
            errors.append(f"{url}: {e}")
        except OSError as e:
            errors.append(f"{url}: {getattr(e, 'reason', e)}")
        finally:  # never leave a partial or rejected download behind
            if tmp_path is not None:
                tmp_path.unlink(missing_ok=True)
    raise DataError(
        f"could not download {name} (offline?); tried {len(urls)} mirror(s), last error: {errors[-1] if errors else 'none'}; "
        f"put the file in {dest_dir} or set GENZOO_DATA to a folder holding it"
    )
