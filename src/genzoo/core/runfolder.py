"""Run folders that never lose work: one writer at a time, and no silent replacement.

* :func:`check_run_dir` refuses to start a new run in a folder that already holds one
  (a checkpoint or a finished run): continue it with ``--resume`` or replace it with
  ``--overwrite``. A folder holding files that genzoo did not write is never used.
* :func:`clear_run` is what ``--overwrite`` does: it deletes only the entries a run
  folder is made of (:data:`RUN_ENTRIES`), never anything else.
* :func:`run_lock` is an OS-level lock (``fcntl.flock`` on ``RUN/.lock``) held by the one
  process that writes into the folder (``genzoo train``, ``reflow``, ``eval``). The
  kernel drops it when the process dies, even by SIGKILL, so no stale lock is ever left.
  It is re-entrant within a process (reflow holds it while it trains).
* :func:`read_run_config` / :func:`read_run_info` read RUN/config.yaml and RUN/run.json,
  a missing or corrupt file refused in one line that names it.
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import sys
from pathlib import Path

import yaml

from ..errors import ConfigError

#: what a run folder is made of (everything genzoo train / sample / eval write into it)
RUN_ENTRIES = {
    "config.yaml", "run.json", "metrics.csv", "metrics.csv.tmp", "metrics.json", "samples", "samples.png",
    "samples.txt", "sample.png", "sample.txt", "checkpoints", "best", "tb", "train_summary.json", "train.log",
    "reconstructions.png", "demo_metrics.json", "pairs.safetensors", "pairs.json", "reflow.json", ".lock",
}


def holds_run(run_dir: Path) -> str | None:
    """A one-phrase description of the run in ``run_dir`` if it holds work that would be lost, else None."""
    from ..errors import CheckpointError
    from .checkpoint import latest_checkpoint

    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        return None
    try:
        ck = latest_checkpoint(run_dir)
    except CheckpointError:  # a LATEST pointing nowhere still means there was a run here
        ck = run_dir / "checkpoints"
    model = "a run"
    cfg = run_dir / "config.yaml"
    if cfg.is_file():
        try:
            import yaml

            model = f"a {(yaml.safe_load(cfg.read_text()) or {}).get('model', '?')} run"
        except Exception:
            pass
    if ck is not None:
        step = str(int(ck.name.split("-")[-1])) if ck.name.startswith("step-") else "?"
        return f"{model} with a checkpoint at step {step}"
    if (run_dir / "train_summary.json").is_file() or (run_dir / "best").is_dir():
        return f"{model} that finished"
    return None


def check_run_dir(run_dir: Path, *, overwrite: bool = False, resume: bool = False) -> None:
    """Refuse a folder that a new run would damage; with ``overwrite`` clear the old run first.

    Raises ConfigError (one line, naming ``--resume`` and ``--overwrite``)."""
    run_dir = Path(run_dir)
    if resume or not run_dir.exists():
        return
    check_not_foreign(run_dir)
    what = holds_run(run_dir)
    if what is None:
        return
    if not overwrite:
        raise ConfigError(f"{run_dir} already holds {what}; continue it with `genzoo train --resume {run_dir}` "
                          "(train.* overrides allowed), replace it with --overwrite, or pick another --run-dir")
    clear_run(run_dir)


def check_not_foreign(run_dir: Path) -> None:
    """Refuse a folder that holds files genzoo did not write (before anything, even the lock, is written)."""
    run_dir = Path(run_dir)
    if not run_dir.exists():
        return
    if not run_dir.is_dir():
        raise ConfigError(f"--run-dir {run_dir} is a file, not a folder; pick another --run-dir")
    foreign = sorted(p.name for p in run_dir.iterdir() if p.name not in RUN_ENTRIES)
    if foreign:
        raise ConfigError(f"{run_dir} is not empty and is not a genzoo run folder (it holds {foreign[0]!r}"
                          f"{f' and {len(foreign) - 1} more' if len(foreign) > 1 else ''}); pick a new or empty --run-dir")


def clear_run(run_dir: Path) -> None:
    """Delete the run in ``run_dir`` (only the entries of :data:`RUN_ENTRIES`; the lock file stays)."""
    for name in RUN_ENTRIES - {".lock"}:
        p = Path(run_dir) / name
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p)
        elif p.exists() or p.is_symlink():
            p.unlink()


_HELD: dict[str, list] = {}  # resolved lock path -> [fd, depth]


@contextlib.contextmanager
def run_lock(run_dir: Path, what: str = "genzoo"):
    """Hold the one-writer lock of ``run_dir`` (created if needed) for the ``with`` block.

    A second process asking for it gets a ConfigError naming the process that holds it."""
    import fcntl

    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    path = str((run_dir / ".lock").resolve())
    if path in _HELD:  # re-entrant within this process
        _HELD[path][1] += 1
        try:
            yield
        finally:
            _HELD[path][1] -= 1
        return
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        try:
            holder = os.pread(fd, 4096, 0).decode(errors="replace").strip() or "another process"
        finally:
            os.close(fd)
        raise ConfigError(f"{run_dir} is in use by {holder}; wait for it to finish (or stop it), "
                          "or pick another folder") from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"process {os.getpid()} ({what}: {' '.join(sys.argv[:4])})\n".encode(), 0)
    _HELD[path] = [fd, 1]
    try:
        yield
    finally:
        _HELD[path][1] -= 1
        if _HELD[path][1] == 0:
            del _HELD[path]
            with contextlib.suppress(OSError):
                os.ftruncate(fd, 0)
            os.close(fd)  # closing the descriptor releases the flock


def read_run_config(run_dir: Path) -> dict:
    """RUN/config.yaml as a dict; a missing, empty or corrupt file is a ConfigError naming it."""
    p = Path(run_dir) / "config.yaml"
    if not Path(run_dir).is_dir():
        raise ConfigError(f"run folder {run_dir} does not exist; give a folder made by `genzoo train`")
    if not p.is_file():
        raise ConfigError(f"{run_dir} is not a genzoo run folder (no config.yaml)")
    try:
        cfg = yaml.safe_load(p.read_text())
    except (yaml.YAMLError, UnicodeDecodeError, ValueError) as e:
        raise ConfigError(f"{p} is corrupt ({' '.join(str(e).split())[:120]}); restore the file or "
                          "start a new run") from None
    if not isinstance(cfg, dict) or not isinstance(cfg.get("model"), str) or not isinstance(cfg.get("model_args", {}), dict) \
            or not isinstance(cfg.get("data"), dict):
        raise ConfigError(f"{p} is empty or not a genzoo run config (it needs model, model_args and data sections); "
                          "restore the file or start a new run")
    return cfg


def read_run_info(run_dir: Path) -> dict:
    """RUN/run.json as a dict (its data_spec checked); a missing or corrupt file is a ConfigError naming it."""
    p = Path(run_dir) / "run.json"
    if not p.is_file():
        raise ConfigError(f"{run_dir} has no run.json; it was not written by `genzoo train`")
    try:
        info = json.loads(p.read_text())
    except (ValueError, UnicodeDecodeError) as e:
        raise ConfigError(f"{p} is corrupt ({' '.join(str(e).split())[:120]}); restore it or start a new run") from None
    sd = info.get("data_spec") if isinstance(info, dict) else None
    if not isinstance(sd, dict) or not isinstance(sd.get("shape"), list) or "value_range" not in sd:
        raise ConfigError(f"{p} is empty or holds no valid data_spec; restore it or start a new run")
    return info
