"""Pictures (genzoo.viz): every vector data set gets a picture or a skip, never a traceback (issue 29)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from genzoo.cli import main
from genzoo.data import DataSpec
from genzoo.viz import save_samples


@pytest.mark.parametrize("dims", [1, 2, 3, 8])
def test_save_samples_vector_data_of_any_dimension(tmp_path, dims):
    from PIL import Image

    spec = DataSpec("array", "vector", (dims,), value_range=None)
    x = torch.randn(50, dims, generator=torch.Generator().manual_seed(0))
    path = save_samples(x, tmp_path / f"s{dims}.png", spec)
    assert path is not None and path.is_file()
    assert Image.open(path).size[0] > 0


def test_save_samples_without_a_picture_skips_with_one_log_line(tmp_path, capsys):
    spec = DataSpec("weird", "tensor", (2, 3), value_range=None)
    assert save_samples(torch.zeros(4, 2, 3), tmp_path / "s.png", spec) is None
    assert not (tmp_path / "s.png").exists()
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "no picture" in err and "Traceback" not in err


def test_train_flow_toy_on_8d_vectors_completes(tmp_path, capsys):
    arr = tmp_path / "my_8d.npy"
    np.save(arr, np.random.default_rng(0).normal(size=(300, 8)).astype(np.float32))
    run = tmp_path / "run"
    code = main(["train", "flow_toy", "--data", str(arr), "model.couplings=2", "model.hidden=8", "train.steps=4",
                 "train.batch_size=32", "train.sample_every=2", "train.ckpt_every=2", "train.valid_every=2", "train.log_every=2",
                 "train.num_samples=64", "train.warmup_steps=0", "--no-progress", "--run-dir", str(run)])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert "Traceback" not in err
    assert (run / "samples.png").is_file() and (run / "train_summary.json").is_file()
