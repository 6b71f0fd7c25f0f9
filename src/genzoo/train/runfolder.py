"""Moved to :mod:`genzoo.core.runfolder` (the bottom layer). This name is that module itself, so imports
written before (and monkeypatches of them) keep working."""
import sys

from ..core import runfolder as _moved

sys.modules[__name__] = _moved
