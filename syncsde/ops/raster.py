"""Rasterization and nearest-seed fill in the C core (``ssde/raster.h``).

- :func:`rasterize`: triangles given by pixel-space corners ``[F, 3, 3]`` (x, y in pixels with
  pixel (i, j) centred at (j + 0.5, i + 0.5); z the view depth) -> per-pixel face id (-1 on the
  background), barycentrics (perspective-correct with ``perspective=True``) and depth (0 on the
  background). Nearest depth wins, ties go to the lower face id; edges are inclusive; both
  windings are drawn.
- :func:`nearest_seed`: for every texel the flat index of the nearest seed texel (exact
  Euclidean distance), optionally per UV island.

Both take and return NumPy arrays (they run once per camera or seed set, not per step).
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np

from syncsde import _C


class Fragments(NamedTuple):
    face_id: np.ndarray  # [H, W] int64, -1 background
    bary: np.ndarray     # [H, W, 3] float32
    depth: np.ndarray    # [H, W] float32, 0 background


def _size(v, name: str) -> int:
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or int(v) < 0:
        raise ValueError(f"argument '{name}' must be an int >= 0; got {v!r}")
    return int(v)


def rasterize(corners, height: int, width: int, perspective: bool = False,
              near: float = 1e-6) -> Fragments:
    """Rasterizes ``corners`` ``[F, 3, 3]`` (float64) onto a ``height x width`` grid.

    With ``perspective`` the z of every corner is the positive view depth; faces with a corner
    at ``z <= near`` are skipped (no clipping), as are faces of zero area or with non-finite
    corners.
    """
    H, W = _size(height, "height"), _size(width, "width")
    c = np.ascontiguousarray(np.asarray(corners, dtype=np.float64))
    if c.ndim != 3 or c.shape[1:] != (3, 3):
        raise ValueError(f"argument 'corners' must have shape [n_faces, 3, 3]; got {c.shape}")
    near = float(near)
    if not np.isfinite(near):
        raise ValueError(f"argument 'near' must be finite; got {near!r}")
    face = np.empty((H, W), np.int64)
    bary = np.empty((H, W, 3), np.float32)
    depth = np.empty((H, W), np.float32)
    _C.rasterize(face, bary, depth, c, bool(perspective), near)
    return Fragments(face, bary, depth)


def nearest_seed(seeds, labels=None) -> np.ndarray:
    """``[H, W]`` int64: the flat index ``r * W + c`` of a nearest seed of every texel (a seed
    maps to itself), -1 everywhere when there is no seed.

    ``seeds`` is a boolean (or 0/1) ``[H, W]`` map. With ``labels`` (``[H, W]`` ints in
    ``[-1, n)``, -1 = outside every island), a texel of island L takes the nearest seed of
    island L when L has one, else the nearest seed of any island.
    """
    s = np.asarray(seeds)
    if s.ndim != 2:
        raise ValueError(f"argument 'seeds' must be 2-D [H, W]; got shape {s.shape}")
    s = np.ascontiguousarray(s != 0, dtype=np.int32)
    lab, n = None, 0
    if labels is not None:
        lab = np.asarray(labels)
        if lab.shape != s.shape:
            raise ValueError(f"argument 'labels' has shape {lab.shape}; expected {s.shape}")
        if lab.dtype.kind not in "iu":
            raise TypeError(f"argument 'labels' must hold integers; got {lab.dtype}")
        if lab.size and (lab.min() < -1 or lab.max() >= 2**31 - 1):
            raise ValueError("argument 'labels' must hold values in [-1, 2^31 - 1)")
        n = int(lab.max()) + 1 if lab.size else 0
        lab = np.ascontiguousarray(lab, dtype=np.int32)
    out = np.empty(s.shape, np.int64)
    _C.nearest_seed(out, s, lab, max(n, 0))
    return out


__all__ = ["Fragments", "rasterize", "nearest_seed"]
