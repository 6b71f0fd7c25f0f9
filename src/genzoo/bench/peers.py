"""Peers in the leaderboard: other libraries' models, trained under the same budget on the same data
and judged by the same protocol, each labelled as a peer.

* ``diffusers_ddpm`` (grey track): the plain diffusers loop, UNet2DModel + DDPMScheduler
  (:mod:`genzoo.bench.diffusers_ref`: a UNet of 1.11 M parameters against genzoo's 1.19 M, the
  same optimiser recipe as configs/ddpm.yaml), sampled with diffusers' DDIMScheduler, 50 steps.
* ``zuko_nsf``, ``zuko_maf`` (vector track): zuko's neural spline flow and masked
  autoregressive flow at zuko's defaults (3 transforms for NSF and MAF, hidden (64, 64)),
  Adam 1e-3, batch 256, trained on the same points for the same budget.

Each runs only where its library is installed (``pip install genzoo[peers]``); otherwise the
cell fails with one line naming the package, and the report shows it as missing.
"""
from __future__ import annotations

import hashlib
import json
import math
import time
from pathlib import Path

import torch

from ..errors import ConfigError

PEER_SETTINGS = {
    "diffusers_ddpm": {"library": "diffusers", "sampler": "DDIMScheduler, 50 steps, eta 0", "nfe": 50},
    "zuko_nsf": {"library": "zuko", "transforms": 3, "hidden": [64, 64], "lr": 1e-3, "batch": 256},
    "zuko_maf": {"library": "zuko", "transforms": 3, "hidden": [64, 64], "lr": 1e-3, "batch": 256},
}


