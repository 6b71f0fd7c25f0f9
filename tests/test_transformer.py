"""The one Transformer (nn/transformer.py), RoPE (nn/rope.py) and the image transformer built on them."""
from __future__ import annotations

import itertools
import json
import math

import pytest
import torch

import genzoo
from genzoo.cli import main
from genzoo.data.base import DataSpec
from genzoo.errors import ConfigError, DataError
from genzoo.nn.rope import RoPE, grid_positions, rope_tie_positions
from genzoo.nn.attention import ATTENTIONS, vq_attention_reference
from genzoo.nn.positions import GeneralRoPE, hierarchical_extend, rope_generator, t5_bucket
from genzoo.nn.transformer import POSITIONS, Transformer, sinusoidal_table


def gen(seed):
    return torch.Generator().manual_seed(seed)


# ------------------------------------------------------------------ RoPE
@pytest.mark.parametrize("pairing", ["interleaved", "half"])
def test_rope_scores_depend_only_on_the_offset(pairing):
    rope = RoPE(16, pairing=pairing)
    q, k = torch.randn(16, generator=gen(0), dtype=torch.float64), torch.randn(16, generator=gen(1), dtype=torch.float64)
    rope = rope.double()

    def score(m, n):
        return float(rope(q[None], torch.tensor([m])) @ rope(k[None], torch.tensor([n]))[0])

    for m, n, shift in [(0, 3, 7), (5, 2, 11), (10, 10, 40)]:
        assert score(m, n) == pytest.approx(score(m + shift, n + shift), abs=1e-9)
    assert score(0, 0) == pytest.approx(float(q @ k), abs=1e-9)  # R_0 = identity
    assert abs(score(0, 5) - score(0, 6)) > 1e-6  # and it does depend on the offset


def test_rope_is_a_rotation_with_the_roformer_pairs():
    rope = RoPE(4, base=100.0).double()
    x = torch.tensor([[1.0, 2.0, 3.0, 4.0]], dtype=torch.float64)
    y = rope(x, torch.tensor([2]))
    th = torch.tensor([1.0, 100.0 ** -0.5], dtype=torch.float64) * 2  # theta_k n, k = 0, 1
    want = torch.tensor([1 * th[0].cos() - 2 * th[0].sin(), 1 * th[0].sin() + 2 * th[0].cos(),
                         3 * th[1].cos() - 4 * th[1].sin(), 3 * th[1].sin() + 4 * th[1].cos()], dtype=torch.float64)
    assert torch.allclose(y[0], want)
    half = RoPE(4, base=100.0, pairing="half").double()(x[:, [0, 2, 1, 3]], torch.tensor([2]))
    assert torch.allclose(half[0, [0, 2, 1, 3]], want)  # the same rotation on permuted dimensions
    assert torch.allclose(y.norm(), x.norm())
    partial = RoPE(4).double()(torch.arange(6.0, dtype=torch.float64)[None], torch.tensor([3]))
    assert torch.equal(partial[0, 4:], torch.tensor([4.0, 5.0], dtype=torch.float64))  # beyond dim: untouched


def test_rope2d_depends_only_on_the_2d_offset_and_ties_to_1d_on_the_diagonal():
    rope2, rope1 = RoPE(16, axes=2).double(), RoPE(16).double()
    q, k = torch.randn(16, generator=gen(2), dtype=torch.float64), torch.randn(16, generator=gen(3), dtype=torch.float64)

    def score(pm, pn):
        return float(rope2(q[None], torch.tensor([pm])) @ rope2(k[None], torch.tensor([pn]))[0])

    assert score((1, 2), (4, 0)) == pytest.approx(score((6, 9), (9, 7)), abs=1e-9)
    assert abs(score((0, 0), (1, 0)) - score((0, 0), (0, 1))) > 1e-6  # rows and columns differ
    # RoPE-Tie: a text token at n placed at (n, n) is rotated exactly as 1-D RoPE at n
    for n in (0, 3, 17):
        assert torch.allclose(rope2(q[None], torch.tensor([[n, n]])), rope1(q[None], torch.tensor([n])))
    assert grid_positions(2, 3).tolist() == [[0, 0], [0, 1], [0, 2], [1, 0], [1, 1], [1, 2]]
    with pytest.raises(ValueError, match="axes"):
        rope2(q[None], torch.tensor([3]))


