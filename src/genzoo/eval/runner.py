"""``genzoo eval``: the metrics of a trained run folder, in one protocol for every family.

* ``nll``: log_prob over the evaluation split, nats per example and bits/dim (the
  binarisation / dequantisation is named in the output).
* ``fid``, ``kid``, ``pr``, ``prdc``: ``n_samples`` samples against the same number of real
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

Every evaluation is kept. RUN_DIR/metrics.json (or ``out``) holds::

    {"format": "genzoo-evaluations/1", "latest": KEY, "evaluations": {KEY: record, ...}, **record of KEY}

where KEY names what decides the numbers (:func:`evaluation_key`: the metrics, split, weights,
seed, and where they matter ``n_samples``, the nll ``limit``, the log_prob and sample options
and the feature extractor). A new evaluation adds its entry; re-running the identical
evaluation replaces its own entry only. The top-level copy of the latest record keeps readers
of the older one-record file (``json.load(f)["nll"]``) working; an older one-record file found
at the path is kept under ``evaluations`` as ``"earlier: DATE"``. Results are computed first and
written afterwards (:meth:`Evaluation.write`, atomic), so ``genzoo eval`` prints them before a
write can fail.
"""
from __future__ import annotations

import contextlib

import datetime as _dt
import time as _time
import json
import platform
from pathlib import Path

import torch

from ..errors import ConfigError, did_you_mean
from ..metric_registry import check_metrics, metric_names
from ..core.checkpoint import atomic_write_text
from ..devices import resolve_device  # noqa: F401  (re-exported: genzoo.eval.runner.resolve_device)
from ..train.run import load_data, load_run

VALID_METRICS = metric_names()  # genzoo.metric_registry: the one list


def machine_description() -> str:
    import os

    return f"{platform.machine()} {os.cpu_count()} cores, torch {torch.__version__}, {'cuda' if torch.cuda.is_available() else 'cpu'}"




def default_chunk(model) -> int:
    """Images per ``model.sample`` call when drawing many: the model's measured ``sample_chunk``
    (benchmarks/sampling_speed.py: the chunk beyond which the cost per image stops falling or
    rises again, on a 2-core CPU), else 500. ``--batch-size`` on genzoo sample / eval overrides it."""
    return int(getattr(model, "sample_chunk", 500) or 500)


def sample_precision(model, opts: dict, device) -> str:
    """The precision a model's sample() runs its network in: the resolved ``precision`` option for models
    that take one (the diffusion family: "auto" by default), else "fp32"."""
    if "precision" not in getattr(model, "sample_options", ()):
        return "fp32"
    from ..core.precision import resolve_precision

    return resolve_precision(str(opts.get("precision", "auto")), torch.device(device).type)  # draw_samples' default


def default_nll_batch(model, eval_batch: int = 256) -> int:
    """Examples per ``model.log_prob`` call: the model's measured ``log_prob_chunk`` if it has one, else
    ``eval.batch_size`` (256)."""
    return int(getattr(model, "log_prob_chunk", 0) or eval_batch)


@torch.no_grad()
def draw_samples(model, n: int, *, batch_size: int | None = None, seed: int = 0, progress: bool = True,
                 **opts) -> torch.Tensor:
    """n samples in chunks of ``batch_size`` (default :func:`default_chunk`), each chunk from its own
    seeded generator (reproducible for a given chunk size). A model that takes a ``precision``
    option (the diffusion family) samples under ``precision="auto"`` unless ``opts`` say otherwise,
    so genzoo sample / eval follow train.precision's rule; ``model.sample`` itself defaults to fp32."""
    from tqdm.auto import tqdm

    from ..memory import keep_freed_memory

    keep_freed_memory()  # no page faults per network call (genzoo/memory.py)
    batch_size = int(batch_size or default_chunk(model))
    if "precision" in getattr(model, "sample_options", ()) and "precision" not in opts:
        opts["precision"] = "auto"  # genzoo sample / eval: the network in bf16 where it is fast (train.precision's rule)
    if batch_size < 1:
        raise ConfigError(f"--batch-size must be positive, got {batch_size}")
    out = []
    bar = tqdm(total=n, desc="sampling", disable=not progress, dynamic_ncols=True)
    i, done = 0, 0
    while done < n:
        m = min(batch_size, n - done)
        g = torch.Generator().manual_seed(seed * 1_000_003 + i)
        out.append(model.sample(m, generator=g, **opts).float().cpu())
        done += m
        bar.update(m)
        i += 1
    bar.close()
    return torch.cat(out)


