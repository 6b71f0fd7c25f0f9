#!/usr/bin/env python
"""Vector quantisation on MNIST under one fixed CPU budget: VQ (straight-through), VQ (EMA), VQ (rotation trick with
restarts) and FSQ at 256 and 1024 codes, and vector-quantize-pytorch's VQ and FSQ in the same autoencoder.

Each row (table ``vq_mnist``):

1. trains the tokenizer of configs/vqvae.yaml (28x28 grey MNIST in [-1, 1] -> a 7x7 grid of codes, 64 channels,
   code dimension 16 for VQ, len(levels) for FSQ) for ``--budget`` seconds of wall clock (default 300 s; the cosine
   schedule anneals over the budget);
2. evaluates it with ``genzoo eval RUN --metrics recon`` on the 10,000 test images: reconstruction MSE per pixel
   (data units, [-1, 1]), the fraction of the codebook used on them, the code perplexity, and the FID of the
   reconstructions against those images (genzoo's MNIST classifier features);
3. trains the prior of configs/vq_prior.yaml (the shared Transformer, 2-D RoPE over the code grid) on that
   tokenizer for ``--prior-budget`` seconds (default 300 s), and reports the FID of 10,000 two-stage samples
   (temperature 1, no top-k) against 10,000 test images, beside the floor FID(test, train).

Peer rows (``peer-*``, when vector-quantize-pytorch is installed): its ``VectorQuantize`` (EMA codebook with decay
0.99, commitment weight 0.25, rotation trick off, i.e. the configuration of the ``vq-ema`` rows) and its ``FSQ``
(the same levels) inside genzoo's autoencoder, trained by the same trainer for the same budget, in this process.

Goal (issue 9): codebook usage of FSQ and of the rotation trick with restarts >= 95% at 1024 codes, each at a lower
reconstruction MSE than straight-through VQ at equal budget.

Every finished row is written to benchmarks/results/vq_mnist/ at once and skipped when the script runs again
(``--force`` redoes it); a killed row resumes its runs. GENZOO_BENCH_DIR=/tmp/x redirects everything (smoke tests).

    python benchmarks/vq_mnist.py                      # every row not yet done
    python benchmarks/vq_mnist.py --only fsq-1024 --budget 300 --prior-budget 300
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _results as R  # noqa: E402

TABLE = "vq_mnist"
#: row -> (label, model args); "peer" rows use vector-quantize-pytorch's layer inside genzoo's autoencoder
ROWS: dict[str, tuple[str, dict]] = {}
for K in (1024, 256):  # 1024 first: the goal is stated at 1024 codes
    ROWS[f"vq-ste-{K}"] = ("VQ, straight-through, codebook loss", dict(quantizer="vq", update="grad", gradient="ste"))
    ROWS[f"fsq-{K}"] = ("FSQ (paper's levels)", dict(quantizer="fsq"))
    ROWS[f"vq-rotation-{K}"] = ("VQ, rotation trick, EMA codebook, restarts",
                                dict(quantizer="vq", update="ema", gradient="rotation", restart_threshold=1.0))
    ROWS[f"vq-ema-{K}"] = ("VQ, straight-through, EMA codebook", dict(quantizer="vq", update="ema", gradient="ste"))
    ROWS[f"peer-vq-ema-{K}"] = ("vector-quantize-pytorch VectorQuantize (EMA, decay 0.99)", dict(peer="vq"))
    ROWS[f"peer-fsq-{K}"] = ("vector-quantize-pytorch FSQ (same levels)", dict(peer="fsq"))
    for r in list(ROWS)[-6:]:
        ROWS[r][1]["codebook_size"] = K

R.TABLES[TABLE] = (
    "Vector quantisation on MNIST: tokenizers and two-stage samples (issue 9)",
    "Tokenizer: configs/vqvae.yaml (28x28 grey MNIST in [-1, 1] -> 7x7 codes; 64 channels; code dim 16 for VQ, "
    "len(levels) for FSQ: 256 -> (8, 6, 5) = 240 codes, 1024 -> (8, 5, 5, 5) = 1000 codes), trained for the tokenizer "
    "budget. On the 10,000 test images: MSE per pixel in data units, codebook usage (fraction of codes used), code "
    "perplexity, FID of the reconstructions against the images. Two-stage: configs/vq_prior.yaml (the shared "
    "Transformer, 4 blocks of width 128, 2-D RoPE over the code grid) trained on the tokenizer for the prior budget; "
    "FID of 10,000 samples (temperature 1) against 10,000 test images, beside the floor FID(test, train). FIDs on "
    "genzoo's MNIST classifier features (not comparable with Inception FIDs). Peer rows put vector-quantize-pytorch's "
    "layer inside the same autoencoder and trainer. Goal: usage >= 95% at 1024 codes for FSQ and the rotation trick "
    "with restarts, each with a lower MSE than straight-through VQ. Outcome (session 5): met at 1024 codes (usage 99.3 % "
    "and 100 %, MSE 0.0091 and 0.0149 against 0.0204); at 256 codes FSQ beats straight-through (0.0113 vs 0.0168) but "
    "the rotation trick does not (0.0193): it ran 2517 steps in its 300 s against straight-through's 3156. Budgets are "
    "wall clock and this VM's speed drifts: the same vq-ste-1024 row ran at 1045 img/s in session 4 and 922 in "
    "session 5 (MSE 0.0169 then, 0.0204 now), so MSE gaps under ~20 % are within run-to-run noise. Higher usage did "
    "not give better two-stage FID at this prior budget: the flatter the code distribution (perplexity), the harder "
    "for a 300 s prior.",
    [("row", "name"), ("quantizer", "label"), ("codes", "codebook_size"), ("budget", "budget"), ("steps", "steps"),
     ("MSE", "mse"), ("usage", "usage"), ("perplexity", "perplexity"), ("rec. FID", "recon_fid"),
     ("prior steps", "prior_steps"), ("2-stage FID", "fid"), ("FID floor", "fid_floor")],
)


def _peer_model_registered() -> None:
    """Register ``vqvae_peer``: genzoo's VQ-VAE with vector-quantize-pytorch's VQ or FSQ as the quantizer."""
    import torch
    from torch import nn

    from genzoo.models.vq import VQVAE
    from genzoo.nn.quantize import FSQ_LEVELS
    from genzoo.registry import _REGISTRY, register

    if "vqvae_peer" in _REGISTRY:
        return
    import vector_quantize_pytorch as vqp

    class PeerQuantizer(nn.Module):
        """(B, h, w, d) -> (z_q, codes (B, h, w), aux loss), the interface VQVAE uses for FSQ."""

        def __init__(self, kind: str, dim: int, K: int):
            super().__init__()
            self.kind = kind
            if kind == "vq":
                self.q = vqp.VectorQuantize(dim=dim, codebook_size=K, decay=0.99, commitment_weight=0.25,
                                            rotation_trick=False)
                self.codebook_size = K
            else:
                self.q = vqp.FSQ(levels=list(FSQ_LEVELS[K]))
                self.codebook_size = self.q.codebook_size

        def forward(self, z):
            B, h, w, d = z.shape
            if self.kind == "vq":
                out, idx, loss = self.q(z.reshape(B, h * w, d))
            else:
                out, idx = self.q(z.reshape(B, h * w, d))
                loss = z.new_zeros(())
            return out.reshape(B, h, w, d), idx.reshape(B, h, w).long(), loss.reshape(())

        @torch.no_grad()
        def codes(self, z):
            was = self.training
            self.eval()
            _, idx, _ = self(z)
            self.train(was)
            return idx

        def lookup(self, idx):
            if self.kind == "vq":
                return self.q.get_output_from_indices(idx.reshape(idx.shape[0], -1)).reshape(*idx.shape, -1)
            # flattened: given (B, h, w) indices the peer's FSQ guesses an image and returns channel-first codes
            return self.q.indices_to_codes(idx.reshape(idx.shape[0], -1)).reshape(*idx.shape, -1)

    @register("vqvae_peer", family="vq", paper="benchmark peer: vector-quantize-pytorch inside genzoo's VQ-VAE")
    class PeerVQVAE(VQVAE):
        def __init__(self, shape=(1, 28, 28), channels: int = 64, res_blocks: int = 2, codebook_size: int = 256,
                     code_dim: int = 16, peer: str = "vq", value_range=(-1.0, 1.0)):
            super().__init__(shape, channels, res_blocks, "vq", codebook_size, code_dim, value_range=value_range)
            self.quantizer = PeerQuantizer(peer, code_dim if peer == "vq" else len(FSQ_LEVELS[codebook_size]),
                                           codebook_size)
            if peer == "fsq":
                from genzoo.models.vq import VQDecoder, VQEncoder

                self.code_dim = len(FSQ_LEVELS[codebook_size])
                self.encoder = VQEncoder(shape[0], channels, res_blocks, self.code_dim)
                self.decoder = VQDecoder(shape[0], channels, res_blocks, self.code_dim)
            self.quantizer_name = "peer"  # VQVAE's no-group path (as for FSQ)
            self.codebook_size = int(self.quantizer.codebook_size)


def _train(recipe: str, overrides: list[str], run_dir: Path, model: dict | None = None) -> dict:
    """Train in this process (resume a killed run; skip a finished one). ``model``: {"model": name,
    "model_args": {...}} replacing the recipe's model. Returns the train summary."""
    from genzoo.config import apply_overrides, load_recipe, parse_overrides, read_run_config_for_resume
    from genzoo.train.run import train

    if (run_dir / "train_summary.json").is_file():
        return json.loads((run_dir / "train_summary.json").read_text())
    print(f"$ genzoo train {recipe} {' '.join(overrides)} --run-dir {run_dir}", flush=True)
    if (run_dir / "checkpoints").is_dir():
        train(read_run_config_for_resume(run_dir, []), run_dir, resume=True)
    else:
        if run_dir.exists():
            shutil.rmtree(run_dir)
        cfg = load_recipe(recipe)
        cfg.update(model or {})
        cfg = apply_overrides(cfg, parse_overrides(overrides + ["train.progress=false"]))
        train(cfg, run_dir)
    return json.loads((run_dir / "train_summary.json").read_text())