def test_half_pairing_is_gpt_neox_rotate_half_and_the_docstrings_say_so():
    """GPT-NeoX (and Hugging Face LLaMA) rotate x * cos + rotate_half(x) * sin with rotate_half(x) = [-x2, x1]
    over the two halves of the head and cos, sin of [n theta, n theta]: that is the "half" pairing, while
    GPT-J's rotate_every_two is the interleaved one."""
    import genzoo.nn.positions as positions_module
    import genzoo.nn.rope as rope_module

    x = torch.randn(2, 7, 16, generator=gen(46), dtype=torch.float64)
    n = torch.arange(7, dtype=torch.float64)
    ang = n[:, None] * 10000.0 ** (-torch.arange(0, 16, 2, dtype=torch.float64) / 16)
    cos, sin = torch.cat((ang, ang), -1).cos(), torch.cat((ang, ang), -1).sin()
    x1, x2 = x[..., :8], x[..., 8:]
    neox = x * cos + torch.cat((-x2, x1), -1) * sin
    torch.testing.assert_close(RoPE(16, pairing="half").double()(x, torch.arange(7)), neox)
    cos2, sin2 = ang.repeat_interleave(2, -1).cos(), ang.repeat_interleave(2, -1).sin()
    every_two = torch.stack((-x[..., 1::2], x[..., 0::2]), -1).flatten(-2)  # GPT-J's rotate_every_two
    torch.testing.assert_close(RoPE(16).double()(x, torch.arange(7)), x * cos2 + every_two * sin2)
    lines = rope_module.__doc__.splitlines()
    half = next(i for i, line in enumerate(lines) if line.startswith('* ``"half"``'))
    inter = next(i for i, line in enumerate(lines) if line.startswith('* ``"interleaved"``'))
    assert "NeoX" in " ".join(lines[half:half + 2]) and "NeoX" not in " ".join(lines[inter:inter + 2])
    cite = next(line for line in positions_module.__doc__.splitlines() if "archives/9403" in line)
    assert "Su 2022" in cite  # Su's completeness analysis of RoPE is dated 2022-12-28


def test_rope_matches_rotary_embedding_torch():
    rot = pytest.importorskip("rotary_embedding_torch")
    theirs = rot.RotaryEmbedding(dim=16)
    x = torch.randn(2, 3, 10, 16, generator=gen(4))
    ours = RoPE(16)(x, torch.arange(10))
    assert torch.allclose(ours, theirs.rotate_queries_or_keys(x), atol=1e-5)


def test_sinusoidal_table_is_vaswani():
    t = sinusoidal_table(torch.tensor([0, 3]), 8)
    assert torch.allclose(t[0], torch.tensor([0.0, 1.0] * 4))
    assert t[1, 2] == pytest.approx(torch.sin(torch.tensor(3 * 10000 ** (-2 / 8))).item(), abs=1e-6)
    assert t[1, 3] == pytest.approx(torch.cos(torch.tensor(3 * 10000 ** (-2 / 8))).item(), abs=1e-6)


# ------------------------------------------------------------------ Transformer
def tiny(pos="rope", **kw):
    torch.manual_seed(0)
    if kw.get("attention") in ("s4d", "rtf"):  # the sequence mixers share the VARIANTS table
        kw["mixer"] = kw.pop("attention")
        kw.pop("vq_block", None)
    args = dict(dim=32, depth=2, heads=4, vocab_size=11, max_len=24, pos=pos)
    if pos == "rope2d":
        args["grid"] = (4, 6)
    args.update(kw)
    return Transformer(**args).eval()


KINDS = ATTENTIONS + ("s4d", "rtf")  # attention kinds and the state-space mixers


def _accepts(pos, kind):
    try:
        tiny(pos, attention=kind, vq_block=5)
    except ValueError:
        return False
    return True


#: every (position, attention) pair that the Transformer accepts, read off the constructor (and checked
#: against the documented refusals by test_variants_are_every_pair_the_transformer_accepts)
VARIANTS = [pk for pk in itertools.product(POSITIONS, KINDS) if _accepts(*pk)]
#: rope-tie needs positions with every call: 24 tokens of text, a 3 x 4 image, text
TIE_POSITIONS = rope_tie_positions([("text", 3), ("image", (3, 4)), ("text", 9)])


def tie(pos, start, stop):
    """The ``positions`` argument for tokens start..stop - 1 (None: the Transformer's default)."""
    return TIE_POSITIONS[start:stop] if pos == "rope-tie" else None


def _documented_refusal(pos, kind):
    """docs/transformer.md's refused combinations, written out independently of the constructor."""
    if kind in ("s4d", "rtf"):
        return pos not in ("none", "learned", "sinusoidal")  # a state-space mixer has no queries or keys
    if kind == "vq":
        return pos not in ("none", "learned", "sinusoidal")  # keys must not depend on position
    if kind == "linear":
        return pos in ("shaw", "t5")  # no logits to add a relative bias to
    return False


def test_variants_are_every_pair_the_transformer_accepts():
    accepted, refused = set(), set()
    for pos, kind in itertools.product(POSITIONS, KINDS):
        try:
            tiny(pos, attention=kind, vq_block=5)
        except ValueError:
            refused.add((pos, kind))
        else:
            accepted.add((pos, kind))
    assert refused == {pk for pk in itertools.product(POSITIONS, KINDS) if _documented_refusal(*pk)}
    assert set(VARIANTS) == accepted and len(VARIANTS) == len(accepted)
    assert {("learned", "linear"), ("rope-tie", "linear"), ("rope-tie", "softmax")} <= set(VARIANTS)


