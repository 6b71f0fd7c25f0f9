"""The leaderboard's tracks: which data, which models, which protocol.

Every registered model is placed in every track: it joins with a leaderboard recipe (an
:class:`Entry`: a recipe in configs/ plus the overrides that put it on the track's data), or
it is left out with a reason, which the report prints (:func:`membership`). The reason is
found, not typed: a model whose ``check_data`` refuses the track's data says why in its own
words; a model that accepts the data but has no entry yet is a missing cell.

Tracks (the data each model trains and is judged on):

* ``binary``: static binarised MNIST (Larochelle & Murray 2011; ``data.binarize=static``).
  Test NLL in nats per image on all 10,000 test images (exact or a bound, labelled) plus
  sample quality.
* ``grey``: 8-bit MNIST. Bits/dim with the dequantisation offset on the 10,000 test images
  for every model with a likelihood, sample quality for every model that samples.
* ``text``: tiny shakespeare, bits/char on the validation text, with nanoGPT's CPU recipe
  (its README's shakespeare_char line) as a row.
* ``vector``: densities with an exact log-density (8 Gaussians, checkerboard, an 8-D
  mixture): test NLL minus the test points' exact -log p, which estimates KL(data || model).
  Its default budget is 5 minutes per cell, not 30: the toy recipes are sized for
  about a minute (their 2,000-4,000 steps, as their comments say), and the track has 51 cells (17 models x
  3 densities), which at 30 minutes would cost 25 CPU-hours of training alone.
  ``genzoo bench --track vector --budget 1800`` runs it at the image tracks' budget.

One protocol per track (:data:`PROTOCOL`): the same test set, 10,000 samples against the
10,000 test images on the shipped feature network with the floor FID(test, train) at the
same sizes, KID, precision and recall. Where a model's sampler or likelihood is too slow
for that on this machine (pixel-by-pixel PixelCNN sampling, the diffusion ODE likelihood
with its adaptive solver), the cell says what it measured instead (a smaller set, a fixed
subset of the test images) and why, from a timed probe: :mod:`genzoo.bench.harness`.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

#: the sample-quality and likelihood protocol of every track (see the module docstring)
PROTOCOL = {
    "n_samples": 10000,        # samples against as many test images (fid, kid, pr)
    "nll_examples": "all",     # the whole test split (text: the validation text)
    "eval_cap_s": 1800,        # the most seconds one metric may take; a slower one is measured on fewer images, said so
    "min_set": 1000,           # never fewer samples / test images than this
    "grid": 64,                # samples in the cell's picture
}


#: ``genzoo bench --smoke``: an off-protocol check of the harness in seconds (its cells are marked off-protocol)
SMOKE_PROTOCOL = {"n_samples": 200, "nll_examples": 100, "min_set": 100, "grid": 16, "eval_cap_s": 120}


@dataclass(frozen=True)
class Entry:
    """One leaderboard row: a recipe and the overrides that put it on its track's data.

    ``name``: the row's name (unique in its track); ``recipe``: configs/RECIPE.yaml;
    ``overrides``: ``key=value`` strings applied after the recipe (the harness adds the
    budget and the seed); ``log_prob`` / ``sample``: options of the likelihood and of the
    samples (the recipe's ``sample`` section otherwise); ``nll``: "exact", "bound" or None
    (no likelihood on this track); ``samples``: whether sample quality is measured;
    ``protocol``: the likelihood protocol in words; ``peer``: the name of a peer runner in
    :mod:`genzoo.bench.peers` instead of a genzoo recipe."""

    name: str
    recipe: str
    family: str
    overrides: tuple[str, ...] = ()
    log_prob: dict = field(default_factory=dict)
    sample: dict = field(default_factory=dict)
    nll: str | None = None
    samples: bool = True
    protocol: str = ""
    peer: str | None = None
    seeds: int = 1              # how many training seeds the default run trains (seed noise: 3)
    #: a two-stage row (VQ-VAE / VQGAN + prior): the tokenizer's recipe, trained first for ``tokenizer_share`` of
    #: the budget on the same data; ``recipe`` is then the prior's, trained on its codes for the rest
    tokenizer: str | None = None
    tokenizer_share: float = 0.5


@dataclass(frozen=True)
class Track:
    name: str
    title: str
    data: str                   # the data in words
    data_cfg: dict              # the data section a model's recipe must end up with (checked)
    budget_s: float             # default training budget per cell, seconds
    entries: tuple[Entry, ...]
    unit: str                   # the likelihood column's header (lower is better)


STATIC = ("data.name=mnist", "data.binarize=static")
KEEP_BEST = ("train.keep_best=true",)  # the static-MNIST VAEs overfit its fixed images within the budget

BINARY = Track(
    "binary", "Binary: static binarised MNIST",
    "static binarised MNIST (Larochelle & Murray 2011), 50k train / 10k valid / 10k test",
    {"name": "mnist", "binarize": "static"}, 1800.0,
    (
        Entry("fvsbn", "fvsbn", "autoregressive", STATIC, nll="exact", protocol="exact"),
        Entry("nade", "nade", "autoregressive", STATIC, nll="exact", protocol="exact, natural order", seeds=3),
        Entry("made", "made", "autoregressive", STATIC, nll="exact", protocol="exact, one mask"),
        Entry("pixelcnn", "pixelcnn", "autoregressive", STATIC, nll="exact", protocol="exact"),
        Entry("gated_pixelcnn", "gated_pixelcnn", "autoregressive", STATIC, nll="exact", protocol="exact"),
        Entry("image_transformer", "image_transformer", "autoregressive", STATIC, nll="exact", protocol="exact"),
        Entry("vae", "vae", "vae", STATIC + KEEP_BEST, log_prob={"k": 1000}, sample={"mean": False}, nll="bound",
              protocol="IWAE bound, k=1000", seeds=3),
        Entry("iwae", "iwae_dynamic_mnist", "vae", STATIC + KEEP_BEST, log_prob={"k": 1000}, sample={"mean": False},
              nll="bound", protocol="IWAE bound, k=1000; trained on the k=5 bound"),
        Entry("nvae", "nvae", "vae", STATIC + KEEP_BEST, log_prob={"k": 100},
              sample={"mean": False}, nll="bound", protocol="IWAE bound, k=100 (each sample a whole top-down pass)"),
        Entry("discrete_diffusion", "discrete_diffusion", "diffusion", STATIC, log_prob={"t_samples": 8}, nll="bound",
              protocol="D3PM bound, 8 stratified t per image (unbiased; the variance falls with the 10,000 images)"),
        Entry("discrete_diffusion_uniform", "multinomial_diffusion", "diffusion", STATIC, log_prob={"t_samples": 8},
              nll="bound", protocol="D3PM bound (uniform chain), 8 stratified t per image"),
    ),
    "NLL (nats)",
)

GREY_FLOW = ("data.name=mnist", "data.dequantize=uniform")
ODE_NLL = "probability-flow ODE (dopri5, 1e-5)"
GREY = Track(
    "grey", "Grey: 8-bit MNIST",
    "MNIST, 256 grey levels in [-1, 1] (uniform dequantisation where a model is continuous), 50k / 10k / 10k",
    {"name": "mnist", "binarize": "none"}, 1800.0,
    (
        # likelihood models
        Entry("nice", "nice", "flows", GREY_FLOW, nll="exact", protocol="exact (dequantised)"),
        Entry("realnvp", "realnvp", "flows", GREY_FLOW, nll="exact", protocol="exact (dequantised)", seeds=3),
        Entry("glow", "glow", "flows", GREY_FLOW, nll="exact", protocol="exact (dequantised)"),
        Entry("tarflow", "tarflow", "flows", GREY_FLOW, nll="bound", protocol="bound: noise-augmented density"),
        Entry("pixelcnn_logistic", "pixelcnn_mnist_grey", "autoregressive", ("data.name=mnist",), nll="exact",
              protocol="exact, discretised logistic mixture"),
        Entry("gated_pixelcnn_logistic", "gated_pixelcnn_mnist_logistic", "autoregressive", ("data.name=mnist",),
              nll="exact", protocol="exact, discretised logistic mixture"),
        Entry("vae_logistic", "vae_logistic_mnist", "vae", ("data.name=mnist",), log_prob={"k": 1000}, nll="bound",
              protocol="IWAE bound, k=1000, discretised logistic decoder"),
        Entry("vae_gaussian", "vae_gaussian_mnist", "vae", GREY_FLOW, log_prob={"k": 1000}, nll="bound",
              protocol="IWAE bound, k=1000, Gaussian decoder (dequantised)"),
        # the diffusion family: ODE likelihood + samples at the recipe's default sampler
        *(Entry(name, name, "diffusion", GREY_FLOW, nll="exact", protocol=ODE_NLL, seeds=3 if name == "ddpm" else 1)
          for name in ("ddpm", "ddim", "edm", "flow_matching", "vp_sde", "ve_sde")),
        Entry("shortcut", "shortcut", "diffusion", GREY_FLOW),
        # two stages in one budget: the tokenizer for the first half, the prior over its codes for the second
        Entry("vqvae", "vq_prior", "vq", ("data.name=mnist",), tokenizer="vqvae",
              protocol="FID of decoded prior samples; tokenizer reconstructions beside it"),
        Entry("vqgan", "vq_prior", "vq", ("data.name=mnist",), tokenizer="vqgan",
              protocol="FID of decoded prior samples; tokenizer reconstructions beside it"),
        Entry("pfgm", "pfgm", "diffusion", ("data.name=mnist",)),
        # GANs: samples only
        Entry("gan", "gan", "gan", ("data.name=mnist",), seeds=3),
        Entry("wgan", "wgan", "gan", ("data.name=mnist",)),
        Entry("wgan_gp", "wgan_gp", "gan", ("data.name=mnist",)),
        Entry("gan_qp", "gan_qp", "gan", ("data.name=mnist",)),
        Entry("bigan", "bigan", "gan", ("data.name=mnist",)),
        Entry("bigan_qp", "bigan_qp", "gan", ("data.name=mnist",)),
        Entry("ogan", "ogan", "gan", ("data.name=mnist",)),
        # peers, same budget and protocol
        Entry("diffusers_ddpm", "", "diffusion", (), peer="diffusers_ddpm", protocol=""),
    ),
    "bits/dim",
)

NANOGPT_CPU = ("model.transformer.dim=128", "model.transformer.depth=4", "model.transformer.heads=4",
               "model.transformer.pos=learned", "data.block_size=64",
               "train.batch_size=12", "train.lr=1.0e-3", "train.min_lr_ratio=0.1", "train.warmup_steps=100",
               "train.betas=[0.9,0.99]", "train.weight_decay=0.1", "train.grad_clip=1.0", "sample.length=63")
TEXT = Track(
    "text", "Text: tiny shakespeare",
    "tiny shakespeare, 65 characters; first 90 % train, last 10 % validation",
    {"name": "shakespeare"}, 1800.0,
    (
        Entry("charlm", "charlm", "autoregressive", ("data.name=shakespeare",), nll="exact",
              protocol="exact, context 256, every validation window", seeds=3),
        Entry("nanogpt_cpu", "charlm", "autoregressive", ("data.name=shakespeare",) + NANOGPT_CPU, nll="exact",
              protocol="exact, context 64: nanoGPT's CPU shakespeare_char recipe (4 layers, 4 heads, width 128, "
                       "context 64, batch 12, learned positions, lr 1e-3 to 1e-4, no dropout) on genzoo's Transformer"),
    ),
    "bits/char",
)

VECTOR_DATA = ("8gaussians", "checkerboard", "mixture8d")
#: (row name, recipe, family, likelihood or None, seeds)
_VECTOR_MODELS = (
    ("realnvp", "flow_toy", "flows", "exact", 3), ("glow", "glow_toy", "flows", "exact", 1),
    ("nice", "nice_toy", "flows", "exact", 1), ("tarflow", "tarflow_toy", "flows", "bound", 1),
    ("diffusion", "diffusion_toy", "diffusion", "exact", 1), ("shortcut", "shortcut_toy", "diffusion", "exact", 1),
    ("vae", "vae_toy", "vae", "bound", 1), ("pfgm", "pfgm_toy", "diffusion", None, 1),
    ("gan", "gan_toy", "gan", None, 1), ("wgan", "wgan_toy", "gan", None, 1), ("wgan_gp", "wgan_gp_toy", "gan", None, 1),
    ("gan_qp", "gan_qp_toy", "gan", None, 1), ("bigan", "bigan_toy", "gan", None, 1),
    ("bigan_qp", "bigan_qp_toy", "gan", None, 1), ("ogan", "ogan_toy", "gan", None, 1),
)
_VECTOR_LP = {"vae": {"k": 1000}, "diffusion": {"exact_trace": True}, "shortcut": {"exact_trace": True}}
VECTOR = Track(
    "vector", "Vectors: densities with an exact log-density",
    "8 Gaussians and checkerboard (2-D, FFJORD scale) and genzoo's 8-D Gaussian mixture; 20,000 train / 5,000 test "
    "points each",
    {}, 300.0,
    tuple(
        Entry(f"{name}@{data}", recipe, family, (f"data.name={data}",), log_prob=dict(_VECTOR_LP.get(name, {})),
              nll=lik, protocol="exact" if lik == "exact" else ("bound" if lik else ""), seeds=seeds if data == "mixture8d" else 1)
        for data in VECTOR_DATA for name, recipe, family, lik, seeds in _VECTOR_MODELS
    ) + tuple(
        Entry(f"zuko_{kind}@{data}", "", "flows", (f"data.name={data}",), nll="exact", protocol="exact", peer=f"zuko_{kind}")
        for data in VECTOR_DATA for kind in ("nsf", "maf")
    ),
    "NLL - H (nats)",
)

CIFAR_DEQ = ("data.name=cifar10", "data.dequantize=uniform")
CIFAR_GRID = ("data.name=cifar10",)
CIFAR10 = Track(
    "cifar10", "Colour: CIFAR-10",
    "CIFAR-10, 3x32x32, 256 levels in [-1, 1] (uniform dequantisation where a model is continuous), 45k train / "
    "5k valid / 10k test; features of genzoo's CIFAR-10 classifier; a cell made on a copy that is not the md5-checked "
    "official archive (e.g. CIFAR-10 (JPEG copy)) says so in its data source",
    {"name": "cifar10"}, 1800.0,
    (
        Entry("nice", "nice_cifar10", "flows", CIFAR_DEQ, nll="exact", protocol="exact (dequantised)"),
        Entry("realnvp", "realnvp_cifar10", "flows", CIFAR_DEQ, nll="exact", protocol="exact (dequantised)"),
        Entry("glow", "glow_cifar10", "flows", CIFAR_DEQ, nll="exact", protocol="exact (dequantised)"),
        Entry("tarflow", "tarflow_cifar10", "flows", CIFAR_DEQ, nll="bound", protocol="bound: noise-augmented density"),
        Entry("pixelcnn_logistic", "pixelcnn_cifar10", "autoregressive", CIFAR_GRID, nll="exact",
              protocol="exact, discretised logistic mixture"),
        Entry("gated_pixelcnn_logistic", "gated_pixelcnn_cifar10", "autoregressive", CIFAR_GRID, nll="exact",
              protocol="exact, discretised logistic mixture"),
        Entry("image_transformer", "image_transformer_cifar10", "autoregressive", CIFAR_GRID, nll="exact",
              protocol="exact, 256-way softmax per sub-pixel"),
        Entry("vae_logistic", "vae_cifar10", "vae", CIFAR_GRID, log_prob={"k": 1000}, sample={"mean": False}, nll="bound",
              protocol="IWAE bound, k=1000, discretised logistic decoder"),
        Entry("nvae", "nvae_cifar10", "vae", CIFAR_GRID, log_prob={"k": 100}, sample={"mean": False}, nll="bound",
              protocol="IWAE bound, k=100"),
        *(Entry(name, f"{name}_cifar10", "diffusion", CIFAR_DEQ, nll="exact", protocol=ODE_NLL)
          for name in ("ddpm", "edm", "flow_matching")),
        Entry("vqvae", "vq_prior_cifar10", "vq", CIFAR_GRID, tokenizer="vqvae_cifar10",
              protocol="FID of decoded prior samples; tokenizer reconstructions beside it"),
        Entry("vqgan", "vq_prior_cifar10", "vq", CIFAR_GRID, tokenizer="vqgan_cifar10",
              protocol="FID of decoded prior samples; tokenizer reconstructions beside it"),
        Entry("gan", "gan_cifar10", "gan", CIFAR_GRID),
        Entry("wgan_gp", "wgan_gp_cifar10", "gan", CIFAR_GRID),
    ),
    "bits/dim",
)

TRACKS: dict[str, Track] = {t.name: t for t in (BINARY, GREY, TEXT, VECTOR, CIFAR10)}


def get_track(name: str) -> Track:
    from ..errors import ConfigError, did_you_mean

    if name not in TRACKS:
        raise ConfigError(f"unknown track {name!r}{did_you_mean(name, list(TRACKS))}; tracks: {', '.join(TRACKS)}")
    return TRACKS[name]


def entry(track: Track, name: str) -> Entry:
    from ..errors import ConfigError, did_you_mean

    for e in track.entries:
        if e.name == name:
            return e
    names = [e.name for e in track.entries]
    raise ConfigError(f"no model {name!r} on the {track.name} track{did_you_mean(name, names)}; it has: {', '.join(names)}")


#: (track, model) -> why a model that belongs on the track has no cell yet (said in the report as missing)
PENDING: dict = {}  # (track, model) -> why a model that fits the track has no row yet

#: track -> a DataSpec-producing data section on which every registered model is asked whether it joins
_PROBE_DATA = {"binary": {"name": "mnist", "binarize": "static"}, "grey": {"name": "mnist", "dequantize": "uniform"},
               "text": {"name": "shakespeare"}, "vector": {"name": "mixture8d"}}


def _probe_specs(track: Track) -> list:
    """The DataSpecs a model is asked about: the track's data as a continuous model sees it and, for images, as
    discrete levels. CIFAR-10 is described, not loaded (it is not shipped: membership must work offline)."""
    from ..data.base import DataSpec
    from ..train.run import load_data

    if track.name == "cifar10":
        grid = DataSpec("cifar10", "image", (3, 32, 32), (-1.0, 1.0), levels=256, num_classes=10)
        return [DataSpec("cifar10", "image", (3, 32, 32), (-1.0, 1.0), levels=256, num_classes=10,
                         dequantization="uniform"), grid]
    specs = [load_data(_PROBE_DATA[track.name], "test").spec]
    if track.name == "grey":
        specs.append(load_data({"name": "mnist"}, "test").spec)
    return specs


def membership(track: Track) -> dict[str, str]:
    """Every registered model -> "joins: ROW, ROW" or the reason it is not on ``track``.

    The reason comes from the model itself: its default constructor and ``check_data`` on the
    track's data (both the grey data as a model sees it, dequantised, and as discrete levels).
    A model that accepts the data but has no entry is reported as a missing recipe."""
    import contextlib

    import torch

    from ..errors import GenzooError
    from ..registry import build, get_entry, list_models
    from ..train.run import DATA_LINKED_ARGS, load_data

    rows: dict[str, list[str]] = {}
    for e in track.entries:
        if e.peer is None:
            rows.setdefault(_model_of(e), []).append(e.name)
            if e.tokenizer:
                rows.setdefault(_model_of(e, e.tokenizer), []).append(e.name)
    specs = _probe_specs(track)
    out = {}
    for m in sorted(list_models()):
        if m in rows:
            out[m] = "joins: " + ", ".join(rows[m])
            continue
        if (track.name, m) in PENDING:
            out[m] = PENDING[(track.name, m)]
            continue
        why = None
        for sp in specs:
            kw = {k: fn(sp) for k, fn in DATA_LINKED_ARGS.items() if k in get_entry(m).signature_defaults() and fn(sp) is not None}
            try:
                with contextlib.redirect_stdout(None), torch.random.fork_rng():
                    build(m, **kw).check_data(sp)
                why = None
                break
            except (GenzooError, TypeError, ValueError, RuntimeError) as err:
                why = " ".join(str(err).split())
        out[m] = f"not on this track: {why}" if why else "missing: accepts this data but has no leaderboard recipe yet"
    return out


def _model_of(e: Entry, recipe: str | None = None) -> str:
    """The registered model an entry's recipe (or ``recipe``) builds."""
    from ..config import load_recipe

    return load_recipe(recipe or e.recipe)["model"]


def cell_paths(out: Path, track: Track, e: Entry, seed: int) -> dict:
    """Where a cell's files go under the leaderboard folder ``out``: its record, grid, run folder, fingerprint, log."""
    stem = f"{e.name}-s{seed}"
    return {"cell": out / "cells" / track.name / f"{stem}.json", "grid": out / "cells" / track.name / f"{stem}.png",
            "run": out / "runs" / track.name / stem, "fingerprint": out / "runs" / track.name / f"{stem}.fingerprint",
            "log": out / "runs" / track.name / f"{stem}.log"}
