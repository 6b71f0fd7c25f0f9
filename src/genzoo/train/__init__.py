"""Training: the one Trainer, EMA, atomic safetensors checkpoints, run folders."""
from ..core.checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint  # noqa: F401
from .ema import EMA  # noqa: F401
from .trainer import Trainer  # noqa: F401
