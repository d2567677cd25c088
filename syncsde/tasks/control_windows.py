"""Control images per window: one canvas-sized control image (depth, edges, pose...) cropped to
every window, so each window's ControlNet sees exactly the part of the control image under it.

A window view ``i`` at latent offset ``(top, left)`` of size ``(h, w)`` gets the pixels
``control[:, top*f:(top+h)*f, left*f:(left+w)*f]`` (``f`` the VAE factor; columns taken mod the
width for a 360-degree canvas). Views that repeat a window (region layers) get the same crop.
The crop travels with the view's condition as an :class:`ImagePrompt` (prompt + image) on both
CFG halves, so every strategy that calls the model on the views (all of them but ``collage``,
whose extra overlap inputs belong to no single window) feeds each window its own crop.
"""
from __future__ import annotations

from typing import Any

import torch

from syncsde.sampler import Problem
from syncsde.views import WindowViews

__all__ = ["window_control_crops", "with_window_control", "with_window_crop_conditions"]


def _control_tensor(control: Any, name: str = "control_image") -> torch.Tensor:
    from syncsde.denoisers.diffusers_models import load_image, pil_to_tensor

    if isinstance(control, torch.Tensor):
        t = control.detach().float().cpu()
        if t.dim() == 4 and t.shape[0] == 1:
            t = t[0]
        if t.dim() == 2:
            t = t[None]
        if t.dim() != 3 or t.shape[0] not in (1, 3):
            raise ValueError(f"{name} must be [3, H, W] (or [1, H, W]) in [0, 1], got shape "
                             f"{tuple(control.shape)}")
        if not torch.isfinite(t).all():
            raise ValueError(f"{name} contains NaN or infinite values")
        return t.expand(3, *t.shape[1:]).contiguous()
    try:
        return pil_to_tensor(load_image(control))
    except FileNotFoundError:
        raise ValueError(f"{name} {control!r}: no such file") from None
    except OSError as e:
        raise ValueError(f"{name}: not a readable image ({e})") from None


def window_control_crops(control: Any, views: WindowViews, factor: int = 1) -> list[torch.Tensor]:
    """The crop of ``control`` (``[3, H*f, W*f]`` in [0, 1], or an image / path) under every view
    of ``views``, as a list of ``[3, h*f, w*f]`` tensors (one per view, in view order)."""
    if not isinstance(views, WindowViews):
        raise TypeError(f"per-window control needs window views, got {type(views).__name__}")
    img = _control_tensor(control)
    f = int(factor)
    _, H, W = views.canvas_shape
    h, w = views.size
    if tuple(img.shape[-2:]) != (H * f, W * f):
        raise ValueError(f"control_image is {img.shape[-1]}x{img.shape[-2]} px; the canvas is "
                         f"{W * f}x{H * f} px (resize it to the canvas size)")
    crops = []
    for top, left in views.offsets.tolist():
        rows = slice(top * f, (top + h) * f)
        if views.circular:
            cols = (torch.arange(left * f, (left + w) * f) % (W * f))
            crops.append(img[:, rows][:, :, cols].contiguous())
        else:
            crops.append(img[:, rows, left * f:(left + w) * f].contiguous())
    return crops


def with_window_control(problem: Problem, control: Any, factor: int = 1,
                        scale: float | None = None) -> Problem:
    """``problem`` with every view's condition (and negative) wrapped as
    ``ImagePrompt(prompt, crop_i, scale)``: the ControlNet of view ``i`` sees its own crop.
    The problem is changed in place and returned."""
    from syncsde.denoisers.diffusers_models import ImagePrompt

    crops = window_control_crops(control, problem.views, factor)
    s = None if scale is None else float(scale)
    problem.cond = [ImagePrompt(c, im, s) for c, im in zip(problem.cond, crops)]
    neg = problem.negative if problem.negative is not None else [None] * len(crops)
    problem.negative = [ImagePrompt(c, im, s) for c, im in zip(neg, crops)]
    return problem


def with_window_crop_conditions(den: Any, problem: Problem, factor: int) -> Problem:
    """For models that condition on the crop (SDXL's ``add_time_ids``: the denoiser has a
    ``window_condition(prompt, crop, size, canvas)`` hook): every view's condition and negative
    carry the window's pixel offset, its size and the canvas size; the negative branch gets the
    same crop (diffusers' ``negative_add_time_ids``). Other models: unchanged. In place."""
    hook = getattr(den, "window_condition", None)
    views = problem.views
    if hook is None or not isinstance(views, WindowViews):
        return problem
    f = int(factor)
    _, H, W = views.canvas_shape
    size = (views.size[0] * f, views.size[1] * f)
    canvas = (H * f, W * f)

    def per_view(conds):
        return [hook(c, (int(t) * f, int(l) * f), size, canvas)
                for c, (t, l) in zip(conds, views.offsets.tolist())]

    problem.cond = per_view(problem.cond)
    problem.negative = per_view(problem.negative if problem.negative is not None
                                else [None] * views.num_views)
    return problem
