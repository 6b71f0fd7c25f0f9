"""Run configuration: a YAML recipe + ``key=value`` overrides -> one resolved, checked config.

A recipe has four sections::

    model: vae                 # registry name
    model_args: {...}          # constructor keywords (checked against the signature)
    data: {name: mnist, ...}   # genzoo.data.load_dataset name + options
    train: {...}               # TrainConfig fields
    sample: {...}              # keyword options for model.sample in grids / `genzoo sample`
    eval: {...}                # EvalConfig fields (metrics `genzoo eval` computes by default)

Overrides: ``train.steps=500``, ``data.binarize=dynamic``, ``model.latent_dim=16`` (model.*
goes to model_args), or a bare ``latent_dim=16`` when the key exists in exactly one
section (model args, then train, then data, then eval). Values are parsed as YAML
(``1e-3``, ``true``, ``[1, 28, 28]``). Unknown sections, keys and bad values raise
ConfigError naming the valid choices; nothing is silently ignored.
"""
from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from .core.precision import PRECISIONS  # noqa: F401  (train.precision; "auto" resolved by core.precision)
from .errors import ConfigError, did_you_mean
from .registry import _coerce

CONFIG_DIR = Path(__file__).resolve().parent / "configs"
SECTIONS = ("model", "model_args", "data", "train", "sample", "eval")


@dataclass
class TrainConfig:
    """Trainer settings. Every field can be set in a recipe's ``train:`` section or as ``train.<field>=value``."""

    steps: int = 2000                 # optimisation steps (one step = one global batch per player)
    batch_size: int = 128             # global batch (split across processes)
    lr: float = 1e-3
    optimizer: str = "adam"           # adam | adamw | sgd | lion (Chen et al. 2023; decoupled weight decay)
    betas: tuple = ()                 # () = the optimiser's default: adam/adamw (0.9, 0.999), lion (0.9, 0.99)
    weight_decay: float = 0.0
    schedule: str = "constant"        # constant | cosine | linear (after warm-up)
    warmup_steps: int = 0             # linear learning-rate warm-up from 0
    min_lr_ratio: float = 0.0         # floor of cosine/linear decay, as a fraction of lr
    grad_clip: float = 0.0            # max global grad norm; 0 = off
    ema_decay: float = 0.0            # 0 = off; decay ramps as min(ema_decay, (1+t)/(10+t))
    precision: str = "fp32"           # fp32 | bf16 (autocast) | auto (bf16 where it is fast: CUDA, AVX-512/AMX CPUs)
    seed: int = 0
    log_every: int = 50               # metrics.csv row every N steps
    sample_every: int = 0             # sample grid PNG every N steps; 0 = only at the end
    num_samples: int = 64             # images in a grid
    ckpt_every: int = 500             # checkpoint every N steps (and at the end); 0 = only at the end
    keep_checkpoints: int = 2         # how many checkpoints to keep on disk (>= 2 keeps one to fall back to)
    init_from: str = ""               # start from the weights of this run folder / checkpoint (EMA if kept); "" = fresh
    time_budget: float = 0.0          # seconds; stop (and checkpoint) when spent; the lr schedule then
                                      # anneals over whichever ends first, steps or time; 0 = off
    max_loss: float = 1e12            # |loss| above this counts as divergence
    valid_every: int = 0              # validation loss every N steps; 0 = off
    valid_batches: int = 10           # batches per validation pass
    keep_best: bool = False           # early stopping: keep the weights (EMA if kept) with the lowest validation
                                      # loss in RUN/best/; eval and sample then load them (needs valid_every)
    progress: bool = True             # tqdm progress bar


@dataclass
class EvalConfig:
    """Defaults for ``genzoo eval`` (overridable on its command line)."""

    metrics: tuple = ("nll",)         # nll, fid, kid, pr
    split: str = "test"
    nll_limit: int = 0                # evaluate NLL on a fixed random subset of N examples; 0 = all
    n_samples: int = 10000            # samples for fid/kid/pr
    log_prob: dict = field(default_factory=dict)   # options for model.log_prob (e.g. {k: 100})
    sample: dict = field(default_factory=dict)     # options for model.sample when drawing for fid/kid/pr
    batch_size: int = 256


def _dataclass_section(cls, values: dict, section: str):
    fields = {f.name: f for f in dataclasses.fields(cls)}
    defaults = cls()
    out = {}
    for k, v in (values or {}).items():
        if k not in fields:
            raise ConfigError(
                f"unknown key {section}.{k}{did_you_mean(k, fields)}; valid keys: {', '.join(fields)}"
            )
        d = getattr(defaults, k)
        if v is None and d is not None:
            raise ConfigError(f"{section}.{k} has no value (an empty or null YAML value); give one like {d!r}")
        out[k] = v if isinstance(d, dict) else _coerce(f"{section}.{k}", v, d)
    return cls(**out)


