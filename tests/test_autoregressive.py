"""Autoregressive models: FVSBN, NADE, MADE, PixelCNN and the gated PixelCNN (genzoo.models.autoregressive)
and their masked layers (genzoo.nn.masked).

What is checked, for every model: the autoregressive property by autograd (the parameters
predicted for dimension j never depend on a dimension i that is not before j in the
model's ordering, and do depend on those before it where the architecture says so: the
gated PixelCNN has no blind spot, the plain PixelCNN has one); exact normalisation (the
probabilities of all 2^D binary images, and of all 256^2 grey-level pairs, sum to 1);
reproducible sampling; temperature; inpainting (observed pixels kept, the first missing
one drawn from the exact conditional); MADE's mask ensembles and mask cycling; NADE's
O(HD) computation against the naive one; data checks; recipes; the CLI end to end.
pytorch-generative is not a dependency, so there is no peer comparison here.
Everything is tiny (2x2 to 4x4 images, 8x8 digits for the CLI): well under a minute on one core.
"""
from __future__ import annotations

import itertools
import json
import math

import numpy as np
import pytest
import torch

import genzoo
from genzoo.cli import main
from genzoo.config import load_recipe
from genzoo.data import DataSpec
from genzoo.errors import ConfigError, DataError
from genzoo.models.base import TrainContext
from genzoo.models.autoregressive import AutoregressiveModel, raster_order, region_mask
from genzoo.models.autoregressive.base import BernoulliOutput, CategoricalOutput, LogisticOutput
from genzoo.nn.masked import (
    GatedPixelCNNBlock,
    MaskedConv2d,
    MaskedLinear,
    channel_groups,
    degree_mask,
    made_degrees,
    pixelcnn_mask,
)

TINY = {
    "fvsbn": {},
    "nade": dict(hidden=12),
    "made": dict(hidden=[16, 16]),
    "pixelcnn": dict(channels=4, blocks=2, head_channels=8, first_kernel=3),
    "gated_pixelcnn": dict(channels=4, layers=4, head_channels=8, first_kernel=3),
}
MODELS = list(TINY)
IMAGE_MODELS = ("pixelcnn", "gated_pixelcnn")


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def tiny(name: str, shape=(1, 3, 3), seed: int = 0, **kw) -> AutoregressiveModel:
    torch.manual_seed(seed)
    args = dict(TINY[name])
    args.update(kw)
    return genzoo.build(name, shape=shape, **args).eval()


def all_binary(shape) -> torch.Tensor:
    D = math.prod(shape)
    return torch.tensor(list(itertools.product([0.0, 1.0], repeat=D))).reshape(-1, *shape)


def rank_of(order: torch.Tensor) -> torch.Tensor:
    r = torch.empty_like(order)
    r[order] = torch.arange(len(order))
    return r


def jacobian(fn, shape, seed: int = 0) -> torch.Tensor:
    """J[j, i] = max over the parameters of dimension j of |d param / d x_i|, at a random x in (0, 1)."""
    D = math.prod(shape)
    x = torch.rand(D, generator=gen(seed))
    J = torch.autograd.functional.jacobian(lambda f: fn(f.reshape(1, *shape)).reshape(-1, D), x)  # (P, D, D)
    return J.abs().amax(0)


def check_autoregressive(J: torch.Tensor, order: torch.Tensor) -> torch.Tensor:
    """Assert J[j, i] == 0 whenever i is not before j in ``order``; return the 'i before j' mask."""
    r = rank_of(order)
    before = r[None, :] < r[:, None]  # [j, i]
    assert (J[~before] == 0).all(), "a conditional depends on itself or on a later dimension"
    return before


# ------------------------------------------------------------------ the autoregressive property


@pytest.mark.parametrize("shape", [(1, 4, 4), (2, 3, 3)])
@pytest.mark.parametrize("name", MODELS)
def test_no_conditional_depends_on_itself_or_later_dimensions(name, shape):
    model = tiny(name, shape)
    J = jacobian(model.conditionals, shape)
    before = check_autoregressive(J, model.ordering())
    if name == "made":  # deep masked layers see only some of the earlier inputs, the direct connections all of them
        assert (J[before] > 0).all()
    elif name in ("fvsbn", "nade", "gated_pixelcnn"):  # every earlier dimension is used
        assert (J[before] > 0).all()
    else:
        assert (J[before] > 0).float().mean() > 0.5


