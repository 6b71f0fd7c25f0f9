"""``genzoo eval`` / ``genzoo sample`` keep their promises (issue 28): every evaluation kept and
printed before anything is written, sampling options reaching the sample metrics, a named feature
extractor, no silent FID on data the feature net was not made for, --device, and a mode-coverage
metric that a ring or a blob cannot fool."""
import json
import math
import os
import stat

import numpy as np
import pytest
import torch

from genzoo.cli import main
from genzoo.eval.modes import eight_gaussians_coverage


def _one_line_error(code, err, *needles):
    assert code == 2, err
    lines = [l for l in err.strip().splitlines() if l.strip()]
    assert len(lines) == 1, f"expected one line, got:\n{err}"
    assert lines[0].startswith("genzoo: error: ") and "Traceback" not in err, lines[0]
    for n in needles:
        assert n.lower() in lines[0].lower(), f"{n!r} not in: {lines[0]}"
    return lines[0]


# ------------------------------------------------------------------ E: mode coverage
def _centres():
    from genzoo.data.toys import _eight_centres

    return _eight_centres()


def test_modes_ring_scores_well_below_eight():
    """Uniform on the circle through the 8 centres: one connected ring, not 8 modes."""
    g = torch.Generator().manual_seed(0)
    r = float(_centres().norm(dim=1)[0])
    theta = torch.rand(4000, generator=g, dtype=torch.float64) * 2 * math.pi
    ring = torch.stack([r * theta.cos(), r * theta.sin()], 1)
    c = eight_gaussians_coverage(ring)
    assert c["modes_covered"] <= 2, c
    # a ring blurred by the modes' own std is no better
    c = eight_gaussians_coverage(ring + 0.35 * torch.randn(ring.shape, generator=g, dtype=torch.float64))
    assert c["modes_covered"] <= 2, c


def test_modes_blob_scores_well_below_eight():
    assert eight_gaussians_coverage(torch.zeros(2000, 2))["modes_covered"] == 0
    g = torch.Generator().manual_seed(1)
    one = _centres()[0] + 0.1 * torch.randn(2000, 2, generator=g, dtype=torch.float64)
    assert eight_gaussians_coverage(one)["modes_covered"] == 1
    wide = 3.0 * torch.randn(2000, 2, generator=g, dtype=torch.float64)  # one broad blob over all the modes
    assert eight_gaussians_coverage(wide)["modes_covered"] <= 2


def test_modes_true_samples_cover_eight_and_radius_is_stated():
    from genzoo.data.toys import sample_8gaussians

    for seed in range(3):
        c = eight_gaussians_coverage(sample_8gaussians(2000, torch.Generator().manual_seed(seed)))
        assert c["modes_covered"] == 8, c
        assert c["high_quality"] > 0.97
    assert "minimum distance" in c["protocol"] and c["mode_radius"] < 0.26 * 2 * float(_centres().norm(dim=1)[0]) * math.sin(math.pi / 8)
