"""genzoo command line: list | train | sample | eval | demo.

Errors in the user's input (unknown model, key or value, missing data, wrong shapes,
bad checkpoints) print ONE line ``genzoo: error: ...`` naming the problem and the fix,
and exit with code 2.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .errors import ConfigError, GenzooError, Interrupted


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, exit 2 (argparse prints usage + message otherwise)
        raise ConfigError(f"{self.prog}: {message} (see `{self.prog} --help`)")


EPILOG_MAIN = """\
quick start:
  genzoo list                              # models, data sets, recipes
  genzoo train vae --run-dir runs/vae      # train (recipe configs/vae.yaml); key=value overrides any setting
  genzoo sample runs/vae --n 64 --out grid.png
  genzoo eval runs/vae --metrics nll,fid k=1000
  genzoo COMMAND --help                    # each command's options and examples

units: log_prob / NLL in nats per example, bits/dim with the dequantisation offset;
FID on genzoo's MNIST classifier features with FID(test, train) as the floor (docs/conventions.md)."""

EPILOG_TRAIN = """\
examples:
  genzoo train vae                                   # the packaged recipe configs/vae.yaml
  genzoo train vae model.arch=conv train.steps=5000  # override any key (YAML values)
  genzoo train vae_logistic_mnist                    # a named recipe from configs/
  genzoo train --config my.yaml --run-dir runs/x     # your own recipe
  genzoo train vae --data ./my_pngs model.decoder=logistic   # your own images (256 levels; or .npy/.npz)
  genzoo train --resume runs/x                       # continue a killed run where it stopped
  accelerate launch --num_processes 2 -m genzoo.cli train vae   # several processes/GPUs

keys: model.<arg> (see `genzoo list MODEL`), data.<option> (see `genzoo list`), train.<field>
(steps, batch_size, lr, optimizer, schedule, warmup_steps, grad_clip, ema_decay, precision,
seed, sample_every, ckpt_every, time_budget, ...), sample.<option>, eval.<field>. A bare key
(latent_dim=16) is accepted when it exists in exactly one section."""


EPILOG_BENCH = """\
examples:
  genzoo bench --out benchmarks/leaderboard                 # every cell not done yet (resumable; kill it any time)
  genzoo bench --track grey --only ddpm --only gan          # two rows of one track
  genzoo bench status --out benchmarks/leaderboard          # done / stale / failed / todo for every cell
  genzoo bench report --out benchmarks/leaderboard          # leaderboard.md, .csv, plots and report/index.html
A cell = (track, row, seed): its result is OUT/cells/TRACK/ROW-sSEED.json, written when it is finished;
a killed cell resumes from its checkpoint on the next run. The protocol: test NLL on the whole test split
(bits/dim with the dequantisation offset; nats for binary data), 10,000 samples against the 10,000 test
images on the shipped feature net with the floor FID(test, train), KID, precision and recall.
"""

EPILOG_REFLOW = """\
Liu et al. 2022 (rectified flow): the ODE of a trained flow carries noise z to x0 = ODE(z); the
next flow is trained on those (x0, z) pairs instead of independent ones, which straightens its
paths so that few Euler steps suffice. Writes RUN_DIR-reflow/pairs.safetensors, trains the
2-rectified flow from RUN_DIR's weights there, and prints the straightness before and after.

With --distill (the paper's Sec. 2.3) the pairs train a one-step generator instead: RUN_DIR's
network is fine-tuned only at t = 1 so that one Euler step from z lands on ODE(z) (writes
RUN_DIR-distill; prints the one-step error against the ODE before and after).

example:
  genzoo train flow_matching --run-dir runs/rf1
  genzoo reflow runs/rf1 --pairs 20000 train.steps=2000
  genzoo sample runs/rf1-reflow sampler=euler steps=1
  genzoo reflow runs/rf1-reflow --distill --pairs 20000 train.steps=2000
  genzoo sample runs/rf1-reflow-distill sampler=euler steps=1
"""


def _bars(args) -> bool:
    """Progress bars only on a terminal, and not with --no-progress (log lines replace them)."""
    try:
        tty = sys.stderr.isatty()
    except (AttributeError, ValueError):
        tty = False
    return tty and not getattr(args, "no_progress", False)


