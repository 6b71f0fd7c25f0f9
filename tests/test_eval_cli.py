"""``genzoo eval`` / ``genzoo sample`` keep their promises (issue 28): every evaluation kept and
printed before anything is written, sampling options reaching the sample metrics, a named feature
extractor, no silent FID on data the feature net was not made for, --device, and a mode-coverage
metric that a ring or a blob cannot fool."""
import json
import math
import os
import stat

import numpy as np
import pytest
import torch

from genzoo.cli import main
from genzoo.eval.modes import eight_gaussians_coverage


def _one_line_error(code, err, *needles):
    assert code == 2, err
    lines = [l for l in err.strip().splitlines() if l.strip()]
    assert len(lines) == 1, f"expected one line, got:\n{err}"
    assert lines[0].startswith("genzoo: error: ") and "Traceback" not in err, lines[0]
    for n in needles:
        assert n.lower() in lines[0].lower(), f"{n!r} not in: {lines[0]}"
    return lines[0]


# ------------------------------------------------------------------ E: mode coverage
def _centres():
    from genzoo.data.toys import _eight_centres

    return _eight_centres()


def test_modes_ring_scores_well_below_eight():
    """Uniform on the circle through the 8 centres: one connected ring, not 8 modes."""
    g = torch.Generator().manual_seed(0)
    r = float(_centres().norm(dim=1)[0])
    theta = torch.rand(4000, generator=g, dtype=torch.float64) * 2 * math.pi
    ring = torch.stack([r * theta.cos(), r * theta.sin()], 1)
    c = eight_gaussians_coverage(ring)
    assert c["modes_covered"] <= 2, c
    # a ring blurred by the modes' own std is no better
    c = eight_gaussians_coverage(ring + 0.35 * torch.randn(ring.shape, generator=g, dtype=torch.float64))
    assert c["modes_covered"] <= 2, c


def test_modes_blob_scores_well_below_eight():
    assert eight_gaussians_coverage(torch.zeros(2000, 2))["modes_covered"] == 0
    g = torch.Generator().manual_seed(1)
    one = _centres()[0] + 0.1 * torch.randn(2000, 2, generator=g, dtype=torch.float64)
    assert eight_gaussians_coverage(one)["modes_covered"] == 1
    wide = 3.0 * torch.randn(2000, 2, generator=g, dtype=torch.float64)  # one broad blob over all the modes
    assert eight_gaussians_coverage(wide)["modes_covered"] <= 2


def test_modes_true_samples_cover_eight_and_radius_is_stated():
    from genzoo.data.toys import sample_8gaussians

    for seed in range(3):
        c = eight_gaussians_coverage(sample_8gaussians(2000, torch.Generator().manual_seed(seed)))
        assert c["modes_covered"] == 8, c
        assert c["high_quality"] > 0.97
    assert "minimum distance" in c["protocol"] and c["mode_radius"] < 0.26 * 2 * float(_centres().norm(dim=1)[0]) * math.sin(math.pi / 8)


# ------------------------------------------------------------------ A: every evaluation kept, printed first
FLOW = ["flow_toy", "train.steps=20", "train.ckpt_every=20", "train.num_samples=0", "train.sample_every=0",
        "train.valid_every=0", "model.couplings=2", "model.hidden=16", "--no-progress"]


@pytest.fixture(scope="module")
def flow_run(tmp_path_factory):
    d = tmp_path_factory.mktemp("evalcli") / "flow"
    assert main(["train", *FLOW, "--run-dir", str(d)]) == 0
    return d


def _eval(capsys, *argv):
    code = main(["eval", *argv, "--no-progress"])
    out, err = capsys.readouterr()
    return code, out, err


