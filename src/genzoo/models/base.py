"""The one interface every genzoo model implements.

A :class:`GenerativeModel` is a ``torch.nn.Module`` with:

* ``likelihood``: ``"exact"`` (log_prob is log p(x)), ``"bound"`` (a lower bound such as
  the ELBO / IWAE bound) or ``"none"`` (GANs; log_prob raises).
* ``loss(batch) -> dict``: ``{"loss": scalar, ...logged extras}``. ``batch`` is the data
  tensor ``x`` of shape (B, C, H, W) or (B, D) in the data set's value range (or
  ``(x, y)`` for models with ``uses_labels = True``).
* ``sample(n, *, generator=None, temperature=1.0, ...) -> Tensor``: n samples in data space.
  Options are keyword-only parameters; ``sample_options`` is derived from them (a method still
  taking ``**opts`` lists them by hand); unknown options raise ConfigError.
* ``log_prob(x, *, k=..., ...) -> Tensor``: (B,) in **nats per example**; ``log_prob_options``
  likewise.

Training context: a model whose ``loss`` declares a keyword ``ctx`` receives a
:class:`TrainContext` from the trainer (the step, the total steps and the trainer's EMA
copy of the model) instead of keeping its own step counter or weight average; a model
that must change its weights after the optimiser's step (WGAN's clipping) overrides
:meth:`GenerativeModel.after_step`. Called outside the trainer, ``ctx`` is None.

Multi-player objectives (GANs) override :meth:`players` to return
``{name: [parameters]}``; the trainer then keeps one optimiser per player and, each
step, calls ``loss(batch, player=name)`` for each player in order (``player_steps``
gives how many updates each player gets per step).

``discrete_likelihood`` tells the metrics whether ``log_prob`` is a probability mass
(binary pixels, softmax over levels, discretised logistic: bits/dim adds nothing) or a
density over dequantised continuous data (bits/dim adds the bin volume; see
:mod:`genzoo.units`).
"""
from __future__ import annotations

import functools
import inspect
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from ..core.checkpoint import _retired, retired_keys  # noqa: F401  (retired_keys: public here too)
from ..errors import ConfigError, did_you_mean
from .data_needs import DataNeeds, check_data_needs


@dataclass(frozen=True)
class TrainContext:
    """What the trainer tells ``loss(batch, ctx=...)`` and :meth:`GenerativeModel.after_step`.

    step: the step being trained (0-based; the optimiser has taken ``step`` steps so far);
    total_steps: ``train.steps``; ema: the trainer's EMA copy of the model (eval mode, no
    gradients; ``train.ema_decay``), or None when the run keeps no EMA."""
    step: int
    total_steps: int
    ema: nn.Module | None = None


def _keyword_options(fn, fixed: set[str], extra: tuple[str, ...] | None = None) -> tuple[str, ...] | None:
    """The keyword-only parameters of ``fn`` minus ``fixed``, in order, then ``extra`` (the names a
    ``**kwargs`` of ``fn`` forwards, e.g. the diffusion samplers' own options); None when ``fn`` takes
    ``**opts`` and no ``extra`` is declared (it then lists its options by hand in the class attribute)."""
    params = inspect.signature(fn).parameters.values()
    var_kw = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params)
    if var_kw and extra is None:
        return None
    names = tuple(p.name for p in params if p.kind is inspect.Parameter.KEYWORD_ONLY and p.name not in fixed)
    return names + tuple(e for e in (extra or ()) if e not in names) if var_kw else names


def _checked(fn, attr: str, what: str, fixed: set[str]):
    """``fn`` refusing an unknown keyword with genzoo's one line (the valid options, a did-you-mean)
    instead of Python's TypeError."""
    @functools.wraps(fn)
    def method(self, *args, **opts):
        allowed = getattr(type(self), attr)
        unknown = {k: v for k, v in opts.items() if k not in allowed and k not in fixed}
        if unknown:
            self.check_options(unknown, allowed, what=what)
        return fn(self, *args, **opts)
    method.__genzoo_checked__ = True
    return method


