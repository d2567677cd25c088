r"""Coherence metrics of wide images: how alike the parts of one panorama are.

All work on non-overlapping crops (:func:`crops`: ``size x size`` squares, ``size`` = the image
height by default, at columns ``0, size, 2 size, ...``; a 512x3072 panorama gives 6 crops and
15 pairs, as in SyncDiffusion's evaluation).

- **Intra-LPIPS** (SyncDiffusion): LPIPS over all crop pairs, mean over pairs, then over images.
- **Intra-Style-L** (SyncDiffusion): the Gram style loss over all crop pairs. SyncDiffusion's code
  **sums** over pairs (then averages over images); its paper's scale does not match that code
  (their issue #6). Both are returned, labelled: ``sum`` (their code) and ``mean`` (per pair).
- **HSV histograms** (SyncVC's colour coherence): per crop, normalized 32-bin histograms of H, S
  and V. For a pair, ``intersection = mean_channels sum_bins min(p, q)`` (1 for identical crops)
  and ``distance = sum_channels sum_bins (p - q)^2 / (p + q)`` (symmetric chi-square, 0 for
  identical crops; empty bins skipped). SyncVC does not publish its code: these are our
  definitions and are labelled so. Mean over pairs, then over images.
- **Seam jump**: mean absolute difference between adjacent columns at window seams, and its
  ratio to the same mean over the other columns (1 = seams look like the rest).
"""
from __future__ import annotations

import itertools
from typing import Any, Callable, Sequence

import numpy as np
import torch

from syncsde.metrics.features import check_images

__all__ = ["crops", "crop_pairs", "intra_lpips", "intra_style", "rgb_to_hsv", "hsv_histograms",
           "histogram_intersection", "histogram_chi2", "hsv_coherence", "window_seams",
           "seam_jump"]


def crops(image: torch.Tensor, size: int | None = None) -> torch.Tensor:
    """Non-overlapping ``size x size`` crops ``[K, 3, size, size]`` of one ``[3, H, W]`` image
    (``size`` default ``H``; crops start at columns ``0, size, ...`` and row 0)."""
    x = check_images(image, "image")
    if x.shape[0] != 1:
        raise ValueError(f"crops takes one image [3, H, W], got a batch of {x.shape[0]}")
    H, W = x.shape[-2:]
    s = H if size is None else int(size)
    if s < 1 or s > H or s > W:
        raise ValueError(f"crop size {s} does not fit a {H}x{W} image")
    k = W // s
    return torch.stack([x[0, :, :s, i * s:(i + 1) * s] for i in range(k)])


def crop_pairs(n: int) -> list[tuple[int, int]]:
    return list(itertools.combinations(range(n), 2))


