"""Moved to :mod:`genzoo.core.checkpoint` (the bottom layer). This name is that module itself, so imports
written before (and monkeypatches of them) keep working."""
import sys

from ..core import checkpoint as _moved

sys.modules[__name__] = _moved
