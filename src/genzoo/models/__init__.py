"""Model families. :func:`load_all` imports every family module, which registers its models.

Family modules are imported lazily (by the registry) so that ``import genzoo`` stays
fast and ``nn/`` / ``models/base`` can be imported without pulling in every family.
"""
from __future__ import annotations

import importlib

from .base import GenerativeModel  # noqa: F401

#: every family module under genzoo.models; add new families here
FAMILY_MODULES: list[str] = ["vae", "diffusion"]


def load_all() -> None:
    for name in FAMILY_MODULES:
        importlib.import_module(f"{__name__}.{name}")