def _per_image_pairs(images: Sequence[torch.Tensor], size: int | None,
                     score: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> list[np.ndarray]:
    out = []
    for img in images:
        c = crops(img, size)
        pairs = crop_pairs(len(c))
        if not pairs:
            raise ValueError(f"an image of width {img.shape[-1]} has fewer than 2 crops")
        i, j = zip(*pairs)
        out.append(score(c[list(i)], c[list(j)]).double().numpy())
    return out


def intra_lpips(images: Sequence[torch.Tensor], net: Any, size: int | None = None,
                heads: Sequence[torch.Tensor] | None = None) -> float:
    """Mean over images of the mean LPIPS over crop pairs."""
    from syncsde.metrics.perceptual import lpips

    per = _per_image_pairs(images, size, lambda a, b: lpips(a, b, net, heads))
    return float(np.mean([p.mean() for p in per]))


def intra_style(images: Sequence[torch.Tensor], net: Any, size: int | None = None) -> dict:
    """``{"sum": mean over images of the sum over pairs (SyncDiffusion's code),
    "mean": mean over images of the mean over pairs}``."""
    from syncsde.metrics.perceptual import style_loss

    per = _per_image_pairs(images, size, lambda a, b: style_loss(a, b, net))
    return {"sum": float(np.mean([p.sum() for p in per])),
            "mean": float(np.mean([p.mean() for p in per]))}


def rgb_to_hsv(x: torch.Tensor) -> torch.Tensor:
    """``[..., 3, H, W]`` RGB in [0, 1] -> HSV in [0, 1] (hue as a fraction of a turn)."""
    r, g, b = x.unbind(-3)
    mx, _ = x.max(-3)
    mn, _ = x.min(-3)
    d = mx - mn
    safe = torch.where(d > 0, d, torch.ones_like(d))
    h = torch.where(mx == r, ((g - b) / safe) % 6,
                    torch.where(mx == g, (b - r) / safe + 2, (r - g) / safe + 4)) / 6
    h = torch.where(d > 0, h, torch.zeros_like(h))
    s = torch.where(mx > 0, d / torch.where(mx > 0, mx, torch.ones_like(mx)), torch.zeros_like(mx))
    return torch.stack([h, s, mx], -3)


def hsv_histograms(x: torch.Tensor, bins: int = 32) -> torch.Tensor:
    """``[K, 3, bins]``: per crop and HSV channel, the normalized histogram over [0, 1]."""
    hsv = rgb_to_hsv(check_images(x, "crops")).double()
    idx = (hsv * bins).long().clamp(0, bins - 1).flatten(2)           # [K, 3, H*W]
    h = torch.zeros(*idx.shape[:2], bins, dtype=torch.float64)
    h.scatter_add_(2, idx, torch.ones_like(idx, dtype=torch.float64))
    return h / idx.shape[-1]


def histogram_intersection(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """``mean_channels sum_bins min(p, q)`` for ``[..., 3, bins]`` histograms."""
    return torch.minimum(p, q).sum(-1).mean(-1)


def histogram_chi2(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """``sum_channels sum_bins (p - q)^2 / (p + q)`` (bins empty in both skipped)."""
    s = p + q
    return torch.where(s > 0, (p - q) ** 2 / torch.where(s > 0, s, torch.ones_like(s)),
                       torch.zeros_like(s)).sum((-1, -2))


def hsv_coherence(images: Sequence[torch.Tensor], size: int | None = None, bins: int = 32) -> dict:
    """``{"intersection", "distance"}``: mean over images of the mean over crop pairs."""
    inter, dist = [], []
    for img in images:
        h = hsv_histograms(crops(img, size), bins)
        pairs = crop_pairs(len(h))
        if not pairs:
            raise ValueError(f"an image of width {img.shape[-1]} has fewer than 2 crops")
        i, j = (list(t) for t in zip(*pairs))
        inter.append(histogram_intersection(h[i], h[j]).mean().item())
        dist.append(histogram_chi2(h[i], h[j]).mean().item())
    return {"intersection": float(np.mean(inter)), "distance": float(np.mean(dist))}


def window_seams(width: int, window: int, stride: int) -> list[int]:
    """Columns where a window starts or ends inside ``(0, width)`` (the boundary between
    columns ``c-1`` and ``c``), for windows at ``0, stride, ...`` (the last flush right)."""
    starts = list(range(0, max(width - window, 0) + 1, stride))
    if starts[-1] != width - window:
        starts.append(width - window)
    cols = {s for s in starts} | {s + window for s in starts}
    return sorted(c for c in cols if 0 < c < width)


def seam_jump(images: Sequence[torch.Tensor], seams: Sequence[int]) -> dict:
    """``{"jump": mean |x[..., c] - x[..., c-1]| over seam columns c, "ratio": jump over the
    same mean at all other columns}`` over all images (same width)."""
    x = torch.stack([check_images(i, "image")[0] for i in images]).double()
    W = x.shape[-1]
    s = np.asarray(sorted(set(int(c) for c in seams)))
    if s.size == 0 or s.min() < 1 or s.max() > W - 1:
        raise ValueError(f"seams must be columns in [1, {W - 1}], got {list(seams)}")
    d = (x[..., 1:] - x[..., :-1]).abs()                                 # d[..., c-1]: c-1 -> c
    rest = np.setdiff1d(np.arange(1, W), s)
    jump = d[..., s - 1].mean().item()
    other = d[..., rest - 1].mean().item() if rest.size else float("nan")
    return {"jump": jump, "ratio": jump / other if other > 0 else float("nan")}