def test_pixelcnn_ordering_is_raster_with_channels_inside_a_pixel():
    order = raster_order((3, 2, 2))  # flat index c * 4 + h * 2 + w
    assert order.tolist() == [0, 4, 8, 1, 5, 9, 2, 6, 10, 3, 7, 11]


def test_gated_pixelcnn_has_no_blind_spot_and_pixelcnn_has_one():
    shape = (1, 4, 4)
    j, i = 2 * 4 + 0, 1 * 4 + 3  # pixel (2, 0) and the pixel (1, 3) above-right of it
    J_plain = jacobian(tiny("pixelcnn", shape).conditionals, shape)
    J_gated = jacobian(tiny("gated_pixelcnn", shape).conditionals, shape)
    assert J_plain[j, i] == 0  # the blind spot of stacked masked convolutions
    assert J_gated[j, i] > 0
    assert J_gated[15, :15].gt(0).all()  # the last pixel sees the whole image before it


@pytest.mark.parametrize("output", ["categorical", "logistic"])
@pytest.mark.parametrize("name", MODELS)
def test_autoregressive_with_grey_level_outputs(name, output):
    shape = (1, 3, 3)
    model = tiny(name, shape, output=output, levels=8, nr_mix=2)
    assert model.output.num_params == (8 if output == "categorical" else 6)
    check_autoregressive(jacobian(model.conditionals, shape), model.ordering())


def test_made_every_mask_and_ordering_is_autoregressive():
    shape = (1, 3, 3)
    model = tiny("made", shape, num_masks=4, order_agnostic=True, mask_conditioning=True, direct=False)
    orders = []
    for k in range(4):
        model.use_mask(k)
        orders.append(model.ordering())
        check_autoregressive(jacobian(model.conditionals, shape, seed=k), orders[-1])
    assert orders[0].tolist() == list(range(9))  # mask 0 keeps the natural order
    assert len({tuple(o.tolist()) for o in orders}) == 4


def test_nade_per_example_orderings_are_autoregressive():
    shape = (1, 3, 3)
    model = tiny("nade", shape, order_agnostic=True)
    perm = torch.randperm(9, generator=gen(3))
    J = jacobian(lambda x: model.conditionals(x, perm[None]), shape)
    before = check_autoregressive(J, perm)
    assert (J[before] > 0).all()


# ------------------------------------------------------------------ exact normalisation


@pytest.mark.parametrize("shape", [(1, 3, 3), (2, 2, 2)])
@pytest.mark.parametrize("name", MODELS)
def test_probabilities_of_all_binary_images_sum_to_one(name, shape):
    model = tiny(name, shape)
    X = all_binary(shape)
    with torch.no_grad():
        lp = model.log_prob(X)
    assert lp.shape == (len(X),) and (lp < 0).all()
    torch.testing.assert_close(torch.logsumexp(lp.double(), 0), torch.tensor(0.0, dtype=torch.float64), atol=1e-5, rtol=0)


def test_made_and_nade_ensembles_sum_to_one():
    shape = (1, 3, 3)
    X = all_binary(shape)
    made = tiny("made", shape, num_masks=3, order_agnostic=True, mask_conditioning=True)
    nade = tiny("nade", shape, order_agnostic=True)
    with torch.no_grad():
        for lp in (made.log_prob(X, ensemble=3), nade.log_prob(X, ensemble=3)):
            torch.testing.assert_close(torch.logsumexp(lp.double(), 0), torch.tensor(0.0, dtype=torch.float64), atol=1e-5, rtol=0)


