"""MkDocs hooks for genzoo's site (mkdocs.yml: ``hooks: [scripts/docs_hooks.py]``).

The family pages hold markers that this file expands from what the repository holds, so that
no figure on the site is typed in by hand:

* ``<!-- genzoo:models FAMILY -->``   the registered models of a family (``src/genzoo/catalog.json``,
  the snapshot of the registry that a test keeps equal to it): paper, likelihood, summary, options;
* ``<!-- genzoo:recipes FAMILY -->``  the recipes (``configs/*.yaml``) of that family with their
  training budget and data, read from the YAML files;
* ``<!-- genzoo:measured FAMILY -->`` the family's finished leaderboard cells, read from
  ``benchmarks/leaderboard/leaderboard.csv`` (written by ``genzoo bench report``);
* ``<!-- genzoo:gallery FAMILY -->``  the sample grids of those cells (``cells/TRACK/ROW-sSEED.png``)
  and of the older benchmark scripts listed in GALLERY below;
* ``<!-- genzoo:report-link -->``     a link to the leaderboard's HTML report when it has been built.

It also adds generated files to the site: ``results.md`` (``benchmarks/RESULTS.md`` as it is), the
gallery images and the leaderboard report (``benchmarks/leaderboard/{report,plots}`` and its CSV).
Nothing here imports torch: the catalogue and the tracks are plain data.
"""
from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import yaml
from mkdocs.structure.files import File

ROOT = Path(__file__).resolve().parent.parent
LEADERBOARD = ROOT / "benchmarks" / "leaderboard"
CATALOG = ROOT / "src" / "genzoo" / "catalog.json"
CONFIGS = ROOT / "configs"

FAMILIES = {"vae": "VAEs", "autoregressive": "autoregressive models", "flows": "normalizing flows",
            "diffusion": "diffusion and few-step models", "gan": "GANs", "vq": "vector-quantised models"}

# Sample grids from the per-family benchmark scripts and the demo (the leaderboard's own grids are found
# in its cells). (image path in the repository, caption with the command that made it)
GALLERY = {
    "vae": [("docs/img/vae_demo_samples.png",
             "The demo MLP VAE (configs/vae.yaml, 7,000 steps, static binarised MNIST), Bernoulli means: `make demo`"),
            ("docs/img/vae_demo_reconstructions.png", "Its reconstructions of test images: `make demo`")],
    "gan": [("benchmarks/gans_mnist_samples.png",
             "Every GAN of `python benchmarks/gans_mnist.py` after 30 minutes of training on 2 CPU cores")],
    "diffusion": [("benchmarks/diffusion_fid_vs_nfe.png",
                   "FID against network evaluations: `python benchmarks/diffusion_mnist.py`"),
                  ("benchmarks/fast_sampling_fid_vs_nfe.png",
                   "Few-step models, FID against steps: `python benchmarks/fast_sampling_mnist.py`")],
}

UNITS = {"binary": "nats / image", "grey": "bits / dim", "text": "bits / char", "vector": "KL, nats"}

_MARK = re.compile(r"<!--\s*genzoo:([a-z-]+)\s*([\w-]*)\s*-->")


# ---------------------------------------------------------------- the markers
def _table(header: list[str], rows: list[list[str]]) -> str:
    def cell(v) -> str:
        return str(v).replace("|", "\\|").replace("\n", " ")

    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(cell(v) for v in r) + " |" for r in rows]
    return "\n".join(out)


def _catalog() -> dict:
    return json.loads(CATALOG.read_text())["models"]


def models_table(family: str) -> str:
    rows = []
    for name, m in sorted(_catalog().items()):
        if m["family"] != family:
            continue
        opts = ", ".join(f"`{o}`" for o in m["sample_options"]) or "-"
        lp = ", ".join(f"`{o}`" for o in m["log_prob_options"]) or "-"
        rows.append([f"`{name}`", m["paper"], m["likelihood"], m["summary"], opts, lp])
    if not rows:
        raise ValueError(f"no registered model of family {family!r}")
    return ("Registered models of this family (`genzoo list MODEL` prints every argument and option):\n\n"
            + _table(["model", "paper", "log_prob", "what", "sample options", "log_prob options"], rows))


def _budget(train: dict) -> str:
    if train.get("time_budget"):
        return f"{float(train['time_budget']) / 60:g} min"
    steps, batch = train.get("steps"), train.get("batch_size")
    return f"{steps:,} steps x {batch}" if steps and batch else str(steps or "-")


def _data(data: dict) -> str:
    if not data:
        return "-"
    bits = [str(data.get("name", "-"))]
    for k in ("binarize", "dequantize", "value_range"):
        if data.get(k) not in (None, "none"):
            bits.append(f"{k}={data[k]}")
    return " ".join(bits)


def recipes(family: str) -> list[dict]:
    from genzoo.catalog import first_sentence, recipe_description

    cat = _catalog()
    out = []
    for path in sorted(CONFIGS.glob("*.yaml")):
        cfg = yaml.safe_load(path.read_text())
        model = cfg.get("model")
        if cat.get(model, {}).get("family") != family:
            continue
        out.append({"name": path.stem, "model": model, "data": _data(cfg.get("data") or {}),
                    "budget": _budget(cfg.get("train") or {}), "what": first_sentence(recipe_description(path))})
    return out


def recipes_table(family: str) -> str:
    rows = [[f"`{r['name']}`", f"`{r['model']}`", r["data"], r["budget"], r["what"]] for r in recipes(family)]
    if not rows:
        return "This family has no recipe of its own."
    return ("Recipes (`genzoo train RECIPE`; the budget is the recipe's own, on 2 CPU cores unless it says "
            "otherwise):\n\n" + _table(["recipe", "model", "data", "training", "what"], rows))


