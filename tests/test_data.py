"""The data layer (genzoo.data): vendored files and their checks, MNIST in every mode,
digits, 2-D toys, tiny shakespeare, user folders / arrays, and the registry's errors.

Everything here is offline: downloads are monkeypatched, never attempted for real.
"""
from __future__ import annotations

import gzip
import io
import math
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import torch

from genzoo.data import (
    TOY_LOG_PROB,
    TOYS,
    ArrayDataset,
    dataset_options,
    infer_dataset_from_path,
    list_datasets,
    load_dataset,
)
from genzoo.data import files as gfiles
from genzoo.data.text import TextDataset
from genzoo.errors import ConfigError, DataError, GenzooError

MNIST_FILES = [n for n, v in gfiles.KNOWN_FILES.items() if v[0] == "mnist"]
SHIPPED = gfiles.VENDORED  # the real vendored folder (some tests hide it)
SHAKESPEARE_CHARS = 1_115_394


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.fixture(autouse=True)
def _no_env_root(monkeypatch):
    """Tests see only the roots they set themselves."""
    monkeypatch.delenv("GENZOO_DATA", raising=False)


@pytest.fixture
def offline(monkeypatch):
    """urlopen that fails like a machine without network; records the URLs tried."""
    tried = []

    def urlopen(url, timeout=None):
        tried.append(url)
        raise urllib.error.URLError("network is unreachable (test)")

    monkeypatch.setattr(urllib.request, "urlopen", urlopen)
    return tried


@pytest.fixture
def no_vendored(tmp_path, monkeypatch):
    """Pretend the package ships no data files."""
    empty = tmp_path / "no_vendored"
    empty.mkdir()
    monkeypatch.setattr(gfiles, "VENDORED", empty)
    return empty


# ---------------------------------------------------------------- vendored files


@pytest.mark.parametrize("name", sorted(gfiles.KNOWN_FILES))
def test_vendored_file_sha256(name, tmp_path):
    group, sha, _ = gfiles.KNOWN_FILES[name]
    path = gfiles.find_file(name, root=tmp_path, download=False)  # empty root -> vendored copy
    assert path == gfiles.VENDORED / name
    assert gfiles.sha256_of(path) == sha
    gfiles.verify(path, sha)  # no error


def test_mnist_idx_content_pins_match_vendored():
    # the decompressed pins are what downloads from any mirror are checked against
    assert set(gfiles.MNIST_IDX_SHA256) == set(MNIST_FILES)
    for name in MNIST_FILES:
        assert gfiles.sha256_of(gfiles.VENDORED / name, decompress=True) == gfiles.MNIST_IDX_SHA256[name]


def test_verify_rejects_wrong_hash(tmp_path):
    f = tmp_path / "x.bin"
    f.write_bytes(b"hello")
    with pytest.raises(DataError, match=str(f)):
        gfiles.verify(f, "0" * 64)


