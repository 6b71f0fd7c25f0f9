"""``genzoo sample``: draw samples from a trained run and write them to a file (a PNG grid, a
``.npy`` / ``.npz`` array, or decoded text), with the run's stored sampling options under the
ones given. cli.py only parses the arguments and prints what this returns."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..errors import ConfigError

#: what --out may end in
SAMPLE_SUFFIXES = (".png", ".npy", ".npz", ".txt")


@dataclass
class Written:
    """What :func:`sample_run` wrote: the file, a one-line summary, and the decoded text of text samples."""

    path: Path
    summary: str
    text: str | None = None


def sample_run(run_dir, n: int, *, out=None, options: dict | None = None, ema: bool = True, device: str = "auto",
               batch_size: int | None = None, seed: int = 0, progress: bool = False) -> Written:
    """Draw ``n`` samples of the run in ``run_dir`` (its ``sample`` section of config.yaml updated by
    ``options``) and write them to ``out`` (default RUN/sample.png, RUN/sample.txt for text)."""
    import numpy as np

    from ..eval.runner import draw_samples, resolve_device, sample_precision
    from ..train.run import load_data, load_run
    from ..viz import save_samples

    if n <= 0:
        raise ConfigError(f"--n must be positive, got {n}")
    if out is not None and Path(out).suffix not in SAMPLE_SUFFIXES:
        raise ConfigError(f"--out must end in .png, .npy, .npz or (text) .txt, got {Path(out).name!r}")
    model, cfg, spec = load_run(run_dir, ema=ema, device=resolve_device(device))
    opts = dict(cfg.get("sample") or {})
    opts.update(options or {})
    model.check_options(opts, model.sample_options)
    out = Path(out) if out else Path(run_dir) / ("sample.txt" if spec.kind == "text" else "sample.png")
    if out.suffix == ".txt" and spec.kind != "text":
        raise ConfigError("only text samples can be written as .txt; use --out FILE.png or .npy")
    if out.suffix == ".png" and spec.kind == "text":
        raise ConfigError("text samples cannot be a PNG; use --out FILE.npy")
    x = draw_samples(model, n, batch_size=batch_size, seed=seed, progress=progress, **opts)
    text = None
    if out.suffix == ".txt":
        vocab = load_data(cfg["data"], "train").vocab
        text = "\n\n-----\n\n".join("".join(vocab[int(i)] for i in row) for row in x.long())
        out.write_text(text + "\n")
    elif out.suffix == ".npy":
        np.save(out, x.numpy())
    elif out.suffix == ".npz":
        np.savez_compressed(out, samples=x.numpy())
    else:
        save_samples(x, out, spec)
    summary = (f"wrote {n} samples ({model.loaded_from['weights']} weights, step {model.loaded_from['step']}, "
               f"{sample_precision(model, opts, model.device)}) to {out}")
    return Written(out, summary, text)
