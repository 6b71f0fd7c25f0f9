"""Linear probe: how linearly separable the classes are in a model's frozen encoder features.

Protocol (``genzoo eval RUN --metrics probe``):

1. features f(x) = ``model.encode(x)`` (BiGAN / BiGAN-QP: E(x); O-GAN: the standardised
   discriminator features; VAE: the posterior mean mu(x)), computed without gradients on
   the run's own data representation (binarised images for a binarised VAE);
2. a **fixed random subset of 10,000 images of the training split** (``n_train``; the
   permutation of :meth:`ArrayDataset.subset_indices`, seed 0) and the **whole evaluation
   split** (10,000 MNIST test images);
3. features standardised with the training subset's mean and std, then a multinomial
   logistic regression with L2 penalty (C = 1, i.e. minimise sum_i CE_i + ||W||^2 / (2C))
   fitted by L-BFGS: scikit-learn's ``LogisticRegression`` when installed, otherwise the
   same objective in torch (float64, :func:`fit_logistic_regression_torch`);
4. the reported number is the test accuracy (also the training accuracy, the backend,
   the sizes and the feature dimension).

For reference, the same probe on raw MNIST pixels gives 89 % (benchmarks/gans_mnist.py,
row ``pixels``); even the features of a barely trained conv encoder reach about that, so
read an encoder's number against this baseline.
"""
from __future__ import annotations

import numpy as np
import torch

from ..errors import ConfigError, DataError

#: training examples the probe is fitted on by default (a fixed random subset)
N_TRAIN = 10000


@torch.no_grad()
def encoder_features(model, data, *, limit: int | None = None, batch_size: int = 500, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(features (N, F) float64, labels (N,) int64) of ``data``'s fixed random ``limit`` subset.

    ``model`` must have ``encode(x) -> (B, F)``; ``data`` an :class:`ArrayDataset` with labels.
    """
    if not callable(getattr(model, "encode", None)):
        raise ConfigError(f"the probe needs an encoder, but {type(model).__name__} has no encode(); "
                          "models with one: bigan, bigan_qp, ogan, vae")
    if data.labels is None:
        raise DataError(f"the probe needs class labels, but {data.spec.describe()} has none (the static binarised MNIST "
                        "ships without labels); evaluate a run trained on labelled data, e.g. mnist with binarize=none or dynamic")
    was_training = getattr(model, "training", False)
    if hasattr(model, "eval"):
        model.eval()
    device = getattr(model, "device", torch.device("cpu"))
    feats, labels = [], []
    for x, y in data.iter_batches(batch_size, seed=seed, limit=limit):
        f = model.encode(x.to(device))
        feats.append(f.reshape(f.shape[0], -1).double().cpu())
        labels.append(y)
    if hasattr(model, "train"):
        model.train(was_training)
    return torch.cat(feats).numpy(), torch.cat(labels).long().numpy()


def fit_logistic_regression_torch(x: np.ndarray, y: np.ndarray, *, C: float = 1.0, max_iter: int = 500,
                                  num_classes: int | None = None):
    """Multinomial logistic regression minimising sum_i CE_i + ||W||^2 / (2C) (bias unpenalised),
    scikit-learn's objective, by L-BFGS in float64. Returns a predict(x) -> labels function."""
    xt, yt = torch.as_tensor(x, dtype=torch.float64), torch.as_tensor(y, dtype=torch.long)
    k = int(num_classes or int(yt.max()) + 1)
    w = torch.zeros(xt.shape[1], k, dtype=torch.float64, requires_grad=True)
    b = torch.zeros(k, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], lr=1.0, max_iter=max_iter, tolerance_grad=1e-6, tolerance_change=1e-10,
                            history_size=20, line_search_fn="strong_wolfe")
    n = xt.shape[0]

    def closure():
        opt.zero_grad()
        # divided by n: the same minimiser, better scaled for L-BFGS's tolerances
        loss = (torch.nn.functional.cross_entropy(xt @ w + b, yt, reduction="sum") + (w * w).sum() / (2 * C)) / n
        loss.backward()
        return loss

    opt.step(closure)
    w_, b_ = w.detach(), b.detach()

    def predict(q: np.ndarray) -> np.ndarray:
        return (torch.as_tensor(q, dtype=torch.float64) @ w_ + b_).argmax(1).numpy()

    predict.coef, predict.intercept = w_.T.numpy(), b_.numpy()
    return predict


def fit_probe(x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray, y_test: np.ndarray, *,
              C: float = 1.0, backend: str = "auto", max_iter: int = 1000) -> dict:
    """Standardise with the training features' statistics, fit the logistic regression, report accuracies.

    backend: "sklearn", "torch" or "auto" (sklearn when importable).
    Returns {"accuracy": test accuracy in [0, 1], "train_accuracy", "backend", "n_train",
    "n_test", "feature_dim", "C"}.
    """
    if backend not in ("auto", "sklearn", "torch"):
        raise ConfigError(f"unknown probe backend {backend!r}; valid: auto, sklearn, torch")
    if len(np.unique(y_train)) < 2:
        raise DataError("the probe needs at least two classes in its training subset")
    mu = x_train.mean(0)
    sd = x_train.std(0)
    sd[sd < 1e-12] = 1.0
    xtr, xte = (x_train - mu) / sd, (x_test - mu) / sd
    if backend == "auto":
        try:
            import sklearn  # noqa: F401

            backend = "sklearn"
        except ImportError:
            backend = "torch"
    if backend == "sklearn":
        import warnings

        from sklearn.linear_model import LogisticRegression

        clf = LogisticRegression(C=C, max_iter=max_iter)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # ConvergenceWarning after max_iter: the accuracy is still reported
            clf.fit(xtr, y_train)
        predict = clf.predict
    else:
        predict = fit_logistic_regression_torch(xtr, y_train, C=C, max_iter=max_iter, num_classes=int(max(y_train.max(), y_test.max())) + 1)
    return {
        "accuracy": float((predict(xte) == y_test).mean()),
        "train_accuracy": float((predict(xtr) == y_train).mean()),
        "backend": "scikit-learn LogisticRegression (lbfgs)" if backend == "sklearn" else "torch L-BFGS",
        "n_train": int(len(y_train)), "n_test": int(len(y_test)), "feature_dim": int(x_train.shape[1]), "C": float(C),
    }


def linear_probe(model, train_data, test_data, *, n_train: int = N_TRAIN, n_test: int | None = None,
                 C: float = 1.0, backend: str = "auto", seed: int = 0) -> dict:
    """Linear-probe accuracy of ``model.encode`` features (module docstring: the protocol).

    train_data / test_data: labelled :class:`ArrayDataset`s (e.g. MNIST train and test splits).
    n_train / n_test: sizes of the fixed random subsets (None = the whole split).
    """
    xtr, ytr = encoder_features(model, train_data, limit=n_train, seed=seed)
    xte, yte = encoder_features(model, test_data, limit=n_test, seed=seed + 1)
    out = fit_probe(xtr, ytr, xte, yte, C=C, backend=backend)
    out["protocol"] = (f"logistic regression (C={C:g}) on standardised encode() features of a fixed random subset of "
                       f"{out['n_train']} training images, accuracy on {out['n_test']} evaluation images")
    return out
