"""Poisson Flow Generative Models (Xu, Liu, Tegmark & Jaakkola 2022, NeurIPS, "Poisson Flow Generative Models").

The data x in R^N is augmented with one extra coordinate z: x~ = (x, z), and the data lies on
the hyperplane z = 0. The data density, seen as a charge distribution, has an electric (Poisson)
field in R^{N+1}

    E(x~) = 1 / S_N(1) * integral (x~ - y~) / ||x~ - y~||^{N+1} p(y) dy,          (paper eq. 2)

whose field lines leave the data and, far away, become radial, so that they cross a hemisphere
of radius r -> inf uniformly. Sampling follows the field lines backwards, from the plane
z = z_max to z = 0, with the ODE

    dx/dz = E_x(x~) / E_z(x~)                                                      (paper eq. 4)

integrated in t' = log z (paper section 4 / appendix B.2; the authors' ``Poisson.ode``):

    dx/dt' = z * v_x / v_z,     v = f_theta(x~) (N + 1 numbers, the network's field).

Equations implemented (each confirmed against the authors' code, see below)
-------------------------------------------------------------------------------
* Empirical field on a batch {y_i} (:func:`empirical_field`):
  E^(x~) = sum_i w_i (x~ - y~_i) with w_i = ||x~ - y~_i||^{-(N+1)} / sum_j ||x~ - y~_j||^{-(N+1)},
  i.e. the sum of eq. 2 divided by its positive "c(x~)" normaliser; the weights are a softmax of
  -(N+1) log ||x~ - y~_i|| computed in log space (no overflow at N = 784). ``normalized=False``
  returns the plain sum sum_i (x~ - y~_i) / ||x~ - y~_i||^{N+1}.
* Training target (:func:`pfgm_target`): the normalised field pointing to the data,
  -sqrt(N) E^ / (||E^|| + gamma) (paper eq. 7 with the normalisation of appendix B.1.2;
  gamma = 5). Loss: mean squared error between f_theta(x~) and the target, averaged over the
  N + 1 coordinates, then over the batch (the authors sum over coordinates, x 0.5; the factor
  is a learning-rate scale).
* Perturbation of training points (:func:`perturb`, the paper's Algorithm 1 / authors'
  ``forward_pz``): m ~ U[0, M], eps = (eps_x, eps_z) ~ N(0, sigma^2 I_{N+1}),
  x = y + ||eps_x|| (1 + tau)^m u (u uniform on the unit sphere of R^N), z = |eps_z| (1 + tau)^m.
  Since eps_x / ||eps_x|| is itself uniform and independent of ||eps_x||, this is
  x~ = y~ + (1 + tau)^m (eps_x, |eps_z|), i.e. y~ + r u with r = ||eps|| (1 + tau)^m and u uniform
  on the upper unit hemisphere of R^{N+1}; genzoo draws it in that form. Optional "restrict M"
  (appendix B.1.1; ``restrict_m``): points with |eps_z| < sigma / 2 (the authors' z < 0.005 at
  sigma = 0.01) draw m ~ U[0, restrict_m * M] instead (the authors: 200 of M = 291).
  Only the first ``small_batch_size`` examples of a batch are perturbed; the whole batch is
  the {y_i} of the empirical field (the authors' ``small_batch_size`` / ``batch_size``).
* Prior on the hemisphere z = z_max (:func:`prior_sample`; appendix A.4):
  p(x) proportional to z_max / (||x||^2 + z_max^2)^{(N+1)/2}, the multivariate Cauchy
  distribution of scale z_max. Its radius is r = z_max sqrt(R) with R ~ BetaPrime(N/2, 1/2)
  (R = B / (1 - B), B ~ Beta(N/2, 1/2), the authors' ``np.random.beta(N/2, 0.5)``). genzoo draws
  R = chi2_N / chi2_1 (BetaPrime(a, b) = Gamma(a) / Gamma(b) and Gamma(k/2) = chi2_k / 2), i.e.
  x = z_max g / |g_0| with g ~ N(0, I_N), g_0 ~ N(0, 1): the same law, exact for every N, and
  reproducible from a torch.Generator. The radius is clipped to ``upper_norm`` (the authors'
  ``sampling.upper_norm``; they also clip below at 1, which never binds at their N and is not
  done here).
* Sampling (:func:`sample_ode`): from t' = log z_max to log z_min (z_min = 1e-3) with fixed-step
  Euler or Heun (2nd-order) steps uniform in t', or adaptive "rk45" (torchdiffeq's dopri5; the
  authors use scipy's RK45, rtol = atol = 1e-4). 1 / v_z is guarded as 1 / min(v_z, -1e-5)
  (the authors: 1 / (v_z + 1e-5)). Below z < z_exp the predicted v_z is replaced by the value
  the normalisation implies for one nearby data point (appendix B.2.3, the authors'
  ``z_exp`` substitution): a = gamma n / (1 - n) with n = ||v_x|| / sqrt(N) (clipped below 1),
  v_z = -sqrt(N) z / (sqrt(a^2 + z^2) + gamma); ``z_exp = 0`` turns it off.

Networks
--------
* Images (C, H, W): genzoo's :class:`~genzoo.nn.unet.UNet` with C + 1 output channels,
  conditioned on the noise label log z (the authors feed log z to NCSN++'s Fourier
  embedding). v_x = the first C channels; v_z = the spatial mean of the extra channel (the
  authors' ``adaptive_avg_pool2d(h[:, -1])``).
* Vectors (D,): genzoo's :class:`~genzoo.nn.time_mlp.TimeMLP` on (x, z) -> N + 1 numbers, with
  the same noise label log z.
* Input scaling (genzoo's choice, ``input_scaling=True``; the authors feed raw x): the network
  sees x~ / sqrt(1 + ||x~||^2 / N), an invertible squashing of R^{N+1} into a ball of radius
  sqrt(N) (given z, for the UNet), so that inputs stay O(1) per coordinate while training radii
  span 1e-3 .. 1e3; without it a small CPU-sized network's normalisation layers see its
  residual stream dominated by the raw input at large radii.

Hyper-parameters and the CPU scaling
------------------------------------
Paper / authors' CIFAR-10 (N = 3072, data in [0, 1]): sigma = 0.01, tau = 0.03, gamma = 5,
M = 291, z_max = 40, upper_norm = 3000, z_min = 1e-3. The authors' ``hyper-parameters.py``
(appendix B.1-B.2) sets, from the average data norm ||y||:

    M = floor(0.75 ln(||y||^2 / (2 sqrt(N) sigma^2)) / ln(1 + tau)) + 1,
    z_max = sqrt(2 / pi) sigma (1 + tau)^M,    upper_norm = sqrt(N) sigma (1 + tau)^M,

i.e. at m = M the perturbation reaches z ~ E|eps_z| (1 + tau)^M = z_max and ||x - y|| ~ upper_norm:
the training radii cover the prior's. For MNIST in [-1, 1] (N = 784, ||y|| = 26.9) this gives
the defaults here: M = 299, z_max = 55, upper_norm = 1930 (fewer training steps and a smaller
UNet than the paper; the field's range is kept). For 2-D toys the formula fails: with N = 2 the
prior is heavy-tailed (P(r > k z_max) = 1 / sqrt(1 + k^2); the mean of r is infinite) and
upper_norm / z_max = sqrt(N) / sqrt(2 / pi) = 1.8 would clip half of the prior draws onto one
circle. configs/pfgm_toy.yaml therefore clips at upper_norm = 25 z_max (4% of the draws
clipped) and raises M until the perturbation radii reach it (see that recipe).

``likelihood = "none"``: PFGM's ODE also gives likelihoods (paper section 4.3), not
implemented here.

Verified against the authors' code (Newbeeer/pfgm; the files were read as copies held in the
search index, the repository itself was not indexed): ``losses.py`` ``get_loss_fn`` (the
"poisson" branch: softmax-like weights ``(d_min / d)^(N+1)`` normalised to sum 1, ``gt_direction
= sum coeff * (y - x~)``, ``/ (norm + gamma) * sqrt(N)``, MSE against ``cat(net_x, net_z)``, the
network called with z clamped at 1e-10), ``utils_poisson.py`` / ``forward_pz`` (Algorithm 1 and
restrict_M), ``methods.py`` ``Poisson.prior_sampling`` (Beta(N/2, 1/2), clip to [1, upper_norm])
and ``Poisson.ode`` (z_exp substitution, ``dx/dt' = z v_x / (v_z + 1e-5)``), ``sampling.py``
``get_rk45_sampler_pfgm`` (integration from log z_max to log z_min in t' = log z), ``ncsnpp.py``
(C + 1 output channels, z-output = spatial mean of the last channel, Fourier embedding of log z),
``hyper-parameters.py`` (the formulas above).
"""
from __future__ import annotations

