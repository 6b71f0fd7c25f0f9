"""Metrics: FID/KID against closed forms and hand computations, precision/recall on
constructed clouds, the shipped MNIST feature network, and NLL/bits-per-dim units."""
from __future__ import annotations

import hashlib
import math

import numpy as np
import pytest
import torch

from genzoo.data.base import ArrayDataset, DataSpec
from genzoo.errors import ConfigError, DataError
from genzoo.eval import (
    evaluate_nll,
    fid_floor,
    fid_from_features,
    frechet_distance,
    get_extractor,
    kid_from_features,
    load_mnist_feature_net,
    mnist_feature_metadata,
    precision_recall,
    precision_recall_density_coverage,
    sample_metrics,
)
from genzoo.eval.features import MNIST_WEIGHTS
from genzoo.models.base import GenerativeModel


# ----------------------------------------------------------------------------- FID
def test_frechet_distance_diagonal_closed_form():
    rng = np.random.default_rng(0)
    d = 6
    mu1, mu2 = rng.normal(size=d), rng.normal(size=d)
    v1, v2 = rng.uniform(0.2, 3.0, size=d), rng.uniform(0.2, 3.0, size=d)
    # W2^2 between diagonal Gaussians: |dmu|^2 + sum (sqrt v1 - sqrt v2)^2
    expected = float(((mu1 - mu2) ** 2).sum() + ((np.sqrt(v1) - np.sqrt(v2)) ** 2).sum())
    got = frechet_distance(mu1, np.diag(v1), mu2, np.diag(v2))
    assert isinstance(got, float)
    assert got == pytest.approx(expected, rel=1e-9, abs=1e-9)
    # identical statistics -> 0 (a full covariance this time)
    a = rng.normal(size=(d, d))
    s = a @ a.T + 0.1 * np.eye(d)
    assert abs(frechet_distance(mu1, s, mu1, s)) < 1e-8
    # tensors are accepted too
    assert frechet_distance(torch.tensor(mu1), torch.tensor(np.diag(v1)), torch.tensor(mu2), torch.tensor(np.diag(v2))) == pytest.approx(expected, rel=1e-9)


def test_frechet_distance_full_covariance_matches_eigen_formula():
    rng = np.random.default_rng(1)
    d = 5
    a, b = rng.normal(size=(d, d)), rng.normal(size=(d, d))
    s1, s2 = a @ a.T + 0.1 * np.eye(d), b @ b.T + 0.1 * np.eye(d)
    # Tr((S1 S2)^{1/2}) = sum sqrt(eig(S1 S2)); the eigenvalues are real and positive
    tr = np.sqrt(np.linalg.eigvals(s1 @ s2).real).sum()
    expected = np.trace(s1) + np.trace(s2) - 2 * tr
    assert frechet_distance(np.zeros(d), s1, np.zeros(d), s2) == pytest.approx(expected, rel=1e-8)


def test_frechet_distance_singular_covariance_is_finite():
    d = 4
    s = np.diag([1.0, 1.0, 0.0, 0.0])  # rank-deficient, as with dead ReLU features
    got = frechet_distance(np.zeros(d), s, np.ones(d), s)
    assert math.isfinite(got) and got == pytest.approx(4.0, abs=1e-4)


def test_fid_same_gaussian_small_and_mean_shift_adds_norm_squared():
    g = torch.Generator().manual_seed(0)
    d, n = 8, 4000
    f1 = torch.randn(n, d, generator=g, dtype=torch.float64)
    f2 = torch.randn(n, d, generator=g, dtype=torch.float64)
    fid0 = fid_from_features(f1, f2)
    assert 0 <= fid0 < 0.05
    for scale in (0.5, 1.0, 2.0):
        delta = torch.full((d,), scale / math.sqrt(d), dtype=torch.float64)  # |delta| = scale
        fid = fid_from_features(f1, f2 + delta)
        assert fid == pytest.approx(scale**2, abs=0.05 + 0.05 * scale**2)
    # exact identity: shifting one set by delta changes FID by 2 (mu2 - mu1).delta + |delta|^2
    delta = torch.linspace(-1, 1, d, dtype=torch.float64)
    dm = (f2.mean(0) - f1.mean(0))
    assert fid_from_features(f1, f2 + delta) == pytest.approx(fid0 + float(2 * dm @ delta + delta @ delta), rel=1e-7, abs=1e-9)


