"""Variational autoencoder with the ELBO and the IWAE bound.

Papers and the equations implemented
------------------------------------
* Kingma & Welling 2014, "Auto-Encoding Variational Bayes" (ICLR).
  Encoder q(z|x) = N(mu(x), diag sigma^2(x)), prior p(z) = N(0, I), decoder p(x|z).
  ELBO (their eq. 3, the "SGVB B" estimator, eq. 7 and appendix B):
      L(x) = E_q[log p(x|z)] - KL(q(z|x) || p(z)),
      KL   = 1/2 sum_j (mu_j^2 + sigma_j^2 - 1 - log sigma_j^2)          (analytic)
  Reparameterisation: z = mu + sigma * eps, eps ~ N(0, I), one sample per example.
* Burda, Grosse & Salakhutdinov 2016, "Importance Weighted Autoencoders" (ICLR), eq. 8
  (evaluation with ``log_prob(k=...)``, and training on L_k with ``objective="iwae"``):
      L_k(x) = E[ log (1/k) sum_{i=1..k} w_i ],  w_i = p(x, z_i) / q(z_i|x),  z_i ~ q(z|x),
  with log w_i = log p(x|z_i) + log p(z_i) - log q(z_i|x). L_1 is the ELBO (here with a
  Monte Carlo KL), L_k <= L_{k+1} <= log p(x), and L_k -> log p(x) as k -> infinity.
  The paper evaluates test log-likelihood with k = 5000; ``log_prob`` defaults to
  k = 100 (cheaper; pass k=5000 to match the paper's protocol).
* Salimans, Karpathy, Chen & Kingma 2017, "PixelCNN++" (ICLR), eq. 2: the discretised
  logistic (mixture) likelihood for 8-bit data (decoder="logistic"; see
  :mod:`genzoo.nn.likelihoods`).

Decoders (``decoder=``) and the data each expects
-------------------------------------------------
* "bernoulli": logits; data in {0, 1} (binarised MNIST). log_prob is a mass.
* "gaussian": mean and a log-scale per dimension, both output by the decoder (as in
  Kingma & Welling's appendix C.2), log-scale clamped to [-7, 2]; continuous data such
  as uniformly dequantised pixels in [-1, 1]. log_prob is a density (bits/dim must add
  the bin volume, see :mod:`genzoo.units`). Samples (means and draws) are clamped to
  [-1, 1] for image shapes (C, H, W) only; vector data (2-D toys, arrays) has no fixed
  range and is left unclamped.
* "logistic": discretised logistic (mixture of ``nr_mix``) on the 256-level grid
  x = 2k/255 - 1 in [-1, 1] (not dequantised). log_prob is a mass.

Architectures (``arch=``)
-------------------------
* "mlp": any shape; encoder D -> hidden x depth -> 2 * latent_dim, decoder mirrored.
* "conv": images (C, H, W) with H, W divisible by 4: two stride-2 4x4 convs (channels,
  2 * channels) then a linear layer to (mu, log sigma^2); the decoder mirrors it with
  transposed convs. ``hidden`` and ``depth`` are used by "mlp" only.

Randomness: every draw (reparameterisation noise, importance samples, prior samples,
decoder samples) comes from the ``generator`` argument, or torch's global RNG when it is
None. The i-th importance sample of ``log_prob`` uses the i-th call
``randn((B, latent_dim))`` on the generator, the same draw ``elbo`` makes, so
``log_prob(x, k=1)`` and ``elbo(x)`` with equally seeded generators use the same z, and
the value does not depend on ``chunk``.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from ..errors import ConfigError, DataError
from ..nn.blocks import ConvDecoder, ConvEncoder, mlp
from ..nn.likelihoods import LIKELIHOODS, make_likelihood, randn
from ..registry import register
from .base import GenerativeModel
from .data_needs import IMAGE_OR_VECTOR, DataNeeds

_LOG_2PI = math.log(2.0 * math.pi)
ARCHS = ("mlp", "conv")


def kl_normal_std_normal(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, diag exp(logvar)) || N(0, I)) summed over the last dim: (B, L) -> (B,) nats.

    Kingma & Welling 2014, appendix B: -1/2 sum (1 + log sigma^2 - mu^2 - sigma^2).
    """
    return 0.5 * (mu * mu + logvar.exp() - 1.0 - logvar).sum(-1)


