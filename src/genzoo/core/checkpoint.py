"""Checkpoints that never lose work and never unpickle.

Layout of a run directory's checkpoints::

    RUN_DIR/checkpoints/step-000500/model.safetensors   model weights
                                    ema.safetensors     EMA weights (if EMA is on)
                                    state.safetensors   every other tensor: optimiser moments, RNG states
                                    state.json          step, config, optimiser hyper-parameters, tensor index
    RUN_DIR/checkpoints/LATEST                          name of the newest complete checkpoint

A checkpoint is written into a temporary folder, fsync'ed, renamed into place, and only
then does ``LATEST`` (written to a temp file + ``os.replace``) point at it. A run killed at
any moment therefore leaves either the previous checkpoint or the new one, never a torn
one. Loading uses ``safetensors.torch.load_file`` and ``json``: no pickle is ever loaded.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from ..errors import CheckpointError

FORMAT_VERSION = 1


def _umask() -> int:
    old = os.umask(0o022)
    os.umask(old)
    return old


def file_mode() -> int:
    """The mode a plain ``open()`` gives a new file under the current umask (mkstemp's is always 0600)."""
    return 0o666 & ~_umask()


def dir_mode() -> int:
    """The mode ``mkdir`` gives a new folder under the current umask (mkdtemp's is always 0700)."""
    return 0o777 & ~_umask()


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file's bytes (recorded in state.json for every tensor file, checked on load)."""
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically (temp file in the same folder + fsync + rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fchmod(f.fileno(), file_mode())
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


# -- nested state <-> (json tree, flat tensors) -----------------------------------
def flatten_state(obj, prefix: str, tensors: dict):
    """Replace tensors in a nested dict/list by {"__tensor__": key}; collect them in ``tensors``."""
    if isinstance(obj, torch.Tensor):
        key = prefix
        tensors[key] = obj.detach().cpu().contiguous().clone()
        return {"__tensor__": key}
    if isinstance(obj, dict):
        return {"__dict__": [[_key(k), flatten_state(v, f"{prefix}.{k}", tensors)] for k, v in obj.items()]}
    if isinstance(obj, (list, tuple)):
        out = [flatten_state(v, f"{prefix}.{i}", tensors) for i, v in enumerate(obj)]
        return {"__tuple__": out} if isinstance(obj, tuple) else out
    if isinstance(obj, float) and (obj != obj or obj in (float("inf"), float("-inf"))):
        return {"__float__": repr(obj)}
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    raise TypeError(f"cannot store {type(obj).__name__} at {prefix} in a checkpoint")


def _key(k):
    return {"__int__": k} if isinstance(k, int) else k


def _unkey(k):
    return k["__int__"] if isinstance(k, dict) else k


def unflatten_state(obj, tensors: dict):
    if isinstance(obj, dict):
        if "__tensor__" in obj:
            key = obj["__tensor__"]
            if key not in tensors:
                raise CheckpointError(f"checkpoint state refers to missing tensor {key!r}; the checkpoint is incomplete")
            return tensors[key]
        if "__dict__" in obj:
            return {_unkey(k): unflatten_state(v, tensors) for k, v in obj["__dict__"]}
        if "__tuple__" in obj:
            return tuple(unflatten_state(v, tensors) for v in obj["__tuple__"])
        if "__float__" in obj:
            return float(obj["__float__"])
        return {k: unflatten_state(v, tensors) for k, v in obj.items()}
    if isinstance(obj, list):
        return [unflatten_state(v, tensors) for v in obj]
    return obj


# -- save / load ---------------------------------------------------------------------
def _state_tensors(state_dict: dict) -> dict:
    return {k: v.detach().cpu().contiguous().clone() for k, v in state_dict.items()}


def save_checkpoint(ckpt_root: Path, step: int, *, model_state: dict, ema_state: dict | None,
                    extra: dict, keep: int = 1) -> Path:
    """Write checkpoint ``step`` atomically under ``ckpt_root``; returns its folder.

    ``extra`` is a nested dict (optimiser states, RNG states, counters, config); its tensors
    go to state.safetensors and the rest to state.json.
    """
    ckpt_root = Path(ckpt_root)
    ckpt_root.mkdir(parents=True, exist_ok=True)
    name = f"step-{step:07d}"
    final = ckpt_root / name
    tmp = Path(tempfile.mkdtemp(dir=ckpt_root, prefix=f".{name}."))
    try:
        os.chmod(tmp, dir_mode())
        save_file(_state_tensors(model_state), str(tmp / "model.safetensors"))
        if ema_state is not None:
            save_file(_state_tensors(ema_state), str(tmp / "ema.safetensors"))
        tensors: dict = {}
        tree = flatten_state(extra, "s", tensors)
        save_file(tensors, str(tmp / "state.safetensors"))
        files = {f.name: sha256_file(f) for f in sorted(tmp.glob("*.safetensors"))}
        meta = {"format": FORMAT_VERSION, "step": step, "has_ema": ema_state is not None, "sha256": files, "state": tree}
        (tmp / "state.json").write_text(json.dumps(meta))
        for f in tmp.iterdir():
            os.chmod(f, file_mode())  # safetensors and mkstemp write 0600 whatever the umask
            with open(f, "rb") as fh:
                os.fsync(fh.fileno())
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    atomic_write_text(ckpt_root / "LATEST", name + "\n")
    # prune old checkpoints (never the one LATEST points to)
    olds = sorted(p for p in ckpt_root.glob("step-*") if p.is_dir() and p.name != name)
    for p in olds[: max(0, len(olds) - (keep - 1))]:
        shutil.rmtree(p, ignore_errors=True)
    for p in ckpt_root.glob(".step-*"):  # leftovers of killed writes
        shutil.rmtree(p, ignore_errors=True)
    return final


def latest_checkpoint(run_dir: Path, sub: str = "checkpoints") -> Path | None:
    """Folder of the newest complete checkpoint of a run, or None if it has none.

    ``sub="best"``: the weights with the lowest validation loss (``train.keep_best``)."""
    root = Path(run_dir) / sub
    ptr = root / "LATEST"
    if not ptr.is_file():
        return None
    try:
        name = ptr.read_text().strip()
    except (UnicodeDecodeError, OSError):
        name = ""
    path = root / name
    if not re.fullmatch(r"step-\d+", name):
        kept = sorted(p.name for p in root.glob("step-*") if p.is_dir())
        fix = f"`echo {kept[-1]} > {ptr}` points it at the newest kept checkpoint" if kept else f"remove {ptr} to start over"
        raise CheckpointError(f"{ptr} is corrupt (it names no checkpoint folder); {fix}")
    if not path.is_dir():
        raise CheckpointError(f"{ptr} points at {name}, which is missing; the run folder was edited by hand. "
                              f"Remove {ptr} to start over or restore {path}")
    return path


def _load_tensors(path: Path) -> dict:
    if not path.is_file():
        raise CheckpointError(f"checkpoint file {path} is missing; the checkpoint is incomplete (restore it or start a new run)")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as e:
        hint = fallback_hint(path.parent) if path.parent.name.startswith("step-") else "restore it or start a new run"
        raise CheckpointError(f"checkpoint file {path} is corrupt ({str(e).splitlines()[0]}); {hint}") from e


def _verify(path: Path, meta: dict) -> None:
    """Check every tensor file against the sha256 that state.json recorded when it was written."""
    for name, digest in (meta.get("sha256") or {}).items():
        f = path / name
        if not f.is_file():
            raise CheckpointError(f"checkpoint file {f} is missing; {fallback_hint(path)}")
        if sha256_file(f) != digest:
            raise CheckpointError(f"checkpoint file {f} is corrupt (its sha256 differs from the one recorded when it was "
                                  f"written); {fallback_hint(path)}")


def verified(path: Path) -> bool:
    """Whether checkpoint folder ``path`` is complete and its files match their recorded hashes."""
    try:
        meta = json.loads((Path(path) / "state.json").read_text())
        _verify(Path(path), meta)
        return all((Path(path) / n).is_file() for n in ("model.safetensors", "state.safetensors"))
    except (OSError, ValueError, CheckpointError):
        return False


def fallback_hint(path: Path) -> str:
    """How to fall back from a bad checkpoint folder to the newest older one that verifies."""
    path = Path(path)
    older = sorted((p for p in path.parent.glob("step-*") if p.is_dir() and p.name < path.name), reverse=True)
    good = next((p for p in older if verified(p)), None)
    if good is None:
        return "no older checkpoint is kept; restore the file from a backup or start a new run"
    return (f"the previous good checkpoint is {good}: fall back to it with "
            f"`rm -r {path} && echo {good.name} > {path.parent / 'LATEST'}`")


def load_checkpoint(path: Path) -> dict:
    """Read a checkpoint folder: {'step', 'model', 'ema' (or None), 'extra'}. Raises CheckpointError."""
    path = Path(path)
    if path.suffix == ".safetensors":  # a bare weights file
        return {"step": None, "model": _load_tensors(path), "ema": None, "extra": {}}
    meta_path = path / "state.json"
    if not meta_path.is_file():
        raise CheckpointError(f"{path} is not a genzoo checkpoint (no state.json)")
    try:
        meta = json.loads(meta_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{meta_path} is corrupt ({e}); {fallback_hint(path)}") from e
    if meta.get("format") != FORMAT_VERSION:
        raise CheckpointError(f"{path} has checkpoint format {meta.get('format')}, this genzoo reads {FORMAT_VERSION}")
    _verify(path, meta)
    tensors = _load_tensors(path / "state.safetensors")
    return {
        "step": meta["step"],
        "model": _load_tensors(path / "model.safetensors"),
        "ema": _load_tensors(path / "ema.safetensors") if meta.get("has_ema") else None,
        "extra": unflatten_state(meta["state"], tensors),
    }


def checkpoint_train_time(path: Path) -> float:
    """Seconds of training that checkpoint ``path`` records (0.0 if it does not say); reads only state.json."""
    try:
        meta = json.loads((Path(path) / "state.json").read_text())
        for k, v in (meta.get("state") or {}).get("__dict__", []):
            if k == "train_time_s":
                return float(v)
    except (OSError, ValueError, TypeError, AttributeError):
        pass
    return 0.0


def _retired(model, name: str) -> bool:
    return any(name == r or (r.endswith(".") and name.startswith(r)) for r in model.retired_state)


def retired_keys(model: torch.nn.Module, keys) -> set[str]:
    """The entries of ``keys`` (state-dict names for ``model``) that a module inside it lists in its
    ``retired_state`` (names, or prefixes ending in "."; a :class:`genzoo.GenerativeModel` declares them):
    saved by an earlier version, dropped on loading."""
    owners = [(name + "." if name else "", m) for name, m in model.named_modules() if getattr(m, "retired_state", ())]
    return {k for k in keys for p, m in owners if k.startswith(p) and _retired(m, k[len(p):])}


def load_model_state(model: torch.nn.Module, state: dict, where: str) -> None:
    """load_state_dict with an error that says what does not match, instead of a traceback.
    Entries an earlier version saved and the model retired (``retired_state``) are dropped."""
    old = retired_keys(model, state)
    state = {k: v for k, v in state.items() if k not in old} if old else state
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shape = [k for k in own if k in state and tuple(own[k].shape) != tuple(state[k].shape)]
    if missing or unexpected or shape:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing (e.g. {missing[0]})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected (e.g. {unexpected[0]})")
        if shape:
            k = shape[0]
            parts.append(f"{len(shape)} with other shapes (e.g. {k}: {tuple(state[k].shape)} vs {tuple(own[k].shape)})")
        raise CheckpointError(
            f"checkpoint {where} does not match this model: " + "; ".join(parts)
            + ". Use the run's own config.yaml, or start a new run folder"
        )
    model.load_state_dict(state)