def test_fid_rejects_mismatched_dims():
    with pytest.raises(DataError):
        fid_from_features(torch.randn(10, 3), torch.randn(10, 4))


# ----------------------------------------------------------------------------- KID
def _kid_by_hand(x: np.ndarray, y: np.ndarray) -> float:
    m, d = x.shape
    k = lambda a, b: (float(a @ b) / d + 1.0) ** 3  # noqa: E731
    sxx = sum(k(x[i], x[j]) for i in range(m) for j in range(m) if i != j)
    syy = sum(k(y[i], y[j]) for i in range(m) for j in range(m) if i != j)
    sxy = sum(k(x[i], y[j]) for i in range(m) for j in range(m))
    return sxx / (m * (m - 1)) + syy / (m * (m - 1)) - 2 * sxy / (m * m)


def test_kid_matches_direct_computation():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(6, 3)), rng.normal(0.5, 1.2, size=(6, 3))
    # a subset of the full size is a permutation of the set; the MMD^2 is permutation-invariant
    mean, std = kid_from_features(x, y, num_subsets=3, subset_size=1000)
    assert mean == pytest.approx(_kid_by_hand(x, y), rel=1e-10)
    assert std == pytest.approx(0.0, abs=1e-12)


def test_kid_zero_for_same_distribution_positive_for_shift():
    g = torch.Generator().manual_seed(1)
    d, n = 16, 2000
    f1 = torch.randn(n, d, generator=g, dtype=torch.float64)
    f2 = torch.randn(n, d, generator=g, dtype=torch.float64)
    mean, std = kid_from_features(f1, f2, num_subsets=50, subset_size=500, seed=0)
    assert std > 0
    assert abs(mean) < 3 * std
    mean_s, std_s = kid_from_features(f1, f2 + 1.0, num_subsets=50, subset_size=500, seed=0)
    assert mean_s > 10 * std_s and mean_s > 100 * abs(mean)
    # seeded: same seed, same number
    assert kid_from_features(f1, f2, num_subsets=5, subset_size=100, seed=3) == kid_from_features(f1, f2, num_subsets=5, subset_size=100, seed=3)


# ----------------------------------------------------------------------------- precision / recall
def test_precision_recall_identical_sets():
    f = torch.randn(500, 4, generator=torch.Generator().manual_seed(0))
    pr = precision_recall(f, f.clone())
    assert pr == {"precision": 1.0, "recall": 1.0}


def test_precision_recall_disjoint_clouds():
    g = torch.Generator().manual_seed(0)
    real = torch.randn(400, 4, generator=g)
    fake = torch.randn(300, 4, generator=g) + 100.0
    pr = precision_recall(real, fake)
    assert pr == {"precision": 0.0, "recall": 0.0}


def test_precision_recall_half_of_the_modes():
    g = torch.Generator().manual_seed(0)
    centres = 20.0 * torch.randn(10, 2, generator=g)
    real = centres[torch.arange(2000) % 10] + 0.3 * torch.randn(2000, 2, generator=g)
    fake = centres[torch.arange(1000) % 5] + 0.3 * torch.randn(1000, 2, generator=g)  # modes 0..4 only
    out = precision_recall_density_coverage(real, fake, k=3)
    assert out["precision"] > 0.95
    assert 0.4 < out["recall"] < 0.55
    assert 0.4 < out["coverage"] < 0.55
    # chunking does not change the answer
    import genzoo.eval.prdc as P

    small = P._chunks
    try:
        P._chunks = lambda n, m, budget=4_000_000: small(n, m, budget=997)
        assert P.precision_recall_density_coverage(real, fake, k=3) == out
    finally:
        P._chunks = small


# ----------------------------------------------------------------------------- feature network
@pytest.fixture(scope="module")
def mnist_test():
    from genzoo.data.mnist import load_mnist_arrays

    x, y = load_mnist_arrays(train=False)
    return torch.from_numpy(x), torch.from_numpy(y)


@pytest.fixture(scope="module")
def mnist_train_head():
    from genzoo.data.mnist import load_mnist_arrays

    x, _ = load_mnist_arrays(train=True)
    return torch.from_numpy(x[:2000].copy())


