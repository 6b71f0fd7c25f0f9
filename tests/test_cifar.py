"""CIFAR-10 from its binary layout (issue 32) on small files written here in that layout, and colour
folders that keep their colour."""
from __future__ import annotations

import io
import tarfile

import numpy as np
import pytest
import torch

from genzoo.data import load_dataset
from genzoo.data import cifar
from genzoo.errors import DataError

N = 6  # records per batch file


def _records(n: int, seed: int) -> bytes:
    """n records: label byte, then the R, G and B planes; image i has R = 10 i, G = 255 - i, B = label."""
    out = bytearray()
    for i in range(n):
        label = (seed + i) % 10
        img = np.empty((3, 32, 32), np.uint8)
        img[0], img[1], img[2] = (10 * i + seed) % 256, 255 - i, label
        img[0, 0, 1] = 7                                # one pixel of the red plane, row 0 column 1
        out += bytes([label]) + img.tobytes()
    return bytes(out)


def _files() -> dict[str, bytes]:
    files = {f: _records(N, k) for k, f in enumerate(cifar.TRAIN_FILES)}
    files[cifar.TEST_FILE] = _records(N, 100)
    return files


def _tar(path, files, folder="cifar-10-batches-bin", mode="w:gz"):
    with tarfile.open(path, mode) as tar:
        for name, raw in files.items():
            info = tarfile.TarInfo(f"{folder}/{name}")
            info.size = len(raw)
            tar.addfile(info, io.BytesIO(raw))


@pytest.fixture(autouse=True)
def _no_home_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("GENZOO_DATA", raising=False)
    cifar._arrays_cached.cache_clear()


def test_records_are_read_in_the_official_layout(tmp_path):
    _tar(tmp_path / "copy.tar.xz", _files(), mode="w:xz")
    tr = load_dataset("cifar10", "train", root=tmp_path, valid_size=4, value_range=(0, 1))
    va = load_dataset("cifar10", "valid", root=tmp_path, valid_size=4, value_range=(0, 1))
    te = load_dataset("cifar10", "test", root=tmp_path, valid_size=4, value_range=(0, 1))
    assert (len(tr), len(va), len(te)) == (5 * N - 4, 4, N)
    assert tr.spec.shape == (3, 32, 32) and tr.spec.num_classes == 10 and tr.spec.levels == 256
    x, y = tr.get_batch(torch.arange(2))
    # record 0 of data_batch_1: label 0, R = 0 (but pixel (0, 1) = 7), G = 255, B = 0; record 1: R = 10, G = 254
    assert y.tolist() == [0, 1]
    assert torch.allclose(x[0, 0, 0, 1], torch.tensor(7 / 255)) and x[0, 0, 0, 0] == 0 and x[0, 0, 1, 1] == 0
    assert (x[0, 1] == 1).all() and (x[0, 2] == 0).all()
    assert torch.allclose(x[1, 0, 5, 5], torch.tensor(10 / 255)) and torch.allclose(x[1, 1, 0, 0], torch.tensor(254 / 255))
    # the validation records are the last of the training records (data_batch_5), the test records the test file
    _, yv = va.get_batch(torch.arange(4))
    assert yv.tolist() == [(4 + i) % 10 for i in range(N - 4, N)]
    _, yt = te.get_batch(torch.arange(N))
    assert yt.tolist() == [(100 + i) % 10 for i in range(N)]
    assert "not checked against the official archive" in tr.source and "copy.tar.xz" in tr.source


def test_dequantised_cifar_and_its_bits_per_dim_offset(tmp_path):
    from genzoo.units import bits_per_dim

    _tar(tmp_path / "c.tgz", _files())
    d = load_dataset("cifar10", "train", root=tmp_path, dequantize="uniform", valid_size=2)
    x, _ = d.get_batch(torch.arange(4), torch.Generator().manual_seed(0))
    assert x.min() >= -1 and x.max() < 1 and d.spec.dequantization == "uniform" and d.spec.num_dims == 3072
    assert bits_per_dim(0.0, d.spec.num_dims, d.spec.value_range) == pytest.approx(7.0)   # log2(256 / 2) per dimension


