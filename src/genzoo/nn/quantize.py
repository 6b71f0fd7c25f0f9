"""Vector quantisation layers: VQ (straight-through or rotation trick; gradient or EMA codebook;
dead-code restarts; cosine codes) and FSQ.

Papers and the equations implemented
------------------------------------
* van den Oord, Vinyals & Kavukcuoglu 2017, "Neural Discrete Representation Learning" (VQ-VAE):
  z_q = e_k with k = argmin_j ||z - e_j||^2, and the straight-through estimator
  z_st = z + sg(z_q - z) (forward value z_q, the gradient of the identity to z). Loss (eq. 3):

      L = log p(x | z_q) + ||sg[z] - e||^2 + beta ||z - sg[e]||^2,        beta = 0.25,

  the middle term (the codebook loss) trains the codes when ``update="grad"``. With
  ``update="ema"`` (appendix A.1) the codebook follows exponential moving averages instead:
  N_j <- gamma N_j + (1 - gamma) n_j, m_j <- gamma m_j + (1 - gamma) sum_{i: k_i = j} z_i,
  e_j = m_j / N_j, gamma = 0.99, with Laplace-smoothed counts
  N_j <- (N_j + eps) / (sum N + K eps) * sum N; only the commitment term is then a loss.
* Fifty et al. 2024, "Restructuring Vector Quantization with the Rotation Trick"
  (``gradient="rotation"``): the decoder sees

      q~ = sg(||q|| / ||e|| * R) e,       R = I - 2 r r^T + 2 q^ e^T ... (their eq. 4 / section 4.2)

  with e the encoder output, q its code, e^ = e/||e||, q^ = q/||q||, r = (e^ + q^)/||e^ + q^||:
  R is the rotation that maps e^ onto q^ (a Householder reflection through r composed with one
  through q^), so the forward value is q, while the gradient reaching e is
  ||q||/||e|| R^T dL/dq: rotated and scaled instead of copied. The codebook is trained by the
  codebook loss or by EMA exactly as for straight-through VQ.
* Dead-code restarts (Dhariwal et al. 2020, Jukebox, section 3.2 / appendix; Zeghidour et al.
  2021): each code keeps an exponential moving average of how many encoder vectors it is
  assigned per batch; a code whose average falls below ``restart_threshold`` is replaced by a
  random encoder output of the current batch (every training step, until it is used again).
* Cosine codes (``cosine=True``; Yu et al. 2022, "Vector-quantized Image Modeling with Improved
  VQGAN", section 3.2): z and the codes are l2-normalised before the lookup and in the output.
* Mentzer et al. 2023, "Finite Scalar Quantization: VQ-VAE Made Simple" (:class:`FSQ`): each of
  the d = len(levels) dimensions is bounded and rounded to L_i levels,

      z^ = round(f(z)) / floor(L/2),   f(z) = tanh(z + s) * (L - 1)(1 - eps)/2 - o,

  o = 0 for odd L and 1/2 for even L, s = atanh(o / ((L - 1)(1 - eps)/2)) so that f(0) = 0
  (the paper's listing writes tan; atanh is the shift that makes f(0) = 0, as
  vector-quantize-pytorch uses), eps = 1e-3, with the straight-through gradient for round.
  The implicit codebook is the product grid, of size prod L_i; index = sum_i k_i prod_{j<i} L_j
  with k_i = z^_i floor(L_i/2) + floor(L_i/2). :data:`FSQ_LEVELS` holds the paper's recommended
  level sets (table 1) for 2^8 ... 2^16 codes.

Shapes: :class:`VectorQuantizer` takes (..., G, d) with G independent groups (attention heads),
each with its own codebook of K codes: the codebook is (G, K, d). G = 1 for a single codebook.
:class:`FSQ` takes (..., d).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

#: Mentzer et al. 2023, table 1: recommended FSQ levels for a target codebook size 2^k.
FSQ_LEVELS = {
    256: (8, 6, 5),
    1024: (8, 5, 5, 5),
    4096: (7, 5, 5, 5, 5),
    16384: (8, 8, 8, 6, 5),
    65536: (8, 8, 8, 5, 5, 5),
}

UPDATES = ("grad", "ema")
GRADIENTS = ("ste", "rotation")


def rotate_to(e: torch.Tensor, q: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """The rotation trick (Fifty et al. 2024, section 4.2): returns ||q||/||e|| R e with R the
    rotation taking e/||e|| to q/||q|| and both R and the scale treated as constants, so the
    value is q (to rounding) and d out / d e = ||q||/||e|| R. e, q: (..., d)."""
    e_norm = e.norm(dim=-1, keepdim=True).clamp_min(eps)
    q_norm = q.norm(dim=-1, keepdim=True).clamp_min(eps)
    e_hat, q_hat = (e / e_norm).detach(), (q / q_norm).detach()
    r = F.normalize(e_hat + q_hat, dim=-1, eps=eps)
    # R e = e - 2 r (r . e) + 2 q^ (e^ . e), with r, q^, e^ constants
    rot = e - 2 * r * (r * e).sum(-1, keepdim=True) + 2 * q_hat * (e_hat * e).sum(-1, keepdim=True)
    return rot * (q_norm / e_norm).detach()


def rotation_matrix(e: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """The explicit matrix R = I - 2 r r^T + 2 q^ e^T for single vectors e, q (d,) (for tests)."""
    e_hat, q_hat = e / e.norm(), q / q.norm()
    r = (e_hat + q_hat) / (e_hat + q_hat).norm()
    eye = torch.eye(e.shape[0], dtype=e.dtype)
    return eye - 2 * torch.outer(r, r) + 2 * torch.outer(q_hat, e_hat)


def codebook_stats(idx: torch.Tensor, K: int) -> tuple[float, float]:
    """(usage, perplexity) of the code indices ``idx`` (any shape) over a codebook of K codes:
    usage = fraction of the K codes used at least once, perplexity = exp(entropy of the code
    histogram) (K at best, 1 when one code takes everything)."""
    counts = torch.bincount(idx.reshape(-1).long(), minlength=K).double()
    p = counts / counts.sum().clamp_min(1)
    ent = -(p[p > 0] * p[p > 0].log()).sum()
    return float((counts > 0).double().mean()), float(ent.exp())


class VectorQuantizer(nn.Module):
    """VQ with a straight-through or rotation-trick gradient, a gradient or EMA codebook, dead-code
    restarts and optional cosine codes.

    Args:
        dim: code dimension d.
        codebook_size: K codes per group.
        groups: G independent codebooks (inputs (..., G, d)).
        beta: commitment weight (0.25).
        update: "ema" (default; appendix A.1, the codebook is a buffer) or "grad" (the codebook is a
            parameter trained by the codebook loss ||sg[z] - e||^2).
        gradient: "ste" (straight-through, default) or "rotation" (the rotation trick).
        decay: EMA decay gamma (0.99) of the codebook (``update="ema"``) and of the usage counts.
        eps: Laplace smoothing of the counts.
        restart_threshold: 0 = off; else a code assigned fewer than this many vectors per batch (EMA
            of the counts) is restarted from a random encoder output of the batch.
        cosine: l2-normalise inputs and codes.

    ``forward`` returns (z_q with the chosen gradient, indices (..., G), auxiliary loss) where the
    auxiliary loss is beta * commitment (+ the codebook loss for ``update="grad"``), to be added to
    the model's loss. The codebook is initialised from the first training batch (K of its vectors).
    """

    def __init__(self, dim: int, codebook_size: int, groups: int = 1, beta: float = 0.25, decay: float = 0.99,
                 eps: float = 1e-5, *, update: str = "ema", gradient: str = "ste", restart_threshold: float = 0.0,
                 cosine: bool = False):
        super().__init__()
        if update not in UPDATES:
            raise ValueError(f"unknown codebook update {update!r}; valid: {', '.join(UPDATES)}")
        if gradient not in GRADIENTS:
            raise ValueError(f"unknown VQ gradient {gradient!r}; valid: {', '.join(GRADIENTS)}")
        if int(codebook_size) < 2 or int(dim) < 1:
            raise ValueError(f"VQ needs codebook_size >= 2 and dim >= 1, got {codebook_size} and {dim}")
        self.dim, self.K, self.G, self.beta, self.decay, self.eps = int(dim), int(codebook_size), int(groups), beta, decay, eps
        self.update, self.gradient, self.cosine = update, gradient, bool(cosine)
        self.restart_threshold = float(restart_threshold)
        embed = torch.randn(groups, codebook_size, dim)
        if update == "grad":
            self.codebook = nn.Parameter(embed)
        else:
            self.register_buffer("codebook", embed)
        self.register_buffer("ema_count", torch.ones(groups, codebook_size))
        self.register_buffer("ema_sum", embed.clone())
        self.register_buffer("initialized", torch.zeros((), dtype=torch.bool))
        self.register_buffer("restarts", torch.zeros((), dtype=torch.long))

    @property
    def codebook_size(self) -> int:
        return self.K

    def _norm(self, v: torch.Tensor) -> torch.Tensor:
        return F.normalize(v, dim=-1) if self.cosine else v

    def codes(self, z: torch.Tensor) -> torch.Tensor:
        """(..., G, d) -> (..., G) int64 indices of the nearest codes."""
        flat = self._norm(z.reshape(-1, self.G, self.dim).transpose(0, 1).float())  # (G, N, d)
        cb = self._norm(self.codebook.detach().float())
        d2 = flat.pow(2).sum(-1, keepdim=True) - 2 * flat @ cb.transpose(1, 2) + cb.pow(2).sum(-1)[:, None, :]
        return d2.argmin(-1).transpose(0, 1).reshape(z.shape[:-1])

    def lookup(self, idx: torch.Tensor) -> torch.Tensor:
        """(..., G) indices -> (..., G) x d code vectors (normalised when cosine)."""
        g = torch.arange(self.G, device=idx.device).expand(idx.shape)
        return self._norm(self.codebook[g, idx])

    def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """z (..., G, d) -> (z_q, indices (..., G), auxiliary loss (scalar)). In training mode with
        gradients on, the EMA codebook / usage counts move one step and dead codes are restarted."""
        if self.training and not bool(self.initialized):
            self._init_from(z.detach())
        idx = self.codes(z)
        zn = self._norm(z)
        zq = self.lookup(idx).to(z.dtype)
        aux = self.beta * F.mse_loss(zn, zq.detach())
        if self.update == "grad":
            aux = aux + F.mse_loss(zq, zn.detach())
        if self.training and torch.is_grad_enabled():
            self._ema_update(zn.detach(), idx)
        zq = zq.detach()
        if self.gradient == "rotation":
            rot = rotate_to(zn, zq)
            out = zq + (rot - rot.detach())  # forward value exactly z_q, gradient of the rotation
        else:
            out = zn + (zq - zn).detach()
        return out, idx, aux

    @torch.no_grad()
    def _init_from(self, z: torch.Tensor) -> None:
        """Data-dependent initialisation: the codebook starts as K vectors of the first training
        batch (drawn with replacement when the batch has fewer than K), so codes live at the
        scale of the inputs instead of N(0, 1); the usage counts start at the batch's mean count."""
        flat = self._norm(z.reshape(-1, self.G, self.dim).float())
        pick = torch.randint(0, flat.shape[0], (self.K,), device=z.device) if flat.shape[0] < self.K else \
            torch.randperm(flat.shape[0], device=z.device)[: self.K]
        self.codebook.data.copy_(flat[pick].transpose(0, 1))
        self.ema_count.fill_(max(1.0, flat.shape[0] / self.K))
        self.ema_sum.copy_(self.codebook.detach() * self.ema_count[..., None])
        self.initialized.fill_(True)

    @torch.no_grad()
    def _ema_update(self, z: torch.Tensor, idx: torch.Tensor) -> None:
        flat = z.reshape(-1, self.G, self.dim).transpose(0, 1).float()  # (G, N, d)
        onehot = F.one_hot(idx.reshape(-1, self.G).transpose(0, 1), self.K).float()  # (G, N, K)
        count = onehot.sum(1)
        self.ema_count.mul_(self.decay).add_(count, alpha=1 - self.decay)
        if self.update == "ema":
            total = onehot.transpose(1, 2) @ flat  # (G, K, d)
            self.ema_sum.mul_(self.decay).add_(total, alpha=1 - self.decay)
            n = self.ema_count.sum(-1, keepdim=True)
            smoothed = (self.ema_count + self.eps) / (n + self.K * self.eps) * n
            self.codebook.copy_(self._norm(self.ema_sum / smoothed[..., None]))
        if self.restart_threshold > 0:
            self._restart(flat)

    @torch.no_grad()
    def _restart(self, flat: torch.Tensor) -> None:
        """Codes whose usage EMA is below the threshold take random vectors of the batch (G, N, d)."""
        dead = self.ema_count < self.restart_threshold  # (G, K)
        n_dead = int(dead.sum())
        if n_dead == 0:
            return
        N = flat.shape[1]
        for g in range(self.G):
            rows = dead[g].nonzero().squeeze(-1)
            if rows.numel() == 0:
                continue
            pick = torch.randint(0, N, (rows.numel(),), device=flat.device)
            new = flat[g, pick]
            self.codebook.data[g, rows] = new.to(self.codebook.dtype)
            self.ema_sum[g, rows] = new * self.ema_count[g, rows, None]
        self.restarts.add_(n_dead)