def test_eval_keeps_every_evaluation(flow_run, tmp_path, capsys):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(flow_run, run)
    (run / "metrics.json").unlink(missing_ok=True)
    code, out, err = _eval(capsys, str(run), "--metrics", "nll,fid", "--n-samples", "1000")
    assert code == 0, err
    full = json.loads(out)  # stdout: exactly the record
    assert full["sample_metrics"]["n_samples"] == 1000 and "nll" in full and full["key"]
    code, out, err = _eval(capsys, str(run), "--metrics", "nll", "--split", "train", "--limit", "10")
    assert code == 0, err
    small = json.loads(out)
    assert small["key"] != full["key"] and small["nll"]["num_examples"] == 10
    store = json.loads((run / "metrics.json").read_text())
    assert set(store["evaluations"]) == {full["key"], small["key"]}
    kept = store["evaluations"][full["key"]]
    assert kept["sample_metrics"]["fid"] == full["sample_metrics"]["fid"] and kept["nll"] == full["nll"]
    # the top level is the latest evaluation (readers of the one-record file keep working)
    assert store["latest"] == small["key"] and store["nll"]["num_examples"] == 10
    # the identical evaluation replaces its own entry only
    assert _eval(capsys, str(run), "--metrics", "nll", "--split", "train", "--limit", "10")[0] == 0
    store = json.loads((run / "metrics.json").read_text())
    assert len(store["evaluations"]) == 2
    # different seed / options / limit: a new entry each
    assert _eval(capsys, str(run), "--metrics", "nll", "--split", "train", "--limit", "10", "--seed", "1")[0] == 0
    assert _eval(capsys, str(run), "--metrics", "nll", "--split", "train", "--limit", "11")[0] == 0
    assert len(json.loads((run / "metrics.json").read_text())["evaluations"]) == 4


def test_eval_keeps_an_older_one_record_file(flow_run, tmp_path, capsys):
    out = tmp_path / "m.json"
    old = {"run": "x", "date": "2026-01-01", "split": "test", "nll": {"nll_nats": 1.5}}
    out.write_text(json.dumps(old))
    assert _eval(capsys, str(flow_run), "--metrics", "nll", "--limit", "10", "--out", str(out))[0] == 0
    store = json.loads(out.read_text())
    assert store["evaluations"]["earlier: 2026-01-01"] == old and len(store["evaluations"]) == 2
    assert store["nll"]["num_examples"] == 10
    out.write_text("not json")
    code, o, err = _eval(capsys, str(flow_run), "--metrics", "nll", "--limit", "10", "--out", str(out))
    _one_line_error(code, err, "not a genzoo metrics file", "--out")
    assert json.loads(o)["nll"]["num_examples"] == 10 and out.read_text() == "not json"


@pytest.mark.parametrize("errno_name", ["EROFS", "ENOSPC"])
def test_eval_prints_results_before_a_failed_write(flow_run, tmp_path, capsys, monkeypatch, errno_name):
    import errno

    import genzoo.eval.runner as runner

    def fail(path, text):
        raise OSError(getattr(errno, errno_name), os.strerror(getattr(errno, errno_name)), str(path))

    monkeypatch.setattr(runner, "atomic_write_text", fail)
    code, out, err = _eval(capsys, str(flow_run), "--metrics", "nll", "--limit", "10", "--out", str(tmp_path / "m.json"))
    _one_line_error(code, err, "printed", "m.json", "--out")
    assert json.loads(out)["nll"]["num_examples"] == 10


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_eval_in_a_read_only_run_folder(flow_run, tmp_path, capsys):
    import shutil

    run = tmp_path / "ro"
    shutil.copytree(flow_run, run)
    run.chmod(stat.S_IRUSR | stat.S_IXUSR)
    try:
        code, out, err = _eval(capsys, str(run), "--metrics", "nll", "--limit", "10")
        _one_line_error(code, err, "--out")
        assert json.loads(out)["nll"]["num_examples"] == 10
    finally:
        run.chmod(stat.S_IRWXU)


# ------------------------------------------------------------------ B: options reach the samples; --extractor
DIFF = ["diffusion_toy", "train.steps=20", "train.ckpt_every=20", "train.num_samples=0", "train.sample_every=0",
        "train.valid_every=0", "model.hidden=16", "model.depth=1", "--no-progress"]


@pytest.fixture(scope="module")
def diff_run(tmp_path_factory):
    d = tmp_path_factory.mktemp("evalcli") / "diff"
    assert main(["train", *DIFF, "--run-dir", str(d)]) == 0
    return d


