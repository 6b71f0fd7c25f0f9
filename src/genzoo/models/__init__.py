"""Model families. :func:`load_all` imports every family module, which registers its models.

Family modules are imported lazily (by the registry) so that ``import genzoo`` stays
fast and ``nn/`` / ``models/base`` can be imported without pulling in every family.
"""
from __future__ import annotations

import importlib
import pkgutil

from .base import GenerativeModel  # noqa: F401

#: every family module under genzoo.models (each module or sub-package but ``base``), found on disk:
#: a new family registers itself by existing
FAMILY_MODULES: list[str] = sorted(m.name for m in pkgutil.iter_modules(__path__) if m.name != "base" and not m.name.startswith("_"))


def load_all() -> None:
    """Import every family module, and every module of a family sub-package (models/diffusion/,
    models/flows/): a new file there registers its models by existing, as a top-level family does."""
    for name in FAMILY_MODULES:
        mod = importlib.import_module(f"{__name__}.{name}")
        for sub in pkgutil.iter_modules(getattr(mod, "__path__", None) or []):
            if not sub.name.startswith("_"):
                importlib.import_module(f"{mod.__name__}.{sub.name}")