def _to_pm1(u8: torch.Tensor) -> torch.Tensor:
    return (2.0 * u8.float() / 255.0 - 1.0)[:, None]


def test_shipped_feature_net_file_and_metadata():
    assert MNIST_WEIGHTS.exists()
    assert MNIST_WEIGHTS.stat().st_size < 1_000_000
    meta = mnist_feature_metadata()
    assert meta["test_accuracy"] >= 0.99
    assert meta["test_accuracy_binarized"] >= 0.98
    assert meta["sha256"] == hashlib.sha256(MNIST_WEIGHTS.read_bytes()).hexdigest()
    net = load_mnist_feature_net()
    assert meta["num_parameters"] == sum(p.numel() for p in net.parameters())
    assert meta["feature_dim"] == net.feature_dim
    assert not net.training
    assert load_mnist_feature_net() is net  # cached


def test_shipped_cifar10_feature_net_file_and_metadata():
    from genzoo.eval.features import CIFAR10_WEIGHTS, CIFAR10FeatureNet, feature_net_metadata, load_feature_net

    assert CIFAR10_WEIGHTS.exists() and CIFAR10_WEIGHTS.stat().st_size < 2_000_000
    meta = feature_net_metadata("cifar10")
    assert meta["model"] == "genzoo.eval.features.CIFAR10FeatureNet"
    assert meta["test_accuracy"] >= 0.80
    assert "official" in meta["training"]["data"] or "not checked" in meta["training"]["data"]  # says which CIFAR-10
    assert meta["sha256"] == hashlib.sha256(CIFAR10_WEIGHTS.read_bytes()).hexdigest()
    net = load_feature_net("cifar10")
    assert isinstance(net, CIFAR10FeatureNet) and not net.training
    assert meta["num_parameters"] == sum(p.numel() for p in net.parameters()) and meta["feature_dim"] == net.feature_dim
    assert load_feature_net("cifar10") is net  # cached


def test_cifar10_extractor_features_and_refusals(tmp_path):
    from genzoo.eval.features import CIFAR10_WEIGHTS, CIFAR10Extractor

    spec = DataSpec("cifar10", "image", (3, 32, 32), value_range=(-1.0, 1.0), levels=256)
    ext = get_extractor("auto", spec)
    assert isinstance(ext, CIFAR10Extractor) and ext.name == "cifar10" and ext.dim == 256
    g = torch.Generator().manual_seed(0)
    x = torch.rand(40, 3, 32, 32, generator=g) * 2 - 1
    f = ext(x)
    assert f.dtype == torch.float64 and f.shape == (40, 256) and torch.isfinite(f).all()
    torch.testing.assert_close(ext(x.reshape(40, -1)), f)  # flattened images are reshaped
    torch.testing.assert_close(get_extractor("cifar10", value_range=(0.0, 1.0))((x + 1) / 2), f)
    # batching does not change the features (eval-mode BatchNorm)
    torch.testing.assert_close(CIFAR10Extractor(batch_size=7)(x), f, atol=1e-5, rtol=1e-4)  # fp32 conv, other batch shapes
    with pytest.raises(DataError, match="3, 32, 32"):
        ext(torch.zeros(2, 1, 28, 28))
    # your own weights of this architecture: recognised by the file's metadata, named by file and content
    mine = tmp_path / "mine.safetensors"
    mine.write_bytes(CIFAR10_WEIGHTS.read_bytes())
    own = get_extractor(str(mine))
    assert isinstance(own, CIFAR10Extractor) and own.name.startswith("file:mine.safetensors@")
    torch.testing.assert_close(own(x), f)


def test_shipped_feature_net_accuracy(mnist_test):
    x, y = mnist_test
    net = load_mnist_feature_net()
    with torch.no_grad():
        pred = net(_to_pm1(x[:2000])).argmax(1)
    assert (pred == y[:2000]).double().mean() >= 0.985


