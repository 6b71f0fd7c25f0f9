"""The one trainer: every genzoo model, on CPU, one GPU or many (Hugging Face Accelerate).

* Single objective: ``model(batch)`` (i.e. ``model.loss``) -> backward -> clip -> step.
* Multi-player objectives (GANs): ``model.players()`` gives ``{name: params}``; each step,
  each player in order gets ``model.player_steps()[name]`` updates of its own optimiser
  on ``model(batch, player=name)["loss"]``.
* The model is always called through ``forward`` so DistributedDataParallel sees the
  call and all-reduces gradients (``GenerativeModel.forward`` forwards to ``loss``).

Determinism: a batch is a pure function of (seed, step, rank) and the global torch RNG
is reseeded from (seed, step, rank) at every step, so a run killed at any point and
resumed from its last checkpoint reproduces the uninterrupted run exactly, and the RNG
"state" in a checkpoint is just (seed, step).

Run directory written here: config.yaml (by the caller), metrics.csv, samples/*.png,
checkpoints/ (see checkpoint.py), train_summary.json; TensorBoard events when the
``tensorboard`` package is installed.

Early stopping (``train.keep_best``, the protocol of the NADE and MADE papers): every
validation scores the weights that evaluation uses (the EMA weights when kept, else the
raw ones); the best so far are written atomically to best/ (a checkpoint folder holding
its step and validation loss), which ``load_run`` (eval, sample) then prefers. Training
itself runs to the end of its steps or budget and resumes from checkpoints/ as usual.
"""
from __future__ import annotations

import csv
import json
import math
import os
import shutil
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch

from ..core.checkpoint import atomic_write_text, latest_checkpoint, load_checkpoint, load_model_state, save_checkpoint
from ..core import precision as _precision
from ..core.precision import PRECISIONS, cpu_has_fast_bf16, resolve_precision  # noqa: F401  (re-exported here)
from ..errors import ConfigError, DataError, Interrupted, TrainingDiverged
from ..models.base import TrainContext
from .ema import EMA


def derive_seed(*parts: int) -> int:
    """A 63-bit seed that is a deterministic function of integer ``parts``."""
    return int(np.random.SeedSequence([int(p) & 0xFFFFFFFF for p in parts]).generate_state(2, dtype=np.uint32).astype(np.uint64) @ np.array([1, 1 << 31], dtype=np.uint64)) & ((1 << 63) - 1)


def lr_factor(step: int, total: int, warmup: int, schedule: str, min_ratio: float,
              warmup_step: int | None = None) -> float:
    """Learning-rate multiplier: linear warm-up over ``warmup`` steps, then constant/cosine/linear decay.

    ``warmup_step`` (default ``step``) is the optimiser step the warm-up counts; the decay uses
    ``step``, which a time-budgeted run moves ahead of the optimiser step (see ``Trainer._schedule_step``)."""
    ws = step if warmup_step is None else warmup_step
    if warmup > 0 and ws < warmup:
        return (ws + 1) / warmup
    if schedule == "constant":
        return 1.0
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    if schedule == "cosine":
        f = 0.5 * (1.0 + math.cos(math.pi * progress))
    elif schedule == "linear":
        f = 1.0 - progress
    else:  # pragma: no cover - checked by config
        raise ConfigError(f"unknown schedule {schedule!r}")
    return min_ratio + (1.0 - min_ratio) * f


class BatchSampler:
    """Indices of step ``step`` for process ``rank`` of ``world``: epochs are seeded permutations."""

    def __init__(self, n: int, batch_size: int, seed: int, rank: int = 0, world: int = 1):
        if batch_size % world != 0:
            raise ConfigError(f"train.batch_size={batch_size} must be divisible by the number of processes ({world})")
        if n < batch_size:
            raise DataError(f"the training set has {n} examples, fewer than train.batch_size={batch_size}; lower the batch size")
        self.n, self.batch, self.seed, self.rank, self.world = n, batch_size, seed, rank, world
        self.steps_per_epoch = n // batch_size
        self._epoch, self._perm = -1, None

    def epoch_of(self, step: int) -> int:
        return step // self.steps_per_epoch

    def indices(self, step: int) -> torch.Tensor:
        epoch, i = divmod(step, self.steps_per_epoch)
        if epoch != self._epoch:
            g = torch.Generator().manual_seed(derive_seed(self.seed, epoch, 0xE90C))
            self._perm, self._epoch = torch.randperm(self.n, generator=g), epoch
        return self._perm[i * self.batch:(i + 1) * self.batch][self.rank::self.world]