def load_recipe(path_or_name: str | Path) -> dict:
    """Read a YAML recipe by path or by name from the packaged configs/ folder."""
    p = Path(path_or_name)
    if not p.is_file():
        cand = CONFIG_DIR / f"{path_or_name}.yaml"
        if cand.is_file():
            p = cand
        else:
            names = sorted(q.stem for q in CONFIG_DIR.glob("*.yaml"))
            raise ConfigError(
                f"config {path_or_name!r} not found{did_you_mean(str(path_or_name), names)}; "
                f"give a YAML path or one of: {', '.join(names)}"
            )
    try:
        cfg = yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{p} is not valid YAML: {str(e).splitlines()[0]}") from e
    if not isinstance(cfg, dict):
        raise ConfigError(f"{p} must hold a mapping with sections {', '.join(SECTIONS)}")
    return cfg


def default_recipe_for(model: str) -> dict:
    """The packaged recipe ``configs/<model>.yaml`` if there is one, else a bare config."""
    p = CONFIG_DIR / f"{model}.yaml"
    if p.is_file():
        return load_recipe(p)
    return {"model": model}


def parse_overrides(items: list[str]) -> list[tuple[str, object]]:
    out = []
    for it in items:
        if "=" not in it:
            raise ConfigError(f"expected key=value, got {it!r} (e.g. train.steps=500)")
        k, v = it.split("=", 1)
        k = k.strip()
        if not k:
            raise ConfigError(f"empty key in {it!r}")
        try:
            val = yaml.safe_load(v) if v != "" else ""
        except yaml.YAMLError:
            val = v
        out.append((k, val))
    return out


def apply_overrides(cfg: dict, overrides: list[tuple[str, object]]) -> dict:
    """Apply dotted/bare overrides to a raw recipe dict (returns a new dict)."""
    from .registry import get_entry

    cfg = copy.deepcopy(cfg)
    for key, val in overrides:
        if "." in key:
            sec, sub = key.split(".", 1)
            if sec == "model":
                sec = "model_args"
            if sec not in SECTIONS or sec == "model":
                raise ConfigError(
                    f"unknown section {sec!r} in {key!r}; valid sections: model, data, train, sample, eval"
                )
            cfg.setdefault(sec, {})
            if cfg[sec] is None:
                cfg[sec] = {}
            cfg[sec][sub] = val
            continue
        if key == "model":
            cfg["model"] = val
            continue
        homes = []
        if "model" in cfg:
            if get_entry(cfg["model"]).accepts(key):
                homes.append("model_args")
        if key in {f.name for f in dataclasses.fields(TrainConfig)}:
            homes.append("train")
        data_name = (cfg.get("data") or {}).get("name")
        if data_name:
            from .data import dataset_options

            if key in dataset_options(data_name) or key == "root":
                homes.append("data")
        if key in {f.name for f in dataclasses.fields(EvalConfig)}:
            homes.append("eval")
        if not homes:
            raise ConfigError(
                f"unknown key {key!r}: not a model argument of {cfg.get('model')!r}, a train/data/eval setting; "
                "use section.key=value (e.g. train.lr=1e-3) and see `genzoo train MODEL --help`"
            )
        if len(homes) > 1:
            raise ConfigError(f"key {key!r} is ambiguous (in {', '.join(homes)}); write it as section.key, e.g. {homes[0].replace('_args', '')}.{key}")
        sec = homes[0]
        cfg.setdefault(sec, {})
        cfg[sec][key] = val
    return cfg


def resolve(cfg: dict) -> dict:
    """Check every section and fill defaults. Returns a plain dict (YAML-serialisable)."""
    from .data import dataset_options
    from .registry import resolve_args

    for k in cfg:
        if k not in SECTIONS:
            raise ConfigError(f"unknown section {k!r}{did_you_mean(k, SECTIONS)}; valid sections: {', '.join(SECTIONS)}")
    if "model" not in cfg or not cfg["model"]:
        raise ConfigError("the config names no model; add `model: NAME` (see `genzoo list`)")
    model = cfg["model"]
    margs = resolve_args(model, dict(cfg.get("model_args") or {}))
    data = dict(cfg.get("data") or {})
    if "name" not in data:
        raise ConfigError("the config names no data set; add data.name=mnist (see `genzoo list`)")
    valid = dataset_options(data["name"])  # raises on unknown name
    for k in data:
        if k not in valid and k not in ("name", "root"):
            raise ConfigError(
                f"unknown key data.{k} for data set {data['name']!r}{did_you_mean(k, valid)}; valid keys: {', '.join(valid) or '(none)'}"
            )
    train = _dataclass_section(TrainConfig, cfg.get("train") or {}, "train")
    if train.optimizer not in ("adam", "adamw", "sgd", "lion"):
        raise ConfigError(f"bad value for train.optimizer: {train.optimizer!r}; valid: adam, adamw, sgd, lion")
    if train.betas and (len(train.betas) != 2 or not all(0.0 <= float(b) < 1.0 for b in train.betas)):
        raise ConfigError(f"bad value for train.betas: {list(train.betas)}; give two numbers in [0, 1), e.g. [0.9, 0.99]")
    if train.schedule not in ("constant", "cosine", "linear"):
        raise ConfigError(f"bad value for train.schedule: {train.schedule!r}; valid: constant, cosine, linear")
    if train.precision not in PRECISIONS:
        raise ConfigError(f"bad value for train.precision: {train.precision!r}; valid: {', '.join(PRECISIONS)} "
                          "(bf16 autocast where it is fast, else fp32)")
    if train.keep_best and train.valid_every <= 0:
        raise ConfigError("train.keep_best=true picks the weights by their validation loss, but train.valid_every=0 "
                          "never validates; set train.valid_every=N (e.g. 1000)")
    if train.valid_every > 0 and train.valid_every % train.log_every != 0:
        raise ConfigError(f"train.valid_every={train.valid_every} is not a multiple of train.log_every={train.log_every}: "
                          "validation runs on logged steps only; make valid_every a multiple of log_every")
    for name in ("steps", "batch_size"):
        if getattr(train, name) <= 0:
            raise ConfigError(f"train.{name} must be positive, got {getattr(train, name)}")
    _check_train_ranges(train)
    ev = _dataclass_section(EvalConfig, cfg.get("eval") or {}, "eval")
    return {
        "model": model,
        "model_args": _plain(margs),
        "data": _plain(data),
        "train": _plain(dataclasses.asdict(train)),
        "sample": _plain(dict(cfg.get("sample") or {})),
        "eval": _plain(dataclasses.asdict(ev)),
    }


