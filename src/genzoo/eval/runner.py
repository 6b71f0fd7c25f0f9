"""``genzoo eval``: the metrics of a trained run folder, in one protocol for every family.

* ``nll``: log_prob over the evaluation split, nats per example and bits/dim (the
  binarisation / dequantisation is named in the output).
* ``fid``, ``kid``, ``pr``: ``n_samples`` samples against the same number of real
  images of the evaluation split, in the data set's own representation (binary data
  against binarised images), on the features of genzoo's shipped MNIST classifier for
  28x28 grey images (raw pixels / coordinates otherwise). The FID floor, FID(eval split,
  train split) with the same sizes and features, is reported beside the model's FID.
* ``probe``: linear-probe accuracy of the model's encoder features (``model.encode``) on
  the evaluation split, fitted on a fixed random 10,000 training images
  (:mod:`genzoo.eval.probe`); also writes RUN_DIR/reconstructions.png and
  RUN_DIR/interpolations.png (G(E(x)) and decoded latent interpolations) when the model
  can ``decode``.
* ``recon``: autoencoders (anything with ``reconstruct`` or ``encode`` + ``decode``): the mean
  squared reconstruction error per pixel in data units over ``n_samples`` evaluation images, the
  FID of the reconstructions against those images (same features and floor as ``fid``), and for
  tokenizers (``tokenize``) the fraction of the codebook used on them and the code perplexity;
  writes RUN_DIR/reconstructions.png.
* ``modes``: mode coverage of ``n_samples`` samples on the 8-Gaussians toy (:mod:`genzoo.eval.modes`).
"""
from __future__ import annotations

import datetime as _dt
import json
import platform
from pathlib import Path

import torch

from ..errors import ConfigError, did_you_mean
from ..train.checkpoint import atomic_write_text
from ..train.run import load_data, load_run

VALID_METRICS = ("nll", "fid", "kid", "pr", "probe", "modes", "recon")


def machine_description() -> str:
    import os

    return f"{platform.machine()} {os.cpu_count()} cores, torch {torch.__version__}, {'cuda' if torch.cuda.is_available() else 'cpu'}"


@torch.no_grad()
def draw_samples(model, n: int, *, batch_size: int = 500, seed: int = 0, progress: bool = True, **opts) -> torch.Tensor:
    """n samples in chunks, each chunk from its own seeded generator (reproducible)."""
    from tqdm.auto import tqdm

    out = []
    bar = tqdm(total=n, desc="sampling", disable=not progress, dynamic_ncols=True)
    i = 0
    while sum(x.shape[0] for x in out) < n:
        m = min(batch_size, n - sum(x.shape[0] for x in out))
        g = torch.Generator().manual_seed(seed * 1_000_003 + i)
        out.append(model.sample(m, generator=g, **opts).float().cpu())
        bar.update(m)
        i += 1
    bar.close()
    return torch.cat(out)