def _version() -> str:
    from . import __version__

    return __version__


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="genzoo", description="Deep generative models on one interface: train, sample, evaluate.",
                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=EPILOG_MAIN)
    p.add_argument("--version", action="version", version=f"genzoo {_version()}")
    sub = p.add_subparsers(dest="cmd", parser_class=_Parser, metavar="{list,train,sample,eval,reflow,bench,demo}")

    q = sub.add_parser("list", help="list models, data sets and recipes (or one model's arguments, or one recipe)")
    q.add_argument("model", nargs="?", metavar="MODEL_OR_RECIPE",
                   help="show this model's arguments, options and recipes, or this recipe's settings")

    q = sub.add_parser("train", help="train a model", epilog=EPILOG_TRAIN, formatter_class=argparse.RawDescriptionHelpFormatter)
    q.add_argument("model", nargs="?", help="model name or recipe name (configs/NAME.yaml)")
    q.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides")
    q.add_argument("--config", help="YAML recipe file")
    q.add_argument("--run-dir", help="run folder (default runs/MODEL-DATA-TIMESTAMP)")
    q.add_argument("--resume", nargs="?", const=True, default=False, metavar="RUN_DIR",
                   help="continue the run in RUN_DIR (or --run-dir) from its newest checkpoint")
    q.add_argument("--overwrite", action="store_true",
                   help="replace the run already in --run-dir (without it such a folder is refused: nothing is lost unasked)")
    q.add_argument("--data", metavar="PATH", help="train on your own data: a folder of PNG/JPEG images or a .npy/.npz array")
    q.add_argument("--data-root", metavar="DIR", help="folder holding the data files (default: $GENZOO_DATA, then the copies shipped with genzoo)")
    q.add_argument("--no-progress", action="store_true",
                   help="no progress bar: a log line every few seconds instead (as when stderr is not a terminal)")

    q = sub.add_parser("sample", help="draw samples from a trained run", formatter_class=argparse.RawDescriptionHelpFormatter,
                       epilog="sampling options as key=value, e.g. temperature=0.8 (see `genzoo list MODEL`)")
    q.add_argument("run_dir")
    q.add_argument("options", nargs="*", metavar="key=value", help="model.sample options")
    q.add_argument("--n", type=int, default=64, help="number of samples (default 64)")
    q.add_argument("--out", default=None, help="output: .png grid (default RUN_DIR/sample.png), .npy/.npz array, or "
                   ".txt for text models (default RUN_DIR/sample.txt; also printed)")
    q.add_argument("--seed", type=int, default=0)
    q.add_argument("--batch-size", type=int, default=None, metavar="N",
                   help="images per sampling call (default: the model's measured chunk, see benchmarks/sampling_speed.py)")
    q.add_argument("--raw", action="store_true", help="use the raw weights instead of the EMA weights")
    q.add_argument("--device", default="cpu", metavar="auto|cpu|cuda|mps", help="where the model runs: auto (cuda if available, else mps, else cpu), cpu (default), cuda[:N], mps")

    q = sub.add_parser("eval", help="evaluate a trained run (nll, fid, kid, pr)", formatter_class=argparse.RawDescriptionHelpFormatter,
                       epilog="options as key=value go to log_prob (e.g. k=1000, the IWAE bound of a VAE) and/or to the "
                       "sampler of fid/kid/pr/modes (e.g. sampler=euler steps=2), by what the model accepts (`genzoo list "
                       "MODEL`); log_prob.KEY=... / sample.KEY=... name one of the two")
    q.add_argument("run_dir")
    q.add_argument("options", nargs="*", metavar="key=value", help="model.log_prob and model.sample options")
    from .metric_registry import metric_names, metrics_help

    q.add_argument("--metrics", default=None, help=f"comma-separated subset of {','.join(metric_names())} (default: the "
                   f"recipe's eval.metrics). {metrics_help()}")
    q.add_argument("--split", default=None, help="valid or test (default test)")
    q.add_argument("--n-samples", type=int, default=None, help="samples for fid/kid/pr (default 10000)")
    q.add_argument("--limit", type=int, default=None, help="evaluate nll on a fixed random subset of N examples")
    q.add_argument("--extractor", default=None, metavar="mnist|cifar10|inception|raw|FILE",
                   help="feature network of fid/kid/pr/recon: mnist (genzoo's MNIST classifier), cifar10 (genzoo's CIFAR-10 "
                        "classifier, 3x32x32), inception (the FID Inception-v3; weights from $GENZOO_INCEPTION_WEIGHTS or torch's hub cache), raw (the data itself), or "
                        "FILE.safetensors (your MNISTFeatureNet or CIFAR10FeatureNet weights); default: mnist for MNIST, "
                        "cifar10 for CIFAR-10, raw for the 2-D toys and 8x8 digits, required for other data")
    q.add_argument("--allow-small", action="store_true",
                   help="compute fid/kid/pr with fewer than 1000 samples or reference examples (biased; marked small_sets "
                        "in the result); without it they are refused")
    q.add_argument("--out", default=None, help="metrics JSON file (default RUN_DIR/metrics.json); every evaluation is kept "
                   "in it, keyed by what decides its numbers; use it when RUN_DIR is read-only")
    q.add_argument("--seed", type=int, default=0)
    q.add_argument("--batch-size", type=int, default=None, metavar="N",
                   help="images per sampling call and examples per log_prob call (default: the model's measured chunks)")
    q.add_argument("--raw", action="store_true", help="use the raw weights instead of the EMA weights")
    q.add_argument("--device", default="cpu", metavar="auto|cpu|cuda|mps",
                   help="where the model and the feature net run: auto (cuda if available, else mps, else cpu), cpu "
                        "(default), cuda[:N], mps")
    q.add_argument("--no-progress", action="store_true")

    q = sub.add_parser("reflow", help="rectified flow: ODE pairs from a trained flow-matching run, then train the next flow on them",
                       formatter_class=argparse.RawDescriptionHelpFormatter, epilog=EPILOG_REFLOW)
    q.add_argument("run_dir", help="a trained run with model.process=flow (1-rectified flow = flow matching)")
    q.add_argument("overrides", nargs="*", metavar="key=value", help="training overrides for the new run, e.g. train.steps=2000")
    q.add_argument("--pairs", type=int, default=50000, help="number of (x0, z) pairs to generate (default 50000)")
    q.add_argument("--ode-steps", type=int, default=100, help="steps of the ODE sampler that makes the pairs (default 100)")
    q.add_argument("--sampler", default="euler", help="deterministic sampler for the pairs: euler (default), heun, dpmpp_2m, ode_adaptive, ddim")
    q.add_argument("--precision", default="fp32", choices=["fp32", "bf16", "auto"],
                   help="network precision while making the pairs (bf16: autocast, about twice as fast on CPUs with "
                        "AVX-512 bf16 but several times slower on AVX2-only CPUs; auto: bf16 only where it is fast)")
    q.add_argument("--out", default=None, help="the new run folder (default RUN_DIR-reflow, or RUN_DIR-distill)")
    q.add_argument("--fresh", action="store_true", help="start from random weights instead of RUN_DIR's (the paper starts from them)")
    q.add_argument("--distill", action="store_true",
                   help="train a one-step generator on the pairs (loss only at t = 1) instead of the next rectified flow")
    q.add_argument("--no-progress", action="store_true")

    q = sub.add_parser("bench", help="the leaderboard: train every model of a track under one budget, evaluate, report",
                       formatter_class=argparse.RawDescriptionHelpFormatter, epilog=EPILOG_BENCH)
    q.add_argument("action", nargs="?", default="run", choices=["run", "report", "status", "nfe"],
                   help="run (default): every cell not done yet; report: write the report from the cells; status: list the cells; "
                        "nfe: FID against NFE (1-128, and 1000 where the recipe's sampler is a 1000-step chain) for the "
                        "finished diffusion-family cells")
    q.add_argument("--out", default="leaderboard", help="the leaderboard folder: cells/ (results, kept), runs/ (run folders), "
                   "report files (default ./leaderboard; genzoo's own: benchmarks/leaderboard)")
    q.add_argument("--track", action="append", metavar="NAME", help="binary, grey, text, vector or cifar10 (repeatable; default all, cifar10 only where its data is found)")
    q.add_argument("--only", action="append", metavar="ROW", help="only these rows (repeatable): ROW on every chosen track (--only gan), TRACK/ROW on one (--only grey/gan)")
    q.add_argument("--seeds", default=None, metavar="0,1,2", help="training seeds (default: 0, and 0,1,2 for the seed-noise rows)")
    q.add_argument("--budget", type=float, default=None, metavar="SECONDS",
                   help="training seconds per cell (default: the track's, 1800 = 30 minutes for binary, grey and text, 300 for vector)")
    q.add_argument("--rerun-stale", action="store_true", help="train again the cells made from another recipe, protocol or version")
    q.add_argument("--max-cells", type=int, default=0, metavar="N", help="stop after running N cells (0: all)")
    q.add_argument("--dry-run", action="store_true", help="say which cells would run, run none")
    q.add_argument("--smoke", action="store_true", help="an off-protocol check of the harness: 200 samples, 100 test examples, "
                   "small sets allowed (such cells are marked off-protocol; `bench report --smoke` ranks them too)")
    q.add_argument("--progress", action="store_true", help="progress bars while training and evaluating")
    q.add_argument("--readme", default=None, metavar="README.md", help="report: also put the leaderboard excerpt between "
                   "the excerpt markers of this file (the project's README)")

    q = sub.add_parser("demo", help="train the demo VAE on MNIST (about 2.5 min on 2 cores) and evaluate it")
    q.add_argument("--run-dir", default="runs/demo")
    q.add_argument("overrides", nargs="*", metavar="key=value")
    return p