#: (method, its options attribute, the attribute naming what its ``**kwargs`` forwards, keywords that are not options)
_OPTION_METHODS = (("sample", "sample_options", "sample_forwarded_options", {"generator"}),
                   ("log_prob", "log_prob_options", "log_prob_forwarded_options", set()))


@functools.cache
def _loss_takes_context(cls) -> bool:
    return "ctx" in inspect.signature(cls.loss).parameters


class GenerativeModel(nn.Module):
    likelihood: ClassVar[str] = "none"
    #: names of the keyword options ``sample`` accepts
    sample_options: ClassVar[tuple[str, ...]] = ()
    #: names of the keyword options ``log_prob`` accepts
    log_prob_options: ClassVar[tuple[str, ...]] = ()
    #: True when log_prob is a probability mass over discrete data
    discrete_likelihood: ClassVar[bool] = False
    #: True when loss() wants (x, y) instead of x
    uses_labels: ClassVar[bool] = False
    #: the key of loss()'s dict that validation scores (the trainer's ``valid_loss``, and what
    #: ``train.keep_best`` picks weights by). A model whose training loss carries schedules or
    #: regularisers (KL warm-up, spectral penalties) names its unweighted objective here, so that
    #: validation losses from different steps can be compared.
    valid_metric: str = "loss"
    #: the data this model can be trained on (:class:`genzoo.models.data_needs.DataNeeds`), or a dict
    #: of them keyed by the value of the setting named in :attr:`data_needs_by`; None = any data of
    #: the model's ``shape``
    data_needs: ClassVar[DataNeeds | dict | None] = None
    #: (option, attribute) whose value picks the entry of a dict :attr:`data_needs` ("*": fallback)
    data_needs_by: ClassVar[tuple[str, str] | None] = None
    #: the model's name in data errors (default: the class name)
    data_name: ClassVar[str | None] = None
    #: state-dict entries that earlier versions saved and this one no longer has (a name, or a
    #: prefix ending in "."): dropped when a checkpoint is loaded, so older run folders still load
    retired_state: ClassVar[tuple[str, ...]] = ()
    #: constructor arguments of earlier versions: {name: what to write instead}; a recipe or run
    #: folder that still sets one is refused with that line
    retired_options: ClassVar[dict[str, str]] = {}

    def __init_subclass__(cls, **kwargs):
        """Options are signatures: a ``sample`` / ``log_prob`` with keyword-only parameters and no
        ``**opts`` declares its options by them (``sample_options`` / ``log_prob_options`` are derived,
        in order; ``generator`` is not a sampling option), and an unknown keyword is refused in one line.
        A method whose ``**kwargs`` forwards options to a callee names them in
        ``sample_forwarded_options`` / ``log_prob_forwarded_options``; they join the derived list."""
        super().__init_subclass__(**kwargs)
        for meth, attr, forwarded, fixed in _OPTION_METHODS:
            fn = cls.__dict__.get(meth)
            if fn is None or getattr(fn, "__genzoo_checked__", False):
                continue
            names = _keyword_options(fn, fixed, getattr(cls, forwarded, None))
            if names is None:
                continue
            if attr in cls.__dict__:
                raise TypeError(f"{cls.__name__}.{meth} declares its options by keywords: drop the {attr} tuple")
            setattr(cls, attr, names)
            setattr(cls, meth, _checked(fn, attr, meth, fixed))

    def loss(self, batch, **kwargs) -> dict[str, torch.Tensor]:  # pragma: no cover - interface
        raise NotImplementedError(f"{type(self).__name__} does not implement loss()")

    def sample(self, n: int, *, generator: torch.Generator | None = None, **opts) -> torch.Tensor:  # pragma: no cover
        raise NotImplementedError(f"{type(self).__name__} does not implement sample()")

    def log_prob(self, x: torch.Tensor, **opts) -> torch.Tensor:
        raise ConfigError(
            f"{type(self).__name__} has no likelihood (likelihood='{self.likelihood}'); "
            "use sample-based metrics (fid, kid, pr) instead of nll"
        )

    def forward(self, batch, ctx: TrainContext | None = None, **kwargs) -> dict[str, torch.Tensor]:
        """Same as :meth:`loss`. The trainer calls the model (not ``.loss``) so that
        DistributedDataParallel and autocast see the call; ``ctx`` reaches ``loss`` only when
        its signature has a ``ctx`` keyword."""
        if ctx is not None and _loss_takes_context(type(self)):
            kwargs["ctx"] = ctx
        return self.loss(batch, **kwargs)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        for key in [k for k in state_dict if k.startswith(prefix) and _retired(self, k[len(prefix):])]:
            del state_dict[key]
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def after_step(self, player: str | None, ctx: TrainContext) -> None:
        """Called by the trainer right after each optimiser step (``player``: the player just
        updated, None for a single objective), before the EMA update. Default: nothing."""

    def check_data(self, spec) -> None:
        """Raise ConfigError if this model cannot be trained on data described by ``spec``
        (a :class:`genzoo.data.DataSpec`): the class's :attr:`data_needs`, checked by
        :func:`genzoo.models.data_needs.check_data_needs` (without a declaration: ``self.shape`` only).
        A model overrides this only for what a declaration cannot say, calling ``super()`` first."""
        check_data_needs(self, spec)

    # -- multi-player objectives -------------------------------------------------
    def players(self) -> dict[str, list[nn.Parameter]] | None:
        """None for a single objective; {name: params} for alternating optimisation."""
        return None

    def player_steps(self) -> dict[str, int]:
        """Updates per training step for each player (e.g. {"critic": 5, "generator": 1})."""
        p = self.players() or {}
        return {k: 1 for k in p}

    # -- helpers -------------------------------------------------------------------
    def check_options(self, opts: dict, allowed: tuple[str, ...], what: str = "sample") -> None:
        """Raise ConfigError naming the unknown option and the valid ones."""
        for k in opts:
            if k not in allowed:
                valid = ", ".join(allowed) if allowed else "(none)"
                raise ConfigError(
                    f"unknown {what} option {k!r} for {type(self).__name__}{did_you_mean(k, allowed)}; "
                    f"valid options: {valid}"
                )

    @property
    def device(self) -> torch.device:
        for p in self.parameters():
            return p.device
        return torch.device("cpu")

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())


