"""Does every family train, sample and evaluate on a GPU? (issue 32)

    python scripts/gpu_check.py                      # every family, about a minute of training each, on CUDA
    python scripts/gpu_check.py --seconds 20 --only vae,ddpm
    python scripts/gpu_check.py --device cpu --seconds 3 --only vae    # a quick check of the script itself

For each recipe below: `genzoo train RECIPE train.time_budget=SECONDS train.precision=auto` (bf16 autocast
where the GPU supports it), then `genzoo sample RUN --device DEVICE` and `genzoo eval RUN --device DEVICE`
(a small evaluation: --n-samples 1000, --limit 256), each in its own process so that one failure does not
hide the others. Prints a table (recipe, what failed, training images/s, precision, seconds to sample 64,
seconds to evaluate) and writes it as JSON to --out (default gpu_check.json); record the figures with the
date and the device in benchmarks/RESULTS.md.

With --cifar10 DIR the colour recipes run too (DIR holds the CIFAR-10 binary version; figures made on a
re-encoded copy are labelled so).
"""
from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# one recipe per family (and the few-step and two-player variants that have their own code paths)
RECIPES = ["vae", "nvae", "made", "pixelcnn", "image_transformer", "charlm", "realnvp", "glow", "tarflow", "ddpm",
           "flow_matching", "edm", "shortcut", "discrete_diffusion", "pfgm", "gan", "wgan_gp", "bigan", "vqvae", "vqgan"]
# the same families on colour images (CIFAR-10): the recipe with the data swapped and the shape taken from it
COLOUR = {"vae_conv_mnist": ["model.decoder=logistic"], "realnvp": [], "glow": [],
          "ddpm": ["model.denoiser.attn_resolutions=[16]"], "flow_matching": ["model.denoiser.attn_resolutions=[16]"], "gan": [], "vqvae": [],
          "pixelcnn_mnist_grey": ["model.channels=null", "model.head_channels=null"],   # the defaults, fitted to 3 colours
          "image_transformer": ["model.levels=256"]}


def run(cmd: list[str], timeout: float) -> tuple[int, str, float]:
    t0 = time.perf_counter()
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        out = (r.stdout + r.stderr).strip().splitlines()
        return r.returncode, (out[-1] if out else ""), time.perf_counter() - t0
    except subprocess.TimeoutExpired:
        return 124, f"timed out after {timeout:.0f} s", time.perf_counter() - t0


def colour_recipe(recipe: str, root: str, work: Path) -> Path:
    """The recipe with its data section replaced by CIFAR-10 (dequantised where the recipe dequantises)."""
    import yaml

    from genzoo.config import load_recipe

    cfg = load_recipe(recipe)
    cfg["data"] = {"name": "cifar10", "root": root,
                   **({"dequantize": "uniform"} if (cfg.get("data") or {}).get("dequantize") == "uniform" else {})}
    (cfg.get("model_args") or {}).pop("shape", None)
    path = work / f"{recipe}_cifar10.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def check(recipe: str, extra: list[str], args, work: Path) -> dict:
    genzoo = [sys.executable, "-m", "genzoo.cli"]
    colour = args.cifar10 is not None and extra[:1] == ["cifar10"]
    if colour:
        extra = extra[1:]
    run_dir = work / recipe / ("colour" if colour else "default")
    row = {"recipe": recipe, "data": "CIFAR-10" if colour else "recipe's", "overrides": extra, "device": args.device}
    source = ["--config", str(colour_recipe(recipe, args.cifar10, work))] if colour else [recipe]
    rc, last, secs = run([*genzoo, "train", *source, f"train.time_budget={args.seconds}", "train.precision=auto",
                          "train.sample_every=0", "train.valid_every=0", "train.keep_best=false", "--no-progress",
                          "--run-dir", str(run_dir), *extra], args.seconds * 10 + 600)
    row["train_s"] = round(secs, 1)
    if rc:
        row["failed"] = f"train (exit {rc}): {last}"
        return row
    summary = json.loads((run_dir / "train_summary.json").read_text())
    row.update(images_per_s=summary.get("images_per_s"), precision=summary.get("precision"), steps=summary.get("steps"))
    rc, last, secs = run([*genzoo, "sample", str(run_dir), "--n", "64", "--device", args.device,
                          "--out", str(run_dir / "gpu_samples.png")], 1800)
    row["sample_s"] = round(secs, 1)
    if rc:
        row["failed"] = f"sample (exit {rc}): {last}"
        return row
    rc, last, secs = run([*genzoo, "eval", str(run_dir), "--device", args.device, "--n-samples", "1000", "--limit", "256",
                          "--no-progress"], 3600)
    row["eval_s"] = round(secs, 1)
    if rc:
        row["failed"] = f"eval (exit {rc}): {last}"
    return row


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda", help="cuda (default), cuda:N, mps or cpu")
    p.add_argument("--seconds", type=float, default=60.0, help="training budget per recipe (default 60)")
    p.add_argument("--only", default="", help="comma-separated recipes (default: all)")
    p.add_argument("--cifar10", default=None, metavar="DIR", help="also run the colour recipes on CIFAR-10 from DIR")
    p.add_argument("--out", default="gpu_check.json")
    p.add_argument("--keep", action="store_true", help="keep the run folders (printed)")
    args = p.parse_args(argv)
    if args.device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            print("gpu_check: error: no CUDA device here (torch.cuda.is_available() is False); use --device cpu to check "
                  "the script itself", file=sys.stderr)
            return 2
    only = {x for x in args.only.split(",") if x}
    jobs = [(r, []) for r in RECIPES if not only or r in only]
    if args.cifar10:
        jobs += [(r, ["cifar10", *o]) for r, o in COLOUR.items() if not only or r in only]
    work = Path(tempfile.mkdtemp(prefix="gpu_check-"))
    rows = []
    try:
        for recipe, extra in jobs:
            row = check(recipe, extra, args, work)
            rows.append(row)
            print(json.dumps(row), flush=True)
    finally:
        if args.keep:
            print(f"run folders: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    Path(args.out).write_text(json.dumps({"date": time.strftime("%Y-%m-%d"), "device": args.device, "rows": rows}, indent=1))
    print(f"\n| recipe | data | status | train img/s | precision | sample 64 (s) | eval (s) |\n|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['recipe']} | {r['data']} | {r.get('failed', 'ok')} | {r.get('images_per_s', '-')} | {r.get('precision', '-')} "
              f"| {r.get('sample_s', '-')} | {r.get('eval_s', '-')} |")
    return 1 if any("failed" in r for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
