"""Shared by every benchmark script: one JSON file per finished row, RESULTS.md rebuilt from all of them.

A row is written to ``benchmarks/results/<table>/<row>.json`` when (and only when) it is
finished, so a script killed part-way keeps the rows it finished and skips them when run
again: a table with a 30-minute budget per model is built over several sessions.
``benchmarks/RESULTS.md`` is regenerated from every row file of every table.
"""
from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import subprocess
import sys
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
# GENZOO_BENCH_DIR redirects everything (rows, RESULTS.md, run folders, plots) for a smoke test
_BASE = Path(os.environ["GENZOO_BENCH_DIR"]) if os.environ.get("GENZOO_BENCH_DIR") else HERE
RESULTS_DIR = _BASE / "results"
RESULTS_MD = _BASE / "RESULTS.md"
OUT_DIR = _BASE / "out"  # run folders (ignored by git)

#: table name -> (title, intro paragraph, [(column header, row-dict key or callable)])
TABLES: dict[str, tuple[str, str, list]] = {}


def machine() -> str:
    """The machine in words: cores, CPU model (with its family/model numbers and vector ISA, since one "AMD EPYC"
    name covers CPUs whose bf16 speed differs several-fold), torch threads, GPU, torch version."""
    from genzoo.train.trainer import cpu_has_fast_bf16

    cpu = platform.processor() or platform.machine()
    ids = {}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, val = line.partition(":")
            key = key.strip()
            if key in ("model name", "cpu family", "model") and key not in ids:
                ids[key] = val.strip()
            if not line.strip() and ids:
                break
    except OSError:
        pass
    cpu = ids.get("model name", cpu)
    if "cpu family" in ids:
        cpu += f" family {ids['cpu family']} model {ids.get('model', '?')}"
    isa = torch.backends.cpu.get_cpu_capability()
    cpu += f", {isa}, {'fast' if cpu_has_fast_bf16() else 'emulated'} bf16"
    threads = torch.get_num_threads()
    dev = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return f"{os.cpu_count()} CPU cores ({cpu}), {threads} torch threads, {dev}, torch {torch.__version__}"


def row_path(table: str, row: str) -> Path:
    return RESULTS_DIR / table / f"{row}.json"


def done(table: str, row: str) -> bool:
    return row_path(table, row).is_file()


def write_row(table: str, row: str, record: dict) -> Path:
    record = dict(record)
    record.setdefault("date", _dt.date.today().isoformat())
    record.setdefault("machine", machine())
    p = row_path(table, row)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_suffix(".tmp")
    tmp.write_text(json.dumps(record, indent=2, default=float) + "\n")
    os.replace(tmp, p)
    return p


def run(cmd: list[str], log: Path) -> None:
    """Run a genzoo command (python -m genzoo.cli ...), its output to ``log``; raise on failure."""
    log.parent.mkdir(parents=True, exist_ok=True)
    print("$ " + " ".join(cmd), flush=True)
    with open(log, "a") as f:
        r = subprocess.run([sys.executable, "-m", "genzoo.cli", *cmd], stdout=f, stderr=subprocess.STDOUT)
    if r.returncode != 0:
        raise SystemExit(f"command failed (exit {r.returncode}); see {log}")


def train_or_resume(table: str, name: str, recipe: str, overrides: list[str]) -> Path:
    """Train ``recipe`` into OUT_DIR/table/name; resume it if a killed run left checkpoints;
    do nothing if it already finished. Returns the run folder."""
    import shutil

    run_dir = OUT_DIR / table / name
    log = run_dir.parent / f"{name}.log"
    if (run_dir / "train_summary.json").is_file():
        return run_dir
    if (run_dir / "checkpoints").is_dir():
        run(["train", "--resume", str(run_dir), "--no-progress"], log)
    else:
        if run_dir.exists():
            shutil.rmtree(run_dir)
        run(["train", recipe, *overrides, "--run-dir", str(run_dir), "--no-progress"], log)
    return run_dir


def _fmt(v) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.3g}" if abs(v) < 1 else f"{v:.2f}" if abs(v) < 1000 else f"{v:.0f}"
    return str(v)


def _register_all_tables() -> None:
    """Import every benchmark script so that each table is rendered with its own title and columns
    (a script registers its tables in TABLES at import; ``*_aux`` folders hold cached inputs, not tables)."""
    import importlib

    sys.path.insert(0, str(HERE))
    for script in sorted(HERE.glob("*.py")):
        if not script.name.startswith("_"):
            try:
                importlib.import_module(script.stem)
            except ImportError:  # a script whose optional imports are missing still leaves the others
                pass


def rebuild_results_md() -> Path:
    """Regenerate benchmarks/RESULTS.md from every row file (tables in TABLES order, then others)."""
    lines = ["# genzoo benchmark results", "",
             "Generated by the scripts in `benchmarks/` from the row files in `benchmarks/results/`;",
             "every figure was measured by the command beside it, under the budget beside it.", ""]
    _register_all_tables()
    for table in sorted(p.name for p in RESULTS_DIR.glob("*") if p.is_dir() and not p.name.endswith("_aux")):
        rows = [json.loads(p.read_text()) for p in sorted((RESULTS_DIR / table).glob("*.json"))]
        if not rows:
            continue
        title, intro, cols = TABLES.get(table, (table, "", [(k, k) for k in rows[0] if k not in ("command", "machine", "date")]))
        lines += [f"## {title}", ""] + ([intro, ""] if intro else [])
        lines.append("| " + " | ".join(c for c, _ in cols) + " |")
        lines.append("|" + "---|" * len(cols))
        for r in sorted(rows, key=lambda r: r.get("order", 0)):
            lines.append("| " + " | ".join(_fmt(k(r) if callable(k) else r.get(k)) for _, k in cols) + " |")
        lines += ["", "Commands, dates and machines:", ""]
        for r in sorted(rows, key=lambda r: r.get("order", 0)):
            note = f" Note: {r['note']}." if r.get("note") else ""
            lines.append(f"- **{r.get('name')}** ({r.get('date')}, {r.get('machine')}): `{r.get('command')}`{note}")
        lines.append("")
    RESULTS_MD.write_text("\n".join(lines))
    return RESULTS_MD