def _corrupt(data: bytes) -> bytes:
    b = bytearray(data)
    b[len(b) // 2] ^= 0xFF
    return bytes(b)


@pytest.mark.parametrize("name", ["tinyshakespeare.txt", "digits.csv.gz", "t10k-labels-idx1-ubyte.gz"])
@pytest.mark.parametrize("where", ["root", "root/group", "env"])
def test_corrupted_copy_raises(name, where, tmp_path, monkeypatch):
    group = gfiles.KNOWN_FILES[name][0]
    folder = tmp_path / group if where == "root/group" else tmp_path
    folder.mkdir(exist_ok=True)
    bad = folder / name
    bad.write_bytes(_corrupt((gfiles.VENDORED / name).read_bytes()))
    if where == "env":
        monkeypatch.setenv("GENZOO_DATA", str(tmp_path))
        call = lambda: gfiles.find_file(name)  # noqa: E731
    else:
        call = lambda: gfiles.find_file(name, root=tmp_path)  # noqa: E731
    with pytest.raises(DataError) as e:
        call()
    msg = str(e.value)
    assert str(bad) in msg  # names the file ...
    assert "GENZOO_DATA" in msg and "delete it" in msg  # ... and the fix


def test_mnist_copy_with_wrong_content_raises(tmp_path):
    name = "t10k-labels-idx1-ubyte.gz"
    raw = bytearray(gzip.decompress((gfiles.VENDORED / name).read_bytes()))
    raw[100] = (raw[100] + 1) % 10  # a valid gzip of a different label file
    (tmp_path / name).write_bytes(gzip.compress(bytes(raw)))
    with pytest.raises(DataError, match="standard MNIST IDX content") as e:
        gfiles.find_file(name, root=tmp_path)
    assert str(tmp_path / name) in str(e.value)


def test_corrupted_copy_fails_load_dataset(tmp_path):
    (tmp_path / "digits.csv.gz").write_bytes(b"not the digits")
    with pytest.raises(DataError, match="digits.csv.gz"):
        load_dataset("digits", "train", root=tmp_path)


def test_good_copies_in_root_are_used(tmp_path):
    # an MNIST file from a mirror has another gzip wrapper but the same IDX content
    name = "t10k-labels-idx1-ubyte.gz"
    raw = gzip.decompress((gfiles.VENDORED / name).read_bytes())
    (tmp_path / "mnist").mkdir()
    mirror_copy = tmp_path / "mnist" / name
    mirror_copy.write_bytes(gzip.compress(raw, compresslevel=1, mtime=1))
    assert gfiles.sha256_of(mirror_copy) != gfiles.KNOWN_FILES[name][1]
    assert gfiles.find_file(name, root=tmp_path) == mirror_copy
    # the alias input.txt for tiny shakespeare
    alias = tmp_path / "input.txt"
    alias.write_bytes((gfiles.VENDORED / "tinyshakespeare.txt").read_bytes())
    assert gfiles.find_file("tinyshakespeare.txt", root=tmp_path) == alias


def test_unknown_file_name():
    with pytest.raises(DataError, match="unknown data file"):
        gfiles.find_file("cifar10.tar.gz")


@pytest.mark.parametrize("name", ["digits.csv.gz", "tinyshakespeare.txt", "t10k-images-idx3-ubyte.gz"])
def test_missing_file_download_disabled(name, tmp_path, no_vendored, offline):
    with pytest.raises(DataError) as e:
        gfiles.find_file(name, root=tmp_path, download=False)
    msg = str(e.value)
    assert name in msg and "not found" in msg and str(tmp_path) in msg
    assert offline == []  # no download attempted


def test_missing_file_without_mirror(tmp_path, no_vendored, offline):
    with pytest.raises(DataError, match="digits.csv.gz not found"):
        gfiles.find_file("digits.csv.gz", root=tmp_path, download=True)
    assert offline == []


@pytest.mark.parametrize("name", ["tinyshakespeare.txt", "t10k-labels-idx1-ubyte.gz"])
def test_missing_file_offline(name, tmp_path, no_vendored, offline):
    with pytest.raises(DataError) as e:
        gfiles.find_file(name, root=tmp_path, download=True)
    msg = str(e.value)
    assert "could not download" in msg and name in msg and "GENZOO_DATA" in msg
    assert offline == gfiles.KNOWN_FILES[name][2]  # every mirror tried, via the patched urlopen
    group = gfiles.KNOWN_FILES[name][0]
    assert not any((tmp_path / group).iterdir())  # nothing left behind


def test_missing_file_offline_through_load_dataset(tmp_path, no_vendored, offline):
    with pytest.raises(DataError, match="could not download tinyshakespeare.txt"):
        load_dataset("shakespeare", "train", root=tmp_path)


def _serve(monkeypatch, payload: bytes):
    tried = []

    def urlopen(url, timeout=None):
        tried.append(url)
        return io.BytesIO(payload)

    monkeypatch.setattr(urllib.request, "urlopen", urlopen)
    return tried


def test_download_of_mnist_verified_by_content(tmp_path, no_vendored, monkeypatch):
    # with no vendored copy (the only case where a download happens) a mirror's file,
    # whose gzip wrapper differs from the vendored one, is accepted by its IDX content
    name = "t10k-labels-idx1-ubyte.gz"
    raw = gzip.decompress((SHIPPED / name).read_bytes())
    tried = _serve(monkeypatch, gzip.compress(raw, mtime=7))
    path = gfiles.find_file(name, root=tmp_path)
    assert path == tmp_path / "mnist" / name
    assert gzip.decompress(path.read_bytes()) == raw
    assert len(tried) == 1
    assert sorted(p.name for p in (tmp_path / "mnist").iterdir()) == [name]  # no .part left
    # a second lookup finds it on disk without downloading
    _serve(monkeypatch, b"")
    assert gfiles.find_file(name, root=tmp_path) == path


@pytest.mark.parametrize("name", ["tinyshakespeare.txt", "t10k-labels-idx1-ubyte.gz"])
def test_download_of_wrong_file_rejected_and_cleaned(name, tmp_path, no_vendored, monkeypatch):
    tried = _serve(monkeypatch, b"<html>rate limited</html>")
    with pytest.raises(DataError, match="could not download"):
        gfiles.find_file(name, root=tmp_path)
    assert len(tried) == len(gfiles.KNOWN_FILES[name][2])
    group = gfiles.KNOWN_FILES[name][0]
    assert list((tmp_path / group).iterdir()) == []  # rejected downloads are deleted


# ---------------------------------------------------------------- MNIST


@pytest.fixture(scope="module")
def mnist():
    return {s: load_dataset("mnist", s) for s in ("train", "valid", "test", "full")}


def test_mnist_splits(mnist):
    sizes = {s: len(ds) for s, ds in mnist.items()}
    assert sizes == {"train": 50000, "valid": 10000, "test": 10000, "full": 60000}
    for ds in mnist.values():
        assert ds.data.dtype == torch.uint8 and tuple(ds.data.shape[1:]) == (1, 28, 28)
        assert ds.spec.shape == (1, 28, 28) and ds.spec.kind == "image" and ds.spec.num_classes == 10
        assert ds.labels.dtype == torch.int64 and set(ds.labels.unique().tolist()) == set(range(10))
    full, train, valid, test = mnist["full"], mnist["train"], mnist["valid"], mnist["test"]
    # train = first 50k of the training file, valid = its last 10k
    assert torch.equal(full.data[:50000], train.data) and torch.equal(full.data[50000:], valid.data)
    assert torch.equal(full.labels[50000:], valid.labels)
    assert not torch.equal(test.data[:100], full.data[:100])
    # a few well-known facts about the standard MNIST files
    assert full.labels[:10].tolist() == [5, 0, 4, 1, 9, 2, 1, 3, 1, 4]
    assert test.labels[:10].tolist() == [7, 2, 1, 0, 4, 1, 4, 9, 5, 9]
    x, y = train.get_batch(torch.arange(16), gen(0))
    assert x.shape == (16, 1, 28, 28) and x.dtype == torch.float32 and torch.equal(y, train.labels[:16])


def test_mnist_valid_size():
    tr = load_dataset("mnist", "train", valid_size="5000")  # CLI strings are coerced
    va = load_dataset("mnist", "valid", valid_size=5000)
    assert (len(tr), len(va)) == (55000, 5000)


def test_mnist_default_range_is_256_point_grid(mnist):
    ds = mnist["train"]
    grid = ds.transform(torch.arange(256, dtype=torch.uint8).view(1, 1, 16, 16), None).flatten()
    assert grid[0].item() == -1.0 and grid[-1].item() == 1.0  # exact endpoints
    assert torch.all(grid[1:] > grid[:-1]) and grid.unique().numel() == 256
    expected = (-1.0 + 2.0 * torch.arange(256, dtype=torch.float64) / 255).float()
    torch.testing.assert_close(grid, expected, rtol=0, atol=1e-6)
    idx = torch.arange(2000)
    x, _ = ds.get_batch(idx, gen(0))
    x2, _ = ds.get_batch(idx, gen(1))
    assert torch.equal(x, x2)  # no randomness without dequantisation
    assert x.min().item() == -1.0 and x.max().item() == 1.0
    torch.testing.assert_close(x, grid[ds.data[idx].long()], rtol=0, atol=0)
    assert ds.spec.value_range == (-1.0, 1.0)


@pytest.mark.parametrize("vr", [(0, 1), "0,1", [0.0, 1.0], "[0, 1]"])
def test_mnist_value_range_01(vr, mnist):
    ds = load_dataset("mnist", "test", value_range=vr)
    assert ds.spec.value_range == (0.0, 1.0)
    idx = torch.arange(1000)
    x, _ = ds.get_batch(idx, None)
    k = ds.data[idx].double()
    assert x.min().item() == 0.0 and x.max().item() == 1.0
    torch.testing.assert_close(x.double(), k / 255, rtol=0, atol=1e-7)


def _exact_level(x: torch.Tensor, vr) -> torch.Tensor:
    """floor((x - lo) / (hi - lo) * 256), evaluated exactly for the two standard ranges."""
    x = x.double()
    if tuple(vr) == (-1.0, 1.0):
        return torch.floor(x * 128) + 128  # x * 128 is exact, floor(a + 128) = floor(a) + 128
    assert tuple(vr) == (0.0, 1.0)
    return torch.floor(x * 256)


@pytest.mark.parametrize("vr", [(-1.0, 1.0), (0.0, 1.0)])
def test_mnist_uniform_dequantization(vr):
    ds = load_dataset("mnist", "train", dequantize="uniform", value_range=vr)
    lo, hi = vr
    assert ds.spec.dequantization == "uniform" and ds.spec.value_range == vr and ds.spec.levels == 256
    idx = torch.arange(3000)
    k = ds.data[idx].double()
    x, _ = ds.get_batch(idx, gen(0))
    assert x.dtype == torch.float32
    assert x.min().item() >= lo and x.max().item() < hi
    assert torch.equal(_exact_level(x, vr), k)  # floor recovers the grey level
    # position inside the bin is U[0, 1): mean 1/2, variance 1/12
    u = (x.double() - lo) / (hi - lo) * 256 - k
    assert abs(u.mean().item() - 0.5) < 0.005 and abs(u.var().item() - 1 / 12) < 0.002
    # reproducible with the same seed, different with another
    assert torch.equal(x, ds.get_batch(idx, gen(0))[0])
    x1, _ = ds.get_batch(idx, gen(1))
    assert (x1 != x).float().mean() > 0.99
    assert torch.equal(_exact_level(x1, vr), k)
    assert torch.equal(ds.get_batch(idx, None)[0], ds.get_batch(idx, None)[0])  # None = fixed default seed


def test_uniform_dequantization_stays_in_bin_at_extremes(monkeypatch):
    # u at its largest float32 value: (k + u) rounds to k + 1 in float32; the clamp keeps x below the edge
    from genzoo.data import transforms

    monkeypatch.setattr(transforms, "_rand_like", lambda x, g: torch.full(x.shape, 1 - 2**-24))
    k = torch.arange(256, dtype=torch.uint8)
    for vr in [(-1.0, 1.0), (0.0, 1.0)]:
        x = transforms.UniformDequantize(256, vr)(k, None)
        assert torch.equal(_exact_level(x, vr), k.double())
        assert x.max().item() < vr[1]


def test_mnist_dynamic_binarization(mnist):
    ds = load_dataset("mnist", "train", binarize="dynamic")
    idx = torch.arange(2000)
    k = ds.data[idx]
    x, y = ds.get_batch(idx, gen(0))
    assert x.dtype == torch.float32 and set(x.unique().tolist()) == {0.0, 1.0}
    assert y is not None and torch.equal(y, mnist["train"].labels[idx])
    assert abs(x.mean().item() - (k.double() / 255).mean().item()) < 0.003
    assert torch.all(x[k == 0] == 0) and torch.all(x[k == 255] == 1)
    # P(x = 1 | k) = k / 255 for mid-grey pixels
    mid = (k >= 100) & (k <= 155)
    assert abs(x[mid].mean().item() - (k[mid].double() / 255).mean().item()) < 0.01
    assert torch.equal(x, ds.get_batch(idx, gen(0))[0])
    x1, _ = ds.get_batch(idx, gen(1))
    assert not torch.equal(x1, x)
    assert (x1 != x)[mid].float().mean() > 0.3  # fresh draws of the uncertain pixels


def test_static_binarized_mnist(monkeypatch):
    calls = []
    real_load = np.load

    def spy(*args, **kwargs):
        calls.append(kwargs)
        return real_load(*args, **kwargs)

    monkeypatch.setattr(np, "load", spy)
    sets = {s: load_dataset("binarized_mnist", s) for s in ("train", "valid", "test", "full")}
    assert calls and all(kw.get("allow_pickle") is False for kw in calls)  # never unpickles
    assert {s: len(d) for s, d in sets.items()} == {"train": 50000, "valid": 10000, "test": 10000, "full": 60000}
    tr = sets["train"]
    assert tr.labels is None and tr.data.dtype == torch.uint8
    assert set(tr.data.unique().tolist()) == {0, 1}
    assert torch.equal(sets["full"].data[:50000], tr.data)
    assert torch.equal(sets["full"].data[50000:], sets["valid"].data)
    x, y = tr.get_batch(torch.arange(500), gen(0))
    assert y is None and x.shape == (500, 1, 28, 28) and set(x.unique().tolist()) == {0.0, 1.0}
    assert torch.equal(x, tr.get_batch(torch.arange(500), gen(1))[0])  # fixed, not re-drawn
    assert 0.1 < x.mean().item() < 0.17  # about 13% of MNIST pixels are on
    # mnist binarize="static" is the same data; the alias pins binarize
    alias = load_dataset("mnist", "test", binarize="static")
    assert torch.equal(alias.data, sets["test"].data)
    assert alias.spec.name == "mnist" and sets["test"].spec.name == "binarized_mnist"
    load_dataset("binarized_mnist", "valid", binarize="static")  # the pinned value itself is fine
    with pytest.raises(ConfigError, match="binarize"):
        load_dataset("binarized_mnist", "train", binarize="dynamic")
    with pytest.raises(ConfigError, match="valid_size"):
        load_dataset("mnist", "train", binarize="static", valid_size=5000)


SPEC_CASES = {
    "default": ({}, dict(discrete=None, binarization=None, dequantization=None, levels=256, value_range=(-1.0, 1.0))),
    "range01": ({"value_range": (0, 1)}, dict(discrete=None, binarization=None, dequantization=None, levels=256,
                                              value_range=(0.0, 1.0))),
    "uniform": ({"dequantize": "uniform"}, dict(discrete=None, binarization=None, dequantization="uniform", levels=256,
                                                 value_range=(-1.0, 1.0))),
    "dynamic": ({"binarize": "dynamic"}, dict(discrete="binary", binarization="dynamic", dequantization=None, levels=2,
                                               value_range=None)),
    "static": ({"binarize": "static"}, dict(discrete="binary", binarization="static", dequantization=None, levels=2,
                                             value_range=None)),
}


@pytest.mark.parametrize("case", list(SPEC_CASES))
def test_mnist_spec_fields(case):
    opts, want = SPEC_CASES[case]
    spec = load_dataset("mnist", "test", **opts).spec
    got = {k: getattr(spec, k) for k in want}
    assert got == want
    assert spec.num_dims == 784 and spec.shape == (1, 28, 28)
    if spec.binarization:
        assert f"{spec.binarization} binarisation" in spec.describe()
    d = spec.to_dict()
    assert d["shape"] == [1, 28, 28]


@pytest.mark.parametrize("opts,match", [
    ({"binarize": "dynamic", "dequantize": "uniform"}, "dequantize"),
    ({"binarize": "static", "dequantize": "uniform"}, "dequantize"),
    ({"binarize": "dynamic", "value_range": (0, 1)}, "value_range"),
])
def test_binarize_conflicts(opts, match):
    with pytest.raises(ConfigError, match=match):
        load_dataset("mnist", "train", **opts)
    with pytest.raises(ConfigError, match=match):
        load_dataset("digits", "train", **opts)


# ---------------------------------------------------------------- digits


def test_digits_splits_and_levels():
    sets = {s: load_dataset("digits", s) for s in ("train", "valid", "test", "full")}
    assert {s: len(d) for s, d in sets.items()} == {"train": 1297, "valid": 250, "test": 250, "full": 1797}
    full = sets["full"]
    assert full.spec.shape == (1, 8, 8) and full.spec.levels == 17 and full.spec.num_classes == 10
    assert full.data.dtype == torch.uint8 and full.data.max().item() == 16 and full.data.min().item() == 0
    # the documented fixed permutation, so the three splits are disjoint and cover the set
    perm = torch.from_numpy(np.random.default_rng(0).permutation(1797))
    parts = {"train": perm[:1297], "valid": perm[1297:1547], "test": perm[1547:]}
    for s, ix in parts.items():
        assert torch.equal(sets[s].data, full.data[ix]) and torch.equal(sets[s].labels, full.labels[ix])
    assert torch.equal(torch.sort(torch.cat(list(parts.values()))).values, torch.arange(1797))
    # agrees with scikit-learn's copy when available
    try:
        from sklearn.datasets import load_digits
    except ImportError:  # pragma: no cover
        pass
    else:
        d = load_digits()
        assert np.array_equal(full.data.numpy().reshape(1797, 64), d.data.astype(np.uint8))
        assert np.array_equal(full.labels.numpy(), d.target)
    x, _ = full.get_batch(torch.arange(1797), None)
    assert x.min().item() == -1.0 and x.max().item() == 1.0
    torch.testing.assert_close(x.double(), -1 + 2 * full.data.double() / 16, rtol=0, atol=1e-7)
    xd, _ = load_dataset("digits", "full", dequantize="uniform", value_range=(0, 1)).get_batch(torch.arange(1797), gen(0))
    k = full.data.float()
    assert torch.all(xd >= k / 17) and torch.all(xd < (k + 1) / 17)  # inside the float32 bin of its level


def test_digits_static_binarization_is_fixed_across_splits():
    full = load_dataset("digits", "full", binarize="static")
    train = load_dataset("digits", "train", binarize="static")
    perm = torch.from_numpy(np.random.default_rng(0).permutation(1797))
    assert set(full.data.unique().tolist()) == {0, 1}
    assert torch.equal(train.data, full.data[perm[:1297]])  # an image is binarised once, whatever the split
    assert torch.equal(full.data, load_dataset("digits", "full", binarize="static").data)
    grey = load_dataset("digits", "full").data
    assert torch.all(full.data[grey == 0] == 0) and torch.all(full.data[grey == 16] == 1)


# ---------------------------------------------------------------- toys


TOY_DIMS = {"mixture8d": 8}  # the 8-D mixture of the leaderboard's vector track; every other toy is 2-D
TOYS_2D = sorted(n for n in TOYS if n not in TOY_DIMS)


@pytest.mark.parametrize("name", sorted(TOYS))
def test_toy_samplers(name):
    f = TOYS[name]
    x = f(4000, gen(0))
    assert x.shape == (4000, TOY_DIMS.get(name, 2)) and x.dtype == torch.float32 and torch.isfinite(x).all()
    assert torch.equal(x, f(4000, gen(0)))
    assert torch.equal(f(100, None), f(100, None))
    assert (x != f(4000, gen(1))).all(dim=1).float().mean() > 0.9
    if name not in TOY_DIMS:
        assert (x.abs() <= 4.5).all(dim=1).float().mean() > 0.99  # FFJORD scale: within about [-4, 4]^2
    assert x.std(0).min() > 0.5  # not collapsed


def test_toy_shapes_match_their_definitions():
    g = gen(3)
    eight = TOYS["8gaussians"](4000, g)
    centres = 4 / 1.414 * torch.tensor([[math.cos(a), math.sin(a)] for a in np.arange(8) * math.pi / 4])
    d = torch.cdist(eight.double(), centres.double()).min(1).values
    assert d.max() < 6 * 0.5 / 1.414  # every point near one of the 8 centres
    assert abs(d.pow(2).mean().item() - 2 * (0.5 / 1.414) ** 2) < 0.01  # chi^2_2 scaled
    moons = TOYS["moons"](4000, g)
    torch.testing.assert_close(moons.mean(0), torch.tensor([0.0, 0.3]), atol=0.08, rtol=0)  # 2 * (1/2, 1/4) - (1, 0.2)
    spirals = TOYS["spirals"](4000, g)
    torch.testing.assert_close(spirals.mean(0), torch.zeros(2), atol=0.15, rtol=0)  # symmetric under x -> -x
    board = TOYS["checkerboard"](4000, g)
    assert torch.isfinite(TOY_LOG_PROB["checkerboard"](board)).all()  # every sample on a black square
    assert (board >= -4).all() and (board < 4).all()


def _grid(lo: float, hi: float, m: int):
    h = (hi - lo) / m
    c = lo + h * (torch.arange(m, dtype=torch.float64) + 0.5)
    xx, yy = torch.meshgrid(c, c, indexing="ij")
    return torch.stack([xx.reshape(-1), yy.reshape(-1)], 1), h


@pytest.mark.parametrize("name", sorted(n for n in TOY_LOG_PROB if n in TOYS_2D))  # mixture8d: tests/test_bench.py
def test_toy_log_prob_normalised_and_matches_samples(name):
    lp = TOY_LOG_PROB[name]
    pts, h = _grid(-6.0, 6.0, 600)
    mass = lp(pts).exp().sum().item() * h * h
    assert mass == pytest.approx(1.0, abs=2e-3)
    assert lp(pts.float()).dtype == torch.float32
    # histogram of samples vs the density's mass per cell (cells of 0.5 over [-4, 4]^2)
    n = 60000
    x = TOYS[name](n, gen(0)).double()
    edges = 16
    cell = ((x + 4) / 0.5).floor().long().clamp(0, edges - 1)
    inside = ((x >= -4) & (x < 4)).all(1)
    counts = torch.zeros(edges, edges, dtype=torch.float64)
    counts.index_put_((cell[inside, 0], cell[inside, 1]), torch.ones(int(inside.sum()), dtype=torch.float64),
                      accumulate=True)
    fine, hf = _grid(-4.0, 4.0, 320)  # 20 x 20 quadrature points per cell
    dens = lp(fine).exp().view(16, 20, 16, 20).sum((1, 3)) * hf * hf
    tv = 0.5 * (counts / n - dens).abs().sum().item()
    assert tv < 0.04
    # and the test would notice a wrong density: shift the samples by half a cell
    shifted = 0.5 * (torch.roll(counts, 1, 0) / n - dens).abs().sum().item()
    assert shifted > 0.2


def test_log_prob_values():
    lp = TOY_LOG_PROB["checkerboard"](torch.tensor([[0.5, 0.5], [2.5, 0.5], [5.0, 0.5], [-3.9, -3.9], [-3.9, 3.9]]))
    assert lp.tolist() == pytest.approx([-math.log(32), -math.inf, -math.inf, -math.log(32), -math.inf])
    c = 4 / 1.414
    s = 0.5 / 1.414
    # at a centre the other 7 components are negligible
    want = -math.log(2 * math.pi * s * s) - math.log(8)
    assert TOY_LOG_PROB["8gaussians"](torch.tensor([[c, 0.0]], dtype=torch.float64)).item() == pytest.approx(want, abs=1e-6)


@pytest.mark.parametrize("name", sorted(TOYS))
def test_toy_datasets(name):
    tr = load_dataset(name, "train", n=500, n_eval=200)
    va = load_dataset(name, "valid", n=500, n_eval=200)
    te = load_dataset(name, "test", n=500, n_eval=200)
    assert (len(tr), len(va), len(te)) == (500, 200, 200)
    assert tr.spec.kind == "vector" and tr.spec.shape == (TOY_DIMS.get(name, 2),) and tr.spec.value_range is None
    assert not torch.equal(va.data, te.data)  # independent draws per split
    assert torch.equal(tr.data, load_dataset(name, "train", n=500, n_eval=200).data)
    assert not torch.equal(tr.data, load_dataset(name, "train", n=500, n_eval=200, seed=1).data)
    x, y = tr.get_batch(torch.arange(10), gen(0))
    assert y is None and torch.equal(x, tr.data[:10])
    with pytest.raises(ConfigError, match="split"):
        load_dataset(name, "full")


# ---------------------------------------------------------------- text


@pytest.fixture(scope="module")
def shakespeare():
    return {s: load_dataset("shakespeare", s, block_size=64) for s in ("train", "valid", "test", "full")}


def test_shakespeare_vocab_and_splits(shakespeare):
    text = (gfiles.VENDORED / "tinyshakespeare.txt").read_text(encoding="utf-8")
    assert len(text) == SHAKESPEARE_CHARS
    tr, va, te, full = (shakespeare[s] for s in ("train", "valid", "test", "full"))
    assert isinstance(tr, TextDataset)
    for ds in (tr, va, full):
        assert ds.vocab_size == 65 and ds.vocab == sorted(set(text))
        assert ds.spec.vocab_size == 65 and ds.spec.discrete == "tokens" and ds.spec.kind == "text"
        assert ds.spec.shape == (64,) and ds.spec.value_range is None
    assert tr.tokens.numel() + va.tokens.numel() == SHAKESPEARE_CHARS == full.tokens.numel()
    assert tr.tokens.numel() == int(0.9 * SHAKESPEARE_CHARS)
    assert torch.equal(va.tokens, te.tokens)
    assert torch.equal(torch.cat([tr.tokens, va.tokens]), full.tokens)
    assert full.decode(full.tokens) == text
    assert tr.decode(tr.tokens[:200]) == text[:200] and va.decode(va.tokens[:200]) == text[len(tr.tokens):][:200]
    s = "First Citizen:\nBefore we proceed any further, hear me speak."
    ids = tr.encode(s)
    assert ids.dtype == torch.int64 and tr.decode(ids) == s and tr.decode(ids.tolist()) == s
    assert tr.encode("a").item() == tr.vocab.index("a")
    with pytest.raises(DataError, match="vocabulary"):
        tr.encode("café")
    assert len(tr) == tr.tokens.numel() // 64


def test_shakespeare_batches(shakespeare):
    tr = shakespeare["train"]
    text = tr.decode(tr.tokens)
    idx = torch.tensor([0, 5, len(tr) - 1])
    x, y = tr.get_batch(idx, None)  # unshifted blocks
    assert y is None and x.shape == (3, 64) and x.dtype == torch.int64
    for row, i in zip(x, idx.tolist()):
        assert torch.equal(row, tr.tokens[i * 64:(i + 1) * 64])
    idx = torch.arange(0, len(tr), 97)
    xg, _ = tr.get_batch(idx, gen(0))
    assert xg.shape == (len(idx), 64) and xg.dtype == torch.int64
    assert int(xg.max()) < 65 and int(xg.min()) >= 0
    assert torch.equal(xg, tr.get_batch(idx, gen(0))[0])
    assert not torch.equal(xg, tr.get_batch(idx, gen(1))[0])
    shifted = 0
    for row, i in zip(xg, idx.tolist()):
        # every row is a contiguous window of the split (so the next-token targets x[1:] of
        # the inputs x[:-1] are the text's), starting inside block i
        start = text.find(tr.decode(row), i * 64)
        assert i * 64 <= start < i * 64 + 64
        assert torch.equal(row, tr.tokens[start:start + 64])
        shifted += start != i * 64
    assert shifted > 0.8 * len(idx)  # random offsets
    # evaluation iterates the unshifted blocks
    batches = list(tr.iter_batches(1000, limit=2500))
    assert [b[0].shape[0] for b in batches] == [1000, 1000, 500]
    assert torch.equal(torch.cat([b[0] for b in batches]), tr.data[:2500])


def test_shakespeare_block_size_errors():
    with pytest.raises(ConfigError, match="block_size"):
        load_dataset("shakespeare", "valid", block_size=200_000)
    with pytest.raises(ConfigError, match="block_size"):
        load_dataset("shakespeare", "train", block_size=0)


# ---------------------------------------------------------------- user data


def _write_images(folder: Path):
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    Image.new("L", (30, 20), 100).save(folder / "a_grey.png")  # landscape, grey 100
    Image.new("RGB", (40, 40), (255, 0, 0)).save(folder / "b_red.png")
    Image.new("RGB", (24, 48), (0, 0, 255)).save(folder / "c_blue.jpg", quality=95)  # portrait JPEG
    # centre crop: a 60x20 image whose outer columns are black and the central 20x20 white
    arr = np.zeros((20, 60), np.uint8)
    arr[:, 20:40] = 255
    (folder / "sub").mkdir(exist_ok=True)
    Image.fromarray(arr, "L").save(folder / "sub" / "d_crop.PNG")
    (folder / "notes.txt").write_text("not an image")


def test_folder_of_images(tmp_path):
    folder = tmp_path / "imgs"
    _write_images(folder)
    auto = load_dataset("folder", "full", path=str(folder), image_size=16)   # colour images: colour by default
    assert auto.data.shape == (4, 3, 16, 16) and "3 channels (colour" in auto.source
    g1 = load_dataset("folder", "full", path=str(folder), image_size=16, channels=1)
    assert g1.data.shape == (4, 1, 16, 16) and g1.data.dtype == torch.uint8
    assert g1.spec.shape == (1, 16, 16) and g1.spec.kind == "image" and g1.labels is None
    assert [p.name for p in g1.files] == ["a_grey.png", "b_red.png", "c_blue.jpg", "d_crop.PNG"]
    assert torch.all(g1.data[0] == 100)
    assert torch.all(g1.data[1] == 76)  # ITU-R 601 luma of pure red
    assert torch.all(g1.data[3] == 255)  # centre crop kept only the white middle
    rgb = load_dataset("folder", "full", path=folder, image_size=12, channels=3)
    assert rgb.data.shape == (4, 3, 12, 12) and rgb.spec.shape == (3, 12, 12)
    assert torch.equal(rgb.data[1], torch.tensor([255, 0, 0], dtype=torch.uint8).view(3, 1, 1).expand(3, 12, 12))
    assert (rgb.data[2].int() - torch.tensor([0, 0, 255]).view(3, 1, 1)).abs().max() <= 4  # JPEG is lossy
    assert torch.all(rgb.data[0] == 100)  # grey -> RGB repeats the channel
    x, _ = rgb.get_batch(torch.arange(4), None)
    assert x.min().item() >= -1 and x.max().item() == 1.0 and x.dtype == torch.float32
    # splits: a fixed permutation, valid/test = the same last examples
    tr = load_dataset("folder", "train", path=folder, image_size=16, valid_fraction=0.25)
    va = load_dataset("folder", "valid", path=folder, image_size=16, valid_fraction=0.25)
    te = load_dataset("folder", "test", path=folder, image_size=16, valid_fraction=0.25)
    assert (len(tr), len(va)) == (3, 1) and va.files == te.files
    assert sorted(p.name for p in tr.files + va.files) == [p.name for p in g1.files]
    b = load_dataset("folder", "full", path=folder, image_size=16, binarize="dynamic")
    assert b.spec.binarization == "dynamic" and set(b.get_batch(torch.arange(4), gen(0))[0].unique().tolist()) <= {0.0, 1.0}


def test_arrays(tmp_path):
    rng = np.random.default_rng(0)
    imgs = rng.integers(0, 256, size=(20, 28, 28), dtype=np.uint8)
    imgs[0, 0, 0], imgs[0, 0, 1] = 0, 255
    np.save(tmp_path / "imgs.npy", imgs)
    ds = load_dataset("array", "full", path=str(tmp_path / "imgs.npy"))
    assert ds.spec.shape == (1, 28, 28) and ds.spec.kind == "image" and len(ds) == 20
    assert torch.equal(ds.data[:, 0], torch.from_numpy(imgs))
    x, _ = ds.get_batch(torch.arange(20), None)
    torch.testing.assert_close(x[:, 0].double(), -1 + 2 * torch.from_numpy(imgs).double() / 255, rtol=0, atol=1e-6)
    assert x.min().item() == -1.0 and x.max().item() == 1.0
    # channels-last colour images are transposed to (N, C, H, W)
    nhwc = rng.integers(0, 256, size=(6, 8, 8, 3), dtype=np.uint8)
    np.savez(tmp_path / "colour.npz", x=nhwc, y=np.arange(6) % 2, extra=np.zeros(3))
    c = load_dataset("array", "full", path=tmp_path / "colour.npz", labels_key="y")
    assert c.spec.shape == (3, 8, 8) and torch.equal(c.data, torch.from_numpy(nhwc).permute(0, 3, 1, 2))
    assert c.labels.tolist() == [0, 1, 0, 1, 0, 1] and c.spec.num_classes == 2
    # float vectors in [0, 1] are used as they are
    vec = rng.random((30, 5)).astype(np.float64)
    np.savez(tmp_path / "vec.npz", vec)  # a single array, stored as arr_0
    v = load_dataset("array", "full", path=tmp_path / "vec.npz")
    assert v.spec.kind == "vector" and v.spec.shape == (5,) and v.spec.value_range is None
    assert v.data.dtype == torch.float32
    torch.testing.assert_close(v.get_batch(torch.arange(30), None)[0], torch.from_numpy(vec).float())
    vt = load_dataset("array", "train", path=tmp_path / "vec.npz", valid_fraction=0.2)
    vv = load_dataset("array", "valid", path=tmp_path / "vec.npz", valid_fraction=0.2)
    assert (len(vt), len(vv)) == (24, 6)
    both = torch.cat([vt.data, vv.data])
    assert torch.equal(torch.sort(both[:, 0]).values, torch.sort(v.data[:, 0]).values)
    with pytest.raises(ConfigError, match="binarize"):
        load_dataset("array", "full", path=tmp_path / "vec.npz", binarize="dynamic")
    with pytest.raises(ConfigError, match="value_range"):
        load_dataset("array", "full", path=tmp_path / "vec.npz", value_range=(0, 1))
    uq = load_dataset("array", "full", path=tmp_path / "imgs.npy", dequantize="uniform", value_range="0,1")
    xq, _ = uq.get_batch(torch.arange(20), gen(0))
    assert torch.equal(torch.floor(xq.double() * 256)[:, 0], torch.from_numpy(imgs).double())


def test_infer_dataset_from_path(tmp_path):
    folder = tmp_path / "imgs"
    _write_images(folder)
    np.save(tmp_path / "a.npy", np.zeros((3, 4, 4), np.uint8))
    np.savez(tmp_path / "b.npz", x=np.zeros((3, 4, 4), np.uint8))
    assert infer_dataset_from_path(folder) == ("folder", {"path": str(folder)})
    assert infer_dataset_from_path(tmp_path / "a.npy") == ("array", {"path": str(tmp_path / "a.npy")})
    assert infer_dataset_from_path(str(tmp_path / "b.npz")) == ("array", {"path": str(tmp_path / "b.npz")})
    name, opts = infer_dataset_from_path(folder)
    assert len(load_dataset(name, "full", image_size=8, **opts)) == 4
    with pytest.raises(DataError, match="does not exist"):
        infer_dataset_from_path(tmp_path / "missing.npz")
    with pytest.raises(DataError, match="does not exist"):
        infer_dataset_from_path(tmp_path / "missing_dir")
    with pytest.raises(DataError, match="cannot tell"):
        infer_dataset_from_path(folder / "notes.txt")


def test_user_data_errors(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no images found") as e:
        load_dataset("folder", "train", path=tmp_path / "empty")
    assert str(tmp_path / "empty") in str(e.value)
    with pytest.raises(DataError, match="does not exist") as e:
        load_dataset("folder", "train", path=tmp_path / "nowhere")
    assert str(tmp_path / "nowhere") in str(e.value)
    with pytest.raises(DataError, match="does not exist"):
        load_dataset("array", "train", path=tmp_path / "nowhere.npy")
    with pytest.raises(ConfigError, match="needs the option path"):
        load_dataset("folder", "train")
    (tmp_path / "broken.png").write_bytes(b"\x89PNG not really")
    with pytest.raises(DataError, match="broken.png"):
        load_dataset("folder", "full", path=tmp_path)
    for bad in [np.zeros(10, np.uint8), np.zeros((4, 2, 3, 5, 5), np.uint8), np.zeros((4, 5, 8, 8), np.float32),
                np.zeros((4, 5, 8, 8), np.uint8)]:
        f = tmp_path / "bad.npy"
        np.save(f, bad)
        with pytest.raises(DataError) as e:
            load_dataset("array", "full", path=f)
        msg = str(e.value)
        assert str(tuple(bad.shape)) in msg and "accepted" in msg and "(N, H, W)" in msg
    # float images: [0, 1] accepted (quantised to k = round(255 x)), anything else refused
    ok = np.linspace(0, 1, 4 * 8 * 8, dtype=np.float32).reshape(4, 8, 8)
    np.save(tmp_path / "float01.npy", ok)
    d = load_dataset("array", "full", path=tmp_path / "float01.npy", value_range="0,1")
    assert d.spec.shape == (1, 8, 8)
    assert torch.allclose(d.tensor()[:, 0], torch.from_numpy(np.rint(ok * 255) / 255), atol=1e-6)
    np.save(tmp_path / "float255.npy", ok * 255)
    with pytest.raises(DataError, match=r"\[0, 1\]"):
        load_dataset("array", "full", path=tmp_path / "float255.npy")
    np.save(tmp_path / "obj.npy", np.array([{"a": 1}, None], dtype=object), allow_pickle=True)
    with pytest.raises(DataError, match="pickled"):
        load_dataset("array", "full", path=tmp_path / "obj.npy")
    np.savez(tmp_path / "many.npz", a=np.zeros((2, 4, 4), np.uint8), b=np.zeros(2))
    with pytest.raises(DataError, match="key=NAME") as e:
        load_dataset("array", "full", path=tmp_path / "many.npz")
    assert "a, b" in str(e.value)
    with pytest.raises(DataError, match="'c'"):
        load_dataset("array", "full", path=tmp_path / "many.npz", key="c")
    np.save(tmp_path / "nan.npy", np.array([[0.0, np.nan]]))
    with pytest.raises(DataError, match="NaN"):
        load_dataset("array", "full", path=tmp_path / "nan.npy")
    np.save(tmp_path / "one.npy", np.zeros((1, 4, 4), np.uint8))
    assert len(load_dataset("array", "train", path=tmp_path / "one.npy")) == 1
    with pytest.raises(ConfigError, match="'valid' split is empty"):
        load_dataset("array", "valid", path=tmp_path / "one.npy")


# ---------------------------------------------------------------- registry errors


def test_registry_lists_everything():
    names = list(list_datasets())
    for n in ["mnist", "binarized_mnist", "digits", *TOYS, "shakespeare", "folder", "array"]:
        assert n in names
    assert dataset_options("mnist") == {"binarize": "none", "value_range": (-1.0, 1.0), "dequantize": "none",
                                        "valid_size": 10000}
    assert "binarize=none|dynamic|static" in list_datasets()["mnist"].usage()


def test_unknown_dataset_name():
    with pytest.raises(ConfigError) as e:
        load_dataset("mnsit")
    msg = str(e.value)
    assert "did you mean 'mnist'" in msg
    for n in list_datasets():
        assert n in msg
    with pytest.raises(ConfigError, match="valid data sets"):
        dataset_options("imagenet")
    assert isinstance(e.value, (GenzooError, ValueError))


@pytest.mark.parametrize("name,split,hint", [("mnist", "tarin", "train"), ("digits", "validation", "valid"),
                                             ("moons", "full", None), ("shakespeare", "dev", None)])
def test_unknown_split(name, split, hint):
    with pytest.raises(ConfigError) as e:
        load_dataset(name, split)
    msg = str(e.value)
    assert repr(split) in msg and "valid splits" in msg and "train" in msg
    if hint:
        assert f"did you mean {hint!r}" in msg


@pytest.mark.parametrize("name,opt,hint", [("mnist", "binarise", "binarize"), ("mnist", "valid_frac", None),
                                           ("moons", "size", None), ("binarized_mnist", "value_range", None),
                                           ("shakespeare", "blocksize", "block_size")])
def test_unknown_option(name, opt, hint):
    with pytest.raises(ConfigError) as e:
        load_dataset(name, "train", **{opt: 1})
    msg = str(e.value)
    assert repr(opt) in msg and "valid options" in msg
    for o in dataset_options(name):
        assert o in msg
    if hint:
        assert f"did you mean {hint!r}" in msg


@pytest.mark.parametrize("name,opts,needle", [
    ("mnist", {"binarize": "yes"}, "none, dynamic, static"),
    ("mnist", {"binarize": "dynamc"}, "did you mean 'dynamic'"),
    ("mnist", {"dequantize": "gaussian"}, "none, uniform"),
    ("mnist", {"binarize": 1}, "one of none, dynamic, static"),
    ("mnist", {"value_range": "1,0"}, "lo < hi"),
    ("mnist", {"value_range": (0,)}, "two numbers"),
    ("mnist", {"value_range": "a,b"}, "two numbers"),
    ("mnist", {"value_range": (0, float("inf"))}, "finite"),
    ("mnist", {"valid_size": 0}, "1..59999"),
    ("mnist", {"valid_size": 1.5}, "valid_size"),
    ("mnist", {"valid_size": True}, "valid_size"),
    ("mnist", {"valid_size": "many"}, "valid_size"),
    ("moons", {"n": 0}, "positive integer"),
    ("moons", {"seed": "x"}, "seed"),
    ("shakespeare", {"block_size": -3}, "positive integer"),
    ("folder", {"path": "p", "channels": 2}, "1, 3"),
    ("folder", {"path": "p", "image_size": 0}, "positive integer"),
    ("folder", {"path": "p", "valid_fraction": 1.0}, "[0, 1)"),
    ("array", {"path": 3}, "string"),
])
def test_bad_option_value(name, opts, needle):
    with pytest.raises(ConfigError) as e:
        load_dataset(name, "train", **opts)
    msg = str(e.value)
    assert needle in msg
    assert repr(list(opts)[-1]) in msg  # names the option


def test_option_coercion_and_defaults():
    ds = load_dataset("digits", "valid", binarize=" Dynamic ", value_range=None, dequantize=None)
    assert ds.spec.binarization == "dynamic"
    ds = load_dataset("moons", "valid", n="100", n_eval=50.0, seed="2")
    assert len(ds) == 50
    assert isinstance(ds, ArrayDataset)
