"""Seconds per training step of every *_cifar10 CPU recipe on this machine (issue 32): the figure each recipe's
`steps` and its comment are sized from (steps in 30 minutes = 1800 / (seconds per step)).

    python scripts/cifar10_step_times.py --data-root DIR [--seconds 25] [--only ddpm_cifar10 ...]

Each recipe trains for --seconds of wall clock (train.time_budget) with checkpoints, validation and sample grids
off, in a fresh folder under /tmp; the figure is train_time_s / steps from its train_summary.json (the first
steps, oneDNN's warm-up, included: an upper bound). vq_prior_cifar10 needs a tokenizer run and is left out.
Writes benchmarks/results/cifar10_step_times.json and prints a table.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "src" / "genzoo" / "configs"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-root", required=True, help="a folder with CIFAR-10 in the official binary layout")
    ap.add_argument("--seconds", type=float, default=25.0, help="training seconds per recipe (default 25)")
    ap.add_argument("--only", nargs="*", help="these recipes only")
    args = ap.parse_args()
    recipes = args.only or sorted(p.stem for p in CONFIGS.glob("*_cifar10.yaml") if p.stem != "vq_prior_cifar10")
    out_path = ROOT / "benchmarks" / "results" / "cifar10_step_times.json"
    results = json.loads(out_path.read_text()) if out_path.is_file() else {}
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import _results as R

    for r in recipes:
        with tempfile.TemporaryDirectory() as tmp:
            cmd = [sys.executable, "-m", "genzoo.cli", "train", r, "--run-dir", f"{tmp}/run", "--data-root", args.data_root,
                   "--no-progress", f"train.time_budget={args.seconds}", "train.ckpt_every=0", "train.valid_every=0",
                   "train.sample_every=0", "train.num_samples=0"]
            t0 = time.perf_counter()
            p = subprocess.run(cmd, capture_output=True, text=True)
            if p.returncode != 0:
                print(f"{r}: failed: {p.stderr.strip().splitlines()[-1] if p.stderr.strip() else p.returncode}", flush=True)
                results[r] = {"error": p.stderr[-500:]}
                continue
            s = json.loads(Path(f"{tmp}/run/train_summary.json").read_text())
        per = s["train_time_s"] / max(s["steps"], 1)
        results[r] = {"steps": s["steps"], "train_time_s": s["train_time_s"], "s_per_step": round(per, 4),
                      "images_per_s": s["images_per_s"], "parameters": s["parameters"], "precision": s["precision"],
                      "steps_in_1800_s": int(1800 / per), "wall_s": round(time.perf_counter() - t0, 1),
                      "machine": R.machine(), "date": time.strftime("%Y-%m-%d"),
                      "command": f"python scripts/cifar10_step_times.py --data-root DIR --seconds {args.seconds:g}"}
        print(f"{r}: {per:.3f} s/step, {s['images_per_s']} img/s, {s['parameters']:,} parameters, "
              f"~{int(1800 / per):,} steps in 30 min", flush=True)
        out_path.parent.mkdir(parents=True, exist_ok=True)
        out_path.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
