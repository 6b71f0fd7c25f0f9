"""``make demo`` / ``genzoo demo``: train the demo VAE on MNIST, evaluate it, show where the results are.

Uses the packaged recipe configs/vae.yaml (an MLP VAE with a Bernoulli decoder on the
static binarised MNIST, sized to train in about two minutes (7,000 steps; training + evaluation about 2.5 minutes, README) on 2 CPU cores). A second
call reuses a finished run and resumes an unfinished one; nothing is retrained for nothing.
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import torch


def reconstruction_grid(model, data, spec, path, n: int = 32) -> Path | None:
    """Top rows: test images; bottom rows: their reconstructions. None if the model cannot reconstruct."""
    from .viz import save_samples

    if not hasattr(model, "reconstruct"):
        return None
    x = data.tensor(seed=0, limit=n)
    with torch.no_grad():
        r = model.reconstruct(x).float()
    rows = []
    for i in range(0, n, 8):
        rows += [x[i:i + 8], r[i:i + 8]]
    return save_samples(torch.cat(rows), path, spec, nrow=8)


def run_demo(run_dir="runs/demo", overrides=()) -> dict:
    from .config import apply_overrides, load_recipe, parse_overrides
    from .eval.runner import evaluate_run
    from .core.checkpoint import latest_checkpoint
    from .train.run import load_data, load_run, train

    run_dir = Path(run_dir)
    cfg = apply_overrides(load_recipe("vae"), parse_overrides(list(overrides)))
    t0 = time.perf_counter()
    summary_path = run_dir / "train_summary.json"
    steps = int(cfg["train"]["steps"])
    done = summary_path.is_file() and json.loads(summary_path.read_text()).get("steps") == steps
    if done:
        print(f"[demo] {run_dir} already holds a finished run of {steps} steps; evaluating it (delete the folder to retrain)")
    else:
        resume = latest_checkpoint(run_dir) is not None if run_dir.is_dir() else False
        print(f"[demo] training {cfg['model']} on {cfg['data']['name']} ({steps} steps){' - resuming' if resume else ''}")
        train(cfg, run_dir, resume=resume)
    t_train = time.perf_counter() - t0
    print("[demo] evaluating: test ELBO, IWAE bound, FID (this takes about a minute)")
    res = evaluate_run(run_dir, progress=sys.stderr.isatty())
    model, rcfg, spec = load_run(run_dir)
    test = load_data(rcfg["data"], "test")
    with torch.no_grad():
        elbo = torch.cat([model.elbo(x) for x, _ in test.iter_batches(1000, seed=0)]).mean().item()
    recon = reconstruction_grid(model, test, spec, run_dir / "reconstructions.png")
    nll = res.get("nll", {})
    sm = res.get("sample_metrics", {})
    out = {
        "data": res["data"],
        "test_elbo_nats": round(elbo, 3),
        "test_nll_iwae_nats": round(nll.get("nll_nats", float("nan")), 3),
        "iwae_k": nll.get("log_prob_options", {}).get("k"),
        "fid": sm.get("fid"),
        "fid_floor": sm.get("fid_floor"),
        "fid_protocol": f"{sm.get('n_samples')} samples vs {sm.get('n_real')} test images, genzoo MNIST classifier features",
        "train_seconds": round(t_train, 1),
        "total_seconds": round(time.perf_counter() - t0, 1),
        "machine": res["machine"],
        "date": res["date"],
    }
    (run_dir / "demo_metrics.json").write_text(json.dumps(out, indent=2))
    print("\n[demo] done")
    print(f"  samples:         {run_dir / 'samples.png'}")
    print(f"  reconstructions: {recon}")
    print(f"  metrics:         {run_dir / 'demo_metrics.json'} (full: {run_dir / 'metrics.json'})")
    # named as in the README's "Measured" table
    n, n_real = sm.get("n_samples"), sm.get("n_real")
    print(f"  test -ELBO:                  {-out['test_elbo_nats']:.3f} nats ({res['data']})")
    print(f"  test NLL, IWAE bound k={out['iwae_k']}: {out['test_nll_iwae_nats']} nats")
    print(f"  FID, {n} samples vs {n_real} test images: {out['fid']:.2f}")
    print(f"  FID floor, FID(test, train): {out['fid_floor']:.2f}")
    return out
