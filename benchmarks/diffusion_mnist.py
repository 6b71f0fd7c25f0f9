#!/usr/bin/env python
"""Diffusion on MNIST: ddpm, edm and flow matching under one fixed CPU budget; FID per sampler and NFE.

For each model (a recipe in configs/) the script

1. trains it with ``genzoo train RECIPE train.time_budget=BUDGET`` (default 30 minutes of
   wall clock; the lr schedule anneals over the budget; a killed run resumes);
2. evaluates cells (sampler, steps): ``n`` samples (default 1,000, the same for every cell)
   -> FID against ``n`` dequantised test images on genzoo's MNIST classifier features, the
   sampling seconds per image, and the NFE; the FID floor FID(test, train) at the same ``n``;
3. the probability-flow ODE NLL in bits/dim on a fixed random subset of the test set.

With diffusers installed, the reference loop a user would otherwise write (diffusers
UNet2DModel + DDPMScheduler, plain PyTorch loop, comparable parameter count) is trained for
the same budget and reported beside genzoo (images/s, FID with DDIM 50 steps).

Every finished row / cell is written to benchmarks/results/diffusion_mnist/ at once and
skipped when the script runs again, so the table is built over several sessions; the plot
benchmarks/diffusion_fid_vs_nfe.png and RESULTS.md are rebuilt from whatever exists.

    python benchmarks/diffusion_mnist.py                       # everything not done yet
    python benchmarks/diffusion_mnist.py --only edm --budget 1800
    python benchmarks/diffusion_mnist.py --only ddpm --cells-only   # evaluate an existing run
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path


sys.path.insert(0, str(Path(__file__).resolve().parent))
import _results as R  # noqa: E402

TABLE = "diffusion_mnist"
MODELS = {"ddpm": "ddpm", "edm": "edm", "flow": "flow_matching", "edm-wide": "edm"}
#: recipe overrides of a model row; "edm-wide" is EDM with a training-noise distribution that reaches
#: high noise levels more often (see docs/diffusion.md, "EDM on MNIST under a CPU budget")
OVERRIDES = {"edm-wide": ["model.process_args={P_mean: -0.4, P_std: 1.6}"]}
# (sampler, steps, extra options) per model; NFE from genzoo's samplers.nfe
CELLS = {
    # the 1000-step ancestral cell (the reference of the EDM goal) is the dearest: last
    "ddpm": [("ddim", 1, {}), ("ddim", 2, {}), ("ddim", 4, {}), ("ddim", 10, {}), ("ddim", 20, {}), ("ddim", 50, {}),
             ("heun", 18, {"grid": "karras"}), ("dpmpp_2m", 10, {"grid": "karras"}), ("ddpm", 10, {}), ("ddpm", 100, {}),
             ("ddim", 100, {}), ("ddpm", 1000, {})],
    "edm": [("euler", 1, {}), ("euler", 2, {}), ("euler", 4, {}), ("heun", 5, {}), ("euler", 10, {}), ("heun", 10, {}),
            ("euler", 20, {}), ("heun", 18, {}), ("dpmpp_2m", 10, {}), ("euler", 100, {}),
            # EDM Algorithm 2 with the paper's ImageNet-64 churn settings (S_churn = 0 would be Algorithm 1 = heun)
            ("heun_stochastic", 18, {"S_churn": 40, "S_tmin": 0.05, "S_tmax": 50, "S_noise": 1.003})],
    "edm-wide": [("euler", 4, {}), ("heun", 5, {}), ("dpmpp_2m", 10, {}), ("heun", 10, {}), ("heun", 18, {})],
    "flow": [("euler", 1, {}), ("euler", 2, {}), ("euler", 4, {}), ("euler", 10, {}), ("euler", 20, {}), ("heun", 18, {}),
             ("euler", 100, {}), ("dpmpp_2m", 10, {})],
}

SAMPLE_PRECISION = "bf16"  # network evaluations under bf16 autocast while sampling (both genzoo and diffusers)

R.TABLES[TABLE + "_speed"] = (
    "Diffusion training speed: genzoo vs a plain diffusers loop (issue 3)",
    "Training images/s of `genzoo train ddpm` (1.19 M-parameter UNet, the whole trainer: data, loss, AdamW, "
    "clip, EMA, logging) and of the diffusers UNet2DModel + DDPMScheduler loop in benchmarks/_diffusers_ref.py "
    "(1.11 M parameters, same batch 64, same optimiser recipe), measured in alternating rounds so that both see "
    "the same machine load; best round of each. genzoo's recipe trains under bf16 autocast (train.precision=bf16, "
    "CPUs with native bf16), the diffusers loop in float32 as its examples do; in float32 both UNets run at about "
    "the same speed. Goal: ratio >= 1.5.",
    [("probe", "name"), ("steps / round", "steps_per_round"), ("rounds", "rounds"),
     ("genzoo img/s", "genzoo_images_per_s"), ("diffusers img/s", "diffusers_images_per_s"), ("ratio", "ratio")],
)
R.TABLES[TABLE] = (
    "Diffusion on dequantised MNIST (issue 3)",
    "Each model trained for the budget shown on 2 CPU cores, then sampled with each sampler at each NFE "
    "(network evaluations per image; the network under bf16 autocast, sampler arithmetic in float32, for genzoo and "
    "for the diffusers reference alike). FID on genzoo's MNIST classifier features, n samples vs n dequantised "
    "test images (n in the row), beside the floor FID(test, train) at the same n. genzoo recipes train with "
    "train.precision=bf16 (autocast); the diffusers reference loop is the plain float32 loop a user would write. NLL: the probability-flow ODE "
    "likelihood in bits/dim (+7 offset for [-1, 1] data), on a fixed random test subset.",
    [("model", "model"), ("budget", "budget"), ("sampler", "sampler"), ("steps", "steps"), ("NFE", "nfe"),
     ("FID", "fid"), ("FID floor", "fid_floor"), ("n", "n"), ("s / image", "sec_per_image"),
     ("train img/s", "images_per_s"), ("NLL bits/dim", "bpd")],
)


def _row_name(model, sampler, steps, extra):
    tag = "-".join(f"{k}{v}" for k, v in sorted(extra.items()))
    return f"{model}-{sampler}-{steps}" + (f"-{tag}" if tag else "")


def train_model(model: str, budget: float) -> Path:
    return R.train_or_resume(TABLE, model, MODELS[model],
                             ["train.steps=1000000", f"train.time_budget={budget:g}", *OVERRIDES.get(model, [])])


def eval_cells(model: str, run_dir: Path, n: int, budget: float, nll_limit: int, note: str) -> None:
    from genzoo.eval import fid_floor, sample_metrics
    from genzoo.eval.runner import draw_samples
    from genzoo.models.diffusion.samplers import nfe
    from genzoo.train.run import load_data, load_run

    model_obj, cfg, spec = load_run(run_dir)
    summary = json.loads((run_dir / "train_summary.json").read_text())
    test = load_data(cfg["data"], "test")
    real = test.tensor(seed=0, limit=n)
    floor_path = R.row_path(TABLE + "_aux", f"floor-{n}")
    if floor_path.is_file():
        floor = json.loads(floor_path.read_text())["fid_floor"]
    else:
        floor = fid_floor(real, load_data(cfg["data"], "train").tensor(seed=1, limit=n), spec=test.spec)
        R.write_row(TABLE + "_aux", f"floor-{n}", {"fid_floor": floor, "n": n})
    bpd = None
    nll_path = R.row_path(TABLE + "_aux", f"nll-{model}")
    if nll_limit > 0:
        if nll_path.is_file():
            bpd = json.loads(nll_path.read_text())["bits_per_dim"]
        else:
            from genzoo.eval import evaluate_nll

            r = evaluate_nll(model_obj, test, limit=nll_limit, progress=False, **(cfg.get("eval", {}).get("log_prob") or {}))
            bpd = r["bits_per_dim"]
            R.write_row(TABLE + "_aux", f"nll-{model}", {**r, "model": model})
    for i, (sampler, steps, extra) in enumerate(CELLS[model]):
        name = _row_name(model, sampler, steps, extra)
        if R.done(TABLE, name):
            continue
        opts = {"sampler": sampler, "steps": steps, "precision": SAMPLE_PRECISION, **extra}
        t0 = time.perf_counter()
        fake = draw_samples(model_obj, n, seed=0, progress=False, batch_size=250, **opts)
        sec = (time.perf_counter() - t0) / n
        m = sample_metrics(fake, real, metrics=("fid",), spec=test.spec)
        R.write_row(TABLE, name, {
            "order": list(MODELS).index(model) * 100 + i, "name": name, "model": model,
            "budget": f"{budget / 60:.3g} min", "sampler": sampler, "steps": steps, "options": extra,
            "nfe": nfe(sampler, steps), "fid": m["fid"], "fid_floor": floor, "n": n, "sec_per_image": sec,
            "images_per_s": summary.get("images_per_s"), "train_steps": summary.get("steps"), "bpd": bpd,
            "nll_examples": nll_limit, "overrides": OVERRIDES.get(model, []), "note": note,
            "command": f"python benchmarks/diffusion_mnist.py --only {model} --budget {budget:g} --n {n}",
        })
        print(f"[{name}] NFE {nfe(sampler, steps)}: FID {m['fid']:.2f} (floor {floor:.2f}), {sec * 1e3:.1f} ms/image", flush=True)


def diffusers_reference(budget: float, n: int, note: str) -> None:
    """The plain diffusers loop (benchmarks/_diffusers_ref.py) for the same budget; FID with DDIM 50 steps."""
    import _diffusers_ref as D
    from genzoo.eval import sample_metrics
    from genzoo.train.run import load_data

    name = "diffusers-ddim-50"
    if R.done(TABLE, name):
        return
    run_dir = R.OUT_DIR / TABLE / "diffusers"
    summary = D.train(run_dir, budget, log=lambda m: print(m, flush=True))
    test = load_data({"name": "mnist", "dequantize": "uniform"}, "test")
    real = test.tensor(seed=0, limit=n)
    floor_path = R.row_path(TABLE + "_aux", f"floor-{n}")
    floor = json.loads(floor_path.read_text())["fid_floor"] if floor_path.is_file() else None
    unet = D.load_ema(run_dir)
    t0 = time.perf_counter()
    fake = D.sample(unet, n, 50)
    sec = (time.perf_counter() - t0) / n
    m = sample_metrics(fake, real, metrics=("fid",), spec=test.spec)
    R.write_row(TABLE, name, {
        "order": 900, "name": name, "model": "diffusers UNet2DModel + DDPMScheduler", "budget": f"{budget / 60:.3g} min",
        "sampler": "DDIMScheduler", "steps": 50, "nfe": 50, "fid": m["fid"], "fid_floor": floor, "n": n,
        "sec_per_image": sec, "images_per_s": summary["images_per_s"], "train_steps": summary["steps"],
        "parameters": summary["parameters"], "note": note,
        "command": f"python benchmarks/diffusion_mnist.py --only diffusers --budget {budget:g} --n {n}",
    })
    print(f"[{name}] FID {m['fid']:.2f}, {summary['images_per_s']} img/s training, {sec * 1e3:.1f} ms/image", flush=True)


def throughput_probe(steps: int, note: str, rounds: int = 2) -> None:
    """Training images/s of genzoo's ddpm recipe (the whole `genzoo train` loop) and of the diffusers loop,
    measured in alternating short rounds so that both see the same machine load; the best round of each."""
    import shutil
    import tempfile

    import _diffusers_ref as D

    name = "probe-train-speed"
    if steps <= 0 or R.done(TABLE + "_speed", name):
        return
    ours, theirs = [], []
    for r in range(rounds):
        tmp = Path(tempfile.mkdtemp(prefix="genzoo-probe-"))
        try:
            R.run(["train", "ddpm", f"train.steps={steps}", "train.ckpt_every=0", "train.valid_every=0", "train.num_samples=0",
                   "--run-dir", str(tmp / "g")], tmp / "g.log")
            ours.append(json.loads((tmp / "g" / "train_summary.json").read_text())["images_per_s"])
            theirs.append(D.train(tmp / "d", 1e9, max_steps=steps, ckpt_every_s=1e9, log=lambda m: None)["images_per_s"])
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        print(f"[probe] round {r}: genzoo {ours[-1]} img/s, diffusers {theirs[-1]} img/s", flush=True)
    R.write_row(TABLE + "_speed", name, {
        "name": name, "steps_per_round": steps, "rounds": rounds, "genzoo_images_per_s": max(ours),
        "diffusers_images_per_s": max(theirs), "ratio": max(ours) / max(theirs), "all_genzoo": ours, "all_diffusers": theirs,
        "note": note, "command": f"python benchmarks/diffusion_mnist.py --only diffusers --probe-steps {steps}",
    })


def plot() -> Path | None:
    rows = [json.loads(p.read_text()) for p in (R.RESULTS_DIR / TABLE).glob("*.json")] if (R.RESULTS_DIR / TABLE).is_dir() else []
    rows = [r for r in rows if r.get("nfe")]
    if not rows:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for key in sorted({(r["model"], r["sampler"]) for r in rows}):
        pts = sorted((r["nfe"], r["fid"]) for r in rows if (r["model"], r["sampler"]) == key)
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=f"{key[0]} / {key[1]}")
    floor = rows[0].get("fid_floor")
    if floor:
        ax.axhline(floor, color="grey", ls="--", lw=1, label="FID floor")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("network evaluations per image (NFE)")
    ax.set_ylabel("FID (MNIST classifier features)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    out = R.RESULTS_MD.parent / "diffusion_fid_vs_nfe.png"
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", action="append", choices=list(MODELS) + ["diffusers"], help="this model only (repeatable)")
    ap.add_argument("--budget", type=float, default=1800.0, help="training seconds per model (default 1800 = 30 min)")
    ap.add_argument("--n", type=int, default=1000, help="samples per FID cell (default 1000)")
    ap.add_argument("--nll-limit", type=int, default=128, help="test examples for the ODE NLL (0 = skip)")
    ap.add_argument("--cells-only", action="store_true", help="do not train; evaluate runs that exist")
    ap.add_argument("--note", default="", help="recorded with each row")
    ap.add_argument("--probe-steps", type=int, default=100,
                    help="steps per round of the interleaved genzoo-vs-diffusers training-speed probe (0 = skip)")
    args = ap.parse_args(argv)
    for model in MODELS:
        if args.only and model not in args.only:
            continue
        run_dir = R.OUT_DIR / TABLE / model
        if not args.cells_only:
            run_dir = train_model(model, args.budget)
        if not (run_dir / "checkpoints").is_dir():
            print(f"[{model}] no run in {run_dir}; train it first")
            continue
        eval_cells(model, run_dir, args.n, args.budget, args.nll_limit, args.note)
        R.rebuild_results_md()
        plot()
    if not args.only or "diffusers" in args.only:
        try:
            import diffusers  # noqa: F401
        except ImportError:
            print("[diffusers] not installed (pip install diffusers): the reference loop is skipped")
        else:
            throughput_probe(args.probe_steps, args.note)  # first: a few minutes, and the speed goal rests on it
            diffusers_reference(args.budget, args.n, args.note)
    print(f"wrote {R.rebuild_results_md()} and {plot()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