@pytest.mark.parametrize("output", ["categorical", "logistic"])
@pytest.mark.parametrize("name", MODELS)
def test_grey_level_probabilities_sum_to_one(name, output):
    """All 256^2 images of two 8-bit pixels on the [-1, 1] grid; and all 256 values of one pixel."""
    for shape in ((1, 1, 2), (1, 1, 1)):
        model = tiny(name, shape, output=output, nr_mix=3)
        D = math.prod(shape)
        k = torch.cartesian_prod(*[torch.arange(256)] * D).reshape(-1, *shape) if D > 1 else torch.arange(256).reshape(-1, *shape)
        with torch.no_grad():
            lp = model.log_prob(k.float() * (2 / 255) - 1)
        assert torch.isfinite(lp).all()
        torch.testing.assert_close(torch.logsumexp(lp.double(), 0), torch.tensor(0.0, dtype=torch.float64), atol=1e-4, rtol=0)


def test_categorical_output_on_another_value_range():
    model = tiny("fvsbn", (1, 1, 2), output="categorical", levels=17, value_range=[0.0, 1.0])
    k = torch.cartesian_prod(torch.arange(17), torch.arange(17)).reshape(-1, 1, 1, 2)
    lp = model.log_prob(k.float() / 16)
    torch.testing.assert_close(torch.logsumexp(lp.double(), 0), torch.tensor(0.0, dtype=torch.float64), atol=1e-5, rtol=0)


# ------------------------------------------------------------------ the models' own equations


def test_fvsbn_is_a_chain_of_logistic_regressions():
    model = tiny("fvsbn", (1, 3, 3))
    x = torch.rand(5, 1, 3, 3, generator=gen(1))
    W, b = model.linear.weight, model.linear.bias
    expected = x.reshape(5, 9) @ torch.tril(W, -1).T + b
    torch.testing.assert_close(model.conditionals(x).reshape(5, 9), expected)


@pytest.mark.parametrize("ordered", [False, True])
def test_nade_o_hd_computation_equals_the_naive_one(ordered):
    model = tiny("nade", (1, 3, 3), output="categorical", levels=4)
    x = torch.rand(3, 9, generator=gen(2))
    order = torch.randperm(9, generator=gen(5)) if ordered else torch.arange(9)
    got = model.conditionals(x.reshape(3, 1, 3, 3), order.expand(3, 9) if ordered else None).reshape(3, 4, 9)
    W, c, V, b = model.W, model.c, model.V, model.b
    for k, d in enumerate(order.tolist()):  # h_d = sigmoid(c + W_{:,o<k} x_{o<k}), params_d = b_d + h_d V_d
        prev = order[:k]
        h = torch.sigmoid(c + x[:, prev] @ W[:, prev].T)
        torch.testing.assert_close(got[:, :, d], b[d] + h @ V[d], atol=1e-5, rtol=1e-5)


def test_made_masks_from_degrees():
    D = 6
    m0 = torch.arange(1, D + 1)
    hidden = made_degrees(m0, [10, 7], gen(0))
    assert [len(h) for h in hidden] == [10, 7]
    assert hidden[0].min() >= 1 and hidden[0].max() <= D - 1 and hidden[1].min() >= hidden[0].min()
    M1, M2 = degree_mask(m0, hidden[0], strict=False), degree_mask(hidden[0], hidden[1], strict=False)
    MV = degree_mask(hidden[1], m0, strict=True)
    paths = MV @ M2 @ M1  # paths from input d' to output d
    assert (paths.triu() == 0).all()  # output d only reachable from inputs d' < d
    assert degree_mask(m0, m0, strict=True).equal(torch.ones(D, D).tril(-1))
    layer = MaskedLinear(D, 4, mask_conditioning=True)
    layer.set_mask(torch.zeros(4, D))
    with torch.no_grad():
        layer.u.fill_(1.0)
    torch.testing.assert_close(layer(torch.randn(2, D)), layer.bias.expand(2, 4))  # W * 0, (U * 0) 1 = 0
    with pytest.raises(ValueError, match="mask of shape"):
        layer.set_mask(torch.ones(3, 3))


