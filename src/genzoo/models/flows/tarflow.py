"""TARFLOW: Normalizing Flows are Capable Generative Models (Zhai et al. 2024, ICML 2025).

A Transformer variant of the masked autoregressive flow (MAF, Papamakarios et al. 2017) on
image patches. Where the paper leaves a detail open, the released code (apple/ml-tarflow)
decides, and the docstrings say so.

Equations implemented
---------------------
* Patches (sec. 2.2): an image (C, H, W) is cut into T = (H/p)(W/p) non-overlapping p x p
  patches in raster order, each a vector of P = C p^2 values (torch's ``unfold`` order);
  x is the sequence (T, P). A vector (D,) is the sequence (D, 1), one coordinate per position.
* Each of the N flow blocks t is an affine autoregressive flow over that sequence
  (sec. 2.2; eq. 5 is the log-determinant)::

      z_i = (x_i - mu_i(x_<i)) * exp(-alpha_i(x_<i)),     log|det dz/dx| = -sum_{i,j} alpha_ij

  (mu_i, alpha_i) in R^P come from a causal Transformer over the patches whose outputs are
  shifted by one position: output i sees x_<=i and parameterises patch i + 1; patch 0 gets
  (mu, alpha) = (0, 0) (the code's zero padding), so the first patch passes unchanged.
  The conditioner is genzoo's one :class:`~genzoo.nn.transformer.Transformer` (input
  projection P -> width, learned positions, ``layers_per_block`` pre-norm blocks, output
  head width -> 2P, zero-initialised so each block starts as the identity, as the code's
  ``proj_out``); the output splits as (alpha, mu), the code's (xa, xb).
* Alternating directions (sec. 2.2): block t reads the sequence in raster order for even t
  and reversed for odd t (the code's PermutationIdentity / PermutationFlip).
* Prior N(0, I) on the last block's output; loss = -log p(x) (nats per example here; the
  code divides by D, the same optimum).
* Inverse (sampling): sequential over positions, x_i = z_i exp(alpha_i) + mu_i
  with (mu_i, alpha_i) computed from the already inverted x_<i; one Transformer pass of
  one patch per position with the Transformer's KV cache (``cached=False`` recomputes the
  whole prefix, O(T^2), for checking).
* Gaussian noise augmentation: the model is trained on y = x + sigma eps,
  eps ~ N(0, I). The released models use sigma = 0.05 (ImageNet 64x64, patch 2 or 4),
  0.07 (AFHQ 256) and 0.15 (ImageNet 128) on pixels in [-1, 1]; ``noise_std`` is in the
  data's units (:class:`TarFlow` says how it applies to genzoo's data).
* Score-based denoising: a sample y of the noisy model is mapped to Tweedie's
  estimate of the clean image, x = y + sigma^2 grad_y log p_model(y), the gradient of the
  flow's own exact log-likelihood by autograd (the code's step, with its tuned factor
  ``self_denoising_lr`` fixed to 1).
* Guidance (sec. 2.6): at every step of every block's inverse, two predictions are mixed,

      mu_i = (1 + w) mu_i^cond - w mu_i^uncond,    alpha_i = (1 + w) alpha_i^cond - w alpha_i^uncond

  (the paper's convention: w = 0 is no guidance). Class-conditional models: "cond" sees the
  label, "uncond" the null label (labels are dropped with probability ``label_dropout`` in
  training, the code's ``drop_label``; default 0.1). Unconditional models (eq. 11): "uncond"
  is the same network with its attention logits divided by a temperature tau (``attn_temp``;
  the released unconditional ImageNet 64 model samples with w = 0.2, tau = 0.3); for
  class-conditional models tau applies to the null-label branch as in the code (default 1).
  ``annealed_guidance`` uses w_i = w i / (T - 1) at position i (the code's option).
  Guidance makes sampling a different map from the exact inverse: ``decode`` stays exact.

Not implemented: the code's volume-preserving variant (``nvp=False``: additive blocks with a
learned prior variance) and GS-Jacobi / parallel sampling.
"""
from __future__ import annotations

import math
from dataclasses import replace

import torch
from torch import nn

from ...errors import ConfigError, DataError
from ...nn.likelihoods import randn
from ...nn.transformer import Transformer
from ...registry import register
from ..base import resolve_labels
from ..data_needs import Opt
from ...units import bits_per_dim
from .base import Chain, Flow, Transform
from .transforms import Flatten