def test_extractor_value_ranges_agree(mnist_test):
    x = mnist_test[0][:64]
    p = x.float()[:, None] / 255.0
    b = (p > 0.5).float()  # {0, 1}
    binary = DataSpec("mnist", "image", (1, 28, 28), value_range=None, discrete="binary", binarization="dynamic")
    unit = DataSpec("mnist", "image", (1, 28, 28), value_range=(0.0, 1.0))
    pm1 = DataSpec("mnist", "image", (1, 28, 28), value_range=(-1.0, 1.0))
    e_bin, e_unit, e_pm1 = get_extractor("auto", binary), get_extractor("mnist", unit), get_extractor(spec=pm1)
    assert e_bin.name == e_unit.name == e_pm1.name == "mnist" and e_bin.dim == 128
    fb = e_bin(b)
    assert fb.dtype == torch.float64 and fb.shape == (64, 128)
    torch.testing.assert_close(fb, e_unit(b))  # binary 1 == grey 1.0
    torch.testing.assert_close(fb, e_pm1(2 * b - 1))
    torch.testing.assert_close(e_unit(p), e_pm1(2 * p - 1))
    # the default range is genzoo's [-1, 1]; a value_range overrides it
    torch.testing.assert_close(get_extractor("mnist", value_range=(0, 1))(p), e_unit(p))
    # batching does not change features
    # (float32 network: different batch sizes may change the last bits of the matmuls)
    torch.testing.assert_close(get_extractor("mnist", unit, batch_size=7)(p), e_unit(p), rtol=1e-5, atol=1e-5)
    # grossly wrong range (0..255 data declared as [-1, 1]) is caught
    with pytest.raises(DataError, match="value range"):
        e_pm1(x.float()[:, None])


def test_extractor_wrong_shape_and_unknown_name():
    ext = get_extractor("mnist")
    with pytest.raises(DataError, match=r"\(B, 1, 28, 28\).*\(4, 3, 32, 32\)"):
        ext(torch.zeros(4, 3, 32, 32))
    with pytest.raises(ConfigError, match="valid"):
        get_extractor("inceptoin")
    with pytest.raises(ConfigError):
        get_extractor("auto")  # no shape, no spec
    raw = get_extractor("auto", shape=(2,))
    assert raw.name == "raw" and raw.dim == 2
    assert raw(torch.ones(3, 2)).dtype == torch.float64


def test_inception_without_its_weights_names_the_file(tmp_path, monkeypatch):
    """genzoo's own FID Inception (no torch-fidelity) needs the converted weights, which it never downloads."""
    monkeypatch.delenv("GENZOO_INCEPTION_WEIGHTS", raising=False)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    with pytest.raises(ConfigError, match="pt_inception-2015-12-05-6726825d.pth"):
        get_extractor("inception")


def test_fid_floor_small_compared_with_noise(mnist_test, mnist_train_head):
    test = _to_pm1(mnist_test[0][:2000])
    train = _to_pm1(mnist_train_head)
    floor = fid_floor(test, train)
    noise = torch.rand(2000, 1, 28, 28, generator=torch.Generator().manual_seed(0)) * 2 - 1
    ext = get_extractor("mnist")
    f_test = ext(test)
    fid_noise = fid_from_features(f_test, ext(noise))
    assert floor < 0.02 * fid_noise
    # a model that only makes 1s and 7s is far from the data, but less so than noise
    y = mnist_test[1]
    ones_sevens = _to_pm1(mnist_test[0][(y == 1) | (y == 7)][:1000])
    fid_17 = fid_from_features(f_test, ext(ones_sevens))
    assert floor < 0.2 * fid_17 and fid_17 < fid_noise


def test_sample_metrics_entry_point(mnist_test):
    real = _to_pm1(mnist_test[0][:600])
    fake = _to_pm1(mnist_test[0][600:1200])
    out = sample_metrics(fake, real, metrics=("fid", "kid", "pr"), kid_subset_size=200, kid_subsets=20)
    assert out["extractor"] == "mnist" and out["feature_dim"] == 128
    assert out["num_fake"] == out["num_real"] == 600
    assert set(out) >= {"fid", "kid", "kid_std", "precision", "recall"}
    assert out["precision"] > 0.6 and out["recall"] > 0.6
    with pytest.raises(ConfigError, match="valid metrics: fid, kid, pr"):
        sample_metrics(fake, real, metrics=("fid", "is"))
    with pytest.raises(DataError):
        sample_metrics(fake[:, :, :14], real)
    # 2-D toy data uses raw features
    g = torch.Generator().manual_seed(0)
    pts = torch.randn(500, 2, generator=g)
    toy = sample_metrics(pts + 3.0, torch.randn(500, 2, generator=g), metrics="fid")
    assert toy["extractor"] == "raw" and toy["fid"] == pytest.approx(18.0, rel=0.15)