def test_a_folder_of_batch_files_and_the_subfolder(tmp_path):
    sub = tmp_path / "cifar10" / "cifar-10-batches-bin"
    sub.mkdir(parents=True)
    for name, raw in _files().items():
        (sub / name).write_bytes(raw)
    d = load_dataset("cifar10", "test", root=tmp_path)
    assert len(d) == N and str(sub) in d.source


def test_bad_files_are_one_line_errors(tmp_path):
    files = _files()
    files["data_batch_3.bin"] = files["data_batch_3.bin"][:-5]
    _tar(tmp_path / "bad.tar.gz", files)
    with pytest.raises(DataError, match="not a whole number of 3073-byte"):
        load_dataset("cifar10", "train", root=tmp_path)
    (tmp_path / "bad.tar.gz").unlink()
    files = _files()
    del files["test_batch.bin"]
    _tar(tmp_path / "short.tar.gz", files)
    with pytest.raises(DataError, match="holds no test_batch.bin"):
        load_dataset("cifar10", "test", root=tmp_path)
    (tmp_path / "short.tar.gz").unlink()
    _tar(tmp_path / cifar.ARCHIVE, _files())   # the official name, but not the official bytes
    with pytest.raises(DataError, match="not the official CIFAR-10 binary archive"):
        load_dataset("cifar10", "train", root=tmp_path)


def test_missing_offline_says_where_to_put_it(tmp_path, monkeypatch):
    import urllib.request

    def offline(*a, **k):
        raise OSError("no network")

    monkeypatch.setattr(urllib.request, "urlopen", offline)
    with pytest.raises(DataError, match="could not download CIFAR-10") as e:
        load_dataset("cifar10", "train", root=tmp_path / "empty")
    assert "--data-root" in str(e.value) and "\n" not in str(e.value)
    with pytest.raises(DataError, match="CIFAR-10 not found; put cifar-10-binary.tar.gz"):
        cifar.locate(tmp_path / "empty", download=False)


def test_a_folder_of_rgb_images_keeps_its_colour_and_a_grey_one_stays_grey(tmp_path):
    from PIL import Image

    rgb, grey = tmp_path / "rgb", tmp_path / "grey"
    rgb.mkdir()
    grey.mkdir()
    rng = np.random.default_rng(0)
    for i in range(10):
        Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8), "RGB").save(rgb / f"{i}.png")
        g = rng.integers(0, 256, (32, 32), dtype=np.uint8)
        Image.fromarray(np.stack([g, g, g], -1), "RGB").save(grey / f"{i}.png")   # RGB files of grey images
    c = load_dataset("folder", "train", path=str(rgb), image_size=32)
    assert c.spec.shape == (3, 32, 32) and "3 channels (colour" in c.source
    g = load_dataset("folder", "train", path=str(grey), image_size=32)
    assert g.spec.shape == (1, 32, 32) and "1 channel (grey" in g.source
    forced = load_dataset("folder", "train", path=str(rgb), image_size=32, channels=1)
    assert forced.spec.shape == (1, 32, 32)
    x, _ = g.get_batch(torch.arange(1))
    want = np.asarray(Image.open(g.files[0]))[..., 0].astype(np.float32) / 255 * 2 - 1   # the grey level, in [-1, 1]
    assert torch.allclose(x[0, 0], torch.from_numpy(want), atol=1e-6)


def test_training_prints_the_data_it_chose(tmp_path, capsys):
    from genzoo.cli import main
    from PIL import Image

    rgb = tmp_path / "rgb"
    rgb.mkdir()
    rng = np.random.default_rng(0)
    for i in range(20):
        Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8), "RGB").save(rgb / f"{i}.png")
    assert main(["train", "vae", "--data", str(rgb), "data.image_size=16", "model.arch=conv", "model.decoder=logistic", "train.steps=1",
                 "train.batch_size=4", "train.num_samples=2", "--no-progress", "--run-dir", str(tmp_path / "run")]) == 0
    err = capsys.readouterr().err
    assert "data: folder 3x16x16" in err and "3 channels (colour" in err and "resized to 16x16" in err
