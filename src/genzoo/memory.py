"""Keep freed memory in the process instead of handing it back to the OS on every step.

Why: glibc's malloc serves blocks above its mmap threshold (at most 32 MB) with fresh ``mmap``
pages and unmaps them on ``free``. A sampling loop allocates the same large activations at every
network call (a 1.2 M-parameter UNet at 400 images: about 40 MB per feature map), so each call
page-faults its memory in again: on a 2-core CPU the kernel time reached half the user time and
the cost per image rose by 1.5-2x with the chunk size (issue 34; benchmarks/sampling_speed.py).
With ``M_MMAP_MAX = 0`` every block comes from the heap, and ``M_TRIM_THRESHOLD`` = 1 GiB keeps
freed heap memory for reuse, so the cost per image stays flat in the chunk size.

The price: the process keeps its peak memory until it exits. genzoo applies it for sampling and
evaluation (``genzoo sample`` / ``eval``, :func:`genzoo.eval.runner.draw_samples`,
:func:`genzoo.eval.runner.run_evaluation`), not for training. ``GENZOO_MALLOC=default`` turns it
off. A no-op where the C library is not glibc (macOS, musl, Windows).
"""
from __future__ import annotations

import os

_M_TRIM_THRESHOLD, _M_MMAP_MAX = -1, -4
_applied: bool | None = None


def keep_freed_memory() -> bool:
    """Apply the allocator settings above once per process; True if they are in effect."""
    global _applied
    if _applied is not None:
        return _applied
    _applied = False
    if os.environ.get("GENZOO_MALLOC", "").lower() == "default":
        return False
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc
        return False
    _applied = bool(mallopt(_M_MMAP_MAX, 0)) and bool(mallopt(_M_TRIM_THRESHOLD, 1 << 30))
    return _applied


def memory_setting() -> str:
    """What a result should record: "kept (glibc mallopt)" or "default"."""
    return "kept (glibc mallopt)" if _applied else "default"