def test_eval_sampling_options_reach_every_sample_metric(diff_run, tmp_path, capsys, monkeypatch):
    import genzoo.eval.runner as runner

    seen = []
    real_draw = runner.draw_samples

    def spy(model, n, **kw):
        seen.append({k: v for k, v in kw.items() if k not in ("seed", "progress", "batch_size")})
        return real_draw(model, n, **kw)

    monkeypatch.setattr(runner, "draw_samples", spy)
    out = str(tmp_path / "m.json")
    code, o, err = _eval(capsys, str(diff_run), "--metrics", "fid,pr", "--n-samples", "1000", "--out", out,
                         "sampler=euler", "steps=2")
    assert code == 0, err
    res = json.loads(o)
    assert seen and all(s["sampler"] == "euler" and s["steps"] == 2 for s in seen), seen
    assert res["sample_metrics"]["sample_options"]["sampler"] == "euler" and res["sample_metrics"]["sample_options"]["steps"] == 2
    assert 'sample={' in res["key"] and '"steps":2' in res["key"]
    seen.clear()
    code, o, err = _eval(capsys, str(diff_run), "--metrics", "nll,fid", "--n-samples", "1000", "--limit", "4", "--out", out,
                         "sample.steps=3", "log_prob.rtol=0.01")
    assert code == 0, err
    res = json.loads(o)
    assert seen[0]["steps"] == 3 and res["nll"]["log_prob_options"]["rtol"] == 0.01 and "rtol" not in seen[0]


def test_eval_refuses_options_that_do_nothing(diff_run, flow_run, capsys):
    _one_line_error(*_eval(capsys, str(diff_run), "--metrics", "fid", "stesp=2")[::2], "stesp", "sample options", "steps")
    _one_line_error(*_eval(capsys, str(flow_run), "--metrics", "fid", "extractor=inception")[::2], "extractor", "--extractor")
    _one_line_error(*_eval(capsys, str(flow_run), "--metrics", "nll", "temperature=0.5")[::2], "temperature", "no effect")
    _one_line_error(*_eval(capsys, str(flow_run), "--metrics", "fid", "k=5")[::2], "k", "no effect", "nll")
    _one_line_error(*_eval(capsys, str(flow_run), "--metrics", "fid", "log_prob.temperature=1")[::2], "temperature")


def test_eval_extractor_is_a_named_choice(flow_run, tmp_path, capsys):
    out = str(tmp_path / "m.json")
    code, o, err = _eval(capsys, str(flow_run), "--metrics", "fid", "--n-samples", "1000", "--extractor", "raw", "--out", out)
    assert code == 0, err
    res = json.loads(o)
    assert res["sample_metrics"]["extractor"] == "raw" and "extractor=raw" in res["key"]
    _one_line_error(*_eval(capsys, str(flow_run), "--metrics", "fid", "--extractor", "incepton")[::2],
                    "incepton", "inception", "mnist", "raw")
    _one_line_error(*_eval(capsys, str(flow_run), "--metrics", "fid", "--extractor", str(tmp_path / "no.safetensors"))[::2],
                    "not found")
    try:
        import torch_fidelity  # noqa: F401
    except ImportError:
        _one_line_error(*_eval(capsys, str(flow_run), "--metrics", "fid", "--extractor", "inception")[::2], "torch-fidelity")
    # a feature-net FILE of the MNISTFeatureNet architecture: named by file and content, refused on 2-D points
    from genzoo.eval.features import MNIST_WEIGHTS, get_extractor

    mine = tmp_path / "net.safetensors"
    mine.write_bytes(MNIST_WEIGHTS.read_bytes())
    ext = get_extractor(str(mine))
    assert ext.name.startswith("file:net.safetensors@") and ext.dim == 128
    x = torch.rand(6, 1, 28, 28) * 2 - 1
    assert torch.equal(ext(x), get_extractor("mnist")(x))
    _one_line_error(*_eval(capsys, str(flow_run), "--metrics", "fid", "--n-samples", "1000", "--extractor", str(mine))[::2],
                    "28")
    bad = tmp_path / "bad.safetensors"
    bad.write_text("nope")
    _one_line_error(*_eval(capsys, str(flow_run), "--metrics", "fid", "--extractor", str(bad))[::2], "bad.safetensors")


def test_eval_sampling_options_reach_the_modes_samples(flow_run, tmp_path, capsys, monkeypatch):
    import genzoo.eval.runner as runner

    seen = []
    real_draw = runner.draw_samples
    monkeypatch.setattr(runner, "draw_samples", lambda model, n, **kw: seen.append(kw) or real_draw(model, n, **kw))
    code, o, err = _eval(capsys, str(flow_run), "--metrics", "modes", "--n-samples", "200", "--out", str(tmp_path / "m.json"),
                         "temperature=0.5")
    assert code == 0, err
    assert seen[0]["temperature"] == 0.5 and json.loads(o)["modes"]["num_samples"] == 200


