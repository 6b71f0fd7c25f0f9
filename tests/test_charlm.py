"""The character language model (models/charlm.py) on the one Transformer, and NBCE decoding."""
from __future__ import annotations

import itertools
import json

import pytest
import torch
import torch.nn.functional as F

import genzoo
from genzoo.cli import main
from genzoo.errors import ConfigError, DataError
from genzoo.models import charlm
from genzoo.models.charlm import nbce_generate


def gen(seed):
    return torch.Generator().manual_seed(seed)


def tiny(vocab=5, T=12, **kw):
    torch.manual_seed(0)
    m = genzoo.build("charlm", vocab_size=vocab, shape=(T,), dim=16, depth=2, heads=2, **kw)
    with torch.no_grad():
        for p in m.parameters():
            p.add_(torch.randn(p.shape, generator=gen(1)) * 0.3)
    return m.eval()


@pytest.mark.parametrize("pos", ["rope", "learned", "sinusoidal", "none"])
def test_changing_char_i_never_changes_predictions_up_to_i(pos):
    m = tiny(pos=pos)
    x = torch.randint(0, 5, (1, 12), generator=gen(2))
    base = m.logits(x)
    for i in range(12):
        y = x.clone()
        y[0, i] = (y[0, i] + 1) % 5
        diff = (m.logits(y) - base).abs().amax(-1)[0]
        assert diff[: i + 1].max() == 0
        if i < 11:
            assert diff[i + 1:].max() > 0


def test_probabilities_of_all_sequences_sum_to_one():
    m = tiny(vocab=3, T=4)
    xs = torch.tensor(list(itertools.product(range(3), repeat=4)))
    assert torch.logsumexp(m.log_prob(xs), 0).item() == pytest.approx(0.0, abs=1e-5)


def test_sampling_reproducible_prompt_topk_and_greedy():
    m = tiny()
    a = m.sample(3, generator=gen(3), length=10)
    assert a.shape == (3, 10) and a.dtype == torch.long
    assert torch.equal(a, m.sample(3, generator=gen(3), length=10))
    g = m.sample(2, generator=gen(4), length=6, top_k=1, prompt=[1, 2])  # greedy
    seq = torch.tensor([[1, 2]] * 2)
    for t in range(6):  # greedy by full recomputation (no cache)
        nxt = m.logits(torch.cat((seq, torch.zeros(2, 1, dtype=torch.long)), 1))[:, -1].argmax(-1)
        seq = torch.cat((seq, nxt[:, None]), 1)
    assert torch.equal(g, seq[:, 2:])
    with pytest.raises(ConfigError, match="temperature"):
        m.sample(2, temperature=0)
    with pytest.raises(DataError, match="token ids"):
        m.log_prob(torch.full((1, 12), 7))


def test_nbce_with_beta_0_is_plain_decoding():
    m = tiny()
    ctx = torch.tensor([0, 3, 1, 4])
    plain = m.sample(1, generator=gen(5), length=8, prompt=ctx)[0]
    assert torch.equal(nbce_generate(m, [ctx], 8, beta=0.0, generator=gen(5)), plain)


class _FixedLM:
    """A stand-in model whose next-token logits are fixed: ``uncond`` without context, ``ctx[k]``
    after context k (told apart by the length of the first input)."""

    bos, device = 0, torch.device("cpu")

    def __init__(self, uncond, ctxs, lengths):
        self.uncond, self.ctxs, self.lengths = torch.tensor(uncond), [torch.tensor(c) for c in ctxs], lengths

    class net:  # noqa: N801 - mimics model.net.new_cache()
        @staticmethod
        def new_cache():
            return {}

    def next_logits(self, seq, cache):
        if "which" not in cache:
            n = seq.shape[1] - 1
            cache["which"] = -1 if n == 0 else self.lengths.index(n)
        k = cache["which"]
        return (self.uncond if k < 0 else self.ctxs[k])[None].clone()


def _nbce_logits(monkeypatch, m, contexts, beta=0.25):
    seen = []
    monkeypatch.setattr(charlm, "sample_logits", lambda lg, *a, **k: (seen.append(lg.clone()), torch.zeros(1, dtype=torch.long))[1])
    nbce_generate(m, contexts, 1, beta=beta)
    return seen[0][0]


