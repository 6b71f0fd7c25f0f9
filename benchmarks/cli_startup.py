"""How fast `genzoo --help` and `genzoo list` answer (issue 28: well under a second, torch imported
only when needed). Wall-clock seconds per command, median of N runs of a fresh process, beside
`python -c "import torch"` for scale.

    python benchmarks/cli_startup.py [--runs 7]

Prints a markdown table and writes benchmarks/out/cli_startup.json.
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _results as R  # noqa: E402

COMMANDS = {
    "genzoo --help": [sys.executable, "-m", "genzoo.cli", "--help"],
    "genzoo --version": [sys.executable, "-m", "genzoo.cli", "--version"],
    "genzoo list": [sys.executable, "-m", "genzoo.cli", "list"],
    "genzoo list vae": [sys.executable, "-m", "genzoo.cli", "list", "vae"],
    "genzoo train --help": [sys.executable, "-m", "genzoo.cli", "train", "--help"],
    'python -c "import torch" (for scale)': [sys.executable, "-c", "import torch"],
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=7)
    args = ap.parse_args()
    rows = {}
    for name, cmd in COMMANDS.items():
        subprocess.run(cmd, capture_output=True)  # warm the file cache
        times = []
        for _ in range(args.runs):
            t0 = time.perf_counter()
            r = subprocess.run(cmd, capture_output=True)
            times.append(time.perf_counter() - t0)
            assert r.returncode == 0, r.stderr.decode()
        rows[name] = {"median_s": statistics.median(times), "min_s": min(times), "max_s": max(times)}
    out = {"runs": args.runs, "machine": R.machine(), "date": time.strftime("%Y-%m-%d"), "rows": rows}
    path = R.OUT_DIR / "cli_startup.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=2))
    print(f"| command | median s | min s | max s |  ({args.runs} runs each, {out['date']}, {out['machine']})")
    print("|---|---|---|---|")
    for name, r in rows.items():
        print(f"| `{name}` | {r['median_s']:.3f} | {r['min_s']:.3f} | {r['max_s']:.3f} |")


if __name__ == "__main__":
    main()