class Patchify(Transform):
    """(B, C, H, W) -> (B, T, C p p): non-overlapping p x p patches in raster order, each flattened
    in (C, p, p) order (``torch.nn.functional.unfold``'s). Vectors (B, D) -> (B, D, 1). Volume preserving."""

    def __init__(self, shape: tuple, patch_size: int = 1):
        super().__init__()
        self.shape = tuple(int(s) for s in shape)
        self.p = int(patch_size) if len(self.shape) == 3 else 1
        if len(self.shape) == 3:
            c, h, w = self.shape
            if self.p < 1 or h % self.p or w % self.p:
                raise ConfigError(f"patch_size={patch_size} must divide the image height and width ({h}x{w})")

    def output_shape(self, shape):
        if len(shape) == 3:
            c, h, w = shape
            return ((h // self.p) * (w // self.p), c * self.p * self.p)
        return (shape[0], 1)

    def forward(self, x, cond=None):
        if x.dim() == 2:
            return x[..., None], x.new_zeros(x.shape[0])
        B, C, H, W = x.shape
        p = self.p
        seq = x.reshape(B, C, H // p, p, W // p, p).permute(0, 2, 4, 1, 3, 5).reshape(B, (H // p) * (W // p), C * p * p)
        return seq, x.new_zeros(B)

    def inverse(self, z, cond=None):
        if len(self.shape) == 1:
            return z[..., 0]
        C, H, W = self.shape
        p = self.p
        B = z.shape[0]
        return z.reshape(B, H // p, W // p, C, p, p).permute(0, 3, 1, 4, 2, 5).reshape(B, C, H, W)


class AutoregressiveAffine(Transform):
    """One TARFLOW block: z_i = (x_i - mu_i(x_<i)) exp(-alpha_i(x_<i)) over a sequence (B, T, P),
    (mu, alpha) from a causal Transformer shifted by one position; ``reverse`` reads the sequence
    backwards. ``cond``: class labels (B,) int64 for a class-conditional block (None = no label).

    Args:
        seq_len, patch_dim: T and P.
        dim, depth, heads: the Transformer's width, layers and attention heads.
        reverse: autoregress from the last position to the first.
        num_classes: 0, or K > 0 labels (plus the null label K) embedded into every position.
        mlp_ratio, dropout: the Transformer's.
    """

    def __init__(self, seq_len: int, patch_dim: int, *, dim: int = 128, depth: int = 2, heads: int = 2,
                 reverse: bool = False, num_classes: int = 0, mlp_ratio: float = 4.0, dropout: float = 0.0):
        super().__init__()
        self.seq_len, self.patch_dim, self.reverse = int(seq_len), int(patch_dim), bool(reverse)
        self.net = Transformer(dim, depth, heads, in_dim=patch_dim, out_dim=2 * patch_dim, causal=True, max_len=seq_len,
                               pos="learned", num_classes=num_classes, mlp_ratio=mlp_ratio, dropout=dropout)
        nn.init.zeros_(self.net.head.weight)  # every block starts as the identity (the code's zero proj_out)
        nn.init.zeros_(self.net.head.bias)

    def _order(self, x: torch.Tensor) -> torch.Tensor:
        return x.flip(1) if self.reverse else x

    def params(self, x: torch.Tensor, cond=None, attn_temp: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
        """(mu, alpha), each (B, T, P), for x (B, T, P) given in this block's reading order:
        position i's from x_<i (one causal pass, outputs shifted by one), position 0's zero."""
        h = self.net(x, cond=cond, attn_temp=attn_temp)
        h = torch.cat([h.new_zeros(h[:, :1].shape), h[:, :-1]], 1)
        alpha, mu = h.chunk(2, -1)
        return mu, alpha

    def forward(self, x, cond=None):
        x = self._order(x)
        mu, alpha = self.params(x, cond)
        z = (x - mu) * torch.exp(-alpha)
        return self._order(z), -alpha.sum((1, 2))

    def _next(self, xs: list, cond, cache, attn_temp: float) -> tuple[torch.Tensor, torch.Tensor]:
        """(mu_i, alpha_i), each (B, P), of position i = len(xs) from the inverted x_<i."""
        if cache is not None:  # one new patch; the cache holds the keys and values of the earlier ones
            h = self.net(xs[-1][:, None], cache, cond=cond, attn_temp=attn_temp)[:, 0]
        else:
            h = self.net(torch.stack(xs, 1), cond=cond, attn_temp=attn_temp)[:, -1]
        alpha, mu = h.chunk(2, -1)
        return mu, alpha

    def inverse(self, z, cond=None, *, guidance: float = 0.0, attn_temp: float = 1.0, annealed: bool = False,
                cached: bool = True):
        """x from z, sequentially over positions. With ``guidance`` w != 0: (mu, alpha) =
        (1 + w) cond - w uncond, "uncond" being the null label (class-conditional) and attention
        temperature ``attn_temp``; ``annealed``: w_i = w i / (T - 1). w = 0 is the exact inverse."""
        z = self._order(z)
        T = z.shape[1]
        guided = guidance != 0.0
        null = None
        if guided and self.net.num_classes > 0:
            null = torch.full((z.shape[0],), self.net.num_classes, dtype=torch.long, device=z.device)
        cache = self.net.new_cache() if cached else None
        cache_u = self.net.new_cache() if cached and guided else None
        xs = [z[:, 0]]
        for i in range(1, T):
            mu, alpha = self._next(xs, cond, cache, 1.0)
            if guided:
                mu_u, alpha_u = self._next(xs, null, cache_u, attn_temp)
                w = guidance * i / (T - 1) if annealed else guidance
                mu, alpha = mu + w * (mu - mu_u), alpha + w * (alpha - alpha_u)
            xs.append(z[:, i] * torch.exp(alpha) + mu)
        return self._order(torch.stack(xs, 1))


class TarFlowTransform(Chain):
    """Patchify -> N :class:`AutoregressiveAffine` blocks (alternating direction) -> Flatten to
    (T P,); ``inverse`` takes the guidance options of :meth:`AutoregressiveAffine.inverse`."""

    def __init__(self, shape: tuple, patch_size: int, blocks: int, **block_args):
        patchify = Patchify(shape, patch_size)
        T, P = patchify.output_shape(tuple(shape))
        layers = [AutoregressiveAffine(T, P, reverse=bool(t % 2), **block_args) for t in range(blocks)]
        super().__init__([patchify, *layers, Flatten((T, P))])
        self.seq_shape = (T, P)

    @property
    def blocks(self) -> list[AutoregressiveAffine]:
        return list(self.transforms)[1:-1]

    def inverse(self, z, cond=None, **guide):
        patchify, flatten = self.transforms[0], self.transforms[-1]
        x = flatten.inverse(z)
        for block in reversed(self.blocks):
            x = block.inverse(x, cond, **guide)
        return patchify.inverse(x)


@register("tarflow", family="flows", paper="Zhai et al. 2024 (TARFLOW)",
          summary="TARFLOW: causal-Transformer affine autoregressive flows on patches, noise augmentation, "
                  "score denoising, guidance")
class TarFlow(Flow):
    """TARFLOW (Zhai et al. 2024): a stack of Transformer autoregressive affine flows over patches.

    Args:
        shape: per-example shape, (C, H, W) images or (D,) vectors (one coordinate per position).
        patch_size: p; H and W must be divisible by it (images only).
        blocks: N, the number of autoregressive flow blocks (directions alternate).
        layers_per_block, dim, heads: each block's Transformer: layers, width, attention heads.
        mlp_ratio, dropout: the Transformers' MLP width factor and dropout.
        noise_std: sigma of the Gaussian noise augmentation, in the data's units (0 = off: then
            the model is a plain density of the data, the code's noise_type=uniform). Also the
            sigma of the denoising step after sampling.
        num_classes: 0 = unconditional; K > 0: class-conditional on labels 0..K-1 with the null
            label K (``loss`` then takes (x, y) batches).
        label_dropout: probability of replacing a training label by the null label (the code's
            ``drop_label``; 0.1, the usual rate of classifier-free guidance).
        dequantization, levels, data_range: as in :class:`~.base.Flow` ("uniform" only).

    ``log_prob(x)`` is the exact log-density of the **noise-augmented** model at y = x + sigma eps,
    eps ~ N(0, I) drawn from ``generator`` (global RNG when None; ``noise=False`` evaluates at x
    itself). On uniformly dequantised data, E[-log p(y)] / (D ln 2) + log2(L / (hi - lo)) is
    an upper bound on the bits/dim of a discrete model (the flow followed by assigning y to
    the bins in proportion to q(y | k), the density of (bin k) + N(0, sigma^2)); so bits/dim
    use the usual offset (+7 for [-1, 1]), but with sigma > 0 they also pay for the noise's
    entropy (about log2(sqrt(2 pi e) sigma) + 7 bits for a pixel the rest of the image
    determines: 4.7 at sigma = 0.05), and only sigma = 0 gives numbers comparable with other flows.
    So ``likelihood`` is "bound" for sigma > 0 (evaluation records an upper bound on the NLL) and
    "exact" for sigma = 0.
    """

    #: with noise_std > 0 (the default) log_prob is the density of the noise-augmented data, a
    #: bound on the data's likelihood (see above), so the class and such instances say "bound";
    #: an instance with noise_std = 0 is a plain density and says "exact".
    likelihood = "bound"

    def __init__(
        self,
        shape: tuple = (1, 28, 28),
        patch_size: int = 4,
        blocks: int = 4,
        layers_per_block: int = 2,
        dim: int = 128,
        heads: int = 2,
        mlp_ratio: float = 4.0,
        dropout: float = 0.0,
        noise_std: float = 0.05,
        num_classes: int = 0,
        label_dropout: float = 0.1,
        dequantization: str = "uniform",
        levels: int = 256,
        data_range: tuple = (-1.0, 1.0),
    ):
        super().__init__()
        shape = tuple(int(s) for s in shape)
        if len(shape) not in (1, 3) or (len(shape) == 1 and shape[0] < 2):
            raise ConfigError(f"TARFLOW needs an image shape (C, H, W) or a vector shape (D,) with D >= 2, got {shape}")
        if dequantization != "uniform":
            raise ConfigError(f"TARFLOW takes dequantization='uniform' (with Gaussian noise augmentation on top), "
                              f"got {dequantization!r}")
        blocks, layers_per_block, dim, heads = int(blocks), int(layers_per_block), int(dim), int(heads)
        if blocks < 1 or layers_per_block < 1 or dim < 1 or heads < 1:
            raise ConfigError(f"TARFLOW needs blocks, layers_per_block, dim, heads >= 1, got {blocks}, {layers_per_block}, "
                              f"{dim}, {heads}")
        if dim % heads:
            raise ConfigError(f"TARFLOW dim={dim} must be divisible by heads={heads}")
        if not float(noise_std) >= 0:
            raise ConfigError(f"noise_std must be >= 0, got {noise_std}")
        if int(num_classes) < 0 or not 0.0 <= float(label_dropout) < 1.0:
            raise ConfigError(f"need num_classes >= 0 and 0 <= label_dropout < 1, got {num_classes}, {label_dropout}")
        self.noise_std = float(noise_std)
        self.num_classes = int(num_classes)
        self.label_dropout = float(label_dropout)
        self.uses_labels = self.num_classes > 0
        transform = TarFlowTransform(shape, patch_size, blocks, dim=dim, depth=layers_per_block, heads=heads,
                                     num_classes=self.num_classes, mlp_ratio=float(mlp_ratio), dropout=float(dropout))
        self._setup(shape, transform, "gaussian", "uniform", levels, data_range, 4, 32)
        self.likelihood = "bound" if self.noise_std > 0 else "exact"

    # -- data and labels -------------------------------------------------------------------
    #: Flow's uniform-dequantisation needs, plus: a class-conditional model needs labelled data with at
    #: most ``num_classes`` classes
    data_needs_by = None
    data_needs = replace(Flow.data_needs["uniform"], labels=Opt("num_classes"))

    def _split(self, batch):
        if isinstance(batch, (tuple, list)):
            x, y = batch[0], (batch[1] if len(batch) > 1 else None)
        else:
            x, y = batch, None
        return self._check_x(x), y

    def _labels(self, labels, n: int, device, default: str) -> torch.Tensor | None:
        """Labels (n,) int64 for the Transformers, or None (unconditional model). ``labels`` None
        gives ``default`` ("cycle": 0, 1, ..., K-1, 0, ...; "null": the null label K); else an int,
        n ints, or "none"/"null" (the null label)."""
        return resolve_labels(labels, n, self.num_classes, device, default=default, model="TARFLOW model")

    # -- densities -----------------------------------------------------------------------
    def log_density(self, y: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """Exact log p(y | labels) of the flow at y (no noise added): (B, *shape) -> (B,) nats."""
        z, logdet = self.transform(y, labels)
        return self.prior.log_prob(z) + logdet

    def log_prob(self, x: torch.Tensor, *, labels=None, noise: bool = True,
                 generator: torch.Generator | None = None) -> torch.Tensor:
        """log p(y) in nats per example, (B,), at y = x + noise_std * eps (see the class docstring).

        Options:
            labels: class-conditional models: the labels of log p(y | label); default the null
                label, i.e. the unconditional model that label dropout trains (comparable with
                other models' NLLs).
            noise: add the augmentation noise (default True; False: the exact density at x).
            generator: draws eps (global RNG when None).
        """
        x = self._check_x(x)
        if noise and self.noise_std > 0:
            x = x + self.noise_std * randn(x.shape, generator, device=x.device, dtype=x.dtype)
        return self.log_density(x, self._labels(labels, x.shape[0], x.device, "null"))

    def loss(self, batch, **kwargs) -> dict[str, torch.Tensor]:
        """Mean -log p(x + sigma eps | label) in nats per example (eps and the label dropout drawn
        from the global RNG, which the trainer seeds per step). Returns {"loss", "nll"} plus
        "bits_per_dim" for images (of the noise-augmented data; see the class docstring)."""
        self.check_options(kwargs, (), what="loss")
        x, y = self._split(batch)
        if self.noise_std > 0:
            x = x + self.noise_std * torch.randn_like(x)
        labels = None
        if self.num_classes > 0:
            if y is None:
                raise DataError(f"this TARFLOW model is class-conditional (num_classes={self.num_classes}) but the batch "
                                "has no labels; use labelled data or model.num_classes=0")
            labels = y.to(x.device).long()
            if self.label_dropout > 0:
                drop = torch.rand(labels.shape, device=x.device) < self.label_dropout
                labels = torch.where(drop, torch.full_like(labels, self.num_classes), labels)
        nll = -self.log_density(x, labels).mean()
        out = {"loss": nll, "nll": nll.detach()}
        if self.is_image:
            out["bits_per_dim"] = bits_per_dim(nll.detach(), math.prod(self.shape), self.data_range, self.bpd_levels)
        return out

    # -- generation ----------------------------------------------------------------------
    def denoise(self, y: torch.Tensor, labels: torch.Tensor | None = None, sigma: float | None = None) -> torch.Tensor:
        """The score-based denoising step: y + sigma^2 grad_y log p(y | labels), the gradient of the
        flow's exact log-density by autograd (sigma: default ``noise_std``; 0 gives y back)."""
        sigma = self.noise_std if sigma is None else float(sigma)
        with torch.enable_grad():
            y = y.detach().requires_grad_(True)
            grad, = torch.autograd.grad(self.log_density(y, labels).sum(), y)
        return (y + sigma ** 2 * grad).detach()

    @torch.no_grad()
    def sample(self, n: int, *, generator: torch.Generator | None = None, temperature: float = 1.0,
               guidance: float = 0.0, attn_temp: float = 1.0, annealed_guidance: bool = False, labels=None,
               denoise: bool = True) -> torch.Tensor:
        """n samples (n, *shape): z ~ N(0, T^2 I), the (guided) inverse, then the denoising step.

        Options:
            temperature: T (default 1.0).
            guidance: w of sec. 2.6, (1 + w) cond - w uncond (default 0 = none). Class-conditional
                models guide away from the null label; unconditional ones need ``attn_temp`` != 1.
            attn_temp: tau, the attention temperature of the "uncond" prediction (default 1.0).
            annealed_guidance: w_i = w i / (T - 1) along each block's sequence (default False).
            labels: class-conditional models: an int, n ints or "none" (default 0..K-1 cycled).
            denoise: apply the score-based denoising step (default True when noise_std > 0).
        Images are clamped to ``data_range`` after denoising.
        """
        t, w, tau = float(temperature), float(guidance), float(attn_temp)
        if t < 0:
            raise ConfigError(f"temperature must be >= 0, got {t}")
        if w < 0 or not tau > 0:
            raise ConfigError(f"need guidance >= 0 and attn_temp > 0, got guidance={w}, attn_temp={tau}")
        if w > 0 and self.num_classes == 0 and tau == 1.0:
            raise ConfigError("guidance of an unconditional TARFLOW contrasts the model with itself at attention "
                              "temperature attn_temp (the paper's eq. 11); set attn_temp != 1 (e.g. 0.3)")
        n = int(n)
        labels = self._labels(labels, n, self.device, "cycle")
        z = self.prior.sample((n, *self.latent_shape), generator, temperature=t, device=self.device, dtype=self._dtype())
        x = self.transform.inverse(z, labels, guidance=w, attn_temp=tau, annealed=bool(annealed_guidance))
        if denoise and self.noise_std > 0:
            x = self.denoise(x, labels)
        return x.clamp(*self.data_range) if self.is_image else x
