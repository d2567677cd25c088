"""Depth- (or any control-) conditioned eps for batches of views (:func:`controlnet_eps`)."""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch

from syncsde.denoisers.base import predict_eps
from syncsde.denoisers.diffusers_models import (
    ControlNetDenoiser, ImagePrompt, load_image, pil_to_tensor)
from syncsde.pipelines.common import _resolve


# ---- ControlNet ---------------------------------------------------------------------------
def _control_tensor(img) -> torch.Tensor:
    if isinstance(img, torch.Tensor):
        t = img.float()
        if t.dim() == 2:
            t = t[None]
        return t
    return pil_to_tensor(load_image(img))


def controlnet_conditions(prompts: Sequence[Any] | str, control_images,
                          negative_prompts: Sequence[Any] | str | None = None,
                          scales: Sequence[float] | None = None):
    """``(cond, negative)`` lists of :class:`ImagePrompt` for N views: view i gets prompt i (or
    the one prompt) and control image i on both CFG halves."""
    imgs = [_control_tensor(i) for i in (control_images if not isinstance(control_images, torch.Tensor)
                                         or control_images.dim() == 4 else [control_images])]
    n = len(imgs)
    ps = [prompts] * n if isinstance(prompts, str) or prompts is None else list(prompts)
    ns = [negative_prompts] * n if isinstance(negative_prompts, str) or negative_prompts is None \
        else list(negative_prompts)
    if len(ps) != n or len(ns) != n:
        raise ValueError(f"{n} control images but {len(ps)} prompts / {len(ns)} negative prompts")
    sc = [None] * n if scales is None else [float(s) for s in scales]
    cond = [ImagePrompt(p, im, s) for p, im, s in zip(ps, imgs, sc)]
    neg = [ImagePrompt(q, im, s) for q, im, s in zip(ns, imgs, sc)]
    return cond, neg


def controlnet_eps(model, x_t: torch.Tensor, t: int, prompts, control_images,
                   negative_prompts=None, guidance_scale: float = 7.5,
                   conditioning_scale: float | Sequence[float] | None = None,
                   max_batch: int | None = None) -> torch.Tensor:
    """Depth- (or any control-) conditioned eps for a batch of views ``x_t [N, 4, h, w]`` at
    timestep ``t``: ControlNet + UNet on both CFG halves, guidance combined once, converted to
    eps if the model predicts v. ``control_images``: ``[N, 3, H, W]`` in [0, 1] at pixel size
    (or a list of PIL images / arrays); ``conditioning_scale`` a number or one per view."""
    den = _resolve(model, ControlNetDenoiser)
    scales = None
    if conditioning_scale is not None:
        scales = ([float(conditioning_scale)] * len(x_t) if np.isscalar(conditioning_scale)
                  else list(conditioning_scale))
    cond, neg = controlnet_conditions(prompts, control_images, negative_prompts, scales)
    if len(cond) != len(x_t):
        raise ValueError(f"{len(cond)} control images for {len(x_t)} views")
    return predict_eps(den, x_t, int(t), den.abar(int(t)), cond, neg, guidance_scale, max_batch)
