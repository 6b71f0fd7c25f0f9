"""The one device rule: ``--device`` of ``genzoo sample`` / ``eval`` and ``genzoo.load_run(device=...)``."""
from __future__ import annotations

import torch

from .errors import ConfigError, did_you_mean

DEVICES = ("auto", "cpu", "cuda", "mps")


def resolve_device(name: str | None = "cpu") -> torch.device:
    """The torch device for ``--device``: "auto" = cuda if available, else mps if available, else
    cpu; "cpu"; "cuda" / "cuda:N"; "mps". An unavailable device raises a one-line ConfigError."""
    name = str(name or "cpu").strip().lower()
    mps_ok = bool(getattr(torch.backends, "mps", None) and torch.backends.mps.is_available())
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "mps" if mps_ok else "cpu")
    base, _, idx = name.partition(":")
    if base not in DEVICES[1:] or (idx and (base != "cuda" or not idx.isdigit())):
        raise ConfigError(f"unknown device {name!r}{did_you_mean(name, DEVICES)}; valid: {', '.join(DEVICES)} (or cuda:N)")
    if base == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"--device {name}: no CUDA device is available here (torch.cuda.is_available() is False, "
                              f"torch {torch.__version__}); use --device cpu or --device auto")
        if idx and int(idx) >= torch.cuda.device_count():
            raise ConfigError(f"--device {name}: only {torch.cuda.device_count()} CUDA device(s) here; use cuda:0 .. "
                              f"cuda:{torch.cuda.device_count() - 1} or --device auto")
    if base == "mps" and not mps_ok:
        raise ConfigError(f"--device mps: Apple's MPS backend is not available here; use --device cpu or --device auto")
    return torch.device(name)
