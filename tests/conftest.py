"""Suite-wide hooks.

With ``GENZOO_REQUIRE_PEERS=1`` (what ``make test`` sets) a test skipped because a peer
library is missing (``pytest.importorskip`` or a "not installed" skip) is reported as a
failure: the cross-checks against diffusers, zuko, nflows, lion-pytorch, ... must really run
in CI. Without it (a user's own pytest run) such tests skip as usual.
"""
from __future__ import annotations

import os

import pytest

PEER_SKIP_MARKERS = ("could not import", "not installed", "No module named")


def _require_peers() -> bool:
    return os.environ.get("GENZOO_REQUIRE_PEERS", "") not in ("", "0")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    if not (_require_peers() and rep.skipped):
        return
    reason = str(rep.longrepr[2]) if isinstance(rep.longrepr, tuple) else str(rep.longrepr)
    if any(m in reason for m in PEER_SKIP_MARKERS):
        rep.outcome = "failed"
        rep.longrepr = (f"GENZOO_REQUIRE_PEERS=1 but a peer library is missing ({reason}); "
                        "install them with `pip install -e .[dev,peers]` (make test does)")