# ----------------------------------------------------------------------------- NLL
class StandardNormal(GenerativeModel):
    """x ~ N(0, I) over (B, *shape): log p(x) = -0.5 |x|^2 - D/2 log(2 pi), nats."""

    likelihood = "exact"

    def __init__(self, discrete: bool = False):
        super().__init__()
        self.dummy = torch.nn.Parameter(torch.zeros(()))
        self.discrete = discrete

    @property
    def discrete_likelihood(self):  # per instance, for the test
        return self.discrete

    def log_prob(self, x, **opts):
        self.check_options(opts, (), "log_prob")
        x = x.reshape(x.shape[0], -1).double()
        return -0.5 * (x**2).sum(1) - 0.5 * x.shape[1] * math.log(2 * math.pi)


class NoLikelihood(GenerativeModel):
    likelihood = "none"


def _normal_dataset(value_range, discrete=None, binarization=None, n=300):
    data = torch.randn(n, 1, 4, 4, generator=torch.Generator().manual_seed(0))
    spec = DataSpec("toy", "image", (1, 4, 4), value_range=value_range, discrete=discrete, binarization=binarization)
    return ArrayDataset(data, None, spec), data


@pytest.mark.parametrize(
    "value_range,discrete,model_discrete,offset",
    [((-1.0, 1.0), None, False, 7.0), ((0.0, 1.0), None, False, 8.0), ((-1.0, 1.0), None, True, 0.0), (None, "binary", False, 0.0)],
)
def test_evaluate_nll_analytic_and_bits_per_dim_offset(value_range, discrete, model_discrete, offset):
    ds, data = _normal_dataset(value_range, discrete, "static" if discrete else None)
    x = data.reshape(len(data), -1).double()
    nll = 0.5 * (x**2).sum(1) + 0.5 * 16 * math.log(2 * math.pi)
    model = StandardNormal(discrete=model_discrete)
    model.train()
    out = evaluate_nll(model, ds, batch_size=64, progress=False)
    assert model.training  # restored
    assert out["nll_nats"] == pytest.approx(float(nll.mean()), rel=1e-12)
    assert out["nll_nats_stderr"] == pytest.approx(float(nll.std() / math.sqrt(len(nll))), rel=1e-10)
    assert out["offset_bits"] == pytest.approx(offset, abs=1e-12)
    assert out["bits_per_dim"] == pytest.approx(float(nll.mean()) / (16 * math.log(2)) + offset, rel=1e-12)
    assert out["num_examples"] == 300 and out["num_dims"] == 16
    assert out["likelihood"] == "exact" and out["is_upper_bound"] is False
    assert out["data"] == ds.spec.describe()
    if discrete:
        assert "static binarisation" in out["data"]


def test_evaluate_nll_limit_options_and_errors():
    ds, data = _normal_dataset((-1.0, 1.0))
    out = evaluate_nll(StandardNormal(), ds, batch_size=32, limit=50, progress=True)
    x = data[ds.subset_indices(50)].reshape(50, -1).double()  # a fixed random subset, not the prefix
    assert out["num_examples"] == 50
    assert out["nll_nats"] == pytest.approx(float((0.5 * (x**2).sum(1)).mean() + 8 * math.log(2 * math.pi)), rel=1e-12)
    with pytest.raises(ConfigError, match="unknown log_prob option"):
        evaluate_nll(StandardNormal(), ds, progress=False, temperature=2.0)
    with pytest.raises(ConfigError, match="sample-based metrics"):
        evaluate_nll(NoLikelihood(), ds, progress=False)


def test_evaluation_subsets_are_not_a_sorted_prefix():
    """The static binarised MNIST test file is sorted by class: a `limit` subset must not be its prefix."""
    from genzoo.data import load_dataset
    from genzoo.eval.features import load_mnist_feature_net

    test = load_dataset("mnist", "test", binarize="static")
    net = load_mnist_feature_net()
    with torch.no_grad():
        head = net(2 * test.data[:300].float().reshape(-1, 1, 28, 28) - 1).argmax(1)
        sub = net(2 * test.tensor(limit=300) - 1).argmax(1)
    assert len(set(head.tolist())) <= 2  # the file really is sorted (this is why)
    assert len(set(sub.tolist())) == 10
    assert torch.equal(test.tensor(limit=300), test.tensor(limit=300))  # fixed subset