STORE_FORMAT = "genzoo-evaluations/1"
#: fewest model samples and fewest reference images that fid, kid, pr (and recon's FID) accept without
#: ``allow_small``: FID is biased upwards by O(dim / N) and its floor rises with it (MNIST features: the
#: FID(test, train) floor is about 0.3 at 10,000 images and several times that at 1,000), so a number
#: from 5 or 100 images says more about N than about the model.
MIN_SET_SIZE = 1000
SAMPLE_METRICS = metric_names(samples=True)  # the metrics that draw samples from the model
FEATURE_METRICS = metric_names(features=True)  # ... and compare them with real data in feature space


def _canon(v) -> str:
    return json.dumps(v, sort_keys=True, separators=(",", ":"), default=str)


def evaluation_key(fields: dict) -> str:
    """A readable, canonical key of an evaluation from the fields that decide its numbers.

    ``fields``: metrics (list), split, weights (e.g. "ema@2000"), seed, and optionally n_samples,
    limit, log_prob (dict), sample (dict), extractor. Example:
    ``metrics=fid,nll split=test weights=ema@2000 seed=0 limit=all log_prob={"k":100} n_samples=10000 sample={} extractor=mnist``.
    """
    parts = []
    for k, v in fields.items():
        if isinstance(v, (list, tuple)):
            v = ",".join(str(x) for x in v)
        elif isinstance(v, dict):
            v = _canon(v)
        parts.append(f"{k}={v}")
    return " ".join(parts)


def read_evaluations(path) -> dict:
    """The evaluations stored at ``path`` (a metrics.json): {KEY: record}. An older one-record file
    gives {"earlier: DATE": record}; a missing file gives {}. A file that is not a genzoo metrics
    file raises ConfigError."""
    path = Path(path)
    if not path.exists():
        return {}
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path} exists but is not a genzoo metrics file ({type(e).__name__}: {e}); move it away "
                          "or pass --out ANOTHER.json") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path} exists but is not a genzoo metrics file (a JSON {type(data).__name__}); move it away "
                          "or pass --out ANOTHER.json")
    if isinstance(data.get("evaluations"), dict):
        return dict(data["evaluations"])
    if any(k in data for k in ("nll", "sample_metrics", "probe", "recon", "modes")):
        return {data.get("key") or f"earlier: {data.get('date', 'undated')}": data}
    if not data:
        return {}
    raise ConfigError(f"{path} exists but is not a genzoo metrics file (keys: {', '.join(list(data)[:6])}); move it away "
                      "or pass --out ANOTHER.json")


class Evaluation:
    """A computed evaluation that has not been written yet.

    ``record``: the results (JSON-able dict, with its ``key``); ``path``: the metrics file it goes
    to; :meth:`write` merges it into that file (atomically, keeping every other evaluation) and
    writes the pictures of probe/recon, and returns the path.
    """

    def __init__(self, record: dict, path: Path, pending: list | None = None):
        self.record = record
        self.path = Path(path)
        self.pending = list(pending or [])  # callables that write the pictures

    def write(self) -> Path:
        evals = read_evaluations(self.path)
        key = self.record["key"]
        evals[key] = self.record
        store = {"format": STORE_FORMAT, "latest": key, "evaluations": evals}
        store.update({k: v for k, v in self.record.items() if k not in store})
        atomic_write_text(self.path, json.dumps(store, indent=2, default=float))
        for fn in self.pending:
            fn()
        self.pending = []
        return self.path


@contextlib.contextmanager
def writer_lock(run_dir, out=None):
    """Hold the run folder's one-writer lock (see genzoo.core.runfolder) while an evaluation
    that writes into it runs, so it cannot interleave with a training or another eval there.
    An evaluation written elsewhere (``out`` outside the folder) takes no lock; a read-only
    folder (where no lock file can be made) is evaluated without one: nothing can be written there."""
    from ..core.runfolder import run_lock

    run_dir = Path(run_dir)
    target = Path(out) if out else run_dir / "metrics.json"
    inside = run_dir.is_dir() and target.resolve().parent.is_relative_to(run_dir.resolve())
    with contextlib.ExitStack() as stack:
        if inside:
            try:
                stack.enter_context(run_lock(run_dir, "genzoo eval"))
            except OSError:  # read-only folder: compute and print; the write will report the problem
                pass
            except ConfigError as e:
                raise ConfigError(f"{e} (or pass --out FILE to evaluate it without writing into the folder)") from None
        yield


