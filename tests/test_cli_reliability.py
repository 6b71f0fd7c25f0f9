"""Issue 28: run folders that never lose work, and errors that are one line and exit 2.

Each test here failed on main at 415f2fd: a second `genzoo train` replaced a run, two
trainings shared a folder, `--resume RUN train.steps=N` was refused, Ctrl-C lost the steps
since the last checkpoint, flipped bytes inside model.safetensors went unnoticed, run files
were 0600, and several bad inputs gave tracebacks.
"""
import errno
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from genzoo.cli import main

SRC = str(Path(__file__).resolve().parents[1] / "src")
ENV = dict(os.environ, PYTHONPATH=SRC + os.pathsep + os.environ.get("PYTHONPATH", ""))
TINY = ["vae", "data.name=digits", "data.binarize=dynamic", "model.hidden=32", "model.latent_dim=4",
        "train.batch_size=32", "train.num_samples=4", "eval.n_samples=200", "--no-progress"]


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def one_line(code, err, *needles, exit_code=2):
    assert code == exit_code, err
    lines = [l for l in err.strip().splitlines() if l.strip() and not l.startswith("[genzoo ")]
    assert len(lines) == 1, f"expected one line, got:\n{err}"
    assert "Traceback" not in err
    for n in needles:
        assert n.lower() in lines[0].lower(), f"{n!r} not in: {lines[0]}"
    return lines[0]


def train_tiny(tmp, steps=20, *extra, name="run"):
    d = Path(tmp) / name
    assert main(["train", *TINY, f"train.steps={steps}", "train.ckpt_every=10", *extra, "--run-dir", str(d)]) == 0
    return d


def summary(d):
    return json.loads((Path(d) / "train_summary.json").read_text())


# -- 1. a second training into a run folder ----------------------------------------------
def test_second_train_into_a_run_is_refused_and_overwrite_replaces_it(tmp_path, capsys):
    d = train_tiny(tmp_path, 20)
    capsys.readouterr()
    before = sorted(p.name for p in (d / "checkpoints").iterdir())
    cfg_before = (d / "config.yaml").read_text()
    line = one_line(*run(capsys, "train", *TINY, "train.steps=10", "--run-dir", d)[::2], "--resume", "--overwrite", str(d))
    assert "step 20" in line
    assert sorted(p.name for p in (d / "checkpoints").iterdir()) == before
    assert (d / "config.yaml").read_text() == cfg_before and summary(d)["steps"] == 20
    # another model into the same folder: refused the same way
    one_line(*run(capsys, "train", "vae_toy", "train.steps=5", "--run-dir", d)[::2], "--overwrite")
    # --overwrite replaces it: no step-20 checkpoint, no old sample grids left behind
    code, _, err = run(capsys, "train", *TINY, "train.steps=10", "--run-dir", d, "--overwrite")
    assert code == 0, err
    assert summary(d)["steps"] == 10
    assert not (d / "checkpoints" / "step-0000020").exists()
    assert not (d / "samples" / "step-0000020.png").exists()


def test_a_folder_of_other_files_is_never_used(tmp_path, capsys):
    d = tmp_path / "mine"
    d.mkdir()
    (d / "thesis.tex").write_text("precious")
    for extra in ([], ["--overwrite"]):
        one_line(*run(capsys, "train", *TINY, "train.steps=5", "--run-dir", d, *extra)[::2], "not a genzoo run folder")
    assert (d / "thesis.tex").read_text() == "precious" and sorted(os.listdir(d)) == ["thesis.tex"]


# -- 2. one writer per run folder ----------------------------------------------------------
HOLD = """
import sys, time
from genzoo.train.runfolder import run_lock
with run_lock(sys.argv[1], "genzoo train"):
    print("locked", flush=True)
    time.sleep(120)
"""


def test_one_writer_per_folder_and_a_killed_holder_leaves_no_stale_lock(tmp_path, capsys):
    d = tmp_path / "run"
    p = subprocess.Popen([sys.executable, "-c", HOLD, str(d)], stdout=subprocess.PIPE, text=True, env=ENV)
    try:
        assert p.stdout.readline().strip() == "locked"
        line = one_line(*run(capsys, "train", *TINY, "train.steps=5", "--run-dir", d)[::2], "in use by")
        assert f"process {p.pid}" in line
        assert not (d / "checkpoints").exists() and not (d / "config.yaml").exists()
    finally:
        p.kill()  # SIGKILL: the kernel drops the flock with the process
        p.wait()
    code, _, err = run(capsys, "train", *TINY, "train.steps=5", "--run-dir", d)
    assert code == 0, err


