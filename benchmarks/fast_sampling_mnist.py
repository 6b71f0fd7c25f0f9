#!/usr/bin/env python
"""Few-step generation on dequantised MNIST (issue 4): FID against NFE for flow matching (1-rectified
flow), the 2-rectified flow (reflow), the shortcut model (1 to 128 steps), Skip-Tuned EDM, and PFGM
(Poisson flow, its own ODE; 30 minutes like the rest).

Same budget rule as benchmarks/diffusion_mnist.py: every network trains for ``--budget`` seconds
(default 1800 = 30 minutes on 2 cores). The flow-matching and EDM runs ARE the diffusion
benchmark's (benchmarks/out/diffusion_mnist/{flow,edm}; trained there if missing); the
2-rectified flow starts from the flow run's weights (as the paper) and trains for the same budget
on ``--pairs`` ODE pairs made with Heun's method, 18 steps (35 NFE; FID 3.02 in the diffusion benchmark,
below Euler 100's 3.10), network under bf16 (pair generation time is reported, not counted in the budget); the
shortcut model trains for the budget from scratch. Skip-Tuning picks rho on the VALIDATION split
(``--search-n`` samples per candidate) at each NFE, then reports test FID.

Rows are written when finished and skipped when the script runs again; the plot
benchmarks/fast_sampling_fid_vs_nfe.png and RESULTS.md are rebuilt from the rows.

    python benchmarks/fast_sampling_mnist.py
    python benchmarks/fast_sampling_mnist.py --only shortcut --budget 1800
    python benchmarks/fast_sampling_mnist.py --only shortcut-b4   # 1/4 of each batch on self-consistency
    python benchmarks/fast_sampling_mnist.py --only shortcut-b4-ema0   # and targets from the current weights
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _results as R  # noqa: E402
import diffusion_mnist as DM  # noqa: E402

TABLE = "fast_sampling_mnist"
R.TABLES[TABLE] = (
    "Few-step sampling on dequantised MNIST (issue 4)",
    "FID on genzoo's MNIST classifier features, n samples vs n dequantised test images, beside the floor "
    "FID(test, train) at the same n; networks under bf16 autocast while sampling. Every network trained for "
    "the budget shown on 2 CPU cores (2-rectified flow: the same budget again, from the 1-rectified weights, on "
    "ODE pairs). Goals: shortcut 1 step within 1.5x of its own 128-step FID; 2-rectified flow at 1 step at "
    "least 2x better than 1-rectified flow at 1 step.",
    [("model", "model"), ("budget", "budget"), ("sampler", "sampler"), ("NFE", "nfe"), ("FID", "fid"),
     ("FID floor", "fid_floor"), ("n", "n"), ("s / image", "sec_per_image"), ("note", "detail")],
)


def _fid_cell(name, model_obj, real, spec, n, opts, row):
    from genzoo.eval import sample_metrics
    from genzoo.eval.runner import draw_samples

    if R.done(TABLE, name):
        return
    t0 = time.perf_counter()
    fake = draw_samples(model_obj, n, seed=0, progress=False, batch_size=250, **opts)
    sec = (time.perf_counter() - t0) / n
    row = {**row, "name": name, "fid": sample_metrics(fake, real, metrics=("fid",), spec=spec)["fid"], "n": n,
           "sec_per_image": sec, "options": opts}
    R.write_row(TABLE, name, row)
    print(f"[{name}] FID {row['fid']:.2f}", flush=True)


def _floor(n, data_cfg):
    from genzoo.eval import fid_floor
    from genzoo.train.run import load_data

    p = R.row_path(TABLE + "_aux", f"floor-{n}")
    if p.is_file():
        return json.loads(p.read_text())["fid_floor"]
    test = load_data(data_cfg, "test")
    f = fid_floor(test.tensor(seed=0, limit=n), load_data(data_cfg, "train").tensor(seed=1, limit=n), spec=test.spec)
    R.write_row(TABLE + "_aux", f"floor-{n}", {"fid_floor": f, "n": n})
    return f


def run(args) -> None:
    from genzoo.train.run import load_data, load_run

    data_cfg = {"name": "mnist", "dequantize": "uniform"}
    test = load_data(data_cfg, "test")
    real = test.tensor(seed=0, limit=args.n)
    floor = _floor(args.n, data_cfg)
    base = {"budget": f"{args.budget / 60:.3g} min", "fid_floor": floor, "note": args.note,
            "command": f"python benchmarks/fast_sampling_mnist.py --budget {args.budget:g} --n {args.n}"}
    want = set(args.only or ["flow", "skip", "shortcut", "shortcut-b4", "shortcut-b4-ema0", "reflow", "pfgm"])
    if "flow" in want:  # cheap first: the diffusion benchmark's runs, sampling only
        flow_dir = DM.train_model("flow", args.budget)
        m1, _, _ = load_run(flow_dir)
        for k in (1, 2, 4, 8, 16, 128):
            _fid_cell(f"rf1-euler-{k}", m1, real, test.spec, args.n, {"sampler": "euler", "steps": k, "precision": "bf16"},
                      {**base, "order": 100 + k, "model": "1-rectified flow", "sampler": "euler", "nfe": k})
    if "skip" in want:
        from genzoo.pipelines.skip_tuning import search

        edm_dir = DM.train_model("edm", args.budget)
        me, _, _ = load_run(edm_dir)
        valid = load_data(data_cfg, "valid").tensor(seed=0, limit=args.search_n)
        for sampler, steps, nfe in (("heun", 3, 5), ("heun", 5, 9), ("heun", 10, 19)):
            name = f"edm-skiptuned-{sampler}-{steps}"
            if R.done(TABLE, name):
                continue
            r = search(me, valid, test.spec, sampler=sampler, steps=steps, n=args.search_n, precision="bf16",
                       rhos=tuple(float(v) for v in args.rhos.split(",")))
            _fid_cell(f"edm-{sampler}-{steps}", me, real, test.spec, args.n, {"sampler": sampler, "steps": steps, "precision": "bf16"},
                      {**base, "order": 400 + nfe, "model": "EDM", "sampler": sampler, "nfe": nfe})
            _fid_cell(name, me, real, test.spec, args.n,
                      {"sampler": sampler, "steps": steps, "precision": "bf16", "skip_scales": r["best_scales"]},
                      {**base, "order": 500 + nfe, "model": "EDM + Skip-Tuning", "sampler": sampler, "nfe": nfe,
                       "detail": f"rho_inner {r['best_rho']} chosen on {args.search_n} validation samples (FID by rho: "
                                 + ", ".join(f"{k:g}: {v:.2f}" for k, v in r["fids"].items()) + ")",
                       "search_fids": r["fids"]})
    for name, extra, order, label in (  # the authors' mix (1/8 of each batch on self-consistency), and 1/4
            ("shortcut", [], 300, "shortcut"), ("shortcut-b4", ["model.bootstrap_every=4"], 350, "shortcut, 1/4 self-consistency"),
            # targets from the current weights instead of an EMA lagging ~1,000 of the ~4,000 steps that fit the budget
            # (iCT, Song & Dhariwal 2023, dropped the EMA teacher of consistency training for the same reason)
            ("shortcut-b4-ema0", ["model.bootstrap_every=4", "model.bootstrap_ema=false"], 370,
             "shortcut, 1/4 s.-c., current-weight targets")):
        if name not in want:
            continue
        sc = R.train_or_resume(TABLE, name, "shortcut", ["train.steps=1000000", f"train.time_budget={args.budget:g}", *extra])
        ms, _, _ = load_run(sc)
        detail = {"detail": " ".join(extra) + " (1/4 of each batch on the self-consistency target; authors' 1/8"
                            + ("; targets from the current weights, not the 0.999 EMA" if len(extra) > 1 else "") + ")"} if extra else {}
        for k in (1, 2, 4, 8, 16, 32, 64, 128):
            _fid_cell(f"{name}-{k}", ms, real, test.spec, args.n, {"steps": k, "precision": "bf16"},
                      {**base, "order": order + k, "model": label, "sampler": "shortcut", "nfe": k, **detail})
    if "reflow" in want:
        flow_dir = DM.train_model("flow", args.budget)
        out = R.OUT_DIR / TABLE / "rf2"
        if not (out / "train_summary.json").is_file():
            R.run(["reflow", str(flow_dir), "--pairs", str(args.pairs), "--sampler", "heun", "--ode-steps", "18",
                   "--precision", "bf16", "--out", str(out),
                   "--no-progress", "train.steps=1000000", f"train.time_budget={args.budget:g}"],
                  R.OUT_DIR / TABLE / "rf2.log")
        m2, _, _ = load_run(out)
        rep = json.loads((out / "reflow.json").read_text())
        pairs_s = rep.get("pairs_seconds")
        detail = (f"{args.pairs} pairs (Heun 18{f', made in {pairs_s / 60:.0f} min' if pairs_s else ''}); "
                  f"straightness {rep['straightness_before']:.3g} -> {rep['straightness_after']:.3g}")
        for k in (1, 2, 4, 8, 16, 128):
            _fid_cell(f"rf2-euler-{k}", m2, real, test.spec, args.n, {"sampler": "euler", "steps": k, "precision": "bf16"},
                      {**base, "order": 200 + k, "model": "2-rectified flow", "sampler": "euler", "nfe": k, "detail": detail})
    if "pfgm" in want:  # PFGM (Xu et al. 2022): its own ODE in N + 1 dimensions, Heun steps uniform in log z
        pf = R.train_or_resume(TABLE, "pfgm", "pfgm", ["train.steps=1000000", f"train.time_budget={args.budget:g}"])
        mp, _, _ = load_run(pf)
        for k in (5, 10, 25, 50):
            _fid_cell(f"pfgm-heun-{k}", mp, real, test.spec, args.n, {"sampler": "heun", "steps": k},
                      {**base, "order": 600 + k, "model": "PFGM", "sampler": "heun (log z)", "nfe": 2 * k,
                       "detail": "trained on MNIST without dequantisation (configs/pfgm.yaml); network in fp32"})


def plot() -> None:
    d = R.RESULTS_DIR / TABLE
    rows = [json.loads(p.read_text()) for p in d.glob("*.json")] if d.is_dir() else []
    if not rows:
        return
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for model in sorted({r["model"] for r in rows}):
        pts = sorted((r["nfe"], r["fid"]) for r in rows if r["model"] == model)
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=model)
    ax.axhline(rows[0]["fid_floor"], color="grey", ls="--", lw=1, label="FID floor")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("network evaluations per image (NFE)")
    ax.set_ylabel("FID (MNIST classifier features)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(R.RESULTS_MD.parent / "fast_sampling_fid_vs_nfe.png", dpi=120)
    plt.close(fig)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", action="append", choices=["flow", "reflow", "shortcut", "shortcut-b4", "shortcut-b4-ema0", "skip", "pfgm"])
    ap.add_argument("--budget", type=float, default=1800.0, help="training seconds per network (default 1800)")
    ap.add_argument("--n", type=int, default=1000, help="samples per FID cell (default 1000)")
    ap.add_argument("--pairs", type=int, default=20000, help="ODE pairs for the 2-rectified flow (default 20000)")
    ap.add_argument("--search-n", type=int, default=500, help="validation samples per Skip-Tuning candidate (default 500)")
    ap.add_argument("--rhos", default="1,0.8,0.6,0.4,0.3,0.2,0.1",
                    help="Skip-Tuning candidates for rho_inner, the innermost skip factor (default 1,0.8,0.6,0.4,0.3,0.2,0.1)")
    ap.add_argument("--note", default="")
    args = ap.parse_args(argv)
    run(args)
    plot()
    print(f"wrote {R.rebuild_results_md()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