NULL_LABEL_NAMES = ("none", "null", "uncond", "unconditional")


def resolve_labels(labels, n: int, num_classes: int, device, *, default: str = "cycle", model: str = "model"):
    """Class labels (n,) int64 for a class-conditional network with the null label ``num_classes``
    (classifier-free guidance), or None for an unconditional model (``num_classes == 0``).

    ``labels``: None (``default``: "cycle" = 0, 1, ..., K-1, 0, ...; "null" = the null label K),
    an int (every example), n ints, or "none"/"null" (the null label). Raises ConfigError naming
    the problem otherwise."""
    K = int(num_classes)
    if K == 0:
        if labels is not None:
            raise ConfigError(f"this {model} is unconditional (num_classes=0); drop labels=")
        return None
    if labels is None:
        labels = "null" if default == "null" else torch.arange(n, device=device) % K
    if isinstance(labels, str):
        if labels.lower() not in NULL_LABEL_NAMES:
            raise ConfigError(f"labels must be ints, a list of n ints or 'none', got {labels!r}")
        return torch.full((n,), K, dtype=torch.long, device=device)
    y = torch.as_tensor(labels, device=device).long().reshape(-1)
    if y.numel() == 1:
        y = y.expand(n).clone()
    if y.shape[0] != n:
        raise ConfigError(f"labels needs one label per example ({n}), got {y.shape[0]}")
    if bool(((y < 0) | (y > K)).any()):
        raise ConfigError(f"labels must be in 0..{K - 1} (or {K} = no label), got {y.tolist()[:8]}")
    return y