@pytest.mark.parametrize("pos,attention", VARIANTS)
def test_causal_mask_by_autograd(pos, attention):
    """Changing input i never changes the outputs at positions < i (gradient of output t
    w.r.t. the input embeddings is exactly zero beyond t)."""
    net = tiny(pos, vocab_size=None, in_dim=5, attention=attention, vq_block=5)
    x = torch.randn(1, 24, 5, generator=gen(5), requires_grad=True)
    out = net(x, positions=tie(pos, 0, 24))
    for t in (0, 7, 23):
        (g,) = torch.autograd.grad(out[0, t].sum(), x, retain_graph=True)
        if attention in ("s4d", "rtf"):  # FFT convolution: causal up to float round-off
            assert g[0, t + 1:].abs().sum() <= 1e-5 * g[0, : t + 1].abs().max()
        else:
            assert g[0, t + 1:].abs().sum() == 0  # nothing after t reaches output t
        assert g[0, : t + 1].abs().amax(-1).min() > 0  # every input up to t does


@pytest.mark.parametrize("pos,attention", VARIANTS)
def test_kv_cache_matches_the_full_pass(pos, attention):
    net = tiny(pos, attention=attention, vq_block=5)
    x = torch.randint(0, 11, (3, 24), generator=gen(6))
    full = net(x, positions=tie(pos, 0, 24))
    cache = net.new_cache()
    steps = torch.cat([net(x[:, i:i + 1], cache, positions=tie(pos, i, i + 1)) for i in range(24)], dim=1)
    assert torch.allclose(steps, full, atol=1e-5)
    cache = net.new_cache()  # a prefix, then chunks after it (the masked-chunk path)
    chunks = torch.cat([net(x[:, a:b], cache, positions=tie(pos, a, b)) for a, b in ((0, 10), (10, 13), (13, 24))], dim=1)
    assert torch.allclose(chunks, full, atol=1e-5) and cache.length == 24


def test_bidirectional_and_errors():
    net = tiny(causal=False, vocab_size=None, in_dim=3)
    x = torch.randn(1, 6, 3, generator=gen(7), requires_grad=True)
    (g,) = torch.autograd.grad(net(x)[0, 0].sum(), x)
    assert g[0, 5].abs().sum() > 0  # position 0 sees position 5
    with pytest.raises(ValueError, match="max_len"):
        tiny("learned")(torch.zeros(1, 25, dtype=torch.long))
    assert tiny("rope")(torch.zeros(1, 40, dtype=torch.long)).shape == (1, 40, 11)  # rotary: no table to outgrow
    with pytest.raises(ValueError, match="valid: none, learned"):
        tiny(pos="alibi")
    with pytest.raises(ValueError, match="grid"):
        Transformer(32, 1, 4, vocab_size=3, pos="rope2d")
    with pytest.raises(ValueError, match="exactly one"):
        Transformer(32, 1, 4, vocab_size=3, in_dim=4)


def test_rope_transformer_is_shift_invariant():
    """With RoPE and no absolute position, shifting all positions by a constant changes nothing."""
    net = tiny("rope")
    x = torch.randint(0, 11, (2, 12), generator=gen(8))
    assert torch.allclose(net(x), net(x, positions=torch.arange(12) + 100), atol=1e-4)


def test_logn_scaling_changes_nothing_up_to_the_training_length():
    net = tiny("rope")
    x = torch.randint(0, 11, (2, 24), generator=gen(20))
    plain = net(x)
    net.set_logn(10)
    scaled = net(x)
    assert torch.equal(scaled[:, :10], plain[:, :10])  # queries that see <= 10 keys: factor 1
    assert not torch.allclose(scaled[:, 11:], plain[:, 11:])
    cache = net.new_cache()
    assert torch.allclose(torch.cat([net(x[:, i:i + 1], cache) for i in range(24)], 1), scaled, atol=1e-5)
    with pytest.raises(ValueError, match="softmax"):
        tiny("rope", attention="linear").set_logn(10)


@pytest.mark.parametrize("causal", [True, False])
def test_logn_scaling_is_exactly_max1_logn_over_log_ntrain(causal):
    """Su's log-n scaling as documented: the logits of a query that sees n keys (causal: n = i + 1; bidirectional:
    n = T) are multiplied by max(1, ln n / ln n_train), against attention written out by hand."""
    n_train, T, H, dh = 5, 13, 4, 8
    net = tiny("rope", depth=1, causal=causal, logn_len=n_train)
    att = net.blocks[0].attn
    with torch.no_grad():  # logits of order one, so that a wrong factor shows
        att.qkv.weight.copy_(torch.randn(att.qkv.weight.shape, generator=gen(44)) * 0.3)
    x = torch.randn(1, T, 32, generator=gen(45), dtype=torch.float64)
    att = att.double()
    q, k, v = att.qkv(x).view(1, T, 3, H, dh).permute(2, 0, 3, 1, 4)
    q, k = att.rope(q, torch.arange(T)), att.rope(k, torch.arange(T))
    y = torch.zeros(1, H, T, dh, dtype=torch.float64)
    for i in range(T):
        n = i + 1 if causal else T
        factor = max(1.0, math.log(n) / math.log(n_train))
        e = (q[0, :, i, None] * k[0, :, :n]).sum(-1) * factor / math.sqrt(dh)  # (H, n)
        y[0, :, i] = torch.einsum("hj,hjd->hd", e.softmax(-1), v[0, :, :n])
    want = att.proj(y.transpose(1, 2).reshape(1, T, -1))
    torch.testing.assert_close(att(x, torch.arange(T), torch.arange(T)), want, atol=1e-6, rtol=0)  # (factor in float32)
    assert max(1.0, math.log(T) / math.log(n_train)) > 1.5  # the test reaches well past the training length


