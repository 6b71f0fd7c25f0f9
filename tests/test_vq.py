"""Vector quantisation (issue 9): the quantisers' forward values and gradients against hand-built
formulas, EMA updates by hand, dead-code restarts, FSQ's implicit codebook (and against
vector-quantize-pytorch when installed), VQ-VAE / VQGAN / the Transformer prior end to end on the
8x8 digits through the CLI, and the refusals the issue names."""
import math

import numpy as np
import pytest
import torch

import genzoo
from genzoo.cli import main
from genzoo.errors import ConfigError
from genzoo.models.base import TrainContext
from genzoo.nn.quantize import FSQ, FSQ_LEVELS, VectorQuantizer, codebook_stats, rotate_to, rotation_matrix


def _vq(**kw):
    q = VectorQuantizer(3, 4, **kw).double()
    q.codebook.data.copy_(torch.tensor([[[1.0, 0, 0], [0, 2.0, 0], [0, 0, 3.0], [-1.0, -1.0, 0]]], dtype=torch.float64))
    q.initialized.fill_(True)
    return q


# ------------------------------------------------------------------ straight-through and rotation trick
def test_straight_through_forward_is_code_and_gradient_is_identity():
    q = _vq().train()
    cb = q.codebook.clone()  # (the EMA step moves the codebook after the lookup)
    z = torch.tensor([[0.9, 0.2, 0.1], [0.1, 1.5, 0.3], [-0.5, -0.7, 0.2]], dtype=torch.float64, requires_grad=True)
    out, idx, aux = q(z[:, None])
    assert idx[:, 0].tolist() == [0, 1, 3]
    assert torch.equal(out[:, 0].detach(), cb[0, idx[:, 0]])
    w = torch.randn(3, 3, dtype=torch.float64)
    (g,) = torch.autograd.grad((out[:, 0] * w).sum(), z)
    torch.testing.assert_close(g, w)  # d z_st / d z = I
    # the commitment loss: beta * ||z - sg(e)||^2 (mean)
    torch.testing.assert_close(aux, 0.25 * (z - cb[0, idx[:, 0]]).pow(2).mean())


def test_rotation_matrix_maps_direction_and_is_orthogonal():
    e = torch.tensor([0.3, -1.2, 0.5], dtype=torch.float64)
    c = torch.tensor([2.0, 0.1, -0.4], dtype=torch.float64)
    R = rotation_matrix(e, c)
    torch.testing.assert_close(R.T @ R, torch.eye(3, dtype=torch.float64))
    torch.testing.assert_close(torch.linalg.det(R), torch.tensor(1.0, dtype=torch.float64))
    torch.testing.assert_close(R @ (e / e.norm()), c / c.norm())
    # scaled by ||q|| / ||e||, it sends e to q exactly
    torch.testing.assert_close(c.norm() / e.norm() * R @ e, c)
    torch.testing.assert_close(rotate_to(e[None], c[None])[0], c)


def test_rotation_trick_forward_is_code_and_gradient_is_rotated_and_scaled():
    q = _vq(gradient="rotation").train()
    cb = q.codebook.clone()
    z = torch.tensor([[0.9, 0.2, 0.1], [0.1, 1.5, 0.3], [-0.5, -0.7, 0.2]], dtype=torch.float64, requires_grad=True)
    out, idx, _ = q(z[:, None])
    codes = cb[0, idx[:, 0]]
    assert torch.equal(out[:, 0].detach(), codes)  # the forward value is exactly the code
    w = torch.randn(3, 3, dtype=torch.float64)
    (g,) = torch.autograd.grad((out[:, 0] * w).sum(), z)
    for i in range(3):  # d out / d e = ||q||/||e|| R, so the gradient is ||q||/||e|| R^T w
        lam = codes[i].norm() / z[i].detach().norm()
        R = rotation_matrix(z[i].detach(), codes[i])
        torch.testing.assert_close(g[i], lam * R.T @ w[i])
    # unlike straight-through, the gradient is not w itself
    assert not torch.allclose(g, w)