#: optimisers selectable by train.optimizer, and their default betas (the papers')
OPTIMIZERS = {"adam": (0.9, 0.999), "adamw": (0.9, 0.999), "sgd": (0.9, 0.0), "lion": (0.9, 0.99)}


def make_optimizer(name: str, params, lr: float, betas, weight_decay: float) -> torch.optim.Optimizer:
    """``betas`` empty = the optimiser's own default (Adam/AdamW (0.9, 0.999), Lion (0.9, 0.99),
    SGD momentum 0.9)."""
    params = [p for p in params if p.requires_grad]
    if not params:
        raise ConfigError("the model has no trainable parameters")
    if name not in OPTIMIZERS:
        raise ConfigError(f"unknown optimizer {name!r}; valid: {', '.join(OPTIMIZERS)}")
    betas = tuple(betas) if betas else OPTIMIZERS[name]
    if name == "lion":
        from ..optim import Lion

        return Lion(params, lr=lr, betas=betas, weight_decay=weight_decay)
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, betas=tuple(betas), weight_decay=weight_decay)
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, betas=tuple(betas), weight_decay=weight_decay)
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=betas[0], weight_decay=weight_decay)
    raise AssertionError(name)  # pragma: no cover - OPTIMIZERS lists every branch


def _stderr_is_terminal() -> bool:
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):
        return False


def _clock(seconds: float) -> str:
    seconds = max(0, int(seconds))
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


class ProgressLog:
    """Readable progress lines: always appended to RUN/train.log; on stderr too when no progress
    bar is shown (stderr is not a terminal, or ``--no-progress``). A line every ``every`` seconds:
    ``step 1200/7000 (17%) loss 95.32 | 1234 img/s | 0:01:02 elapsed, ETA 0:05:01``."""

    def __init__(self, path: Path | None, *, to_stderr: bool, total: int, budget: float = 0.0, every: float = 5.0):
        self.path, self.to_stderr, self.total, self.budget, self.every = path, to_stderr, total, budget, every
        self._next = time.perf_counter() + every

    def line(self, text: str) -> None:
        stamp = time.strftime("%Y-%m-%d %H:%M:%S")
        if self.path is not None:
            try:
                with open(self.path, "a") as f:
                    f.write(f"{stamp} {text}\n")
            except OSError:  # a log line is never worth a crash; the checkpoint writes report real disk trouble
                pass
        if self.to_stderr:
            print(f"[genzoo {stamp[11:]}] {text}", file=sys.stderr, flush=True)

    def progress(self, step: int, start_step: int, logs: dict, train_time: float, seconds: float, batch: int) -> None:
        now = time.perf_counter()
        if now < self._next and step != self.total:
            return
        self._next = now + self.every
        rate = (step - start_step) / max(seconds, 1e-9)
        left = (self.total - step) / rate if rate > 0 else float("inf")
        if self.budget > 0:
            left = min(left, max(0.0, self.budget - train_time))
        main = logs.get("loss", next(iter(logs.values()), float("nan")) if logs else float("nan"))
        eta = _clock(left) if math.isfinite(left) else "?"
        self.line(f"step {step}/{self.total} ({100 * step / max(self.total, 1):.0f}%) loss {main:.4g} | "
                  f"{rate * batch:.0f} img/s | {_clock(train_time)} trained, ETA {eta}")


class _StopOnSignal:
    """While active (main thread only), SIGINT/SIGTERM set ``signum`` instead of killing the loop at a
    random point; the trainer then checkpoints the current step and stops. A second signal aborts at once."""

    def __init__(self):
        self.signum, self._old = None, {}

    def _handler(self, signum, frame):
        import signal

        if self.signum is not None:  # second Ctrl-C: the user insists
            signal.signal(signum, signal.default_int_handler if signum == signal.SIGINT else signal.SIG_DFL)
            raise KeyboardInterrupt
        self.signum = signum
        print(f"\ngenzoo: {signal.Signals(signum).name} received: writing a checkpoint at the end of this step "
              "(signal again to abort without one)", file=sys.stderr, flush=True)

    def __enter__(self):
        import signal
        import threading

        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._old[sig] = signal.signal(sig, self._handler)
        return self

    def __exit__(self, *exc):
        import signal

        for sig, h in self._old.items():
            signal.signal(sig, h)
        return False


