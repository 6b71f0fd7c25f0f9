"""From a resolved config to a trained run folder, and back (load a run for sampling/eval).

A run folder holds::

    config.yaml          the resolved config (every default filled in)
    run.json             the data set's DataSpec, genzoo version, command line
    metrics.csv, samples.png, samples/, checkpoints/, train_summary.json
"""
from __future__ import annotations

import datetime as _dt
import json
import sys
from pathlib import Path

import torch
import yaml

from .. import __version__
from ..config import dump, resolve, train_config
from ..core.checkpoint import atomic_write_text, latest_checkpoint, load_checkpoint, load_model_state
from ..core.runfolder import read_run_config, read_run_info  # noqa: F401  (re-exported: genzoo.train.run.read_run_config)
from ..errors import CheckpointError, ConfigError, DataError
from ..registry import construct, get_entry, resolve_args

#: constructor arguments that are taken from the data set when the recipe leaves them out
DATA_LINKED_ARGS = {"shape": lambda s: list(s.shape), "vocab_size": lambda s: s.vocab_size}


def load_data(data_cfg: dict, split: str):
    from ..data import load_dataset

    opts = {k: v for k, v in data_cfg.items() if k not in ("name", "root")}
    return load_dataset(data_cfg["name"], split, root=data_cfg.get("root"), **opts)


def link_data_args(raw_cfg: dict, spec) -> dict:
    """Fill model arguments that depend on the data (shape, vocab size) unless the recipe set them."""
    cfg = dict(raw_cfg)
    margs = dict(cfg.get("model_args") or {})
    sig = get_entry(cfg["model"]).signature_defaults()
    for k, fn in DATA_LINKED_ARGS.items():
        if k in sig and k not in margs and fn(spec) is not None:
            margs[k] = fn(spec)
    cfg["model_args"] = margs
    return cfg


def default_run_dir(cfg: dict) -> Path:
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    return Path("runs") / f"{cfg['model']}-{cfg['data']['name']}-{stamp}"


def prepare(raw_cfg: dict):
    """Resolve a raw recipe against its data: returns (resolved_cfg, train_data, valid_data, model)."""
    if "data" not in raw_cfg or not (raw_cfg.get("data") or {}).get("name"):
        raise ConfigError("the config names no data set; add data.name=mnist (see `genzoo list`)")
    get_entry(raw_cfg.get("model", ""))  # unknown model -> ConfigError before loading data
    train_data = load_data(raw_cfg["data"], "train")
    try:
        valid_data = load_data(raw_cfg["data"], "valid")
    except (DataError, ConfigError):
        valid_data = None
    cfg = resolve(link_data_args(raw_cfg, train_data.spec))
    tc = train_config(cfg)
    torch.manual_seed(tc.seed)  # identical initial weights on every process
    model = build_model(cfg["model"], **cfg["model_args"])
    model.check_data(train_data.spec)
    return cfg, train_data, valid_data, model


def train(raw_cfg: dict, run_dir: Path | None = None, resume: bool = False, overwrite: bool = False) -> tuple[Path, dict]:
    """Train from a raw recipe dict (or resume ``run_dir``). Returns (run_dir, summary).

    A folder that already holds a run is refused unless ``resume`` (continue it) or
    ``overwrite`` (replace it); one process at a time writes into a run folder (see runfolder.py)."""
    import contextlib
    import os

    from ..core.checkpoint import latest_checkpoint
    from ..core.runfolder import check_not_foreign, check_run_dir, run_lock
    from .trainer import Trainer

    cfg, train_data, valid_data, model = prepare(raw_cfg)
    run_dir = Path(run_dir) if run_dir is not None else default_run_dir(cfg)
    main = os.environ.get("RANK", "0") == "0"
    if main and not resume:
        check_not_foreign(run_dir)
    with run_lock(run_dir, "genzoo train") if main else contextlib.nullcontext():
        if main:
            check_run_dir(run_dir, overwrite=overwrite, resume=resume)
        init = train_config(cfg).init_from
        if init and not (resume and latest_checkpoint(run_dir) is not None):  # a checkpoint, if any, overrides init_from
            _init_weights(model, init)
        trainer = Trainer(model, train_data, train_config(cfg), run_dir, valid_data=valid_data, sample_opts=cfg["sample"])
        if trainer.is_main:
            run_dir.mkdir(parents=True, exist_ok=True)
            atomic_write_text(run_dir / "config.yaml", dump(cfg))
            info = {
                "genzoo_version": __version__,
                "data_spec": train_data.spec.to_dict(),
                "data_description": train_data.spec.describe(),
                "command": " ".join(sys.argv),
                "created": _dt.datetime.now().isoformat(timespec="seconds"),
                "processes": trainer.world,
            }
            old = run_dir / "run.json"
            if resume and old.is_file():  # keep when the run was made; say when it was continued
                with contextlib.suppress(ValueError, OSError, AttributeError, TypeError):
                    prev = json.loads(old.read_text())
                    info["created"] = prev.get("created", info["created"])
                    info["resumed"] = [*prev.get("resumed", []), info.pop("command")]
                    info["command"] = prev.get("command", "")
            atomic_write_text(run_dir / "run.json", json.dumps(info, indent=2))
        try:
            summary = trainer.fit(resume=resume)
        finally:
            trainer.close()
    return run_dir, summary


