"""MADE: a masked autoencoder whose outputs are the conditionals of an autoregressive model.

Paper and the equations implemented
-----------------------------------
Germain, Gregor, Murray & Larochelle 2015, "MADE: Masked Autoencoder for Distribution
Estimation" (ICML).

* Degrees and masks (sec. 4, eqs. 12-13; :mod:`genzoo.nn.masked`): input d gets
  m^0(d) = its position in the ordering, hidden unit k of layer l gets
  m^l(k) ~ U{min m^{l-1}, ..., D-1}, and
      M^{W^l}[k, k'] = 1[m^l(k) >= m^{l-1}(k')],     M^V[d, k] = 1[m^0(d) > m^L(k)].
* The network (eqs. 10-11 with L hidden layers, ReLU units as in the paper's experiments):
      h^0 = x,   h^l = relu(b^l + (W^l * M^{W^l}) h^{l-1}),
      logits = c + (V * M^V) h^L + (A * M^A) x                             (direct connections)
  with M^A[d, d'] = 1[m^0(d) > m^0(d')] (``direct=True``, sec. 4.3). Output d depends on
  x_{d'} only if d' comes before d in the ordering, so log p(x) = sum_d log p(x_d | x_<d)
  is exact and costs one pass.
* Order-agnostic and connectivity-agnostic training (sec. 4.2-4.3): ``num_masks`` mask
  sets are cycled through, one per minibatch (mask k = training step mod num_masks; each
  set is drawn from the generator seeded by (seed, k)); with ``order_agnostic=True`` mask
  k >= 1 also draws a new ordering (mask 0 keeps the natural one). ``mask_conditioning``
  adds eq. 16's ``(U^l * M^{W^l}) 1`` to each hidden layer, telling the units which
  mask is in use.
* Ensembling at test time (sec. 4.3): ``log_prob(x, ensemble=K)`` = log (1/K) sum_k p_k(x)
  over the first K masks, a normalised mixture; ``sample(n, ensemble=K)`` draws each row's
  mask uniformly and then samples that mask's model: an exact draw from the mixture.
Reference figure on the static binarised MNIST test set (the one benchmarks/likelihood_mnist.py
prints beside its own): 88.04 nats, one hidden layer; the paper's mask ensembles do better.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from ...errors import ConfigError
from ...nn.masked import MaskedLinear, degree_mask, made_degrees
from ...registry import register
from ..base import TrainContext
from .base import AutoregressiveModel


@register("made", family="autoregressive", paper="Germain, Gregor, Murray & Larochelle 2015",
          summary="MADE: masked autoencoder, several hidden layers, direct connections, mask/order ensembles")
class MADE(AutoregressiveModel):
    """Masked autoencoder for distribution estimation (Germain et al. 2015).

    Args:
        shape: per-example shape, e.g. (1, 28, 28); natural order = x.reshape(B, D).
        hidden: widths of the hidden layers, e.g. [500] or [500, 500].
        direct: direct input -> output connections (masked strictly, like an FVSBN).
        num_masks: connectivity masks cycled through in training (1 = one fixed mask).
        order_agnostic: masks k >= 1 also use their own random ordering.
        mask_conditioning: the eq. 16 mask-dependent bias in every hidden layer.
        seed: seed of the degrees (and orderings): mask k comes from seed * 1000003 + k.
        output, levels, value_range, nr_mix: the per-dimension distribution (see
            :mod:`genzoo.models.autoregressive.base`). Beware: "categorical" with 256
            levels has an output layer of 256 * D units.
    log_prob / sample options:
        ensemble: K, the number of masks (0..K-1) to average (default 1: mask 0 alone);
            at most ``num_masks``.
    """

    retired_state = ("train_step",)  # its own minibatch counter, before the trainer's step came in ctx

    def __init__(self, shape: tuple = (1, 28, 28), hidden: tuple = (500,), direct: bool = True, num_masks: int = 1,
                 order_agnostic: bool = False, mask_conditioning: bool = False, seed: int = 0,
                 output: str = "bernoulli", levels: int = 256, value_range: tuple = (-1.0, 1.0), nr_mix: int = 5):
        super().__init__()
        self._init_output(shape, output, levels, value_range, nr_mix)
        hidden = [int(h) for h in (hidden if isinstance(hidden, (list, tuple)) else [hidden])]
        if not hidden or any(h < 1 for h in hidden):
            raise ConfigError(f"MADE hidden must list one or more positive widths, e.g. [500], got {hidden}")
        if int(num_masks) < 1:
            raise ConfigError(f"MADE num_masks must be >= 1, got {num_masks}")
        D, P = self.num_dims, self.output.num_params
        self.hidden = hidden
        self.num_masks = int(num_masks)
        self.order_agnostic = bool(order_agnostic)
        self.seed = int(seed)
        sizes = [D] + hidden
        self.layers = nn.ModuleList(
            MaskedLinear(sizes[i], sizes[i + 1], mask_conditioning=mask_conditioning) for i in range(len(hidden))
        )
        self.out = MaskedLinear(hidden[-1], P * D)
        self.direct = MaskedLinear(D, P * D, bias=False) if direct else None
        self.register_buffer("order", torch.arange(D))
        self.register_buffer("mask_id", torch.tensor(-1))
        self.use_mask(0)

    # -- masks -------------------------------------------------------------------------------
    @torch.no_grad()
    def use_mask(self, k: int) -> None:
        """Switch every layer to mask set k (ordering and hidden degrees drawn from seed (seed, k))."""
        if int(self.mask_id) == k:
            return
        D, P = self.num_dims, self.output.num_params
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + int(k))
        order = torch.randperm(D, generator=g) if (self.order_agnostic and k > 0) else torch.arange(D)
        m0 = torch.empty(D, dtype=torch.long)
        m0[order] = torch.arange(1, D + 1)  # degree of input d = its 1-based position in the ordering
        degrees = [m0] + made_degrees(m0, self.hidden, g)
        for layer, d_in, d_out in zip(self.layers, degrees[:-1], degrees[1:]):
            layer.set_mask(degree_mask(d_in, d_out, strict=False))
        out_deg = m0.repeat(P)  # output unit p * D + d predicts parameter p of dimension d
        self.out.set_mask(degree_mask(degrees[-1], out_deg, strict=True))
        if self.direct is not None:
            self.direct.set_mask(degree_mask(m0, out_deg, strict=True))
        self.order.copy_(order)
        self.mask_id.fill_(int(k))

    def _num_ensemble(self, ensemble) -> int:
        K = int(ensemble)
        if not 1 <= K <= self.num_masks:
            raise ConfigError(f"MADE ensemble={K} but the model was trained with num_masks={self.num_masks}; "
                              f"use 1 <= ensemble <= {self.num_masks}")
        return K

    # -- the network -------------------------------------------------------------------------
    def ordering(self) -> torch.Tensor:
        return self.order.clone()

    def conditionals(self, x: torch.Tensor) -> torch.Tensor:
        """Parameters (B, P, *shape) under the current mask set (see :meth:`use_mask`)."""
        B = x.shape[0]
        x = x.reshape(B, -1)
        h = x
        for layer in self.layers:
            h = torch.relu(layer(h))
        out = self.out(h)
        if self.direct is not None:
            out = out + self.direct(x)
        return out.reshape(B, self.output.num_params, *self.shape)

    # -- likelihood and training -------------------------------------------------------------------
    def log_prob(self, x: torch.Tensor, *, ensemble: int = 1) -> torch.Tensor:
        """Exact log p(x) (B,) nats; with ensemble=K the log of the mean probability over masks 0..K-1."""
        K = self._num_ensemble(ensemble)
        x = self._check_x(x)
        lps = []
        for k in range(K):
            self.use_mask(k)
            lps.append(self.log_prob_from_params(self.conditionals(x), x))
        return torch.logsumexp(torch.stack(lps), 0) - math.log(K)

    def loss(self, batch, *, ctx: TrainContext | None = None, **kwargs) -> dict[str, torch.Tensor]:
        """Mean NLL (nats per example) under this minibatch's mask: mask (step mod num_masks) at the
        trainer's step (``ctx``, in training mode), else mask 0."""
        self.check_options(kwargs, (), what="loss")
        x = self._check_x(batch)
        k = 0
        if self.training and self.num_masks > 1 and ctx is not None:
            k = int(ctx.step) % self.num_masks
        self.use_mask(k)
        nll = -self.log_prob_from_params(self.conditionals(x), x).mean()
        return {"loss": nll, "bits_per_dim": nll.detach() / (self.num_dims * math.log(2.0))}

    # -- sampling -----------------------------------------------------------------------------
    @torch.no_grad()
    def sample(self, n: int, *, generator: torch.Generator | None = None, temperature: float = 1.0,
               observed=None, mask=None, ensemble: int = 1) -> torch.Tensor:
        """n samples; with ensemble=K each row first picks one of masks 0..K-1 uniformly (a draw from the ensemble)."""
        K = self._num_ensemble(ensemble)
        temperature, x, known = self._sample_start(n, temperature, observed, mask)
        pick = torch.zeros(int(n), dtype=torch.long)
        if K > 1:
            pick = torch.randint(0, K, (int(n),), generator=generator, device=generator.device if generator else None).cpu()
        for k in range(K):
            rows = (pick == k).nonzero().flatten().to(x.device)
            if len(rows):
                self.use_mask(k)
                x[rows] = self.generate(x[rows], known[rows], temperature, generator)
        return x
