"""Issue 34: sampling in measured chunks, `--batch-size`, and sample / eval under precision=auto."""
import torch

from genzoo.eval.runner import default_chunk, draw_samples, sample_precision
from test_diffusion_model import gen, tiny_image_model


class Spy(torch.nn.Module):
    sample_options = ()
    sample_chunk = 7

    def __init__(self):
        super().__init__()
        self.calls = []

    def sample(self, n, generator=None, **opts):
        self.calls.append((n, opts))
        return torch.zeros(n, 2)


def test_chunks_follow_the_measured_default_and_batch_size():
    m = Spy()
    assert default_chunk(m) == 7
    draw_samples(m, 20, progress=False)
    assert [n for n, _ in m.calls] == [7, 7, 6]
    m.calls.clear()
    draw_samples(m, 10, batch_size=4, progress=False)
    assert [n for n, _ in m.calls] == [4, 4, 2] and all(o == {} for _, o in m.calls)  # no precision option forced
    assert default_chunk(torch.nn.Linear(1, 1)) == 500  # a model without a measured chunk


def test_draw_samples_runs_the_diffusion_family_under_auto(monkeypatch):
    import genzoo.core.precision as T

    m = tiny_image_model()
    fp32 = m.sample(3, generator=gen(0), sampler="ddim", steps=4)  # model.sample itself stays fp32
    assert torch.equal(fp32, m.sample(3, generator=gen(0), sampler="ddim", steps=4, precision="fp32"))
    bf16 = m.sample(3, generator=gen(0), sampler="ddim", steps=4, precision="bf16")
    seed0 = lambda: torch.Generator().manual_seed(0)  # noqa: E731  (draw_samples' first chunk: seed 0)
    monkeypatch.setattr(T, "cpu_has_fast_bf16", lambda: True)
    got = draw_samples(m, 3, batch_size=3, progress=False, sampler="ddim", steps=4)
    assert torch.equal(got, m.sample(3, generator=seed0(), sampler="ddim", steps=4, precision="bf16"))
    assert sample_precision(m, {}, "cpu") == "bf16" and sample_precision(m, {"precision": "fp32"}, "cpu") == "fp32"
    monkeypatch.setattr(T, "cpu_has_fast_bf16", lambda: False)
    got = draw_samples(m, 3, batch_size=3, progress=False, sampler="ddim", steps=4)
    assert torch.equal(got, m.sample(3, generator=seed0(), sampler="ddim", steps=4, precision="fp32"))
    assert sample_precision(m, {}, "cpu") == "fp32" and sample_precision(Spy(), {}, "cpu") == "fp32"
    assert not torch.equal(fp32, bf16)


def test_cli_batch_size_and_precision_line(tmp_path, capsys, monkeypatch):
    import genzoo.eval.runner as runner
    from genzoo.cli import main

    d = tmp_path / "run"
    assert main(["train", "vae_toy", "train.steps=5", "--run-dir", str(d), "--no-progress"]) == 0
    sizes = []
    real = runner.draw_samples

    def spy(model, n, **kw):
        sizes.append(kw.get("batch_size"))
        return real(model, n, **kw)

    monkeypatch.setattr(runner, "draw_samples", spy)
    capsys.readouterr()
    assert main(["sample", str(d), "--n", "10", "--batch-size", "3", "--out", str(tmp_path / "s.npy")]) == 0
    assert sizes == [3] and "fp32" in capsys.readouterr().out
    assert main(["sample", str(d), "--batch-size", "0"]) == 2
    assert main(["eval", str(d), "--metrics", "nll", "--limit", "8", "--batch-size", "4", "--out", str(tmp_path / "m.json")]) == 0
    import json

    rec = json.loads((tmp_path / "m.json").read_text())
    assert rec["nll"]["batch_size"] == 4 and "batch_size=4" in rec["key"]


def test_keep_freed_memory_applies_once_and_can_be_turned_off():
    import os
    import subprocess
    import sys

    code = "from genzoo.memory import keep_freed_memory as k, memory_setting as s; print(k(), k(), s())"
    env = dict(os.environ)
    env.pop("GENZOO_MALLOC", None)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    glibc = os.uname().sysname == "Linux" and "glibc" in " ".join(__import__("platform").libc_ver())
    assert r.stdout.split()[:2] == (["True", "True"] if glibc else ["False", "False"]), r.stderr
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env={**env, "GENZOO_MALLOC": "default"})
    assert r.stdout.strip() == "False False default"