def _model_or_recipe(name: str) -> dict:
    from .config import CONFIG_DIR, default_recipe_for, load_recipe
    from .registry import _REGISTRY, list_models

    models = list_models()
    if not (CONFIG_DIR / f"{name}.yaml").is_file() and name.replace("-", "_") in models:
        name = name.replace("-", "_")  # `genzoo train vq-prior` = vq_prior
    if (CONFIG_DIR / f"{name}.yaml").is_file():
        return load_recipe(name)
    if name in models:
        return default_recipe_for(name)
    from .errors import did_you_mean

    recipes = sorted(q.stem for q in CONFIG_DIR.glob("*.yaml"))
    raise ConfigError(
        f"unknown model or recipe {name!r}{did_you_mean(name, list(_REGISTRY) + recipes)}; "
        f"models: {', '.join(models)}; recipes: {', '.join(recipes)}"
    )


def cmd_list(args) -> int:
    from .catalog import CONFIG_DIR, load_catalog, render_list, render_model, render_recipe

    if args.model:
        name = args.model
        models = load_catalog()["models"]
        if (CONFIG_DIR / f"{name}.yaml").is_file() and name not in models:
            print(render_recipe(name))
            return 0
        if name not in models and name.replace("-", "_") in models:
            name = name.replace("-", "_")
        if name not in models:
            from .errors import did_you_mean

            recipes = sorted(q.stem for q in CONFIG_DIR.glob("*.yaml"))
            raise ConfigError(f"{args.model!r} is neither a model nor a recipe{did_you_mean(args.model, list(models) + recipes)}; "
                              "`genzoo list` lists both")
        print(render_model(name))
        return 0
    print(render_list())
    return 0


