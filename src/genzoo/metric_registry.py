"""The one list of evaluation metrics: what ``genzoo eval --metrics``, the evaluation runner, the library's
:func:`genzoo.eval.sample_metrics` and the help text accept (no torch import: the CLI reads it for ``--help``).

A metric is registered here once, with what it needs: ``samples`` (it draws samples from the model),
``features`` (it compares samples with real data through the feature network, :mod:`genzoo.eval.features`).
Its computation lives in :mod:`genzoo.eval` (a function of features or samples) and is called by
:func:`genzoo.eval.runner.run_evaluation`.
"""
from __future__ import annotations

from dataclasses import dataclass

from .errors import ConfigError, did_you_mean


@dataclass(frozen=True)
class Metric:
    name: str
    help: str
    samples: bool = False   # draws samples from the model
    features: bool = False  # compares samples with real data in the feature network's space


METRICS: dict[str, Metric] = {}


def register_metric(name: str, help: str, *, samples: bool = False, features: bool = False) -> Metric:
    if name in METRICS:
        raise ValueError(f"metric {name!r} is already registered")
    METRICS[name] = m = Metric(name, help, samples, features)
    return m


register_metric("nll", "test negative log-likelihood (nats per example; bits/dim for images), exact or a bound")
register_metric("fid", "Frechet distance of n samples to as many real images, with the floor FID(split, train)",
                samples=True, features=True)
register_metric("kid", "kernel inception distance (unbiased polynomial-kernel MMD^2 over subsets)",
                samples=True, features=True)
register_metric("pr", "precision and recall (Kynkaanniemi et al. 2019, k=3 neighbours)", samples=True, features=True)
register_metric("prdc", "precision, recall, density and coverage (Naeem et al. 2020, k=3 neighbours)",
                samples=True, features=True)
register_metric("modes", "mode coverage and high-quality share on a mixture with known modes (8gaussians)",
                samples=True)
register_metric("probe", "linear-probe accuracy of the model's encoder features on the labelled split")
register_metric("recon", "reconstruction MSE and FID of reconstructions (autoencoders, tokenizers)")


def metric_names(*, samples: bool | None = None, features: bool | None = None) -> tuple[str, ...]:
    """The registered names, in registration order, optionally only those that do / do not draw samples or use
    features."""
    return tuple(m.name for m in METRICS.values()
                 if (samples is None or m.samples == samples) and (features is None or m.features == features))


def check_metrics(metrics, valid: tuple[str, ...] | None = None) -> tuple[str, ...]:
    """``metrics`` (a name or names) as a tuple; a ConfigError names an unknown one and the valid ones."""
    metrics = (metrics,) if isinstance(metrics, str) else tuple(metrics)
    valid = metric_names() if valid is None else valid
    for m in metrics:
        if m not in valid:
            raise ConfigError(f"unknown metric {m!r}{did_you_mean(m, valid)}; valid metrics: {', '.join(valid)}")
    return metrics


def metrics_help() -> str:
    """One line per metric, for ``--help``."""
    return "; ".join(f"{m.name}: {m.help}" for m in METRICS.values())
