"""Decoding large canvases: the ``vae_tiling`` / ``wrap`` options of the one-call functions.

:func:`decode_canvas` decodes latents ``[B, C, h, w]`` to images in [0, 1] in one of four ways:

* untiled, no wrap: the VAE's own ``decode`` of the whole latent;
* untiled with ``wrap``: **wrap padding** -- ``padding`` latent rows / columns from each end are
  copied to the other side before the decode and their pixels cropped after, so the decoder sees
  the wrap as an interior (diffusers' panorama pipeline does this along the width);
* tiled, no wrap: :func:`syncsde.denoisers.tiled_vae.tiled_decode` (tiles of ``tile`` latent
  pixels blended over ``overlap`` with a linear ramp);
* tiled with ``wrap``: the same ramp blend on the **periodic** canvas. Along a wrapped axis of
  length ``L > tile`` the tiles start every ``tile - overlap`` all the way round
  (``ceil(L / stride)`` tiles, the last ones crossing the seam, read with ``index mod L``), so
  the seam is blended exactly like any interior tile boundary; an axis with ``L <= tile`` is one
  tile of ``L + 2 padding`` starting at ``-padding`` (wrap padding inside the tile, the copies
  blended back onto the opposite end with the ramp). The blend is

      out(p) = sum_t r_t(p) T_t(p) / sum_t r_t(p),   with tile pixel i landing on (start + i) mod L,

  and ``r_t`` the separable ramp of :func:`~syncsde.denoisers.tiled_vae.blend_ramp`.

``vae_tiling="auto"`` tiles when the latent is larger than the model's sample size in either
dimension (the size the VAE was trained at; a larger canvas grows the decoder's memory with its
area, and quadratically in its mid-block attention). Pixel-space models (factor 1) decode as the
identity: nothing to tile or pad.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch

from syncsde.denoisers.tiled_vae import blend_ramp, tile_starts, tiled_decode
from syncsde.views import window_offsets

__all__ = ["WRAP_AXES", "check_vae_tiling", "check_wrap", "wants_tiling", "wrap_pad_decode",
           "tiled_decode_wrapped", "decode_canvas"]

#: ``wrap`` values and the axes they wrap (-2 = height, -1 = width)
WRAP_AXES = {None: (), False: (), "width": (-1,), True: (-1,), "height": (-2,),
             "both": (-2, -1)}


def check_wrap(wrap: Any, name: str = "circular") -> tuple[int, ...]:
    """The wrapped axes of ``wrap`` (False / None, True = "width", "height", "both")."""
    if isinstance(wrap, (bool, str)) or wrap is None:
        try:
            return WRAP_AXES[wrap]
        except KeyError:
            pass
    raise ValueError(f"{name} must be False, True (= 'width'), 'width', 'height' or 'both', "
                     f"got {wrap!r}")


def _is_int(v: Any) -> bool:
    return not isinstance(v, bool) and isinstance(v, (int, np.integer))


def check_vae_tiling(vae_tiling: Any, vae_tile: Any = None, vae_tile_overlap: Any = None) -> None:
    """Clear errors for the tiling options of the one-call functions."""
    if not (vae_tiling is None or isinstance(vae_tiling, bool) or
            (isinstance(vae_tiling, str) and vae_tiling == "auto")):
        raise ValueError(f"vae_tiling must be None, 'auto', True or False, got {vae_tiling!r}")
    if vae_tile is not None and (not _is_int(vae_tile) or vae_tile < 1):
        raise ValueError(f"vae_tile must be a positive integer (latent pixels) or None, got "
                         f"{vae_tile!r}")
    if vae_tile_overlap is not None:
        if not _is_int(vae_tile_overlap) or vae_tile_overlap < 0:
            raise ValueError(f"vae_tile_overlap must be a non-negative integer (latent pixels) "
                             f"or None, got {vae_tile_overlap!r}")
        if vae_tile is not None and vae_tile_overlap >= vae_tile:
            raise ValueError(f"vae_tile_overlap ({vae_tile_overlap}) must be smaller than "
                             f"vae_tile ({vae_tile})")


def _tile_size(den: Any, tile: Any) -> int:
    return int(getattr(den, "sample_size", 64)) if tile is None else int(tile)


def wants_tiling(den: Any, latent_hw: tuple[int, int], vae_tiling: Any = "auto",
                 tile: int | None = None) -> bool:
    """Whether :func:`decode_canvas` tiles a latent of ``latent_hw``: ``"auto"`` tiles when
    either side exceeds the tile (default: the model's sample size), True always, None / False
    never (the VAE's own decode, which tiles by itself after diffusers'
    ``pipe.enable_vae_tiling()``)."""
    if int(getattr(den, "vae_scale_factor", 1)) == 1:
        return False
    if vae_tiling == "auto":
        t = _tile_size(den, tile)
        return latent_hw[0] > t or latent_hw[1] > t
    return vae_tiling is True


def _wrap_index(start: int, length: int, total: int) -> torch.Tensor:
    return torch.remainder(torch.arange(start, start + length), total)


def wrap_pad_decode(den: Any, latents: torch.Tensor, axes: tuple[int, ...],
                    padding: int = 8) -> torch.Tensor:
    """Decode with wrap padding along ``axes`` (-2 height, -1 width): ``padding`` latent
    pixels from each end copied to the other side, decoded, cropped back."""
    z = latents[None] if latents.dim() == 3 else latents
    pads = {}
    for ax in axes:
        p = max(0, min(int(padding), z.shape[ax]))
        if p:
            z = torch.cat([z.narrow(ax, z.shape[ax] - p, p), z, z.narrow(ax, 0, p)], dim=ax)
            pads[ax] = p
    img = den.decode(z)
    for ax, p in pads.items():
        cut = p * (img.shape[ax] // z.shape[ax])
        img = img.narrow(ax, cut, img.shape[ax] - 2 * cut)
    return img


def _axis_tiles(length: int, tile: int, overlap: int, wrapped: bool,
                padding: int) -> list[tuple[int, int, int]]:
    """``(start, size, ramp overlap)`` of the tiles along one axis (starts may be negative or
    run past the end on a wrapped axis)."""
    if not wrapped:
        size = min(tile, length)
        return [(s, size, overlap) for s in tile_starts(length, tile, overlap)]
    if length > tile:
        return [(s, tile, overlap)
                for s in window_offsets(length, tile, max(1, tile - overlap), circular=True)]
    p = max(1, int(padding), overlap)
    return [(-p, length + 2 * p, p)]


@torch.no_grad()
def tiled_decode_wrapped(den: Any, latents: torch.Tensor, axes: tuple[int, ...],
                         tile: int | None = None, overlap: int | None = None, padding: int = 8,
                         progress: bool = False) -> torch.Tensor:
    """Tiled decode of a canvas that wraps along ``axes`` (see the module docstring).
    ``tile`` / ``overlap`` in latent pixels (default: the sample size and a quarter of it)."""
    from tqdm.auto import tqdm

    z = latents[None] if latents.dim() == 3 else latents
    f = int(getattr(den, "vae_scale_factor", 1))
    if f == 1:
        return den.decode(z)
    h, w = z.shape[-2:]
    tile = _tile_size(den, tile)
    overlap = tile // 4 if overlap is None else int(overlap)
    check_vae_tiling(True, tile, overlap)
    rows = _axis_tiles(h, tile, overlap, -2 in axes, padding)
    cols = _axis_tiles(w, tile, overlap, -1 in axes, padding)
    H, W = h * f, w * f
    num = torch.zeros((z.shape[0], 3, H, W), dtype=torch.float32)
    den_w = torch.zeros((H, W), dtype=torch.float32)
    for top, th, oh in tqdm(rows, desc="vae decode", disable=not progress, leave=False):
        ri = _wrap_index(top, th, h)
        for left, tw, ow in cols:
            ci = _wrap_index(left, tw, w)
            img = den.decode(z[..., ri, :][..., ci]).float().cpu()
            r = blend_ramp(th * f, oh * f)[:, None] * blend_ramp(tw * f, ow * f)[None, :]
            pr = _wrap_index(top * f, th * f, H)   # pixel rows / columns the tile lands on
            pc = _wrap_index(left * f, tw * f, W)
            # index_add_ sums every tile pixel, also where a padded tile lands twice on the
            # same canvas pixel
            idx = (pr[:, None] * W + pc[None, :]).reshape(-1)
            num.view(num.shape[0], 3, -1).index_add_(2, idx, (img * r).reshape(num.shape[0], 3, -1))
            den_w.view(-1).index_add_(0, idx, r.reshape(-1))
    return (num / den_w).clamp(0, 1)


def decode_canvas(den: Any, latents: torch.Tensor, *, vae_tiling: Any = "auto",
                  tile: int | None = None, overlap: int | None = None, wrap: Any = None,
                  padding: int = 8, progress: bool = False) -> torch.Tensor:
    """Latents ``[B, C, h, w]`` -> images ``[B, 3, h f, w f]`` in [0, 1] (float32, CPU):
    tiled or whole (``vae_tiling`` "auto" / True / False or None, ``tile`` / ``overlap`` in latent
    pixels), with wrap along ``wrap`` (False, True = "width", "height", "both")."""
    check_vae_tiling(vae_tiling, tile, overlap)
    axes = check_wrap(wrap, "wrap")
    z = latents[None] if latents.dim() == 3 else latents
    if wants_tiling(den, tuple(z.shape[-2:]), vae_tiling, tile):
        if axes:
            return tiled_decode_wrapped(den, z, axes, tile, overlap, padding, progress)
        return tiled_decode(den, z, tile=_tile_size(den, tile), overlap=overlap,
                            progress=progress)
    if axes and int(getattr(den, "vae_scale_factor", 1)) != 1:
        return wrap_pad_decode(den, z, axes, padding)
    return den.decode(z)
