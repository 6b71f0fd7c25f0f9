#!/usr/bin/env python
"""Train genzoo's MNIST feature network (the "mnist" extractor of FID/KID/precision-recall).

A small CNN classifier (:class:`genzoo.eval.features.MNISTFeatureNet`) trained on the 60k
MNIST training images, inputs in [-1, 1] (x = 2k/255 - 1), with random shifts of up to
+-2 pixels, and with a fraction of every batch binarised (x ~ Bernoulli(k/255) mapped to
{-1, 1}) so that its features are meaningful for binary-MNIST models too. Seeded and
deterministic on the CPU. Writes

    src/genzoo/eval/assets/mnist_features.safetensors   (float32 weights, ~0.4 MB)
    src/genzoo/eval/assets/mnist_features.json          (accuracy, size, command, sha256)

Usage:  python scripts/train_feature_net.py [--epochs 8] [--seed 0] [--threads 1]
"""
from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import math
import platform
import shlex
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from genzoo.data.mnist import load_mnist_arrays
from genzoo.eval.features import MNIST_WEIGHTS, MNISTFeatureNet


def shift_batch(x: torch.Tensor, max_shift: int, g: torch.Generator) -> torch.Tensor:
    """Random integer translation of each (B, 28, 28) image by up to +-max_shift px (pad value = background)."""
    if max_shift == 0:
        return x
    B, H, W = x.shape
    pad = F.pad(x, (max_shift,) * 4, value=-1.0)
    oy = torch.randint(0, 2 * max_shift + 1, (B,), generator=g)
    ox = torch.randint(0, 2 * max_shift + 1, (B,), generator=g)
    rows = (oy[:, None] + torch.arange(H))[:, :, None]
    cols = (ox[:, None] + torch.arange(W))[:, None, :]
    return pad[torch.arange(B)[:, None, None], rows, cols]


def make_batch(raw: torch.Tensor, bin_frac: float, max_shift: int, g: torch.Generator) -> torch.Tensor:
    """uint8 (B, 28, 28) -> float (B, 1, 28, 28) in [-1, 1]; a bin_frac share binarised."""
    p = raw.float() / 255.0
    x = 2.0 * p - 1.0
    if bin_frac > 0:
        sel = torch.rand(raw.shape[0], generator=g) < bin_frac
        b = (torch.rand(p.shape, generator=g) < p).float() * 2.0 - 1.0
        x = torch.where(sel[:, None, None], b, x)
    return shift_batch(x, max_shift, g)[:, None]