# ------------------------------------------------------------------ C: no silent FID on your own images
@pytest.fixture(scope="module")
def own_image_runs(tmp_path_factory):
    base = tmp_path_factory.mktemp("own")
    r = np.random.default_rng(0)
    runs = {}
    for name, shape in (("rgb", (60, 32, 32, 3)), ("grey", (60, 28, 28))):
        np.save(base / f"{name}.npy", r.integers(0, 256, shape, dtype=np.uint8))
        d = base / name
        assert main(["train", "gan", "--data", str(base / f"{name}.npy"), "model.arch=mlp", "model.hidden=16",
                     "train.steps=2", "train.batch_size=8", "train.num_samples=0", "train.sample_every=0",
                     "train.ckpt_every=2", "--no-progress", "--run-dir", str(d)]) == 0
        runs[name] = d
    return runs


def test_fid_on_your_own_images_needs_a_named_extractor(own_image_runs, capsys):
    for name in ("rgb", "grey"):  # raw pixels of RGB images; the digit net on 28x28 grey non-digits: both refused
        _one_line_error(*_eval(capsys, str(own_image_runs[name]), "--metrics", "fid")[::2],
                        "--extractor", "inception", "mnist", "raw", "array")
        _one_line_error(*_eval(capsys, str(own_image_runs[name]), "--metrics", "kid,pr")[::2], "--extractor")


def test_fid_needs_enough_samples_and_reference_images(own_image_runs, flow_run, capsys):
    # 6 reference images (the array's test split) against 10,000 samples
    line = _one_line_error(*_eval(capsys, str(own_image_runs["grey"]), "--metrics", "fid", "--extractor", "mnist")[::2],
                           "6 reference", "1000", "--allow-small")
    assert "10000 samples" in line
    _one_line_error(*_eval(capsys, str(flow_run), "--metrics", "fid", "--n-samples", "100")[::2], "100 samples", "1000",
                    "--allow-small")
    _one_line_error(*_eval(capsys, str(flow_run), "--metrics", "kid", "--n-samples", "999")[::2], "1000")
    code, out, err = _eval(capsys, str(own_image_runs["grey"]), "--metrics", "fid", "--extractor", "mnist",
                           "--allow-small", "--n-samples", "20", "--out", str(own_image_runs["grey"] / "small.json"))
    assert code == 0, err
    sm = json.loads(out)["sample_metrics"]
    assert sm["extractor"] == "mnist" and sm["small_sets"] and sm["n_real"] == 6 and sm["min_set_size"] == 1000


def test_auto_extractor_only_for_data_it_was_made_for():
    from genzoo.data.base import DataSpec
    from genzoo.errors import ConfigError
    from genzoo.eval.features import get_extractor

    def spec(name, shape, kind="image"):
        return DataSpec(name, kind, shape)

    assert get_extractor("auto", spec("mnist", (1, 28, 28))).name == "mnist"
    assert get_extractor("auto", DataSpec("binarized_mnist", "image", (1, 28, 28), value_range=None, discrete="binary")).name == "mnist"
    assert get_extractor("auto", spec("digits", (1, 8, 8))).name == "raw"
    assert get_extractor("auto", spec("8gaussians", (2,), "vector")).name == "raw"
    assert get_extractor("auto", spec("cifar10", (3, 32, 32))).name == "cifar10"
    assert get_extractor("auto", shape=(3, 32, 32)).name == "cifar10"  # no spec: the caller asserts the data
    for name, shape in (("folder", (1, 28, 28)), ("array", (3, 32, 32)), ("folder", (3, 32, 32)), ("array", (5,))):
        with pytest.raises(ConfigError, match="--extractor"):
            get_extractor("auto", spec(name, shape, "vector" if len(shape) == 1 else "image"))
    assert get_extractor("mnist", spec("folder", (1, 28, 28))).name == "mnist"  # named: the user's choice
    assert get_extractor("cifar10", spec("folder", (3, 32, 32))).name == "cifar10"


