"""Moved into the package: genzoo.bench.diffusers_ref (the leaderboard runs it as a peer)."""
from genzoo.bench.diffusers_ref import *  # noqa: F401,F403
from genzoo.bench.diffusers_ref import BATCH, EMA_DECAY, LR, MIN_LR_RATIO, WARMUP, load_ema, make_scheduler, make_unet, sample, train  # noqa: F401