def test_t5_buckets_and_shaw_logits_by_hand():
    rel = torch.tensor([0, -1, -15, -16, -40, -127, -500, 3])
    b = t5_bucket(rel, causal=True, num_buckets=32, max_distance=128)
    assert b[:4].tolist() == [0, 1, 15, 16]  # exact buckets below 16
    assert 16 < b[4] < 31 and b[5] == 31 and b[6] == 31 and b[7] == 0  # log buckets, capped; future -> 0
    assert t5_bucket(torch.tensor([3, -3]), causal=False).tolist()[0] != t5_bucket(torch.tensor([3, -3]), causal=False).tolist()[1]
    net = tiny("shaw", relative_distance=2, depth=1)
    att = net.blocks[0].attn
    x = torch.randn(1, 6, 32, generator=gen(21))
    B, T = 1, 6
    q, k, v = att.qkv(x).view(B, T, 3, 4, 8).permute(2, 0, 3, 1, 4)
    wK, wV = att.shaw.key.weight, att.shaw.value.weight
    y = torch.zeros(B, 4, T, 8)
    for i in range(T):  # Shaw et al. eq. 3-5 with a causal mask, one position at a time
        r = [min(max(j - i, -2), 2) + 2 for j in range(i + 1)]
        e = torch.stack([(q[0, :, i] * (k[0, :, j] + wK[r[j]])).sum(-1) for j in range(i + 1)], -1) / 8 ** 0.5
        a = e.softmax(-1)
        y[0, :, i] = sum(a[:, j, None] * (v[0, :, j] + wV[r[j]]) for j in range(i + 1))
    want = att.proj(y.transpose(1, 2).reshape(1, T, -1))
    assert torch.allclose(att(x, torch.arange(T), torch.arange(T)), want, atol=1e-5)


def test_general_rope_is_relative_and_defaults_to_rope():
    g = GeneralRoPE(8, learnable=True)
    with torch.no_grad():
        g.A.add_(torch.randn(8, 8, generator=gen(22)) * 0.3)  # a generic skew-symmetric generator
    R = g.matrices(torch.tensor([3, 7, 4]))
    assert torch.allclose(R[0].T @ R[1], R[2], atol=1e-9)  # R_m^T R_n = R_{n-m}
    assert torch.allclose(R[0].T @ R[0], torch.eye(8, dtype=torch.float64), atol=1e-9)
    x = torch.randn(2, 5, 8, generator=gen(23))
    assert torch.allclose(GeneralRoPE(8)(x, torch.arange(5)), RoPE(8)(x, torch.arange(5)), atol=1e-5)
    B = rope_generator(4)
    assert torch.allclose(B, -B.T)


@pytest.mark.parametrize("attention", ["softmax", "linear"])
@pytest.mark.parametrize("pairing", ["interleaved", "half"])
def test_rope_general_starts_as_rope_then_learns_a_relative_generator(attention, pairing):
    """pos="rope-general" trains B (skew-symmetric) from RoPE's generator of the chosen pairing: at
    initialisation the network is exactly the RoPE network; one optimiser step moves B, and the
    moved family still has R_m^T R_n = R_{n-m} (so the scores stay relative)."""
    general = tiny("rope-general", attention=attention, rope_pairing=pairing, depth=1)
    rope = tiny("rope", attention=attention, rope_pairing=pairing, depth=1)
    gr = general.blocks[0].attn.rope
    assert [n for n, _ in general.named_parameters() if "rope" in n], "B must be a trainable parameter"
    rope.load_state_dict({k: v for k, v in general.state_dict().items() if "rope" not in k})
    x = torch.randint(0, 11, (2, 24), generator=gen(40))
    torch.testing.assert_close(general(x), rope(x), atol=1e-5, rtol=1e-5)  # at init: RoPE
    B0 = gr.generator().detach().clone()
    general.train()
    opt = torch.optim.Adam(general.parameters(), lr=1e-2)
    general(x).logsumexp(-1).mean().backward()
    opt.step()
    B1 = gr.generator().detach()
    assert (B1 - B0).abs().max() > 1e-4  # B moved
    torch.testing.assert_close(B1, -B1.T, atol=0, rtol=0)  # still skew-symmetric
    R = gr.matrices(torch.tensor([3, 7, 4, 0]))
    torch.testing.assert_close(R[0].T @ R[1], R[2], atol=1e-9, rtol=0)  # R_m^T R_n = R_{n-m}
    torch.testing.assert_close(R[3], torch.eye(R.shape[-1], dtype=R.dtype), atol=1e-12, rtol=0)
    general.eval()
    assert not torch.allclose(general(x), rope(x), atol=1e-6)  # no longer plain RoPE
    shifted = general(x, positions=torch.arange(24) + 50)
    torch.testing.assert_close(shifted, general(x), atol=1e-4, rtol=1e-4)  # still relative: shift-invariant
    cache = general.new_cache()
    steps = torch.cat([general(x[:, i:i + 1], cache) for i in range(24)], 1)
    torch.testing.assert_close(steps, general(x), atol=1e-5, rtol=1e-5)


