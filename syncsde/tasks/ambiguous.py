"""Ambiguous images (visual anagrams): f_1 = identity, f_2 a pixel permutation.

Authors' setting: DeepFloyd IF stage I (64x64), 30 steps, CFG 10, M = 1, trajectory 2 pulled to
f_2(trajectory 1); the output image is the inverse transform of view 2's result (so both views
come from one image). Views: rot90 cw/ccw, rot180, vertical flip ("flip"), skew (column w rolled
by ``trunc(1.5 (w - H//2))``), any dihedral op, or any permutation index tensor.
"""
from __future__ import annotations

from typing import Any, Sequence

from syncsde.correlation import PreviousView
from syncsde.sampler import Problem
from syncsde.views import PixelMapViews

AMBIGUOUS_VIEWS = ("rot90_cw", "rot90_ccw", "rot180", "flip", "vflip", "hflip", "transpose",
                   "skew")


def ambiguous_problem(image_shape: Sequence[int], view: Any, cond_a: Any, cond_b: Any,
                      negative: Any = None) -> Problem:
    """Two views of one image: identity with ``cond_a`` and ``view`` with ``cond_b``."""
    if len(image_shape) != 3:
        raise ValueError(f"image_shape must be (C, H, W), got {tuple(image_shape)}")
    views = PixelMapViews(image_shape, ["identity", view])
    neg = None if negative is None else [negative, negative]
    return Problem(views, [cond_a, cond_b], neg, correlation=PreviousView(), init="independent")
