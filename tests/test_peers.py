"""The peer libraries of the `peers` extra import (make test installs them; see conftest.py)."""
import importlib
import os

import pytest

PEERS = ["diffusers", "zuko", "nflows", "normflows", "lion_pytorch", "rotary_embedding_torch",
         "vector_quantize_pytorch", "torchdiffeq", "hypothesis"]


@pytest.mark.parametrize("name", PEERS)
def test_peer_imports(name):
    if os.environ.get("GENZOO_REQUIRE_PEERS", "") in ("", "0"):
        pytest.importorskip(name)
    else:
        importlib.import_module(name)


def test_peers_extra_lists_them():
    """pyproject's `peers` extra names every import the suite cross-checks against."""
    import tomllib
    from pathlib import Path

    meta = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())["project"]
    extras = meta["optional-dependencies"]
    declared = {d.split(">")[0].split("=")[0].replace("-", "_") for d in extras["peers"] + extras["dev"] + meta["dependencies"]}
    for name in PEERS:
        assert name in declared, f"{name} is imported by the cross-checks but not declared in pyproject"
