"""Model registry: ``genzoo.build("name", **overrides)`` and ``genzoo list``.

Each model class registers itself with :func:`register`. Constructor arguments are plain
keywords with defaults; :func:`build` checks overrides against the constructor's
signature, so an unknown key is an error that lists the valid ones, and a value of the
wrong type is an error naming the expected type.
"""
from __future__ import annotations

import dataclasses
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
        """The constructor's arguments and defaults, read over the class hierarchy: an ``__init__`` that
        takes ``**kwargs`` passes them on to its parent's, so the parent's arguments are this model's too
        (a subclass declares only its own, or a parent's with another default). Order: the base's
        arguments first, in their order (a subclass's new default in the base's place), then each
        subclass's new ones; the registry-level defaults override last."""
        out = {}
        for params in reversed(_init_chain(self.cls)):
            for p in params:
                if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
                    out[p.name] = None if p.default is inspect.Parameter.empty else p.default
        for arg, spec in self.network_specs().items():  # a nested section: its default as a plain dict
            d = out.get(arg)
            out[arg] = dataclasses.asdict(d if dataclasses.is_dataclass(d) else spec(**(d or {})))
        for k, v in self.defaults.items():
            out[k] = {**out[k], **v} if k in self.network_specs() else v
        return out

    def network_specs(self) -> dict[str, type]:
        """{argument: spec dataclass} for the model's nested network sections (the class's ``network_specs``,
        e.g. ``{"transformer": TransformerConfig}``): written ``model.transformer: {dim: 128}`` in YAML."""
        return dict(getattr(self.cls, "network_specs", None) or {})

    def accepts(self, key: str) -> bool:
        """Whether ``model.KEY`` is one of this model's settings: an argument, ``SECTION.FIELD`` of a nested
        network section, or a bare FIELD of one (the flat form configs were written in before the section)."""
        if key in self.signature_defaults():
            return True
        head, dot, tail = key.partition(".")
        specs = self.network_specs()
        names = {f.name for spec in specs.values() for f in dataclasses.fields(spec)}
        return bool(dot and head in specs and tail in {f.name for f in dataclasses.fields(specs[head])}) or key in names


def _init_chain(cls) -> list[list[inspect.Parameter]]:
    """The parameters (without ``self``) of each ``__init__`` along ``cls``'s MRO, subclass first, for as
    long as each takes ``**kwargs`` (the torch and object constructors end the chain)."""
    chain = []
    for klass in cls.__mro__:
        if klass is object or klass.__module__.split(".")[0] == "torch":
            break
        init = klass.__dict__.get("__init__")
        if init is None:
            continue
        params = list(inspect.signature(init).parameters.values())[1:]
        chain.append(params)
        if not any(p.kind is p.VAR_KEYWORD for p in params):
            break
    return chain


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
    """Full constructor arguments for ``name``: defaults updated by checked overrides. A nested network
    section (``network_specs``) is a dict of its fields, updated field by field by ``SECTION: {...}``,
    ``SECTION.FIELD`` or a bare ``FIELD`` (the flat form of configs written before the section), then
    validated by its spec."""
    entry = get_entry(name)
    defaults = entry.signature_defaults()
    specs = entry.network_specs()
    out = dict(defaults)
    nested: dict[str, dict] = {a: {} for a in specs}
    retired = getattr(entry.cls, "retired_options", {})
    for k, v in overrides.items():
        if k in retired:
            raise ConfigError(f"model.{k} of {name!r} is gone: {retired[k]}")
        head, dot, tail = k.partition(".")
        if dot and head in specs:
            nested[head][tail] = v
            continue
        if k in specs:
            nested[k].update(_section_value(name, k, v))
            continue
        if k not in defaults:
            owner = next((a for a, spec in specs.items() if k in {f.name for f in dataclasses.fields(spec)}), None)
            if owner is not None:
                nested[owner][k] = v
                continue
            raise ConfigError(
                f"unknown key {k!r} for model {name!r}{did_you_mean(k, defaults)}; valid keys: {', '.join(defaults)}"
            )
        out[k] = _coerce(k, v, defaults[k])
    for arg, spec in specs.items():
        fields = {f.name: f.default for f in dataclasses.fields(spec)}
        merged = dict(out[arg])
        for k, v in nested[arg].items():
            if k not in fields:
                raise ConfigError(f"unknown key {arg}.{k} for model {name!r}{did_you_mean(k, fields)}; "
                                  f"valid: {', '.join(fields)}")
            merged[k] = _coerce(f"{arg}.{k}", v, fields[k])
        try:
            spec(**merged)
        except (TypeError, ValueError) as e:
            raise ConfigError(f"bad model.{arg} for {name!r}: {' '.join(str(e).split())}") from None
        out[arg] = merged
    return out


def _section_value(name: str, arg: str, value) -> dict:
    """``model.ARG``'s value as a dict of fields: a dict, a spec, or its YAML (``{dim: 64}`` from the CLI)."""
    if isinstance(value, str):
        import yaml

        try:
            value = yaml.safe_load(value)
        except yaml.YAMLError:
            value = None
    if dataclasses.is_dataclass(value):
        return dataclasses.asdict(value)
    if not isinstance(value, dict):
        raise ConfigError(f"model.{arg} of {name!r} is a section of settings: give {arg}: {{field: value, ...}} in "
                          f"YAML or model.{arg}.FIELD=VALUE")
    return value


def build(name: str, **overrides):
    """Build a registered model with its defaults updated by ``overrides``. An argument the class
    lists in ``run_folder_args`` (``vq_prior``'s tokenizer) takes a built model here; ``genzoo.build``
    (:func:`genzoo.train.run.build_model`) also loads one from a run folder."""
    return construct(name, resolve_args(name, overrides), overrides)


def construct(name: str, args: dict, overrides: dict | None = None):
    """``cls(**args)`` for the registered model ``name`` (``args`` resolved by :func:`resolve_args`), a
    constructor refusing its arguments turned into one ConfigError line naming ``overrides``."""
    entry = get_entry(name)
    overrides = args if overrides is None else overrides
    try:
        return entry.cls(**args)
    except ConfigError:
        raise
    except (ValueError, TypeError, RuntimeError, AssertionError, ZeroDivisionError, IndexError, KeyError) as e:
        # a constructor refusing its arguments (a negative width, heads that do not divide the width, ...)
        given = ", ".join(f"{k}={v!r}" for k, v in overrides.items() if k not in ("shape", "vocab_size")) or "the defaults"
        msg = " ".join(str(e).split()) or type(e).__name__
        raise ConfigError(f"cannot build model {name!r} with {given}: {msg}; see `genzoo list {name}` for its arguments") from e