#: (field, test, what it must be) for the numeric train settings
_TRAIN_RANGES = (
    ("lr", lambda v: v > 0, "a positive number, e.g. 1e-3"),
    ("time_budget", lambda v: v >= 0, ">= 0 seconds (0 = no budget)"),
    ("grad_clip", lambda v: v >= 0, ">= 0 (0 = off)"),
    ("ema_decay", lambda v: 0 <= v < 1, "in [0, 1) (0 = off), e.g. 0.999"),
    ("weight_decay", lambda v: v >= 0, ">= 0"),
    ("min_lr_ratio", lambda v: 0 <= v <= 1, "in [0, 1]"),
    ("max_loss", lambda v: v > 0, "positive"),
    ("warmup_steps", lambda v: v >= 0, ">= 0"),
    ("log_every", lambda v: v > 0, "a positive number of steps"),
    ("sample_every", lambda v: v >= 0, ">= 0 (0 = only at the end)"),
    ("num_samples", lambda v: v >= 0, ">= 0"),
    ("ckpt_every", lambda v: v >= 0, ">= 0 (0 = only at the end)"),
    ("keep_checkpoints", lambda v: v >= 1, ">= 1 (2 or more keeps one to fall back to)"),
    ("valid_every", lambda v: v >= 0, ">= 0 (0 = off)"),
    ("valid_batches", lambda v: v > 0, "positive"),
)


def _check_train_ranges(train) -> None:
    import math

    for name, ok, what in _TRAIN_RANGES:
        v = getattr(train, name)
        if isinstance(v, float) and not math.isfinite(v) or not ok(v):
            raise ConfigError(f"bad value for train.{name}: {v!r}; it must be {what}")


def _plain(obj):
    if isinstance(obj, dict):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    return obj


def train_config(resolved: dict) -> TrainConfig:
    return _dataclass_section(TrainConfig, resolved["train"], "train")


def eval_config(resolved: dict) -> EvalConfig:
    return _dataclass_section(EvalConfig, resolved["eval"], "eval")


def dump(cfg: dict) -> str:
    return yaml.safe_dump(cfg, sort_keys=False)


def read_run_config_for_resume(run_dir, overrides: list[tuple[str, object]]) -> dict:
    """The config of an existing run, with only train.* overrides allowed (e.g. more steps).

    On resume ``train.steps=N`` is the new total number of steps and ``train.time_budget=S``
    means S more seconds of training from the checkpoint (stored as the new total, checkpoint
    time + S, so a later resume of the same run keeps that total). Without a time_budget
    override a budget-stopped run stays stopped and a killed one finishes its own budget."""
    from .core.checkpoint import checkpoint_train_time, latest_checkpoint
    from .core.runfolder import read_run_config

    cfg = read_run_config(run_dir)
    for k, _ in overrides:
        if not k.startswith("train."):
            raise ConfigError(f"--resume only accepts train.* overrides (e.g. train.steps=5000), got {k!r}; "
                              "start a new run to change the model or data")
    over = []
    for k, v in overrides:
        if k == "train.time_budget":
            try:
                extra = float(v)
            except (TypeError, ValueError):
                raise ConfigError(f"bad value for train.time_budget: {v!r}; give seconds, e.g. train.time_budget=600") from None
            if extra < 0 or extra != extra:
                raise ConfigError(f"train.time_budget must be >= 0 seconds, got {v!r}")
            ck = latest_checkpoint(run_dir)
            if extra > 0 and ck is not None:
                v = checkpoint_train_time(ck) + extra
        over.append((k, v))
    return apply_overrides(cfg, over)