def evaluate_run(run_dir, metrics=None, *, out: str | Path | None = None, **kw) -> dict:
    """Compute ``metrics`` for a run folder (:func:`run_evaluation`), add the evaluation to
    RUN_DIR/metrics.json (or ``out``) and return its record plus ``written_to``."""
    with writer_lock(run_dir, out):
        ev = run_evaluation(run_dir, metrics, out=out, **kw)
        path = ev.write()
    return {**ev.record, "written_to": str(path)}


def split_options(model, options: dict, metrics) -> tuple[dict, dict]:
    """Route ``key=value`` options to ``log_prob`` or ``sample`` by what the model accepts.

    A bare key goes to every one of the two that accepts it (``model.log_prob_options``,
    ``model.sample_options``); ``log_prob.KEY`` / ``sample.KEY`` name the one. A key that neither
    accepts, or one whose metrics were not asked for (a sampling option with ``--metrics nll``),
    raises a one-line ConfigError. Returns (log_prob options, sample options).
    """
    lp_ok, s_ok = tuple(model.log_prob_options), tuple(model.sample_options)
    name = type(model).__name__
    lp, so = {}, {}
    for key, v in (options or {}).items():
        where, k = (key.split(".", 1) if key.startswith(("log_prob.", "sample.")) else (None, key))
        in_lp, in_s = k in lp_ok, k in s_ok
        if where == "log_prob" and not in_lp or where == "sample" and not in_s or not (in_lp or in_s):
            hint = ""
            if k == "extractor":
                hint = "; the feature network is chosen with --extractor mnist|cifar10|inception|raw|FILE"
            elif k in ("n_samples", "limit", "split", "seed", "metrics", "device"):
                hint = f"; use --{k.replace('_', '-')}"
            raise ConfigError(
                f"{key!r} is not an option of {name}: log_prob options {', '.join(lp_ok) or '(none)'}; sample options "
                f"{', '.join(s_ok) or '(none)'}{did_you_mean(k, lp_ok + s_ok)}{hint}")
        if in_lp and where != "sample":
            lp[k] = v
        if in_s and where != "log_prob":
            so[k] = v
    sampling = [m for m in metrics if m in SAMPLE_METRICS]
    lone_s = [k for k in so if k not in lp]
    lone_lp = [k for k in lp if k not in so]
    if lone_s and not sampling:
        raise ConfigError(f"sampling option {lone_s[0]} has no effect on --metrics {','.join(metrics)}; it applies to the "
                          f"samples of {', '.join(SAMPLE_METRICS)}")
    if lone_lp and "nll" not in metrics:
        raise ConfigError(f"log_prob option {lone_lp[0]} has no effect on --metrics {','.join(metrics)}; it applies to nll")
    return lp, so


def eval_sample_options(cfg: dict, extra: dict | None = None) -> dict:
    """The options of a run's evaluation samples: its recipe's ``sample`` section, then ``eval.sample``, then ``extra``."""
    opts = dict(cfg.get("sample") or {})
    opts.update((cfg.get("eval") or {}).get("sample") or {})
    opts.update(extra or {})
    return opts


def score_samples(fake, data, train_data, metrics, extractor, *, seed: int = 0, split: str = "test") -> dict:
    """The sample metrics of ``fake`` against as many examples of ``data`` (fixed by ``seed``), and with "fid" the
    floor FID(data, train) at the same size and features. ``train_data``: the training split, or a callable
    returning it (loaded only for the floor)."""
    from . import fid_floor, sample_metrics

    real = data.tensor(seed=seed, limit=fake.shape[0])
    out = sample_metrics(fake, real, metrics=metrics, extractor=extractor, spec=data.spec)
    if "fid" in metrics:
        tr = train_data() if callable(train_data) else train_data
        out["fid_floor"] = fid_floor(real, tr.tensor(seed=seed + 1, limit=real.shape[0]), extractor=extractor, spec=data.spec)
        out["fid_floor_protocol"] = f"FID({split} split, train split), {real.shape[0]} images each, same features"
    return out


