"""Sampling and ODE-likelihood speed against chunk size, NFE and precision, with the diffusers loop
in the same run (issue 34).

    python benchmarks/sampling_speed.py                 # every study below
    python benchmarks/sampling_speed.py --only chunks   # one of: chunks, families, likelihood, peer, cli

Studies (wall seconds per image; user / sys CPU seconds of this process over the same call, from
getrusage; 2 CPU cores; nothing else running):

* chunks: the flow_matching recipe's network (UNet, 1.2 M parameters) trained for its budget in
  OUT/sampling_speed/flow_matching, Heun 18 steps (35 NFE), n images drawn in chunks of
  25 ... 500, in fp32 and under precision=auto; then Euler at 1 ... 128 steps at the default chunk.
* families: one model of every family that samples, built from its recipe's architecture with
  untrained weights (a fixed-step sampler's cost does not depend on the weights), against chunk size.
* likelihood: the probability-flow ODE log_prob (dopri5, Hutchinson) of the trained flow, seconds per
  image against chunk size (adaptive: the cost depends on the trained weights).
* peer: diffusers' UNet2DModel (1.1 M parameters, _diffusers_ref.make_unet) + DDIMScheduler loop
  against genzoo's DDIM / Euler at the same NFE, each at its best chunk, same precision.
* cli: `genzoo sample RUN --n 1000 sampler=heun steps=18` end to end (the issue's 211 s).
* n10000 (not in the default set: ~6 min): 10,000 Heun-18 samples at the default chunk, genzoo eval's path.
* network (not in the default set: ~3 min with torch.compile's first call): one network call, no sampler, for
  genzoo's UNet in fp32 / bf16 autocast / channels_last / bf16 weights / torch.compile and diffusers' UNet2DModel.

Writes benchmarks/results/sampling_speed.json (one entry per study, with machine and date) and
prints markdown tables.
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _results as R  # noqa: E402

RUN = R.OUT_DIR / "sampling_speed" / "flow_matching"
RESULT = R.RESULTS_DIR / "sampling_speed.json"


def timed(fn):
    """(result, wall s, user s, sys s) of fn() in this process."""
    r0, t0 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    out = fn()
    t1, r1 = time.perf_counter(), resource.getrusage(resource.RUSAGE_SELF)
    return out, t1 - t0, r1.ru_utime - r0.ru_utime, r1.ru_stime - r0.ru_stime


def ensure_run() -> Path:
    if not (RUN / "train_summary.json").is_file():
        R.train_or_resume("sampling_speed", "flow_matching", "flow_matching",
                          ["train.steps=1000000", "train.time_budget=1800"])
    return RUN


def load_flow():
    from genzoo.train.run import load_run

    return load_run(ensure_run())[0]


def draw(model, n, chunk, **opts):
    from genzoo.eval.runner import draw_samples

    return draw_samples(model, n, batch_size=chunk, progress=False, **opts)


def row(n, chunk, wall, user, sys_, **extra):
    return {"n": n, "chunk": chunk, "s_per_image": wall / n, "images_per_s": n / wall, "wall_s": wall,
            "user_s": user, "sys_s": sys_, "sys_over_user": sys_ / max(user, 1e-9), **extra}


def chunk_rows(n: int, grid) -> list:
    model = load_flow()
    draw(model, 50, 50, sampler="heun", steps=18, precision="fp32")  # warm-up
    from genzoo.memory import memory_setting

    rows = []
    for precision, chunks in grid:
        for chunk in chunks:
            _, w, u, s = timed(lambda: draw(model, n, chunk, sampler="heun", steps=18, precision=precision))
            rows.append(row(n, chunk, w, u, s, sampler="heun", steps=18, nfe=35, precision=precision, memory=memory_setting()))
            print(f"  chunks {memory_setting()} {precision} {chunk}: {w / n * 1000:.1f} ms/image, "
                  f"sys/user {s / max(u, 1e-9):.2f}", flush=True)
    return rows


def study_chunks(n: int) -> dict:
    import os
    import tempfile

    # before: glibc's default allocator (what genzoo did until issue 34), in a child process
    with tempfile.NamedTemporaryFile(suffix=".json") as f:
        subprocess.run([sys.executable, __file__, "--child-chunks", f.name, "--n", str(n)], check=True,
                       env={**os.environ, "GENZOO_MALLOC": "default"})
        rows = json.loads(Path(f.name).read_text())
    # after: freed memory kept (genzoo/memory.py), every chunk size, fp32 and auto
    rows += chunk_rows(n, [("fp32", (100, 500)), ("auto", (25, 50, 100, 200, 400, 500))])
    model = load_flow()
    from genzoo.eval.runner import default_chunk

    chunk = default_chunk(model)
    for steps in (1, 2, 4, 8, 16, 32, 64, 128):
        _, w, u, s = timed(lambda: draw(model, n, chunk, sampler="euler", steps=steps))
        rows.append(row(n, chunk, w, u, s, sampler="euler", steps=steps, nfe=steps, precision="auto (draw_samples default)"))
    return {"rows": rows, "default_chunk": chunk, "model": "flow_matching recipe (UNet 1.2 M), trained run"}


FAMILIES = ["vae", "nvae", "gan", "wgan_gp", "glow", "realnvp", "nice", "tarflow", "pixelcnn", "made", "nade",
            "image_transformer", "discrete_diffusion", "shortcut", "pfgm", "ddim"]


def study_families(n: int) -> dict:
    from genzoo.config import load_recipe, resolve
    from genzoo.eval.runner import default_chunk
    from genzoo.registry import build
    from genzoo.train.run import link_data_args, load_data

    rows = []
    for recipe in FAMILIES:
        cfg = load_recipe(recipe)
        spec = load_data(cfg["data"], "test").spec
        cfg = resolve(link_data_args(cfg, spec))
        torch.manual_seed(0)
        model = build(cfg["model"], **cfg["model_args"]).eval()
        opts = dict(cfg.get("sample") or {})
        slow = cfg["model"] in ("pixelcnn", "gated_pixelcnn", "image_transformer", "made", "nade", "fvsbn")
        m = 16 if slow else n
        for chunk in ((4, 16) if slow else (16, 64, 256, 1024)):
            if chunk > m:
                continue
            _, w, u, s = timed(lambda: draw(model, m, chunk, **opts))
            rows.append(row(m, chunk, w, u, s, recipe=recipe, model=cfg["model"], default_chunk=default_chunk(model)))
            print(f"  {recipe} chunk {chunk}: {w / m * 1000:.2f} ms/image, sys/user {s / max(u, 1e-9):.2f}", flush=True)
    return {"rows": rows, "weights": "untrained (the recipe's architecture; fixed-step sampling cost does not depend on weights)"}


def study_likelihood(n: int) -> dict:
    from genzoo.train.run import load_data

    model = load_flow()
    test = load_data({"name": "mnist", "dequantize": "uniform", "value_range": [-1, 1]}, "test")
    x = test.tensor(seed=0, limit=n)
    rows = []
    for chunk in (16, 64):
        def run():
            return torch.cat([model.log_prob(x[i:i + chunk], generator=torch.Generator().manual_seed(i))
                              for i in range(0, n, chunk)])
        lp, w, u, s = timed(run)
        rows.append(row(n, chunk, w, u, s, nll_nats=float(-lp.mean())))
        print(f"  likelihood chunk {chunk}: {w / n:.2f} s/image", flush=True)
    return {"rows": rows, "method": "dopri5, rtol = atol = 1e-5, one Hutchinson probe"}


def study_peer(n: int) -> dict:
    import _diffusers_ref as D

    from genzoo.train.trainer import resolve_precision

    bf16 = resolve_precision("auto", "cpu") == "bf16"
    model = load_flow()
    torch.manual_seed(0)
    unet = D.make_unet().eval()
    params = {"genzoo": sum(p.numel() for p in model.parameters()), "diffusers": sum(p.numel() for p in unet.parameters())}
    rows = []
    for nfe in (10, 35, 50):
        best = {}
        for chunk in (50, 100, 250):
            _, w, u, s = timed(lambda: D.sample(unet, n, steps=nfe, batch_size=chunk, bf16=bf16))
            rows.append(row(n, chunk, w, u, s, who="diffusers UNet2DModel + DDIMScheduler", nfe=nfe))
            best.setdefault("diffusers", []).append(n / w)
            for sampler in ("euler", "ddim"):
                _, w, u, s = timed(lambda: draw(model, n, chunk, sampler=sampler, steps=nfe, precision="auto"))
                rows.append(row(n, chunk, w, u, s, who=f"genzoo {sampler}", nfe=nfe))
                best.setdefault(f"genzoo {sampler}", []).append(n / w)
        print(f"  peer nfe {nfe}: " + ", ".join(f"{k} {max(v):.1f} img/s" for k, v in best.items()), flush=True)
    return {"rows": rows, "parameters": params, "precision": "bf16" if bf16 else "fp32"}


def study_network(n: int) -> dict:
    """Where the diffusers ratio stands: one network call (no sampler) on a chunk of 250, ms per image, for
    genzoo's UNet (the flow_matching recipe's, untrained weights: the cost does not depend on them) in the
    layouts and compilers a CPU offers, and diffusers' UNet2DModel of the peer study, under bf16 autocast."""
    import copy

    import _diffusers_ref as D

    from genzoo.config import load_recipe, resolve
    from genzoo.memory import keep_freed_memory
    from genzoo.registry import build
    from genzoo.train.run import link_data_args, load_data

    keep_freed_memory()
    cfg = load_recipe("flow_matching")
    cfg = resolve(link_data_args(cfg, load_data(cfg["data"], "test").spec))
    torch.manual_seed(0)
    net = build(cfg["model"], **cfg["model_args"]).eval().net
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.02 * torch.randn_like(p))
    B, reps = 250, max(2, n // 40)
    x, t = torch.randn(B, 1, 28, 28), torch.full((B,), 500.0)

    def call(f, autocast=True):
        def g():
            with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
                return f()
        return g

    variants = {"genzoo UNet, fp32": call(lambda: net(x, t), autocast=False),
                "genzoo UNet, bf16 autocast (genzoo's auto)": call(lambda: net(x, t))}
    cl = copy.deepcopy(net).to(memory_format=torch.channels_last)
    xc = x.contiguous(memory_format=torch.channels_last)
    variants["genzoo UNet, bf16 autocast, channels_last"] = call(lambda: cl(xc, t))
    bf = copy.deepcopy(net).bfloat16()
    bf.embed.float()
    xb = x.bfloat16()
    variants["genzoo UNet, bf16 weights (no autocast)"] = call(lambda: bf(xb, t), autocast=False)
    compiled, compile_s = None, None
    try:
        t0 = time.perf_counter()
        compiled = torch.compile(net)
        call(lambda: compiled(x, t))()
        compile_s = time.perf_counter() - t0
        variants["genzoo UNet, bf16 autocast, torch.compile (inductor)"] = call(lambda: compiled(x, t))
    except Exception as e:  # no C++ compiler: say so
        print(f"  torch.compile unavailable: {type(e).__name__}: {e}", flush=True)
    torch.manual_seed(0)
    unet = D.make_unet().eval()
    t_d = torch.tensor(500)
    variants["diffusers UNet2DModel, bf16 autocast"] = call(lambda: unet(x, t_d).sample)
    rows = []
    for name, f in variants.items():
        f()
        f()
        _, w, u, s = timed(lambda: [f() for _ in range(reps)])
        rows.append(row(B * reps, B, w, u, s, variant=name))
        print(f"  {name}: {w / (B * reps) * 1000:.3f} ms per image per call", flush=True)
    return {"rows": rows, "compile_s": compile_s,
            "parameters": {"genzoo": sum(p.numel() for p in net.parameters()),
                           "diffusers": sum(p.numel() for p in unet.parameters())}}


def study_n10000() -> dict:
    """genzoo eval's path at the leaderboard's size: 10,000 Heun-18 samples at the default chunk."""
    from genzoo.eval.runner import default_chunk

    model = load_flow()
    draw(model, 50, 50, sampler="heun", steps=18)
    n = 10000
    _, w, u, s = timed(lambda: draw(model, n, None, sampler="heun", steps=18))
    return row(n, default_chunk(model), w, u, s, sampler="heun", steps=18, nfe=35, precision="auto")


def study_cli() -> dict:
    run = ensure_run()
    cmd = [sys.executable, "-m", "genzoo.cli", "sample", str(run), "--n", "1000", "sampler=heun", "steps=18",
           "--out", str(run.parent / "cli_sample.npy")]
    t0 = time.perf_counter()
    r = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    assert r.returncode == 0, r.stderr
    return {"command": "genzoo sample RUN --n 1000 sampler=heun steps=18", "wall_s": wall,
            "children_user_s": ru.ru_utime, "children_sys_s": ru.ru_stime, "stdout": r.stdout.strip()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", choices=["chunks", "families", "likelihood", "peer", "cli", "n10000", "network"], action="append")
    ap.add_argument("--n", type=int, default=400, help="images per measurement (default 400)")
    ap.add_argument("--child-chunks", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child_chunks:
        Path(args.child_chunks).write_text(json.dumps(chunk_rows(args.n, [("fp32", (50, 100, 200, 500)),
                                                                          ("auto", (100, 500))])))
        return
    results = json.loads(RESULT.read_text()) if RESULT.is_file() else {}
    studies = args.only or ["chunks", "families", "likelihood", "peer", "cli"]  # n10000 only when asked
    for name in studies:
        print(f"== {name}", flush=True)
        fn = {"chunks": lambda: study_chunks(args.n), "families": lambda: study_families(args.n),
              "likelihood": lambda: study_likelihood(64), "peer": lambda: study_peer(args.n), "cli": study_cli,
              "n10000": study_n10000, "network": lambda: study_network(args.n)}[name]
        out = fn()
        out.update(machine=R.machine(), date=time.strftime("%Y-%m-%d"), torch=torch.__version__,
                   command=f"python benchmarks/sampling_speed.py --only {name}" + (f" --n {args.n}" if args.n != 400 else ""))
        results[name] = out
        RESULT.parent.mkdir(parents=True, exist_ok=True)
        RESULT.write_text(json.dumps(results, indent=1))
        print(json.dumps({k: v for k, v in out.items() if k != "rows"}, indent=1))


if __name__ == "__main__":
    main()
