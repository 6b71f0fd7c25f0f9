"""Character-level text: tiny shakespeare (Karpathy's char-rnn corpus, 1,115,394 characters).

* Vocabulary: the sorted unique characters of the *whole* text (65 for tiny shakespeare),
  so every split shares one vocabulary; token id = position in that sorted list.
* Splits: "train" = first 90% of the characters, "valid" = last 10%; "test" is the
  *same* last 10% (the corpus has no separate test text; nanoGPT's split), "full" = all.
* Examples: the split is cut into ``len(ds) = n_chars // block_size`` non-overlapping
  blocks of ``block_size`` tokens. ``get_batch(indices, generator)`` returns x (B, block_size)
  int64; when a generator is given, every block start ``i * block_size`` is shifted by a
  random offset in [0, block_size) drawn from it (wrapping round at the end of the text),
  so training sees every window over the epochs. ``generator=None``,
  :meth:`TextDataset.iter_batches` and :meth:`~genzoo.data.base.ArrayDataset.tensor`
  use the unshifted blocks.
* DataSpec: kind="text", shape=(block_size,), discrete="tokens", vocab_size=65,
  value_range=None; a language model predicts token t+1 from tokens <= t inside a block.
"""
from __future__ import annotations

import functools
import os
from pathlib import Path

import numpy as np
import torch

from ..errors import ConfigError, DataError
from .base import ArrayDataset, DataSpec
from .files import find_file


class TextDataset(ArrayDataset):
    """Token ids of one split cut into blocks, with random window offsets for training.

    Attributes:
        tokens: (L,) int64 ids of the whole split.
        vocab: list of the characters, id -> character.
        data: (len, block_size) int64, the unshifted non-overlapping blocks.
    """

    def __init__(self, tokens: torch.Tensor, vocab: list[str], block_size: int, name: str = "text"):
        block_size = int(block_size)
        n = int(tokens.numel()) // block_size
        if n < 1:
            raise ConfigError(
                f"block_size={block_size} is longer than the text split ({tokens.numel()} tokens); use a smaller block_size"
            )
        self.tokens = tokens
        self.vocab = list(vocab)
        self.block_size = block_size
        self._index = {c: i for i, c in enumerate(self.vocab)}
        spec = DataSpec(name=name, kind="text", shape=(block_size,), value_range=None, discrete="tokens",
                        levels=len(self.vocab), vocab_size=len(self.vocab))
        super().__init__(tokens[: n * block_size].view(n, block_size), None, spec, None)

    @property
    def vocab_size(self) -> int:
        return len(self.vocab)

    def encode(self, text: str) -> torch.Tensor:
        """str -> (len(text),) int64 token ids; DataError naming a character outside the vocabulary."""
        try:
            return torch.tensor([self._index[c] for c in text], dtype=torch.int64)
        except KeyError as e:
            raise DataError(f"character {e.args[0]!r} is not in the vocabulary of {self.spec.name!r} ({len(self.vocab)} characters)") from None

    def decode(self, ids) -> str:
        """(T,) token ids (tensor, array or list) -> str."""
        if isinstance(ids, torch.Tensor):
            ids = ids.reshape(-1).tolist()
        return "".join(self.vocab[int(i)] for i in ids)

    def get_batch(self, indices, generator: torch.Generator | None = None):
        """x (B, block_size) int64 and y None; jittered window starts when a generator is given."""
        idx = torch.as_tensor(indices, dtype=torch.int64).reshape(-1)
        if generator is None:
            return self.data[idx], None
        offsets = torch.randint(0, self.block_size, (idx.numel(),), generator=generator, device=generator.device).to(idx.device)
        span = self.tokens.numel() - self.block_size + 1  # number of valid window starts
        starts = torch.remainder(idx * self.block_size + offsets, span)
        pos = starts[:, None] + torch.arange(self.block_size)[None, :]
        return self.tokens[pos], None

    def iter_batches(self, batch_size: int, seed: int = 0, limit: int | None = None):
        """Sequential unshifted blocks (evaluation); deterministic, ``seed`` unused."""
        n = len(self) if limit is None else min(limit, len(self))
        for start in range(0, n, batch_size):
            yield self.get_batch(torch.arange(start, min(start + batch_size, n)), None)


@functools.lru_cache(maxsize=4)
def _read_corpus(path: str, size: int, mtime: float) -> tuple[torch.Tensor, tuple[str, ...]]:
    text = Path(path).read_text(encoding="utf-8")
    codes = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)
    vocab_codes = np.unique(codes)
    ids = np.searchsorted(vocab_codes, codes).astype(np.int64)
    vocab = tuple(chr(int(c)) for c in vocab_codes)
    t = torch.from_numpy(ids)
    return t, vocab


def load_corpus(name: str = "tinyshakespeare.txt", root: str | os.PathLike | None = None) -> tuple[torch.Tensor, list[str]]:
    """(token ids of the whole text (L,) int64, vocabulary) of a known text file (read once, cached)."""
    path = find_file(name, root)
    st = path.stat()
    ids, vocab = _read_corpus(str(path), st.st_size, st.st_mtime)
    return ids, list(vocab)


def load_shakespeare(split: str = "train", *, root=None, block_size: int = 256) -> TextDataset:
    """Tiny shakespeare, character level (see the module docstring for splits and batches)."""
    ids, vocab = load_corpus("tinyshakespeare.txt", root)
    n = ids.numel()
    cut = int(0.9 * n)
    if split == "train":
        toks = ids[:cut]
    elif split in ("valid", "test"):
        toks = ids[cut:]
    else:  # full
        toks = ids
    return TextDataset(toks.clone(), vocab, block_size, name="shakespeare")
