"""Near/far hybrid images: a picture that reads as one prompt from afar and as another up close.

A classic hybrid image (Oliva, Torralba and Schyns 2006) mixes the low frequencies of one
picture with the high frequencies of another. Here the two readings are two *scales* of one
canvas ``X`` of ``f`` times the model's size, both seen by the model at its native resolution:

- the **far** view ``y_0 = D X``: the whole canvas area-averaged by ``f x f`` blocks (what a
  viewer resolves from ``f`` times further away), conditioned on the far prompt;
- the **near** views ``y_i = X[window_i]``, ``i >= 1``: model-sized windows at full resolution
  (what a viewer sees up close), conditioned on the near prompt.

No synchronization peer couples views of different scale: window methods (MultiDiffusion,
SyncDiffusion, SyncSDE's wide images) see one scale, Visual Anagrams' views are permutations
of pixels, and frequency-split hybrids (Factorized Diffusion) use one image size and a fixed
filter rather than two model-sized readings. Every map here is linear and sparse: ``D`` has
``f^2`` taps of ``1/f^2`` per row, the windows are gathers, so one
:class:`~syncsde.tasks.sparse_views.SparseViews` holds both scales.

SyncSDE correlation (:class:`ScaleCorrelation`): the far view is generated first and free;
window i is pulled, on the canvas the earlier windows cover, to their composite (as for wide
images) and elsewhere only in its block means: ``Xtilde_i = y_i - B y_i + B U y_0`` with ``B``
the ``f x f`` block mean inside the window and ``U y_0`` the far view upsampled (nearest), so
``M_i (y_i - Xtilde_i) = B y_i - U y_0``: the window keeps its fine detail and takes its coarse
layout from the far view.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch

from syncsde.correlation import Correlation
from syncsde.sampler import Problem
from syncsde.strategies import Strategy
from syncsde.tasks.runner import model_geometry, resolve_denoiser, run_problem
from syncsde.tasks.sparse_views import SparseViews
from syncsde.views import window_offsets

__all__ = ["hybrid_views", "hybrid_problem", "ScaleCorrelation", "far_reading", "hybrid_image",
           "block_mean"]


def _check(v: Any, name: str, minimum: int = 1) -> int:
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {v!r}")
    return int(v)


def hybrid_views(channels: int, size: int, factor: int = 2, stride: int | None = None,
                 average_iters: int = 5) -> SparseViews:
    """View 0: the ``(factor*size)^2`` canvas downsampled by ``factor`` (area mean) to
    ``size x size``; views 1..: ``size x size`` windows every ``stride`` (default size / 2).
    The canonical average is the least-squares canvas (``average_iters`` conjugate-gradient
    steps; the normal matrix is block diagonal, so a few steps converge)."""
    C, s, f = _check(channels, "channels"), _check(size, "size"), _check(factor, "factor", 2)
    st = s // 2 if stride is None else _check(stride, "stride")
    if s % f or st % f:
        raise ValueError(f"size ({s}) and stride ({st}) must be multiples of factor ({f}) so that "
                         "windows align with the far view's blocks")
    S = f * s
    r, c = np.meshgrid(np.arange(s), np.arange(s), indexing="ij")
    rows, cols = [], []
    for a in range(f):
        for b in range(f):
            rows.append((r * s + c).reshape(-1))
            cols.append(((f * r + a) * S + f * c + b).reshape(-1))
    far = (np.concatenate(rows), np.concatenate(cols), np.full(f * f * s * s, 1.0 / (f * f)))
    offs = window_offsets(S, s, st)
    index = [((t + r) * S + l + c).reshape(-1) for t in offs for l in offs]
    maps = [far] + [(np.arange(s * s), ix, np.ones(s * s)) for ix in index]
    views = SparseViews((C, S, S), (s, s), maps, average_iters)
    views.factor = f
    return views


def block_mean(x: torch.Tensor, f: int) -> torch.Tensor:
    """``x [..., h, w]`` with every ``f x f`` block replaced by its mean (``B`` above)."""
    h, w = x.shape[-2:]
    m = x.reshape(*x.shape[:-2], h // f, f, w // f, f).mean(dim=(-3, -1), keepdim=True)
    return m.expand(*x.shape[:-2], h // f, f, w // f, f).reshape(x.shape)


class ScaleCorrelation(Correlation):
    """View 0 (far) free; window i >= 1 pulled to the earlier windows where they cover and in
    its block means to the upsampled far view elsewhere (module docstring). Sequential."""

    sequential = True

    def __init__(self, factor: int):
        self.factor = _check(factor, "factor", 2)
        self._key = None

    def masks(self, views, like):
        m = torch.ones((views.num_views, 1, *views.view_shape[1:]), dtype=like.dtype, device=like.device)
        m[0] = 0
        return m

    def _covered(self, views, y):
        """Per window, 1 where earlier windows cover (cached per view set and dtype)."""
        key = (id(views), y.dtype, str(y.device))
        if self._key != key:
            ones = torch.ones((views.num_views, *views.view_shape), dtype=y.dtype, device=y.device)
            canvas = views.canvas_zeros(ones)
            cov = torch.zeros((views.num_views, 1, *views.view_shape[1:]), dtype=y.dtype, device=y.device)
            for i in range(2, views.num_views):
                views.paste_one_on_top(i - 1, ones[i - 1], canvas)
                cov[i, 0] = (views.forward_one(i, canvas)[0] > 0.5).to(y.dtype)
            self._cov, self._key = cov, key
        return self._cov

    def references(self, y, views):
        cov = self._covered(views, y)
        up = views.paste_one_on_top(0, y[0], views.canvas_zeros(y))   # U y_0
        canvas = views.canvas_zeros(y)
        ref = y.clone()
        for i in range(1, views.num_views):
            if i >= 2:
                views.paste_one_on_top(i - 1, y[i - 1], canvas)
            c = cov[i].reshape((1,) * (y.dim() - 3) + tuple(cov.shape[1:]))
            low = y[i] - block_mean(y[i], self.factor) + views.forward_one(i, up)
            ref[i] = c * views.forward_one(i, canvas) + (1 - c) * low
        return ref


def hybrid_problem(channels: int, size: int, far: Any, near: Any, factor: int = 2,
                   stride: int | None = None, negative: Any = None,
                   far_weight: float | None = None) -> Problem:
    """The hybrid task: ``far`` conditions the downsampled view, ``near`` every window.

    Canonical-average strategies weight the far view by ``far_weight`` (default ``factor^2``:
    its back-projection then counts like one window on every pixel; 1 would make it count
    ``1 / factor^2`` of one)."""
    views = hybrid_views(channels, size, factor, stride)
    n = views.num_views
    fw = float(views.factor ** 2 if far_weight is None else far_weight)
    if not fw >= 0:
        raise ValueError(f"far_weight must be >= 0, got {far_weight!r}")
    weights = torch.ones(n, 1, 1, 1)
    weights[0] = fw
    return Problem(views, [far] + [near] * (n - 1),
                   None if negative is None else [negative] * n,
                   correlation=ScaleCorrelation(views.factor), weights=weights, init="canvas")


def far_reading(canvas: torch.Tensor, factor: int) -> torch.Tensor:
    """What the viewer sees from afar: ``canvas [..., S, S]`` area-averaged by ``factor``."""
    S = canvas.shape[-1]
    f = _check(factor, "factor", 2)
    return canvas.reshape(*canvas.shape[:-2], S // f, f, S // f, f).mean(dim=(-3, -1))


def hybrid_image(model: Any, far_prompt: Any, near_prompt: Any, negative_prompt: Any = None, *,
                 factor: int = 2, size: int | None = None, stride: int | None = None,
                 strategy: str | Strategy = "syncsde", inv_lambda: float = 5.0,
                 num_inference_steps: int = 50, guidance_scale: float = 7.5, seed: int = 0,
                 progress: bool = True, max_batch: int | None = None,
                 channels: int | None = None) -> Any:
    """A ``factor x`` native-size image that reads as ``far_prompt`` downsampled by ``factor``
    and as ``near_prompt`` in native-size crops. ``extras["far"]`` holds the downsampled
    reading (decoded when the model has a decoder)."""
    den = resolve_denoiser(model)
    C, f, native = model_geometry(den, channels)
    s = native if size is None else int(size) // f
    if not s:
        raise ValueError("pass size= for a denoiser without a native size")
    problem = hybrid_problem(C, s, far_prompt, near_prompt, factor,
                             None if stride is None else max(1, int(stride) // f), negative_prompt)
    res = run_problem(problem, den, task="hybrid", strategy=strategy, inv_lambda=inv_lambda,
                      num_inference_steps=num_inference_steps, guidance_scale=guidance_scale,
                      seed=seed, progress=progress, max_batch=max_batch,
                      settings=dict(far_prompt=far_prompt, near_prompt=near_prompt,
                                    negative_prompt=negative_prompt, factor=factor, size=s * f))
    base = res.tensors if res.tensors is not None else res.latents
    res.extras["far"] = far_reading(base, factor)
    return res