def test_pixelcnn_masks_a_and_b():
    one = torch.arange(1)
    A = pixelcnn_mask((3, 3), (1, 1), "A", one, one)[0, 0]
    B = pixelcnn_mask((3, 3), (1, 1), "B", one, one)[0, 0]
    assert A.tolist() == [[1, 1, 1], [1, 0, 0], [0, 0, 0]]
    assert B.tolist() == [[1, 1, 1], [1, 1, 0], [0, 0, 0]]
    # colour groups at the centre tap: R -> G -> B
    rgb = torch.arange(3)
    assert pixelcnn_mask((1, 1), (0, 0), "A", rgb, rgb)[:, :, 0, 0].tolist() == [[0, 0, 0], [1, 0, 0], [1, 1, 0]]
    assert pixelcnn_mask((1, 1), (0, 0), "B", rgb, rgb)[:, :, 0, 0].tolist() == [[1, 0, 0], [1, 1, 0], [1, 1, 1]]
    assert channel_groups(6, 3).tolist() == [0, 0, 1, 1, 2, 2]
    with pytest.raises(ValueError, match="colour groups"):
        channel_groups(4, 3)
    conv = MaskedConv2d(1, 2, 5, "A")
    assert conv(torch.randn(2, 1, 7, 6)).shape == (2, 2, 7, 6)
    with pytest.raises(ValueError, match="mask_type"):
        MaskedConv2d(1, 2, 3, "C")


def test_gated_block_vertical_stack_sees_rows_up_to_its_own():
    torch.manual_seed(0)
    block = GatedPixelCNNBlock(1, 4, 3, "A")
    x = torch.randn(1, 1, 5, 5, requires_grad=True)
    v, h = block(x, x)
    assert v.shape == h.shape == (1, 4, 5, 5)
    v[0, :, 2, 2].sum().backward()
    g = x.grad[0, 0]
    assert (g[3:] == 0).all() and (g[:3] != 0).any()  # rows > 2 never reach row 2 of the vertical stack


# ------------------------------------------------------------------ sampling


@pytest.mark.parametrize("name", MODELS)
def test_sampling_reproduces_with_a_fixed_generator(name):
    model = tiny(name, (1, 4, 4))
    torch.manual_seed(123)
    ref = torch.rand(3)
    torch.manual_seed(123)
    a = model.sample(6, generator=gen(3))
    assert torch.equal(torch.rand(3), ref)  # the global RNG is not touched
    b = model.sample(6, generator=gen(3))
    c = model.sample(6, generator=gen(4))
    assert a.shape == (6, 1, 4, 4) and torch.equal(a, b) and not torch.equal(a, c)
    assert set(a.unique().tolist()) <= {0.0, 1.0}


@pytest.mark.parametrize("output", ["categorical", "logistic"])
@pytest.mark.parametrize("name", MODELS)
def test_grey_level_samples_lie_on_the_grid(name, output):
    model = tiny(name, (1, 3, 3), output=output, nr_mix=2)
    s = model.sample(4, generator=gen(1))
    k = (s + 1) * 127.5
    assert s.shape == (4, 1, 3, 3) and (k - k.round()).abs().max() < 1e-3 and s.min() >= -1 and s.max() <= 1
    model.log_prob(s)  # its own samples pass the data check


@pytest.mark.parametrize("name", MODELS)
def test_temperature_zero_is_greedy(name):
    model = tiny(name, (1, 3, 3))
    a = model.sample(3, generator=gen(1), temperature=0.0)
    b = model.sample(3, generator=gen(2), temperature=0.0)
    assert torch.equal(a, b) and torch.equal(a, a[:1].expand_as(a))
    x = a[:1].clone()  # every pixel is the more probable value given the ones before it
    p = torch.sigmoid(model.conditionals(x)).reshape(-1)
    assert torch.equal((p > 0.5).float(), x.reshape(-1))
    with pytest.raises(ConfigError, match="temperature"):
        model.sample(2, temperature=-1.0)