def cmd_train(args) -> int:
    from .config import apply_overrides, load_recipe, parse_overrides, read_run_config_for_resume
    from .data import infer_dataset_from_path
    from .train.run import train

    overrides = parse_overrides(args.overrides)
    run_dir = args.run_dir
    if args.resume:
        # `--resume RUN train.steps=N`: argparse hands the first key=value to the model positional
        if args.model and "=" in args.model:
            overrides = parse_overrides([args.model]) + overrides
            args.model = None
        rd = args.resume if isinstance(args.resume, str) else run_dir
        if rd is None:
            raise ConfigError("--resume needs a run folder: `genzoo train --resume RUN_DIR`")
        if args.model or args.config or args.data or args.data_root:
            raise ConfigError("--resume takes the model, recipe and data from RUN_DIR/config.yaml; drop the model name / "
                              "--config / --data (only train.* overrides are allowed)")
        if args.overwrite:
            raise ConfigError("--resume continues a run and --overwrite replaces it; pass one of them")
        cfg = read_run_config_for_resume(rd, overrides)
        run_dir = rd
    else:
        if args.config:
            cfg = load_recipe(args.config)
            if args.model:
                overrides.insert(0, ("model", args.model))
        elif args.model:
            cfg = _model_or_recipe(args.model)
        else:
            raise ConfigError("name a model or recipe (`genzoo train vae`) or pass --config FILE; see `genzoo list`")
        if args.data:
            name, opts = infer_dataset_from_path(args.data)
            cfg["data"] = {"name": name, **opts}
        if args.data_root:
            cfg.setdefault("data", {})["root"] = args.data_root
        cfg = apply_overrides(cfg, overrides)
    if args.no_progress:  # after the stored config of a resumed run, so the flag always wins
        cfg.setdefault("train", {})["progress"] = False
    out_dir, summary = train(cfg, Path(run_dir) if run_dir else None, resume=bool(args.resume), overwrite=args.overwrite)
    print(f"run folder: {out_dir}")
    print(f"samples:    {summary.get('samples')}")
    print(f"summary:    {json.dumps({k: summary[k] for k in ('steps', 'stopped_by', 'train_time_s', 'images_per_s', 'precision', 'last_losses')})}")
    if summary.get("best"):
        print(f"best:       step {summary['best']['step']}, validation loss {summary['best']['valid_loss']:.4g} "
              f"(train.keep_best: eval and sample load {out_dir / 'best'})")
    return 0