def test_rope_general_fixed_generator_and_refusals():
    fixed = tiny("rope-general", rope_learnable=False)
    assert not [n for n, _ in fixed.named_parameters() if "rope" in n]  # B stays RoPE's generator
    with pytest.raises(ValueError, match="rope_learnable"):
        tiny("rope", rope_learnable=True)  # only the general family has a generator to learn
    with pytest.raises(ValueError, match="even"):
        Transformer(12, 1, 4, vocab_size=3, pos="rope-general")  # head dim 3


def test_hierarchical_extension_keeps_the_trained_positions():
    table = torch.randn(5, 3, generator=gen(24), dtype=torch.float64)
    ext = hierarchical_extend(table, 25, alpha=0.4)
    assert torch.allclose(ext[:5], table)
    u = (table - 0.4 * table[:1]) / 0.6
    assert torch.allclose(ext[2 * 5 + 3], 0.4 * u[2] + 0.6 * u[3])
    with pytest.raises(ValueError, match="n\\^2"):
        hierarchical_extend(table, 26)
    net = tiny("learned")
    x = torch.randint(0, 11, (1, 24), generator=gen(25))
    before = net(x)
    net.extend_positions(100)
    assert torch.allclose(net(x), before, atol=1e-6) and net(torch.zeros(1, 100, dtype=torch.long)).shape == (1, 100, 11)
    with pytest.raises(ValueError, match="learned"):
        tiny("rope").extend_positions(100)


@pytest.mark.parametrize("chunk", [64, 3])  # one chunk; three chunks, the last padded
def test_linear_attention_equals_its_quadratic_formula(chunk, monkeypatch):
    import genzoo.nn.attention as A

    monkeypatch.setattr(A, "LINEAR_CHUNK", chunk)
    net = tiny("rope", attention="linear", depth=1)
    att = net.blocks[0].attn
    x = torch.randn(2, 7, 32, generator=gen(26))
    B, T = 2, 7
    q, k, v = att.qkv(x).view(B, T, 3, 4, 8).permute(2, 0, 3, 1, 4)
    fq, fk = torch.nn.functional.elu(q) + 1, torch.nn.functional.elu(k) + 1
    rq, rk = att.rope(fq, torch.arange(T)), att.rope(fk, torch.arange(T))
    num = (rq @ rk.transpose(-1, -2)).tril() @ v  # sum_{j<=i} (R_i phi(q_i))^T (R_j phi(k_j)) v_j
    den = (fq @ fk.transpose(-1, -2)).tril().sum(-1, keepdim=True)
    want = att.proj((num / den).transpose(1, 2).reshape(B, T, -1))
    assert torch.allclose(att(x, torch.arange(T), torch.arange(T)), want, atol=1e-5)
    # the cache: a prefix of 4 in one call, then one token at a time, gives the same outputs
    state = {}
    parts = [att(x[:, :4], torch.arange(4), torch.arange(4), state)]
    parts += [att(x[:, i:i + 1], torch.tensor([i]), torch.tensor([i]), state) for i in range(4, T)]
    assert torch.allclose(torch.cat(parts, 1), want, atol=1e-5) and state["S"].shape == (B, 4, 8, 8)


def test_transformer_vq_block_form_and_cache_equal_quadratic_attention():
    net = tiny("none", attention="vq", depth=1, vq_codes=8, vq_block=4)
    att = net.blocks[0].attn
    x = torch.randn(2, 11, 32, generator=gen(27))  # 11 = 2 full blocks + a padded one
    ref = vq_attention_reference(att, x)
    assert torch.allclose(att(x, torch.arange(11), torch.arange(11)), ref, atol=1e-5)
    state = {}
    steps = torch.cat([att(x[:, i:i + 1], torch.tensor([i]), torch.tensor([i]), state) for i in range(11)], 1)
    assert torch.allclose(steps, ref, atol=1e-5)
    assert state["n"].sum() == 2 * 4 * 11 and state["U"].shape == (2, 4, 8, 8)  # the cache is O(S d), not O(T)
    assert att.aux_loss > 0
    net.train()
    before = att.vq.codebook.clone()
    net(torch.randint(0, 11, (2, 11), generator=gen(28)))
    assert not torch.equal(before, att.vq.codebook)  # EMA codebook step in training mode
    with pytest.raises(ValueError, match="Transformer-VQ"):
        tiny("rope", attention="vq")


