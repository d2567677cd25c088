"""Wide images: a canvas seen through model-sized windows (design notes section 2).

The authors' setting is SD2-base at 512x2048 (latent 4x64x256), windows of 64 latent columns
every 16, each window pulled to the windows before it on their overlap, later windows on top,
initial noise cropped from one canvas-sized map. Here any height and width work: the window
grid always reaches the last row and column, and ``circular=True`` wraps the width for
360-degree panoramas.
"""
from __future__ import annotations

from typing import Any, Sequence

import torch

from syncsde.correlation import EarlierViews
from syncsde.sampler import Problem
from syncsde.views import WindowViews, _int_tuple


def _pair(v: Any) -> Any:
    return (v, v) if not isinstance(v, (tuple, list, torch.Tensor)) else v


def wide_problem(canvas_shape: Sequence[int], window: Sequence[int] | int = 64,
                 stride: Sequence[int] | int = 16, cond: Any = None, negative: Any = None,
                 circular: bool = False) -> Problem:
    """Problem for a canvas ``(C, H, W)`` covered by windows ``window`` every ``stride``."""
    C, H, W = _int_tuple(canvas_shape, 3, "canvas_shape")
    h, w = _int_tuple(_pair(window), 2, "window")
    stride = _int_tuple(_pair(stride), 2, "stride")
    if h > H or w > W:
        raise ValueError(f"window {h}x{w} is larger than the canvas {H}x{W}")
    views = WindowViews.grid((C, H, W), (h, w), stride, circular=circular)
    n = views.num_views
    return Problem(views, [cond] * n, None if negative is None else [negative] * n,
                   correlation=EarlierViews(), init="canvas")
