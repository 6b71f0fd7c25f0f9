"""Issue 30 item 5: the layering DESIGN.md promises (cli -> pipelines -> eval -> train -> models -> nn -> core)
is checked by import-linter's contracts in .importlinter, here, so `make test` fails when a module imports
a layer above its own (a model importing the trainer, a checkpoint helper importing a model, ...)."""
from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("importlinter", reason="import-linter is in the dev extra (make install)")

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src" / "genzoo"


def _lint(config: Path) -> tuple[bool, str]:
    """``lint-imports --config CONFIG`` (the one next to this Python, as CI has it): (kept, its output)."""
    exe = Path(sys.executable).with_name("lint-imports")
    cmd = [str(exe)] if exe.exists() else [shutil.which("lint-imports") or "lint-imports"]
    r = subprocess.run([*cmd, str(config), "--no-cache"], cwd=ROOT, capture_output=True, text=True,
                       timeout=300)
    return r.returncode == 0, r.stdout + r.stderr


def test_the_layer_contracts_hold():
    ok, out = _lint(ROOT / ".importlinter")
    assert ok, out[-4000:]
    assert "Contracts: 3 kept, 0 broken." in out and "(1 ignored import)" in out, out[-2000:]


def test_the_contracts_can_fail(tmp_path):
    """The linter reads genzoo itself: layers in the wrong order break (models import nn)."""
    cfg = tmp_path / "reversed.ini"
    cfg.write_text("[importlinter]\nroot_package = genzoo\n\n[importlinter:contract:r]\nname = reversed\n"
                   "type = layers\nlayers =\n    genzoo.nn\n    genzoo.models\n")
    ok, out = _lint(cfg)
    assert not ok and "genzoo.models is not allowed to import genzoo.nn" in out, out[-2000:]
    assert "genzoo.models.vae -> genzoo.nn.blocks" in out, out[-2000:]


def test_every_package_and_top_level_module_is_in_a_layer():
    """A new top-level module or package must be placed in the layers, or the contract would not see it."""
    text = (ROOT / ".importlinter").read_text()
    block = text.split("layers =", 1)[1].split("ignore_imports", 1)[0]
    named = {m.strip() for line in block.splitlines() for m in line.replace(":", "|").split("|") if m.strip()}
    have = {f"genzoo.{p.stem}" for p in SRC.glob("*.py") if p.stem != "__init__"}
    have |= {f"genzoo.{p.parent.name}" for p in SRC.glob("*/__init__.py")}
    assert have - named == set(), f"place these in .importlinter's layers: {sorted(have - named)}"


def test_the_bottom_layer_imports_only_errors():
    """genzoo.core (checkpoints, run folders, precision) imports nothing of genzoo above genzoo.errors."""
    for f in (SRC / "core").glob("*.py"):
        for node in ast.walk(ast.parse(f.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level >= 2:
                assert node.module == "errors", f"{f.name} imports ..{node.module}"
