#!/usr/bin/env python
"""Train one of genzoo's feature networks (the "mnist" and "cifar10" extractors of FID/KID/precision-recall).

``--data mnist`` (default): a small CNN classifier (:class:`genzoo.nn.feature_nets.MNISTFeatureNet`)
trained on the 60k MNIST training images, inputs in [-1, 1] (x = 2k/255 - 1), with random shifts of
up to +-2 pixels, and with a fraction of every batch binarised (x ~ Bernoulli(k/255) mapped to
{-1, 1}) so that its features are meaningful for binary-MNIST models too. Seeded and deterministic
on the CPU. Writes

    src/genzoo/nn/assets/mnist_features.safetensors   (float32 weights, ~0.4 MB)
    src/genzoo/nn/assets/mnist_features.json          (accuracy, size, command, sha256)

``--data cifar10 --data-root DIR``: a VGG-style classifier (:class:`genzoo.nn.feature_nets.CIFAR10FeatureNet`)
trained on the 50k CIFAR-10 training records found under DIR (the official binary archive, or a copy
in its layout; the JSON says which), inputs in [-1, 1], with random 4-pixel reflect-padded crops and
horizontal flips; bf16 autocast by default (``--precision fp32`` for full precision). Writes
``cifar10_features.safetensors`` / ``.json`` beside the MNIST files.

Usage:  python scripts/train_feature_net.py [--epochs 8] [--seed 0] [--threads 1]
        python scripts/train_feature_net.py --data cifar10 --data-root DIR [--epochs 20] [--threads 2]
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
from genzoo.nn.feature_nets import CIFAR10_WEIGHTS, MNIST_WEIGHTS, CIFAR10FeatureNet, MNISTFeatureNet


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


def cifar_batch(raw: torch.Tensor, pad: int, g: torch.Generator) -> torch.Tensor:
    """uint8 (B, 3, 32, 32) -> float in [-1, 1], randomly cropped from a reflect-padded copy and flipped."""
    x = raw.float() * (2.0 / 255.0) - 1.0
    B, C, H, W = x.shape
    if pad:
        x = F.pad(x, (pad,) * 4, mode="reflect")
        oy = torch.randint(0, 2 * pad + 1, (B,), generator=g)
        ox = torch.randint(0, 2 * pad + 1, (B,), generator=g)
        rows = (oy[:, None] + torch.arange(H))[:, None, :, None]
        cols = (ox[:, None] + torch.arange(W))[:, None, None, :]
        x = x[torch.arange(B)[:, None, None, None], torch.arange(C)[None, :, None, None], rows, cols]
    flip = torch.rand(B, generator=g) < 0.5
    return torch.where(flip[:, None, None, None], x.flip(-1), x)


@torch.no_grad()
def cifar_accuracy(net, raw: torch.Tensor, labels: torch.Tensor) -> float:
    net.eval()
    correct = 0
    for s in range(0, len(raw), 1000):
        x = raw[s: s + 1000].float() * (2.0 / 255.0) - 1.0
        correct += int((net(x).argmax(1) == labels[s: s + 1000]).sum())
    return correct / len(raw)


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
    ap.add_argument("--data", choices=("mnist", "cifar10"), default="mnist", help="which feature net (default mnist)")
    ap.add_argument("--data-root", default=None, metavar="DIR",
                    help="cifar10: where its binary records are (the archive, a copy in its layout, or the .bin files)")
    ap.add_argument("--epochs", type=int, default=None, help="default 8 (mnist), 20 (cifar10)")
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--lr", type=float, default=4e-3, help="peak learning rate of the one-cycle schedule")
    ap.add_argument("--weight-decay", type=float, default=5e-4)
    ap.add_argument("--bin-frac", type=float, default=0.3, help="mnist: share of each batch binarised")
    ap.add_argument("--max-shift", type=int, default=None, help="random shift (mnist, default 2) or crop padding (cifar10, default 4) in pixels")
    ap.add_argument("--precision", choices=("fp32", "bf16"), default=None,
                    help="training arithmetic: fp32 (mnist default) or bf16 autocast (cifar10 default); the weights are saved in fp32")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path, default=None, help="weights file (default: the shipped asset of --data)")
    ap.add_argument("--min-accuracy", type=float, default=None,
                    help="fail (exit 1, nothing written) below this test accuracy (default 0.99 mnist, 0.80 cifar10)")
    args = ap.parse_args(argv)
    cifar = args.data == "cifar10"
    epochs = args.epochs if args.epochs is not None else (20 if cifar else 8)
    max_shift = args.max_shift if args.max_shift is not None else (4 if cifar else 2)
    precision = args.precision or ("bf16" if cifar else "fp32")
    out = args.out or (CIFAR10_WEIGHTS if cifar else MNIST_WEIGHTS)
    min_acc = args.min_accuracy if args.min_accuracy is not None else (0.80 if cifar else 0.99)

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    g = torch.Generator().manual_seed(args.seed)

    if cifar:
        from genzoo.data.cifar import cifar10_arrays, source_description

        xtr, ytr, xte, yte, src = cifar10_arrays(args.data_root)
        source = source_description(src)
        xtr, ytr = torch.from_numpy(np.array(xtr)), torch.from_numpy(np.array(ytr))
        xte, yte = torch.from_numpy(np.array(xte)), torch.from_numpy(np.array(yte))
        net = CIFAR10FeatureNet()
    else:
        xtr, ytr = load_mnist_arrays(train=True)
        xte, yte = load_mnist_arrays(train=False)
        xtr, ytr = torch.from_numpy(xtr), torch.from_numpy(ytr)
        xte, yte = torch.from_numpy(xte), torch.from_numpy(yte)
        net = MNISTFeatureNet()
    cls_name = type(net).__name__
    nparams = sum(p.numel() for p in net.parameters())
    decay = [p for n, p in net.named_parameters() if p.ndim > 1]
    no_decay = [p for n, p in net.named_parameters() if p.ndim <= 1]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": args.weight_decay}, {"params": no_decay, "weight_decay": 0.0}], lr=args.lr)
    steps_per_epoch = math.ceil(len(xtr) / args.batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=args.lr, total_steps=epochs * steps_per_epoch, pct_start=0.2)
    print(f"{cls_name}: {nparams} parameters; {epochs} epochs x {steps_per_epoch} steps; {precision}", flush=True)

    def test_accuracy() -> float:
        return cifar_accuracy(net, xte, yte) if cifar else accuracy(net, xte, yte, binarize=False)

    t0 = time.time()
    for epoch in range(epochs):
        net.train()
        perm = torch.randperm(len(xtr), generator=g)
        tot, n = 0.0, 0
        for s in range(0, len(xtr), args.batch_size):
            idx = perm[s: s + args.batch_size]
            x = cifar_batch(xtr[idx], max_shift, g) if cifar else make_batch(xtr[idx], args.bin_frac, max_shift, g)
            with torch.autocast("cpu", torch.bfloat16, enabled=precision == "bf16"):
                loss = F.cross_entropy(net(x).float(), ytr[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            tot += loss.item() * len(idx)
            n += len(idx)
        print(f"epoch {epoch + 1}: train loss {tot / n:.4f}, test acc {test_accuracy():.4f}, {time.time() - t0:.0f}s", flush=True)
    train_s = time.time() - t0

    acc = test_accuracy()  # fp32, as the extractor runs it
    acc_bin = None if cifar else accuracy(net, xte, yte, binarize=True)
    print(f"final test accuracy: {acc:.4f}" + ("" if cifar else f" grey, {acc_bin:.4f} binarised") + f"; training {train_s:.0f}s", flush=True)
    if acc < min_acc:
        print(f"test accuracy {acc:.4f} < {min_acc}; not writing {out}", file=sys.stderr)
        return 1

    from safetensors.torch import save_file

    net.eval()
    state = {k: v.detach().float().contiguous() for k, v in net.state_dict().items() if v.dtype.is_floating_point}
    # num_batches_tracked (int64) is training bookkeeping only; load_state_dict gets it from the module default
    state.update({k: v for k, v in net.state_dict().items() if not v.dtype.is_floating_point})
    out.parent.mkdir(parents=True, exist_ok=True)
    save_file(state, str(out), metadata={"format": "pt", "model": f"genzoo.eval.features.{cls_name}"})
    sha = hashlib.sha256(out.read_bytes()).hexdigest()
    meta = {
        "model": f"genzoo.eval.features.{cls_name}",
        "widths": list(net.widths),
        "feature_dim": net.feature_dim,
        "feature_layer": ("fc (global average pool -> Linear -> BatchNorm1d -> ReLU), the penultimate layer" if cifar
                          else "fc (Linear -> BatchNorm1d -> ReLU), the penultimate layer"),
        "input": ("(B, 3, 32, 32) float in [-1, 1]; pixel k -> 2k/255 - 1 per channel" if cifar
                  else "(B, 1, 28, 28) float in [-1, 1]; MNIST pixel k -> 2k/255 - 1"),
        "num_parameters": nparams,
        "test_accuracy": acc,
    }
    if cifar:
        meta["test_accuracy_protocol"] = "the 10,000 test records of the same source, no augmentation, fp32"
        meta["training"] = {"data": f"CIFAR-10 train (50k): {source}", "epochs": epochs, "batch_size": args.batch_size,
                            "optimizer": "AdamW + OneCycleLR", "lr": args.lr, "weight_decay": args.weight_decay,
                            "augmentation": f"random crop from {max_shift}-px reflect padding, horizontal flip",
                            "precision": precision, "seed": args.seed, "threads": args.threads, "seconds": round(train_s, 1)}
    else:
        meta["test_accuracy_binarized"] = acc_bin
        meta["test_accuracy_binarized_protocol"] = ("dynamic binarisation x ~ Bernoulli(k/255) of the 10k test images, "
                                                    "torch.Generator seed 1234")
        meta["training"] = {"data": "MNIST train (60k)", "epochs": epochs, "batch_size": args.batch_size,
                            "optimizer": "AdamW + OneCycleLR", "lr": args.lr, "weight_decay": args.weight_decay,
                            "bin_frac": args.bin_frac, "max_shift": max_shift, "seed": args.seed, "threads": args.threads,
                            "seconds": round(train_s, 1)}
    cmd_args = argv if argv is not None else sys.argv[1:]
    meta.update({
        "command": "python scripts/train_feature_net.py" + (" " + shlex.join(cmd_args) if cmd_args else ""),
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "torch": torch.__version__,
        "platform": platform.platform(),
        "weights_file": out.name,
        "weights_bytes": out.stat().st_size,
        "sha256": sha,
    })
    out.with_suffix(".json").write_text(json.dumps(meta, indent=2) + "\n")
    print(f"wrote {out} ({out.stat().st_size} bytes, sha256 {sha[:16]}...) and {out.with_suffix('.json').name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