def run_evaluation(run_dir, metrics=None, *, split: str | None = None, n_samples: int | None = None,
                   nll_limit: int | None = None, log_prob_opts: dict | None = None, sample_opts: dict | None = None,
                   options: dict | None = None, extractor=None, allow_small: bool = False, ema: bool = True,
                   seed: int = 0, progress: bool = True, out: str | Path | None = None, device="cpu",
                   batch_size: int | None = None) -> Evaluation:
    """Compute ``metrics`` for a run folder and return the :class:`Evaluation`; nothing is written
    until its ``write()`` (pictures included).

    ``options``: ``key=value`` options as given on the command line, routed to log_prob and/or
    sample by :func:`split_options` (``log_prob_opts`` / ``sample_opts`` give them directly).
    Sample options reach the samples of every sample metric (fid, kid, pr, modes).
    ``extractor``: the feature network of fid/kid/pr/recon: "mnist", "inception", "raw", a
    feature-net .safetensors file, or None/"auto" (the data set's default,
    :func:`genzoo.eval.features.get_extractor`; data without a default need one).
    ``allow_small``: compute fid/kid/pr with fewer than :data:`MIN_SET_SIZE` samples or reference
    images (marked ``small_sets`` in the result); without it they are refused, and recon reports
    no FID.
    ``device``: where the model and the feature net run (:func:`resolve_device`: auto, cpu, cuda, mps).
    ``batch_size``: images per sample call and examples per log_prob call (default: the model's
    measured chunks, :func:`default_chunk` / :func:`default_nll_batch`); recorded in the result.
    """
    from . import evaluate_nll
    from .features import get_extractor

    from ..memory import keep_freed_memory, memory_setting

    keep_freed_memory()
    dev = resolve_device(device)
    model, cfg, spec = load_run(run_dir, ema=ema, device=dev)
    ev = cfg.get("eval", {})
    metrics = list(metrics or ev.get("metrics") or ["nll"])
    check_metrics(metrics)
    o_lp, o_s = split_options(model, options, metrics)
    log_prob_opts = {**(log_prob_opts or {}), **o_lp}
    sample_opts = {**(sample_opts or {}), **o_s}
    split = split or ev.get("split", "test")
    n_samples = int(n_samples or ev.get("n_samples", 10000))
    nll_limit = nll_limit if nll_limit is not None else ev.get("nll_limit", 0)
    lp_opts = dict(ev.get("log_prob") or {})
    lp_opts.update(log_prob_opts or {})
    s_opts = eval_sample_options(cfg, sample_opts)
    if any(m in metrics for m in SAMPLE_METRICS):
        model.check_options(s_opts, model.sample_options)
    data = load_data(cfg["data"], split)
    ext, ext_note = None, None
    sm = [m for m in metrics if m in FEATURE_METRICS]
    if sm:
        ext = get_extractor(extractor or "auto", data.spec, device=dev)
        n_real = min(n_samples, len(data))
        if min(n_samples, n_real) < MIN_SET_SIZE and not allow_small:
            raise ConfigError(
                f"{','.join(sm)} from {n_samples} samples against {n_real} reference examples of the {split} split: "
                f"genzoo asks for at least {MIN_SET_SIZE} of each (FID is biased upwards at small sizes and not comparable "
                f"across them); pass --n-samples {MIN_SET_SIZE} or more with a split that large, or --allow-small to "
                "compute it anyway (marked small_sets)")
    elif "recon" in metrics and data.spec.kind == "image":
        try:
            ext = get_extractor(extractor or "auto", data.spec, device=dev)
        except ConfigError as e:
            if extractor:
                raise
            ext_note = f"no FID of the reconstructions: {e}"
    res: dict = {
        "run": str(run_dir),
        "model": cfg["model"],
        "weights": model.loaded_from,
        "data": data.spec.describe(),
        "split": split,
        "date": _dt.date.today().isoformat(),
        "machine": machine_description(),
        "device": str(dev),
        "memory": memory_setting(),
    }
    if "nll" in metrics:
        nll_batch = int(batch_size or default_nll_batch(model, int(ev.get("batch_size", 256))))
        r = evaluate_nll(model, data, batch_size=nll_batch, limit=nll_limit or None, seed=seed, progress=progress, **lp_opts)
        r["log_prob_options"] = lp_opts
        r["batch_size"] = nll_batch
        res["nll"] = r
    if sm:
        chunk = int(batch_size or default_chunk(model))
        t0 = _time.perf_counter()
        fake = draw_samples(model, n_samples, batch_size=chunk, seed=seed, progress=progress, **s_opts)
        sample_s = _time.perf_counter() - t0
        res["sample_metrics"] = score_samples(fake, data, lambda: load_data(cfg["data"], "train"), sm, ext, seed=seed,
                                              split=split)
        n_real = res["sample_metrics"]["num_real"]
        res["sample_metrics"].update({"n_samples": n_samples, "n_real": n_real, "sample_options": s_opts,
                                      "min_set_size": MIN_SET_SIZE, "chunk": chunk,
                                      "sample_precision": sample_precision(model, s_opts, dev),
                                      "seconds_per_1000_samples": round(1000 * sample_s / max(n_samples, 1), 2)})
        if min(n_samples, n_real) < MIN_SET_SIZE:
            res["sample_metrics"]["small_sets"] = True
            res["sample_metrics"]["warning"] = (f"fewer than {MIN_SET_SIZE} samples or reference examples (--allow-small): "
                                                "biased, comparable only with numbers at the same sizes")
    folder = Path(out).parent if out else Path(run_dir)
    pending = []
    if "probe" in metrics:
        from .probe import linear_probe

        res["probe"] = linear_probe(model, load_data(cfg["data"], "train"), data, seed=seed)
        res["probe"]["pictures"] = _encoder_picture_paths(model, data, folder)
        if res["probe"]["pictures"]:
            pending.append(lambda: _encoder_pictures(model, data, folder, seed))
    if "recon" in metrics:
        res["recon"] = reconstruction_metrics(model, data, n=n_samples, seed=seed, progress=progress, extractor=ext,
                                              min_set_size=0 if allow_small else MIN_SET_SIZE)
        if ext_note:
            res["recon"]["fid_note"] = ext_note
        if data.spec.kind == "image":
            from ..viz import _image_range, save_image_grid

            x = data.tensor(seed=seed, limit=16)
            pairs = torch.stack([x.float(), _reconstruct(model, x).float().cpu()], 1).reshape(-1, *x.shape[1:])
            path = folder / "reconstructions.png"
            res["recon"]["picture"] = str(path)
            pending.append(lambda: save_image_grid(pairs, path, value_range=_image_range(data.spec), nrow=8))
    if "modes" in metrics:
        from .modes import coverage_for

        fake = draw_samples(model, n_samples, batch_size=batch_size, seed=seed, progress=progress, **s_opts)
        res["modes"] = coverage_for(data.spec, fake)
    lf = model.loaded_from
    fields: dict = {"metrics": sorted(metrics), "split": split,
                    "weights": f"{lf['weights']}@{lf['step']}" + ("-best" if "best_valid_loss" in lf else ""), "seed": seed}
    if "nll" in metrics:
        fields["limit"] = nll_limit or "all"
        fields["log_prob"] = lp_opts
    if any(m in metrics for m in SAMPLE_METRICS + ("recon",)):
        fields["n_samples"] = n_samples
    if any(m in metrics for m in SAMPLE_METRICS):
        fields["sample"] = s_opts
    if batch_size:  # a chunk size other than the default draws other samples
        fields["batch_size"] = int(batch_size)
    if ext is not None:
        fields["extractor"] = ext.name
    res["key"] = evaluation_key(fields)
    res["key_fields"] = fields
    return Evaluation(res, Path(out) if out else Path(run_dir) / "metrics.json", pending)