import math

import torch

from ...errors import ConfigError, DataError, did_you_mean
from ...nn.denoiser import DenoiserConfig
from ...registry import register
from ..base import GenerativeModel
from ..data_needs import IMAGE_OR_VECTOR, DataNeeds, Opt
from .model import _on_device

SAMPLERS = ("euler", "heun", "rk45")
#: guard of 1 / v_z in the ODE (v_z must be negative: the field points down towards the data)
VZ_GUARD = 1e-5


# ------------------------------------------------------------------ the math (pure functions)


def _augment(data: torch.Tensor, dim: int) -> torch.Tensor:
    """Data (M, ...) -> (M, N + 1) points on the plane z = 0 (data already (M, N + 1) is kept)."""
    y = data.reshape(data.shape[0], -1)
    if y.shape[1] == dim - 1:
        y = torch.cat([y, torch.zeros_like(y[:, :1])], dim=1)
    if y.shape[1] != dim:
        raise DataError(f"empirical_field: data of {y.shape[1]} numbers per example does not fit points of dimension {dim}")
    return y


def empirical_field(xt: torch.Tensor, data: torch.Tensor, normalized: bool = True) -> torch.Tensor:
    """The Poisson field of the data points at the augmented points ``xt``.

    xt: (B, N + 1) points (x, z); data: (M, N) data points (on z = 0) or (M, N + 1).
    Returns (B, N + 1):

    * ``normalized=True`` (the training target's field, as in the authors' code):
      sum_i w_i (x~ - y~_i), w = softmax_i(-(N + 1) log ||x~ - y~_i||) (weights summing to 1);
    * ``normalized=False``: the plain sum sum_i (x~ - y~_i) / ||x~ - y~_i||^{N+1} (may overflow
      for large N at small distances; computed as the normalised field times exp(logsumexp)).

    Distances come from ``torch.cdist`` without the matrix-product shortcut (no cancellation
    for nearby points) and are floored at the dtype's tiny value."""
    if xt.dim() != 2:
        raise DataError(f"empirical_field needs points of shape (B, N + 1), got {tuple(xt.shape)}")
    y = _augment(data, xt.shape[1]).to(xt.dtype)
    n = xt.shape[1] - 1
    d = torch.cdist(xt, y, compute_mode="donot_use_mm_for_euclid_dist").clamp_min(torch.finfo(xt.dtype).tiny)
    logw = -(n + 1) * torch.log(d)  # (B, M)
    w = torch.softmax(logw, dim=1)
    field = xt - w @ y  # sum_i w_i (x~ - y~_i), since sum_i w_i = 1
    if normalized:
        return field
    return field * torch.exp(torch.logsumexp(logw, dim=1, keepdim=True))


