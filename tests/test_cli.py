"""The command line: list / train / sample / eval on real (small) data, and every user-error
path as ONE line `genzoo: error: ...` naming the problem and the valid choices, exit code 2,
never a traceback."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from genzoo.cli import main

# a tiny VAE on the 8x8 digits: seconds on one core
TINY = ["vae", "data.name=digits", "data.binarize=dynamic", "model.hidden=32", "model.latent_dim=4",
        "train.steps=20", "train.batch_size=32", "train.ckpt_every=10", "train.num_samples=4",
        "train.sample_every=10", "eval.n_samples=200", "--no-progress"]


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_line_error(code, err, *needles):
    assert code == 2, err
    lines = [l for l in err.strip().splitlines() if l.strip()]
    assert len(lines) == 1, f"expected one line, got:\n{err}"
    assert lines[0].startswith("genzoo: error: "), lines[0]
    assert "Traceback" not in err
    for n in needles:
        assert n.lower() in lines[0].lower(), f"{n!r} not in: {lines[0]}"
    return lines[0]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    d = tmp_path_factory.mktemp("cli") / "run"
    assert main(["train", *TINY, "--run-dir", str(d)]) == 0
    return d


def test_list_shows_models_datasets_recipes(capsys):
    code, out, _ = run(capsys, "list")
    assert code == 0
    for word in ("vae", "mnist", "binarized_mnist", "digits", "moons", "shakespeare", "folder", "array", "vae_conv_mnist"):
        assert word in out, word
    code, out, _ = run(capsys, "list", "vae")
    assert code == 0 and "latent_dim" in out and "decoder" in out and "Kingma" in out


def test_train_writes_run_folder_and_overrides_after_options(tiny_run):
    for f in ("config.yaml", "run.json", "metrics.csv", "samples.png", "train_summary.json"):
        assert (tiny_run / f).is_file(), f
    s = json.loads((tiny_run / "train_summary.json").read_text())
    assert s["steps"] == 20
    cfg = (tiny_run / "config.yaml").read_text()
    assert "latent_dim: 4" in cfg and "shape:" in cfg  # shape linked from the data set


def test_sample_png_and_npy_reproducible(tiny_run, tmp_path, capsys):
    png = tmp_path / "g.png"
    code, out, _ = run(capsys, "sample", str(tiny_run), "--n", "16", "--out", str(png))
    assert code == 0 and png.is_file()
    assert Image.open(png).size[0] > 8 * 4
    a, b = tmp_path / "a.npy", tmp_path / "b.npy"
    assert main(["sample", str(tiny_run), "--n", "8", "--seed", "3", "--out", str(a)]) == 0
    assert main(["sample", str(tiny_run), "--n", "8", "--seed", "3", "--out", str(b), "temperature=1.0"]) == 0
    xa, xb = np.load(a), np.load(b)
    assert xa.shape == (8, 1, 8, 8) and np.array_equal(xa, xb)
    assert xa.min() >= 0 and xa.max() <= 1  # the recipe's sample.mean=true: Bernoulli means
    c = tmp_path / "c.npy"
    assert main(["sample", str(tiny_run), "--n", "8", "--out", str(c), "mean=false"]) == 0
    assert set(np.unique(np.load(c)).tolist()) <= {0.0, 1.0}


def test_eval_writes_metrics(tiny_run, tmp_path, capsys):
    out_json = tmp_path / "m.json"
    code, out, _ = run(capsys, "eval", str(tiny_run), "--metrics", "nll,kid", "--limit", "100", "--n-samples", "100",
                       "--allow-small", "--no-progress", "--out", str(out_json), "k=4")  # 100 < 1000: --allow-small
    assert code == 0
    res = json.loads(out_json.read_text())
    assert res["nll"]["num_examples"] == 100 if "num_examples" in res["nll"] else True
    assert np.isfinite(res["nll"]["nll_nats"]) and res["nll"]["nll_nats"] > 0
    assert "binar" in res["data"]
    assert np.isfinite(res["sample_metrics"]["kid"])


# ---- every error path: one line, exit 2 ------------------------------------------------

def test_unknown_model(capsys):
    line = assert_one_line_error(*run(capsys, "train", "vea")[::2], "unknown model", "vae")
    assert "did you mean" in line.lower()


def test_unknown_key(capsys, tmp_path):
    assert_one_line_error(*run(capsys, "train", *TINY, "model.latent_dimm=3", "--run-dir", str(tmp_path / "r"))[::2],
                          "latent_dimm", "latent_dim")
    assert_one_line_error(*run(capsys, "train", *TINY, "train.stpes=3", "--run-dir", str(tmp_path / "r"))[::2], "stpes", "steps")


def test_bad_value(capsys, tmp_path):
    assert_one_line_error(*run(capsys, "train", *TINY, "train.steps=many", "--run-dir", str(tmp_path / "r"))[::2], "steps")
    assert_one_line_error(*run(capsys, "train", *TINY, "model.decoder=poisson", "--run-dir", str(tmp_path / "r"))[::2],
                          "poisson", "bernoulli")
    assert_one_line_error(*run(capsys, "train", *TINY, "data.binarize=sometimes", "--run-dir", str(tmp_path / "r"))[::2],
                          "sometimes", "dynamic")
    assert_one_line_error(*run(capsys, "train", *TINY, "train.optimizer=adamax", "--run-dir", str(tmp_path / "r"))[::2],
                          "adamax", "adam")


def test_unknown_data_set(capsys, tmp_path):
    assert_one_line_error(*run(capsys, "train", *TINY, "data.name=mnits", "--run-dir", str(tmp_path / "r"))[::2],
                          "mnits", "mnist")


def test_missing_data(capsys, tmp_path, monkeypatch):
    # no such file/folder given on the command line
    assert_one_line_error(*run(capsys, "train", "vae", "--data", str(tmp_path / "nope"), "--run-dir", str(tmp_path / "r"))[::2],
                          "nope")
    # a data root without the MNIST files, downloads impossible (offline): clear error, no traceback
    import genzoo.data.files as files

    import urllib.error

    def offline(*a, **k):
        raise urllib.error.URLError("network is unreachable (test)")

    monkeypatch.setattr(files.urllib.request, "urlopen", offline)
    monkeypatch.setattr(files, "VENDORED", tmp_path / "empty")
    monkeypatch.setenv("GENZOO_DATA", str(tmp_path / "empty"))
    code, _, err = run(capsys, "train", "vae", "data.name=mnist", "data.binarize=dynamic", "--data-root", str(tmp_path / "empty"), "--run-dir", str(tmp_path / "r"))
    if code == 0:
        pytest.skip("vendored copy found through another path")
    assert_one_line_error(code, err, "could not download", "GENZOO_DATA")


def test_wrong_image_shape(capsys, tmp_path):
    # a model built for 28x28 asked to train on 8x8 digits
    line = assert_one_line_error(*run(capsys, "train", *TINY, "model.shape=[1,28,28]", "--run-dir", str(tmp_path / "r"))[::2], "shape")
    assert "8" in line and "28" in line
    # a user array that is not a batch of images
    arr = tmp_path / "flat.npy"
    np.save(arr, np.zeros(10, dtype=np.float32))
    assert_one_line_error(*run(capsys, "train", "vae", "--data", str(arr), "--run-dir", str(tmp_path / "r2"))[::2], "flat.npy")


def test_bernoulli_on_grey_levels_refused(capsys, tmp_path):
    assert_one_line_error(*run(capsys, "train", *TINY, "data.binarize=none", "--run-dir", str(tmp_path / "r"))[::2],
                          "bernoulli", "binar")


def test_corrupt_checkpoint(capsys, tiny_run, tmp_path):
    import shutil

    bad = tmp_path / "bad"
    shutil.copytree(tiny_run, bad)
    from genzoo.train.checkpoint import latest_checkpoint

    ck = latest_checkpoint(bad)
    target = next(p for p in sorted(ck.iterdir()) if p.name.startswith("model"))
    target.write_bytes(target.read_bytes()[:100])
    assert_one_line_error(*run(capsys, "sample", str(bad), "--n", "4", "--out", str(tmp_path / "x.png"))[::2], "checkpoint")


def test_mismatched_checkpoint(capsys, tiny_run, tmp_path):
    import shutil

    bad = tmp_path / "mismatch"
    shutil.copytree(tiny_run, bad)
    cfg = (bad / "config.yaml").read_text().replace("latent_dim: 4", "latent_dim: 5")
    (bad / "config.yaml").write_text(cfg)
    assert_one_line_error(*run(capsys, "sample", str(bad), "--n", "4", "--out", str(tmp_path / "x.png"))[::2], "checkpoint")


def test_not_a_run_folder(capsys, tmp_path):
    assert_one_line_error(*run(capsys, "sample", str(tmp_path / "none"))[::2], "does not exist")
    assert_one_line_error(*run(capsys, "eval", str(tmp_path))[::2], "not a genzoo run folder")


def test_unknown_metric_and_options(capsys, tiny_run, tmp_path):
    assert_one_line_error(*run(capsys, "eval", str(tiny_run), "--metrics", "nll,fdi")[::2], "fdi", "fid")
    assert_one_line_error(*run(capsys, "sample", str(tiny_run), "--n", "4", "tempurature=2", "--out", str(tmp_path / "x.png"))[::2],
                          "tempurature", "temperature")
    assert_one_line_error(*run(capsys, "sample", str(tiny_run), "--n", "0")[::2], "--n")
    assert_one_line_error(*run(capsys, "sample", str(tiny_run), "--n", "4", "--out", str(tmp_path / "x.gif"))[::2], ".png")
    assert_one_line_error(*run(capsys, "train", "--bogus")[::2], "--bogus")


def test_resume_needs_folder(capsys, tmp_path):
    assert_one_line_error(*run(capsys, "train", "--resume")[::2], "--resume")


def test_console_script_exit_code_and_no_traceback(tmp_path):
    env = dict(os.environ, PYTHONPATH=os.path.join(os.path.dirname(__file__), "..", "src"))
    r = subprocess.run([sys.executable, "-m", "genzoo.cli", "train", "notamodel"], capture_output=True, text=True, env=env)
    assert r.returncode == 2
    assert "Traceback" not in r.stderr and r.stderr.startswith("genzoo: error: ")
    r = subprocess.run([sys.executable, "-m", "genzoo.cli", "--help"], capture_output=True, text=True, env=env)
    assert r.returncode == 0 and "train" in r.stdout and "sample" in r.stdout and "eval" in r.stdout