def test_temperature_scales_the_logits():
    n = 40_000
    logits = torch.tensor([1.0, 0.0, -1.0, 0.5])
    cat = CategoricalOutput(levels=4, value_range=(0.0, 3.0))
    for T in (0.5, 1.0, 2.0):
        k = cat.sample(logits.expand(n, 4), T, gen(0)).long()
        freq = torch.bincount(k, minlength=4).float() / n
        torch.testing.assert_close(freq, torch.softmax(logits / T, 0), atol=0.01, rtol=0)
        draws = BernoulliOutput().sample(torch.full((n, 1), 0.8), T, gen(1))
        assert abs(draws.mean().item() - torch.sigmoid(torch.tensor(0.8 / T)).item()) < 0.01
    log = LogisticOutput(nr_mix=1)
    params = torch.tensor([[0.1, math.log(0.2)]]).expand(n, 2)
    spread = [log.sample(params, T, gen(2)).std().item() for T in (0.25, 1.0)]
    assert spread[0] < 0.5 * spread[1]
    assert log.sample(params[:2], 0.0, None).sub(0.1).abs().max() < 1 / 255 + 1e-6  # T = 0: the mode


# ------------------------------------------------------------------ inpainting


@pytest.mark.parametrize("name", MODELS)
def test_inpainting_keeps_the_observed_pixels(name):
    model = tiny(name, (1, 4, 4))
    observed = (torch.rand(5, 1, 4, 4, generator=gen(0)) < 0.5).float()
    top = model.sample(5, generator=gen(1), observed=observed, mask="top_half")
    assert torch.equal(top[:, :, :2], observed[:, :, :2])
    other = model.sample(5, generator=gen(2), observed=observed, mask="top_half")
    assert not torch.equal(top[:, :, 2:], other[:, :, 2:])
    mask = torch.rand(1, 4, 4, generator=gen(3)) < 0.5  # any pattern, broadcast over the batch
    out = model.sample(5, generator=gen(4), observed=observed, mask=mask)
    assert torch.equal(out[:, mask], observed[:, mask])
    assert set(out.unique().tolist()) <= {0.0, 1.0}


@pytest.mark.parametrize("name", MODELS)
def test_inpainting_draws_the_missing_pixel_from_its_exact_conditional(name):
    """Observe all but the last pixel of the ordering: its samples follow p(x_last | rest) from log_prob."""
    shape, n = (1, 2, 2), 4000
    model = tiny(name, shape)
    x = torch.tensor([1.0, 0.0, 1.0, 0.0]).reshape(1, *shape)
    last = int(model.ordering()[-1])
    mask = torch.ones(shape, dtype=torch.bool).reshape(-1)
    mask[last] = False
    s = model.sample(n, generator=gen(0), observed=x, mask=mask.reshape(shape))
    both = x.repeat(2, 1, 1, 1).reshape(2, -1)
    both[:, last] = torch.tensor([0.0, 1.0])
    lp = model.log_prob(both.reshape(2, *shape))
    p1 = torch.softmax(lp, 0)[1].item()
    assert abs(s.reshape(n, -1)[:, last].mean().item() - p1) < 0.03


def test_order_agnostic_nade_inpaints_with_the_observed_pixels_first():
    shape, n = (1, 2, 2), 4000
    model = tiny("nade", shape, order_agnostic=True)
    x = torch.tensor([0.0, 1.0, 1.0, 0.0]).reshape(1, *shape)
    mask = torch.tensor([False, True, True, True]).reshape(shape)  # pixel 0 missing: first in the natural order
    s = model.sample(n, generator=gen(0), observed=x, mask=mask)
    p = torch.sigmoid(model.conditionals(x, torch.tensor([[1, 2, 3, 0]]))).reshape(-1)[0].item()
    assert abs(s.reshape(n, -1)[:, 0].mean().item() - p) < 0.03


def test_inpainting_errors():
    model = tiny("fvsbn", (1, 4, 4))
    x = torch.zeros(2, 1, 4, 4)
    with pytest.raises(ConfigError, match="both"):
        model.sample(2, observed=x)
    with pytest.raises(ConfigError, match="shape"):
        model.sample(2, observed=torch.zeros(3, 1, 4, 4), mask="top_half")
    with pytest.raises(ConfigError, match="top_half"):
        model.sample(2, observed=x, mask="top")
    with pytest.raises(DataError, match="binary"):
        model.sample(2, observed=x + 0.5, mask="top_half")
    assert region_mask("left_half", (1, 2, 4)).tolist() == [[[True, True, False, False]] * 2]
    with pytest.raises(ConfigError, match="image"):
        genzoo.build("made", shape=[16], hidden=[8]).sample(2, observed=torch.zeros(16), mask="top_half")