def test_transformer_vq_in_training_mode_uses_one_codebook_then_updates_it():
    """Training mode: the block form equals quadratic attention over the keys quantised by the codebook
    as it was at the start of the forward (the current block's keys and the past blocks' codes read the
    same codebook), and the EMA step still happens, after the attention."""
    net = tiny("none", attention="vq", depth=1, vq_codes=8, vq_block=4)
    att = net.blocks[0].attn.train()
    with torch.no_grad():  # logits of order one (not the 0.02-scale initialisation's ~0) and a large EMA step
        att.qkv.weight.copy_(torch.randn(att.qkv.weight.shape, generator=gen(40)) * 0.3)
    att.vq.decay = 0.5
    x = torch.randn(2, 11, 32, generator=gen(41))
    att(x, torch.arange(11), torch.arange(11))  # the first training call initialises the codebook from data
    for seed in (42, 43):  # two further EMA steps
        x = torch.randn(2, 11, 32, generator=gen(seed))
        frozen = tiny("none", attention="vq", depth=1, vq_codes=8, vq_block=4).blocks[0].attn.eval()
        frozen.load_state_dict(att.state_dict())
        frozen.vq.decay = 0.5
        ref = vq_attention_reference(frozen, x)  # the codebook before this forward
        before = att.vq.codebook.clone()
        y = att(x, torch.arange(11), torch.arange(11))
        torch.testing.assert_close(y, ref, atol=1e-5, rtol=1e-5)
        assert not torch.equal(before, att.vq.codebook)  # and the EMA update still happened
        assert att.aux_loss > 0


def test_ssm_mixers_and_monarch_mlp():
    net = tiny("none", mixer="rtf", mlp_linear="monarch", depth=1)
    with torch.no_grad():  # RTF starts with zero poles and zeros; give it a real filter
        for p in net.blocks[0].attn.layer.parameters():
            p.add_(torch.randn(p.shape, generator=gen(30)) * 0.1)
    x = torch.randint(0, 11, (2, 24), generator=gen(31))
    cache = net.new_cache()
    assert torch.allclose(torch.cat([net(x[:, i:i + 1], cache) for i in range(24)], 1), net(x), atol=1e-5)
    from genzoo.nn.monarch import MonarchLinear

    assert isinstance(net.blocks[0].mlp[0], MonarchLinear)
    dense = tiny("none", mixer="rtf", depth=1)
    assert sum(p.numel() for p in net.parameters()) < sum(p.numel() for p in dense.parameters())
    with pytest.raises(ValueError, match="state-space"):
        tiny("rope", mixer="s4d")
    with pytest.raises(ValueError, match="softmax"):
        tiny("none", mixer="s4d", logn_len=10)


def test_class_conditioning_adds_a_label_embedding_to_every_position():
    net = tiny("learned", vocab_size=None, in_dim=5, num_classes=3)
    x = torch.randn(4, 24, 5, generator=gen(32))
    y = torch.tensor([0, 1, 2, 3])  # 3 = no label
    out = net(x, cond=y)
    assert torch.equal(net(x), net(x, cond=torch.full((4,), 3)))  # cond None = the null label
    assert not torch.allclose(out[0], net(x, cond=torch.tensor([1, 1, 2, 3]))[0])
    torch.testing.assert_close(out[1:], net(x[1:], cond=y[1:]))  # examples do not interact
    plain = tiny("learned", vocab_size=None, in_dim=5)  # the same weights, the label's row folded into the input bias
    plain.load_state_dict({k: v for k, v in net.state_dict().items() if not k.startswith("class_embed")})
    with torch.no_grad():
        plain.embed.bias += net.class_embed.weight[2]
    torch.testing.assert_close(plain(x), net(x, cond=torch.full((4,), 2)))
    cache = net.new_cache()  # the labels travel with every cached call
    assert torch.allclose(torch.cat([net(x[:, i:i + 1], cache, cond=y) for i in range(24)], 1), out, atol=1e-5)
    xg = x[:1].clone().requires_grad_(True)
    (g,) = torch.autograd.grad(net(xg, cond=y[:1])[0, 7].sum(), xg)
    assert g[0, 8:].abs().sum() == 0  # still causal
    with pytest.raises(ValueError, match="unconditional"):
        tiny("learned")(torch.zeros(1, 4, dtype=torch.long), cond=torch.tensor([0]))
    with pytest.raises(ValueError, match="0..3"):
        net(x, cond=torch.tensor([0, 1, 2, 4]))
    with pytest.raises(ValueError, match="one class label per example"):
        net(x, cond=torch.tensor([0, 1]))