def cmd_reflow(args) -> int:
    from .pipelines.reflow import reflow

    reflow(args.run_dir, pairs=args.pairs, ode_steps=args.ode_steps, sampler=args.sampler, precision=args.precision,
           out=args.out, distill=args.distill, fresh=args.fresh, overrides=args.overrides, progress=_bars(args),
           no_progress=args.no_progress)
    return 0


def cmd_sample(args) -> int:
    from .config import parse_overrides
    from .pipelines.sample import sample_run

    w = sample_run(args.run_dir, args.n, out=args.out, options=dict(parse_overrides(args.options)), ema=not args.raw,
                   device=args.device, batch_size=args.batch_size, seed=args.seed, progress=args.n > 500 and _bars(None))
    if w.text is not None:
        print(w.text)
    print(w.summary)
    return 0


def cmd_eval(args) -> int:
    from .eval.runner import run_evaluation, writer_lock

    metrics = [m.strip() for m in args.metrics.split(",") if m.strip()] if args.metrics else None
    with writer_lock(args.run_dir, args.out):
        return _eval_and_write(args, metrics, run_evaluation)


def _eval_and_write(args, metrics, run_evaluation) -> int:
    from .config import parse_overrides

    ev = run_evaluation(args.run_dir, metrics, split=args.split, n_samples=args.n_samples, nll_limit=args.limit,
                        options=dict(parse_overrides(args.options)), extractor=args.extractor,
                        allow_small=args.allow_small, ema=not args.raw, seed=args.seed,
                        progress=_bars(args), out=args.out, device=args.device, batch_size=args.batch_size)
    print(json.dumps(ev.record, indent=2, default=float), flush=True)  # the results first: a failed write loses nothing
    try:
        path = ev.write()
    except OSError as e:
        where = e.filename or ev.path
        raise ConfigError(f"the results are printed above but could not be written to {where}: {e.strerror or e}; "
                          f"pass --out FILE to write them to a writable place (e.g. --out ~/{Path(args.run_dir).name}-metrics.json)"
                          ) from None
    except ConfigError as e:
        raise ConfigError(f"the results are printed above but were not written: {e}") from None
    print(f"genzoo: evaluation kept in {path} under {ev.record['key']!r}", file=sys.stderr)
    return 0


def cmd_bench(args) -> int:
    from .bench.tracks import SMOKE_PROTOCOL

    if args.seeds is not None:
        try:
            seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
        except ValueError:
            raise ConfigError(f"--seeds takes comma-separated integers such as 0,1,2, got {args.seeds!r}") from None
    else:
        seeds = None
    if args.budget is not None and args.budget <= 0:
        raise ConfigError(f"--budget must be a positive number of seconds, got {args.budget:g}")
    protocol = SMOKE_PROTOCOL if args.smoke else None
    if args.action == "report":
        from .bench.report import write_report

        paths = write_report(Path(args.out), include_off=args.smoke)
        for path in paths:
            print(path)
        if args.readme:
            from .bench.report import update_readme

            if args.smoke:
                raise ConfigError("--readme takes the on-protocol cells only; drop --smoke")
            changed = update_readme(Path(args.readme), (Path(args.out) / "readme_excerpt.md").read_text().rstrip("\n"))
            print(f"{args.readme}: leaderboard excerpt {'updated' if changed else 'already up to date'}")
        return 0
    from .bench.harness import nfe_sweep, run_bench, status_table

    if args.action == "nfe":
        swept = nfe_sweep(Path(args.out), args.track or ["grey"], only=args.only, protocol=protocol,
                          log=lambda m: print(m, file=sys.stderr, flush=True))
        print(f"swept: {', '.join(swept) or 'nothing (no finished diffusion-family cell)'}")
        return 0

    if args.action == "status":
        for cid, st in status_table(Path(args.out), args.track, args.budget, protocol):
            print(f"{st:7s} {cid}")
        return 0
    res = run_bench(Path(args.out), args.track, only=args.only, seeds=seeds, budget=args.budget, rerun_stale=args.rerun_stale,
                    max_cells=args.max_cells, protocol=protocol, progress=args.progress, dry_run=args.dry_run,
                    log=lambda m: print(m, file=sys.stderr, flush=True))
    counts: dict = {}
    for r in res:
        counts[r["status"]] = counts.get(r["status"], 0) + 1
        if args.dry_run:
            print(f"{r['status']:20s} {r['cell']}")
    print("cells: " + ", ".join(f"{v} {k}" for k, v in sorted(counts.items())))
    return 1 if counts.get("failed") else 0


