"""Seamless tileable images: a canvas that wraps in both axes (a torus).

Views are model-sized windows whose pixels are taken modulo the canvas height and width, so a
window may straddle the right edge and the bottom edge at once; as a map it is a gather
``y_i[r, c] = X[(top_i + r) mod H, (left_i + c) mod W]``, one 0/1 CSR row per view pixel
(:class:`~syncsde.tasks.sparse_views.SparseViews`). Windows start every ``stride`` round each
loop (``ceil(H / stride) * ceil(W / stride)`` windows), so every pixel, edges included, is seen
by the same number of windows and no column or row is special: the canvas tiles without a seam.
SyncSDE uses the earlier-views rule (the last windows of a row are pulled to the first ones
across the wrap). The picture is shown tiled 3x3 (:func:`tile`), and
:func:`wrap_seam_statistic` measures the seam: the mean squared jump across the wrap over the
mean squared jump between interior neighbours (1 = no seam).
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch

from syncsde.correlation import EarlierViews
from syncsde.metrics import seam_statistic
from syncsde.sampler import Problem
from syncsde.strategies import Strategy
from syncsde.tasks.runner import model_geometry, resolve_denoiser, run_problem
from syncsde.tasks.sparse_views import SparseViews
from syncsde.views import window_offsets

__all__ = ["torus_views", "tileable_problem", "tile", "wrap_seam_statistic", "tileable_image"]


def _pair(v: Any, name: str) -> tuple[int, int]:
    t = (v, v) if not isinstance(v, (tuple, list)) else tuple(v)
    if len(t) != 2 or any(isinstance(x, bool) or not isinstance(x, (int, np.integer)) or x < 1
                          for x in t):
        raise ValueError(f"{name} must be a positive integer or two, got {v!r}")
    return int(t[0]), int(t[1])


def torus_views(canvas_shape: Sequence[int], window: Sequence[int] | int,
                stride: Sequence[int] | int) -> SparseViews:
    """Windows of ``window`` every ``stride`` on a ``(C, H, W)`` torus, row-major."""
    C, H, W = (int(v) for v in canvas_shape)
    h, w = _pair(window, "window")
    sh, sw = _pair(stride, "stride")
    tops = window_offsets(H, h, sh, circular=True)
    lefts = window_offsets(W, w, sw, circular=True)
    r, c = np.arange(h)[:, None], np.arange(w)[None, :]
    index = np.stack([((t + r) % H) * W + (l + c) % W for t in tops for l in lefts])
    return SparseViews.from_gather((C, H, W), index)


def tileable_problem(canvas_shape: Sequence[int], window: Sequence[int] | int = 64,
                     stride: Sequence[int] | int = 16, cond: Any = None,
                     negative: Any = None) -> Problem:
    """A torus canvas ``(C, H, W)`` seen through windows; every view has ``cond``."""
    views = torus_views(canvas_shape, window, stride)
    n = views.num_views
    return Problem(views, [cond] * n, None if negative is None else [negative] * n,
                   correlation=EarlierViews(), init="canvas")


def tile(image: torch.Tensor, reps: int = 3) -> torch.Tensor:
    """``image [..., H, W]`` repeated ``reps x reps`` times (how a tileable image is used)."""
    return image.tile((1,) * (image.dim() - 2) + (reps, reps))


def wrap_seam_statistic(samples: torch.Tensor, stride: Sequence[int] | int | None = None
                        ) -> dict[str, float]:
    """Seam statistic of the wrap for samples ``[n, C, H, W]``: the mean squared jump across the
    left/right edge (``columns``) and the top/bottom edge (``rows``) over the mean squared jump
    between interior neighbours (:func:`syncsde.metrics.seam_statistic` on the canvas extended
    by its own first column / row). 1 means the wrap looks like any other pair of neighbours.

    With ``stride`` the comparison is also made against the interior boundaries at the same
    window phase (``c % stride == 0``; keys ``columns_vs_phase``, ``rows_vs_phase``): on a torus
    the wrap is one of them, so these are 1 for any strategy that treats windows alike, while
    the plain ratios also show how much every window boundary costs."""
    x = torch.as_tensor(samples).to(torch.float64)
    if x.dim() != 4:
        raise ValueError(f"samples must be [n, C, H, W], got shape {tuple(x.shape)}")
    out = {}
    phase = None if stride is None else _pair(stride, "stride")
    for key, xs, k in (("columns", x, 1), ("rows", x.transpose(-1, -2), 0)):
        n = xs.shape[-1]
        ext = torch.cat([xs, xs[..., :1]], -1)
        out[key] = seam_statistic(ext, [n])
        if phase is not None:
            same = [c for c in range(phase[k], n, phase[k])]
            if same:
                out[key + "_vs_phase"] = seam_statistic(ext, [n], interior_columns=same)
    return out


def tileable_image(model: Any, prompt: Any, height: int = 512, width: int = 512,
                   negative_prompt: Any = None, *, window: int | None = None,
                   stride: int | Sequence[int] | None = None, strategy: str | Strategy | None = None,
                   inv_lambda: float = 5.0, num_inference_steps: int = 50,
                   guidance_scale: float = 7.5, seed: int = 0, progress: bool = True,
                   max_batch: int | None = None, channels: int | None = None,
                   tiles: int = 3) -> Any:
    """A seamless tileable image from any denoiser (sizes in pixels; latent models divide by
    their VAE factor). ``window`` defaults to the model's native size, ``stride`` (one number
    or (rows, columns)) to a quarter of it. A scenes-like model (sky above ground) cannot wrap
    vertically: give ``height = window`` and a row stride of ``window`` for a horizontal loop. Returns a :class:`~syncsde.pipelines.PipelineResult`; ``extras["tiled"]`` holds the
    ``tiles x tiles`` repetition (tensor; ``extras["tiled_image"]`` the PIL image)."""
    den = resolve_denoiser(model)
    C, f, native = model_geometry(den, channels)
    if height % f or width % f:
        raise ValueError(f"height and width must be multiples of {f}, got {height}x{width}")
    H, W = height // f, width // f
    win = (native if window is None else int(window) // f) or min(H, W)
    st = (max(1, win // 4),) * 2 if stride is None else \
        tuple(max(1, int(v) // f) for v in _pair(stride, "stride"))
    problem = tileable_problem((C, H, W), (min(win, H), min(win, W)), st, prompt, negative_prompt)
    res = run_problem(problem, den, task="tileable", strategy=strategy, inv_lambda=inv_lambda,
                      num_inference_steps=num_inference_steps, guidance_scale=guidance_scale,
                      seed=seed, progress=progress, max_batch=max_batch, wrap="both",
                      settings=dict(prompt=prompt, negative_prompt=negative_prompt, height=height,
                                    width=width, window=win * f, stride=[v * f for v in st]))
    if res.tensors is not None:
        res.extras["tiled"] = tile(res.tensors, tiles)
        from syncsde.denoisers.diffusers_models import to_pil

        res.extras["tiled_image"] = to_pil(res.extras["tiled"])[0]
    else:
        res.extras["tiled"] = tile(res.latents, tiles)
    return res
