"""Negative log-likelihood of a data set under a model, in nats and bits/dim.

``model.log_prob(x)`` returns nats per example: log p(x) for ``likelihood == "exact"``
models, a lower bound (ELBO, IWAE bound, variational dequantisation bound) for
``"bound"`` models, so the reported NLL is an upper bound for those. Bits/dim follow
:mod:`genzoo.units`::

    bits/dim = nll_nats / (D ln 2) + log2(levels / (hi - lo))

where the offset is added only when the model is a *density* over continuous
(dequantised) data in [lo, hi] (``+ 7`` for [-1, 1], ``+ 8`` for [0, 1] with 256 levels).
It is 0 for a discrete likelihood (``model.discrete_likelihood``: binary pixels,
softmax over levels, discretised logistic) and for discrete data (binary, levels,
tokens; ``spec.value_range is None``). Every result names its data set, including the
binarisation (static vs dynamic binarised MNIST differ by 1-2 nats).

Noise protocol (recorded in ``result["protocol"]``): the *data* noise (uniform
dequantisation, dynamic binarisation) is drawn per example, example ``i`` from a
generator seeded with ``(splitmix64(seed) + i) mod 2**32``
(:func:`genzoo.data.base.example_seed`), so the test draw is the same at any batch size
and in any ``limit`` subset. The *model* noise (a VAE's posterior samples, TARFLOW's
noise augmentation, Hutchinson probes: whatever ``log_prob`` draws from the global torch
RNG) comes from a separate stream, the global RNG seeded with
``(splitmix64(seed) - 1) mod 2**32`` (:func:`genzoo.data.base.model_noise_seed`), a
seed no example's data noise uses, so the two are not correlated.
"""
from __future__ import annotations

import math

import torch

from ..data.base import model_noise_seed
from ..errors import ConfigError, GenzooError
from ..units import bits_per_dim, dequantization_offset_bits


def _data_range_for_bpd(model, spec) -> tuple[float, float] | None:
    if getattr(model, "discrete_likelihood", False):
        return None
    if spec.value_range is None or spec.discrete is not None:
        return None
    return (float(spec.value_range[0]), float(spec.value_range[1]))


