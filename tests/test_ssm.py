"""Sequence layers (nn/ssm.py: S4D, RTF) and Monarch matrices (nn/monarch.py)."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from genzoo.nn.monarch import MonarchLinear, stride_permutation
from genzoo.nn.ssm import RTF, S4D, causal_fft_conv


def gen(seed):
    return torch.Generator().manual_seed(seed)


def run_recurrent(layer, x):
    """Apply ``layer.step`` over time from ``layer.initial_state``: (B, T, H) -> (B, T, H)."""
    state = layer.initial_state(x.shape[0])
    ys = []
    for t in range(x.shape[1]):
        y, state = layer.step(x[:, t], state)
        ys.append(y)
    return torch.stack(ys, dim=1)


def stable_rtf(dim=3, order=4, seed=0, radius=0.9, min_frac=0.2, **kw):
    """An RTF with random poles of modulus in radius * [sqrt(min_frac), 1] (conjugate pairs), random b, h0."""
    rng = np.random.default_rng(seed)
    layer = RTF(dim, order, **kw).double()
    a = np.zeros((dim, order))
    for h in range(dim):
        poles = []
        while len(poles) < order:
            r, phi = radius * math.sqrt(rng.uniform(min_frac, 1.0)), rng.uniform(0, math.pi)
            poles += [r * np.exp(1j * phi), r * np.exp(-1j * phi)] if order - len(poles) >= 2 else [r * math.cos(phi)]
        a[h] = np.real(np.poly(poles))[1:]             # z^N + a_1 z^{N-1} + ... + a_N
    with torch.no_grad():
        layer.a_raw.copy_(torch.from_numpy(a))
        layer.b.copy_(torch.from_numpy(rng.normal(size=(dim, order))))
        layer.h0.copy_(torch.from_numpy(rng.normal(size=dim)))
    return layer


def impulse_by_long_division(a, b, h0, L):
    """Impulse response of h0 + b(z)/a(z) by long division: g_t = b_t - sum_i a_i g_{t-i} (b_t = 0 for t > N)."""
    N = len(a)
    g = np.zeros(L)                                    # g_0 = 0: b(z)/a(z) is strictly proper
    for t in range(1, L):
        g[t] = (b[t - 1] if t <= N else 0.0) - sum(a[i - 1] * g[t - i] for i in range(1, min(N, t) + 1))
    g[0] = h0
    return g


# ------------------------------------------------------------------ S4D
@pytest.mark.parametrize("init", ["lin", "inv"])
def test_s4d_convolutional_and_recurrent_modes_agree(init):
    torch.manual_seed(0)
    layer = S4D(5, state_size=16, init=init, dt_max=0.5).double()
    x = torch.randn(2, 40, 5, dtype=torch.float64, generator=gen(1))
    y_conv, y_rec = layer(x), run_recurrent(layer, x)
    assert y_conv.shape == x.shape
    assert y_conv.abs().max() > 1e-2                   # not trivially zero
    torch.testing.assert_close(y_conv, y_rec, atol=1e-5, rtol=0)
    assert (y_conv - y_rec).abs().max() < 1e-10        # float64: agreement is to round-off


def test_s4d_initialisation_is_the_paper_s():
    lin, inv = S4D(2, state_size=8, init="lin").double(), S4D(2, state_size=8, init="inv").double()
    n = torch.arange(4, dtype=torch.float64)
    A_lin = torch.complex(-torch.exp(lin.log_a_real), lin.a_imag)
    torch.testing.assert_close(A_lin, torch.complex(torch.full((2, 4), -0.5, dtype=torch.float64),
                                                    (math.pi * n).expand(2, 4)))
    torch.testing.assert_close(inv.a_imag, (8 / math.pi * (8 / (2 * n + 1) - 1)).expand(2, 4), rtol=1e-6, atol=1e-6)
    dt = torch.exp(S4D(1000, dt_min=1e-3, dt_max=1e-1).log_dt)
    assert dt.min() >= 1e-3 * (1 - 1e-5) and dt.max() <= 1e-1 * (1 + 1e-5)


def test_s4d_kernel_equals_a_direct_evaluation_of_the_sum():
    torch.manual_seed(2)
    layer = S4D(3, state_size=8, dt_max=0.3).double()
    L = 25
    K = layer.ssm_kernel(L).detach().numpy()
    dt = np.exp(layer.log_dt.detach().numpy())
    A = -np.exp(layer.log_a_real.detach().numpy()) + 1j * layer.a_imag.detach().numpy()
    B = torch.view_as_complex(layer.B.detach()).numpy()
    C = torch.view_as_complex(layer.C.detach()).numpy()
    direct = np.zeros((3, L))
    for h in range(3):
        for n in range(4):
            A_bar = np.exp(dt[h] * A[h, n])
            B_bar = (A_bar - 1) / A[h, n] * B[h, n]
            power = 1.0 + 0j
            for l in range(L):                          # A_bar^l by repeated multiplication
                direct[h, l] += 2 * (C[h, n] * B_bar * power).real
                power *= A_bar
    np.testing.assert_allclose(K, direct, atol=1e-12, rtol=0)
    # the full kernel adds D at lag 0 and forward == convolution with it
    x = torch.randn(1, L, 3, dtype=torch.float64, generator=gen(3))
    full = layer.kernel(L)
    direct_y = torch.stack([sum(full[:, l] * x[0, t - l] for l in range(t + 1)) for t in range(L)])
    torch.testing.assert_close(layer(x)[0], direct_y, atol=1e-12, rtol=0)


# ------------------------------------------------------------------ RTF
def test_rtf_fft_kernel_equals_long_division_impulse_response():
    layer = stable_rtf(dim=3, order=4, seed=0, radius=0.97, min_frac=1.0)
    L = 64
    k = layer.kernel(L).detach().numpy()
    for h in range(3):
        ref = impulse_by_long_division(layer.a[h].detach().numpy(), layer.b[h].detach().numpy(),
                                       float(layer.h0[h].detach()), L)
        # poles at modulus 0.97 make 1 / a(w) large near them: round-off scales with the kernel
        np.testing.assert_allclose(k[h], ref, atol=1e-9 * np.abs(ref).max(), rtol=0)
    # poles close to the circle: the tail beyond L is not negligible, so the correction matters
    assert np.abs(impulse_by_long_division(layer.a[0].detach().numpy(), layer.b[0].detach().numpy(), 0.0, 200)[L:]).max() > 1e-3


def test_rtf_kernel_equals_impulse_response_of_its_companion_realisation():
    layer = stable_rtf(dim=2, order=5, seed=1, radius=0.95)
    L, N = 50, 5
    for h in range(2):
        a, b, h0 = layer.a[h].detach(), layer.b[h].detach(), float(layer.h0[h].detach())
        A = torch.zeros(N, N, dtype=torch.float64)
        A[0] = -a
        A[1:, :-1] = torch.eye(N - 1, dtype=torch.float64)
        Bc = torch.zeros(N, dtype=torch.float64)
        Bc[0] = 1.0
        # realisation (A, B, C, D): h_0 = D, h_t = C A^{t-1} B
        impulse = [h0] + [float(b @ torch.linalg.matrix_power(A, t - 1) @ Bc) for t in range(1, L)]
        torch.testing.assert_close(layer.kernel(L)[h].detach(), torch.tensor(impulse, dtype=torch.float64),
                                   atol=1e-10, rtol=0)
        torch.testing.assert_close(layer.companion()[h].detach(), A)


def test_rtf_convolutional_and_recurrent_modes_agree():
    for seed, L in [(2, 33), (3, 3)]:                 # L <= order: kernel FFT length is order + 1
        layer = stable_rtf(dim=4, order=6, seed=seed, radius=0.99)
        x = torch.randn(2, L, 4, dtype=torch.float64, generator=gen(seed))
        torch.testing.assert_close(layer(x), run_recurrent(layer, x), atol=1e-9, rtol=0)


def test_rtf_uncorrected_kernel_is_the_aliased_impulse_response():
    exact = stable_rtf(dim=2, order=4, seed=4, radius=0.95)
    aliased = stable_rtf(dim=2, order=4, seed=4, radius=0.95, exact_truncation=False)
    L = 16
    long = exact.kernel(40 * L).detach()
    expected = long.reshape(2, 40, L).sum(1)          # k~_t = sum_m h_{t + mL}  (tail beyond 40L < 1e-30)
    torch.testing.assert_close(aliased.kernel(L).detach(), expected, atol=1e-10, rtol=0)
    assert (aliased.kernel(L) - exact.kernel(L)).abs().max() > 1e-3   # and it differs from the truncation


def test_rtf_initialisation_and_montel_constraint():
    layer = RTF(6, order=8)
    assert torch.all(layer.a == 0) and torch.all(layer.b == 0)
    x = torch.randn(2, 12, 6, generator=gen(5))
    torch.testing.assert_close(layer(x), x * layer.h0, atol=1e-5, rtol=0)   # zero poles/zeros: y = h0 x
    stable = RTF(6, order=8, init="montel", stable=True).double()
    with torch.no_grad():
        stable.a_raw.copy_(torch.randn(6, 8, dtype=torch.float64, generator=gen(6)) * 10)
    for h in range(6):
        poles = np.roots(np.concatenate(([1.0], stable.a[h].detach().numpy())))
        assert np.abs(poles).max() < 1.0
    x = torch.randn(1, 20, 6, dtype=torch.float64, generator=gen(7))
    torch.testing.assert_close(stable(x), run_recurrent(stable, x), atol=1e-9, rtol=0)


# ------------------------------------------------------------------ shared: causality, gradients
LAYERS = {
    "s4d": lambda: S4D(3, state_size=8, dt_max=0.5).double(),
    "rtf": lambda: stable_rtf(dim=3, order=4, seed=8),
    "rtf_stable": lambda: RTF(3, order=4, init="montel", stable=True).double(),
}


@pytest.mark.parametrize("name", sorted(LAYERS))
def test_causality_by_autograd(name):
    torch.manual_seed(9)
    layer = LAYERS[name]()
    T = 12
    x = torch.randn(2, T, 3, dtype=torch.float64, generator=gen(10), requires_grad=True)
    y = layer(x)
    for t in range(T):
        (g,) = torch.autograd.grad(y[:, t].sum(), x, retain_graph=True)
        if t + 1 < T:
            assert g[:, t + 1:].abs().max() < 1e-12, f"output {t} depends on a later input"
        assert g[:, t].abs().max() > 1e-6                  # and it does depend on the present one


@pytest.mark.parametrize("name", sorted(LAYERS))
def test_gradients_reach_every_parameter(name):
    torch.manual_seed(11)
    layer = LAYERS[name]()
    x = torch.randn(2, 16, 3, dtype=torch.float64, generator=gen(12))
    layer(x).pow(2).sum().backward()
    for pname, p in layer.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, pname


def test_rtf_zero_init_gradients():
    """At a = b = 0 the numerator and h0 learn at once; a gets gradient as soon as b has moved."""
    layer = RTF(3, order=4).double()
    x = torch.randn(2, 16, 3, dtype=torch.float64, generator=gen(13))
    layer(x).pow(2).sum().backward()
    assert layer.b.grad.abs().sum() > 0 and layer.h0.grad.abs().sum() > 0
    assert layer.a_raw.grad.abs().max() == 0
    with torch.no_grad():
        layer.b -= 0.1 * layer.b.grad
    layer.zero_grad()
    layer(x).pow(2).sum().backward()
    assert (layer.a_raw.grad.abs() > 0).all()


def test_float32_modes_agree_and_fft_conv_is_causal_linear_convolution():
    torch.manual_seed(14)
    layer = S4D(4, state_size=16)
    x = torch.randn(1, 30, 4, generator=gen(15))
    torch.testing.assert_close(layer(x), run_recurrent(layer, x), atol=1e-4, rtol=1e-4)
    assert run_recurrent(layer, x).dtype == torch.float32
    u = torch.randn(2, 9, 3, dtype=torch.float64, generator=gen(16))
    k = torch.randn(3, 9, dtype=torch.float64, generator=gen(17))
    ref = torch.stack([(k[:, : t + 1].flip(-1) * u[:, : t + 1].transpose(1, 2)).sum(-1) for t in range(9)], dim=1)
    torch.testing.assert_close(causal_fft_conv(u, k), ref, atol=1e-12, rtol=0)


# ------------------------------------------------------------------ Monarch
@pytest.mark.parametrize("shape", [(16, 16, None), (64, 64, None), (10, 7, None), (12, 30, None), (30, 12, 3),
                                   (5, 5, 2), (9, 20, 4)])
def test_monarch_equals_its_dense_matrix(shape):
    fin, fout, nb = shape
    torch.manual_seed(18)
    layer = MonarchLinear(fin, fout, nblocks=nb).double()
    x = torch.randn(3, 2, fin, dtype=torch.float64, generator=gen(19))
    M = layer.to_dense()
    assert M.shape == (fout, fin)
    torch.testing.assert_close(layer(x), x @ M.T + layer.bias, atol=1e-12, rtol=0)
    nobias = MonarchLinear(fin, fout, nblocks=nb, bias=False).double()
    assert nobias.bias is None
    torch.testing.assert_close(nobias(x), x @ nobias.to_dense().T, atol=1e-12, rtol=0)


def test_monarch_tiny_hand_built_matches_P_L_Pt_R():
    layer = MonarchLinear(4, 4, nblocks=2, bias=False).double()
    R_blocks = torch.tensor([[[1.0, 2.0], [3.0, 4.0]], [[5.0, 6.0], [7.0, 8.0]]], dtype=torch.float64)
    L_blocks = torch.tensor([[[0.5, -1.0], [2.0, 1.5]], [[-2.0, 0.25], [1.0, 3.0]]], dtype=torch.float64)
    with torch.no_grad():
        layer.R.copy_(R_blocks)
        layer.L.copy_(L_blocks)
    R = torch.tensor([[1, 2, 0, 0], [3, 4, 0, 0], [0, 0, 5, 6], [0, 0, 7, 8]], dtype=torch.float64)
    L = torch.tensor([[0.5, -1, 0, 0], [2, 1.5, 0, 0], [0, 0, -2, 0.25], [0, 0, 1, 3]], dtype=torch.float64)
    # perfect shuffle for n = 4 = 2^2: reshape (2, 2), transpose: (x0, x1, x2, x3) -> (x0, x2, x1, x3)
    P = torch.tensor([[1, 0, 0, 0], [0, 0, 1, 0], [0, 1, 0, 0], [0, 0, 0, 1]], dtype=torch.float64)
    expected = P @ L @ P.T @ R
    torch.testing.assert_close(layer.to_dense(), expected)
    x = torch.randn(5, 4, dtype=torch.float64, generator=gen(20))
    torch.testing.assert_close(layer(x), x @ expected.T)


def test_monarch_tiny_rectangular_with_padding_matches_explicit_construction():
    # in 3 -> padded 4 (k = 2 blocks of p = 2), out 5 -> padded 6 (s = 3), q = p = 2
    layer = MonarchLinear(3, 5, nblocks=2, bias=True).double()
    R_blocks = torch.arange(1.0, 9.0, dtype=torch.float64).reshape(2, 2, 2)
    L_blocks = torch.arange(-6.0, 6.0, dtype=torch.float64).reshape(2, 3, 2) / 4
    with torch.no_grad():
        layer.R.copy_(R_blocks)
        layer.L.copy_(L_blocks)
    R = torch.block_diag(*R_blocks)                    # (4, 4)
    L = torch.block_diag(*L_blocks)                    # (6, 4)
    Pmid = torch.zeros(4, 4, dtype=torch.float64)      # P_(q=2,k=2): new[j*2 + i] = old[i*2 + j]
    for i in range(2):
        for j in range(2):
            Pmid[j * 2 + i, i * 2 + j] = 1
    Pout = torch.zeros(6, 6, dtype=torch.float64)      # P_(k=2,s=3): new[j*2 + i] = old[i*3 + j]
    for i in range(2):
        for j in range(3):
            Pout[j * 2 + i, i * 3 + j] = 1
    pad = torch.eye(4, 3, dtype=torch.float64)         # zero-pad the input 3 -> 4
    trunc = torch.eye(5, 6, dtype=torch.float64)       # keep the first 5 outputs
    expected = trunc @ Pout @ L @ Pmid @ R @ pad
    torch.testing.assert_close(layer.to_dense(), expected)
    x = torch.randn(4, 3, dtype=torch.float64, generator=gen(21))
    torch.testing.assert_close(layer(x), x @ expected.T + layer.bias)
    assert torch.equal(stride_permutation(2, 3), torch.tensor([0, 3, 1, 4, 2, 5]))


def test_monarch_parameter_count_and_full_connectivity():
    layer = MonarchLinear(1024, 1024)
    assert layer.nblocks == 32 and layer.R.shape == (32, 32, 32) and layer.L.shape == (32, 32, 32)
    n_weights = layer.R.numel() + layer.L.numel()
    assert n_weights == 2 * 1024 ** 1.5                # 65,536 instead of 1,048,576
    assert sum(p.numel() for p in layer.parameters()) == n_weights + 1024
    for fin, fout in [(64, 64), (48, 80), (80, 48), (10, 7)]:
        layer = MonarchLinear(fin, fout).double()
        if min(fin, fout) >= 16:                      # (tiny matrices gain nothing from the structure)
            assert layer.R.numel() + layer.L.numel() < fin * fout / 2
        assert (layer.to_dense().abs() > 0).all(), (fin, fout)   # every output reaches every input
    assert MonarchLinear(256, 256).R.numel() * 2 <= 256 * 256 // 8
    # init as the authors' code: each factor with the nn.Linear bound of its block fan-in (16 here)
    layer = MonarchLinear(256, 256)
    assert 0.2 < layer.R.abs().max() <= 1 / 4 and 0.2 < layer.L.abs().max() <= 1 / 4
    assert 0.05 < layer.bias.abs().max() <= 1 / 16


def test_monarch_gradients_and_drop_in_for_linear():
    torch.manual_seed(22)
    layer = MonarchLinear(36, 20)
    x = torch.randn(2, 7, 36, generator=gen(23))
    y = layer(x)
    assert y.shape == (2, 7, 20) and y.dtype == torch.float32
    y.pow(2).sum().backward()
    for name, p in layer.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    # a dense nn.Linear loaded with the Monarch matrix computes the same function
    dense = torch.nn.Linear(36, 20)
    with torch.no_grad():
        dense.weight.copy_(layer.to_dense())
        dense.bias.copy_(layer.bias)
    torch.testing.assert_close(dense(x), layer(x), atol=1e-5, rtol=1e-5)


def test_rtf_montel_constraint_bounds_companion_powers_and_float32_kernel_is_accurate():
    """sum |a_i| < 1 gives ||A_c||_inf = 1: no transient growth, so the truncation correction
    (a companion power) and the recurrence stay well conditioned; float32 kernel ~ float64 reference."""
    torch.manual_seed(24)
    layer = RTF(2, order=16, stable=True)
    with torch.no_grad():
        layer.a_raw.normal_()
        layer.b.normal_()
        layer.montel_scale.fill_(1e-3)            # sum |a_i| just below 1: slow poles
    A = layer.companion().detach().double()
    assert A.abs().sum(-1).amax() <= 1 + 1e-6
    assert torch.linalg.matrix_power(A, 1000).abs().sum(-1).amax() <= 1 + 1e-6
    L = 512
    k32 = layer.kernel(L).detach().double()
    for h in range(2):
        ref = impulse_by_long_division(layer.a[h].detach().double().numpy(), layer.b[h].detach().double().numpy(),
                                       float(layer.h0[h].detach()), L)
        assert np.abs(k32[h].numpy() - ref).max() < 1e-5 * np.abs(ref).max()
