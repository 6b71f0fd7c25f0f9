"""Real processes: a run killed with SIGKILL resumes to the same result; 2 CPU processes (gloo) stay in sync."""
import json
import os
import signal
import socket
import subprocess
import sys
import time

import torch

from genzoo.train.checkpoint import latest_checkpoint, load_checkpoint

ARGS = ["vae", "model.arch=mlp", "model.hidden=256", "model.latent_dim=8", "data.name=mnist", "data.binarize=static",
        "train.batch_size=64", "train.lr=1e-3", "train.log_every=25", "train.num_samples=16", "train.valid_every=0",
        "--no-progress"]


def _env():
    env = dict(os.environ)
    env["PYTHONPATH"] = os.path.join(os.path.dirname(__file__), "..", "src") + os.pathsep + env.get("PYTHONPATH", "")
    env.setdefault("OMP_NUM_THREADS", "1")
    return env


def _cli(*args, **kw):
    return subprocess.run([sys.executable, "-m", "genzoo.cli", "train", *args], env=_env(), capture_output=True, text=True, **kw)


def test_sigkill_then_resume_matches_uninterrupted(tmp_path):
    steps, every = 400, 25
    ref = tmp_path / "ref"
    r = _cli(*ARGS, f"train.steps={steps}", f"train.ckpt_every={every}", "--run-dir", str(ref))
    assert r.returncode == 0, r.stderr[-2000:]

    run = tmp_path / "killed"
    p = subprocess.Popen([sys.executable, "-m", "genzoo.cli", "train", *ARGS, f"train.steps={steps}",
                          f"train.ckpt_every={every}", "--run-dir", str(run)], env=_env(),
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    killed_at = None
    deadline = time.time() + 120
    while time.time() < deadline and p.poll() is None:
        ptr = run / "checkpoints" / "LATEST"
        if ptr.is_file():
            step = int(ptr.read_text().strip().split("-")[1])
            if step >= 2 * every:
                p.send_signal(signal.SIGKILL)
                p.wait()
                killed_at = step
                break
        time.sleep(0.02)
    assert killed_at is not None, "the run finished before it could be killed; make it longer"
    assert not (run / "train_summary.json").exists()
    assert load_checkpoint(latest_checkpoint(run))["step"] < steps

    r = _cli("--resume", str(run))
    assert r.returncode == 0, r.stderr[-2000:]
    a, b = load_checkpoint(latest_checkpoint(ref)), load_checkpoint(latest_checkpoint(run))
    assert a["step"] == b["step"] == steps
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    oa, ob = a["extra"]["optimizers"]["model"]["state"], b["extra"]["optimizers"]["model"]["state"]
    for i in oa:
        assert torch.equal(oa[i]["exp_avg"], ob[i]["exp_avg"])
    assert json.loads((run / "train_summary.json").read_text())["resumed"] is True


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_cpu_processes_stay_identical(tmp_path):
    run = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", f"--master_port={_free_port()}",
           "-m", "genzoo.cli", "train", "vae", "model.hidden=64", "model.latent_dim=4", "data.name=digits",
           "data.binarize=dynamic", "train.steps=30", "train.batch_size=32", "train.ckpt_every=10",
           "train.num_samples=4", "--no-progress", "--run-dir", str(run)]
    r = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    s = json.loads((run / "train_summary.json").read_text())
    assert s["processes"] == 2
    assert s["replica_max_abs_diff"] == 0.0
    assert s["steps"] == 30
    # the parameters moved (the check is not vacuous)
    assert s["last_losses"]["loss"] > 0
