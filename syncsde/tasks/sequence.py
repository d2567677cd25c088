"""Long sequences in time (long-horizon motion): 1-D windows over ``[C, 1, L]``.

MDM's input layout is ``[B, 263, 1, frames]``, so a motion of L frames is a canvas of height 1.
The design's setting: windows of 120 frames with 30 overlapping (stride 90), inv_lambda 3.
"""
from __future__ import annotations

from typing import Any

from syncsde.correlation import EarlierViews
from syncsde.sampler import Problem
from syncsde.views import WindowViews


def sequence_problem(channels: int, length: int, window: int = 120, overlap: int = 30,
                     cond: Any = None, negative: Any = None) -> Problem:
    if not 0 <= overlap < window:
        raise ValueError(f"overlap must be in [0, window), got overlap={overlap}, window={window}")
    if window > length:
        raise ValueError(f"window {window} is longer than the sequence ({length})")
    views = WindowViews.grid((channels, 1, length), (1, window), (1, window - overlap))
    n = views.num_views
    return Problem(views, [cond] * n, None if negative is None else [negative] * n,
                   correlation=EarlierViews(), init="canvas")