def _encoder_picture_paths(model, data, folder: Path) -> list[str]:
    """The pictures :func:`_encoder_pictures` will write (none for models that cannot decode)."""
    if not callable(getattr(model, "decode", None)) or data.spec.kind != "image":
        return []
    return [str(folder / "reconstructions.png"), str(folder / "interpolations.png")]


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
                           progress: bool = False, extractor="auto", min_set_size: int = 0) -> dict:
    """Reconstruction MSE (per pixel, data units), FID of the reconstructions against the same
    ``n`` evaluation images (and the FID floor), and codebook usage / perplexity for tokenizers.
    ``extractor=None`` or fewer than ``min_set_size`` images: no FID (``fid_note`` says why)."""
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
    if data.spec.kind == "image" and extractor is not None and real.shape[0] < min_set_size:
        out["fid_note"] = (f"no FID of the reconstructions: {real.shape[0]} images, fewer than {min_set_size} "
                           "(pass --n-samples >= that, or --allow-small)")
    elif data.spec.kind == "image" and extractor is not None:
        m = sample_metrics(rec, real, metrics=["fid"], extractor=extractor, spec=data.spec)
        out["fid"], out["extractor"] = m["fid"], m["extractor"]
        out["fid_protocol"] = f"FID(reconstructions of {real.shape[0]} evaluation images, those images)"
    if codes:
        from ..nn.quantize import codebook_stats

        usage, ppl = codebook_stats(torch.cat(codes), model.codebook_size)
        out.update({"codebook_size": int(model.codebook_size), "usage": usage, "perplexity": ppl})
    return out
