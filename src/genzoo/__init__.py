"""genzoo: every major family of deep generative model on one interface.

>>> import genzoo
>>> model = genzoo.build("vae", arch="mlp", latent_dim=32)
>>> sorted(genzoo.list_models())[:3]  # doctest: +SKIP
"""
from .errors import CheckpointError, ConfigError, DataError, GenzooError
from .models.base import GenerativeModel
from .registry import build, list_models, register
from .units import bits_per_dim

__version__ = "0.1.0"
__all__ = [
    "GenerativeModel", "build", "list_models", "register", "bits_per_dim",
    "GenzooError", "ConfigError", "DataError", "CheckpointError", "__version__",
]