# ------------------------------------------------------------------ MADE ensembles, NADE orders


def test_made_mask_ensembling():
    shape = (1, 3, 3)
    model = tiny("made", shape, num_masks=4, order_agnostic=True, mask_conditioning=True)
    x = (torch.rand(7, *shape, generator=gen(0)) < 0.5).float()
    per_mask = []
    for k in range(4):
        model.use_mask(k)
        per_mask.append(model.log_prob_from_params(model.conditionals(x), x))
    per_mask = torch.stack(per_mask)
    assert not torch.allclose(per_mask[0], per_mask[1])  # different masks: different models
    torch.testing.assert_close(model.log_prob(x, ensemble=4), torch.logsumexp(per_mask, 0) - math.log(4))
    torch.testing.assert_close(model.log_prob(x), per_mask[0])  # default: mask 0 alone
    with pytest.raises(ConfigError, match="num_masks=4"):
        model.log_prob(x, ensemble=5)
    a = model.sample(8, generator=gen(1), ensemble=4)
    assert torch.equal(a, model.sample(8, generator=gen(1), ensemble=4))
    assert torch.equal(model.sample(3, generator=gen(2)), model.sample(3, generator=gen(2), ensemble=1))


def test_made_cycles_masks_in_training_and_keeps_them_in_its_state():
    shape = (1, 3, 3)
    model = tiny("made", shape, num_masks=3, order_agnostic=True)
    x = (torch.rand(4, *shape, generator=gen(0)) < 0.5).float()
    model.train()
    seen = []
    for step in range(5):
        model.loss(x, ctx=TrainContext(step, 5))  # the trainer's step picks the mask
        seen.append(int(model.mask_id))
    assert seen == [0, 1, 2, 0, 1] and "train_step" not in model.state_dict()
    model.loss(x)  # a loop of one's own without the context: mask 0
    assert int(model.mask_id) == 0
    model.eval()
    model.loss(x, ctx=TrainContext(4, 5))
    assert int(model.mask_id) == 0  # evaluation: mask 0
    model.use_mask(2)
    copy = tiny("made", shape, seed=1, num_masks=3, order_agnostic=True)
    copy.load_state_dict(model.state_dict())
    assert int(copy.mask_id) == 2 and torch.equal(copy.ordering(), model.ordering())
    torch.testing.assert_close(copy.log_prob(x, ensemble=3), model.log_prob(x, ensemble=3))


def test_nade_order_agnostic_training_and_ensembles():
    shape = (1, 3, 3)
    x = (torch.rand(6, *shape, generator=gen(0)) < 0.5).float()
    model = tiny("nade", shape, order_agnostic=True).train()
    torch.manual_seed(0)
    l1 = model.loss(x)["loss"]
    torch.manual_seed(1)
    l2 = model.loss(x)["loss"]
    assert not torch.allclose(l1, l2)  # a fresh random ordering per example
    model.eval()
    torch.testing.assert_close(model.loss(x)["loss"], -model.log_prob(x).mean())  # evaluation: the natural order
    lps = torch.stack([model.log_prob_from_params(model.conditionals(x, model.fixed_orders(k).expand(6, -1)), x)
                       for k in range(3)])
    torch.testing.assert_close(model.log_prob(x, ensemble=3), torch.logsumexp(lps, 0) - math.log(3))
    with pytest.raises(ConfigError, match="order_agnostic"):
        tiny("nade", shape).log_prob(x, ensemble=2)


# ------------------------------------------------------------------ training, data checks, errors