def cmd_demo(args) -> int:
    from .demo import run_demo

    run_demo(args.run_dir, args.overrides)
    return 0


def main(argv=None) -> int:
    args = None
    try:
        parser = build_parser()
        args, extra = parser.parse_known_args(argv)
        if args.cmd is None:
            parser.print_help()
            return 2
        # key=value overrides may come after options (argparse stops a nargs='*' positional at the first option)
        field = "overrides" if hasattr(args, "overrides") else "options" if hasattr(args, "options") else None
        bad = [a for a in extra if a.startswith("-") or "=" not in a or field is None]
        if bad:
            raise ConfigError(f"genzoo {args.cmd}: unrecognized arguments: {' '.join(bad)} (see `genzoo {args.cmd} --help`)")
        if extra:
            setattr(args, field, list(getattr(args, field) or []) + extra)
        if getattr(args, "batch_size", None) is not None and args.batch_size <= 0:
            raise ConfigError(f"--batch-size must be a positive number of images, got {args.batch_size}")
        return {"list": cmd_list, "train": cmd_train, "sample": cmd_sample, "eval": cmd_eval, "demo": cmd_demo,
                "reflow": cmd_reflow, "bench": cmd_bench}[args.cmd](args)
    except Interrupted as e:
        print(f"genzoo: {e}", file=sys.stderr)
        return e.exit_code
    except GenzooError as e:
        print(f"genzoo: error: {_one_line(e)}", file=sys.stderr)
        return 2
    except (ValueError, TypeError) as e:
        # a model's sample/log_prob refusing an option value (`k=abc`): name the options, not a traceback
        opts = list(getattr(args, "options", None) or []) if args is not None and args.cmd in ("sample", "eval") else []
        if not opts:
            raise
        print(f"genzoo: error: the options {' '.join(opts)} were refused ({_one_line(e)}); check their values and types "
              f"(`genzoo list MODEL` lists a model's options)", file=sys.stderr)
        return 2
    except BrokenPipeError:  # `genzoo list | head`: the reader left; not an error
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except OSError as e:  # a read-only folder, a full disk, a missing path: the OS's words and what to do
        print(f"genzoo: error: {_os_error_line(e)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("genzoo: interrupted (nothing was being trained; no run folder changed)" if getattr(args, "cmd", None) != "train"
              else "genzoo: interrupted before training started; no checkpoint was written", file=sys.stderr)
        return 130


def _one_line(e: BaseException) -> str:
    return " ".join(str(e).split())


def _os_error_line(e: OSError) -> str:
    import errno

    where = f" {e.filename}" if e.filename else ""
    what = f"cannot write{where}: {e.strerror or e}"
    if e.errno == errno.ENOSPC:
        return (f"{what} (the disk is full); free some space and rerun - a training run continues from its last "
                "complete checkpoint with `genzoo train --resume RUN_DIR`")
    if e.errno in (errno.EACCES, errno.EROFS, errno.EPERM):
        return f"{what} (the folder is read-only); pick a writable --run-dir / --out"
    if e.errno == errno.ENOENT:
        return f"no such file or folder:{where or ' ' + str(e)}; check the path"
    return f"{_one_line(e)}; check the path and that it is writable"


if __name__ == "__main__":
    sys.exit(main())
