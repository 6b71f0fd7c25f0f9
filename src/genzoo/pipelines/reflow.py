"""Rectified-flow reflow and one-step distillation as a pipeline over genzoo's layers: make (x0, z) pairs with a
trained flow's ODE (models), train the next run on them (train), report straightness or one-step error (eval).
``genzoo reflow`` (cli.py) only parses its arguments and calls :func:`reflow`.

Liu, Gong & Liu 2022, "Flow Straight and Fast: Learning to Generate and Transfer Data with Rectified Flow":
sec. 2.2 (reflow: the k+1-rectified flow is trained on the pairs (ODE_k(z), z)), eq. 5 (straightness), sec. 2.3
(distillation into a one-step generator).
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from types import SimpleNamespace

from ..errors import ConfigError


def reflow(run_dir, *, pairs: int = 50000, ode_steps: int = 100, sampler: str = "euler", precision: str = "fp32",
           out=None, distill: bool = False, fresh: bool = False, overrides=(), progress: bool = False,
           no_progress: bool = False) -> dict:
    """Rectified flow (Liu et al. 2022) from a trained flow-matching run ``run_dir``: ``pairs`` (x0, z) pairs from its
    ODE (``sampler``, ``ode_steps``, network ``precision``), then the next flow trained on them in ``out`` (default
    RUN_DIR-reflow) from RUN_DIR's weights (``fresh``: random ones), or with ``distill`` a one-step generator
    (RUN_DIR-distill). A killed run resumes; a finished one is refused. Returns the report written to
    OUT/reflow.json (straightness, or the one-step error, before and after)."""
    from ..train.run import load_run
    from ..core.precision import resolve_precision

    args = SimpleNamespace(pairs=int(pairs), ode_steps=int(ode_steps), sampler=sampler, precision=precision, out=out,
                           distill=bool(distill), fresh=bool(fresh), overrides=list(overrides), no_progress=no_progress)
    src = Path(run_dir)
    model, cfg, spec = load_run(src)
    precision = resolve_precision(args.precision, model.device.type)  # auto -> what runs here, recorded as such
    if cfg.get("model") != "diffusion" or cfg["model_args"].get("process") != "flow":
        raise ConfigError(f"{src} is not a flow-matching run (model.process=flow); reflow straightens rectified flows only")
    if cfg["model_args"].get("num_classes", 0):
        raise ConfigError("reflow is implemented for unconditional runs; this run is class-conditional")
    if cfg["model_args"].get("coupling") == "distill":
        raise ConfigError(f"{src} is a distilled one-step generator (model.coupling=distill): its ODE is not trained; "
                          "reflow or distil the flow it came from")
    if args.pairs <= 0 or args.ode_steps <= 0:
        raise ConfigError("--pairs and --ode-steps must be positive")
    coupling = "distill" if args.distill else "paired"
    out = Path(args.out) if args.out else src.parent / (src.name + ("-distill" if args.distill else "-reflow"))
    from ..core.runfolder import check_not_foreign, run_lock

    check_not_foreign(out)
    with run_lock(out, "genzoo reflow"):  # one writer: the pairs and the new run
        return _reflow_into(args, src, out, model, cfg, spec, precision, coupling, progress)


def _reflow_into(args, src, out, model, cfg, spec, precision, coupling, progress) -> dict:
    from ..config import apply_overrides, parse_overrides, read_run_config_for_resume
    from ..models.diffusion.reflow import generate_pairs, load_pairs, one_step_error, save_pairs, straightness
    from ..core.checkpoint import atomic_write_text
    from ..train.run import load_run, train

    resuming = (out / "checkpoints").is_dir()
    if resuming and (out / "reflow.json").is_file():
        raise ConfigError(f"{out} already holds a finished {'distillation' if args.distill else 'reflow'} run "
                          f"(see {out / 'reflow.json'}); pick another --out")
    if resuming and args.overrides:
        raise ConfigError(f"{out} holds a killed run that this command resumes with its own config.yaml; drop the "
                          "key=value overrides (or pick another --out)")
    pairs_file, pairs_info = out / "pairs.safetensors", out / "pairs.json"
    recipe = {"pairs": args.pairs, "sampler": args.sampler, "ode_steps": args.ode_steps, "precision": precision}
    if pairs_file.is_file():  # a killed reflow left its pairs: reuse them if they are the ones asked for
        made = json.loads(pairs_info.read_text()) if pairs_info.is_file() else {}
        if any(made.get(k) != v for k, v in recipe.items()):
            if resuming:
                raise ConfigError(f"{out} holds a killed run trained on pairs made with {made or 'other settings'}; "
                                  f"resume with the same --pairs/--sampler/--ode-steps/--precision or pick another --out")
            pairs_file.unlink()
    if not pairs_file.is_file():
        t0 = time.perf_counter()
        x, z = generate_pairs(model, args.pairs, steps=args.ode_steps, sampler=args.sampler, progress=progress,
                              precision=precision)
        source = dict(cfg["data"])
        if source.get("name") == "pairs":  # RUN_DIR is itself a reflow: point at the original data
            source = load_pairs(source["path"])[2]
        save_pairs(pairs_file, x, z, source, spec.to_dict())
        atomic_write_text(pairs_info, json.dumps({**recipe, "seconds": time.perf_counter() - t0}, indent=2))
        print(f"wrote {args.pairs} pairs to {pairs_file} ({time.perf_counter() - t0:.0f} s)")
    pairs_s = json.loads(pairs_info.read_text()).get("seconds")
    if resuming:  # a killed reflow: continue its training where it stopped, then report as usual
        new = read_run_config_for_resume(out, [])
        if new.get("model_args", {}).get("coupling") != coupling:
            raise ConfigError(f"{out} holds a killed run with model.coupling={new.get('model_args', {}).get('coupling')!r}, "
                              f"not {coupling!r}: {'drop' if coupling == 'paired' else 'add'} --distill or pick another --out")
        print(f"resuming the killed run in {out}")
    else:
        new = dict(cfg)
        new["data"] = {"name": "pairs", "path": str(pairs_file.resolve())}
        new["model_args"] = {**cfg["model_args"], "coupling": coupling}
        new["train"] = {**cfg.get("train", {})}
        if not args.fresh:
            new["train"]["init_from"] = str(src.resolve())
        new = apply_overrides(new, parse_overrides(args.overrides))
    if args.no_progress:
        new["train"]["progress"] = False
    if args.distill:  # held-out pairs from the same teacher ODE (another seed)
        hx, hz = generate_pairs(model, 500, steps=args.ode_steps, sampler=args.sampler, seed=1, precision=precision)
        before = one_step_error(model, hx, hz)
    else:
        before = straightness(model, 500, 50)
    out_dir, summary = train(new, out, resume=resuming)
    model2, _, _ = load_run(out_dir)
    report = {"source": str(src), "pairs": args.pairs, "ode_steps": args.ode_steps, "sampler": args.sampler,
              "precision": precision, "pairs_seconds": pairs_s, "coupling": coupling, "steps": summary["steps"]}
    print(f"run folder: {out_dir}")
    if args.distill:
        after = one_step_error(model2, hx, hz)
        report.update(one_step_error_before=before, one_step_error_after=after)
        print(f"one-step error against the teacher's ODE (MSE per dim, 500 held-out pairs): {before:.4g} -> {after:.4g}")
    else:
        after = straightness(model2, 500, 50)
        report.update(straightness_before=before, straightness_after=after)
        print(f"straightness (Liu et al. eq. 5, per dim, 500 paths x 50 Euler steps): {before:.4g} -> {after:.4g}")
    atomic_write_text(out_dir / "reflow.json", json.dumps(report, indent=2))
    return report
