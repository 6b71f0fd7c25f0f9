"""FVSBN: the fully visible sigmoid belief network, a chain of logistic regressions.

Papers and the equations implemented
------------------------------------
* Frey 1998, "Graphical Models for Machine Learning and Digital Communication" (MIT
  Press), and Neal 1992, "Connectionist learning of belief networks": every pixel is a
  logistic regression on the pixels before it,
      p(x_d = 1 | x_<d) = sigmoid(b_d + sum_{i<d} W_{d,i} x_i),                (1)
      log p(x) = sum_d [x_d l_d - softplus(l_d)],   l_d = b_d + sum_{i<d} W_{d,i} x_i.
  W is strictly lower triangular: D(D-1)/2 weights plus D biases.
* The baseline of Larochelle & Murray 2011 (NADE paper, Table 2): FVSBN reaches 97.45 nats
  on the static binarised MNIST test set.
Grey levels (``output="categorical"`` / ``"logistic"``) make it a chain of multinomial
(or discretised logistic) regressions: P parameters per pixel, each an affine function of
the earlier pixel values, l_{p,d} = b_{p,d} + sum_{i<d} W_{p,d,i} x_i.

The ordering is the raster order of x.reshape(B, D) (row by row; channels first for C > 1).
Implementation: one :class:`~genzoo.nn.masked.MaskedLinear` D -> P*D whose mask is the
strictly lower-triangular degree mask 1[d > i].
"""
from __future__ import annotations

import torch

from ...nn.masked import MaskedLinear, degree_mask
from ...registry import register
from .base import AutoregressiveModel


@register("fvsbn", family="autoregressive", paper="Frey 1998; Neal 1992 (baseline of Larochelle & Murray 2011)",
          summary="Fully visible sigmoid belief net: a logistic regression per pixel on the pixels before it")
class FVSBN(AutoregressiveModel):
    """Fully visible sigmoid belief network, p(x_d | x_<d) = sigmoid(b_d + W_{d,<d} x_<d).

    Args:
        shape: per-example shape, e.g. (1, 28, 28).
        output: "bernoulli" (binary data) | "categorical" (softmax over ``levels``) |
            "logistic" (discretised logistic mixture of ``nr_mix``).
        levels, value_range: the grey-level grid of "categorical".
        nr_mix: mixture components of "logistic".
    """

    def __init__(self, shape: tuple = (1, 28, 28), output: str = "bernoulli", levels: int = 256,
                 value_range: tuple = (-1.0, 1.0), nr_mix: int = 5):
        super().__init__()
        self._init_output(shape, output, levels, value_range, nr_mix)
        D, P = self.num_dims, self.output.num_params
        self.linear = MaskedLinear(D, P * D)
        degrees = torch.arange(1, D + 1)
        self.linear.set_mask(degree_mask(degrees, degrees.repeat(P), strict=True))

    def ordering(self) -> torch.Tensor:
        return torch.arange(self.num_dims)

    def conditionals(self, x: torch.Tensor) -> torch.Tensor:
        B = x.shape[0]
        return self.linear(x.reshape(B, -1)).reshape(B, self.output.num_params, *self.shape)
