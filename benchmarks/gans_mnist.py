#!/usr/bin/env python
"""GANs and adversarial encoders under one fixed CPU budget: FID / precision / recall on MNIST,
modes covered on 8 Gaussians, linear-probe accuracy of the encoders.

For each model (a recipe in configs/) the script

1. trains ``genzoo train RECIPE train.time_budget=BUDGET`` on MNIST grey levels in [-1, 1]
   (default 1800 s of wall clock for every model; a killed run resumes);
2. evaluates ``genzoo eval RUN --metrics fid,kid,pr[,probe]``: ``n`` samples (default
   10,000, EMA weights) against the 10,000 test images on genzoo's MNIST classifier
   features, beside the floor FID(test, train) at the same size; for the encoders (BiGAN,
   BiGAN-QP, O-GAN) the linear probe (logistic regression on the frozen encoder features
   of a fixed 10,000-image training subset, accuracy on the 10,000 test images), which
   also writes reconstructions.png and interpolations.png into the run folder;
3. trains the model's 8-Gaussians recipe (``RECIPE_toy``, 2,000 steps) and reports the
   modes covered (of 8) by 2,500 samples (``genzoo eval TOY --metrics modes``).

Reference rows put the probe in context: ``vae`` (the MLP VAE of configs/vae.yaml on
dynamically binarised MNIST, the same budget: the very run of the likelihood benchmark's
``vae-dynamic`` row, trained and scored there by benchmarks/likelihood_mnist.py if missing, so
one 30-minute training serves both tables; the probe uses the posterior mean; its samples are
binary images, another representation, so no FID is reported) and
``pixels`` (the same probe on raw pixels, no model). A third, ``train-images``, puts the sample
metrics in context: 10,000 real training images in place of samples, scored by the same
FID / KID / precision / recall against the test images, i.e. what a perfect model would get.

Rows already in benchmarks/results/gans_mnist/ are skipped (``--force`` redoes them);
RESULTS.md and the picture benchmarks/gans_mnist_samples.png (16 EMA samples of each finished model, seed 0) are
rebuilt after every row. Smoke test (seconds, nothing in benchmarks/):

    GENZOO_BENCH_DIR=/tmp/gan_smoke python benchmarks/gans_mnist.py --budget 20 --toy-budget 5 --n-samples 500
    python benchmarks/gans_mnist.py                       # every row not yet done (~4.5 h on 2 cores)
    python benchmarks/gans_mnist.py --only ogan --only bigan
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _results as R  # noqa: E402

TABLE = "gans_mnist"
# name -> (MNIST recipe, overrides, toy recipe, has an encoder)
ROWS = {
    "gan": ("gan", [], "gan_toy", False),
    "gan-minimax": ("gan", ["model.gen_loss=minimax"], "gan_toy", False),
    "wgan": ("wgan", [], "wgan_toy", False),
    "wgan_gp": ("wgan_gp", [], "wgan_gp_toy", False),
    "gan_qp": ("gan_qp", [], "gan_qp_toy", False),
    "bigan": ("bigan", [], "bigan_toy", True),
    "bigan_qp": ("bigan_qp", [], "bigan_qp_toy", True),
    "ogan": ("ogan", [], "ogan_toy", True),
    "vae": ("vae", ["data.binarize=dynamic"], None, True),  # run by likelihood_mnist.py (its vae-dynamic row)
    "pixels": (None, [], None, True),
    "train-images": (None, [], None, False),
}

R.TABLES[TABLE] = (
    "GANs and adversarial encoders on MNIST (issue 7)",
    "Every model trains for the same wall-clock budget on MNIST grey levels in [-1, 1] (conv nets, channels 32, "
    "batch 64, z 64; configs/<model>.yaml). FID / precision / recall: 10,000 EMA samples vs the 10,000 test images "
    "on genzoo's MNIST classifier features (not comparable with Inception FIDs), beside the floor FID(test, train). "
    "Probe: logistic regression (C = 1) on the standardised frozen encoder features of a fixed random 10,000 "
    "training images, accuracy on the 10,000 test images. Modes: the model's 8-Gaussians recipe (MLPs, 2,000 "
    "steps), modes (of 8) holding >= 1/4 of their share of 2,500 samples within 3 std. Reference rows: an MLP VAE "
    "(configs/vae.yaml on dynamically binarised MNIST, same budget: the likelihood table's vae-dynamic run; probe on "
    "the posterior mean), the probe on raw pixels, and 10,000 real training images scored as samples (a perfect "
    "model's FID / precision / recall at these set sizes).",
    [("model", "name"), ("budget", "budget"), ("steps", "steps"), ("train s", "train_s"), ("img/s", "images_per_s"),
     ("FID", "fid"), ("FID floor", "fid_floor"), ("KID", "kid"), ("precision", "precision"), ("recall", "recall"),
     ("probe acc.", "probe_accuracy"), ("modes (of 8)", "modes"), ("toy high-quality", "toy_high_quality")],
)


def _summary(run_dir: Path) -> dict:
    return json.loads((run_dir / "train_summary.json").read_text())


def pixel_probe() -> dict:
    """The probe on raw pixels (MNIST grey in [-1, 1]), the same protocol as the encoders'."""
    import torch

    from genzoo.data import load_dataset
    from genzoo.eval.probe import N_TRAIN, fit_probe

    tr, te = load_dataset("mnist", "train"), load_dataset("mnist", "test")
    xtr, ytr = map(torch.cat, zip(*tr.iter_batches(4096, limit=N_TRAIN)))
    xte, yte = map(torch.cat, zip(*te.iter_batches(4096)))
    return fit_probe(xtr.flatten(1).double().numpy(), ytr.numpy(), xte.flatten(1).double().numpy(), yte.numpy())