# ---------------------------------------------------- NLL protocol: data noise vs model noise (issue 29)
def _dequant_dataset(n=300, dequantize="uniform", binarize="none"):
    from genzoo.data.transforms import image_dataset

    raw = torch.randint(0, 256, (n, 1, 4, 4), generator=torch.Generator().manual_seed(3)).to(torch.uint8)
    return image_dataset("toy", raw, None, levels=256, binarize=binarize, value_range=(0.0, 1.0), dequantize=dequantize)


class RecordingNormal(StandardNormal):
    """StandardNormal that keeps every batch it scores (to compare the dequantised inputs)."""

    def __init__(self):
        super().__init__()
        self.seen = []

    def log_prob(self, x, **opts):
        self.seen.append(x.clone())
        return super().log_prob(x, **opts)


@pytest.mark.parametrize("dequantize,binarize", [("uniform", "none"), ("none", "dynamic")])
def test_data_noise_per_example_same_at_any_batch_size(dequantize, binarize):
    ds = _dequant_dataset(dequantize=dequantize, binarize=binarize)
    a, b = RecordingNormal(), RecordingNormal()
    ra = evaluate_nll(a, ds, batch_size=256, progress=False)
    rb = evaluate_nll(b, ds, batch_size=100, progress=False)
    xa, xb = torch.cat(a.seen), torch.cat(b.seen)
    assert torch.equal(xa, xb)  # example i dequantised / binarised identically at both batch sizes
    assert ra["nll_nats"] == rb["nll_nats"]
    # the same per-example draw in iter_batches / tensor(), and within a limit subset
    assert torch.equal(ds.tensor(seed=0), torch.cat([x for x, _ in ds.iter_batches(7, seed=0)]))
    sub = ds.subset_indices(50)
    assert torch.equal(torch.cat([x for x, _ in ds.iter_batches(16, seed=0, limit=50)]), xa[sub])
    # a different seed gives different noise
    assert not torch.equal(ds.tensor(seed=1), xa)


class NoisyModel(StandardNormal):
    """A stochastic log_prob (like a VAE's / TARFLOW's sampling): draws from the global torch RNG."""

    likelihood = "bound"

    def __init__(self):
        super().__init__()
        self.draws = []
        self.seen = []

    def log_prob(self, x, **opts):
        self.seen.append(x.clone())
        eps = torch.rand(x.shape)
        self.draws.append(eps)
        return super().log_prob(x) + eps.reshape(x.shape[0], -1).sum(1).double()


def test_model_noise_is_a_separate_stream_from_data_noise():
    ds = _dequant_dataset()
    for seed in (0, 5):
        m = NoisyModel()
        before = torch.random.get_rng_state()
        out = evaluate_nll(m, ds, batch_size=64, seed=seed, progress=False)
        assert torch.equal(torch.random.get_rng_state(), before)  # caller's RNG untouched
        # raw levels k are known: x = (k + u) / 256, so u is the dequantisation noise
        k = ds.data[:64].to(torch.float32)
        u = m.seen[0] * 256 - k
        eps = m.draws[0]
        assert not torch.allclose(u, eps, atol=1e-3)  # the model's first draw is not the data noise
        assert abs(float(np.corrcoef(u.flatten().numpy(), eps.flatten().numpy())[0, 1])) < 0.2
        assert out["model_noise_seed"] != out["seed"]
        assert "per-example" in out["protocol"] and str(out["model_noise_seed"]) in out["protocol"]
        # reproducible: the same seed gives the same model noise
        again = evaluate_nll(NoisyModel(), ds, batch_size=64, seed=seed, progress=False)
        assert again["nll_nats"] == out["nll_nats"]


def test_evaluate_nll_docstring_names_options_the_vae_accepts():
    """The **log_prob_opts example in evaluate_nll's docstring must be an option the VAE takes
    (it once said num_samples=..., which VAE.log_prob refuses; issue 29)."""
    import re

    from genzoo.models.vae import VAE

    line = next(l for l in evaluate_nll.__doc__.splitlines() if "**log_prob_opts" in l)
    named = re.findall(r"``(\w+)=", line)
    assert named and all(o in VAE.log_prob_options for o in named), (named, VAE.log_prob_options)
