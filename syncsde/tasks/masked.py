"""Mask-based generation and real-image editing: three trajectories on one canvas.

Trajectory 0 is free (background prompt, or the reconstruction of the source), trajectory 1 is
pulled to 0 outside the object (``M = 1 - B``), trajectory 2 is pulled to 0 outside and to 1
inside; the output is trajectory 2 (authors' code, seed 000 section 3.1-3.2). Canonical-average
strategies use the weights ``[1 - B, B, 0]`` (MultiDiffusion's region-based composition), so
every strategy answers the same question on the same inputs.
"""
from __future__ import annotations

from typing import Any

import torch

from syncsde.correlation import Explicit
from syncsde.sampler import Problem
from syncsde.views import PixelMapViews, _int_tuple


def _check_mask(mask: torch.Tensor, H: int, W: int, name: str = "mask") -> torch.Tensor:
    m = torch.as_tensor(mask, dtype=torch.float32)
    while m.dim() > 2 and m.shape[0] == 1:
        m = m[0]
    if m.dim() != 2 or tuple(m.shape) != (H, W):
        raise ValueError(f"{name} has shape {tuple(torch.as_tensor(mask).shape)}; expected ({H}, {W}) "
                         "(resize it to the latent/canvas size)")
    if not torch.isfinite(m).all() or (m < 0).any() or (m > 1).any():
        raise ValueError(f"{name} values must lie in [0, 1]")
    return m


def _three_way(shape, mask, cond, negative, initial=None) -> Problem:
    C, H, W = _int_tuple(shape, 3, "shape")
    B = _check_mask(mask, H, W)
    views = PixelMapViews((C, H, W), ["identity"] * 3)
    corr = Explicit({1: [(0, 1 - B)], 2: [(0, 1 - B), (1, B)]})
    weights = torch.stack([1 - B, B, torch.zeros_like(B)]).unsqueeze(1)
    p = Problem(views, cond, negative, correlation=corr, weights=weights, init="independent",
                initial_views=initial or {},
                initial_canvas=(initial or {}).get(2))
    p.output_view = 2
    return p


def masked_problem(shape, mask, background: Any, obj: Any, combined: Any,
                   negative: Any = None) -> Problem:
    """Mask T2I: ``mask`` (H, W) is 1 on the object region; prompts for background, object,
    and the combined scene."""
    neg = None if negative is None else [negative] * 3
    return _three_way(shape, mask, [background, obj, combined], neg)


def edit_problem(x_T: torch.Tensor, mask, source: Any, target: Any,
                 null: Any = None) -> Problem:
    """Editing: ``x_T`` the inverted source latent (C, H, W), ``mask`` 1 on the object to edit.

    Trajectories: 0 reconstructs x_T with the source prompt (negative = source, so guidance
    is trivial), 1 generates the target prompt from fresh noise, 2 starts at x_T with the target
    prompt and the source prompt as negative. Canonical-average strategies start their one
    canonical state at x_T.
    """
    x_T = torch.as_tensor(x_T)
    if x_T.dim() == 4 and x_T.shape[0] == 1:
        x_T = x_T[0]
    if x_T.dim() != 3:
        raise ValueError(f"x_T must be (C, H, W), got {tuple(x_T.shape)}")
    return _three_way(tuple(x_T.shape), mask, [source, target, target], [source, null, source],
                      initial={0: x_T, 2: x_T})