def evaluate_run(run_dir, metrics=None, *, split: str | None = None, n_samples: int | None = None,
                 nll_limit: int | None = None, log_prob_opts: dict | None = None, sample_opts: dict | None = None,
                 ema: bool = True, seed: int = 0, progress: bool = True, out: str | Path | None = None) -> dict:
    """Compute ``metrics`` for a run folder; writes RUN_DIR/metrics.json (or ``out``) and returns the dict."""
    from . import evaluate_nll, fid_floor, sample_metrics

    model, cfg, spec = load_run(run_dir, ema=ema)
    ev = cfg.get("eval", {})
    metrics = list(metrics or ev.get("metrics") or ["nll"])
    for m in metrics:
        if m not in VALID_METRICS:
            raise ConfigError(f"unknown metric {m!r}{did_you_mean(m, VALID_METRICS)}; valid metrics: {', '.join(VALID_METRICS)}")
    split = split or ev.get("split", "test")
    n_samples = int(n_samples or ev.get("n_samples", 10000))
    nll_limit = nll_limit if nll_limit is not None else ev.get("nll_limit", 0)
    lp_opts = dict(ev.get("log_prob") or {})
    lp_opts.update(log_prob_opts or {})
    s_opts = dict(cfg.get("sample") or {})
    s_opts.update(ev.get("sample") or {})
    s_opts.update(sample_opts or {})
    data = load_data(cfg["data"], split)
    res: dict = {
        "run": str(run_dir),
        "model": cfg["model"],
        "weights": model.loaded_from,
        "data": data.spec.describe(),
        "split": split,
        "date": _dt.date.today().isoformat(),
        "machine": machine_description(),
    }
    if "nll" in metrics:
        r = evaluate_nll(model, data, limit=nll_limit or None, seed=seed, progress=progress, **lp_opts)
        r["log_prob_options"] = lp_opts
        res["nll"] = r
    sm = [m for m in metrics if m in ("fid", "kid", "pr")]
    if sm:
        fake = draw_samples(model, n_samples, seed=seed, progress=progress, **s_opts)
        real = data.tensor(seed=seed, limit=n_samples)
        res["sample_metrics"] = sample_metrics(fake, real, metrics=sm, spec=data.spec)
        res["sample_metrics"].update({"n_samples": n_samples, "n_real": int(real.shape[0]), "sample_options": s_opts})
        if "fid" in sm:
            train = load_data(cfg["data"], "train").tensor(seed=seed + 1, limit=real.shape[0])
            res["sample_metrics"]["fid_floor"] = fid_floor(real, train, spec=data.spec)
            res["sample_metrics"]["fid_floor_protocol"] = f"FID({split} split, train split), {real.shape[0]} images each, same features"
    if "probe" in metrics:
        from .probe import linear_probe

        res["probe"] = linear_probe(model, load_data(cfg["data"], "train"), data, seed=seed)
        res["probe"]["pictures"] = _encoder_pictures(model, data, Path(out).parent if out else Path(run_dir), seed)
    if "recon" in metrics:
        res["recon"] = reconstruction_metrics(model, data, n=n_samples, seed=seed, progress=progress)
        if data.spec.kind == "image":
            from ..viz import _image_range, save_image_grid

            x = data.tensor(seed=seed, limit=16)
            pairs = torch.stack([x.float(), _reconstruct(model, x).float().cpu()], 1).reshape(-1, *x.shape[1:])
            path = (Path(out).parent if out else Path(run_dir)) / "reconstructions.png"
            res["recon"]["picture"] = str(save_image_grid(pairs, path, value_range=_image_range(data.spec), nrow=8))
    if "modes" in metrics:
        from .modes import coverage_for

        fake = draw_samples(model, n_samples, seed=seed, progress=progress, **s_opts)
        res["modes"] = coverage_for(data.spec, fake)
    path = Path(out) if out else Path(run_dir) / "metrics.json"
    atomic_write_text(path, json.dumps(res, indent=2, default=float))
    res["written_to"] = str(path)
    return res


@torch.no_grad()
def _encoder_pictures(model, data, folder: Path, seed: int = 0) -> list[str]:
    """reconstructions.png and interpolations.png of 8 evaluation images, for models that decode."""
    if not callable(getattr(model, "decode", None)) or data.spec.kind != "image":
        return []
    from ..viz import save_interpolations, save_reconstructions

    x = next(data.iter_batches(16, seed=seed, limit=16))[0]
    return [str(save_reconstructions(model, x, folder / "reconstructions.png", data.spec)),
            str(save_interpolations(model, x[:8], x[8:16], folder / "interpolations.png", data.spec))]


def _reconstruct(model, x: torch.Tensor) -> torch.Tensor:
    if callable(getattr(model, "reconstruct", None)):
        return model.reconstruct(x.to(model.device))
    if callable(getattr(model, "encode", None)) and callable(getattr(model, "decode", None)):
        return model.decode(model.encode(x.to(model.device)))
    raise ConfigError(f"{type(model).__name__} cannot reconstruct (no encoder); the recon metric is for autoencoders "
                      "such as vae, vqvae, vqgan, bigan, ogan")


@torch.no_grad()
def reconstruction_metrics(model, data, *, n: int = 10000, seed: int = 0, batch_size: int = 500,
                           progress: bool = False) -> dict:
    """Reconstruction MSE (per pixel, data units), FID of the reconstructions against the same
    ``n`` evaluation images (and the FID floor), and codebook usage / perplexity for tokenizers."""
    from tqdm.auto import tqdm

    from . import sample_metrics

    real = data.tensor(seed=seed, limit=n)
    recs, codes = [], []
    for i in tqdm(range(0, real.shape[0], batch_size), desc="reconstructing", disable=not progress, leave=False):
        xb = real[i:i + batch_size]
        recs.append(_reconstruct(model, xb).float().cpu())
        if callable(getattr(model, "tokenize", None)):
            codes.append(model.tokenize(xb.to(model.device)).cpu())
    rec = torch.cat(recs)
    out: dict = {"n": int(real.shape[0]), "mse": float(((rec - real.float()) ** 2).mean())}
    if data.spec.kind == "image":
        out["fid"] = sample_metrics(rec, real, metrics=["fid"], spec=data.spec)["fid"]
        out["fid_protocol"] = f"FID(reconstructions of {real.shape[0]} evaluation images, those images)"
    if codes:
        from ..nn.quantize import codebook_stats

        usage, ppl = codebook_stats(torch.cat(codes), model.codebook_size)
        out.update({"codebook_size": int(model.codebook_size), "usage": usage, "perplexity": ppl})
    return out
