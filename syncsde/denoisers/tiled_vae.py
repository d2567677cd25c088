"""Tiled VAE encode / decode with blended overlaps, for images larger than the VAE handles at
once (memory grows with the image area; tiles keep it at one tile's).

Tiles of ``tile`` latent pixels every ``tile - overlap`` (the last one moved in so the whole
image is covered, :func:`syncsde.views.window_offsets`) are encoded / decoded on their own and
blended with a ramp that is 1 inside and falls linearly over ``overlap`` pixels at each side,

    out(p) = sum_t r_t(p) T_t(p) / sum_t r_t(p),   r(i) = min(1, (i+1)/(o+1), (n-i)/(o+1)),

so neighbouring tiles fade into each other instead of meeting at a hard edge (hard edges show
as tone shifts between tiles). Encoding tiles start on the VAE grid (multiples of the factor
``f``), so a tile's latent lands exactly on its place. Encoding takes the posterior mean (a
sample drawn per tile would disagree on overlaps). For a pixel-space model (the scenes model,
factor 1, :class:`PixelSpace`) the "VAE" is the identity and nothing is tiled.
"""
from __future__ import annotations

from typing import Any

import torch

from syncsde.views import window_offsets

__all__ = ["blend_ramp", "tile_starts", "tiled_encode", "tiled_decode"]


def blend_ramp(n: int, overlap: int) -> torch.Tensor:
    """``[n]`` weights: 1 inside, ``(i+1)/(o+1)`` rising over the first ``o`` pixels and falling
    likewise over the last ``o`` (always > 0)."""
    i = torch.arange(n, dtype=torch.float32)
    o = float(max(0, overlap))
    return torch.minimum(torch.ones(n), torch.minimum((i + 1) / (o + 1), (n - i) / (o + 1)))


def tile_starts(length: int, tile: int, overlap: int) -> list[int]:
    """Tile starts along ``length`` (tiles of ``min(tile, length)`` every ``tile - overlap``)."""
    tile = min(int(tile), int(length))
    return window_offsets(int(length), tile, max(1, tile - int(overlap)))


def _check(tile: int, overlap: int, what: str) -> None:
    if isinstance(tile, bool) or not isinstance(tile, int) or tile < 1:
        raise ValueError(f"{what} tile must be an integer >= 1, got {tile!r}")
    if isinstance(overlap, bool) or not isinstance(overlap, int) or not 0 <= overlap < tile:
        raise ValueError(f"{what} overlap must be an integer in [0, tile), got {overlap!r}")


def _is_pixel_space(den: Any) -> bool:
    return int(getattr(den, "vae_scale_factor", 1)) == 1


def _blend(batch: int, channels: int, H: int, W: int, tiles, dtype=torch.float32) -> torch.Tensor:
    """Blends ``tiles = [(top, left, tensor [B, C, th, tw], overlap)]`` into ``[B, C, H, W]``."""
    num = torch.zeros((batch, channels, H, W), dtype=dtype)
    den = torch.zeros((H, W), dtype=dtype)
    for top, left, t, o in tiles:
        th, tw = t.shape[-2:]
        r = blend_ramp(th, o)[:, None] * blend_ramp(tw, o)[None, :]
        num[..., top:top + th, left:left + tw] += t.float().cpu() * r
        den[top:top + th, left:left + tw] += r
    return num / den


@torch.no_grad()
def tiled_encode(den: Any, images: torch.Tensor, tile: int | None = None,
                 overlap: int | None = None, progress: bool = False) -> torch.Tensor:
    """Images ``[B, 3, H, W]`` in [0, 1] (H, W multiples of the VAE factor f) -> latents
    ``[B, C, H/f, W/f]`` (posterior mean). ``tile`` / ``overlap`` in **latent** pixels
    (default: the model's sample size and a quarter of it)."""
    from tqdm.auto import tqdm

    x = images[None] if images.dim() == 3 else images
    f = int(getattr(den, "vae_scale_factor", 1))
    H, W = x.shape[-2:]
    if H % f or W % f:
        raise ValueError(f"image size {W}x{H} must be a multiple of the VAE factor {f}")
    if _is_pixel_space(den):
        return den.encode(x, sample=False)
    h, w = H // f, W // f
    tile = int(getattr(den, "sample_size", 64)) if tile is None else tile
    overlap = tile // 4 if overlap is None else overlap
    _check(tile, overlap, "encode")
    if h <= tile and w <= tile:
        return den.encode(x, sample=False)
    tops, lefts = tile_starts(h, tile, overlap), tile_starts(w, tile, overlap)
    th, tw = min(tile, h), min(tile, w)
    parts = []
    for top in tqdm(tops, desc="vae encode", disable=not progress, leave=False):
        for left in lefts:
            crop = x[..., top * f:(top + th) * f, left * f:(left + tw) * f]
            parts.append((top, left, den.encode(crop, sample=False), overlap))
    z = _blend(x.shape[0], parts[0][2].shape[1], h, w, parts)
    return z.to(getattr(den, "device", "cpu"))


@torch.no_grad()
def tiled_decode(den: Any, latents: torch.Tensor, tile: int | None = None,
                 overlap: int | None = None, progress: bool = False) -> torch.Tensor:
    """Latents ``[B, C, h, w]`` -> images ``[B, 3, h*f, w*f]`` in [0, 1] (float32, CPU).
    ``tile`` / ``overlap`` in latent pixels (default: the sample size and a quarter of it);
    tiles are blended in pixel space over ``overlap * f`` pixels."""
    from tqdm.auto import tqdm

    z = latents[None] if latents.dim() == 3 else latents
    if _is_pixel_space(den):
        return den.decode(z)
    f = int(den.vae_scale_factor)
    h, w = z.shape[-2:]
    tile = int(getattr(den, "sample_size", 64)) if tile is None else tile
    overlap = tile // 4 if overlap is None else overlap
    _check(tile, overlap, "decode")
    if h <= tile and w <= tile:
        return den.decode(z)
    tops, lefts = tile_starts(h, tile, overlap), tile_starts(w, tile, overlap)
    th, tw = min(tile, h), min(tile, w)
    parts = []
    for top in tqdm(tops, desc="vae decode", disable=not progress, leave=False):
        for left in lefts:
            img = den.decode(z[..., top:top + th, left:left + tw])
            parts.append((top * f, left * f, img, overlap * f))
    return _blend(z.shape[0], 3, h * f, w * f, parts).clamp(0, 1)
