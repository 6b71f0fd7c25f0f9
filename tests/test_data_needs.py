"""Data needs are declared once per model class and checked in one place (issue 30, item 1)."""
from __future__ import annotations

import inspect
import warnings

import pytest

import genzoo
from genzoo.data import DataSpec
from genzoo.errors import ConfigError
from genzoo.models.base import GenerativeModel
from genzoo.models.data_needs import DataNeeds, Opt, check_data_needs

#: the only models that keep code of their own beside the declaration, and what it checks
CUSTOM_CHECKS = {
    "Flow": "records the data's levels for training-time bits/dim",
    "VQPrior": "its data must be the tokenizer's",
    "DiscreteDiffusion": "the data's levels must fit num_values",
}


def _all_model_classes():
    for name in genzoo.list_models():
        yield from (c for c in genzoo.registry.get_entry(name).cls.__mro__ if issubclass(c, GenerativeModel))


def test_no_model_hand_checks_what_a_declaration_says():
    for cls in set(_all_model_classes()):
        if cls is GenerativeModel or "check_data" not in vars(cls):
            continue
        assert cls.__name__ in CUSTOM_CHECKS, f"{cls.__name__} overrides check_data; declare data_needs instead"
        src = inspect.getsource(vars(cls)["check_data"])
        assert "super().check_data(spec)" in src.split('"""')[-1].splitlines()[1], cls  # the declaration first


class Toy(GenerativeModel):
    data_needs = DataNeeds(("image",), (None,), dequantized="warn", value_range=Opt("data_range"),
                           labels=Opt("num_classes"), alternative="model.other=1")

    def __init__(self, shape=(1, 4, 4), data_range=(-1.0, 1.0), num_classes=0):
        super().__init__()
        self.shape, self.data_range, self.num_classes = tuple(shape), tuple(data_range), num_classes


def _img(**kw):
    kw = {"value_range": (-1.0, 1.0), "dequantization": "uniform", **kw}
    return DataSpec("toy", "image", kw.pop("shape", (1, 4, 4)), **kw)


def test_checks_in_order_each_one_line_naming_the_fix():
    Toy().check_data(_img())
    cases = [  # (spec, model kwargs, substrings of the one error)
        (_img(shape=(1, 5, 5)), {}, ["shape (1, 4, 4)", "drop model.shape"]),
        (DataSpec("toy", "vector", (1, 4, 4), None), {}, ["Toy models images, not vector data", "mnist"]),
        (_img(discrete="tokens", value_range=None), {}, ["not token data"]),
        (_img(discrete="binary", value_range=None, dequantization=None), {},
         ["continuous data", "binary data", "data.binarize=none data.dequantize=uniform, or model.other=1"]),
        (_img(value_range=(0.0, 1.0)), {}, ["built for data in [-1, 1]", "value_range [0, 1]",
                                            "model.data_range=[0,1] or data.value_range=[-1,1]"]),
        (_img(), {"num_classes": 3}, ["no labels", "model.num_classes=0"]),
        (_img(num_classes=10), {"num_classes": 3}, ["10 classes", "model.num_classes=10"]),
    ]
    for spec, kw, parts in cases:
        with pytest.raises(ConfigError) as e:
            Toy(**kw).check_data(spec)
        msg = str(e.value)
        assert "\n" not in msg and all(p in msg for p in parts), (msg, parts)
    # shape before kind: a vector of the wrong shape names the shape
    with pytest.raises(ConfigError, match="shape"):
        Toy().check_data(DataSpec("toy", "vector", (2,), None))
    # binary data is measured against (0, 1), not its value_range None
    assert Toy(num_classes=10).check_data(_img(num_classes=10)) is None


def test_warning_only_for_data_that_passes_and_points_at_the_caller():
    with pytest.warns(UserWarning, match="not dequantised: Toy trains on it") as rec:
        Toy().check_data(_img(dequantization=None))
    assert rec[0].filename == __file__
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(ConfigError):  # refused data never warns first
            Toy().check_data(_img(dequantization=None, value_range=(0.0, 1.0)))


class Grid(GenerativeModel):
    data_needs_by = ("output", "out")
    data_needs = {
        "grid": DataNeeds(levels=Opt("levels"), value_range=(-1.0, 1.0), alternative="model.output=free"),
        "*": DataNeeds(discrete=("levels",)),
    }

    def __init__(self, out="grid", levels=256):
        super().__init__()
        self.out, self.levels, self.shape = out, levels, (3,)


def test_grid_lists_every_problem_and_picks_the_entry_by_the_setting():
    grid = DataSpec("g", "vector", (3,), (-1.0, 1.0), levels=256)
    Grid().check_data(grid)
    with pytest.raises(ConfigError) as e:
        Grid(levels=17).check_data(DataSpec("g", "vector", (3,), (0.0, 1.0), levels=256, dequantization="uniform"))
    msg = str(e.value)
    assert msg.startswith("Grid output='grid' needs un-dequantised data on the 17-level grid of [-1, 1]"), msg
    for part in ("its value_range is [0, 1], not [-1, 1] (set data.value_range=[-1,1])",
                 "it is uniformly dequantised (set data.dequantize=none)",
                 "it has 256 grey levels, not 17 (set model.levels=256)", "or model.output=free"):
        assert part in msg, (part, msg)
    with pytest.raises(ConfigError, match="it is binary data; use data.binarize=none"):
        Grid().check_data(DataSpec("g", "vector", (3,), None, discrete="binary"))
    with pytest.raises(ConfigError, match="Grid output='other' needs integer-valued data"):
        Grid(out="other").check_data(grid)  # the "*" fallback
    Grid(out="other").check_data(DataSpec("g", "vector", (3,), None, discrete="levels", levels=4))


def test_no_declaration_checks_the_shape_only():
    class Free(GenerativeModel):
        shape = (2,)

    check_data_needs(Free(), DataSpec("x", "text", (2,), None, discrete="tokens", vocab_size=5))
    with pytest.raises(ConfigError, match="shape"):
        Free().check_data(DataSpec("x", "vector", (3,), None))