class FSQ(nn.Module):
    """Finite scalar quantisation (Mentzer et al. 2023) with levels L_1 .. L_d.

    ``forward(z (..., d))`` returns (z^ (..., d) in [-1, 1] with the straight-through gradient of
    round, indices (...) into the implicit codebook of prod(L_i) codes, a zero auxiliary loss).
    """

    def __init__(self, levels=(8, 5, 5, 5), eps: float = 1e-3):
        super().__init__()
        levels = tuple(int(v) for v in levels)
        if not levels or any(v < 2 for v in levels):
            raise ValueError(f"FSQ levels must be integers >= 2, got {levels}")
        self.levels = levels
        self.dim = len(levels)
        self.eps = float(eps)
        self.register_buffer("_levels", torch.tensor(levels, dtype=torch.float64), persistent=False)
        basis = [1]
        for v in levels[:-1]:
            basis.append(basis[-1] * v)
        self.register_buffer("_basis", torch.tensor(basis, dtype=torch.long), persistent=False)

    @property
    def codebook_size(self) -> int:
        return math.prod(self.levels)

    def bound(self, z: torch.Tensor) -> torch.Tensor:
        """f(z) = tanh(z + s) * half_l - offset: values in (-floor(L/2) - 1/2, floor(L/2) + 1/2) minus the offset."""
        L = self._levels.to(z.dtype)
        half_l = (L - 1) * (1 - self.eps) / 2
        offset = torch.where(self._levels % 2 == 1, 0.0, 0.5).to(z.dtype)
        shift = torch.atanh(offset / half_l)
        return torch.tanh(z + shift) * half_l - offset

    def quantize(self, z: torch.Tensor) -> torch.Tensor:
        """z (..., d) -> z^ in [-1, 1] (..., d) with the straight-through gradient."""
        b = self.bound(z)
        half_width = (self._levels // 2).to(z.dtype)
        return (b + (b.round() - b).detach()) / half_width

    def codes_to_indices(self, zhat: torch.Tensor) -> torch.Tensor:
        half_width = (self._levels // 2).to(zhat.dtype)
        digits = (zhat * half_width + half_width).round().long()
        return (digits * self._basis).sum(-1)

    def indices_to_codes(self, idx: torch.Tensor) -> torch.Tensor:
        digits = (idx.long()[..., None] // self._basis) % self._levels.long()
        half_width = (self._levels // 2)
        return ((digits.double() - half_width) / half_width).float()

    def codes(self, z: torch.Tensor) -> torch.Tensor:
        return self.codes_to_indices(self.quantize(z.detach()))

    def lookup(self, idx: torch.Tensor) -> torch.Tensor:
        return self.indices_to_codes(idx)

    def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        zq = self.quantize(z)
        return zq, self.codes_to_indices(zq.detach()), z.new_zeros(())