def pfgm_target(xt: torch.Tensor, data: torch.Tensor, gamma: float = 5.0) -> torch.Tensor:
    """The training target -sqrt(N) E^ / (||E^|| + gamma) at ``xt`` (B, N + 1) for the batch
    ``data`` (M, N); E^ is :func:`empirical_field` (normalised weights). (B, N + 1)."""
    n = xt.shape[1] - 1
    e = empirical_field(xt, data, normalized=True)
    return -math.sqrt(n) * e / (e.norm(dim=1, keepdim=True) + gamma)


def perturb(y: torch.Tensor, *, M: float, sigma: float = 0.01, tau: float = 0.03, restrict_m: float = 1.0,
            generator: torch.Generator | None = None) -> torch.Tensor:
    """Algorithm 1 of the paper: data y (B, ...) -> perturbed augmented points (B, N + 1).

    m ~ U[0, M]; x~ = (y, 0) + (1 + tau)^m (eps_x, |eps_z|), eps ~ N(0, sigma^2 I_{N+1}). With
    ``restrict_m < 1`` the points with |eps_z| < sigma / 2 draw m ~ U[0, restrict_m M] instead.
    Draw order from ``generator``: m, the restricted m, eps_x, eps_z."""
    B = y.shape[0]
    flat = y.reshape(B, -1)
    dev, dt = flat.device, flat.dtype
    m = torch.rand(B, generator=generator, device=dev, dtype=dt) * M
    m_small = torch.rand(B, generator=generator, device=dev, dtype=dt) * (restrict_m * M)
    eps_x = torch.randn(flat.shape, generator=generator, device=dev, dtype=dt) * sigma
    eps_z = torch.randn(B, generator=generator, device=dev, dtype=dt).abs() * sigma
    if restrict_m < 1.0:
        m = torch.where(eps_z < 0.5 * sigma, m_small, m)
    mult = (1.0 + tau) ** m
    return torch.cat([flat + eps_x * mult[:, None], (eps_z * mult)[:, None]], dim=1)