@register("vae", family="vae", paper="Kingma & Welling 2014; Burda et al. 2016 (IWAE bound)",
          summary="Variational autoencoder (MLP or conv), ELBO training, IWAE-bound log_prob")
class VAE(GenerativeModel):
    """Variational autoencoder (Kingma & Welling 2014) with an IWAE-bound ``log_prob`` (Burda et al. 2016).

    Args:
        shape: per-example data shape, e.g. (1, 28, 28) or (2,) (a list is accepted).
        arch: "mlp" (any shape) or "conv" (C, H, W with H, W divisible by 4).
        latent_dim: dimension of z.
        hidden, depth: width and number of hidden layers of the MLP encoder and decoder.
        channels: base width of the conv encoder/decoder (channels, 2 * channels).
        decoder: "bernoulli" | "gaussian" | "logistic" (the output distribution p(x|z)).
        nr_mix: mixture components of the "logistic" decoder (ignored otherwise).
        kl_weight: weight of the KL term in the training loss. 1.0 (default) trains the
            plain ELBO; any other value gives a beta-VAE style objective, and the loss
            dict's "loss" then is rec + kl_weight * kl, while "nelbo" is always rec + kl.
    """

    likelihood = "bound"

    def __init__(
        self,
        shape: tuple = (1, 28, 28),
        arch: str = "mlp",
        latent_dim: int = 32,
        hidden: int = 512,
        depth: int = 2,
        channels: int = 32,
        decoder: str = "bernoulli",
        nr_mix: int = 1,
        kl_weight: float = 1.0,
        objective: str = "elbo",
        k_train: int = 5,
    ):
        super().__init__()
        if objective not in ("elbo", "iwae"):
            raise ConfigError(f"unknown VAE objective {objective!r}; valid: elbo, iwae")
        if int(k_train) < 1:
            raise ConfigError(f"VAE k_train must be >= 1, got {k_train}")
        self.objective, self.k_train = objective, int(k_train)
        # validation (and train.keep_best) scores the negative ELBO whatever kl_weight is, or -L_k when training on it
        self.valid_metric = "loss" if objective == "iwae" else "nelbo"
        shape = tuple(int(s) for s in shape)
        if not shape or any(s <= 0 for s in shape):
            raise ConfigError(f"VAE shape must be a non-empty tuple of positive ints, got {shape}")
        if arch not in ARCHS:
            raise ConfigError(f"unknown VAE arch {arch!r}; valid: {', '.join(ARCHS)}")
        if decoder not in LIKELIHOODS:
            raise ConfigError(f"unknown VAE decoder {decoder!r}; valid: {', '.join(LIKELIHOODS)}")
        if arch == "conv" and (len(shape) != 3 or shape[1] % 4 or shape[2] % 4):
            raise ConfigError(
                f"VAE arch='conv' needs an image shape (C, H, W) with H and W divisible by 4, got {shape}; "
                "use arch='mlp' for other shapes"
            )
        if int(latent_dim) < 1:
            raise ConfigError(f"VAE latent_dim must be >= 1, got {latent_dim}")
        if kl_weight < 0:
            raise ConfigError(f"VAE kl_weight must be >= 0, got {kl_weight}")
        self.shape = shape
        self.arch = arch
        self.latent_dim = int(latent_dim)
        self.decoder_name = decoder
        self.kl_weight = float(kl_weight)
        #: range gaussian samples are clamped to: [-1, 1] for images, none for vectors
        #: (fix: it used to be [-1, 1] always, which squashed e.g. the 8gaussians toy,
        #: spread over [-4, 4]^2, into the unit square)
        self.sample_range = (-1.0, 1.0) if len(shape) == 3 else None
        if decoder == "logistic":
            self.lik = make_likelihood(decoder, nr_mix=nr_mix)
        elif decoder == "gaussian":
            self.lik = make_likelihood(decoder, data_range=self.sample_range or (-math.inf, math.inf))
        else:
            self.lik = make_likelihood(decoder)
        #: instance attribute: bernoulli / logistic are masses, gaussian a density
        self.discrete_likelihood = self.lik.discrete
        P = self.lik.num_params
        D = math.prod(shape)
        L = self.latent_dim
        if arch == "mlp":
            self.encoder = nn.Sequential(nn.Flatten(), mlp(D, 2 * L, hidden, depth))
            self.decoder = mlp(L, P * D, hidden, depth)
        else:
            C, H, W = shape
            self.encoder = ConvEncoder(shape, 2 * L, channels)
            self.decoder = ConvDecoder(L, (P * C, H, W), channels)

    # -- data compatibility -----------------------------------------------------------------
    #: "bernoulli" needs binary {0, 1} data (binarize=static or dynamic); "gaussian" is a density for
    #: continuous data: binary data is refused (a density on {0, 1} is unbounded), and so is
    #: un-dequantised lattice data (images, or vectors with a value_range, not uniformly dequantised:
    #: bits/dim would go negative), as the flows refuse it, while continuous vectors (2-D toys) are
    #: taken as they are; "logistic" needs the un-dequantised 256-level grid 2k/255 - 1 of [-1, 1].
    #: Token data has no VAE decoder.
    data_needs_by = ("decoder", "decoder_name")
    data_needs = {
        "bernoulli": DataNeeds(IMAGE_OR_VECTOR, ("binary",), alternative=(
            "model.decoder=gaussian (dequantised data) or model.decoder=logistic (256-level data in [-1, 1])")),
        "gaussian": DataNeeds(IMAGE_OR_VECTOR, (None, "levels"), dequantized=True, alternative=(
            "model.decoder=logistic (256-level data in [-1, 1]) or model.decoder=bernoulli (data.binarize=static or dynamic)")),
        "logistic": DataNeeds(IMAGE_OR_VECTOR, levels=256, value_range=(-1.0, 1.0),
                              alternative="model.decoder=gaussian / bernoulli"),
    }

    # -- pieces -------------------------------------------------------------------------
    def _check_x(self, x) -> torch.Tensor:
        if isinstance(x, (tuple, list)):
            x = x[0]
        if tuple(x.shape[1:]) != self.shape:
            raise DataError(f"VAE built for examples of shape {self.shape} got a batch of shape {tuple(x.shape)}")
        return x

    def posterior(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """q(z|x) parameters: (mu, logvar), each (B, latent_dim); logvar clamped to [-30, 20]."""
        h = self.encoder(x)
        mu, logvar = h.chunk(2, dim=-1)
        return mu, logvar.clamp(-30.0, 20.0)

    def decode_params(self, z: torch.Tensor) -> torch.Tensor:
        """Decoder output for z (N, latent_dim) as likelihood parameters (N, P, *shape)."""
        return self.decoder(z).reshape(z.shape[0], self.lik.num_params, *self.shape)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Decoder mean for z (N, latent_dim): (N, *shape) in data space."""
        return self.lik.mean(self.decode_params(z))

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Posterior mean mu(x): (B, *shape) -> (B, latent_dim)."""
        return self.posterior(self._check_x(x))[0]

    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        """Decoder mean at the posterior mean: (B, *shape) -> (B, *shape)."""
        return self.decode(self.encode(x))

    # -- objectives ------------------------------------------------------------------------
    def _elbo_terms(self, x, generator=None):
        mu, logvar = self.posterior(x)
        eps = randn(mu.shape, generator, device=mu.device, dtype=mu.dtype)
        z = mu + torch.exp(0.5 * logvar) * eps
        rec = self.lik.log_prob(self.decode_params(z), x)  # (B,) log p(x|z)
        kl = kl_normal_std_normal(mu, logvar)  # (B,)
        return rec, kl

    def elbo(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Single-sample ELBO log p(x|z) - KL(q||p) with the analytic KL: (B,) nats (a lower bound on log p(x))."""
        rec, kl = self._elbo_terms(self._check_x(x), generator)
        return rec - kl

    def loss(self, batch, generator: torch.Generator | None = None, **kwargs) -> dict[str, torch.Tensor]:
        """Training loss, means over the batch in nats per example.

        Returns {"loss": rec + kl_weight * kl (= negative ELBO when kl_weight = 1),
        "nelbo": rec + kl (negative ELBO, always), "rec": -log p(x|z), "kl": analytic KL}.
        With ``objective="iwae"`` (Burda et al. 2016, section 3: training on L_k) the loss is
        -L_k with k = ``k_train`` importance samples (the paper trains with k = 5 and 50), and
        "nelbo" / "rec" / "kl" are still logged.
        """
        self.check_options(kwargs, (), what="loss")
        x = self._check_x(batch)
        if self.objective == "iwae":
            lk = self.log_prob(x, k=self.k_train, generator=generator)
            with torch.no_grad():
                rec, kl = self._elbo_terms(x, generator)
            rec, kl = -rec.mean(), kl.mean()
            return {"loss": -lk.mean(), "iwae_bound": lk.mean().detach(), "nelbo": rec + kl, "rec": rec, "kl": kl}
        rec, kl = self._elbo_terms(x, generator)
        rec, kl = -rec.mean(), kl.mean()
        return {"loss": rec + self.kl_weight * kl, "nelbo": rec + kl, "rec": rec, "kl": kl}

    def _auto_chunk(self, batch: int) -> int:
        per_sample = batch * self.lik.num_params * math.prod(self.shape)
        return max(1, (1 << 24) // max(per_sample, 1))  # ~64 MB of float32 decoder output per chunk

    def log_prob(self, x: torch.Tensor, *, k: int = 100, chunk: int | None = None,
                 generator: torch.Generator | None = None) -> torch.Tensor:
        """IWAE lower bound L_k on log p(x) (Burda et al. 2016, eq. 8): (B,) nats per example.

        Options:
            k: importance samples (default 100; the paper's evaluation uses 5000).
                k = 1 is the ELBO with a Monte Carlo (not analytic) KL.
            chunk: importance samples decoded at once (default: as many as fit ~64 MB
                of decoder output); changes memory and speed, not the value.
            generator: torch.Generator for the samples (global RNG when None).
        Gradients flow through (IWAE training); wrap in torch.no_grad() to evaluate.
        """
        k = int(k)
        if k < 1:
            raise ConfigError(f"log_prob needs k >= 1 importance samples, got {k}")
        x = self._check_x(x)
        B = x.shape[0]
        chunk = max(1, min(int(chunk or self._auto_chunk(B)), k))
        mu, logvar = self.posterior(x)
        std = torch.exp(0.5 * logvar)
        log_ws = []
        for start in range(0, k, chunk):
            c = min(chunk, k - start)
            eps = torch.stack([randn(mu.shape, generator, device=mu.device, dtype=mu.dtype) for _ in range(c)])  # (c, B, L)
            z = mu + std * eps
            log_q = (-0.5 * eps * eps - 0.5 * logvar - 0.5 * _LOG_2PI).sum(-1)  # (c, B)
            log_pz = (-0.5 * z * z - 0.5 * _LOG_2PI).sum(-1)
            params = self.decode_params(z.reshape(c * B, -1))
            xr = x.unsqueeze(0).expand(c, *x.shape).reshape(c * B, *self.shape)
            log_px = self.lik.log_prob(params, xr).reshape(c, B)
            log_ws.append(log_px + log_pz - log_q)
        log_w = torch.cat(log_ws, 0)  # (k, B)
        return torch.logsumexp(log_w, dim=0) - math.log(k)

    # -- generation ------------------------------------------------------------------------
    @torch.no_grad()
    def sample(self, n: int, *, generator: torch.Generator | None = None, temperature: float = 1.0,
               mean: bool = True) -> torch.Tensor:
        """n samples (n, *shape) in data space.

        Options:
            temperature: z ~ N(0, temperature^2 I) (default 1.0).
            mean: True (default) returns the decoder mean (Bernoulli probabilities in
                [0, 1]; logistic means clamped to [-1, 1], gaussian means clamped to
                [-1, 1] for image shapes); False returns a draw from p(x|z) ({0, 1}
                pixels, grid values for logistic, gaussian draws clamped to [-1, 1]
                for image shapes, unclamped for vectors).
        """
        temperature, use_mean = float(temperature), bool(mean)
        dtype = next(self.parameters()).dtype
        z = temperature * randn((int(n), self.latent_dim), generator, device=self.device, dtype=dtype)
        params = self.decode_params(z)
        if use_mean:
            return self.lik.mean(params)
        out = self.lik.sample(params, generator)
        if self.decoder_name == "gaussian" and self.sample_range is not None:
            out = out.clamp(*self.sample_range)
        return out