def test_lock_is_reentrant_within_a_process_and_released(tmp_path):
    from genzoo.errors import ConfigError
    from genzoo.train.runfolder import _HELD, run_lock

    with run_lock(tmp_path):
        with run_lock(tmp_path):
            pass
        assert len(_HELD) == 1
    assert not _HELD
    with run_lock(tmp_path):  # free again
        pass
    r = subprocess.run([sys.executable, "-c", HOLD.replace("time.sleep(120)", "pass"), str(tmp_path)],
                       capture_output=True, text=True, env=ENV)
    assert r.returncode == 0 and "locked" in r.stdout
    assert issubclass(ConfigError, Exception)


# -- 3. --resume takes train.* overrides; a time budget on resume ----------------------------
def test_resume_extends_a_finished_run_and_refuses_model_changes(tmp_path, capsys):
    d = train_tiny(tmp_path, 20)
    capsys.readouterr()
    code, _, err = run(capsys, "train", "--resume", d, "train.steps=30", "train.lr=5e-4")
    assert code == 0, err
    assert summary(d)["steps"] == 30
    assert "lr: 0.0005" in (d / "config.yaml").read_text()
    one_line(*run(capsys, "train", "--resume", d, "model.hidden=8")[::2], "train.*")
    one_line(*run(capsys, "train", "--resume", d, "--overwrite")[::2], "--overwrite")


def test_time_budget_on_resume_means_that_many_more_seconds(tmp_path, capsys):
    d = train_tiny(tmp_path, 10**6, "train.time_budget=1", "train.ckpt_every=0")
    s1 = summary(d)
    assert s1["stopped_by"].startswith("time budget") and s1["train_time_s"] >= 1.0
    capsys.readouterr()
    # resumed as it was: the budget is spent, nothing more is trained
    assert main(["train", "--resume", str(d)]) == 0
    assert summary(d)["steps"] == s1["steps"]
    # train.time_budget=S on resume: S more seconds
    assert main(["train", "--resume", str(d), "train.time_budget=1"]) == 0
    s2 = summary(d)
    assert s2["steps"] > s1["steps"] and s2["train_time_s"] >= s1["train_time_s"] + 1.0
    assert s2["train_time_s"] < s1["train_time_s"] + 1.0 + 30  # not the budget counted from zero
    one_line(*run(capsys, "train", "--resume", d, "train.time_budget=-3")[::2], "time_budget")


def test_divergence_message_names_a_resume_command_that_works(tmp_path, capsys):
    d = tmp_path / "run"
    code, _, err = run(capsys, "train", *TINY, "train.steps=40", "train.ckpt_every=10", "train.lr=1e6",
                       "train.max_loss=1e3", "--run-dir", d)
    line = one_line(code, err, "diverged")
    cmd = re.search(r"`(genzoo train --resume [^`]+)`", line).group(1)
    argv = cmd.split()[1:]
    assert argv[:3] == ["train", "--resume", str(d)]
    assert main(argv + ["train.steps=1"]) in (0, 2)  # the command parses and runs (it may diverge again)
    err = capsys.readouterr().err
    assert "only accepts train.*" not in err and "drop the model name" not in err


