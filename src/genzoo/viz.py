"""Pictures: image grids as PNG (PIL + numpy, no torchvision) and scatter plots of vector samples
(2-D: one scatter; 1-D: a histogram; more dimensions: a pairwise scatter matrix of the first
:data:`MAX_PAIR_DIMS` coordinates). Pictures are optional: a kind of data with no picture is
skipped with one line on stderr, never an error."""
from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import torch


def to_uint8_images(x: torch.Tensor, value_range: tuple[float, float] | None) -> np.ndarray:
    """(B, C, H, W) in ``value_range`` ((0,1) for binary data / probabilities) -> uint8 (B, H, W, C)."""
    lo, hi = value_range if value_range is not None else (0.0, 1.0)
    x = x.detach().float().cpu()
    x = ((x - lo) / (hi - lo)).clamp(0, 1)
    return (x * 255 + 0.5).to(torch.uint8).permute(0, 2, 3, 1).numpy()


def image_grid(x: torch.Tensor, value_range=None, nrow: int | None = None, pad: int = 2, scale: int = 1) -> np.ndarray:
    """Tile (B, C, H, W) images into one uint8 array (H', W', C) with ``pad`` pixels of gap."""
    if x.dim() != 4:
        raise ValueError(f"image_grid needs (B, C, H, W), got shape {tuple(x.shape)}")
    imgs = to_uint8_images(x, value_range)
    b, h, w, c = imgs.shape
    nrow = nrow or int(math.ceil(math.sqrt(b)))
    ncol = int(math.ceil(b / nrow))
    grid = np.full((ncol * (h + pad) + pad, nrow * (w + pad) + pad, c), 64, dtype=np.uint8)
    for i in range(b):
        r, q = divmod(i, nrow)
        grid[pad + r * (h + pad): pad + r * (h + pad) + h, pad + q * (w + pad): pad + q * (w + pad) + w] = imgs[i]
    if scale > 1:
        grid = grid.repeat(scale, 0).repeat(scale, 1)
    return grid


def save_image_grid(x: torch.Tensor, path, value_range=None, nrow: int | None = None, scale: int | None = None) -> Path:
    """Save a grid PNG of (B, C, H, W) images; small images are upscaled so the PNG is readable."""
    from PIL import Image

    if scale is None:
        scale = max(1, 96 // max(x.shape[-1], 1)) if x.shape[-1] < 32 else 1
        scale = min(scale, 4)
    grid = image_grid(x, value_range, nrow=nrow, scale=scale)
    mode = "L" if grid.shape[2] == 1 else "RGB"
    img = Image.fromarray(grid[..., 0] if mode == "L" else grid, mode=mode)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp.png")
    img.save(tmp)
    tmp.replace(path)
    return path


def save_scatter(x: torch.Tensor, path, reference: torch.Tensor | None = None, title: str = "") -> Path:
    """Scatter plot of 2-D samples (B, 2) as PNG, with optional reference points in grey."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4, 4), dpi=100)
    if reference is not None:
        r = reference.detach().cpu().numpy()
        ax.scatter(r[:, 0], r[:, 1], s=1, c="0.75", label="data")
    p = x.detach().float().cpu().numpy()
    ax.scatter(p[:, 0], p[:, 1], s=1, c="C0", label="samples")
    ax.set_aspect("equal")
    if title:
        ax.set_title(title)
    return _save_figure(fig, path)


def _save_figure(fig, path) -> Path:
    """tight_layout, write ``path`` (folders made), close the figure; returns the path."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


MAX_PAIR_DIMS = 4  # vector samples with more dimensions: pairwise scatters of the first 4


def save_pairs(x: torch.Tensor, path, max_dims: int = MAX_PAIR_DIMS, title: str = "") -> Path:
    """Samples (B, D) as PNG: a histogram for D = 1, else a scatter matrix of the first
    ``min(D, max_dims)`` coordinates (histograms on the diagonal, pairwise scatters off it)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    p = x.detach().float().cpu().reshape(x.shape[0], -1).numpy()
    d = p.shape[1]
    k = max(1, min(d, int(max_dims)))
    fig, axes = plt.subplots(k, k, figsize=(2.2 * k, 2.2 * k), dpi=100, squeeze=False)
    for i in range(k):
        for j in range(k):
            ax = axes[i][j]
            if i == j:
                ax.hist(p[:, i], bins=40, color="C0")
            else:
                ax.scatter(p[:, j], p[:, i], s=1, c="C0")
            if i == k - 1:
                ax.set_xlabel(f"x{j}")
            if j == 0:
                ax.set_ylabel(f"x{i}")
    fig.suptitle(title or (f"first {k} of {d} dimensions" if d > k else f"{d} dimension{'s' if d > 1 else ''}"))
    return _save_figure(fig, path)


def save_samples(x: torch.Tensor, path, spec, nrow: int | None = None) -> Path | None:
    """Save samples according to the data kind: image grid (PNG), 2-D scatter (PNG), or for
    vectors of other sizes a histogram (1-D) / pairwise scatter matrix of the first
    :data:`MAX_PAIR_DIMS` dimensions (PNG). Data with no picture (other kinds) is skipped with
    one line on stderr and None is returned: pictures are optional, never a crash."""
    if spec.kind == "image" and x.dim() == 4:
        vr = spec.value_range if spec.discrete is None else (0.0, 1.0) if spec.discrete == "binary" else (0.0, spec.levels - 1)
        return save_image_grid(x, path, value_range=vr, nrow=nrow)
    if spec.kind == "vector" and x.dim() == 2:
        if x.shape[-1] == 2:
            return save_scatter(x, path)
        return save_pairs(x, path)
    print(f"genzoo: no picture for {spec.kind} data of shape {tuple(x.shape[1:])}; {Path(path).name} not written",
          file=sys.stderr)
    return None


def _image_range(spec):
    return spec.value_range if spec.discrete is None else (0.0, 1.0) if spec.discrete == "binary" else (0.0, spec.levels - 1)


def save_reconstructions(model, x: torch.Tensor, path, spec) -> Path:
    """Grid of (B, C, H, W) images ``x`` beside their reconstructions decode(encode(x)):
    each row holds 4 pairs (original, reconstruction). ``model`` needs encode and decode."""
    with torch.no_grad():
        r = model.decode(model.encode(x)).float().cpu()
    pairs = torch.stack([x.float().cpu(), r], 1).reshape(-1, *x.shape[1:])  # x0, r0, x1, r1, ...
    return save_image_grid(pairs, path, value_range=_image_range(spec), nrow=8)


def save_interpolations(model, x_a: torch.Tensor, x_b: torch.Tensor, path, spec, steps: int = 8) -> Path:
    """Latent interpolation grid: row i decodes (1 - t) encode(x_a[i]) + t encode(x_b[i]) for
    ``steps`` values of t from 0 to 1, between the originals x_a[i] (left) and x_b[i] (right)."""
    with torch.no_grad():
        za, zb = model.encode(x_a), model.encode(x_b)
        t = torch.linspace(0, 1, steps, dtype=za.dtype, device=za.device).view(1, steps, 1)
        z = ((1 - t) * za[:, None] + t * zb[:, None]).reshape(-1, za.shape[1])
        mid = model.decode(z).float().cpu().reshape(x_a.shape[0], steps, *x_a.shape[1:])
    rows = torch.cat([x_a.float().cpu()[:, None], mid, x_b.float().cpu()[:, None]], 1)
    return save_image_grid(rows.reshape(-1, *x_a.shape[1:]), path, value_range=_image_range(spec), nrow=steps + 2)
