r"""LPIPS-style distances and the Gram-matrix style loss over a pluggable feature network.

LPIPS (Zhang et al. 2018) between images ``a`` and ``b`` with feature maps ``f_l`` (channels
``C_l``) of a network:

    LPIPS(a, b) = sum_l  mean_{h, w}  sum_c  w_{l,c} (fhat_l(a) - fhat_l(b))^2_{c,h,w},
    fhat = f / (||f||_2 over channels + 1e-10).

``w_{l,c}`` are the learned linear heads when a heads file is given (safetensors with the lpips
package's names ``lin{l}.model.1.weight``, shape ``[1, C_l, 1, 1]``), else 1 (LPIPS's
``lpips=False`` variant). BG-LPIPS averages over ``h, w`` only outside an object mask (the mask
is area-resized to each layer; a weighted mean).

Style loss (Gatys et al.; SyncDiffusion's Intra-Style-L): per layer the Gram matrix
``G = F F^T / (C H W)`` of the ``[C, H*W]`` map (the tutorial's ``a*b*c*d`` normalization with
batch ``a = 1``), MSE between the two Grams, summed over layers.
"""
from __future__ import annotations

import os
from typing import Any, Sequence

import torch
import torch.nn.functional as F

from syncsde.metrics.features import WeightsNotFoundError, check_images

__all__ = ["lpips", "bg_lpips", "style_loss", "gram", "load_lpips_heads"]


def load_lpips_heads(path: str | os.PathLike) -> list[torch.Tensor]:
    """Linear heads ``[C_l]`` from a safetensors file with keys ``lin{l}.model.1.weight``."""
    from safetensors.torch import load_file

    if not os.path.isfile(path):
        raise WeightsNotFoundError(
            f"LPIPS heads file {str(path)!r} not found: it is the lpips package's "
            "weights/v0.1/vgg.pth (github.com/richzhang/PerceptualSimilarity) converted with "
            "`python -m syncsde.metrics.features convert vgg.pth vgg_heads.safetensors`")
    st = load_file(str(path))
    heads = []
    for l in range(len(st)):
        key = f"lin{l}.model.1.weight"
        if key not in st:
            break
        heads.append(st[key].reshape(-1).float())
    if not heads:
        raise ValueError(f"LPIPS heads file {str(path)!r} has no lin0.model.1.weight")
    return heads


def _unit(f: torch.Tensor) -> torch.Tensor:
    return f / (f.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)


def _pair(a: Any, b: Any) -> tuple[torch.Tensor, torch.Tensor]:
    x, y = check_images(a, "a"), check_images(b, "b")
    if x.shape != y.shape:
        raise ValueError(f"a and b must have the same shape, got {tuple(x.shape)} and {tuple(y.shape)}")
    return x, y


@torch.no_grad()
def lpips(a: Any, b: Any, net: Any, heads: Sequence[torch.Tensor] | None = None,
          weight: torch.Tensor | None = None) -> torch.Tensor:
    """Per-image LPIPS ``[B]`` between ``a`` and ``b`` (``[B, 3, H, W]`` in [0, 1]).
    ``weight [B, 1, H, W]`` (or ``[H, W]``) in [0, 1] restricts the spatial mean (BG-LPIPS)."""
    x, y = _pair(a, b)
    fa, fb = net.feature_maps(x), net.feature_maps(y)
    if heads is not None and len(heads) != len(fa):
        raise ValueError(f"{len(heads)} LPIPS heads for {len(fa)} feature layers")
    if weight is not None:
        w = torch.as_tensor(weight, dtype=torch.float32)
        w = w.view(1, 1, *w.shape) if w.ndim == 2 else w
        if w.ndim != 4 or w.shape[-2:] != x.shape[-2:]:
            raise ValueError(f"mask must be [H, W] or [B, 1, H, W] matching the images, got "
                             f"{tuple(torch.as_tensor(weight).shape)}")
    total = torch.zeros(x.shape[0])
    for l, (p, q) in enumerate(zip(fa, fb)):
        d = (_unit(p) - _unit(q)).pow(2)
        if heads is not None:
            d = d * heads[l].view(1, -1, 1, 1)
        d = d.sum(1, keepdim=True)                                     # [B, 1, h, w]
        if weight is None:
            total += d.mean(dim=(1, 2, 3))
        else:
            wl = F.adaptive_avg_pool2d(w, d.shape[-2:]).expand_as(d)
            den = wl.sum(dim=(1, 2, 3))
            if (den <= 0).any():
                raise ValueError("the mask leaves no pixels to compare")
            total += (d * wl).sum(dim=(1, 2, 3)) / den
    return total


def bg_lpips(a: Any, b: Any, object_mask: Any, net: Any,
             heads: Sequence[torch.Tensor] | None = None) -> torch.Tensor:
    """LPIPS outside ``object_mask`` (1 = object): the background-preservation score of editing."""
    m = torch.as_tensor(object_mask, dtype=torch.float32)
    return lpips(a, b, net, heads, weight=1.0 - m)


def gram(f: torch.Tensor) -> torch.Tensor:
    """``[B, C, C]`` Gram matrices of ``[B, C, H, W]`` maps normalized by ``C H W``."""
    B, C, H, W = f.shape
    g = f.reshape(B, C, H * W)
    return g @ g.transpose(1, 2) / (C * H * W)


@torch.no_grad()
def style_loss(a: Any, b: Any, net: Any) -> torch.Tensor:
    """Per-image ``sum_l MSE(G_l(a), G_l(b))`` ``[B]``."""
    x, y = _pair(a, b)
    total = torch.zeros(x.shape[0])
    for p, q in zip(net.feature_maps(x), net.feature_maps(y)):
        total += (gram(p.double()) - gram(q.double())).pow(2).mean(dim=(1, 2)).float()
    return total
