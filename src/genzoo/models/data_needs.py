"""What data a model can be trained on, declared once per class and checked in one place.

A model states its needs as a class attribute instead of a hand-written ``check_data``::

    class PFGM(GenerativeModel):
        data_needs = DataNeeds(kinds=("image", "vector"), discrete=(None,), value_range=Opt("data_range"))

and :meth:`GenerativeModel.check_data <genzoo.models.base.GenerativeModel.check_data>` runs
:func:`check_data_needs`, which raises a one-line :class:`~genzoo.errors.ConfigError` naming the
problem and the setting that fixes it. A model whose needs depend on one of its settings (a VAE's
decoder, a flow's dequantisation) gives a dict keyed by that setting's value and names it in
``data_needs_by = (option, attribute)``; the key ``"*"`` is the fallback.

The checks run in a fixed order and stop at the first that fails:

1. **shape**: the model's ``shape`` equals the data's (``shape=False`` skips it);
2. **kind**: the data's kind is one of ``kinds`` (token data counts as ``"text"``);
3. **discrete**: ``spec.discrete`` is one of ``discrete`` (``None`` = continuous values);
4. **grid** (when ``levels`` is set): un-dequantised data on the ``levels``-level grid of
   ``value_range`` (the discrete likelihoods: softmax over levels, discretised logistic);
5. **dequantised** (``dequantized=True``): lattice data (an image, or a vector with a
   value_range) must be uniformly dequantised: a density on a grid is unbounded;
6. **range**: the data's value_range (``(0, 1)`` for binary data) equals ``value_range``, for images,
   and for vectors with a value_range when ``range_scope="any"``;
7. **vocab**: ``spec.vocab_size`` equals the model's;
8. **labels**: a class-conditional model (the ``labels`` setting > 0) needs labelled data with at
   most that many classes;
9. **warn** (``dequantized="warn"``): un-dequantised images train, with a warning that the
   likelihood is then a density on a grid.

What the declaration cannot say (a VQ prior's data must be its tokenizer's) stays in the
model's own ``check_data``, after ``super().check_data(spec)``.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass

from ..errors import ConfigError

IMAGE_OR_VECTOR = ("image", "vector")

_KIND_TEXT = {
    ("image",): ("images", "an image data set such as mnist or digits"),
    IMAGE_OR_VECTOR: ("images or vectors", "an image or vector data set"),
    ("text",): ("token sequences", "a text data set such as data.name=shakespeare"),
}


@dataclass(frozen=True)
class Opt:
    """A model setting: its name as the user writes it (``model.<option>=...``) and the attribute path
    its value is read from (default: the option's name; dots walk into sub-objects, e.g. ``output.levels``)."""

    option: str
    attr: str | None = None

    def value(self, model):
        v = model
        for part in (self.attr or self.option).split("."):
            v = getattr(v, part)
        return v


@dataclass(frozen=True)
class DataNeeds:
    """One model's data needs (see the module docstring for what each field checks and in which order).

    Attributes:
        kinds: allowed data kinds ("image", "vector", "text"; token data counts as "text"); None = any.
        discrete: allowed ``spec.discrete`` values (None = continuous, "binary", "levels", "tokens");
            None = any. Ignored when ``levels`` is set (the grid check covers it).
        dequantized: True = lattice data must be uniformly dequantised; "warn" = un-dequantised images
            train with a warning; None = either. (The grid check refuses dequantised data itself.)
        value_range: the (lo, hi) the data must lie in, fixed or an :class:`Opt`; None = any.
        range_scope: "image" (check images only) or "any" (also vectors that carry a value_range).
        levels: the grid's number of levels (fixed or an :class:`Opt`); None = no grid check.
        vocab: the setting the data's vocabulary size must equal.
        labels: the class-count setting (0 = unconditional).
        shape: compare the model's ``shape`` with the data's.
        alternative: another setting of the model that fits other data, appended to every fix.
    """

    kinds: tuple | None = None
    discrete: tuple | None = None
    dequantized: bool | str | None = None
    value_range: tuple | Opt | None = None
    range_scope: str = "image"
    levels: int | Opt | None = None
    vocab: Opt | None = None
    labels: Opt | None = None
    shape: bool = True
    alternative: str = ""


def _resolve(v, model):
    return v.value(model) if isinstance(v, Opt) else v


def _range(v) -> tuple[float, float] | None:
    return None if v is None else tuple(float(x) for x in v)


def _show(r) -> str:
    """[lo, hi] as problem text."""
    return "None" if r is None else f"[{r[0]:g}, {r[1]:g}]"


def _cli(r) -> str:
    """[lo,hi] as a command-line value."""
    return f"[{r[0]:g},{r[1]:g}]"


def needs_for(model) -> tuple[DataNeeds | None, str]:
    """(the declaration that applies to ``model``, the name its messages use)."""
    cls = type(model)
    needs = getattr(cls, "data_needs", None)
    who = getattr(cls, "data_name", None) or cls.__name__
    by = getattr(cls, "data_needs_by", None)
    if isinstance(needs, dict):
        option, attr = by
        value = getattr(model, attr)
        needs = needs.get(value, needs.get("*"))
        who = f"{who} {option}={value!r}"
    return needs, who


def check_shape(model, spec) -> None:
    shape = getattr(model, "shape", None)
    if shape is not None and tuple(shape) != tuple(spec.shape):
        raise ConfigError(
            f"{type(model).__name__} was built for shape {tuple(shape)} but data set {spec.name!r} has "
            f"shape {tuple(spec.shape)}; drop model.shape to take it from the data"
        )


def check_data_needs(model, spec) -> None:
    """Raise ConfigError on the first of the checks above that ``spec`` (a DataSpec) fails for ``model``."""
    needs, who = needs_for(model)
    if needs is None:
        check_shape(model, spec)
        return
    alt = f", or {needs.alternative}" if needs.alternative else ""
    name = spec.name
    if needs.shape:
        check_shape(model, spec)

    tokens = spec.discrete == "tokens" or spec.kind == "text"
    if needs.kinds is not None and ("text" if tokens else spec.kind) not in needs.kinds:
        what, suggest = _KIND_TEXT.get(tuple(needs.kinds), (" or ".join(needs.kinds) + " data", "another data set"))
        seen = "token data" if tokens else f"{spec.kind} data"
        raise ConfigError(f"{who} models {what}, not {seen} ({name!r}); use {suggest}")

    levels = _resolve(needs.levels, model)
    if levels is None and needs.discrete is not None and spec.discrete not in needs.discrete:
        if "binary" in needs.discrete:
            raise ConfigError(f"{who} needs binary {{0, 1}} data but {name!r} is not binarised; "
                              f"set data.binarize=static or dynamic{alt}")
        if None in needs.discrete:
            deq = " data.dequantize=uniform" if needs.dequantized in (True, "warn") else ""
            raise ConfigError(f"{who} models continuous data but {name!r} is {spec.discrete} data ({spec.describe()}); "
                              f"set data.binarize=none{deq}{alt}")
        if "levels" in needs.discrete:
            raise ConfigError(f"{who} needs integer-valued data (discrete='levels') but {name!r} is "
                              f"{spec.discrete or 'continuous'}" + (f"; use {needs.alternative}" if needs.alternative else ""))
        raise ConfigError(f"{who} needs {' or '.join(map(str, needs.discrete))} data but {name!r} is "
                          f"{spec.discrete or 'continuous'}")

    vr = _range(spec.value_range)
    mine = _range(_resolve(needs.value_range, model))
    if levels is not None:
        levels = int(levels)
        problems = []
        if spec.discrete is not None:
            problems.append(f"it is {spec.discrete} data")
        else:
            if mine is not None and vr != mine:
                if isinstance(needs.value_range, Opt):
                    hint = f" (set model.{needs.value_range.option}={_cli(vr)})" if vr else ""
                else:
                    hint = f" (set data.value_range={_cli(mine)})"
                problems.append(f"its value_range is {_show(vr)}, not {_show(mine)}{hint}")
            if spec.dequantization:
                problems.append(f"it is {spec.dequantization}ly dequantised (set data.dequantize=none)")
            if int(spec.levels or 0) != levels:
                hint = f" (set model.{needs.levels.option}={spec.levels})" if isinstance(needs.levels, Opt) else ""
                problems.append(f"it has {spec.levels} grey levels, not {levels}{hint}")
        if problems:
            where = f" of {_show(mine)}" if mine is not None else ""
            raise ConfigError(f"{who} needs un-dequantised data on the {levels}-level grid{where} but data set {name!r}: "
                              f"{'; '.join(problems)}; use data.binarize=none data.dequantize=none{alt}")

    lattice = spec.kind == "image" or spec.value_range is not None
    if needs.dequantized is True and spec.discrete is None and lattice and spec.dequantization != "uniform":
        raise ConfigError(f"{who} is a density over continuous data but {name!r} is not dequantised (a density on its "
                          f"{spec.levels}-level grid is unbounded: bits/dim can go negative); "
                          f"set data.dequantize=uniform{alt}")

    theirs = (0.0, 1.0) if spec.discrete == "binary" else vr
    in_scope = spec.kind == "image" or needs.range_scope == "any"
    if levels is None and mine is not None and theirs is not None and in_scope and theirs != mine:
        fix = f"data.value_range={_cli(mine)}"
        if isinstance(needs.value_range, Opt):
            fix = f"model.{needs.value_range.option}={_cli(theirs)} or " + fix
        raise ConfigError(f"{who} was built for data in {_show(mine)} but {name!r} has value_range {_show(theirs)}; "
                          f"set {fix}")

    if needs.vocab is not None:
        v = int(_resolve(needs.vocab, model))
        if int(spec.vocab_size or 0) != v:
            raise ConfigError(f"{who} was built for {needs.vocab.option}={v} but {name!r} has {spec.vocab_size} tokens; "
                              f"drop model.{needs.vocab.option} to take it from the data")

    if needs.labels is not None:
        K = int(_resolve(needs.labels, model) or 0)
        opt = needs.labels.option
        if K > 0:
            k = spec.num_classes
            if not k:
                raise ConfigError(f"{opt}={K} needs labelled data but {name!r} has no labels; set model.{opt}=0")
            if int(k) > K:
                raise ConfigError(f"{name!r} has {k} classes but the model was built with {opt}={K}; set model.{opt}={k}")

    if needs.dequantized == "warn" and spec.kind == "image" and spec.value_range is not None and not spec.dequantization:
        warnings.warn(
            f"{name!r} is not dequantised: {who} trains on it, but its log_prob is then a density on a grid of "
            "grey levels, not comparable to published bits/dim; set data.dequantize=uniform for likelihoods",
            stacklevel=3,
        )
