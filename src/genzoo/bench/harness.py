"""``genzoo bench``: train every chosen leaderboard recipe under one budget, judge it by its track's protocol.

A cell is one (track, row, seed). Its result is one JSON file, ``OUT/cells/TRACK/ROW-sSEED.json``,
written atomically when (and only when) the cell is finished, beside its sample grid
``ROW-sSEED.png``. Its run folder is ``OUT/runs/TRACK/ROW-sSEED/`` (a genzoo run folder;
checkpoints every ``train.ckpt_every`` steps), so:

* a killed bench loses at most the cell in progress, and less: the next ``genzoo bench``
  resumes that cell's training from its newest checkpoint (its time budget counts the
  training time already spent) and evaluates it;
* a finished cell is skipped;
* a cell's fingerprint (sha256 of its resolved recipe, its evaluation settings, the protocol
  and the genzoo version) is stored in it: when the recipe, the protocol or the version
  changes, the cell is reported ``stale`` and never mixed into the ranking; ``--rerun-stale``
  trains it again.

Each cell records the package version and commit, budget, steps, parameters, training
images/s, precision, the machine (CPU model and vector ISA, threads, GPU), torch version and
date, the evaluation's seconds, and the command that re-runs it.
"""
from __future__ import annotations

import contextlib
import copy
import datetime as _dt
import hashlib
import json
import os
import platform
import shutil
import subprocess
import time
import traceback
from pathlib import Path

from .. import __version__
from ..errors import ConfigError
from .tracks import PROTOCOL, Entry, Track, cell_paths, get_track  # noqa: F401  (cell_paths: public here too)

CELL_FORMAT = "genzoo-bench-cell/1"


# ----------------------------------------------------------------------------- machine and version
def machine_info() -> dict:
    """The machine in fields: CPU model (with family/model numbers: one "AMD EPYC" name covers CPUs whose
    bf16 speed differs several-fold), vector ISA, whether bf16 is fast, cores, torch threads, GPU, torch."""
    import torch

    from ..core.precision import cpu_has_fast_bf16

    ids: dict = {}
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, val = line.partition(":")
            key = key.strip()
            if key in ("model name", "cpu family", "model") and key not in ids:
                ids[key] = val.strip()
            if not line.strip() and ids:
                break
    cpu = ids.get("model name", platform.processor() or platform.machine())
    if "cpu family" in ids:
        cpu += f" family {ids['cpu family']} model {ids.get('model', '?')}"
    return {
        "cpu": cpu, "isa": torch.backends.cpu.get_cpu_capability(), "fast_bf16": cpu_has_fast_bf16(),
        "cores": os.cpu_count(), "threads": torch.get_num_threads(),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None, "torch": torch.__version__,
    }


def machine_line(m: dict) -> str:
    return (f"{m['cores']} CPU cores ({m['cpu']}, {m['isa']}, {'fast' if m['fast_bf16'] else 'emulated'} bf16), "
            f"{m['threads']} torch threads, {m['gpu'] or 'no GPU'}, torch {m['torch']}")