def peer_fingerprint(track, e, seed, budget, protocol) -> str:
    from .. import __version__

    blob = json.dumps({"peer": e.peer, "settings": PEER_SETTINGS[e.peer], "overrides": e.overrides, "seed": seed,
                       "budget": budget, "protocol": protocol, "version": __version__}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _need(lib: str):
    import importlib

    try:
        return importlib.import_module(lib)
    except ImportError:
        raise ConfigError(f"the peer needs {lib}, which is not installed: pip install 'genzoo[peers]' (or {lib})") from None


def run_peer(out: Path, track, e, seed: int, budget: float, protocol: dict, *, progress=False, log=print) -> dict:
    from .tracks import cell_paths

    p = cell_paths(out, track, e, seed)
    fp = peer_fingerprint(track, e, seed, budget, protocol)
    run_dir = p["run"]
    if run_dir.exists() and (not p["fingerprint"].is_file() or p["fingerprint"].read_text().strip() != fp):
        import shutil

        shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    p["fingerprint"].write_text(fp + "\n")
    fn = {"diffusers_ddpm": _diffusers_ddpm, "zuko_nsf": _zuko, "zuko_maf": _zuko}[e.peer]
    rec = fn(run_dir, p["grid"], track, e, seed, budget, protocol, log=log)
    rec.update({"fingerprint": fp, "recipe": None, "peer_settings": PEER_SETTINGS[e.peer]})
    return rec


def _sample_quality(fake, data, train_data) -> dict:
    """The protocol's sample metrics (genzoo.eval.runner.score_samples, as for every genzoo cell)."""
    from ..eval.runner import score_samples

    sm = score_samples(fake, data, train_data, ("fid", "kid", "pr"), "auto")
    sm["n_samples"], sm["n_real"] = int(fake.shape[0]), sm["num_real"]
    return sm


def _diffusers_ddpm(run_dir, grid, track, e, seed, budget, protocol, log=print) -> dict:
    _need("diffusers")
    from ..memory import keep_freed_memory
    from ..train.run import load_data
    from ..viz import save_samples
    from . import diffusers_ref as D

    summary = D.train(run_dir, budget, seed=seed, log=log)
    unet = D.load_ema(run_dir)
    keep_freed_memory()
    t0 = time.perf_counter()
    g = D.sample(unet, int(protocol["grid"]), steps=50, batch_size=int(protocol["grid"]), seed=123)
    per = (time.perf_counter() - t0) / g.shape[0]
    data = load_data({"name": "mnist", "dequantize": "uniform"}, "test")
    save_samples(g, grid, data.spec)
    n = min(int(protocol["n_samples"]), len(data))
    t_eval = time.perf_counter()
    fake = D.sample(unet, n, steps=50, batch_size=250, seed=seed)
    s = time.perf_counter() - t_eval
    sm = _sample_quality(fake, data, lambda: load_data({"name": "mnist", "dequantize": "uniform"}, "train"))
    sm.update({"seconds_per_1000_samples": round(1000 * s / n, 2), "sample_precision": "bf16 autocast",
               "sample_options": {"sampler": "diffusers DDIMScheduler", "steps": 50}})
    return {"registered_model": None, "steps": summary["steps"], "train_s": summary["train_seconds"], "stopped_by": "time budget",
            "parameters": summary["parameters"], "images_per_s": summary["images_per_s"], "precision": "fp32",
            "split": "test", "grid": grid.name, "sample_probe": {"samples": g.shape[0], "seconds": round(per * g.shape[0], 2)},
            "nfe": 50, "samples": sm, "eval_s": round(time.perf_counter() - t_eval, 1)}


def _zuko(run_dir, grid, track, e, seed, budget, protocol, log=print) -> dict:
    zuko = _need("zuko")
    from ..data.toys import TOY_LOG_PROB
    from ..core.checkpoint import atomic_write_text
    from ..train.run import load_data
    from ..viz import save_samples

    data_name = dict(o.split("=", 1) for o in e.overrides)["data.name"]
    train_d, test_d = load_data({"name": data_name}, "train"), load_data({"name": data_name}, "test")
    x = train_d.tensor()
    D = x.shape[1]
    st = PEER_SETTINGS[e.peer]
    torch.manual_seed(seed)
    cls = zuko.flows.NSF if e.peer == "zuko_nsf" else zuko.flows.MAF
    flow = cls(D, transforms=st["transforms"], hidden_features=tuple(st["hidden"]))
    opt = torch.optim.Adam(flow.parameters(), lr=st["lr"])
    g = torch.Generator().manual_seed(seed)
    step, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < budget:
        idx = torch.randint(0, x.shape[0], (st["batch"],), generator=g)
        loss = -flow().log_prob(x[idx]).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        step += 1
    train_s = time.perf_counter() - t0
    t_eval = time.perf_counter()
    xt = test_d.tensor()
    with torch.no_grad():
        nll = -flow().log_prob(xt).double()
        fake = flow().sample((min(int(protocol["n_samples"]), xt.shape[0]),))
    ent = float(-TOY_LOG_PROB[data_name](xt.double()).mean())
    save_samples(fake[:2000], grid, test_d.spec)
    sm = _sample_quality(fake, test_d, train_d)
    out = {"registered_model": None, "steps": step, "train_s": round(train_s, 1), "stopped_by": "time budget",
           "parameters": sum(q.numel() for q in flow.parameters()), "images_per_s": round(step * st["batch"] / train_s, 1),
           "precision": "fp32", "split": "test", "grid": grid.name,
           "nll": {"nats": float(nll.mean()), "nats_stderr": float(nll.std() / math.sqrt(nll.numel())),
                   "examples": int(nll.numel()), "dims": D, "likelihood": "exact", "protocol": "exact",
                   "entropy_nats": ent, "kl_nats": float(nll.mean()) - ent},
           "samples": sm, "nfe": 1, "eval_s": round(time.perf_counter() - t_eval, 1)}
    if data_name == "8gaussians":
        from ..eval.modes import coverage_for

        out["modes"] = coverage_for(test_d.spec, fake)
    atomic_write_text(run_dir / "train_summary.json", json.dumps({k: out[k] for k in ("steps", "train_s", "parameters")}))
    return out