def real_reference() -> dict:
    """FID / KID / precision / recall of 10,000 real training images "as samples" against the test set, the
    protocol of ``genzoo eval --metrics fid,kid,pr`` (its fid_floor is this FID): the figures of a perfect model."""
    from genzoo.eval import sample_metrics
    from genzoo.train.run import load_data

    data_cfg = {"name": "mnist", "binarize": "none", "value_range": [-1, 1]}  # configs/gan.yaml's data
    test = load_data(data_cfg, "test")
    real = test.tensor(seed=0, limit=10000)
    fake = load_data(data_cfg, "train").tensor(seed=1, limit=real.shape[0])
    return sample_metrics(fake, real, metrics=("fid", "kid", "pr"), spec=test.spec)


def run_row(name: str, args, order: int) -> None:
    recipe, overrides, toy, encoder = ROWS[name]
    rec: dict = {"order": order, "name": name, "note": args.note}
    if name == "pixels":
        p = pixel_probe()
        rec.update({"budget": "no training", "probe_accuracy": p["accuracy"], "probe": p,
                    "command": "python benchmarks/gans_mnist.py --only pixels   # genzoo.eval.probe.fit_probe on raw pixels"})
        R.write_row(TABLE, name, rec)
        print(f"[{name}] probe {p['accuracy']:.4f}", flush=True)
        return
    if name == "train-images":
        sm = real_reference()
        rec.update({"budget": "no training", **{k: sm[k] for k in ("fid", "kid", "precision", "recall")}, "fid_floor": sm["fid"],
                    "sample_metrics": sm,
                    "command": "python benchmarks/gans_mnist.py --only train-images   # 10,000 training images scored as samples"})
        R.write_row(TABLE, name, rec)
        print(f"[{name}] FID {sm['fid']:.3f}, precision {sm['precision']:.3f}, recall {sm['recall']:.3f}", flush=True)
        return
    ov = overrides + ["train.steps=1000000", f"train.time_budget={args.budget:g}"]
    budget_words = f"{args.budget:g} s wall clock"
    if name == "vae":  # the likelihood benchmark's run (same recipe, data and budget): train and score it there if missing
        import likelihood_mnist as LM

        if not R.done(LM.TABLE, "vae-dynamic"):
            lm_args = argparse.Namespace(budget=args.budget, limit=0, sample_n=64, note=args.note)
            LM.run_row("vae", "dynamic", lm_args, LM.order_of("vae", "dynamic"))
        run_dir = R.OUT_DIR / LM.TABLE / "vae-dynamic"
        probe_out = run_dir / "probe_metrics.json"
        lm_budget = json.loads(R.row_path(LM.TABLE, "vae-dynamic").read_text())["budget_s"]
        if float(lm_budget) != float(args.budget):  # the row says the budget its run really had
            print(f"[vae] note: the likelihood benchmark's vae-dynamic run trained for {lm_budget:g} s, not --budget "
                  f"{args.budget:g}; to retrain it, delete {run_dir} and {R.row_path(LM.TABLE, 'vae-dynamic')}", flush=True)
        budget_words = f"{float(lm_budget):g} s wall clock"
        ov = ["data.binarize=dynamic", f"train.time_budget={float(lm_budget):g}", "train.steps=1000000"]
    else:
        run_dir = R.train_or_resume(TABLE, name, recipe, ov)
        probe_out = run_dir / "metrics.json"
    log = R.OUT_DIR / TABLE / f"{name}.log"
    s = _summary(run_dir)
    metrics = ["probe"] if name == "vae" else ["fid", "kid", "pr"] + (["probe"] if encoder else [])
    R.run(["eval", str(run_dir), "--metrics", ",".join(metrics), "--n-samples", str(args.n_samples), "--no-progress",
           "--out", str(probe_out)], log)
    m = json.loads(probe_out.read_text())
    cmd = f"genzoo train {recipe} {' '.join(ov)} --run-dir RUN && genzoo eval RUN --metrics {','.join(metrics)} --n-samples {args.n_samples}"
    rec.update({"budget": budget_words, "steps": s["steps"], "train_s": s["train_time_s"], "images_per_s": s.get("images_per_s"),
                "weights": m["weights"]["weights"], "data": m["data"], "n_samples": args.n_samples})
    if "sample_metrics" in m:
        sm = m["sample_metrics"]
        rec.update({k: sm[k] for k in ("fid", "fid_floor", "kid", "precision", "recall")})
    if "probe" in m:
        rec["probe_accuracy"] = m["probe"]["accuracy"]
        rec["probe"] = {k: v for k, v in m["probe"].items() if k != "pictures"}
    if toy:
        toy_ov = [f"train.time_budget={args.toy_budget:g}"] if args.toy_budget > 0 else []
        toy_dir = R.train_or_resume(TABLE, name + "-toy", toy, overrides + toy_ov)
        R.run(["eval", str(toy_dir), "--metrics", "modes", "--no-progress", "--out", str(toy_dir / "metrics.json")], log)
        mo = json.loads((toy_dir / "metrics.json").read_text())["modes"]
        ts = _summary(toy_dir)
        rec.update({"modes": mo["modes_covered"], "toy_high_quality": mo["high_quality"], "toy_steps": ts["steps"],
                    "toy_per_mode": mo["per_mode"]})
        cmd += f" && genzoo train {toy} {' '.join(overrides + toy_ov)} --run-dir TOY && genzoo eval TOY --metrics modes"
    rec["command"] = f"python benchmarks/gans_mnist.py --only {name}   # = " + cmd.replace("  ", " ")
    R.write_row(TABLE, name, rec)
    show = {k: rec.get(k) for k in ("steps", "fid", "fid_floor", "precision", "recall", "probe_accuracy", "modes")}
    print(f"[{name}] " + ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in show.items() if v is not None), flush=True)


