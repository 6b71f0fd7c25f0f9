"""genzoo: every major family of deep generative model on one interface.

>>> import genzoo
>>> model = genzoo.build("vae", arch="mlp", latent_dim=32)
>>> sorted(genzoo.list_models())[:3]  # doctest: +SKIP

The names below are imported on first use (PEP 562), so that ``genzoo --help`` and
``genzoo list`` answer without importing torch.
"""
from .errors import CheckpointError, ConfigError, DataError, GenzooError

__version__ = "0.1.0"

_LAZY = {
    "GenerativeModel": ("models.base", "GenerativeModel"),
    "TrainContext": ("models.base", "TrainContext"),
    "DataNeeds": ("models.data_needs", "DataNeeds"),
    "Opt": ("models.data_needs", "Opt"),
    "build": ("train.run", "build_model"),
    "list_models": ("registry", "list_models"),
    "register": ("registry", "register"),
    "bits_per_dim": ("units", "bits_per_dim"),
    "load_run": ("train.run", "load_run_api"),
}

__all__ = [
    "GenerativeModel", "TrainContext", "DataNeeds", "Opt", "build", "list_models", "register", "bits_per_dim", "load_run",
    "GenzooError", "ConfigError", "DataError", "CheckpointError", "__version__",
]


def __getattr__(name):
    if name in _LAZY:
        import importlib

        module, attr = _LAZY[name]
        value = getattr(importlib.import_module(f".{module}", __name__), attr)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'genzoo' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_LAZY))
