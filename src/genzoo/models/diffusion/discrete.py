"""Discrete diffusion for binary and categorical data: absorbing (masked) and uniform (multinomial).

Papers
------
* Austin, Johnson, Ho, Tarlow & van den Berg 2021, "Structured Denoising Diffusion Models in
  Discrete State-Spaces" (D3PM): a Markov chain q(x_t | x_{t-1}) = Cat(x_{t-1} Q_t) on one-hot
  states, q(x_t | x_0) = Cat(x_0 Qbar_t), the x_0-parameterisation
  p(x_{t-1} | x_t) propto sum_{x0~} q(x_{t-1}, x_t | x0~) p~(x0~ | x_t) (their eq. 4), the
  variational bound  L = KL(q(x_T|x_0) || p(x_T)) + sum_{t>=2} E KL(q(x_{t-1}|x_t,x_0) || p(x_{t-1}|x_t))
  - E log p(x_0 | x_1)  (eq. 1), and the hybrid loss L + lambda E[-log p~(x_0 | x_t)], lambda = 0.01
  (eq. 5), the CE weighted by lambda against the single-t term, as their code (vb_t + lambda ce_t at
  one random t): genzoo's loss is T (L_t + lambda CE_t) + L_T, i.e. T times D3PM's per-t objective
  plus the (constant) prior term, so that its expectation over t is the bound plus T lambda E[CE].
  Absorbing transitions (to a [MASK] state) with beta_t = 1 / (T - t + 1), so alpha_t = 1 - t/T.
* Hoogeboom, Nielsen, Jaini, Forre & Welling 2021, "Argmax Flows and Multinomial Diffusion":
  uniform transitions Q_t = (1 - beta_t) I + beta_t 11^T / K with the cosine schedule
  alpha_bar_t = f(t)/f(0), f(t) = cos^2(pi/2 (t/T + s)/(1 + s)), s = 0.008.

The unified view genzoo uses (one forward transform plus noise, as the Gaussian processes of
this package): both chains are x_t ~ alpha_bar_t delta(x_0) + (1 - alpha_bar_t) m with a fixed
"noise" distribution m over the S states (m = the mask state for absorbing, uniform over the K
values for uniform), so every transition matrix, one step or a jump from t to s < t, has the
form a I + (1 - a) 1 m^T with a = alpha_bar_t / alpha_bar_s, and the posteriors are products of
two such rows (:func:`_posterior`). Sampling may therefore jump over steps exactly (``steps``).

log_prob returns -L (a lower bound on log p(x), nats per example), estimated with ``t_samples``
stratified draws of t (unbiased); on tiny data it is checked against the exact entropy.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ...errors import ConfigError, DataError
from ...nn.unet import SinusoidalEmbedding
from ...nn.unet import UNet
from ...registry import register
from ..base import GenerativeModel
from ..data_needs import DataNeeds

KINDS = ("absorbing", "uniform")


class _VectorNet(nn.Module):
    """(B, D) states + t -> (B, D, K) logits: one-hot input, sinusoidal time embedding, residual MLP."""

    def __init__(self, D: int, S: int, K: int, hidden: int, depth: int):
        super().__init__()
        self.D, self.S, self.K = D, S, K
        self.time = SinusoidalEmbedding(hidden)
        self.inp = nn.Linear(D * S, hidden)
        self.blocks = nn.ModuleList(nn.Sequential(nn.LayerNorm(hidden), nn.Linear(hidden, hidden), nn.SiLU(),
                                                  nn.Linear(hidden, hidden)) for _ in range(depth))
        self.out = nn.Linear(hidden, D * K)

    def forward(self, xt: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        h = self.inp(F.one_hot(xt, self.S).float().flatten(1)) + self.time(t.float())
        for b in self.blocks:
            h = h + b(h)
        return self.out(h).view(-1, self.D, self.K)


class _ImageNet(nn.Module):
    """(B, C, H, W) states + t -> (B, C*H*W, K) logits through genzoo's UNet on one-hot channels."""

    def __init__(self, shape, S: int, K: int, **unet):
        super().__init__()
        C, H, W = shape
        self.S, self.K, self.C = S, K, C
        self.unet = UNet(in_channels=C * S, out_channels=C * K, image_size=(H, W), **unet)

    def forward(self, xt: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        B, C, H, W = xt.shape
        x = F.one_hot(xt, self.S).permute(0, 1, 4, 2, 3).reshape(B, C * self.S, H, W).float() * 2 - 1
        out = self.unet(x, t.float())  # (B, C*K, H, W)
        return out.view(B, C, self.K, H, W).permute(0, 1, 3, 4, 2).reshape(B, C * H * W, self.K)


@register("discrete_diffusion", family="diffusion",
          paper="Austin et al. 2021 (D3PM); Hoogeboom et al. 2021 (multinomial diffusion)",
          summary="absorbing / uniform discrete diffusion on binary or categorical pixels; ELBO in nats")
class DiscreteDiffusion(GenerativeModel):
    likelihood = "bound"
    discrete_likelihood = True

    def __init__(self, shape=(1, 28, 28), kind: str = "absorbing", num_values: int = 2, num_steps: int = 1000,
                 hybrid_lambda: float = 0.01, net: str = "unet", channels: int = 32, channel_mult=(1, 2, 2),
                 num_res_blocks: int = 1, attn_resolutions=(7,), hidden: int = 256, depth: int = 3, steps: int = 0):
        """shape: (C, H, W) images or (D,) vectors; kind: "absorbing" | "uniform"; num_values K
        (2 = binary); num_steps T; hybrid_lambda: weight of the auxiliary x_0 cross-entropy (0.01,
        D3PM); net: "unet" (images) or "mlp"; steps: default sampling steps (0 = T)."""
        super().__init__()
        if kind not in KINDS:
            raise ConfigError(f"unknown discrete diffusion kind {kind!r}; valid: {', '.join(KINDS)}")
        if int(num_values) < 2 or int(num_steps) < 1:
            raise ConfigError(f"need num_values >= 2 and num_steps >= 1, got {num_values}, {num_steps}")
        self.shape, self.kind, self.K, self.T = tuple(int(s) for s in shape), kind, int(num_values), int(num_steps)
        self.S = self.K + 1 if kind == "absorbing" else self.K
        self.hybrid_lambda, self.default_steps = float(hybrid_lambda), int(steps) or int(num_steps)
        if not 1 <= self.default_steps <= self.T:
            raise ConfigError(f"model.steps (default sampling steps) must be in 1..num_steps={self.T}, got {self.default_steps}")
        self.D = math.prod(self.shape)
        t = torch.arange(self.T + 1, dtype=torch.float64)
        if kind == "absorbing":
            abar = 1 - t / self.T
        else:
            f = torch.cos(math.pi / 2 * (t / self.T + 0.008) / 1.008) ** 2
            abar = (f / f[0]).clamp(min=0.0)
            abar[-1] = 0.0  # the chain ends at the noise distribution exactly
        self.register_buffer("abar", abar, persistent=False)
        m = torch.zeros(self.S, dtype=torch.float64)
        if kind == "absorbing":
            m[self.K] = 1.0
        else:
            m[:] = 1.0 / self.K
        self.register_buffer("m", m, persistent=False)
        if net == "unet":
            if len(self.shape) != 3:
                raise ConfigError(f"net='unet' needs images (C, H, W), got shape {self.shape}; use model.net=mlp")
            self.net = _ImageNet(self.shape, self.S, self.K, channels=channels, channel_mult=channel_mult,
                                 num_res_blocks=num_res_blocks, attn_resolutions=attn_resolutions)
        elif net == "mlp":
            self.net = _VectorNet(self.D, self.S, self.K, hidden, depth)
        else:
            raise ConfigError(f"unknown net {net!r}; valid: unet, mlp")

    # -- data -------------------------------------------------------------------------------------
    #: num_values=2: binary {0, 1} data; more: integer levels 0..num_values-1 (discrete='levels'), at most num_values of them
    data_name = "discrete_diffusion"
    data_needs_by = ("num_values", "K")
    data_needs = {
        2: DataNeeds(discrete=("binary",)),
        "*": DataNeeds(discrete=("levels",), alternative="model.num_values=2 with data.binarize=static or dynamic"),
    }

    def check_data(self, spec) -> None:
        super().check_data(spec)
        if self.K > 2 and int(spec.levels or 0) > self.K:
            raise ConfigError(f"discrete_diffusion with num_values={self.K} cannot hold {spec.name!r}'s {spec.levels} "
                              f"levels; set model.num_values={spec.levels}")

    def _states(self, x: torch.Tensor) -> torch.Tensor:
        if self.K > 2 and x.is_floating_point() and not bool((x == x.round()).all()):
            raise DataError(f"discrete_diffusion with num_values={self.K} expects integer values 0..{self.K - 1}, got "
                            f"non-integer values in [{float(x.min()):.3g}, {float(x.max()):.3g}] (continuous data?)")
        k = x.round().long() if self.K == 2 else x.long()
        if k.shape[1:] != self.shape or bool(((k < 0) | (k >= self.K)).any()):
            raise DataError(f"discrete_diffusion expects values in 0..{self.K - 1} of shape {self.shape}")
        return k

    def _logits(self, xt: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self.net(xt.view(-1, *self.shape), t * (1000.0 / self.T)).view(xt.shape[0], self.D, self.K)

    # -- the chain ------------------------------------------------------------------------------
    def _q_t(self, x0: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """q(x_t | x_0) as (B, D, S) probabilities; x0 (B, D) values, t (B,)."""
        a = self.abar[t].to(torch.float32)[:, None, None]
        return a * F.one_hot(x0, self.S).float() + (1 - a) * self.m.float()

    def _posterior(self, xt: torch.Tensor, p0: torch.Tensor, t: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        """q(x_s | x_t, x_0) with x_0 ~ p0 (B, D, K) (one-hot for the true posterior, p~ for the
        model's), s < t: proportional to q(x_t | x_s) (x_s Q_{t|s} at x_t) times (p0 Qbar_s); (B, D, S)."""
        a_ts = (self.abar[t] / self.abar[s].clamp(min=1e-30)).to(torch.float32)[:, None, None]
        a_s = self.abar[s].to(torch.float32)[:, None, None]
        m = self.m.float()
        fact1 = a_ts * F.one_hot(xt, self.S).float() + (1 - a_ts) * m[xt][..., None]  # q(x_t = i | x_s = j) over j
        p0s = F.pad(p0, (0, self.S - self.K))
        fact2 = a_s * p0s + (1 - a_s) * m
        post = fact1 * fact2
        return post / post.sum(-1, keepdim=True).clamp(min=1e-30)

    def _terms(self, x0: torch.Tensor, t: torch.Tensor, generator=None) -> tuple[torch.Tensor, torch.Tensor]:
        """(L term at t per example (B,) in nats, aux CE (B,)): -log p(x_0|x_1) at t = 1, the KL for t >= 2."""
        q = self._q_t(x0, t)
        xt = torch.multinomial(q.view(-1, self.S).cpu(), 1, generator=generator).view(x0.shape).to(x0.device)
        return self.terms_at(x0, xt, t)

    def terms_at(self, x0: torch.Tensor, xt: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The bound's term at t for a given x_t (B, D) (see :meth:`_terms`)."""
        logits = self._logits(xt, t)
        logp0 = F.log_softmax(logits.float(), -1)
        if self.kind == "absorbing":  # unmasked pixels are known exactly (their x_0 is x_t)
            known = xt < self.K
            logp0 = torch.where(known[..., None], F.one_hot(xt.clamp(max=self.K - 1), self.K).float().log()
                                .clamp(min=-1e4), logp0)
        p0 = logp0.exp()
        aux = -logp0.gather(-1, x0[..., None]).squeeze(-1).sum(-1)
        s = t - 1
        model = self._posterior(xt, p0, t, s)
        true = self._posterior(xt, F.one_hot(x0, self.K).float(), t, s)
        kl = (true * (true.clamp(min=1e-30).log() - model.clamp(min=1e-30).log())).sum(-1).sum(-1)
        nll1 = -model.gather(-1, x0[..., None]).squeeze(-1).clamp(min=1e-30).log().sum(-1)
        return torch.where(t == 1, nll1, kl), aux

    def prior_kl(self, x0: torch.Tensor) -> torch.Tensor:
        """KL(q(x_T | x_0) || m) per example (0 when alpha_bar_T = 0, as here)."""
        q = self._q_t(x0, torch.full((x0.shape[0],), self.T, device=x0.device))
        return (q * (q.clamp(min=1e-30).log() - self.m.float().clamp(min=1e-30).log())).sum(-1).sum(-1)

    # -- interface --------------------------------------------------------------------------------
    def loss(self, batch, generator: torch.Generator | None = None, **kwargs) -> dict[str, torch.Tensor]:
        """D3PM hybrid loss per pixel: (L_T + T (L_t + lambda CE_t)) / D with t ~ U{1..T} (the CE
        weighted by lambda against the single-t term L_t, as D3PM; "nelbo" = L_T + T L_t, the
        bound's unbiased estimate)."""
        self.check_options(kwargs, (), what="loss")
        x = batch[0] if isinstance(batch, (tuple, list)) else batch
        x0 = self._states(x).flatten(1)
        t = torch.randint(1, self.T + 1, (x0.shape[0],), generator=generator).to(x0.device)  # generator on CPU
        term, aux = self._terms(x0, t, generator)
        nelbo = self.prior_kl(x0) + self.T * term
        loss = (nelbo + self.T * self.hybrid_lambda * aux).mean() / self.D
        return {"loss": loss, "nelbo": nelbo.mean().detach()}

    @torch.no_grad()
    def log_prob(self, x: torch.Tensor, *, t_samples: int = 64, generator: torch.Generator | None = None) -> torch.Tensor:
        """-L (nats per example, a lower bound on log p(x)), L estimated with ``t_samples``
        stratified draws of t in 1..T (default 64; t_samples=T sums every term once)."""
        n, g = int(t_samples), generator
        x0 = self._states(x).flatten(1)
        B = x0.shape[0]
        if n >= self.T:
            ts = torch.arange(1, self.T + 1)
        else:  # stratified: one t in each of n equal strata of 1..T
            u = torch.rand(n, generator=g)
            ts = (1 + torch.floor((torch.arange(n) + u) * self.T / n)).long().clamp(max=self.T)
        total = torch.zeros(B, device=x0.device)
        for t in ts.tolist():
            term, _ = self._terms(x0, torch.full((B,), t, device=x0.device), g)
            total += term
        nelbo = self.prior_kl(x0) + total * (self.T / len(ts))
        return -nelbo

    @torch.no_grad()
    def sample(self, n: int, *, generator: torch.Generator | None = None, steps: int | None = None,
               progress: bool = False) -> torch.Tensor:
        """Ancestral sampling from x_T ~ m with ``steps`` (default T) evenly spaced jumps t -> s,
        each drawn from the model's q(x_s | x_t, x0~ ~ p~(.|x_t)) (exact for any jump, see above)."""
        steps = int(self.default_steps if steps is None else steps)
        if not 1 <= steps <= self.T:
            raise ConfigError(f"steps must be in 1..{self.T}, got {steps}")
        dev = self.device
        grid = torch.linspace(self.T, 0, steps + 1).round().long().unique_consecutive().tolist()
        xt = torch.multinomial(self.m.float().expand(n * self.D, self.S).cpu(), 1, replacement=True,
                               generator=generator).view(n, self.D).to(dev)
        from tqdm.auto import tqdm

        for t, s in tqdm(list(zip(grid[:-1], grid[1:])), desc="discrete diffusion", disable=not progress):
            tt, ss = torch.full((n,), t, device=dev), torch.full((n,), s, device=dev)
            p0 = F.softmax(self._logits(xt, tt).float(), -1)
            if self.kind == "absorbing":
                known = xt < self.K
                p0 = torch.where(known[..., None], F.one_hot(xt.clamp(max=self.K - 1), self.K).float(), p0)
            probs = self._posterior(xt, p0, tt, ss)  # at s = 0: p(x_0 | x_t), mask probability 0
            xt = torch.multinomial(probs.view(-1, self.S).cpu(), 1, generator=generator).view(n, self.D).to(dev)
        return xt.view(n, *self.shape).float()