def evaluate_nll(model, dataset, *, batch_size: int = 256, limit: int | None = None, seed: int = 0,
                 progress: bool = True, **log_prob_opts) -> dict:
    """Mean negative log-likelihood of ``dataset`` under ``model``.

    Args:
        model: a :class:`~genzoo.models.base.GenerativeModel` with ``likelihood`` "exact" or "bound".
        dataset: an :class:`~genzoo.data.base.ArrayDataset` (its ``spec`` gives D, the value
            range and the binarisation). Batches come from ``dataset.iter_batches``, so the
            transform's randomness (dequantisation noise, dynamic binarisation) is drawn per
            example from (``seed``, example index): the same at any ``batch_size``.
        batch_size: examples per ``log_prob`` call.
        limit: evaluate a fixed random subset of ``limit`` examples (``ArrayDataset.subset_indices``).
        seed: seed of the data transform's per-example randomness and, through a different
            derived seed (``model_noise_seed(seed)``), of stochastic log_prob estimates that draw
            from the global torch RNG: it is seeded inside a ``torch.random.fork_rng`` block, so
            the caller's RNG state is left untouched (see the module docstring).
        progress: show a tqdm progress bar.
        **log_prob_opts: passed to ``model.log_prob`` (e.g. ``k=5000`` importance samples for the
            VAE's IWAE bound, the paper's evaluation; options a model does not list in its
            ``log_prob_options`` are refused with a ConfigError).
    ``log_prob`` is called under ``torch.no_grad()`` with the model in eval mode (its
    training flag is restored afterwards); a model that needs autograd inside log_prob
    (Hutchinson trace estimates) enables it itself with ``torch.enable_grad()``.
    Returns: dict with
        nll_nats (mean over examples, nats per example), nll_nats_stderr (standard error of
        that mean), bits_per_dim, bits_per_dim_stderr, offset_bits (the dequantisation
        offset added), num_examples, num_dims, likelihood ("exact" or "bound"),
        is_upper_bound (True for "bound" models), data (``spec.describe()``), seed,
        model_noise_seed (the seed of the model's noise stream) and protocol (one line
        saying how data noise and model noise were seeded).
    Raises: ConfigError if ``model.likelihood == "none"`` (GANs: use sample metrics).
    """
    likelihood = getattr(model, "likelihood", "none")
    if likelihood not in ("exact", "bound"):
        raise ConfigError(
            f"{type(model).__name__} has likelihood={likelihood!r}: it defines no log_prob, so NLL cannot be "
            "evaluated; use the sample-based metrics (genzoo.eval.sample_metrics: fid, kid, pr)"
        )
    spec = dataset.spec
    n_total = len(dataset) if limit is None else min(int(limit), len(dataset))
    if n_total <= 0:
        raise ConfigError(f"nothing to evaluate: limit={limit}, data set has {len(dataset)} examples")
    D = spec.num_dims
    pass_labels = bool(getattr(model, "uses_labels", False)) and "y" in tuple(getattr(model, "log_prob_options", ()))

    try:
        device = model.device
    except Exception:
        device = torch.device("cpu")
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=n_total, desc=f"nll {spec.name}", unit="ex", leave=False)
    was_training = model.training
    model.eval()
    chunks = []
    m_seed = model_noise_seed(seed)
    try:
        fork_devices = [device] if device.type == "cuda" else []
        with torch.random.fork_rng(devices=fork_devices), torch.no_grad():
            torch.manual_seed(m_seed)  # model noise: its own stream, not any example's data noise
            for x, y in dataset.iter_batches(batch_size, seed=seed, limit=n_total):
                x = x.to(device)
                opts = dict(log_prob_opts)
                if pass_labels and y is not None:
                    opts["y"] = y.to(device)
                lp = model.log_prob(x, **opts)
                if not isinstance(lp, torch.Tensor) or lp.shape != (x.shape[0],):
                    got = tuple(lp.shape) if isinstance(lp, torch.Tensor) else type(lp).__name__
                    raise GenzooError(f"{type(model).__name__}.log_prob must return shape ({x.shape[0]},) (nats per example), got {got}")
                lp = lp.detach().to("cpu", torch.float64)
                if torch.isnan(lp).any():
                    raise GenzooError(f"{type(model).__name__}.log_prob returned NaN for {int(torch.isnan(lp).sum())} examples")
                chunks.append(lp)
                if bar is not None:
                    bar.update(x.shape[0])
    finally:
        model.train(was_training)
        if bar is not None:
            bar.close()

    nll = -torch.cat(chunks)
    n = nll.numel()
    mean = float(nll.mean())
    stderr = float(nll.std() / math.sqrt(n)) if n > 1 else float("nan")
    data_range = _data_range_for_bpd(model, spec)
    levels = int(spec.levels)
    return {
        "nll_nats": mean,
        "nll_nats_stderr": stderr,
        "bits_per_dim": float(bits_per_dim(mean, D, data_range, levels)),
        "bits_per_dim_stderr": stderr / (D * math.log(2.0)),
        "offset_bits": dequantization_offset_bits(data_range, levels),
        "num_examples": n,
        "num_dims": D,
        "likelihood": likelihood,
        "is_upper_bound": likelihood == "bound",
        "data": spec.describe(),
        "seed": int(seed),
        "model_noise_seed": m_seed,
        "protocol": (f"data noise (dequantisation/binarisation): per-example generator seeded with "
                     f"(splitmix64(seed) + example index) mod 2**32, seed={int(seed)}, independent of batch size; "
                     f"model noise (log_prob's own sampling): separate global torch RNG stream, seed {m_seed}"),
        "log_prob_opts": dict(log_prob_opts),
    }