# ------------------------------------------------------------------ codebook updates and restarts
def test_ema_update_matches_hand_computation():
    q = _vq(update="ema", decay=0.9, eps=0.0).train()
    count0, sum0 = q.ema_count.clone(), q.ema_sum.clone()
    z = torch.tensor([[0.8, 0.0, 0.0], [1.2, 0.2, 0.0], [0.0, 2.2, 0.0]], dtype=torch.float64)
    q(z[:, None])
    n = torch.tensor([2.0, 1.0, 0.0, 0.0], dtype=torch.float64)
    s = torch.zeros(4, 3, dtype=torch.float64)
    s[0] = z[0] + z[1]
    s[1] = z[2]
    N = 0.9 * count0[0] + 0.1 * n
    M = 0.9 * sum0[0] + 0.1 * s
    torch.testing.assert_close(q.ema_count[0], N)
    torch.testing.assert_close(q.codebook[0], M / N[:, None])  # eps = 0: Laplace smoothing is the identity


def test_grad_codebook_gets_the_codebook_loss_gradient():
    q = _vq(update="grad").train()
    assert isinstance(q.codebook, torch.nn.Parameter)
    z = torch.tensor([[0.9, 0.2, 0.1]], dtype=torch.float64)
    _, idx, aux = q(z[:, None])
    aux.backward()
    e = q.codebook[0, 0].detach()
    # d/de of ||sg[z] - e||^2 / 3 (mean over the 3 dims) = 2 (e - z) / 3; the commitment term does not reach e
    torch.testing.assert_close(q.codebook.grad[0, 0], 2 * (e - z[0]) / 3)
    assert q.codebook.grad[0, 1:].abs().sum() == 0


def test_dead_code_is_restarted_from_the_batch():
    torch.manual_seed(0)
    q = VectorQuantizer(2, 4, restart_threshold=1.0, decay=0.5).train()
    z = torch.randn(64, 1, 2) * 0.1
    q(z)  # initialises from the batch
    q.codebook[0, 3] = torch.tensor([100.0, 100.0])  # a code nobody will pick
    q.ema_sum[0, 3] = q.codebook[0, 3] * q.ema_count[0, 3]
    for _ in range(10):
        q(torch.randn(64, 1, 2) * 0.1)
    assert int(q.restarts) >= 1
    assert q.codebook[0, 3].abs().max() < 5  # now a vector of the batches, near the data
    q.eval()
    before = q.codebook.clone()
    q(torch.randn(64, 1, 2))  # eval mode: nothing moves
    assert torch.equal(before, q.codebook)


def test_cosine_codes_are_unit_vectors():
    torch.manual_seed(0)
    q = VectorQuantizer(4, 8, cosine=True).train()
    out, _, _ = q(torch.randn(32, 1, 4) * 5)
    torch.testing.assert_close(out.norm(dim=-1), torch.ones(32, 1))


def test_codebook_stats():
    usage, ppl = codebook_stats(torch.tensor([0, 1, 1, 2]), 8)
    assert usage == 3 / 8
    p = np.array([0.25, 0.5, 0.25])
    assert ppl == pytest.approx(math.exp(-(p * np.log(p)).sum()))
    assert codebook_stats(torch.arange(16), 16) == (1.0, pytest.approx(16.0))