class Trainer:
    """Train ``model`` on ``train_data`` with settings ``cfg`` (a TrainConfig), writing to ``run_dir``."""

    def __init__(self, model, train_data, cfg, run_dir, *, valid_data=None, sample_opts=None, accelerator=None):
        from accelerate import Accelerator
        from accelerate.utils import DistributedDataParallelKwargs

        self.cfg = cfg
        self.run_dir = Path(run_dir)
        self.train_data, self.valid_data = train_data, valid_data
        self.spec = train_data.spec
        self.sample_opts = dict(sample_opts or {})
        players = model.players()
        self.player_names = list(players) if players else ["model"]
        self.multi = players is not None
        self.precision = _precision.resolve_precision(cfg.precision)
        if accelerator is None:
            from accelerate.state import AcceleratorState, PartialState

            if PartialState._shared_state and not PartialState().use_distributed:
                # a second Trainer in the same (single) process, e.g. another precision: start afresh
                AcceleratorState._reset_state(reset_partial_state=True)
            # without a GPU, Accelerate only forms a multi-process (gloo) group when told cpu=True
            no_gpu = not torch.cuda.is_available() and os.environ.get("LOCAL_RANK") is not None
            accelerator = Accelerator(
                cpu=no_gpu,
                mixed_precision="bf16" if self.precision == "bf16" else "no",
                kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=self.multi)],
            )
        self.acc = accelerator
        if self.precision == "bf16" and self.acc.device.type == "cpu" and not _precision.cpu_has_fast_bf16():
            warnings.warn("train.precision=bf16 on a CPU without fast bfloat16 (no AVX-512/AMX): autocast is emulated and "
                          "several times slower than fp32 here; set train.precision=auto or fp32", stacklevel=2)
        self.rank, self.world = self.acc.process_index, self.acc.num_processes
        self.is_main = self.acc.is_main_process
        self.raw_model = model
        param_groups = players if players else {"model": list(model.parameters())}
        self._opts = {name: make_optimizer(cfg.optimizer, ps, cfg.lr, cfg.betas, cfg.weight_decay) for name, ps in param_groups.items()}
        prepared = self.acc.prepare(model, *self._opts.values())
        self.model = prepared[0]
        self.opts = dict(zip(self._opts, prepared[1:]))
        self.ema = EMA(self.raw_model, cfg.ema_decay) if cfg.ema_decay > 0 else None
        self.sampler = BatchSampler(len(train_data), cfg.batch_size, cfg.seed, self.rank, self.world)
        self.step = 0
        self.train_time = 0.0
        self._tb = None
        self.best: dict | None = None  # {"step", "valid_loss"} of best/ (train.keep_best)

    # -- state ------------------------------------------------------------------------
    def state(self) -> dict:
        return {
            "optimizers": {k: o.state_dict() for k, o in self._opts.items()},
            "train_time_s": self.train_time,
            "seed": self.cfg.seed,
            "rng": "reseeded per step from (seed, step, rank)",
            "torch_rng": torch.get_rng_state(),
        }

    def save(self) -> Path | None:
        path = None
        self._check_parameters(self.step)
        if self.is_main:
            path = save_checkpoint(
                self.run_dir / "checkpoints", self.step,
                model_state=self.raw_model.state_dict(),
                ema_state=self.ema.state_dict() if self.ema else None,
                extra=self.state(), keep=self.cfg.keep_checkpoints,
            )
        self.acc.wait_for_everyone()
        return path

    def resume(self) -> bool:
        """Load the newest checkpoint of run_dir if there is one; True if resumed."""
        path = latest_checkpoint(self.run_dir)
        if path is None:
            return False
        ck = load_checkpoint(path)
        load_model_state(self.raw_model, ck["model"], str(path))
        if self.ema is not None:
            if ck["ema"] is None:
                raise_ck = f"checkpoint {path} has no EMA weights but train.ema_decay={self.cfg.ema_decay}; set train.ema_decay=0 or start a new run"
                from ..errors import CheckpointError
                raise CheckpointError(raise_ck)
            load_model_state(self.ema.model, ck["ema"], str(path) + " (ema)")
        extra = ck["extra"]
        for k, o in self._opts.items():
            if k not in extra.get("optimizers", {}):
                from ..errors import CheckpointError
                raise CheckpointError(f"checkpoint {path} has no optimiser state for {k!r}; it was written by another model")
            o.load_state_dict(extra["optimizers"][k])
        self.step = int(ck["step"])
        self.train_time = float(extra.get("train_time_s", 0.0))
        best = latest_checkpoint(self.run_dir, "best")
        if self.cfg.keep_best and best is not None:
            b = load_checkpoint(best)
            if b["step"] <= self.step:  # a best/ written after the last checkpoint is redone by the resumed run
                self.best = {"step": int(b["step"]), "valid_loss": float(b["extra"]["valid_loss"])}
        return True

    def _keep_if_best(self, valid_loss: float) -> None:
        """Write best/ when ``valid_loss`` is the lowest so far (train.keep_best)."""
        if self.best is not None and not valid_loss < self.best["valid_loss"]:
            return
        self.best = {"step": self.step, "valid_loss": valid_loss}
        if self.is_main:
            save_checkpoint(self.run_dir / "best", self.step, model_state=self.raw_model.state_dict(),
                            ema_state=self.ema.state_dict() if self.ema else None,
                            extra={"valid_loss": valid_loss}, keep=1)

    # -- pieces -------------------------------------------------------------------------
    def _batch(self, step: int, k: int = 0):
        idx = self.sampler.indices(step) if k == 0 else self._extra_indices(step, k)
        g = torch.Generator().manual_seed(derive_seed(self.cfg.seed, step, self.rank, k, 0xDA7A))
        x, y = self.train_data.get_batch(idx, g)
        x = x.to(self.acc.device, non_blocking=True)
        if getattr(self.raw_model, "uses_labels", False):
            return (x, y.to(self.acc.device)) if y is not None else (x, None)
        return x

    def _extra_indices(self, step: int, k: int):
        g = torch.Generator().manual_seed(derive_seed(self.cfg.seed, step, k, 0x5EED))
        idx = torch.randint(0, len(self.train_data), (self.cfg.batch_size,), generator=g)
        return idx[self.rank::self.world]

    def _set_lr(self, step: int) -> float:
        f = lr_factor(self._schedule_step(step), self.cfg.steps, self.cfg.warmup_steps, self.cfg.schedule,
                      self.cfg.min_lr_ratio, warmup_step=step)
        for o in self._opts.values():
            for g in o.param_groups:
                g["lr"] = self.cfg.lr * f
        return self.cfg.lr * f

    def _schedule_step(self, step: int) -> int:
        """Where the decay stands: the step, or for a time-budgeted run whichever is further along,
        steps or seconds, so the schedule finishes when the budget does (such a run is not
        bit-reproducible). The warm-up always counts real optimiser steps: with
        ``train.steps=1000000 train.time_budget=300`` a 100-step warm-up would otherwise be
        over in 0.03 s."""
        if self.cfg.time_budget > 0:
            return max(step, int(self.cfg.steps * min(1.0, self.train_time / self.cfg.time_budget)))
        return step

    def _check(self, name: str, value: float, step: int):
        if not math.isfinite(value) or abs(value) > self.cfg.max_loss:
            what = "became " + str(value) if not math.isfinite(value) else f"exploded to {value:.3g} (> train.max_loss={self.cfg.max_loss:g})"
            self._diverged(f"{name} {what}", step)

    def _diverged(self, what: str, step: int):
        last = latest_checkpoint(self.run_dir)
        kept = f"the last good checkpoint is {last}" if last else "no checkpoint was written yet"
        raise TrainingDiverged(
            f"training diverged at step {step}: {what}; {kept}. Continue from it with a lower learning rate, "
            f"gradient clipping or a warm-up: `genzoo train --resume {self.run_dir} train.lr={self.cfg.lr / 10:g} "
            "train.grad_clip=1.0 train.warmup_steps=500`"
        )

    def _check_parameters(self, step: int):
        """A finite loss can still have an inf/NaN gradient that poisons the weights: never
        checkpoint such weights (the last good checkpoint must stay the newest one)."""
        bad = [n for n, p in self.raw_model.named_parameters() if not torch.isfinite(p).all()]
        if bad:
            self._diverged(f"the parameters became non-finite ({', '.join(bad[:3])}{', ...' if len(bad) > 3 else ''}) "
                           "although the loss was finite (an inf/NaN gradient)", step)

    def context(self) -> TrainContext:
        """The :class:`~genzoo.models.base.TrainContext` of the step being trained."""
        return TrainContext(self.step, self.cfg.steps, self.ema.model if self.ema is not None else None)

    def _update(self, name: str, batch) -> dict:
        opt = self.opts[name]
        kwargs = {"player": name} if self.multi else {}
        ctx = self.context()
        # zero every gradient, not just this player's: another player's loss may have left
        # gradients on these parameters, which would leak into this update
        self.raw_model.zero_grad(set_to_none=True)
        out = self.model(batch, ctx=ctx, **kwargs)
        if not isinstance(out, dict) or "loss" not in out:
            raise TypeError(f"{type(self.raw_model).__name__}.loss must return a dict with a 'loss' entry")
        loss = out["loss"]
        self._check(f"loss[{name}]" if self.multi else "loss", float(loss.detach()), self.step)
        self.acc.backward(loss)
        if self.cfg.grad_clip > 0:
            params = [p for g in self._opts[name].param_groups for p in g["params"]]
            norm = self.acc.clip_grad_norm_(params, self.cfg.grad_clip)
            if norm is not None and not math.isfinite(float(norm)):  # stop before the step spoils the weights
                self._diverged(f"the gradient norm{f' of {name}' if self.multi else ''} became {float(norm)}", self.step)
        opt.step()
        opt.zero_grad(set_to_none=True)
        self.raw_model.after_step(name if self.multi else None, ctx)
        prefix = f"{name}/" if self.multi else ""
        return {prefix + k: float(v.detach()) if torch.is_tensor(v) else float(v) for k, v in out.items()}

    @torch.no_grad()
    def validate(self, net=None) -> float:
        """Mean loss over ``valid_batches`` validation batches, of ``net`` (default: the raw weights).
        The loss is ``net.loss(...)[net.valid_metric]``: "loss" unless the model names another key
        (the VAEs: the negative ELBO, free of KL warm-up, beta and regularisers)."""
        net = self.raw_model if net is None else net
        key = getattr(net, "valid_metric", "loss")
        was_training = net.training
        net.eval()
        tot, n = 0.0, 0
        for i, (x, y) in enumerate(self.valid_data.iter_batches(self.cfg.batch_size, seed=1)):
            if i >= self.cfg.valid_batches:
                break
            x = x.to(self.acc.device)
            batch = (x, y.to(self.acc.device) if y is not None else None) if getattr(net, "uses_labels", False) else x
            out = net.loss(batch, **({"player": self.player_names[-1]} if self.multi else {}))
            if key not in out:
                raise ConfigError(f"{type(net).__name__}.valid_metric is {key!r}, but its loss() returns only "
                                  f"{', '.join(map(repr, out))}: name one of those keys")
            tot += float(out[key]) * x.shape[0]
            n += x.shape[0]
        net.train(was_training)
        return tot / max(n, 1)

    @torch.no_grad()
    def sample_grid(self, tag: str) -> Path | None:
        if not self.is_main or self.cfg.num_samples <= 0:
            return None
        from ..viz import save_samples

        net = self.ema.model if self.ema is not None else self.raw_model
        was_training = net.training
        net.eval()
        g = torch.Generator(device="cpu").manual_seed(self.cfg.seed)
        x = net.sample(self.cfg.num_samples, generator=g, **self.sample_opts)
        net.train(was_training)
        out_dir = self.run_dir / "samples"
        out_dir.mkdir(parents=True, exist_ok=True)
        if self.spec.kind == "text" and hasattr(self.train_data, "decode"):
            text = "\n\n-----\n\n".join(self.train_data.decode(row) for row in x[:8].cpu())
            path = out_dir / f"{tag}.txt"
            atomic_write_text(path, text)
            atomic_write_text(self.run_dir / "samples.txt", text)
            return path
        path = save_samples(x.float().cpu(), out_dir / f"{tag}.png", self.spec)
        save_samples(x.float().cpu(), self.run_dir / "samples.png", self.spec)
        return path

    def _open_csv(self):
        path = self.run_dir / "metrics.csv"
        rows = []
        if path.is_file() and self.step > 0:  # resumed: drop rows logged after the checkpoint
            with open(path, newline="") as f:
                rows = [r for r in csv.DictReader(f) if int(r.get("step", 0)) <= self.step]
        return path, rows

    def _log_row(self, row: dict):
        if not self.is_main:
            return
        self._rows.append(row)
        fields = []
        for r in self._rows:
            for k in r:
                if k not in fields:
                    fields.append(k)
        tmp = self._csv_path.with_suffix(".csv.tmp")
        with open(tmp, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=fields)
            w.writeheader()
            w.writerows(self._rows)
        os.replace(tmp, self._csv_path)
        if self._tb is not None:
            for k, v in row.items():
                if k != "step" and isinstance(v, (int, float)):
                    self._tb.add_scalar(k, v, row["step"])

    # -- the loop -----------------------------------------------------------------------
    def fit(self, resume: bool = False) -> dict:
        cfg = self.cfg
        self.run_dir.mkdir(parents=True, exist_ok=True)
        resumed = self.resume() if resume else False
        if not resumed and self.is_main and (self.run_dir / "best").exists():
            shutil.rmtree(self.run_dir / "best")  # an earlier run's, in this folder (whose checkpoints this run replaces)
        if self.is_main:
            self._csv_path, self._rows = self._open_csv()
            try:
                from torch.utils.tensorboard import SummaryWriter

                self._tb = SummaryWriter(str(self.run_dir / "tb"))
            except Exception:  # tensorboard not installed
                self._tb = None
        self.raw_model.train()
        self.player_steps = self.raw_model.player_steps() if self.multi else {"model": 1}
        start_step, t_start, t_budget0 = self.step, time.perf_counter(), self.train_time
        pbar = None
        if self.is_main and cfg.progress and _stderr_is_terminal():
            from tqdm.auto import tqdm

            pbar = tqdm(total=cfg.steps, initial=self.step, desc=f"train {type(self.raw_model).__name__}", dynamic_ncols=True)
        self._log = ProgressLog(self.run_dir / "train.log" if self.is_main else None,
                                to_stderr=self.is_main and pbar is None, total=cfg.steps, budget=cfg.time_budget)
        self._log.line(f"{'resuming' if resumed else 'training'} {type(self.raw_model).__name__} in {self.run_dir} "
                       f"at step {self.step} of {cfg.steps}"
                       f"{f' (time budget {cfg.time_budget:g} s, {self.train_time:.0f} s spent)' if cfg.time_budget > 0 else ''}; "
                       f"precision {self.precision}")
        source = getattr(self.train_data, "source", None)
        note = f"data: {self.spec.describe()}, {len(self.train_data):,} training examples" + (f"; {source}" if source else "")
        self._log.line(note)
        if pbar is not None:
            pbar.write(f"[genzoo] {note}", file=sys.stderr)
        stop_reason = "steps"
        if cfg.time_budget > 0 and self.train_time >= cfg.time_budget:  # a budget-stopped run, resumed as it was
            stop_reason = f"time budget {cfg.time_budget:g}s"
        with _StopOnSignal() as stop:
            try:
                stop_reason, last = self._loop(stop, pbar, stop_reason, start_step, t_start, t_budget0)
            finally:
                if pbar is not None:
                    pbar.close()
        return self._finish(stop_reason, last, resumed, start_step, t_start)

    def _loop(self, stop, pbar, stop_reason, start_step, t_start, t_budget0):
        cfg = self.cfg
        steps_per = self.player_steps
        window_t, window_n, last = time.perf_counter(), 0, {}
        while self.step < cfg.steps and stop_reason == "steps":
            step = self.step
            torch.manual_seed(derive_seed(cfg.seed, step, self.rank, 0x70C4))
            lr = self._set_lr(step)
            logs = {}
            for name in self.player_names:
                for k in range(steps_per.get(name, 1)):
                    batch = self._batch(step, k)
                    logs.update(self._update(name, batch))
            if self.ema is not None:
                self.ema.update(self.raw_model, step)
            self.step += 1
            window_n += cfg.batch_size
            last = logs
            self.train_time = t_budget0 + (time.perf_counter() - t_start)
            if pbar is not None:
                pbar.update(1)
            self._log.progress(self.step, start_step, logs, self.train_time, time.perf_counter() - t_start, cfg.batch_size)
            if self.step % cfg.log_every == 0 or self.step == cfg.steps:
                now = time.perf_counter()
                ips = window_n / max(now - window_t, 1e-9)
                window_t, window_n = now, 0
                row = {"step": self.step, "epoch": self.sampler.epoch_of(step), "time_s": round(self.train_time, 3), "lr": lr, "images_per_s": round(ips, 1)}
                row.update({k: round(v, 6) for k, v in logs.items()})
                if self.valid_data is not None and cfg.valid_every and self.step % cfg.valid_every == 0:
                    if cfg.keep_best:  # score the weights that evaluation will load
                        v = self.validate(self.ema.model if self.ema is not None else None)
                        self._keep_if_best(v)
                    else:
                        v = self.validate()
                    row["valid_loss"] = round(v, 6)
                self._log_row(row)
                if pbar is not None:
                    main = logs.get("loss", next(iter(logs.values())) if logs else float("nan"))
                    pbar.set_postfix(loss=f"{main:.4g}", img_s=f"{ips:.0f}")
            if cfg.sample_every and self.step % cfg.sample_every == 0:
                self.sample_grid(f"step-{self.step:07d}")
            budget_out = cfg.time_budget > 0 and self.train_time >= cfg.time_budget
            if (cfg.ckpt_every and self.step % cfg.ckpt_every == 0) or self.step == cfg.steps or budget_out:
                self.save()
            if budget_out:
                stop_reason = f"time budget {cfg.time_budget:g}s"
                break
            if stop.signum is not None:
                self._interrupted(stop.signum)
        return stop_reason, last

    def _interrupted(self, signum: int):
        """SIGINT/SIGTERM: checkpoint the current step atomically, then stop with exit code 128 + signum."""
        import signal

        last = latest_checkpoint(self.run_dir)
        path = last if last is not None and last.name == f"step-{self.step:07d}" else self.save()
        name = signal.Signals(signum).name
        self._log.line(f"stopped by {name} at step {self.step}; checkpoint {path}")
        raise Interrupted(f"stopped by {name} at step {self.step}; checkpoint written ({path}); "
                          f"continue with `genzoo train --resume {self.run_dir}`", 128 + signum)

    def _finish(self, stop_reason, last, resumed, start_step, t_start) -> dict:
        cfg = self.cfg
        loop_seconds = time.perf_counter() - t_start  # training throughput excludes the final grid below
        if latest_checkpoint(self.run_dir) is None or int(latest_checkpoint(self.run_dir).name.split("-")[1]) != self.step:
            self.save()
        grid = self.sample_grid(f"step-{self.step:07d}")
        summary = {
            "model": type(self.raw_model).__name__,
            "steps": self.step,
            "stopped_by": stop_reason,
            "resumed": resumed,
            "train_time_s": round(self.train_time, 2),
            "images_per_s": round((self.step - start_step) * cfg.batch_size / max(loop_seconds, 1e-9), 1),
            "last_losses": last,
            "processes": self.world,
            "precision": self.precision,
            "parameters": sum(p.numel() for p in self.raw_model.parameters()),
            "samples": str(grid) if grid else None,
        }
        if cfg.keep_best:
            summary["best"] = self.best  # None when no validation ran
        if self.world > 1:
            summary["replica_max_abs_diff"] = self.replica_difference()
        if self.is_main:
            atomic_write_text(self.run_dir / "train_summary.json", json.dumps(summary, indent=2))
            if self._tb is not None:
                self._tb.close()
        return summary

    def close(self) -> None:
        """End the process group of a multi-process run, once every process is done.

        A gloo group left to the interpreter's exit can abort a process (``terminate called
        without an active exception``, SIGABRT) after a finished run; one process has no group."""
        if self.world > 1:
            self.acc.wait_for_everyone()
            self.acc.end_training()

    @torch.no_grad()
    def replica_difference(self) -> float:
        """Max |param_rank - param_rank0| over all parameters and processes (0.0 when in sync)."""
        flat = torch.cat([p.detach().float().reshape(-1) for p in self.raw_model.parameters()]).to(self.acc.device)
        allp = self.acc.gather(flat.unsqueeze(0))  # (world, P)
        return float((allp - allp[0:1]).abs().max())
