"""What ``genzoo list`` shows, without importing torch.

The models and data sets register themselves when their modules are imported, which pulls
in torch (about a second). ``genzoo list`` reads a snapshot of those registries instead,
``catalog.json`` beside this file, written by ``python -m genzoo.catalog`` and checked
against the live registries by tests/test_cli_reliability.py (so it cannot drift). The
recipes are read from configs/ directly.
"""
from __future__ import annotations

import json
import textwrap
from pathlib import Path

from .config import CONFIG_DIR  # noqa: F401  (the recipes folder; config.py imports no torch)

CATALOG = Path(__file__).resolve().parent / "catalog.json"


def build_catalog() -> dict:
    """The live registries as plain JSON (imports every model)."""
    from .data import list_datasets
    from .registry import list_models

    models = {}
    for name, e in list_models().items():
        models[name] = {
            "family": e.family, "likelihood": e.cls.likelihood, "summary": e.summary, "paper": e.paper,
            "arguments": _arguments(e),
            "sample_options": list(e.cls.sample_options), "log_prob_options": list(e.cls.log_prob_options),
        }
    data = {}
    for name, info in list_datasets().items():
        data[name] = {"description": getattr(info, "description", ""),
                      "options": {k: repr(v) for k, v in getattr(info, "options", {}).items()}}
    return {"models": models, "datasets": data}


def _arguments(e) -> dict:
    """Each argument's default as its repr; a nested network section as one ``SECTION.FIELD`` entry per
    field (the form ``model.SECTION.FIELD=VALUE`` takes on the command line)."""
    out = {}
    specs = e.network_specs()
    for k, v in e.signature_defaults().items():
        if k in specs:
            out.update({f"{k}.{f}": repr(x) for f, x in v.items()})
        else:
            out[k] = repr(v)
    return out


def load_catalog() -> dict:
    return json.loads(CATALOG.read_text())


def recipe_description(path: Path) -> str:
    """The leading comment block of a recipe, as one paragraph."""
    lines = []
    for line in Path(path).read_text().splitlines():
        if not line.startswith("#"):
            break
        lines.append(line.lstrip("#").strip())
    return " ".join(x for x in lines if x)


_ABBREV = ("e.g", "i.e", "al", "vs", "cf", "Eq", "eq", "Fig", "Sec", "approx", "No")


def first_sentence(text: str, limit: int = 220) -> str:
    """The first sentence of ``text`` (up to a full stop followed by a space), never cut mid-word."""
    import re

    for m in re.finditer(r"\.(\s|$)", text):
        word = text[: m.start()].rsplit(" ", 1)[-1]
        if word.lstrip("(") not in _ABBREV and not word[-1:].isdigit():
            text = text[: m.start() + 1]
            break
    if len(text) > limit:
        text = text[:limit].rsplit(" ", 1)[0] + " ..."
    return text


def _columns(rows: list[tuple[str, str]], indent: int = 2, width: int | None = None) -> str:
    """Two columns, the first as wide as its longest entry, the second wrapped under itself."""
    import shutil

    width = width or max(60, min(shutil.get_terminal_size((100, 24)).columns, 140))
    w = max(len(a) for a, _ in rows) + 2
    out = []
    for a, b in rows:
        pad = " " * (indent + w)
        out.append(textwrap.fill(b, width=width, initial_indent=" " * indent + a.ljust(w), subsequent_indent=pad)
                   if b else " " * indent + a)
    return "\n".join(out)


def render_list() -> str:
    cat = load_catalog()
    models = [(n, f"{m['family']}; likelihood {m['likelihood']}. {m['summary']}") for n, m in cat["models"].items()]
    data = [(n, d["description"]) for n, d in cat["datasets"].items()]
    recipes = [(p.stem, first_sentence(recipe_description(p))) for p in sorted(CONFIG_DIR.glob("*.yaml"))]
    return "\n".join([
        "models (genzoo list MODEL for its arguments and options):", _columns(models), "",
        "data sets (data.name=...):", _columns(data), "",
        "recipes (genzoo train NAME; genzoo list NAME shows one):", _columns(recipes),
    ])


def render_model(name: str) -> str:
    m = load_catalog()["models"][name]
    lines = [f"{name}  ({m['family']}; likelihood: {m['likelihood']})", f"  {m['summary']}", f"  paper: {m['paper']}",
             "  arguments (model.KEY=VALUE):"]
    lines += [f"    {k} = {v}" for k, v in m["arguments"].items()]
    if m["sample_options"]:
        lines.append(f"  sample options: {', '.join(m['sample_options'])}")
    if m["log_prob_options"]:
        lines.append(f"  log_prob options: {', '.join(m['log_prob_options'])}")
    recipes = [p.stem for p in sorted(CONFIG_DIR.glob("*.yaml")) if _recipe_model(p) == name]
    if recipes:
        lines.append(f"  recipes: {', '.join(recipes)}")
    return "\n".join(lines)


def _recipe_model(path: Path) -> str | None:
    for line in Path(path).read_text().splitlines():
        if line.startswith("model:"):
            return line.split(":", 1)[1].split("#")[0].strip()
    return None


def render_recipe(name: str) -> str:
    p = CONFIG_DIR / f"{name}.yaml"
    body = [ln for ln in p.read_text().splitlines() if not ln.startswith("#")]
    return "\n".join([f"recipe {name} (configs/{name}.yaml; train it with `genzoo train {name}`)",
                      textwrap.fill(recipe_description(p), width=100, initial_indent="  ", subsequent_indent="  "),
                      "", *("  " + ln for ln in body if ln.strip())])


def main() -> None:  # pragma: no cover - a maintenance command
    CATALOG.write_text(json.dumps(build_catalog(), indent=1, sort_keys=False) + "\n")
    print(f"wrote {CATALOG}")


if __name__ == "__main__":  # pragma: no cover
    main()
