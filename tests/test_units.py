"""bits/dim conversion pinned to the formula in genzoo.units / DESIGN.md."""
import math

import pytest
import torch

from genzoo.units import bits_per_dim, dequantization_offset_bits, logmeanexp, nats_from_bits_per_dim


def test_offsets_pinned():
    assert dequantization_offset_bits((-1.0, 1.0)) == pytest.approx(7.0)
    assert dequantization_offset_bits((0.0, 1.0)) == pytest.approx(8.0)
    assert dequantization_offset_bits(None) == 0.0
    assert dequantization_offset_bits((0.0, 255.0 + 1.0)) == pytest.approx(0.0)  # raw integer scale + U[0,1)


def test_bits_per_dim_values():
    d = 784
    nll = 80.0
    assert bits_per_dim(nll, d) == pytest.approx(80.0 / (784 * math.log(2)))
    assert bits_per_dim(nll, d, (0.0, 1.0)) == pytest.approx(80.0 / (784 * math.log(2)) + 8)
    assert bits_per_dim(nll, d, (-1.0, 1.0)) == pytest.approx(80.0 / (784 * math.log(2)) + 7)
    # a uniform density on [0,1]^D of dequantised 8-bit data is exactly 8 bits/dim
    assert bits_per_dim(0.0, d, (0.0, 1.0)) == pytest.approx(8.0)
    # and a uniform density on [-1,1]^D has log p = -D log 2, still 8 bits/dim
    assert bits_per_dim(d * math.log(2.0), d, (-1.0, 1.0)) == pytest.approx(8.0)


def test_roundtrip_and_tensor():
    x = torch.tensor([10.0, 100.0, 1000.0])
    for r in [None, (0.0, 1.0), (-1.0, 1.0)]:
        assert torch.allclose(nats_from_bits_per_dim(bits_per_dim(x, 64, r), 64, r), x)


def test_logmeanexp():
    x = torch.randn(5, 7)
    assert torch.allclose(logmeanexp(x, 1), torch.log(torch.exp(x).mean(1)), atol=1e-6)


def test_bad_range():
    with pytest.raises(ValueError):
        dequantization_offset_bits((1.0, 1.0))