# ------------------------------------------------------------------ FSQ
@pytest.mark.parametrize("size", sorted(FSQ_LEVELS))
def test_fsq_implicit_codebook_round_trips(size):
    f = FSQ(FSQ_LEVELS[size])
    assert f.codebook_size == math.prod(FSQ_LEVELS[size])
    assert abs(math.log2(f.codebook_size) - math.log2(size)) < 0.1  # the paper's sets approximate 2^k
    idx = torch.arange(f.codebook_size)
    codes = f.indices_to_codes(idx)
    assert codes.abs().max() <= 1
    assert torch.equal(f.codes_to_indices(codes), idx)  # index -> vector -> index
    assert len(set(map(tuple, codes.tolist()))) == f.codebook_size  # distinct vectors
    # pre-images of every code (bound(z) slightly inside each level) quantise to that code
    L = f._levels
    half_l, o = (L - 1) * (1 - f.eps) / 2, torch.where(L % 2 == 1, 0.0, 0.5).double()
    target = codes.double() * (L // 2) * (1 - 2 * f.eps)
    z = torch.atanh((target + o) / half_l) - torch.atanh(o / half_l)
    assert torch.equal(f.codes(z.float()), idx)


def test_fsq_values_on_grid_and_straight_through_gradient():
    f = FSQ((8, 5, 5, 5)).double()
    z = torch.randn(100, 4, dtype=torch.float64, requires_grad=True)
    zq, idx, aux = f(z)
    hw = torch.tensor([4.0, 2.0, 2.0, 2.0], dtype=torch.float64)
    assert torch.equal((zq * hw).round(), zq * hw)  # on the grid
    assert float(aux) == 0.0 and idx.max() < 1000
    (g,) = torch.autograd.grad(zq.sum(), z)
    (gb,) = torch.autograd.grad(f.bound(z).sum(), z)
    torch.testing.assert_close(g, gb / hw)  # round is straight-through: the gradient of bound / half_width
    assert float(f.bound(torch.zeros(1, 4, dtype=torch.float64)).abs().max()) < 1e-12  # f(0) = 0


def test_fsq_agrees_with_vector_quantize_pytorch():
    vqp = pytest.importorskip("vector_quantize_pytorch")
    torch.manual_seed(0)
    for levels in ((8, 5, 5, 5), (8, 6, 5), (7, 5, 5, 5, 5)):
        ref = vqp.FSQ(levels=list(levels))
        mine = FSQ(levels)
        z = torch.randn(4096, len(levels)) * 1.5
        # the two bounds differ in eps's sign ((L-1)(1 -+ eps)/2); keep inputs off the rounding boundaries
        b = mine.bound(z)
        off = ((b - b.floor() - 0.5).abs() > 0.01).all(-1)
        out, ref_idx = ref(z[off][None])
        assert off.float().mean() > 0.8
        torch.testing.assert_close(mine.quantize(z[off]), out[0])
        assert torch.equal(mine.codes(z[off]), ref_idx[0].long())
        idx = torch.arange(mine.codebook_size)
        torch.testing.assert_close(mine.indices_to_codes(idx), ref.indices_to_codes(idx))


# ------------------------------------------------------------------ models
@pytest.mark.parametrize("kw", [dict(quantizer="vq", update="grad"), dict(quantizer="vq", update="ema", gradient="rotation",
                                                                          restart_threshold=0.5),
                                dict(quantizer="fsq", codebook_size=256)])
def test_vqvae_learns_on_digits(kw):
    from genzoo.train.run import load_data

    torch.manual_seed(0)
    data = load_data({"name": "digits"}, "train")
    x = data.tensor(seed=0, limit=256)
    m = genzoo.build("vqvae", shape=(1, 8, 8), channels=16, res_blocks=1, codebook_size=kw.pop("codebook_size", 32), **kw)
    m.check_data(data.spec)
    opt = torch.optim.Adam(m.parameters(), lr=3e-3)
    first = None
    for i in range(60):
        out = m.loss(x[(i * 64) % 256:(i * 64) % 256 + 64])
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
        first = first if first is not None else float(out["mse"])
    m.eval()
    mse = float(((m.reconstruct(x) - x) ** 2).mean())
    assert mse < 0.6 * first, (first, mse)
    codes = m.tokenize(x)
    assert codes.shape == (256, 2, 2) and codes.max() < m.codebook_size
    torch.testing.assert_close(m.detokenize(codes), m.reconstruct(x))
    assert m.encode(x).shape == (256, m.code_dim * 4)
    s = m.sample(5, generator=torch.Generator().manual_seed(0))
    assert s.shape == (5, 1, 8, 8) and s.min() >= -1 and s.max() <= 1


def test_vqvae_config_errors():
    with pytest.raises(ConfigError, match="256"):
        genzoo.build("vqvae", quantizer="fsq", codebook_size=300)
    with pytest.raises(ConfigError, match="quantizer=fsq"):
        genzoo.build("vqvae", levels=[8, 5])
    with pytest.raises(ConfigError, match="valid: vq, fsq"):
        genzoo.build("vqvae", quantizer="lfq")
    with pytest.raises(ConfigError, match="divisible by 4"):
        genzoo.build("vqvae", shape=(1, 6, 6))
    with pytest.raises(ConfigError, match="perceptual_weight=0"):
        genzoo.build("vqgan", shape=(1, 8, 8))
    assert genzoo.build("vqvae", quantizer="fsq", codebook_size=1024).codebook_size == 1000


def test_vqgan_adaptive_weight_and_warmup():
    torch.manual_seed(0)
    m = genzoo.build("vqgan", shape=(1, 28, 28), channels=8, res_blocks=1, disc_channels=8, disc_start=2,
                     codebook_size=16).train()
    players = m.players()
    ae, disc = players["autoencoder"], players["discriminator"]
    assert {id(p) for p in ae}.isdisjoint({id(p) for p in disc})
    assert len(ae) + len(disc) == len(list(m.parameters()))
    x = torch.rand(4, 1, 28, 28) * 2 - 1
    d0 = m.loss(x, player="discriminator", ctx=TrainContext(1, 10))
    assert float(d0["loss"].detach()) == 0.0  # warm-up: the discriminator is off
    for step in range(2):
        out = m.loss(x, player="autoencoder", ctx=TrainContext(step, 10))
        assert "g_loss" not in out
    assert float(m.loss(x, player="discriminator", ctx=TrainContext(2, 10))["loss"].detach()) > 0  # both players at disc_start
    assert "global_step" not in m.state_dict()  # the step is the trainer's
    out = m.loss(x, player="autoencoder", ctx=TrainContext(2, 10))
    assert "adaptive_weight" in out and float(out["adaptive_weight"]) > 0
    # lambda by hand: gradient norms at the decoder's last layer
    zq, _, _ = m.quantize(m.encoder(x))
    xr = m.decoder(zq)
    rec = (xr - x).abs().mean() + m.perceptual(x, xr).mean()
    g = -m.discriminator(xr).mean()
    last = m.decoder.out.weight
    n1 = torch.autograd.grad(rec, last, retain_graph=True)[0].norm()
    n2 = torch.autograd.grad(g, last, retain_graph=True)[0].norm()
    torch.testing.assert_close(m.adaptive_weight(rec, g), (n1 / (n2 + 1e-6)).clamp(0, 1e4) * 0.8)
    d = m.loss(x, player="discriminator")
    assert float(d["loss"].detach()) > 0
    d["loss"].backward()
    assert all(p.grad is None or p.grad.abs().sum() == 0 for p in ae)  # the discriminator step leaves the AE alone
    # the perceptual distance is 0 between identical images and grows with the difference
    assert float(m.perceptual(x, x).abs().max()) < 1e-6
    assert float(m.perceptual(x, x + 0.5).mean()) > float(m.perceptual(x, x + 0.1).mean()) > 0


# ------------------------------------------------------------------ the pipeline through the CLI
TOK = ["vqvae", "data.name=digits", "model.channels=16", "model.res_blocks=1", "model.codebook_size=32",
       "train.steps=30", "train.batch_size=64", "train.num_samples=4", "train.ckpt_every=0", "--no-progress"]


@pytest.fixture(scope="module")
def tokenizer_run(tmp_path_factory):
    d = tmp_path_factory.mktemp("vq") / "tok"
    assert main(["train", *TOK, "quantizer=fsq", "model.codebook_size=256", "--run-dir", str(d)]) == 0
    return d


def test_prior_pipeline_through_cli(tokenizer_run, tmp_path, capsys):
    assert (tokenizer_run / "samples.png").is_file()
    prior = tmp_path / "prior"
    assert main(["train", "vq-prior", f"tokenizer={tokenizer_run}", "data.name=digits", "model.dim=32", "model.depth=1",
                 "model.heads=2", "train.steps=20", "train.batch_size=32", "train.num_samples=4", "train.ckpt_every=0",
                 "--no-progress", "--run-dir", str(prior)]) == 0
    out = tmp_path / "s.npy"
    assert main(["sample", str(prior), "--n", "6", "--out", str(out), "temperature=0.9", "top_k=50"]) == 0
    s = np.load(out)
    assert s.shape == (6, 1, 8, 8) and s.min() >= -1 and s.max() <= 1
    from genzoo.train.run import load_run

    m, _, _ = load_run(prior)
    g = lambda: torch.Generator().manual_seed(3)  # noqa: E731
    assert torch.equal(m.sample_codes(3, generator=g()), m.sample_codes(3, generator=g(), use_cache=False))
    assert all(not p.requires_grad for p in m.tokenizer.parameters())
    x = load_run(tokenizer_run)[0].reconstruct(torch.zeros(2, 1, 8, 8))
    assert m.log_prob_codes(x).shape == (2,)
    capsys.readouterr()
    # the eval metrics of a tokenizer: reconstruction error, codebook usage, FID of reconstructions
    assert main(["eval", str(tokenizer_run), "--metrics", "recon", "--n-samples", "200", "--no-progress"]) == 0


def test_prior_refuses_non_tokenizer_and_wrong_vocabulary(tokenizer_run, tmp_path, capsys):
    from test_cli import TINY, assert_one_line_error

    vae = tmp_path / "vae"
    assert main(["train", *TINY, "--run-dir", str(vae)]) == 0
    capsys.readouterr()
    code = main(["train", "vq_prior", f"tokenizer={vae}", "data.name=digits", "--run-dir", str(tmp_path / "p1")])
    assert_one_line_error(code, capsys.readouterr().err, "not a tokenizer", "vae")
    code = main(["train", "vq_prior", f"tokenizer={tokenizer_run}", "model.vocab_size=512", "data.name=digits",
                 "--run-dir", str(tmp_path / "p2")])
    assert_one_line_error(code, capsys.readouterr().err, "512", "240")
    code = main(["train", "vq_prior", "data.name=digits", "--run-dir", str(tmp_path / "p3")])
    assert_one_line_error(code, capsys.readouterr().err, "tokenizer=RUN_DIR")


def test_the_prior_receives_a_built_tokenizer(tokenizer_run):
    """Issue 30 item 5: VQPrior takes a built tokenizer (a model never loads a run folder); genzoo.build and
    genzoo train load ``tokenizer=RUN_DIR`` first (``run_folder_args``), the registry alone refuses a path."""
    import genzoo
    from genzoo.errors import ConfigError
    from genzoo.models.vq import VQPrior
    from genzoo.registry import build as registry_build
    from genzoo.train.run import load_run

    tok, _, spec = load_run(tokenizer_run)
    prior = VQPrior(tok, transformer={"dim": 16, "depth": 1, "heads": 2})
    assert prior.tokenizer is tok and prior.tokenizer_spec is None  # built in Python: no data spec to compare
    assert prior.sample(2, generator=torch.Generator().manual_seed(0)).shape == (2, *tok.shape)
    loaded = genzoo.build("vq_prior", tokenizer=str(tokenizer_run), dim=16, depth=1, heads=2)
    assert loaded.tokenizer_spec == spec and not any(p.requires_grad for p in loaded.tokenizer.parameters())
    mine, theirs = loaded.tokenizer.state_dict(), tok.state_dict()
    assert mine.keys() == theirs.keys() and all(torch.equal(mine[k], theirs[k]) for k in mine)
    with pytest.raises(ConfigError, match="VQPrior takes a built tokenizer"):
        registry_build("vq_prior", tokenizer=str(tokenizer_run))
    with pytest.raises(ConfigError, match="must be a VQVAE or VQGAN, got Linear"):
        VQPrior(torch.nn.Linear(2, 2))
