"""Numeric precision of training, sampling and evaluation: ``fp32``, ``bf16`` (autocast; the
sampler and optimiser arithmetic stay float32) or ``auto``, which is bf16 only where the device
runs it fast (:func:`resolve_precision`)."""
from __future__ import annotations

from ..errors import ConfigError  # no torch at import time: the CLI's --help and config checks read PRECISIONS

#: train.precision, sample / eval precision
PRECISIONS = ("fp32", "bf16", "auto")


def cpu_has_fast_bf16() -> bool:
    """Whether this CPU runs bfloat16 autocast fast: oneDNN's bf16 kernels need AVX-512 (native with AVX512-BF16 or
    AMX); on AVX2-only CPUs (most laptops, AMD Zen 1-3) torch emulates bf16 and autocast is several times slower than
    float32."""
    import torch

    return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())


def resolve_precision(precision: str, device: str | None = None) -> str:
    """The precision a run trains in: ``"fp32"`` or ``"bf16"`` as given; ``"auto"`` is bf16 autocast where it is
    fast (a CUDA GPU with bf16, or a CPU with AVX-512 / AMX, see :func:`cpu_has_fast_bf16`) and fp32 elsewhere.

    Args:
        precision: "fp32" | "bf16" | "auto" (``train.precision``).
        device: "cuda" or "cpu"; None = CUDA when a GPU is visible, else CPU.
    """
    if precision in ("fp32", "bf16"):
        return precision
    if precision not in PRECISIONS:
        raise ConfigError(f"bad value for train.precision: {precision!r}; valid: {', '.join(PRECISIONS)}")
    import torch

    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    return "bf16" if cpu_has_fast_bf16() else "fp32"