@pytest.mark.parametrize("pos", ["learned", "rope", "shaw", "t5"])
def test_attention_temperature_divides_the_logits(pos):
    """attn_temp tau = the same network with its query projection divided by tau (every logit is
    linear in q; T5's bias is divided too), and the cache agrees with the full pass."""
    tau = 0.3
    net = tiny(pos)
    x = torch.randint(0, 11, (2, 24), generator=gen(33))
    hot = net(x, attn_temp=tau)
    assert not torch.allclose(hot, net(x), atol=1e-4)
    cache = net.new_cache()
    assert torch.allclose(torch.cat([net(x[:, i:i + 1], cache, attn_temp=tau) for i in range(24)], 1), hot, atol=1e-5)
    if pos != "t5":
        scaled = tiny(pos)
        with torch.no_grad():
            for b in scaled.blocks:
                b.attn.qkv.weight[:32] /= tau
                b.attn.qkv.bias[:32] /= tau
        assert torch.allclose(scaled(x), hot, atol=1e-5)
    with pytest.raises(ValueError, match="softmax"):
        tiny("rope", attention="linear")(x, attn_temp=tau)
    with pytest.raises(ValueError, match="> 0"):
        net(x, attn_temp=0.0)


# ------------------------------------------------------------------ image transformer
def image_model(levels=2, shape=(1, 2, 3), **kw):
    torch.manual_seed(0)
    args = dict(shape=shape, levels=levels, dim=16, depth=2, heads=2)
    args.update(kw)
    m = genzoo.build("image_transformer", **args)
    with torch.no_grad():  # a random but non-trivial distribution
        for p in m.parameters():
            p.add_(torch.randn(p.shape, generator=gen(9)) * 0.3)
    return m.eval()


@pytest.mark.parametrize("pos", ["rope2d", "learned"])
def test_binary_probabilities_sum_to_one(pos):
    m = image_model(pos=pos)
    xs = torch.tensor(list(itertools.product([0.0, 1.0], repeat=6))).reshape(64, 1, 2, 3)
    assert torch.logsumexp(m.log_prob(xs), 0).item() == pytest.approx(0.0, abs=1e-5)


def test_grey_level_probabilities_sum_to_one():
    m = image_model(levels=256, shape=(1, 1, 2))
    k = torch.tensor(list(itertools.product(range(256), repeat=2)))
    xs = (-1 + 2 * k.float() / 255).reshape(-1, 1, 1, 2)
    assert torch.logsumexp(m.log_prob(xs), 0).item() == pytest.approx(0.0, abs=1e-4)


def test_pixel_i_never_changes_the_distribution_of_pixels_up_to_i():
    m = image_model(shape=(1, 3, 4))
    x = torch.randint(0, 2, (1, 1, 3, 4), generator=gen(10)).float()
    base = m.logits(x)
    for i in range(12):
        y = x.clone().reshape(-1)
        y[i] = 1 - y[i]
        changed = (m.logits(y.reshape(1, 1, 3, 4)) - base).abs().amax(-1)[0]
        assert changed[: i + 1].max() == 0  # the distributions of pixels 0..i are untouched
        if i < 11:
            assert changed[i + 1:].max() > 0


def test_sampling_reproducible_cached_equals_uncached_inpainting_temperature():
    m = image_model(shape=(1, 3, 3))
    a = m.sample(5, generator=gen(11))
    assert torch.equal(a, m.sample(5, generator=gen(11)))
    assert torch.equal(a, m.sample(5, generator=gen(11), use_cache=False))
    assert set(a.unique().tolist()) <= {0.0, 1.0} and a.shape == (5, 1, 3, 3)
    obs = torch.randint(0, 2, (5, 1, 3, 3), generator=gen(12)).float()
    mask = torch.zeros(5, 1, 3, 3, dtype=torch.bool)
    mask[:, :, :2] = True  # the top two rows observed: complete the bottom row
    filled = m.sample(5, generator=gen(13), observed=obs, mask=mask)
    assert torch.equal(filled[mask], obs[mask])
    cold = m.sample(200, generator=gen(14), temperature=0.05)  # ~ greedy: (nearly) one image
    assert (cold != cold[0]).float().mean() < 0.05
    with pytest.raises(ConfigError, match="both observed"):
        m.sample(2, observed=obs[:2])
    with pytest.raises(ConfigError, match="temperature"):
        m.sample(2, temperature=0)
    with pytest.raises(ConfigError, match="unknown sample option"):
        m.sample(2, steps=3)


def test_image_transformer_data_checks():
    m = image_model(shape=(1, 28, 28))
    with pytest.raises(ConfigError, match="binarize=static"):
        m.check_data(DataSpec("mnist", "image", (1, 28, 28), value_range=(-1.0, 1.0), levels=256))
    m.check_data(DataSpec("mnist", "image", (1, 28, 28), value_range=(0.0, 1.0), discrete="binary", levels=2))
    g = image_model(levels=256, shape=(1, 28, 28))
    with pytest.raises(ConfigError, match="un-dequantised"):
        g.check_data(DataSpec("mnist", "image", (1, 28, 28), value_range=(-1.0, 1.0), dequantization="uniform", levels=256))
    with pytest.raises(DataError, match="not on that grid"):
        image_model().log_prob(torch.full((1, 1, 2, 3), 0.5))
    with pytest.raises(ConfigError, match=r"images \(C, H, W\)"):
        genzoo.build("image_transformer", shape=(8, 8))
    # colour is a sequence of sub-pixels (tests/test_colour.py checks its order)
    assert genzoo.build("image_transformer", shape=(3, 8, 8), dim=16, depth=1, heads=2).D == 192