@pytest.mark.parametrize("name", MODELS)
def test_loss_is_the_mean_nll_and_training_lowers_it(name):
    model = tiny(name, (1, 4, 4)).train()
    x = torch.zeros(16, 1, 4, 4)
    x[:, :, :, :2] = 1.0  # a single image: left half on
    out = model.loss(x)
    assert set(out) == {"loss", "bits_per_dim"}
    torch.testing.assert_close(out["bits_per_dim"], out["loss"].detach() / (16 * math.log(2)))
    first = float(-model.eval().log_prob(x).mean().detach())
    model.train()
    opt = torch.optim.Adam(model.parameters(), 1e-2)
    for _ in range(60):
        opt.zero_grad()
        model.loss(x)["loss"].backward()
        opt.step()
    assert float(-model.eval().log_prob(x).mean().detach()) < 0.5 * first


def test_registry_entries():
    for name in MODELS:
        e = genzoo.registry.get_entry(name)
        assert e.family == "autoregressive" and e.cls.likelihood == "exact" and e.cls.discrete_likelihood
        assert issubclass(e.cls, AutoregressiveModel)
        assert {"temperature", "observed", "mask"} <= set(e.cls.sample_options)


BINARY = DataSpec("mnist", "image", (1, 28, 28), value_range=None, discrete="binary", levels=2, binarization="static")
GREY = DataSpec("mnist", "image", (1, 28, 28), value_range=(-1.0, 1.0), levels=256)


def test_check_data():
    for name in MODELS:
        genzoo.build(name).check_data(BINARY)
        genzoo.build(name, output="logistic").check_data(GREY)
        with pytest.raises(ConfigError, match="binarize=static"):
            genzoo.build(name).check_data(GREY)
    cat = genzoo.build("pixelcnn", output="categorical")
    cat.check_data(GREY)
    with pytest.raises(ConfigError, match="binary data"):
        cat.check_data(BINARY)
    with pytest.raises(ConfigError, match=r"model.levels=17"):
        genzoo.build("pixelcnn", shape=[1, 8, 8], output="categorical").check_data(
            DataSpec("digits", "image", (1, 8, 8), value_range=(-1.0, 1.0), levels=17))
    with pytest.raises(ConfigError, match="value_range"):
        cat.check_data(DataSpec("mnist", "image", (1, 28, 28), value_range=(0.0, 1.0), levels=256))
    with pytest.raises(ConfigError, match="dequantised"):
        cat.check_data(DataSpec("mnist", "image", (1, 28, 28), levels=256, dequantization="uniform"))
    with pytest.raises(ConfigError, match="value_range"):
        genzoo.build("made", output="logistic").check_data(DataSpec("mnist", "image", (1, 28, 28), value_range=(0.0, 1.0)))
    with pytest.raises(ConfigError, match="token"):
        genzoo.build("nade", shape=[64]).check_data(DataSpec("shakespeare", "text", (64,), value_range=None,
                                                              discrete="tokens", vocab_size=65))
    with pytest.raises(ConfigError, match="shape"):
        genzoo.build("fvsbn", shape=[1, 8, 8]).check_data(BINARY)


def test_bad_inputs_and_arguments():
    model = tiny("made", (1, 3, 3))
    with pytest.raises(DataError, match="binary"):
        model.log_prob(torch.full((2, 1, 3, 3), 0.5))
    with pytest.raises(DataError, match="shape"):
        model.log_prob(torch.zeros(2, 1, 4, 4))
    with pytest.raises(DataError, match="grid"):
        tiny("nade", (1, 3, 3), output="categorical").log_prob(torch.full((2, 1, 3, 3), 0.001))
    with pytest.raises(ConfigError, match="did you mean 'temperature'"):
        model.sample(2, temprature=0.5)
    with pytest.raises(ConfigError, match="unknown log_prob option"):
        model.log_prob(torch.zeros(2, 1, 3, 3), k=10)
    with pytest.raises(ConfigError, match=r"\(C, H, W\)"):
        genzoo.build("pixelcnn", shape=[16])
    with pytest.raises(ConfigError, match="multiple"):
        genzoo.build("gated_pixelcnn", shape=[2, 4, 4], channels=3)
    with pytest.raises(ConfigError, match="odd"):
        genzoo.build("pixelcnn", kernel_size=4)
    with pytest.raises(ConfigError, match="valid: bernoulli"):
        genzoo.build("fvsbn", output="gaussian")
    with pytest.raises(ConfigError, match="hidden"):
        genzoo.build("made", hidden=[])
    with pytest.raises(ConfigError, match="num_masks"):
        genzoo.build("made", num_masks=0)


