#!/usr/bin/env python
"""Denoising error by noise level of the diffusion benchmark's runs (a diagnostic, not a table).

For each run (EMA weights) and each sigma: E || D(s(t) (x0 + sigma eps); t) - x0 ||^2 per pixel on 256
uniformly dequantised MNIST test images, the same x0 and eps for every run (float32, no autocast).
It shows at which noise levels one model's denoiser is behind another's; docs/diffusion.md uses it to
explain the EDM rows of benchmarks/diffusion_mnist.py.

    python benchmarks/denoising_by_sigma.py edm edm-wide flow ddpm
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _results as R  # noqa: E402

SIGMAS = (0.05, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 40.0)


@torch.no_grad()
def denoising_errors(run_dir: Path, x0: torch.Tensor, eps: torch.Tensor, sigmas=SIGMAS) -> list[float]:
    from genzoo.train.run import load_run

    model, _, _ = load_run(run_dir)
    D, p = model.denoiser(), model.process
    out = []
    for s in sigmas:
        t = p.t_of_sigma(torch.tensor(s, dtype=torch.float64)).float()
        sig = float(p.sigma(t))
        if sig < 0.5 * s:  # beyond this process's largest noise level
            out.append(float("nan"))
            continue
        err = 0.0
        for i in range(0, len(x0), 128):
            xt = float(p.s(t)) * (x0[i:i + 128] + sig * eps[i:i + 128])
            err += float(((D(xt, t.expand(xt.shape[0])) - x0[i:i + 128]) ** 2).sum())
        out.append(err / x0.numel())
    return out


def main(argv=None) -> int:
    from genzoo.data import load_dataset

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+", help="run names under benchmarks/out/diffusion_mnist/ (or run folders)")
    ap.add_argument("--n", type=int, default=256, help="test images (default 256)")
    args = ap.parse_args(argv)
    torch.manual_seed(0)
    data = load_dataset("mnist", "test", dequantize="uniform")
    x0, _ = data.get_batch(torch.arange(args.n), torch.Generator().manual_seed(0))
    eps = torch.randn_like(x0)
    print("run".ljust(12) + "".join(f"sigma={s:<7g}" for s in SIGMAS))
    for name in args.runs:
        run = Path(name) if Path(name).is_dir() else R.OUT_DIR / "diffusion_mnist" / name
        errs = denoising_errors(run, x0, eps)
        print(name.ljust(12) + "".join(f"{e:<13.4f}" for e in errs), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