def test_cli_train_sample_eval_on_digits(tmp_path):
    d = tmp_path / "run"
    assert main(["train", "image_transformer", "data.name=digits", "data.binarize=static", "model.dim=16", "model.depth=1",
                 "train.steps=30", "train.batch_size=16", "train.num_samples=4", "train.ckpt_every=0",
                 "train.valid_every=0", "train.log_every=10", "--run-dir", str(d), "--no-progress"]) == 0
    s = json.loads((d / "train_summary.json").read_text())
    assert s["steps"] == 30 and s["model"] == "ImageTransformer"
    out = tmp_path / "m.json"
    assert main(["eval", str(d), "--metrics", "nll", "--limit", "20", "--no-progress", "--out", str(out)]) == 0
    r = json.loads(out.read_text())["nll"]
    assert r["likelihood"] == "exact" and 0 < r["nll_nats"] < 64 * 0.7  # below the uniform 64 ln 2 after training
    o = tmp_path / "s.npy"
    assert main(["sample", str(d), "--n", "3", "--out", str(o), "temperature=0.9"]) == 0


# ------------------------------------------------------------------ RoPE-Tie (multimodal positions)
def test_rope_tie_layout_is_su_s():
    """Su 2024 (kexue.fm/archives/10040): text (n, n); a w x h image after a token at L at (L + i(w+1), L + j(h+1));
    the next token at K = L + (w+1)(h+1); the step into the image equals the step out of it."""
    L, h, w = 4, 2, 3
    pos = rope_tie_positions([("text", 5), ("image", (h, w)), ("text", 2)])
    assert pos.shape == (5 + h * w + 2, 2) and pos.dtype == torch.long
    assert pos[:5].tolist() == [[n, n] for n in range(5)]
    img = pos[5:5 + h * w]
    assert img.tolist() == [[L + i * (w + 1), L + j * (h + 1)] for i in range(1, h + 1) for j in range(1, w + 1)]
    K = L + (w + 1) * (h + 1)
    assert pos[-2:].tolist() == [[K, K], [K + 1, K + 1]]
    step_in, step_out = img[0] - pos[4], pos[-2] - img[-1]
    assert step_in.tolist() == step_out.tolist() == [w + 1, h + 1]
    # the non-integer variant counts the image as w h tokens
    f = rope_tie_positions([("text", 5), ("image", (h, w)), ("text", 1)], integer=False)
    assert float(f[-1, 0]) == pytest.approx(L + w * h + 1) and float(f[-1, 1]) == pytest.approx(L + w * h + 1)
    torch.testing.assert_close(f[5] - f[4], f[-1] - f[-2])
    with pytest.raises(ValueError, match="segments"):
        rope_tie_positions([("audio", 3)])


def test_rope_tie_text_only_is_rope_1d_and_cache_matches():
    x = torch.randint(0, 11, (2, 12), generator=gen(9))
    tie, one = tiny("rope-tie"), tiny("rope")
    one.load_state_dict(tie.state_dict())
    pos = rope_tie_positions([("text", 12)])
    torch.testing.assert_close(tie(x, positions=pos), one(x))  # text alone: exactly RoPE-1-D
    mixed = rope_tie_positions([("text", 3), ("image", (2, 3)), ("text", 3)])
    full = tie(x, positions=mixed)
    cache = tie.new_cache()
    steps = torch.cat([tie(x[:, :5], cache, positions=mixed[:5]), tie(x[:, 5:], cache, positions=mixed[5:])], 1)
    torch.testing.assert_close(steps, full, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(full, one(x), atol=1e-4)  # the image's 2-D positions change the outputs
    with pytest.raises(ValueError, match="rope_tie_positions"):
        tie(x)


def test_the_auxiliary_loss_is_returned_not_read_from_an_attribute():
    """Issue 30 item 3: models read Transformer.aux_loss, a side channel set by the last forward pass; forward
    returns it now (return_aux=True), and the models that train Transformer-VQ add the returned loss."""
    net = tiny("none", attention="vq", depth=2, vq_codes=8, vq_block=4)
    x = torch.randint(0, 11, (2, 11), generator=gen(29))
    plain = net(x)
    out, aux = net(x, return_aux=True)
    assert torch.equal(out, plain) and aux > 0 and aux.requires_grad
    assert not hasattr(net, "aux_loss")
    _, zero = tiny("rope", depth=1)(x, return_aux=True)
    assert float(zero) == 0.0
    m = genzoo.build("charlm", shape=(11,), vocab_size=11, dim=32, depth=1, heads=4, pos="none", attention="vq",
                     vq_codes=8, vq_block=4)
    out = m.loss(x)
    assert out["vq_commitment"] > 0 and torch.allclose(out["loss"], out["bits_per_char"] * math.log(2) + out["vq_commitment"])