# ------------------------------------------------------------------ recipes and the CLI

RECIPES = ("fvsbn", "nade", "made", "pixelcnn", "gated_pixelcnn", "pixelcnn_mnist_grey", "gated_pixelcnn_mnist_logistic")


@pytest.mark.parametrize("recipe", RECIPES)
def test_recipes_build_on_their_data(recipe):
    from genzoo.train.run import prepare

    raw = load_recipe(recipe)
    assert raw["train"]["time_budget"] == 1800  # sized for the 30-minute budget
    cfg, train_data, _, model = prepare(raw)
    assert isinstance(model, AutoregressiveModel) and model.shape == (1, 28, 28)
    if model.output_name == "bernoulli":
        assert train_data.spec.binarization == "static"


TINY_CLI = ["data.name=digits", "data.binarize=static", "train.steps=6", "train.batch_size=16", "train.ckpt_every=3",
            "train.num_samples=4", "--no-progress"]


def test_cli_train_sample_eval(tmp_path, capsys):
    d = tmp_path / "gated"
    assert main(["train", "gated_pixelcnn", *TINY_CLI, "model.channels=4", "model.layers=2", "model.head_channels=8",
                 "--run-dir", str(d)]) == 0
    s = json.loads((d / "train_summary.json").read_text())
    assert s["steps"] == 6 and s["model"] == "GatedPixelCNN" and (d / "samples.png").is_file()
    a, b = tmp_path / "a.npy", tmp_path / "b.npy"
    assert main(["sample", str(d), "--n", "4", "--out", str(a), "temperature=0.8"]) == 0
    assert main(["sample", str(d), "--n", "4", "--out", str(b), "temperature=0.8"]) == 0
    xa, xb = np.load(a), np.load(b)
    assert xa.shape == (4, 1, 8, 8) and np.array_equal(xa, xb) and set(np.unique(xa)) <= {0.0, 1.0}
    out = tmp_path / "m.json"
    assert main(["eval", str(d), "--metrics", "nll", "--limit", "20", "--no-progress", "--out", str(out)]) == 0
    r = json.loads(out.read_text())["nll"]
    assert r["num_examples"] == 20 and r["likelihood"] == "exact" and 0 < r["nll_nats"] < 64 * math.log(2) * 2
    assert r["bits_per_dim"] == pytest.approx(r["nll_nats"] / (64 * math.log(2)))  # a mass: no offset


def test_cli_made_ensemble_and_grey_levels(tmp_path, capsys):
    d = tmp_path / "made"
    assert main(["train", "made", *TINY_CLI, "model.hidden=[16]", "model.num_masks=2", "--run-dir", str(d)]) == 0
    out = tmp_path / "m.json"
    assert main(["eval", str(d), "--metrics", "nll", "--limit", "10", "--no-progress", "--out", str(out), "ensemble=2"]) == 0
    assert math.isfinite(json.loads(out.read_text())["nll"]["nll_nats"])
    capsys.readouterr()
    assert main(["eval", str(d), "--metrics", "nll", "--limit", "10", "--no-progress", "ensemble=3"]) == 2
    assert "num_masks=2" in capsys.readouterr().err
    grey = ["pixelcnn", "data.name=digits", "data.binarize=none", "train.steps=2", "train.batch_size=8", "train.num_samples=2", "model.channels=4",
            "model.blocks=1", "model.head_channels=4", "model.output=categorical", "--no-progress"]
    assert main(["train", *grey, "--run-dir", str(tmp_path / "g0")]) == 2
    assert "model.levels=17" in capsys.readouterr().err
    assert main(["train", *grey, "model.levels=17", "--run-dir", str(tmp_path / "g1")]) == 0