# ------------------------------------------------------------------ D: --device for sample and eval
def test_resolve_device_auto_order(monkeypatch):
    from genzoo.eval.runner import resolve_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    assert resolve_device("auto").type == "cpu" and resolve_device("cpu").type == "cpu"
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    assert resolve_device("auto").type == "mps"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device("auto").type == "cuda"


def test_sample_and_eval_take_a_device(flow_run, tmp_path, capsys, monkeypatch):
    import genzoo.train.run as tr
    from genzoo.eval.runner import resolve_device

    devices = []
    real = tr.load_run
    import genzoo.eval.runner as runner

    spy = lambda *a, **k: devices.append(k.get("device")) or real(*a, **k)  # noqa: E731
    monkeypatch.setattr(tr, "load_run", spy)  # genzoo sample
    monkeypatch.setattr(runner, "load_run", spy)  # genzoo eval
    for dev in ("cpu", "auto"):
        assert main(["sample", str(flow_run), "--n", "4", "--device", dev, "--out", str(tmp_path / f"{dev}.npy")]) == 0
        capsys.readouterr()
        code, out, err = _eval(capsys, str(flow_run), "--metrics", "nll", "--limit", "5", "--device", dev,
                               "--out", str(tmp_path / "m.json"))
        assert code == 0, err
        assert json.loads(out)["device"] == str(resolve_device(dev))
    assert [str(d) for d in devices] == ["cpu", "cpu", str(resolve_device("auto")), str(resolve_device("auto"))]
    assert np.array_equal(np.load(tmp_path / "cpu.npy"), np.load(tmp_path / "auto.npy")) or resolve_device("auto").type != "cpu"
    capsys.readouterr()
    for cmd in (["sample", str(flow_run), "--n", "4"], ["eval", str(flow_run), "--metrics", "nll", "--limit", "5"]):
        code = main([*cmd, "--device", "tpu"])
        _one_line_error(code, capsys.readouterr().err, "unknown device", "auto, cpu, cuda, mps")
        if not torch.cuda.is_available():
            code = main([*cmd, "--device", "cuda"])
            _one_line_error(code, capsys.readouterr().err, "--device cuda", "no cuda device", "--device cpu")
        if not torch.backends.mps.is_available():
            code = main([*cmd, "--device", "mps"])
            _one_line_error(code, capsys.readouterr().err, "--device mps", "not available")


def test_eval_pr_keeps_the_precision_metric_beside_the_sampling_precision(diff_run, tmp_path, capsys):
    """Defect (session 19): the sampling precision ("fp32"/"bf16") was written over the PR metric's
    `precision` (a number in [0, 1]) in the result of `genzoo eval --metrics pr`."""
    code, o, err = _eval(capsys, str(diff_run), "--metrics", "pr", "--n-samples", "1000", "--out", str(tmp_path / "m.json"),
                         "sampler=euler", "steps=2")
    assert code == 0, err
    sm = json.loads(o)["sample_metrics"]
    assert isinstance(sm["precision"], float) and 0.0 <= sm["precision"] <= 1.0, sm
    assert isinstance(sm["recall"], float)
    assert sm["sample_precision"] in ("fp32", "bf16")


def test_every_library_metric_is_a_genzoo_eval_metric_and_in_its_help(diff_run, tmp_path, capsys):
    """Defect (issue 30 item 6): `prdc` was in the library's sample_metrics and refused by `genzoo eval`
    (whose list was kept by hand). One registry (genzoo.metric_registry) is now read by both and the help."""
    from genzoo.eval import METRICS as LIBRARY
    from genzoo.eval.runner import VALID_METRICS
    from genzoo.metric_registry import METRICS

    assert set(LIBRARY) <= set(VALID_METRICS) == set(METRICS)
    code, o, err = _eval(capsys, str(diff_run), "--metrics", "prdc", "--n-samples", "1000", "--out",
                         str(tmp_path / "m.json"), "sampler=euler", "steps=2")
    assert code == 0, err
    sm = json.loads(o)["sample_metrics"]
    assert all(0.0 <= sm[k] for k in ("precision", "recall", "density", "coverage")) and sm["coverage"] <= 1.0, sm
    with pytest.raises(SystemExit):
        main(["eval", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert all(f"{m}:" in help_text for m in METRICS), help_text
    code, _, err = _eval(capsys, str(diff_run), "--metrics", "prcd")
    assert code == 2 and "did you mean 'prdc'" in err, err
