"""Model registry: ``genzoo.build("name", **overrides)`` and ``genzoo list``.

Each model class registers itself with :func:`register`. Constructor arguments are plain
keywords with defaults; :func:`build` checks overrides against the constructor's
signature, so an unknown key is an error that lists the valid ones, and a value of the
wrong type is an error naming the expected type.
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass, field

from .errors import ConfigError, did_you_mean

_REGISTRY: dict[str, "ModelEntry"] = {}


@dataclass
class ModelEntry:
    name: str
    cls: type
    family: str
    paper: str
    summary: str
    defaults: dict = field(default_factory=dict)  # registry-level defaults over the signature's

    def signature_defaults(self) -> dict:
        sig = inspect.signature(self.cls.__init__)
        out = {}
        for pname, p in list(sig.parameters.items())[1:]:
            if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
                continue
            out[pname] = None if p.default is inspect.Parameter.empty else p.default
        out.update(self.defaults)
        return out


def register(name: str, *, family: str, paper: str, summary: str = "", **defaults):
    """Class decorator registering a GenerativeModel under ``name``."""

    def deco(cls):
        if name in _REGISTRY and _REGISTRY[name].cls is not cls:
            raise RuntimeError(f"model name {name!r} registered twice")
        _REGISTRY[name] = ModelEntry(name, cls, family, paper, summary or (cls.__doc__ or "").strip().split("\n")[0], defaults)
        cls.registry_name = name
        return cls

    return deco


def _ensure_loaded():
    from .models import load_all

    load_all()


def list_models() -> dict[str, ModelEntry]:
    _ensure_loaded()
    return dict(sorted(_REGISTRY.items()))


def get_entry(name: str) -> ModelEntry:
    _ensure_loaded()
    if not isinstance(name, str):
        raise ConfigError(f"the model must be named by a string, got {name!r}; valid models: {', '.join(sorted(_REGISTRY))}")
    if name not in _REGISTRY and isinstance(name, str) and name.replace("-", "_") in _REGISTRY:
        name = name.replace("-", "_")  # `genzoo train vq-prior` = vq_prior
    if name not in _REGISTRY:
        raise ConfigError(
            f"unknown model {name!r}{did_you_mean(name, _REGISTRY)}; valid models: {', '.join(sorted(_REGISTRY))}"
        )
    return _REGISTRY[name]


def _coerce(key: str, value, default):
    """Coerce ``value`` to the type of ``default`` (for CLI strings); raise ConfigError if impossible."""
    if default is None or value is None:
        return value
    t = type(default)
    if isinstance(value, t) and not (t is int and isinstance(value, bool)):
        return value
    try:
        if t is bool:
            if isinstance(value, str):
                low = value.lower()
                if low in ("true", "1", "yes", "on"):
                    return True
                if low in ("false", "0", "no", "off"):
                    return False
                raise ValueError
            return bool(value)
        if t is int:
            if isinstance(value, float) and not value.is_integer():
                raise ValueError
            return int(value)
        if t is float:
            return float(value)
        if t in (tuple, list):
            if isinstance(value, str):
                import yaml

                try:
                    value = yaml.safe_load(value)
                except yaml.YAMLError:
                    raise ValueError from None
            if not isinstance(value, (list, tuple)):
                raise ValueError
            return t(value)
        if t is str:
            return str(value)
    except (TypeError, ValueError):
        pass
    else:
        return value
    raise ConfigError(f"bad value for {key!r}: {value!r} (expected {t.__name__}, like {default!r})")


def resolve_args(name: str, overrides: dict) -> dict:
    """Full constructor arguments for ``name``: defaults updated by checked overrides."""
    entry = get_entry(name)
    defaults = entry.signature_defaults()
    out = dict(defaults)
    retired = getattr(entry.cls, "retired_options", {})
    for k, v in overrides.items():
        if k in retired:
            raise ConfigError(f"model.{k} of {name!r} is gone: {retired[k]}")
        if k not in defaults:
            raise ConfigError(
                f"unknown key {k!r} for model {name!r}{did_you_mean(k, defaults)}; valid keys: {', '.join(defaults)}"
            )
        out[k] = _coerce(k, v, defaults[k])
    return out


def build(name: str, **overrides):
    """Build a registered model with its defaults updated by ``overrides``."""
    entry = get_entry(name)
    args = resolve_args(name, overrides)
    try:
        return entry.cls(**args)
    except ConfigError:
        raise
    except (ValueError, TypeError, RuntimeError, AssertionError, ZeroDivisionError, IndexError, KeyError) as e:
        # a constructor refusing its arguments (a negative width, heads that do not divide the width, ...)
        given = ", ".join(f"{k}={v!r}" for k, v in overrides.items() if k not in ("shape", "vocab_size")) or "the defaults"
        msg = " ".join(str(e).split()) or type(e).__name__
        raise ConfigError(f"cannot build model {name!r} with {given}: {msg}; see `genzoo list {name}` for its arguments") from e