# -- 4. SIGINT / SIGTERM write a checkpoint ---------------------------------------------------
@pytest.mark.parametrize("sig, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_signal_writes_a_checkpoint_and_prints_the_real_resume_command(tmp_path, sig, code):
    d = tmp_path / "run"
    p = subprocess.Popen([sys.executable, "-m", "genzoo.cli", "train", *TINY, "train.steps=1000000", "train.ckpt_every=0",
                          "--run-dir", str(d)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV)
    t0 = time.time()
    while not ((d / "metrics.csv").is_file() and len((d / "metrics.csv").read_text().splitlines()) >= 2):
        assert p.poll() is None and time.time() - t0 < 120, p.stderr.read() if p.poll() is not None else "too slow"
        time.sleep(0.2)
    p.send_signal(sig)
    out, err = p.communicate(timeout=120)
    assert p.returncode == code, err
    assert "Traceback" not in err
    assert f"genzoo train --resume {d}" in err and "RUN_DIR" not in err
    from genzoo.train.checkpoint import latest_checkpoint, load_checkpoint

    ck = latest_checkpoint(d)
    step = load_checkpoint(ck)["step"]
    assert step >= 50  # at least the logged steps: nothing since the start was lost
    assert main(["train", "--resume", str(d), f"train.steps={step + 3}"]) == 0
    assert summary(d)["steps"] == step + 3


def test_ctrl_c_during_start_up_is_one_line(tmp_path, capsys, monkeypatch):
    import genzoo.train.run as run_mod

    def interrupted(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(run_mod, "prepare", interrupted)
    one_line(*run(capsys, "train", *TINY, "--run-dir", tmp_path / "r")[::2], "interrupted", exit_code=130)


# -- 5. corrupted tensors are detected; an older checkpoint is kept ------------------------------
def test_flipped_bytes_in_weights_are_detected_and_the_previous_checkpoint_is_named(tmp_path, capsys):
    from genzoo.train.checkpoint import load_checkpoint

    d = train_tiny(tmp_path, 20)
    capsys.readouterr()
    ckdir = d / "checkpoints"
    assert (ckdir / "step-0000010").is_dir() and (ckdir / "step-0000020").is_dir()  # the previous one is kept
    f = ckdir / "step-0000020" / "model.safetensors"
    b = bytearray(f.read_bytes())
    for i in range(len(b) - 4000, len(b)):  # inside the tensor data: safetensors itself cannot see it
        b[i] ^= 0x5A
    f.write_bytes(bytes(b))
    for argv in (["sample", d], ["eval", d, "--metrics", "nll", "--limit", "10"], ["train", "--resume", d, "train.steps=25"]):
        line = one_line(*run(capsys, *argv)[::2], "corrupt", str(f))
        assert str(ckdir / "step-0000010") in line
    assert load_checkpoint(ckdir / "step-0000010")["step"] == 10
    # the fallback the message prints works
    import shutil

    shutil.rmtree(ckdir / "step-0000020")
    (ckdir / "LATEST").write_text("step-0000010\n")
    assert run(capsys, "sample", d)[0] == 0


# -- 7. run files follow the umask ---------------------------------------------------------------
@pytest.mark.parametrize("umask, fmode, dmode", [(0o022, 0o644, 0o755), (0o077, 0o600, 0o700)])
def test_run_files_follow_the_umask(tmp_path, umask, fmode, dmode):
    old = os.umask(umask)
    try:
        d = train_tiny(tmp_path, 10)
    finally:
        os.umask(old)
    ck = d / "checkpoints" / "step-0000010"
    for f in (d / "config.yaml", d / "run.json", ck / "model.safetensors", ck / "state.json", d / "checkpoints" / "LATEST"):
        assert f.stat().st_mode & 0o777 == fmode, f
    assert ck.stat().st_mode & 0o777 == dmode


# -- every error is one line and exit 2 ----------------------------------------------------------
@pytest.mark.parametrize("override, needle", [("train.lr=-1", "train.lr"), ("train.time_budget=-3", "time_budget"),
                                              ("train.lr=nan", "train.lr"), ("train.ema_decay=1.5", "ema_decay"),
                                              ("train.keep_checkpoints=0", "keep_checkpoints")])
def test_bad_train_values_are_one_line(tmp_path, capsys, override, needle):
    one_line(*run(capsys, "train", *TINY, override, "--run-dir", tmp_path / "r")[::2], needle)
    assert not (tmp_path / "r" / "checkpoints").exists()


def test_disk_full_while_saving_keeps_the_previous_checkpoint(tmp_path, capsys, monkeypatch):
    import genzoo.train.checkpoint as ckm

    d = train_tiny(tmp_path, 10)
    capsys.readouterr()
    real = ckm.save_file

    def full(tensors, path, *a, **k):
        raise OSError(errno.ENOSPC, "No space left on device", path)

    monkeypatch.setattr(ckm, "save_file", full)
    one_line(*run(capsys, "train", "--resume", d, "train.steps=20")[::2], "disk is full", "--resume")
    monkeypatch.setattr(ckm, "save_file", real)
    assert ckm.load_checkpoint(ckm.latest_checkpoint(d))["step"] == 10
    assert not list((d / "checkpoints").glob(".step-*"))  # no torn temporary folder left


def test_read_only_output_is_one_line(tmp_path, capsys, monkeypatch):
    import PIL.Image

    d = train_tiny(tmp_path, 10)
    capsys.readouterr()

    def read_only(self, fp, *a, **k):
        raise PermissionError(errno.EROFS, "Read-only file system", str(fp))

    monkeypatch.setattr(PIL.Image.Image, "save", read_only)
    one_line(*run(capsys, "sample", d, "--out", tmp_path / "grid.png")[::2], "read-only", "--out")


@pytest.mark.parametrize("name, text, needle", [
    ("run.json", "{bad json", "run.json"), ("run.json", "", "run.json"), ("run.json", "[1, 2]", "run.json"),
    ("config.yaml", "", "config.yaml"), ("config.yaml", "model: [", "config.yaml"), ("config.yaml", "- 1\n- 2\n", "config.yaml"),
])
def test_corrupt_run_files_are_one_line(tmp_path, capsys, name, text, needle):
    d = train_tiny(tmp_path, 10)
    capsys.readouterr()
    (d / name).write_text(text)
    for argv in (["sample", d], ["eval", d, "--metrics", "nll", "--limit", "5"]):
        one_line(*run(capsys, *argv)[::2], needle)
    if name == "config.yaml":
        one_line(*run(capsys, "train", "--resume", d)[::2], needle)


def test_bad_option_value_is_one_line(tmp_path, capsys):
    d = train_tiny(tmp_path, 10)
    capsys.readouterr()
    one_line(*run(capsys, "eval", d, "k=abc", "--metrics", "nll", "--limit", "5")[::2], "k=abc")


# -- output a terminal and a log file can both read ---------------------------------------------
def test_log_lines_without_a_terminal_and_the_run_folder_at_start(tmp_path, capsys, monkeypatch):
    import genzoo.train.trainer as tr

    monkeypatch.setattr(tr.ProgressLog, "__init__", _fast_log_init(tr.ProgressLog.__init__))
    d = tmp_path / "run"
    code, _, err = run(capsys, "train", *[a for a in TINY if a != "--no-progress"], "train.steps=20", "--run-dir", d)
    assert code == 0
    lines = [l for l in err.splitlines() if l.startswith("[genzoo ")]
    assert str(d) in lines[0] and "training VAE" in lines[0]  # the folder is named when training starts
    assert any(re.search(r"step \d+/20 .*loss .* img/s .*ETA", l) for l in lines), err
    log = (d / "train.log").read_text()
    assert "training VAE" in log and "ETA" in log


def _fast_log_init(orig):
    def init(self, *a, **k):
        orig(self, *a, **k)
        self.every = 0.0  # a line every step, so the test does not wait
    return init


def test_no_progress_wins_over_the_stored_config_on_resume(tmp_path, capsys, monkeypatch):
    import genzoo.train.trainer as tr

    d = tmp_path / "run"
    assert main(["train", *[a for a in TINY if a != "--no-progress"], "train.steps=10", "--run-dir", str(d)]) == 0
    assert "progress: true" in (d / "config.yaml").read_text()
    capsys.readouterr()
    monkeypatch.setattr(tr, "_stderr_is_terminal", lambda: True)  # as on a terminal: a bar would be drawn
    code, _, err = run(capsys, "train", "--resume", d, "train.steps=20", "--no-progress")
    assert code == 0 and "it/s" not in err and "train VAE:" not in err
    assert "[genzoo " in err  # the log lines instead
    code, _, err = run(capsys, "train", "--resume", d, "train.steps=30", "train.progress=true")
    assert code == 0 and "train VAE" in err  # progress on, on a terminal: the bar


def test_version_usage_and_list(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0
    from genzoo import __version__

    assert capsys.readouterr().out.strip() == f"genzoo {__version__}"
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    assert "reflow" in out.splitlines()[0] + out.splitlines()[1]
    code, out, _ = run(capsys, "list", "vae_toy")  # a recipe
    assert code == 0 and "model: vae" in out and "8 Gaussians" in out
    code, out, _ = run(capsys, "list")
    assert code == 0
    section = out.split("\n\n")[0].splitlines()[1:]
    starts = {len(l) - len(l.split(None, 1)[1]) for l in section if not l.startswith("    ") and len(l.split(None, 1)) > 1}
    assert len(starts) == 1, "model descriptions start in different columns"
    assert "discrete_diffusion" in out and "image_transformer" in out
    recipes = out.split("recipes")[1]
    assert "genzoo's one\n" not in recipes  # the charlm recipe's first line used to be cut mid-sentence


def test_list_and_help_do_not_import_torch():
    code = ("import sys; from genzoo.cli import main; main(['list']); main(['list', 'vae']); "
            "print('TORCH' if 'torch' in sys.modules else 'NO-TORCH')")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=ENV)
    assert r.returncode == 0 and r.stdout.strip().endswith("NO-TORCH"), r.stderr


def test_catalog_matches_the_live_registries():
    from genzoo.catalog import build_catalog, load_catalog

    assert load_catalog() == json.loads(json.dumps(build_catalog())), \
        "src/genzoo/catalog.json is stale: run `python -m genzoo.catalog`"


# -- Python API ------------------------------------------------------------------------------------
def test_load_run_api(tmp_path, capsys):
    import torch

    import genzoo

    d = train_tiny(tmp_path, 10)
    m = genzoo.load_run(d)
    assert not m.training and m.loaded_from["weights"] in ("ema", "raw") and m.run_config["model"] == "vae"
    assert m.data_spec.shape == (1, 8, 8)
    raw = genzoo.load_run(d, weights="raw", device="auto", best=False)
    assert raw.loaded_from["weights"] == "raw"
    x = m.sample(4, generator=torch.Generator().manual_seed(0))
    assert x.shape == (4, 1, 8, 8)
    with pytest.raises(genzoo.ConfigError):
        genzoo.load_run(d, weights="best")
    with pytest.raises(genzoo.ConfigError):
        genzoo.load_run(d, device="cuda:7" if not torch.cuda.is_available() else "mps:9")


def test_readme_python_snippet_runs_as_written(tmp_path, monkeypatch):
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    block = readme.split("```python\n", 1)[1].split("```", 1)[0]
    monkeypatch.chdir(tmp_path)
    for m in re.finditer(r'genzoo\.load_run\("([^"]+)"', block):  # the run folders it names, trained first
        assert main(["train", "vae", "model.arch=conv", "train.steps=2", "train.batch_size=8", "train.num_samples=2",
                     "--no-progress", "--run-dir", m.group(1)]) == 0
    exec(compile(block, "README.md", "exec"), {})


def test_eval_writing_into_a_locked_run_is_refused_and_out_elsewhere_is_not(tmp_path, capsys):
    d = train_tiny(tmp_path, 10)
    capsys.readouterr()
    p = subprocess.Popen([sys.executable, "-c", HOLD, str(d)], stdout=subprocess.PIPE, text=True, env=ENV)
    try:
        assert p.stdout.readline().strip() == "locked"
        line = one_line(*run(capsys, "eval", d, "--metrics", "nll", "--limit", "5")[::2], "in use by", "--out")
        assert f"process {p.pid}" in line
        code, out, err = run(capsys, "eval", d, "--metrics", "nll", "--limit", "5", "--out", tmp_path / "m.json")
        assert code == 0, err
        assert (tmp_path / "m.json").is_file()
    finally:
        p.kill()
        p.wait()


def test_reflow_into_a_locked_folder_is_refused(tmp_path, capsys):
    common = ["model.net=mlp", "model.hidden=16", "model.depth=1", "train.batch_size=64", "train.num_samples=0"]
    rf1, out = tmp_path / "rf1", tmp_path / "rf2"
    assert main(["train", "diffusion_toy", "train.steps=5", *common, "--run-dir", str(rf1), "--no-progress"]) == 0
    capsys.readouterr()
    p = subprocess.Popen([sys.executable, "-c", HOLD, str(out)], stdout=subprocess.PIPE, text=True, env=ENV)
    try:
        assert p.stdout.readline().strip() == "locked"
        line = one_line(*run(capsys, "reflow", rf1, "--pairs", "50", "--ode-steps", "2", "--out", out,
                             "--no-progress", "train.steps=2")[::2], "in use by")
        assert f"process {p.pid}" in line and not (out / "pairs.safetensors").exists()
    finally:
        p.kill()
        p.wait()