def prior_sample(n: int, dim: int, z_max: float, upper_norm: float | None = None, *,
                 generator: torch.Generator | None = None, device=None, dtype=torch.float32) -> torch.Tensor:
    """n draws (n, dim) from p(x) proportional to z_max / (||x||^2 + z_max^2)^{(dim+1)/2} on the
    plane z = z_max: x = z_max g / |g_0| (g ~ N(0, I_dim), g_0 ~ N(0, 1)), so ||x|| = z_max sqrt(R),
    R = chi2_dim / chi2_1 ~ BetaPrime(dim/2, 1/2); the radius is then clipped to ``upper_norm``
    (None = no clip). Draws g, then g_0, from ``generator``."""
    g = torch.randn((n, dim), generator=generator, device=device, dtype=torch.float64)
    g0 = torch.randn((n, 1), generator=generator, device=device, dtype=torch.float64).abs()
    x = z_max * g / g0.clamp_min(1e-300)
    if upper_norm is not None:
        r = x.norm(dim=1, keepdim=True)
        x = x * (r.clamp(max=float(upper_norm)) / r.clamp_min(1e-300))
    return x.to(dtype)


def _substitute_vz(vx: torch.Tensor, vz: torch.Tensor, z: float, gamma: float) -> torch.Tensor:
    """Appendix B.2.3: v_z implied by v_x near one data point (see the module docstring)."""
    sqrt_n = math.sqrt(vx.shape[1])
    norm1 = (vx.norm(dim=1) / sqrt_n).clamp(0.0, 1.0 - 1e-6)
    a = gamma * norm1 / (1.0 - norm1)
    return -sqrt_n * z / (torch.sqrt(a * a + z * z) + gamma)


def sample_ode(velocity, x: torch.Tensor, *, z_max: float, z_min: float = 1e-3, steps: int = 100, sampler: str = "heun",
               rtol: float = 1e-4, atol: float = 1e-4, z_exp: float = 0.0, gamma: float = 5.0,
               progress: bool = False) -> tuple[torch.Tensor, int]:
    """Integrate the backward ODE dx/dt' = z v_x / v_z, t' = log z, from z_max down to z_min.

    velocity(x (B, N), z: float) -> (v_x (B, N), v_z (B,)): the (network's or an exact) field.
    x: (B, N) the prior draw at z = z_max. sampler: "euler" | "heun" (``steps`` steps uniform in
    log z; NFE = steps or 2 steps) | "rk45" (torchdiffeq dopri5 with rtol/atol). z_exp > 0: the
    v_z substitution below z_exp (needs the gamma of training). Returns (x at z_min, NFE)."""
    if sampler not in SAMPLERS:
        raise ConfigError(f"unknown PFGM sampler {sampler!r}{did_you_mean(sampler, SAMPLERS)}; valid: {', '.join(SAMPLERS)}")
    if not 0.0 < z_min < z_max:
        raise ConfigError(f"PFGM needs 0 < z_min < z_max, got z_min={z_min}, z_max={z_max}")
    nfe = 0

    def drift(xc: torch.Tensor, t: float) -> torch.Tensor:
        nonlocal nfe
        nfe += 1
        z = math.exp(t)
        vx, vz = velocity(xc, z)
        if z_exp > 0 and z < z_exp and gamma > 0:
            vz = _substitute_vz(vx, vz, z, gamma)
        return z * vx / vz.clamp(max=-VZ_GUARD)[:, None]

    t0, t1 = math.log(z_max), math.log(z_min)
    if sampler == "rk45":
        try:
            from torchdiffeq import odeint
        except ImportError as e:  # pragma: no cover - depends on the environment
            raise ConfigError("sampler='rk45' needs torchdiffeq: pip install torchdiffeq "
                              "(or use sampler=heun / euler)") from e
        ts = torch.tensor([t0, t1], dtype=torch.float64)
        out = odeint(lambda t, xc: drift(xc, float(t)), x, ts.to(x.dtype), rtol=float(rtol), atol=float(atol),
                     method="dopri5")
        return out[-1], nfe
    from tqdm.auto import tqdm

    grid = torch.linspace(t0, t1, int(steps) + 1, dtype=torch.float64).tolist()
    for a, b in tqdm(list(zip(grid[:-1], grid[1:])), desc="pfgm", disable=not progress, leave=False):
        h = b - a
        d0 = drift(x, a)
        if sampler == "euler":
            x = x + h * d0
        else:
            d1 = drift(x + h * d0, b)
            x = x + 0.5 * h * (d0 + d1)
    return x, nfe