SHEET = "gans_mnist_samples.png"


def sample_sheet(n: int = 16) -> Path | None:
    """One picture for the table: n EMA samples (seed 0) of every finished MNIST row, a labelled row each,
    written to benchmarks/gans_mnist_samples.png (seconds; rebuilt after every row)."""
    import numpy as np
    import torch
    from PIL import Image, ImageDraw

    from genzoo.train.run import load_run
    from genzoo.viz import image_grid

    strips = []
    for name, (recipe, _ov, _toy, _enc) in ROWS.items():
        run_dir = R.OUT_DIR / TABLE / name
        if recipe is None or name == "vae" or not R.done(TABLE, name) or not (run_dir / "train_summary.json").is_file():
            continue
        model, cfg, spec = load_run(run_dir)
        with torch.no_grad():
            x = model.sample(n, generator=torch.Generator().manual_seed(0), **(cfg.get("sample") or {}))
        strips.append((name, image_grid(x.float(), spec.value_range, nrow=n, scale=2)[..., 0]))
    if not strips:
        return None
    label_w = 110
    h, w = strips[0][1].shape
    sheet = Image.new("L", (label_w + w, h * len(strips)), 64)
    draw = ImageDraw.Draw(sheet)
    for i, (name, grid) in enumerate(strips):
        sheet.paste(Image.fromarray(np.ascontiguousarray(grid), mode="L"), (label_w, i * h))
        draw.text((6, i * h + h // 2 - 6), name, fill=255)
    path = R.RESULTS_MD.parent / SHEET
    tmp = path.with_name(f".{path.name}.tmp.png")
    sheet.save(tmp)
    tmp.replace(path)
    return path


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", action="append", choices=list(ROWS), help="run only this row (repeatable)")
    ap.add_argument("--force", action="store_true", help="redo rows that are already done")
    ap.add_argument("--budget", type=float, default=1800.0, help="training seconds per MNIST model (default 1800)")
    ap.add_argument("--toy-budget", type=float, default=0.0, help="seconds per 8-Gaussians run (default 0: the recipe's 2,000 steps)")
    ap.add_argument("--n-samples", type=int, default=10000, help="samples for FID/KID/PR (default 10000)")
    ap.add_argument("--note", default="", help="recorded with each row, e.g. 'machine shared with other jobs'")
    args = ap.parse_args(argv)
    for i, name in enumerate(ROWS):
        if args.only and name not in args.only:
            continue
        if R.done(TABLE, name) and not args.force:
            print(f"[{name}] done already ({R.row_path(TABLE, name)}); --force to redo")
            continue
        run_row(name, args, i)
        R.rebuild_results_md()
        sample_sheet()
    print(f"wrote {R.rebuild_results_md()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
