"""Linear time-invariant sequence layers: the diagonal state space S4D and the rational transfer
function RTF, each with a convolutional (FFT) mode and a recurrent mode that compute the same map.

Both are channel-wise ("SISO") layers: channel h of the input drives its own single-input
single-output system, so ``forward`` maps (B, T, dim) -> (B, T, dim) and never mixes channels
(the block around the layer does that). Interface shared by :class:`S4D` and :class:`RTF`, so
that the Transformer can take either as a ``mixer``:

* ``forward(x)``: x (B, T, dim) -> y (B, T, dim), causal convolution with the layer's kernel
  computed for length T, via FFTs of length 2T (no circular wrap-around);
* ``kernel(L)``: the (dim, L) kernel k with y_t = sum_{l <= t} k_l x_{t-l} (skip term included);
* ``initial_state(batch)``: the zero state; ``step(x_t, state) -> (y_t, state)``: one time step,
  x_t (B, dim). Running ``step`` over t = 0 .. T-1 from ``initial_state`` reproduces ``forward``.

Papers and what is taken from each
----------------------------------
* Gu, Gupta, Goel & Re 2022, "On the Parameterization and Initialization of Diagonal State
  Space Models" (S4D). Per channel a continuous system x'(t) = A x + B u, y = C x + D u with
  diagonal complex A (N/2 states; their conjugates are implied, so y = 2 Re(C x) is real).

  - A_n = -exp(log_a_n) + i A_imag_n (real part kept negative by the exp parameterisation),
    initialised S4D-Lin A_n = -1/2 + i pi n (default) or S4D-Inv
    A_n = -1/2 + i (N/pi) (N/(2n+1) - 1), n = 0 .. N/2-1, N = ``state_size``.
  - step size Delta = exp(log_dt), log_dt ~ U[log dt_min, log dt_max] per channel; B = 1,
    C ~ CN(0, 1), D ~ N(0, 1) at initialisation (all learnable).
  - zero-order hold: A_bar = exp(Delta A), B_bar = (A_bar - 1) / A * B (diagonal, elementwise).
  - convolution kernel (Vandermonde): K_l = 2 Re(sum_n C_n B_bar_n A_bar_n^l), l = 0 .. L-1, and
    y = K * u + D u (causal convolution by FFT of length 2L).
  - recurrence: x_t = A_bar x_{t-1} + B_bar u_t, y_t = 2 Re(C x_t) + D u_t, x_{-1} = 0.

* Parnichkun, Massaroli, Moro, Smith, Hasani, Lechner, An, Re, Asama, Ermon, Suzuki, Yamashita &
  Poli 2024, "State-Free Inference of State-Space Models: The Transfer Function Approach" (RTF).
  Per channel the transfer function

      H(z) = h_0 + (b_1 z^-1 + ... + b_N z^-N) / (1 + a_1 z^-1 + ... + a_N z^-N),

  2N + 1 parameters per channel that describe every N-th order LTI system (no diagonal
  restriction). Impulse response: h_t = h_0 [t = 0] + g_t with g = b / a by long division,
  g_t = b_t - sum_{i=1}^{N} a_i g_{t-i} (b_t = 0 for t > N).

  - state-free kernel (the paper's algorithm): zero-pad (1, a_1 .. a_N) and (0, b_1 .. b_N) to
    length M, evaluate both polynomials at the M-th roots of unity with one FFT each, divide,
    add h_0, inverse FFT. Memory and time O(M log M) per channel, independent of the order N.
  - truncation / aliasing. Sampling H at M points gives the DFT of the *aliased* impulse
    response k~_t = sum_{m >= 0} h_{t + mM}, not of the truncated one h_0 .. h_{M-1}; the two
    differ by O(rho^M) (rho = largest pole modulus), which is not small for slow poles. In
    companion coordinates (A_c, e_1, b) with g_t = b A_c^{t-1} e_1 the paper's fix is the
    truncated numerator C~ = C (I - A^M). With the z^-1 numerator convention used here this
    gives the *exact* first M taps once one more term is removed:

          sum_{t=1}^{M-1} g_t w^-t = b (I - A_c^M) (w I - A_c)^{-1} e_1 - b A_c^{M-1} e_1
                                     for every M-th root of unity w,

    i.e. numerator b~ = b (I - A_c^M) and a constant -g_M (the tap t = M aliases onto t = 0).
    ``RTF(exact_truncation=True)`` (default) applies exactly this, with A_c^{M-1} from
    ``torch.linalg.matrix_power`` (log2 M batched N x N products; memory O(dim N^2), still
    nothing of size L x N), so the convolutional and recurrent modes agree for every length and
    the learnt (a, b, h_0) are the coefficients of the actual recurrent filter. This is what the
    authors' released code does in its ``RTF2`` class (numerator correction in the
    convolutional mode); their default ``RTF`` class instead learns C~ directly at a fixed
    truncation length and solves C = C~ (I - A^L)^{-1} when switching to recurrence.
    ``exact_truncation=False`` is the uncorrected algorithm: the kernel is the aliased k~ above
    (tested), cheaper, and differs from the recurrence by the aliasing tail.
  - numerics (measured, see docs/sequence_layers.md). The direct-form polynomials are the
    weak point of any RTF implementation: 1 / a(w) is large near poles, so the paper's FFT
    algorithm itself loses digits for high orders with clustered poles. The correction adds a
    second hazard: A_c^{M-1} by repeated squaring cancels catastrophically when the companion
    matrix has a large transient P = max_k ||A_c^k||_inf (for N = 16 with all poles at modulus
    0.99, sum |a_i| = 126, P ~ 1e10 and the corrected kernel overflows). The power is therefore
    taken in float64 (exact to ~1e-12 for P up to ~1e4, covering float32 training), and
    ``stable=True`` removes the hazard altogether: with sum |a_i| < 1, ||A_c||_inf = 1, so
    ||A_c^k||_inf <= 1 for all k.
  - recurrence via the companion (controllable canonical, direct form II) realisation:
    s_t = (w_{t-1}, ..., w_{t-N}), y_t = h_0 u_t + b . s_t, w_t = u_t - a . s_t,
    s_{t+1} = (w_t, w_{t-1}, ..., w_{t-N+1}); i.e. A_c = [[-a^T], [I_{N-1}, 0]], B_c = e_1,
    C_c = b, D_c = h_0. O(N) per step.
  - initialisation as the authors' code (``init="zeros"``, its default): a = 0 and b = 0, all
    poles at the origin (a stable FIR start, kernel = h_0 delta), h_0 ~ N(0, 1). Note that at
    exactly a = b = 0 the gradient with respect to a vanishes (dH/da = -B(z) z^-i / A(z)^2 = 0)
    until b has moved. ``init="montel"`` draws a, b ~ U(-1/N, 1/N) (sum |a_i| <= 1).
  - stability: nothing forces the poles inside the unit circle during training (the paper and
    its code train unconstrained from the zero init). ``stable=True`` applies the code's
    "l1_montel" constraint a <- a / (sum_i |a_i| + |s| + 1e-6) with a learnt scalar s; then
    sum |a_i| < 1, and for |z| >= 1, |z^N + a_1 z^{N-1} + ... + a_N| >= |z|^N (1 - sum |a_i|) > 0,
    so every pole lies strictly inside the unit disc (a sufficient, not necessary, condition: it
    excludes some stable filters).

Everything is real arithmetic on CPU or GPU; complex S4D parameters are stored as real
(..., 2) tensors so ``.double()`` / ``.to(dtype)`` convert them too.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

S4D_INITS = ("lin", "inv")
RTF_INITS = ("zeros", "montel")


def causal_fft_conv(u: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """Causal convolution y_t = sum_{l=0}^{t} k_l u_{t-l} per channel, by FFT of length 2T.

    u: (B, T, H); k: (H, T) (real). Zero-padding to 2T makes the circular convolution linear.
    """
    T = u.shape[1]
    n = 2 * T
    uf = torch.fft.rfft(u, n=n, dim=1)                 # (B, n/2+1, H)
    kf = torch.fft.rfft(k, n=n, dim=-1).transpose(0, 1)  # (n/2+1, H)
    return torch.fft.irfft(uf * kf, n=n, dim=1)[:, :T]


class S4D(nn.Module):
    """Diagonal state-space layer S4D (Gu, Gupta, Goel & Re 2022); see the module docstring.

    ``dim`` channels H, each an independent SSM with ``state_size // 2`` complex states (the
    conjugate half implied). ``init``: "lin" (S4D-Lin, default) or "inv" (S4D-Inv).
    """

    def __init__(self, dim: int, state_size: int = 64, dt_min: float = 1e-3, dt_max: float = 1e-1,
                 init: str = "lin"):
        super().__init__()
        if init not in S4D_INITS:
            raise ValueError(f"S4D init must be one of {S4D_INITS}, got {init!r}")
        if state_size < 2 or state_size % 2:
            raise ValueError(f"S4D state_size must be even and >= 2 (conjugate pairs), got {state_size}")
        if not 0 < dt_min <= dt_max:
            raise ValueError(f"need 0 < dt_min <= dt_max, got {dt_min}, {dt_max}")
        self.dim, self.state_size, self.init = dim, state_size, init
        H, N, n2 = dim, state_size, state_size // 2
        n = torch.arange(n2, dtype=torch.float64)
        imag = math.pi * n if init == "lin" else (N / math.pi) * (N / (2 * n + 1) - 1)
        log_dt = torch.rand(H, dtype=torch.float64) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min)
        self.log_dt = nn.Parameter(log_dt.float())                                   # (H,)
        self.log_a_real = nn.Parameter(torch.full((H, n2), math.log(0.5)))            # Re A = -exp(.)
        self.a_imag = nn.Parameter(imag.float().repeat(H, 1))                         # (H, N/2)
        B = torch.zeros(H, n2, 2)
        B[..., 0] = 1.0
        self.B = nn.Parameter(B)                                                      # complex, as (re, im)
        self.C = nn.Parameter(torch.randn(H, n2, 2) * math.sqrt(0.5))                 # CN(0, 1)
        self.D = nn.Parameter(torch.randn(H))

    def extra_repr(self) -> str:
        return f"dim={self.dim}, state_size={self.state_size}, init={self.init!r}"

    def discretize(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Zero-order hold: (A_bar, B_bar, C), each complex (H, N/2)."""
        A = torch.complex(-torch.exp(self.log_a_real), self.a_imag)
        dt = torch.exp(self.log_dt)[:, None]
        A_bar = torch.exp(dt * A)
        B_bar = (A_bar - 1) / A * torch.view_as_complex(self.B)
        return A_bar, B_bar, torch.view_as_complex(self.C)

    def ssm_kernel(self, L: int) -> torch.Tensor:
        """K_l = 2 Re(sum_n C_n B_bar_n A_bar_n^l), l < L: (H, L), without the skip term D."""
        A = torch.complex(-torch.exp(self.log_a_real), self.a_imag)
        dtA = torch.exp(self.log_dt)[:, None] * A                                    # (H, N/2)
        _, B_bar, C = self.discretize()
        l = torch.arange(L, device=dtA.device, dtype=self.log_dt.dtype)
        vandermonde = torch.exp(dtA[..., None] * l)                                   # A_bar^l, (H, N/2, L)
        return 2 * torch.einsum("hn,hnl->hl", C * B_bar, vandermonde).real

    def kernel(self, L: int) -> torch.Tensor:
        """Full kernel of y = k * u: the SSM kernel with D added at lag 0, (H, L)."""
        k = self.ssm_kernel(L)
        return torch.cat((k[:, :1] + self.D[:, None], k[:, 1:]), dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (B, T, dim) -> (B, T, dim): causal FFT convolution with K, plus D x."""
        return causal_fft_conv(x, self.ssm_kernel(x.shape[1])) + x * self.D

    def initial_state(self, batch: int) -> torch.Tensor:
        """Zero state, complex (batch, dim, state_size // 2)."""
        dtype = torch.complex128 if self.C.dtype == torch.float64 else torch.complex64
        return torch.zeros(batch, self.dim, self.state_size // 2, dtype=dtype, device=self.C.device)

    def step(self, x_t: torch.Tensor, state: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One step: x_t (B, dim) -> y_t (B, dim); state (B, dim, N/2) complex."""
        A_bar, B_bar, C = self.discretize()
        state = A_bar * state + B_bar * x_t[..., None]
        y = 2 * (C * state).sum(-1).real + self.D * x_t
        return y, state


class RTF(nn.Module):
    """Rational transfer function layer RTF (Parnichkun et al. 2024); see the module docstring.

    ``dim`` channels, each H(z) = h_0 + b(z^-1) / a(z^-1) of order ``order`` (N). ``init``:
    "zeros" (the authors' default: a = b = 0) or "montel"; ``stable``: the l1 Montel constraint
    on a; ``exact_truncation``: numerator correction so the kernel is the exact truncated
    impulse response (default) instead of the aliased one.
    """

    def __init__(self, dim: int, order: int = 16, *, init: str = "zeros", stable: bool = False,
                 exact_truncation: bool = True):
        super().__init__()
        if init not in RTF_INITS:
            raise ValueError(f"RTF init must be one of {RTF_INITS}, got {init!r}")
        if order < 1:
            raise ValueError(f"RTF order must be >= 1, got {order}")
        self.dim, self.order, self.init = dim, order, init
        self.stable, self.exact_truncation = stable, exact_truncation
        if init == "zeros":
            a, b = torch.zeros(dim, order), torch.zeros(dim, order)
        else:
            a = (torch.rand(dim, order) * 2 - 1) / order
            b = (torch.rand(dim, order) * 2 - 1) / order
        self.a_raw = nn.Parameter(a)             # denominator 1 + a_1 z^-1 + ... (before constraint)
        self.b = nn.Parameter(b)                 # numerator b_1 z^-1 + ... + b_N z^-N
        self.h0 = nn.Parameter(torch.randn(dim))  # feed-through h_0
        if stable:
            self.montel_scale = nn.Parameter(torch.rand(dim))

    def extra_repr(self) -> str:
        return (f"dim={self.dim}, order={self.order}, init={self.init!r}, stable={self.stable}, "
                f"exact_truncation={self.exact_truncation}")

    @property
    def a(self) -> torch.Tensor:
        """Denominator coefficients (dim, N) after the optional Montel constraint."""
        if not self.stable:
            return self.a_raw
        return self.a_raw / (self.a_raw.abs().sum(-1, keepdim=True) + self.montel_scale.abs()[:, None] + 1e-6)

    def companion(self) -> torch.Tensor:
        """A_c (dim, N, N): first row -a, ones on the sub-diagonal (controllable canonical form)."""
        a = self.a
        N = self.order
        shift = torch.diag(torch.ones(N - 1, dtype=a.dtype, device=a.device), -1)
        return torch.cat((-a[:, None, :], shift[1:].expand(a.shape[0], N - 1, N)), dim=1)

    def kernel(self, L: int) -> torch.Tensor:
        """The (dim, L) kernel h_0 .. h_{L-1} via FFTs at the M-th roots of unity, M = max(L, N+1)."""
        a, b, N = self.a, self.b, self.order
        M = max(L, N + 1)
        const = self.h0
        if self.exact_truncation:
            # row vector v = b A_c^{M-1}; then g_M = v e_1 and b A_c^M = v A_c. The power is taken
            # in float64 (an (dim, N, N) tensor: cheap) because repeated squaring of a companion
            # matrix with transient growth cancels catastrophically (see the module docstring).
            work = torch.float64 if a.device.type != "mps" else a.dtype
            power = torch.linalg.matrix_power(self.companion().to(work), M - 1)
            v = torch.einsum("hn,hnm->hm", b.to(work), power)
            vA = -v[:, :1] * a.to(work) + F.pad(v[:, 1:], (0, 1))
            b = b - vA.to(b.dtype)               # truncated numerator b (I - A_c^M)
            const = const - v[:, 0].to(b.dtype)  # g_M: tap M aliases onto tap 0, remove it
        one = torch.ones_like(a[:, :1])
        den = torch.fft.rfft(torch.cat((one, a), dim=1), n=M, dim=-1)            # a(w^-1), w^M = 1
        num = torch.fft.rfft(torch.cat((torch.zeros_like(one), b), dim=1), n=M, dim=-1)
        spectrum = num / den + const[:, None]
        return torch.fft.irfft(spectrum, n=M, dim=-1)[:, :L]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (B, T, dim) -> (B, T, dim): causal FFT convolution with the kernel (h_0 included)."""
        return causal_fft_conv(x, self.kernel(x.shape[1]))

    def initial_state(self, batch: int) -> torch.Tensor:
        """Zero companion state (batch, dim, order), real: s = (w_{t-1}, ..., w_{t-N})."""
        return torch.zeros(batch, self.dim, self.order, dtype=self.b.dtype, device=self.b.device)

    def step(self, x_t: torch.Tensor, state: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One step of the companion recurrence: x_t (B, dim) -> y_t (B, dim); O(N) per channel."""
        y = self.h0 * x_t + (self.b * state).sum(-1)
        w = x_t - (self.a * state).sum(-1)
        return y, torch.cat((w[..., None], state[..., :-1]), dim=-1)
