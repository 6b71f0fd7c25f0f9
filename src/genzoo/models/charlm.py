"""A character-level language model on genzoo's one Transformer, and NBCE decoding.

Papers
------
* Radford et al. 2019 (GPT-2) / Karpathy's nanoGPT ``shakespeare_char``: a decoder-only
  Transformer trained by next-character cross-entropy,

      log p(x_1 .. x_T) = sum_t log p(x_t | x_<t),     bits/char = -log p / (T ln 2).

  Here the block is preceded by a BOS token, so log p is the exact probability of the whole
  block (the first character is predicted too); nanoGPT's validation loss is the same
  per-character cross-entropy (without the first character's term).
* Su 2023, "NBCE: Naive Bayes-based Context Extension" (kexue.fm/archives/9617): to condition
  on more text than fits in the context, split it into contexts S_1 .. S_n and, at each
  decoding step, combine the next-token distributions p(T | S_k) by Naive Bayes,
  log p(T | S_1..S_n) = sum_k log p(T | S_k) - (n - 1) log p(T) + const, generalised to

      log p(T | S_1..S_n) = (1 + beta) log p(T | S_k*) - beta log p(T),
      k* = the context whose prediction has the lowest entropy,  beta = 0.25,

  p(T) being the prediction without any context. As in Su's reference code (bojone/NBCE,
  ``test.py``), the same rule holds for any n >= 1, one context included (the beta-form is a
  generalisation, not the n - 1 coefficient of plain Naive Bayes); beta = 0 is plain decoding.
  Log-probs are clipped at -100 for the entropies, and where log p(T) <= -100 (-inf: a token
  the context-free prediction rules out) the reference keeps log p(T | S_k*) instead of letting
  - beta log p(T) reach +inf.

Every component of the Transformer (position encoding, attention kind, norm) is a model
argument, so `genzoo train charlm model.pos=sinusoidal` switches it from the command line.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ..errors import ConfigError, DataError
from ..nn.transformer import KVCache, TransformerConfig, sample_logits
from ..registry import register
from .base import GenerativeModel
from .data_needs import DataNeeds, Opt


@register("charlm", family="autoregressive",
          paper="Radford et al. 2019 (GPT-2) / nanoGPT shakespeare_char; Su 2023 (NBCE decoding)",
          summary="character-level decoder-only Transformer; every Transformer part a switch; bits/char")
class CharLM(GenerativeModel):
    likelihood = "exact"
    discrete_likelihood = True

    #: the Transformer's settings are one nested section, ``model.transformer: {dim: 128, pos: rope, ...}``
    #: (:class:`~genzoo.nn.transformer.TransformerConfig`; the flat ``model.dim=...`` of earlier configs still works)
    network_specs = {"transformer": TransformerConfig}

    def __init__(self, vocab_size: int = 65, shape=(256,), transformer: TransformerConfig | dict = TransformerConfig(),
                 max_len: int = 0):
        """vocab_size and shape (block_size,) come from the data; transformer: the network's settings
        (:class:`~genzoo.nn.transformer.TransformerConfig`: dim, depth, heads, pos, attention, logn_len, ...);
        max_len: the longest sequence the model may see (0 = the block size for pos="learned", 8192
        otherwise, so that evaluation at longer contexts works for the relative / rotary encodings)."""
        super().__init__()
        try:
            t = TransformerConfig.of(transformer)
        except (TypeError, ValueError) as e:
            raise ConfigError(f"charlm: {e}") from e
        if t.pos in ("rope2d", "rope-tie"):
            raise ConfigError(f"charlm is a 1-D sequence model; use pos=rope ({t.pos} is for image grids / text-image mixes)")
        self.shape = (int(shape[0]),)
        self.vocab_size = int(vocab_size)
        max_len = int(max_len) or (self.shape[0] if t.pos == "learned" else 8192)
        try:
            self.net = t.build(vocab_size=vocab_size + 1, out_dim=vocab_size, causal=True, max_len=max_len)
        except ValueError as e:
            raise ConfigError(str(e)) from e
        self.bos = vocab_size

    #: token sequences with the model's vocabulary (any length: the block is cut from the stream)
    data_name = "charlm"
    data_needs = DataNeeds(("text",), ("tokens",), vocab=Opt("vocab_size"), shape=False)

    def _check_tokens(self, x: torch.Tensor) -> torch.Tensor:
        if x.dtype not in (torch.int64, torch.int32) or x.ndim != 2:
            raise DataError(f"charlm expects (B, T) int64 token ids, got {tuple(x.shape)} {x.dtype}")
        if bool(((x < 0) | (x >= self.vocab_size)).any()):
            raise DataError(f"token ids must be in 0..{self.vocab_size - 1}")
        return x.long()

    def _logits_aux(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self._check_tokens(x)
        inp = torch.cat((torch.full_like(x[:, :1], self.bos), x[:, :-1]), dim=1)
        return self.net(inp, return_aux=True)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """(B, T) ids -> (B, T, V): logits of p(x_t | x_<t) (position 0 conditioned on BOS only)."""
        return self._logits_aux(x)[0]

    def _log_prob_aux(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits, aux = self._logits_aux(x)
        logp = F.log_softmax(logits.float(), dim=-1)
        return logp.gather(-1, x.long()[..., None]).squeeze(-1).sum(-1), aux

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """log p(block) in nats, (B,); bits/char = -log_prob / (T ln 2)."""
        return self._log_prob_aux(x)[0]

    def loss(self, batch, **kwargs) -> dict[str, torch.Tensor]:
        self.check_options(kwargs, (), what="loss")
        lp, aux = self._log_prob_aux(batch)
        nll = -lp / batch.shape[1]
        loss = nll.mean()
        out = {"loss": loss + aux, "bits_per_char": loss.detach() / 0.6931471805599453}
        if aux.requires_grad:
            out["vq_commitment"] = aux.detach()
        return out

    # -- decoding ---------------------------------------------------------------------------------
    def next_logits(self, tokens: torch.Tensor, cache: KVCache) -> torch.Tensor:
        """Feed (B, t) new tokens into ``cache`` (create it with ``self.net.new_cache()`` and feed
        the BOS first); returns the (B, V) logits of the next token."""
        return self.net(tokens, cache)[:, -1]

    @torch.no_grad()
    def sample(self, n: int, *, generator: torch.Generator | None = None, length: int | None = None,
               temperature: float = 1.0, top_k: int = 0, prompt=None, progress: bool = False) -> torch.Tensor:
        """(n, length) token ids, continuing ``prompt`` (a list of ids, or (n, P) ids; default none).

        Options: length (new tokens, default the block size), temperature (default 1), top_k
        (0 = all), prompt, progress. KV-cached: one one-token pass per new character."""
        length = int(self.shape[0] if length is None else length)
        T, k = float(temperature), int(top_k)
        if T <= 0 or length < 1 or k < 0:
            raise ConfigError(f"need temperature > 0, length >= 1, top_k >= 0; got {T}, {length}, {k}")
        dev = self.device
        prompt = torch.zeros(n, 0, dtype=torch.long) if prompt is None else torch.as_tensor(prompt, dtype=torch.long)
        if prompt.ndim == 1:
            prompt = prompt[None].expand(n, -1)
        prompt = self._check_tokens(prompt.to(dev)) if prompt.shape[1] else prompt.to(dev)
        cache = self.net.new_cache()
        logits = self.next_logits(torch.cat((torch.full((n, 1), self.bos, dtype=torch.long, device=dev), prompt), 1), cache)
        from tqdm.auto import tqdm

        out = []
        for _ in tqdm(range(length), desc="tokens", disable=not progress, leave=False):
            tok = sample_logits(logits, T, k, generator)
            out.append(tok)
            if len(out) < length:
                logits = self.next_logits(tok[:, None], cache)
        return torch.stack(out, dim=1)


def nbce_combine(logp: torch.Tensor, beta: float = 0.25) -> torch.Tensor:
    """One NBCE step (Su 2023; bojone/NBCE ``test.py``): logp (n + 1, V) next-token log-probs,
    row 0 without context, rows 1..n under the contexts -> the (V,) combined logits
    (1 + beta) logp[k*] - beta logp[0], k* = the row 1..n of lowest entropy, for any n >= 1.
    As the reference: entropies use log-probs clipped to [-100, 0] (so -inf gives 0, not NaN),
    and where logp[0] <= -100 the combined logit is logp[k*] itself."""
    ctx = logp[1:]
    entropy = -(ctx.exp() * ctx.clamp(-100.0, 0.0)).sum(-1)
    best = 1 + int(entropy.argmin())
    merged = (1 + beta) * logp[best] - beta * logp[0]
    return torch.where(logp[0] > -100.0, merged, logp[best])


@torch.no_grad()
def nbce_generate(model, contexts: list, length: int, *, beta: float = 0.25, temperature: float = 1.0, top_k: int = 0,
                  generator: torch.Generator | None = None) -> torch.Tensor:
    """NBCE decoding (Su 2023) for any genzoo autoregressive sequence model with ``net``
    (a genzoo Transformer), ``bos`` and ``next_logits`` (e.g. :class:`CharLM`).

    contexts: a list of 1-D token-id tensors (each fits the model's context); returns the
    (length,) generated ids. Each step: next-token log-probs under every context and under no
    context; k* = the context of lowest entropy; logits = (1 + beta) log p(.|S_k*) - beta log p(.)
    for any number of contexts (see the module docstring and :func:`nbce_combine`)."""
    if not contexts:
        raise ConfigError("nbce_generate needs at least one context")
    dev = model.device
    bos = torch.full((1, 1), model.bos, dtype=torch.long, device=dev)
    caches = [model.net.new_cache() for _ in range(len(contexts) + 1)]  # [no context, S_1, ..., S_n]
    seqs = [bos] + [torch.cat((bos, torch.as_tensor(c, dtype=torch.long, device=dev)[None]), 1) for c in contexts]
    logits = [model.next_logits(s, c) for s, c in zip(seqs, caches)]
    out = []
    for _ in range(length):
        logp = torch.stack([F.log_softmax(lg.float(), -1)[0] for lg in logits])  # (n + 1, V)
        combined = nbce_combine(logp, beta)
        tok = sample_logits(combined[None], temperature, top_k, generator)
        out.append(int(tok))
        if len(out) < length:
            logits = [model.next_logits(tok[:, None], c) for c in caches]
    return torch.tensor(out, dtype=torch.long)
