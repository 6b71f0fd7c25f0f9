"""Reflow pairs (x_0, z) on disk: one safetensors file with tensors ``x`` and ``z`` and, in its
metadata, the data config and DataSpec of the data the generating model was trained on
(written by `genzoo reflow`, read by the ``pairs`` data set). No pickle."""
from __future__ import annotations

import json
from pathlib import Path

import torch

from ..errors import DataError


def save_pairs(path, x: torch.Tensor, z: torch.Tensor, source_data: dict, source_spec: dict) -> Path:
    """Write the pairs atomically as safetensors (tensors x, z; metadata: the source data config
    and DataSpec, so that the ``pairs`` data set evaluates against the source's test split)."""
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    save_file({"x": x.contiguous(), "z": z.contiguous()}, str(tmp),
              metadata={"source_data": json.dumps(source_data), "source_spec": json.dumps(source_spec)})
    import os

    umask = os.umask(0o022)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # safetensors writes 0600 whatever the umask
    tmp.replace(path)
    return path


def load_pairs(path) -> tuple[torch.Tensor, torch.Tensor, dict, dict]:
    from safetensors import safe_open

    path = Path(path).expanduser()
    if not path.is_file():
        raise DataError(f"reflow pairs file {path} does not exist; make it with `genzoo reflow RUN_DIR`")
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata() or {}
        if "x" not in f.keys() or "z" not in f.keys() or "source_data" not in meta:
            raise DataError(f"{path} is not a genzoo reflow pairs file (needs tensors x, z and source metadata)")
        x, z = f.get_tensor("x"), f.get_tensor("z")
    return x, z, json.loads(meta["source_data"]), json.loads(meta["source_spec"])