def run_checkpoint(run_dir, best: bool = True) -> tuple[Path | None, bool]:
    """The checkpoint a run folder stands for: (path or None, whether it is best/).

    The newest checkpoint, or with ``best=True`` the weights with the lowest validation loss
    when the run keeps them (``train.keep_best`` in its config.yaml: RUN/best/). ``load_run``,
    ``genzoo eval`` / ``sample`` and ``train.init_from`` all take this one."""
    run_dir = Path(run_dir)
    cfg_path = run_dir / "config.yaml"
    cfg = yaml.safe_load(cfg_path.read_text()) if cfg_path.is_file() else {}
    keep_best = bool(((cfg or {}).get("train") or {}).get("keep_best", False))
    best_path = latest_checkpoint(run_dir, "best") if (best and keep_best) else None
    if best_path is not None:
        return best_path, True
    return latest_checkpoint(run_dir), False


def _init_weights(model, source: str) -> None:
    """Load the weights of a run folder (its newest checkpoint, or best/ for a ``train.keep_best``
    run, as ``load_run``; EMA weights when kept) or of a checkpoint folder / .safetensors file
    into ``model`` (train.init_from)."""
    src = Path(source).expanduser()
    path = run_checkpoint(src)[0] if (src / "checkpoints").is_dir() else src
    if path is None or not Path(path).exists():
        raise ConfigError(f"train.init_from={source!r} is neither a run folder with checkpoints nor a checkpoint")
    ck = load_checkpoint(Path(path))
    load_model_state(model, ck["ema"] if ck["ema"] is not None else ck["model"], str(path))


def build_model(name: str, **overrides):
    """Build a registered model (:func:`genzoo.registry.build`), first loading each argument the class
    lists in ``run_folder_args`` that is given as a run folder: the run's model (EMA weights when kept,
    in eval mode, its :class:`~genzoo.data.DataSpec` as ``.data_spec``) is what the constructor receives,
    e.g. ``vq_prior``'s ``tokenizer=RUN_DIR``. ``genzoo.build`` is this function."""
    entry = get_entry(name)
    args = resolve_args(name, overrides)
    for arg, (cls, what) in getattr(entry.cls, "run_folder_args", {}).items():
        value = args.get(arg)
        if isinstance(value, (str, Path)) and str(value):
            run = read_run_config(Path(value))
            if not issubclass(get_entry(run["model"]).cls, cls):
                raise ConfigError(f"{value} is a {run['model']!r} run, not {what}")
            built, _, spec = load_run(value)
            built.data_spec = spec
            args[arg] = built
    return construct(name, args, overrides)


def load_run(run_dir, *, ema: bool = True, best: bool = True, device: str | torch.device = "cpu"):
    """Rebuild the model of a run folder and load its newest checkpoint.

    Returns (model in eval mode, resolved config, DataSpec). ``ema=True`` uses the EMA
    weights when the run kept them (the raw weights otherwise). ``best=True`` loads the
    weights with the lowest validation loss instead when the run keeps them
    (``train.keep_best`` in its config.yaml: RUN/best/); ``model.loaded_from`` says which were loaded.
    """
    from ..data.base import DataSpec

    run_dir = Path(run_dir)
    cfg = read_run_config(run_dir)
    info = read_run_info(run_dir)
    sd = dict(info["data_spec"])
    try:
        sd["shape"] = tuple(sd["shape"])
        sd["value_range"] = tuple(sd["value_range"]) if sd["value_range"] is not None else None
        spec = DataSpec(**sd)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"{run_dir / 'run.json'} holds a data_spec this genzoo cannot read ({e}); "
                          "restore the file or start a new run") from None
    try:
        model = build_model(cfg["model"], **cfg["model_args"])
    except (TypeError, ValueError) as e:
        if isinstance(e, ConfigError):
            raise
        raise ConfigError(f"{run_dir / 'config.yaml'} does not build a {cfg['model']!r} model ({e}); "
                          "restore the file or start a new run") from None
    path, is_best = run_checkpoint(run_dir, best)
    if path is None:
        raise CheckpointError(f"{run_dir} has no checkpoint yet; train it first (or wait for train.ckpt_every steps)")
    ck = load_checkpoint(path)
    state = ck["ema"] if (ema and ck["ema"] is not None) else ck["model"]
    load_model_state(model, state, str(path))
    model.to(device).eval()
    model.loaded_from = {"checkpoint": str(path), "step": ck["step"], "weights": "ema" if (ema and ck["ema"] is not None) else "raw"}
    if is_best:
        model.loaded_from["best_valid_loss"] = float(ck["extra"]["valid_loss"])
    return model, cfg, spec


def load_run_api(path, *, device="cpu", weights: str = "ema", best: bool = True):
    """The trained model of a run folder, in eval mode: ``genzoo.load_run("runs/vae")``.

    Args:
        path: a run folder written by ``genzoo train``.
        device: "cpu" (default), "cuda", "mps" or "auto".
        weights: "ema" (the EMA weights when the run kept them, else the raw ones) or "raw".
        best: load RUN/best/ (lowest validation loss) when the run keeps it (``train.keep_best``).

    Returns the model; ``model.run_config`` is the run's resolved config, ``model.data_spec`` its
    DataSpec and ``model.loaded_from`` says which checkpoint and weights were loaded.
    """
    if weights not in ("ema", "raw"):
        raise ConfigError(f"weights must be 'ema' or 'raw', got {weights!r}")
    from ..devices import resolve_device

    model, cfg, spec = load_run(path, ema=weights == "ema", best=best, device=resolve_device(device))
    model.run_config, model.data_spec = cfg, spec
    return model