def git_commit() -> str | None:
    """The commit of the genzoo checkout this runs from (with +dirty when it has uncommitted changes), or None."""
    here = Path(__file__).resolve().parent
    try:
        c = subprocess.run(["git", "-C", str(here), "rev-parse", "--short=12", "HEAD"], capture_output=True, text=True, timeout=10)
        if c.returncode != 0:
            return None
        d = subprocess.run(["git", "-C", str(here), "status", "--porcelain", "--untracked-files=no", "--", "."],
                           capture_output=True, text=True, timeout=10)
        return c.stdout.strip() + ("+dirty" if d.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return None


# ----------------------------------------------------------------------------- cells
def cell_id(track: Track, e: Entry, seed: int) -> str:
    return f"{track.name}/{e.name}-s{seed}"


#: a two-stage cell's prior config holds this in model.tokenizer until its tokenizer's run folder exists
TOKENIZER_RUN = "<the cell's tokenizer run>"


def cell_config(track: Track, e: Entry, seed: int, budget: float, *, stage: str = "model") -> dict:
    """The raw recipe of a cell: the entry's recipe, its overrides, then the seed and the budget (the budget,
    not the recipe's step count, ends every run; the learning-rate schedule follows the clock). A two-stage
    entry (``e.tokenizer``): ``stage="tokenizer"`` is its tokenizer's recipe with ``tokenizer_share`` of the budget,
    ``stage="model"`` the prior's with the rest, reading the tokenizer from :data:`TOKENIZER_RUN` (set when run)."""
    from ..config import apply_overrides, load_recipe, parse_overrides

    recipe = e.recipe
    if e.tokenizer:
        share = e.tokenizer_share if stage == "tokenizer" else 1.0 - e.tokenizer_share
        budget = budget * share
        recipe = e.tokenizer if stage == "tokenizer" else e.recipe
    cfg = apply_overrides(load_recipe(recipe), parse_overrides(
        [*e.overrides, f"train.seed={seed}", "train.steps=1000000", f"train.time_budget={budget:g}"]))
    if e.tokenizer and stage == "model":
        cfg.setdefault("model_args", {})["tokenizer"] = TOKENIZER_RUN
    for k, v in track.data_cfg.items():
        got = (cfg.get("data") or {}).get(k, "none" if k == "binarize" else None)
        if got != v:
            raise ConfigError(f"leaderboard entry {track.name}/{e.name}: its recipe {e.recipe!r} trains on data.{k}={got!r}, "
                              f"the {track.name} track needs {v!r}; add data.{k}={v} to its overrides")
    return cfg


def eval_settings(e: Entry) -> dict:
    return {"nll": e.nll, "samples": e.samples, "log_prob": e.log_prob, "sample": e.sample}


def fingerprint(cfg: dict, e: Entry, protocol: dict) -> str:
    blob = json.dumps({"config": cfg, "eval": eval_settings(e), "protocol": protocol, "version": __version__},
                      sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def read_cell(path: Path) -> dict | None:
    try:
        rec = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None
    return rec if isinstance(rec, dict) and rec.get("format") == CELL_FORMAT else None


def cell_status(out: Path, track: Track, e: Entry, seed: int, budget: float, protocol: dict) -> str:
    """"done", "stale" (made from another recipe, protocol or version), "failed" or "todo"."""
    p = cell_paths(out, track, e, seed)
    rec = read_cell(p["cell"])
    if rec is None:
        return "failed" if p["cell"].with_suffix(".failed.json").is_file() else "todo"
    return "done" if rec.get("fingerprint") == _fingerprint_of(track, e, seed, budget, protocol) else "stale"


def _fingerprint_of(track, e, seed, budget, protocol) -> str:
    if e.peer:
        from .peers import peer_fingerprint

        return peer_fingerprint(track, e, seed, budget, protocol)
    return fingerprint(_cell_configs(track, e, seed, budget), e, protocol)


def _cell_configs(track, e, seed, budget) -> dict:
    """What a cell's fingerprint covers: its config, and a two-stage cell's tokenizer config too."""
    cfg = cell_config(track, e, seed, budget)
    return {**cfg, "_tokenizer": cell_config(track, e, seed, budget, stage="tokenizer")} if e.tokenizer else cfg


def _atomic_json(path: Path, rec: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(rec, indent=1, default=float) + "\n")
    os.replace(tmp, path)


def _timed(fn):
    t0 = time.perf_counter()
    r = fn()
    return r, time.perf_counter() - t0


def _choose_n(per_item_s: float, full: int, cap: float, floor: int) -> int:
    """The most of ``full`` (then 5,000 / 2,000 / ``floor``) items whose measured cost fits ``cap`` seconds;
    0 when not even ``floor`` fits."""
    for n in (full, 5000, 2000, floor):
        if n <= full and n * per_item_s <= cap:
            return n
    return 0


def count_nfe(model, opts: dict) -> int:
    """Network passes per sample, counted: the calls of the model's most-called direct sub-network while
    drawing 2 samples (1 for a one-pass generator; H*W for pixel-by-pixel sampling; 2 per Heun step)."""
    import torch

    calls: dict = {}
    hooks = []
    kids = []
    for name, m in model.named_children():
        if isinstance(m, (torch.nn.ModuleList, torch.nn.ModuleDict)):
            kids += list(m.named_children())
        else:
            kids.append((name, m))
    for name, m in kids:
        hooks.append(m.register_forward_hook(lambda mod, i, o, name=name: calls.__setitem__(name, calls.get(name, 0) + 1)))
    try:
        with torch.no_grad():
            model.sample(2, generator=torch.Generator().manual_seed(0), **opts)
    finally:
        for h in hooks:
            h.remove()
    return max([1, *calls.values()])


def run_cell(out: Path, track: Track, e: Entry, seed: int, budget: float, protocol: dict, *,
             progress: bool = False, log=print) -> dict:
    """Train (or resume) and evaluate one cell; write its JSON and grid; return the record."""
    p = cell_paths(out, track, e, seed)
    started = {"commit": git_commit(), "started": _dt.datetime.now().isoformat(timespec="seconds")}  # the code that trains it
    if e.peer:
        from .peers import run_peer

        rec = run_peer(out, track, e, seed, budget, protocol, progress=progress, log=log)
        return _finish(p, {**started, **rec}, track, e, seed, budget, protocol)
    from ..core.checkpoint import latest_checkpoint
    from ..train.run import train

    cfg = cell_config(track, e, seed, budget)
    fp = fingerprint(_cell_configs(track, e, seed, budget), e, protocol)
    run_dir = p["run"]
    tok_dir = run_dir.with_name(run_dir.name + "-tokenizer") if e.tokenizer else None
    if (run_dir.exists() or (tok_dir and tok_dir.exists())) and (
            not p["fingerprint"].is_file() or p["fingerprint"].read_text().strip() != fp):
        log(f"[bench] {cell_id(track, e, seed)}: its run folder was made from other settings; training it again")
        for d in (run_dir, tok_dir):
            if d is not None and d.exists():
                shutil.rmtree(d)
    run_dir.parent.mkdir(parents=True, exist_ok=True)
    p["fingerprint"].write_text(fp + "\n")
    tok_rec = None
    if e.tokenizer:
        tok_cfg = cell_config(track, e, seed, budget, stage="tokenizer")
        _train_stage(tok_dir, tok_cfg, f"{cell_id(track, e, seed)} tokenizer", progress, log)
        cfg["model_args"]["tokenizer"] = str(tok_dir)
        tok_rec = _tokenizer_record(tok_dir, protocol, progress)
    train_cfg = copy.deepcopy(cfg)
    train_cfg.setdefault("train", {})["progress"] = bool(progress)
    if (run_dir / "train_summary.json").is_file():
        log(f"[bench] {cell_id(track, e, seed)}: trained already; evaluating")
    elif run_dir.exists() and latest_checkpoint(run_dir) is not None:
        from ..config import read_run_config_for_resume

        log(f"[bench] {cell_id(track, e, seed)}: resuming its training from {latest_checkpoint(run_dir).name}")
        rc = read_run_config_for_resume(run_dir, [])
        rc.setdefault("train", {})["progress"] = bool(progress)
        train(rc, run_dir, resume=True)
    else:
        log(f"[bench] {cell_id(track, e, seed)}: training {e.recipe} for {cfg['train']['time_budget']:g} s")
        train(train_cfg, run_dir, overwrite=run_dir.exists())
    summary = json.loads((run_dir / "train_summary.json").read_text())
    t_eval = time.perf_counter()
    ev = evaluate_cell(run_dir, track, e, protocol, p["grid"], progress=progress, log=log)
    rec = {
        "recipe": e.recipe, "overrides": list(e.overrides), "registered_model": cfg["model"],
        "steps": summary.get("steps"), "train_s": summary.get("train_time_s"), "stopped_by": summary.get("stopped_by"),
        "parameters": summary.get("parameters"), "images_per_s": summary.get("images_per_s"),
        "precision": summary.get("precision"), "fingerprint": fp, **started, **ev,
        "eval_s": round(time.perf_counter() - t_eval, 1),
    }
    if tok_rec is not None:
        rec["tokenizer"] = tok_rec
    return _finish(p, rec, track, e, seed, budget, protocol)


def _train_stage(run_dir: Path, cfg: dict, what: str, progress: bool, log) -> None:
    """Train a run folder to its budget, resuming a killed one and keeping a finished one."""
    from ..config import read_run_config_for_resume
    from ..core.checkpoint import latest_checkpoint
    from ..train.run import train

    if (run_dir / "train_summary.json").is_file():
        return
    if run_dir.exists() and latest_checkpoint(run_dir) is not None:
        log(f"[bench] {what}: resuming its training from {latest_checkpoint(run_dir).name}")
        rc = read_run_config_for_resume(run_dir, [])
        rc.setdefault("train", {})["progress"] = bool(progress)
        train(rc, run_dir, resume=True)
        return
    log(f"[bench] {what}: training {cfg.get('model')} for {cfg['train']['time_budget']:g} s")
    cfg = copy.deepcopy(cfg)
    cfg.setdefault("train", {})["progress"] = bool(progress)
    train(cfg, run_dir, overwrite=run_dir.exists())


def _tokenizer_record(tok_dir: Path, protocol: dict, progress: bool) -> dict:
    """A two-stage cell's tokenizer: its training summary and reconstructions of the test split (MSE, codebook
    usage and perplexity, FID of the reconstructions with its floor), at the protocol's sample count."""
    from ..eval.runner import run_evaluation

    s = json.loads((tok_dir / "train_summary.json").read_text())
    floor = int(protocol["min_set"])
    r = run_evaluation(tok_dir, ["recon"], n_samples=int(protocol["n_samples"]), progress=progress,
                       allow_small=floor < 1000).record["recon"]
    keep = ("mse", "fid", "fid_floor", "usage", "perplexity", "n", "extractor", "codebook_size")
    return {"model": s.get("model"), "steps": s.get("steps"), "train_s": s.get("train_time_s"),
            "parameters": s.get("parameters"), "recon": {k: r[k] for k in keep if k in r}}


def _finish(p: dict, rec: dict, track: Track, e: Entry, seed: int, budget: float, protocol: dict) -> dict:
    m = machine_info()
    full = {
        "format": CELL_FORMAT, "cell": cell_id(track, e, seed), "track": track.name, "model": e.name, "family": e.family,
        "seed": seed, "peer": e.peer, "budget_s": budget, "protocol": dict(protocol),
        **rec,
        "genzoo_version": __version__, "commit": rec.get("commit") or git_commit(), "eval_commit": git_commit(), "machine": m, "machine_line": machine_line(m),
        "torch": m["torch"], "date": _dt.date.today().isoformat(),
        "off_protocol": dict(protocol) != PROTOCOL,
        "command": f"genzoo bench --track {track.name} --only {e.name} --seeds {seed} --budget {budget:g}"
                   + (" --smoke" if dict(protocol) != PROTOCOL else ""),
    }
    _atomic_json(p["cell"], full)
    p["cell"].with_suffix(".failed.json").unlink(missing_ok=True)
    return full


def evaluate_cell(run_dir: Path, track: Track, e: Entry, protocol: dict, grid: Path, *, progress=False, log=print) -> dict:
    """The track's protocol on a trained run: likelihood on the test split (the validation text for text),
    sample quality with 10,000 samples against 10,000 test images, each cut to what its measured cost
    allows within ``protocol["eval_cap_s"]`` (said in the result); a sample grid."""
    import torch

    from ..eval import evaluate_nll
    from ..eval.runner import default_nll_batch, draw_samples, eval_sample_options, run_evaluation
    from ..train.run import load_data, load_run
    from ..viz import save_samples

    model, cfg, spec = load_run(run_dir)
    cap, floor = float(protocol["eval_cap_s"]), int(protocol["min_set"])
    split = "valid" if track.name == "text" else "test"
    data = load_data(cfg["data"], split)
    res: dict = {"split": split}
    metrics: list[str] = []
    nll_limit = 0
    if e.nll and getattr(model, "likelihood", "none") in ("exact", "bound"):
        full = len(data) if protocol["nll_examples"] == "all" else min(len(data), int(protocol["nll_examples"]))
        probe = min(full, 64 if track.name != "vector" else 500)
        _, t = _timed(lambda: evaluate_nll(model, data, batch_size=default_nll_batch(model), limit=probe, progress=False,
                                           **e.log_prob))
        per = t / probe
        n = _choose_n(per, full, cap, min(floor, full))
        n = n or min(floor, full)  # never fewer than the floor: a slow likelihood still gets 1,000 images
        res["nll_probe"] = {"examples": probe, "seconds": round(t, 2), "estimated_full_s": round(per * full, 1)}
        nll_limit = 0 if n >= len(data) else n
        if n < full:
            res["nll_note"] = (f"a fixed random {n}-example subset of the {split} split: all {full} would take "
                               f"~{per * full / 3600:.1f} h on this machine (measured on {probe})")
        metrics.append("nll")
    sample_opts = eval_sample_options(cfg, e.sample)
    n_samples = 0
    if e.samples and spec.kind != "text":
        g, t = _timed(lambda: draw_samples(model, int(protocol["grid"]), batch_size=int(protocol["grid"]), seed=123,
                                           progress=False, **sample_opts))
        save_samples(g.float().cpu(), grid, spec)
        res["grid"] = grid.name
        per = t / int(protocol["grid"])
        full = min(int(protocol["n_samples"]), len(data))
        n_samples = _choose_n(per, full, cap, min(floor, full))
        res["sample_probe"] = {"samples": int(protocol["grid"]), "seconds": round(t, 2), "estimated_full_s": round(per * full, 1)}
        if n_samples == 0:
            res["samples_note"] = (f"no sample metrics: even {floor} samples would take ~{per * floor / 60:.0f} min on this "
                                   f"machine (measured on {protocol['grid']}), over the {cap / 60:.0f}-minute cap")
        else:
            if n_samples < full:
                res["samples_note"] = (f"{n_samples} samples against {n_samples} test images: {full} would take "
                                       f"~{per * full / 3600:.1f} h on this machine (measured on {protocol['grid']})")
            metrics += ["fid", "kid", "pr"]
            if spec.name == "8gaussians":
                metrics.append("modes")
            res["nfe"] = count_nfe(model, {k: v for k, v in sample_opts.items()})
    elif e.samples and spec.kind == "text":
        g = model.sample(1, generator=torch.Generator().manual_seed(123), **sample_opts)
        res["text_sample"] = _decode_text(g, data)
    if not metrics:
        return res
    evr = run_evaluation(run_dir, metrics, split=split, n_samples=n_samples or None, nll_limit=nll_limit,
                         log_prob_opts=e.log_prob, sample_opts=e.sample, progress=progress,
                         allow_small=floor < 1000).record
    if "nll" in evr:
        r = evr["nll"]
        res["nll"] = {"nats": r["nll_nats"], "nats_stderr": r["nll_nats_stderr"], "bits_per_dim": r["bits_per_dim"],
                      "bits_per_dim_stderr": r["bits_per_dim_stderr"], "offset_bits": r["offset_bits"],
                      "examples": r["num_examples"], "dims": r["num_dims"], "likelihood": r["likelihood"],
                      "protocol": e.protocol, "log_prob_options": e.log_prob}
        if track.name == "vector":
            from ..data.toys import TOY_LOG_PROB

            x = data.tensor(seed=0, limit=nll_limit or None)
            ent = float(-TOY_LOG_PROB[spec.name](x.double()).mean())
            res["nll"]["entropy_nats"] = ent
            res["nll"]["kl_nats"] = r["nll_nats"] - ent
    if "sample_metrics" in evr:
        sm = evr["sample_metrics"]
        keep = ("fid", "fid_floor", "kid", "kid_std", "precision", "recall", "n_samples", "n_real", "extractor",
                "seconds_per_1000_samples", "sample_precision", "sample_options", "chunk")
        res["samples"] = {k: sm[k] for k in keep if k in sm}
    if "modes" in evr:
        res["modes"] = evr["modes"]
    return res


def _decode_text(x, data) -> str:
    ids = x[0].tolist()[:300]
    return data.decode(ids) if hasattr(data, "decode") else " ".join(map(str, ids))


# ----------------------------------------------------------------------------- the bench
def plan(tracks, only=None, seeds=None) -> list[tuple[Track, Entry, int]]:
    """The cells to consider: every entry of the tracks (or ``only`` those names), each at its default
    seeds (0, or 0-2 for the seed-noise rows) or at ``seeds``."""
    cells = []
    chosen = [get_track(t) if isinstance(t, str) else t for t in tracks]

    def picked(t, e) -> bool:  # ROW (a row of any chosen track; vector rows also by model: realnvp) or TRACK/ROW
        return not only or any(o in (e.name, e.name.split("@")[0], f"{t.name}/{e.name}", f"{t.name}/{e.name.split('@')[0]}")
                               for o in only)

    if only:
        for o in only:
            if not any(o in (e.name, e.name.split("@")[0], f"{t.name}/{e.name}", f"{t.name}/{e.name.split('@')[0]}")
                       for t in chosen for e in t.entries):
                from ..errors import did_you_mean

                names = sorted({n for t in chosen for e in t.entries for n in (e.name, f"{t.name}/{e.name}")})
                raise ConfigError(f"no row {o!r} on the track(s) {', '.join(t.name for t in chosen)}"
                                  f"{did_you_mean(o, names)}; `genzoo bench status` lists every cell")
    for t in chosen:
        for e in t.entries:
            if not picked(t, e):
                continue
            for s in (seeds if seeds is not None else range(e.seeds)):
                cells.append((t, e, int(s)))
    return cells


def run_bench(out, tracks=None, *, only=None, seeds=None, budget=None, rerun_stale=False, max_cells=0,
              protocol=None, progress=False, dry_run=False, log=print) -> list[dict]:
    """Run every cell not yet done; returns [{"cell", "status"}] for each considered cell.

    ``budget``: seconds per cell (default the track's: 30 minutes on the image and text tracks);
    ``protocol``: overrides of :data:`PROTOCOL` (a smaller test for smoke runs: such cells carry
    their protocol and are marked off-protocol in the report); ``max_cells``: stop after this
    many cells were run (0: all)."""
    out = Path(out)
    protocol = {**PROTOCOL, **(protocol or {})}
    note = None
    if not tracks:
        tracks, note = _default_tracks()
    cells = list(plan(list(tracks), only, seeds))  # bad input is refused before anything is said or run
    if note:
        log(note)
    results = []
    ran = 0
    with _bench_lock(out):
        for t, e, s in cells:
            b = float(budget if budget is not None else t.budget_s)
            st = cell_status(out, t, e, s, b, protocol)
            cid = cell_id(t, e, s)
            if st == "done" or (st == "stale" and not rerun_stale):
                if st == "stale":
                    log(f"[bench] {cid}: stale (made from another recipe, protocol or genzoo version); "
                        "--rerun-stale trains it again")
                results.append({"cell": cid, "status": st})
                continue
            if dry_run:
                results.append({"cell": cid, "status": f"would run ({st})"})
                continue
            if max_cells and ran >= max_cells:
                results.append({"cell": cid, "status": "not run (--max-cells)"})
                continue
            ran += 1
            t0 = time.perf_counter()
            try:
                rec = run_cell(out, t, e, s, b, protocol, progress=progress, log=log)
            except (KeyboardInterrupt, SystemExit):
                raise
            except Exception as err:  # one broken model does not stop the leaderboard; the cell says why
                if getattr(err, "exit_code", None):  # Interrupted (SIGTERM): stop, resume later
                    raise
                p = cell_paths(out, t, e, s)
                _atomic_json(p["cell"].with_suffix(".failed.json"), {
                    "cell": cid, "error": " ".join(str(err).split())[:500], "type": type(err).__name__,
                    "traceback": traceback.format_exc()[-3000:], "date": _dt.date.today().isoformat()})
                log(f"[bench] {cid}: FAILED ({type(err).__name__}: {' '.join(str(err).split())[:200]}); "
                    f"see {p['cell'].with_suffix('.failed.json')}")
                results.append({"cell": cid, "status": "failed"})
                continue
            log(f"[bench] {cid}: done in {time.perf_counter() - t0:.0f} s -> {cell_paths(out, t, e, s)['cell']}")
            results.append({"cell": cid, "status": "ran", "record": rec})
    return results


def _default_tracks() -> tuple[list[str], str | None]:
    """(every track whose data is on this machine, a note on the one left out): CIFAR-10 (not shipped) only when
    it is found (--data-root / GENZOO_DATA / genzoo's cache); ``--track cifar10`` asks for it explicitly (and
    downloads it online)."""
    from ..data import cifar
    from ..errors import GenzooError
    from .tracks import TRACKS

    names = list(TRACKS)
    try:
        cifar.locate(download=False)
    except GenzooError as e:
        names.remove("cifar10")
        return names, f"[bench] cifar10 track skipped ({e}); --track cifar10 runs it"
    return names, None


@contextlib.contextmanager
def _bench_lock(out: Path):
    """One bench at a time per output folder (a second one would train the same cell twice)."""
    import fcntl

    out.mkdir(parents=True, exist_ok=True)
    f = open(out / ".bench.lock", "a+")
    try:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            raise ConfigError(f"another genzoo bench is running in {out} (pid {f.read().strip() or '?'}); wait for it "
                              "or use another --out") from None
        f.seek(0)
        f.truncate()
        f.write(str(os.getpid()))
        f.flush()
        yield
    finally:
        f.close()


def status_table(out, tracks=None, budget=None, protocol=None) -> list[tuple[str, str]]:
    protocol = {**PROTOCOL, **(protocol or {})}
    rows = []
    from .tracks import TRACKS

    for t, e, s in plan(list(tracks or TRACKS)):  # every track, cifar10 too (its cells are todo until its data is here)
        b = float(budget if budget is not None else t.budget_s)
        rows.append((cell_id(t, e, s), cell_status(Path(out), t, e, s, b, protocol)))
    return rows


__all__ = ["run_bench", "run_cell", "evaluate_cell", "plan", "cell_status", "status_table", "machine_info", "nfe_sweep"]


# ----------------------------------------------------------------------------- FID against NFE
NFE_GRID = (1, 2, 4, 8, 16, 32, 64, 128)


def sweep_points(model, cfg: dict) -> list[dict]:
    """The (sampler options, NFE) points of the FID-against-NFE sweep for a diffusion-family model:
    the deterministic Euler step (DDIM for VP processes) at 1-128 steps (NFE = steps), and for recipes
    whose own sampler is a 1000-step chain (DDPM ancestral, Euler-Maruyama) that chain at 1000."""
    opts = set(getattr(model, "sample_options", ()))
    own = dict(cfg.get("sample") or {})
    pts = []
    if "sampler" in opts:  # Diffusion, PFGM
        for n in NFE_GRID:
            pts.append({"options": {"sampler": "euler", "steps": n}, "nfe": n})
        if own.get("sampler") in ("ddpm", "euler_maruyama") and int(own.get("steps", 0)) == 1000:
            pts.append({"options": {k: own[k] for k in ("sampler", "steps", "grid") if k in own}, "nfe": 1000})
    elif "steps" in opts:  # shortcut models: steps = NFE
        pts = [{"options": {"steps": n}, "nfe": n} for n in NFE_GRID]
    return pts


def nfe_sweep(out, tracks=("grey",), *, only=None, protocol=None, log=print) -> list[str]:
    """FID against NFE on the track's protocol for every finished diffusion-family cell: each point
    (10,000 samples against the 10,000 test images, fewer when the measured cost exceeds the cap, said
    so) is stored in the cell's JSON under ``nfe_sweep`` when it finishes; finished points are skipped."""
    from ..eval.runner import run_evaluation
    from ..train.run import load_run

    out = Path(out)
    protocol = {**PROTOCOL, **(protocol or {})}
    done = []
    with _bench_lock(out):
        for t, e, s in plan(list(tracks), only):
            if e.family != "diffusion" or e.peer or not e.samples:
                continue
            p = cell_paths(out, t, e, s)
            rec = read_cell(p["cell"])
            if rec is None or cell_status(out, t, e, s, float(rec["budget_s"]), protocol) != "done":
                continue
            model, cfg, spec = load_run(p["run"])
            have = {json.dumps(x["options"], sort_keys=True) for x in rec.get("nfe_sweep", [])}
            per_sample = (rec.get("samples") or {}).get("seconds_per_1000_samples", 0) / 1000 / max(rec.get("nfe") or 1, 1)
            for pt in sweep_points(model, cfg):
                key = json.dumps(pt["options"], sort_keys=True)
                if key in have:
                    continue
                full = int(protocol["n_samples"])
                n = _choose_n(per_sample * pt["nfe"], full, float(protocol["eval_cap_s"]), int(protocol["min_set"])) \
                    if per_sample else full
                n = n or int(protocol["min_set"])
                log(f"[bench] {cell_id(t, e, s)}: FID at NFE {pt['nfe']} ({key}), {n} samples")
                ev = run_evaluation(p["run"], ["fid", "kid", "pr"], split="test", n_samples=n, sample_opts=pt["options"],
                                    progress=False, allow_small=int(protocol["min_set"]) < 1000).record["sample_metrics"]
                point = {"options": pt["options"], "nfe": pt["nfe"], "fid": ev["fid"], "fid_floor": ev["fid_floor"],
                         "kid": ev.get("kid"), "precision": ev.get("precision"), "recall": ev.get("recall"),
                         "n_samples": ev["n_samples"], "seconds_per_1000_samples": ev["seconds_per_1000_samples"],
                         "date": _dt.date.today().isoformat()}
                rec = read_cell(p["cell"])
                rec.setdefault("nfe_sweep", []).append(point)
                _atomic_json(p["cell"], rec)
            done.append(cell_id(t, e, s))
    return done