@torch.no_grad()
def accuracy(net, raw: torch.Tensor, labels: torch.Tensor, binarize: bool, seed: int = 1234) -> float:
    net.eval()
    g = torch.Generator().manual_seed(seed)
    correct = 0
    for s in range(0, len(raw), 1000):
        p = raw[s: s + 1000].float() / 255.0
        x = (torch.rand(p.shape, generator=g) < p).float() if binarize else p
        correct += int((net(2.0 * x[:, None] - 1.0).argmax(1) == labels[s: s + 1000]).sum())
    return correct / len(raw)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--lr", type=float, default=4e-3, help="peak learning rate of the one-cycle schedule")
    ap.add_argument("--weight-decay", type=float, default=5e-4)
    ap.add_argument("--bin-frac", type=float, default=0.3, help="share of each batch binarised")
    ap.add_argument("--max-shift", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path, default=MNIST_WEIGHTS)
    ap.add_argument("--min-accuracy", type=float, default=0.99, help="fail (exit 1, nothing written) below this test accuracy")
    args = ap.parse_args(argv)

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    g = torch.Generator().manual_seed(args.seed)

    xtr, ytr = load_mnist_arrays(train=True)
    xte, yte = load_mnist_arrays(train=False)
    xtr, ytr = torch.from_numpy(xtr), torch.from_numpy(ytr)
    xte, yte = torch.from_numpy(xte), torch.from_numpy(yte)

    net = MNISTFeatureNet()
    nparams = sum(p.numel() for p in net.parameters())
    decay = [p for n, p in net.named_parameters() if p.ndim > 1]
    no_decay = [p for n, p in net.named_parameters() if p.ndim <= 1]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": args.weight_decay}, {"params": no_decay, "weight_decay": 0.0}], lr=args.lr)
    steps_per_epoch = math.ceil(len(xtr) / args.batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=args.lr, total_steps=args.epochs * steps_per_epoch, pct_start=0.2)
    print(f"MNISTFeatureNet: {nparams} parameters; {args.epochs} epochs x {steps_per_epoch} steps", flush=True)

    t0 = time.time()
    for epoch in range(args.epochs):
        net.train()
        perm = torch.randperm(len(xtr), generator=g)
        tot, n = 0.0, 0
        for s in range(0, len(xtr), args.batch_size):
            idx = perm[s: s + args.batch_size]
            x = make_batch(xtr[idx], args.bin_frac, args.max_shift, g)
            loss = F.cross_entropy(net(x), ytr[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            tot += loss.item() * len(idx)
            n += len(idx)
        acc = accuracy(net, xte, yte, binarize=False)
        print(f"epoch {epoch + 1}: train loss {tot / n:.4f}, test acc {acc:.4f}, {time.time() - t0:.0f}s", flush=True)
    train_s = time.time() - t0

    acc_grey = accuracy(net, xte, yte, binarize=False)
    acc_bin = accuracy(net, xte, yte, binarize=True)
    print(f"final test accuracy: grey {acc_grey:.4f}, binarised {acc_bin:.4f}; training {train_s:.0f}s", flush=True)
    if acc_grey < args.min_accuracy:
        print(f"test accuracy {acc_grey:.4f} < {args.min_accuracy}; not writing {args.out}", file=sys.stderr)
        return 1

    from safetensors.torch import save_file

    net.eval()
    state = {k: v.detach().float().contiguous() for k, v in net.state_dict().items() if v.dtype.is_floating_point}
    # num_batches_tracked (int64) is training bookkeeping only; load_state_dict gets it from the module default
    state.update({k: v for k, v in net.state_dict().items() if not v.dtype.is_floating_point})
    args.out.parent.mkdir(parents=True, exist_ok=True)
    save_file(state, str(args.out), metadata={"format": "pt", "model": "genzoo.eval.features.MNISTFeatureNet"})
    sha = hashlib.sha256(args.out.read_bytes()).hexdigest()
    meta = {
        "model": "genzoo.eval.features.MNISTFeatureNet",
        "widths": list(net.widths),
        "feature_dim": net.feature_dim,
        "feature_layer": "fc (Linear -> BatchNorm1d -> ReLU), the penultimate layer",
        "input": "(B, 1, 28, 28) float in [-1, 1]; MNIST pixel k -> 2k/255 - 1",
        "num_parameters": nparams,
        "test_accuracy": acc_grey,
        "test_accuracy_binarized": acc_bin,
        "test_accuracy_binarized_protocol": "dynamic binarisation x ~ Bernoulli(k/255) of the 10k test images, torch.Generator seed 1234",
        "training": {
            "data": "MNIST train (60k)",
            "epochs": args.epochs, "batch_size": args.batch_size, "optimizer": "AdamW + OneCycleLR",
            "lr": args.lr, "weight_decay": args.weight_decay, "bin_frac": args.bin_frac,
            "max_shift": args.max_shift, "seed": args.seed, "threads": args.threads,
            "seconds": round(train_s, 1),
        },
        "command": "python scripts/train_feature_net.py" + ("" if not argv and len(sys.argv) <= 1 else " " + shlex.join(argv if argv is not None else sys.argv[1:])),
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "torch": torch.__version__,
        "platform": platform.platform(),
        "weights_file": args.out.name,
        "weights_bytes": args.out.stat().st_size,
        "sha256": sha,
    }
    args.out.with_suffix(".json").write_text(json.dumps(meta, indent=2) + "\n")
    print(f"wrote {args.out} ({args.out.stat().st_size} bytes, sha256 {sha[:16]}...) and {args.out.with_suffix('.json').name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
