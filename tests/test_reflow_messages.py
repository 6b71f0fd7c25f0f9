"""The reflow sampler list (issue 29): the error of generate_pairs and `genzoo reflow --help` name
exactly the deterministic samplers generate_pairs accepts."""
from __future__ import annotations

import re

import pytest

import genzoo
from genzoo.cli import build_parser
from genzoo.errors import ConfigError
from genzoo.models.diffusion import reflow

ACCEPTED = ("euler", "heun", "dpmpp_2m", "ode_adaptive", "ddim")


def test_generate_pairs_error_lists_exactly_the_accepted_samplers():
    assert tuple(reflow.PAIR_SAMPLERS) == ACCEPTED
    m = genzoo.build("diffusion", shape=(2,), process="flow", param="velocity", loss="cfm", net="mlp", hidden=8, depth=1)
    with pytest.raises(ConfigError) as e:
        reflow.generate_pairs(m, 2, steps=2, sampler="ddpm")
    listed = re.search(r"\(([^)]*)\)", str(e.value)).group(1)
    assert tuple(s.strip() for s in listed.split(",")) == ACCEPTED


def test_reflow_sampler_help_lists_exactly_the_accepted_samplers():
    sub = next(a for a in build_parser()._actions if a.dest == "cmd")
    opt = next(a for a in sub.choices["reflow"]._actions if "--sampler" in a.option_strings)
    names = re.findall(r"\b[a-z][a-z0-9_]+\b", opt.help.split(":", 1)[1].replace("(default)", ""))
    assert tuple(names) == ACCEPTED