def run_row(name: str, budget: float, prior_budget: float, n: int, order: int, note: str) -> None:
    from genzoo.eval.runner import evaluate_run

    label, args = ROWS[name]
    args = dict(args)
    base = R.OUT_DIR / TABLE / name
    peer = None
    if "peer" in args:  # vector-quantize-pytorch's layer in genzoo's autoencoder (the recipe's widths)
        _peer_model_registered()
        peer = {"model": "vqvae_peer", "model_args": {"channels": 64, "res_blocks": 2, "code_dim": 16, **args}}
        model_over = [f"(model vqvae_peer, {args})"]
    else:
        model_over = [f"model.{k}={v}" for k, v in args.items()]
    steps = max(100, int(budget * 50))  # never reached: the budget ends the run, the schedule anneals over it
    train_over = [f"train.time_budget={budget:g}", f"train.steps={steps}", "train.ckpt_every=500"]
    tok_over = ([] if peer else model_over) + train_over
    s_tok = _train("vqvae", tok_over, base / "tokenizer", peer)
    tok_over = model_over + train_over
    t0 = time.perf_counter()
    rec = evaluate_run(base / "tokenizer", ["recon"], n_samples=n, progress=False,
                       out=base / "tokenizer" / "metrics.json")["recon"]
    pr_over = [f"model.tokenizer={base / 'tokenizer'}", f"train.time_budget={prior_budget:g}",
               f"train.steps={max(100, int(prior_budget * 50))}", "train.ckpt_every=500"]
    s_pr = _train("vq_prior", pr_over, base / "prior")
    ev = evaluate_run(base / "prior", ["fid"], n_samples=n, progress=False, out=base / "prior" / "metrics.json")
    sm = ev["sample_metrics"]
    R.write_row(TABLE, name, {
        "order": order, "name": name, "label": label, "model_args": args,
        "codebook_size": rec.get("codebook_size"), "budget": f"{budget:g} s + prior {prior_budget:g} s wall clock",
        "steps": s_tok["steps"], "images_per_s": s_tok.get("images_per_s"), "mse": rec["mse"], "usage": rec.get("usage"),
        "perplexity": rec.get("perplexity"), "recon_fid": rec.get("fid"), "n_test": rec["n"],
        "prior_steps": s_pr["steps"], "fid": sm["fid"], "fid_floor": sm["fid_floor"], "n_samples": n,
        "eval_s": time.perf_counter() - t0, "note": note,
        "command": f"python benchmarks/vq_mnist.py --only {name} --budget {budget:g} --prior-budget {prior_budget:g}"
                   f"   # = genzoo train vqvae {' '.join(tok_over)} --run-dir TOK && genzoo eval TOK --metrics recon && "
                   f"genzoo train vq-prior tokenizer=TOK ... && genzoo eval PRIOR --metrics fid",
    })
    print(f"[{name}] MSE {rec['mse']:.4f}, usage {rec.get('usage', 0):.3f}, perplexity {rec.get('perplexity', 0):.1f}, "
          f"rec. FID {rec.get('fid', float('nan')):.2f}, 2-stage FID {sm['fid']:.2f} (floor {sm['fid_floor']:.2f})",
          flush=True)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", action="append", choices=list(ROWS), help="this row only (repeatable)")
    ap.add_argument("--budget", type=float, default=300.0, help="tokenizer training seconds per row (default 300)")
    ap.add_argument("--prior-budget", type=float, default=300.0, help="prior training seconds per row (default 300)")
    ap.add_argument("--n", type=int, default=10000, help="test images / samples for the metrics (default 10000)")
    ap.add_argument("--force", action="store_true", help="redo rows that are already done")
    ap.add_argument("--note", default="", help="recorded with each row, e.g. 'machine shared with other jobs'")
    args = ap.parse_args(argv)
    try:
        import vector_quantize_pytorch  # noqa: F401
        have_peer = True
    except ImportError:
        have_peer = False
    for i, name in enumerate(ROWS):
        if args.only and name not in args.only:
            continue
        if name.startswith("peer") and not have_peer:
            print(f"[{name}] skipped: pip install vector-quantize-pytorch for the peer rows")
            continue
        if R.done(TABLE, name) and not args.force:
            print(f"[{name}] done already ({R.row_path(TABLE, name)}); --force to redo")
            continue
        if args.force and (R.OUT_DIR / TABLE / name).exists():
            shutil.rmtree(R.OUT_DIR / TABLE / name)
        run_row(name, args.budget, args.prior_budget, args.n, i, args.note)
        R.rebuild_results_md()
    print(f"wrote {R.rebuild_results_md()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