# ------------------------------------------------------------------ the model


@register("pfgm", family="diffusion", paper="Xu, Liu, Tegmark & Jaakkola 2022 (Poisson Flow Generative Models)",
          summary="Poisson flow: learn the normalised Poisson field of the data in N+1 dims; ODE from z_max to z_min")
class PFGM(GenerativeModel):
    """Poisson Flow Generative Model (see the module docstring for the equations).

    Args:
        shape: per-example data shape, (C, H, W) images or (D,) vectors (taken from the data).
        denoiser: the network's settings, one section ``model.denoiser: {net: auto, channels: 32, ...}``
            (:class:`~genzoo.nn.denoiser.DenoiserConfig`, as the diffusion models'; the flat
            ``model.channels=...`` still works): net "auto" (here the default: the UNet for images,
            the MLP for vectors) | "unet" | "mlp"; the UNet's and the MLP's sizes, dropout and the
            embedding of the noise label log z. The network outputs N + 1 values (the field's z
            component too).
        input_scaling: feed x~ / sqrt(1 + ||x~||^2 / N) to the network (genzoo; False = raw x).
        sigma, tau, M, restrict_m: the perturbation (Algorithm 1; restrict_m = 1 turns the
            appendix B.1.1 restriction off).
        gamma: the target's normalisation -sqrt(N) E / (||E|| + gamma).
        small_batch_size: perturb the first k examples of each batch (the whole batch is the
            empirical field's data); 0 = every example.
        z_max, upper_norm: the prior's plane and radius clip.
        z_min, z_exp, sampler, steps: sampling defaults (see :meth:`sample`).
        data_range: (lo, hi) of image data; image samples are clamped to it.
    Defaults are for MNIST in [-1, 1] (N = 784; see the module docstring).
    """

    likelihood = "none"
    #: the network's settings are one nested section, ``model.denoiser: {net: auto, channels: 32, ...}``
    network_specs = {"denoiser": DenoiserConfig}

    def __init__(self, shape: tuple = (1, 28, 28), denoiser: DenoiserConfig | dict = DenoiserConfig(net="auto"),
                 input_scaling: bool = True,
                 sigma: float = 0.01, tau: float = 0.03, M: int = 299, restrict_m: float = 0.7, gamma: float = 5.0,
                 small_batch_size: int = 0, z_max: float = 55.0, upper_norm: float = 1930.0, z_min: float = 1e-3,
                 z_exp: float = 1.0, sampler: str = "heun", steps: int = 100, data_range: tuple = (-1.0, 1.0)):
        super().__init__()
        shape = tuple(int(s) for s in shape)
        if not shape or any(s <= 0 for s in shape):
            raise ConfigError(f"PFGM shape must be a non-empty tuple of positive ints, got {shape}")
        try:
            spec = DenoiserConfig.of(denoiser, net="auto")
            net = spec.net_for(shape)
        except (TypeError, ValueError) as e:
            raise ConfigError(f"PFGM: {e}") from e
        for name, val in (("sigma", sigma), ("tau", tau), ("M", M), ("z_max", z_max), ("upper_norm", upper_norm)):
            if not float(val) > 0:
                raise ConfigError(f"PFGM {name} must be > 0, got {val}")
        if not 0.0 < float(restrict_m) <= 1.0:
            raise ConfigError(f"restrict_m must be in (0, 1] (1 = no restriction), got {restrict_m}")
        if float(gamma) < 0:
            raise ConfigError(f"gamma must be >= 0, got {gamma}")
        if int(small_batch_size) < 0:
            raise ConfigError(f"small_batch_size must be >= 0 (0 = the whole batch), got {small_batch_size}")
        lo, hi = (float(v) for v in data_range)
        if not hi > lo:
            raise ConfigError(f"data_range must be (lo, hi) with hi > lo, got {data_range}")
        self.shape = shape
        self.N = math.prod(shape)
        self.net_name = net
        self.denoiser_spec = spec
        self.input_scaling = bool(input_scaling)
        self.sigma, self.tau, self.M, self.restrict_m = float(sigma), float(tau), int(M), float(restrict_m)
        self.gamma = float(gamma)
        self.small_batch_size = int(small_batch_size)
        self.z_max, self.upper_norm = float(z_max), float(upper_norm)
        self.data_range = (lo, hi)
        self.sample_range = (lo, hi) if len(shape) == 3 else None
        self.last_nfe = 0
        self.defaults = self._sample_settings({"z_min": z_min, "z_exp": z_exp, "sampler": sampler, "steps": steps},
                                              base={"upper_norm": self.upper_norm, "rtol": 1e-4, "atol": 1e-4})
        try:
            if net == "unet":
                C, H, W = shape
                self.net = spec.unet(C, (H, W), out_channels=C + 1)
            else:
                self.net = spec.mlp(self.N + 1, out_dim=self.N + 1)
        except ValueError as e:
            raise ConfigError(f"cannot build the PFGM network: {e}".replace("model.attn_", "model.denoiser.attn_")) from e

    # -- data compatibility -----------------------------------------------------------------
    #: continuous images or vectors (no tokens, binary or integer levels); images in data_range
    data_needs = DataNeeds(IMAGE_OR_VECTOR, (None,), value_range=Opt("data_range"))

    # -- the network's field ------------------------------------------------------------------
    def field(self, xt: torch.Tensor) -> torch.Tensor:
        """f_theta(x~): (B, N + 1) augmented points -> (B, N + 1) predicted normalised field."""
        B = xt.shape[0]
        z = xt[:, -1].clamp_min(1e-10)  # the authors clamp z at 1e-10 before the network
        label = torch.log(z)
        inp = xt
        if self.input_scaling:
            inp = xt * torch.rsqrt(1.0 + xt.pow(2).sum(1, keepdim=True) / self.N)
        if self.net_name == "unet":
            out = self.net(inp[:, :-1].reshape(B, *self.shape), label)
            C = self.shape[0]
            return torch.cat([out[:, :C].reshape(B, -1), out[:, C].mean(dim=(1, 2))[:, None]], dim=1)
        return self.net(inp, label)

    def velocity(self, x: torch.Tensor, z: float) -> tuple[torch.Tensor, torch.Tensor]:
        """(v_x (B, N), v_z (B,)) of the network at points x (B, N) on the plane z (for :func:`sample_ode`)."""
        xt = torch.cat([x, torch.full_like(x[:, :1], float(z))], dim=1)
        v = self.field(xt)
        return v[:, :-1], v[:, -1]

    # -- objective ----------------------------------------------------------------------------
    def loss(self, batch, generator: torch.Generator | None = None, **kwargs) -> dict[str, torch.Tensor]:
        """{"loss": mean squared error to the normalised empirical field, "loss_z": its z part}.

        ``batch``: x (B, *shape) (or (x, y), labels ignored). The first ``small_batch_size``
        examples are perturbed (Algorithm 1, draws from ``generator`` or the global RNG); all
        B examples form the empirical field."""
        self.check_options(kwargs, (), what="loss")
        x = batch[0] if isinstance(batch, (tuple, list)) else batch
        if tuple(x.shape[1:]) != self.shape:
            raise DataError(f"PFGM built for examples of shape {self.shape} got a batch of shape {tuple(x.shape)}")
        generator = _on_device(generator, x.device)
        full = x.reshape(x.shape[0], -1)
        k = self.small_batch_size or full.shape[0]
        # the perturbation and the target in the data's precision (float32), also under bf16 autocast:
        # -(N + 1) log ||x~ - y~|| needs the digits
        with torch.no_grad(), torch.autocast(device_type=x.device.type, enabled=False):
            full = full.float() if full.dtype in (torch.float16, torch.bfloat16) else full
            xt = perturb(full[:k], M=self.M, sigma=self.sigma, tau=self.tau, restrict_m=self.restrict_m,
                         generator=generator)
            target = pfgm_target(xt, full, self.gamma)
        err = (self.field(xt).to(target.dtype) - target).pow(2)
        return {"loss": err.mean(), "loss_z": err[:, -1].mean().detach()}

    # -- generation ----------------------------------------------------------------------------
    def _sample_settings(self, opts: dict, base: dict | None = None) -> dict:
        s = dict(base if base is not None else self.defaults)
        s.update(opts)
        s["steps"] = int(s["steps"])
        for k in ("z_min", "z_exp", "upper_norm", "rtol", "atol"):
            s[k] = float(s[k])
        if s["sampler"] not in SAMPLERS:
            raise ConfigError(f"unknown PFGM sampler {s['sampler']!r}{did_you_mean(str(s['sampler']), SAMPLERS)}; "
                              f"valid: {', '.join(SAMPLERS)}")
        if s["steps"] < 1:
            raise ConfigError(f"steps must be >= 1, got {s['steps']}")
        if not 0.0 < s["z_min"] < self.z_max:
            raise ConfigError(f"z_min must be in (0, z_max = {self.z_max:g}), got {s['z_min']}")
        if s["z_exp"] < 0:
            raise ConfigError(f"z_exp must be >= 0 (0 = no substitution), got {s['z_exp']}")
        if not s["upper_norm"] > 0:
            raise ConfigError(f"upper_norm must be > 0, got {s['upper_norm']}")
        if s["rtol"] <= 0 or s["atol"] <= 0:
            raise ConfigError(f"rtol and atol must be > 0, got {s['rtol']}, {s['atol']}")
        return s

    @torch.no_grad()
    def sample(self, n: int, *, generator: torch.Generator | None = None, sampler: str | None = None,
               steps: int | None = None, z_min: float | None = None, z_exp: float | None = None,
               upper_norm: float | None = None, rtol: float | None = None, atol: float | None = None,
               clamp: bool = True, progress: bool = False) -> torch.Tensor:
        """n samples (n, *shape): a prior draw on z = z_max, then the backward ODE down to z_min.

        Options:
            sampler: "heun" (default; 2 NFE per step) | "euler" | "rk45" (adaptive dopri5 from
                torchdiffeq, with rtol / atol, default 1e-4 as the authors').
            steps: fixed steps uniform in log z (euler / heun; default the model's ``steps``).
            z_min: end of the ODE (default 1e-3).
            z_exp: below this z, v_z is replaced by its single-point value (appendix B.2.3;
                0 = never; default the model's ``z_exp``).
            upper_norm: clip of the prior's radius (default the model's).
            clamp: clamp image samples to ``data_range`` (default True).
            progress: tqdm bar over the steps.
        Reproducible: the prior draw comes from ``generator`` (nothing else is random).
        ``self.last_nfe`` holds the network evaluations of the last call."""
        given = {k: v for k, v in dict(sampler=sampler, steps=steps, z_min=z_min, z_exp=z_exp, upper_norm=upper_norm,
                                       rtol=rtol, atol=atol).items() if v is not None}
        s = self._sample_settings(given)
        if s["sampler"] != "rk45" and ("rtol" in given or "atol" in given):
            raise ConfigError("rtol / atol apply to sampler='rk45' only")
        if s["sampler"] == "rk45" and "steps" in given:
            raise ConfigError("steps applies to sampler='euler' / 'heun'; rk45 chooses its steps from rtol / atol")
        dev = self.device
        dtype = next(self.parameters()).dtype
        generator = _on_device(generator, dev)
        x = prior_sample(int(n), self.N, self.z_max, s["upper_norm"], generator=generator, device=dev, dtype=dtype)
        x, self.last_nfe = sample_ode(self.velocity, x, z_max=self.z_max, z_min=s["z_min"], steps=s["steps"],
                                      sampler=s["sampler"], rtol=s["rtol"], atol=s["atol"], z_exp=s["z_exp"],
                                      gamma=self.gamma, progress=bool(progress))
        x = x.reshape(int(n), *self.shape)
        if clamp and self.sample_range is not None:
            x = x.clamp(*self.sample_range)
        return x