def test_nbce_with_one_context_applies_the_correction(monkeypatch):
    # Su's reference (bojone/NBCE): (1 + beta) log p(T|S_k*) - beta log p(T) for any n, n = 1 too
    uncond, ctx = [0.0, 1.0, 2.0], [2.0, 0.0, 1.0]
    m = _FixedLM(uncond, [ctx], [2])
    got = _nbce_logits(monkeypatch, m, [torch.tensor([1, 2])], beta=0.25)
    lu, lc = F.log_softmax(torch.tensor(uncond), -1), F.log_softmax(torch.tensor(ctx), -1)
    # by hand: log-softmax of (0, 1, 2) = (0, 1, 2) - 2.40761, of (2, 0, 1) = (2, 0, 1) - 2.40761
    assert torch.allclose(lu, torch.tensor([-2.40761, -1.40761, -0.40761]), atol=1e-5)
    want = torch.tensor([1.25 * (2 - 2.40761) - 0.25 * (0 - 2.40761), 1.25 * (0 - 2.40761) - 0.25 * (1 - 2.40761),
                         1.25 * (1 - 2.40761) - 0.25 * (2 - 2.40761)])
    assert torch.allclose(got, want, atol=1e-4)
    assert torch.allclose(got, 1.25 * lc - 0.25 * lu, atol=1e-6)


def test_nbce_guards_against_minus_infinite_log_probs(monkeypatch):
    inf = float("inf")
    uncond = [-inf, 1.0, 2.0, 0.5]  # a token the context-free model rules out
    ctxs = [[1.0, -inf, 0.0, 2.0], [0.0, 0.0, 0.0, 0.0]]  # a -inf in a context's prediction too
    m = _FixedLM(uncond, ctxs, [1, 3])
    got = _nbce_logits(monkeypatch, m, [torch.tensor([1]), torch.tensor([1, 2, 3])], beta=0.25)
    assert not torch.isnan(got).any()
    lu, l0 = F.log_softmax(torch.tensor(uncond), -1), F.log_softmax(torch.tensor(ctxs[0]), -1)
    # context 0 has the lower entropy (the uniform context 1 has the highest possible)
    assert got[0] == l0[0]  # where log p(T) = -inf: the context's own log-prob, as the reference
    assert got[1] == -inf  # a token the chosen context rules out stays ruled out
    assert torch.allclose(got[2:], 1.25 * l0[2:] - 0.25 * lu[2:])
    tok = nbce_generate(m, [torch.tensor([1]), torch.tensor([1, 2, 3])], 4, generator=gen(0))
    assert tok.shape == (4,) and int(tok.max()) < 4


@torch.no_grad()
def test_nbce_combines_the_lowest_entropy_context_with_the_context_free_prediction():
    m = tiny()
    ctxs = [torch.tensor([0, 1, 2]), torch.tensor([4, 4]), torch.tensor([3])]
    bos = torch.tensor([[m.bos]])

    def logp(c):
        return F.log_softmax(m.net(torch.cat((bos, c[None]), 1) if len(c) else bos)[0, -1], -1)

    lps = [logp(c) for c in ctxs]
    best = min(range(3), key=lambda k: float(-(lps[k].exp() * lps[k]).sum()))
    want = int(((1 + 0.25) * lps[best] - 0.25 * logp(torch.tensor([], dtype=torch.long))).argmax())
    assert int(nbce_generate(m, ctxs, 1, top_k=1)[0]) == want


def test_build_and_data_errors():
    with pytest.raises(ConfigError, match="valid: none, learned"):
        genzoo.build("charlm", pos="alibi")
    with pytest.raises(ConfigError, match="rope2d"):
        genzoo.build("charlm", pos="rope2d")
    from genzoo.data.base import DataSpec

    with pytest.raises(ConfigError, match="shakespeare"):
        tiny().check_data(DataSpec("mnist", "image", (1, 28, 28), value_range=(-1.0, 1.0)))
    m = tiny(pos="learned")
    with pytest.raises(ValueError, match="max_len"):
        m.log_prob(torch.zeros(1, 13, dtype=torch.long))  # a learned table has no position 12
    assert tiny().log_prob(torch.zeros(1, 40, dtype=torch.long)).shape == (1,)  # rope: longer than training


def test_cli_train_sample_eval(tmp_path):
    d = tmp_path / "run"
    assert main(["train", "charlm", "data.block_size=32", "model.dim=32", "model.depth=1", "train.steps=30",
                 "train.batch_size=8", "train.lr=3e-3", "train.valid_every=0", "train.ckpt_every=0", "--run-dir", str(d), "--no-progress"]) == 0
    s = json.loads((d / "train_summary.json").read_text())
    assert s["steps"] == 30 and s["last_losses"]["loss"] < 4.0  # below uniform over 65 chars (ln 65 = 4.17 nats)
    o = tmp_path / "s.txt"
    assert main(["sample", str(d), "--n", "2", "--out", str(o), "length=40"]) == 0
    assert len(o.read_text().split("\n\n-----\n\n")[0]) == 40
    out = tmp_path / "m.json"
    assert main(["eval", str(d), "--metrics", "nll", "--limit", "8", "--no-progress", "--out", str(out)]) == 0
    r = json.loads(out.read_text())["nll"]
    assert r["likelihood"] == "exact" and r["bits_per_dim"] < 6.0  # below uniform (log2 65 = 6.02 bits/char)
