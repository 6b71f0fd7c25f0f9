"""Suite-wide hooks.

With ``GENZOO_REQUIRE_PEERS=1`` (what ``make test`` sets) a test skipped because a peer
library is missing (``pytest.importorskip`` or a "not installed" skip) is reported as a
failure: the cross-checks against diffusers, zuko, nflows, lion-pytorch, ... must really run
in CI. Without it (a user's own pytest run) such tests skip as usual.
"""
from __future__ import annotations

import contextlib
import os

import pytest

import re

#: the import names of pyproject's `peers` extra (and torchdiffeq, a dependency): these must run under
#: GENZOO_REQUIRE_PEERS=1. The `peers-vision` extra (k-diffusion, torchcfm, torch-fidelity) needs
#: torchvision, which does not install beside the CPU build of torch; its cross-checks may skip.
REQUIRED_PEERS = {"diffusers", "zuko", "nflows", "normflows", "lion_pytorch", "rotary_embedding_torch",
                  "vector_quantize_pytorch", "torchdiffeq", "hypothesis",
                  "mkdocs"}  # the `docs` extra: CI builds the site with --strict (tests/test_docs.py)


def _require_peers() -> bool:
    return os.environ.get("GENZOO_REQUIRE_PEERS", "") not in ("", "0")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    if not (_require_peers() and rep.skipped):
        return
    reason = str(rep.longrepr[2]) if isinstance(rep.longrepr, tuple) else str(rep.longrepr)
    m = re.search(r"could not import '([\w.]+)'", reason) or re.search(r"(\w+) not installed", reason)
    if m and m.group(1).split(".")[0] in REQUIRED_PEERS:
        rep.outcome = "failed"
        rep.longrepr = (f"GENZOO_REQUIRE_PEERS=1 but a peer library is missing ({reason}); "
                        "install them with `pip install -e .[dev,peers]` (make test does)")


if os.environ.get("PYTEST_XDIST_WORKER"):  # make test runs pytest-xdist: share the cores among the workers
    import torch

    _workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // _workers))


@contextlib.contextmanager
def torch_threads(k: int):
    """Run the block on ``k`` torch threads, then restore the count."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(k)
    try:
        yield
    finally:
        torch.set_num_threads(n)


def one_torch_thread():
    """Small toy models (2-D MLPs at batch 256) are overhead-bound: one torch thread trains them about a third
    faster than two (measured in test_gan: wgan 23 s vs 35 s, ogan 11 s vs 16 s on 2 cores); the suite's budget."""
    return torch_threads(1)


@pytest.fixture
def one_thread():
    with one_torch_thread():
        yield