def leaderboard_rows(family: str, csv_path: Path = LEADERBOARD / "leaderboard.csv") -> list[dict]:
    if not csv_path.exists():
        return []
    with open(csv_path, newline="") as f:
        return [r for r in csv.DictReader(f) if r["family"] == family and r["status"] == "done"]


def _num(v: str, fmt: str = "{:.3g}") -> str:
    if v in (None, ""):
        return "-"
    try:
        x = float(v)
    except ValueError:
        return v
    return f"{int(x):,}" if x.is_integer() and abs(x) >= 100 else fmt.format(x)


def measured(family: str, csv_path: Path = LEADERBOARD / "leaderboard.csv") -> str:
    rows = leaderboard_rows(family, csv_path)
    if not rows:
        return ("No leaderboard cell of this family has finished yet: the [leaderboard](leaderboard.md) is "
                "built one 30-minute cell at a time (`genzoo bench --out benchmarks/leaderboard`), and this "
                "section fills in from its CSV when `genzoo bench report` has run.")
    body = []
    for r in rows:
        lik = _num(r["lik_value"], "{:.4g}")
        if lik != "-":
            lik += f" ({UNITS.get(r['track'], '')}, {r['likelihood']}, {_num(r['nll_examples'])} ex.)"
        fid = _num(r["fid"]) + (f" (floor {_num(r['fid_floor'])})" if r["fid_floor"] else "")
        model = r["model"] + (" (peer)" if r["peer"] else "")
        body.append([r["track"], f"{model}, seed {r['seed']}", lik, fid, _num(r["nfe"]), _num(r["parameters"]),
                     f"{_num(r['steps'])} steps in {float(r['budget_s']) / 60:g} min, {r['train_precision']}",
                     r["date"], f"`{r['command']}`"])
    return ("Finished leaderboard cells of this family (from `benchmarks/leaderboard/leaderboard.csv`; one "
            "protocol for every family, see [the leaderboard](leaderboard.md)):\n\n"
            + _table(["track", "model", "likelihood", "FID, 10k samples", "NFE", "params", "training", "date",
                      "command"], body))


def gallery_items(family: str, csv_path: Path = LEADERBOARD / "leaderboard.csv") -> list[tuple[str, str, str]]:
    """(image path in the repository, path in the site, caption)."""
    items = []
    for r in leaderboard_rows(family, csv_path):
        png = LEADERBOARD / "cells" / f"{r['cell']}.png"
        if png.exists():
            items.append((str(png.relative_to(ROOT)), f"gallery/{r['cell']}.png",
                          f"Leaderboard cell {r['cell']}: `{r['command']}` ({r['date']})"))
    for src, caption in GALLERY.get(family, []):
        if (ROOT / src).exists():
            items.append((src, f"gallery/{Path(src).name}", caption))
    return items


def gallery(family: str) -> str:
    items = gallery_items(family)
    if not items:
        return "No sample grid of this family is in the repository yet."
    return "\n\n".join(f"![{Path(site).stem}]({site})\n\n*{caption}*" for _, site, caption in items)


def report_link() -> str:
    if (LEADERBOARD / "report" / "index.html").exists():
        return ("The HTML report of the finished cells, with its plots: "
                "[leaderboard report](leaderboard-report/report/index.html).")
    return "The HTML report appears here once `genzoo bench report --out benchmarks/leaderboard` has run."


def expand(markdown: str) -> str:
    def one(m: re.Match) -> str:
        kind, arg = m.group(1), m.group(2)
        if kind == "report-link":
            return report_link()
        if arg not in FAMILIES:
            raise ValueError(f"genzoo docs marker {m.group(0)!r}: unknown family {arg!r} (one of {sorted(FAMILIES)})")
        fn = {"models": models_table, "recipes": recipes_table, "measured": measured, "gallery": gallery}.get(kind)
        if fn is None:
            raise ValueError(f"genzoo docs marker {m.group(0)!r}: unknown kind {kind!r}")
        return fn(arg)

    return _MARK.sub(one, markdown)


# ---------------------------------------------------------------- the hooks
def _add(files, config, src_uri: str, path: Path) -> None:
    if files.get_file_from_path(src_uri) is None:
        files.append(File.generated(config, src_uri, abs_src_path=str(path)))


def on_files(files, config):
    _add(files, config, "results.md", ROOT / "benchmarks" / "RESULTS.md")
    for family in FAMILIES:
        for src, site, _ in gallery_items(family):
            _add(files, config, site, ROOT / src)
    if (LEADERBOARD / "report" / "index.html").exists():
        for sub in ("report", "plots"):
            for p in sorted((LEADERBOARD / sub).glob("*")):
                if p.is_file():
                    _add(files, config, f"leaderboard-report/{sub}/{p.name}", p)
        for p in sorted((LEADERBOARD / "cells").glob("*/*.png")):   # the report's sample grids (../cells/TRACK/ROW.png)
            _add(files, config, f"leaderboard-report/cells/{p.parent.name}/{p.name}", p)
        if (LEADERBOARD / "leaderboard.csv").exists():
            _add(files, config, "leaderboard-report/leaderboard.csv", LEADERBOARD / "leaderboard.csv")
    return files


def on_post_build(config):
    # the report links its markdown table as a plain file (a .md among the site's files would become a page)
    if (LEADERBOARD / "report" / "index.html").exists() and (LEADERBOARD / "leaderboard.md").exists():
        dest = Path(config["site_dir"]) / "leaderboard-report" / "leaderboard.md"
        dest.write_text((LEADERBOARD / "leaderboard.md").read_text())


def on_page_markdown(markdown, page, config, files):
    markdown = markdown.replace("](../benchmarks/RESULTS.md", "](results.md")
    return expand(markdown)
