"""360-degree panoramas: perspective views of an equirectangular canvas (or the six cube faces).

Canonical object: an equirectangular image ``[C, H, 2H]`` (longitude -180..180 degrees across
the width, latitude 90..-90 down the height; pixel centres at ``((c + 1/2) / W, (r + 1/2) / H)``).
View i is a pinhole camera (yaw, pitch, field of view ``fov``) of ``s x s`` pixels; its pixel
``(r, c)`` looks along

    d_cam = (u, -v, 1) / |.|,   u = (2 (c + 1/2) / s - 1) tan(fov/2),  v = (2 (r + 1/2) / s - 1) tan(fov/2),

rotated by the pitch (about x) then the yaw (about the vertical axis), and reads the canvas at
longitude ``atan2(d_x, d_z)`` and latitude ``asin(d_y)`` by **bilinear** interpolation (four taps,
the longitude wraps, the latitude is clamped at the poles). Each view is one CSR matrix of
``s*s`` rows with 4 entries per row (:class:`~syncsde.tasks.sparse_views.SparseViews`), so the
adjoint and coverage come from the C core's CSR kernels. ``cube=True`` gives the six faces of a
cube map (yaw 0/90/180/270 and the poles, fov 90: faces touch, they do not overlap); the default
is eight horizontal views 45 degrees apart plus the two poles (overlapping, fov 90).

SyncSDE pulls each view to the composite of the earlier ones with
:class:`~syncsde.tasks.sparse_views.CoveredEarlierViews` (a pixel whose taps are only partly
on covered canvas is pulled in proportion). The output is the strategy's canvas with the
pixels no view reads (near the poles, where the canvas is denser than the views) filled from
the nearest covered pixel (:func:`fill_uncovered`, the core's exact nearest-seed transform).
"""
from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np
import torch

from syncsde import ops
from syncsde.sampler import Problem
from syncsde.strategies import Strategy
from syncsde.tasks.runner import model_geometry, resolve_denoiser, run_problem
from syncsde.tasks.sparse_views import CoveredEarlierViews, SparseViews

__all__ = ["Camera360", "default_cameras", "cube_cameras", "view_directions",
           "equirect_bilinear", "panorama_views", "panorama_problem", "fill_uncovered",
           "pixel_directions", "panorama_image"]


class Camera360(tuple):
    """``(yaw_deg, pitch_deg, fov_deg)``."""

    def __new__(cls, yaw: float, pitch: float = 0.0, fov: float = 90.0):
        for name, v in (("yaw", yaw), ("pitch", pitch), ("fov", fov)):
            if not math.isfinite(float(v)):
                raise ValueError(f"{name} must be finite, got {v!r}")
        if not 0 < float(fov) < 180:
            raise ValueError(f"fov must lie in (0, 180) degrees, got {fov!r}")
        return super().__new__(cls, (float(yaw), float(pitch), float(fov)))


def default_cameras(n_yaw: int = 8, fov: float = 90.0, poles: bool = True) -> list[Camera360]:
    """``n_yaw`` horizontal views evenly round the circle, then (optionally) up and down."""
    if isinstance(n_yaw, bool) or int(n_yaw) < 1:
        raise ValueError(f"n_yaw must be >= 1, got {n_yaw!r}")
    cams = [Camera360(360.0 * k / n_yaw, 0.0, fov) for k in range(int(n_yaw))]
    if poles:
        cams += [Camera360(0.0, 90.0, fov), Camera360(0.0, -90.0, fov)]
    return cams


def cube_cameras() -> list[Camera360]:
    """The six faces of a cube map (front, right, back, left, up, down)."""
    return default_cameras(4, 90.0, poles=True)


def view_directions(cam: Sequence[float], size: int) -> np.ndarray:
    """Unit directions ``[s, s, 3]`` (x right, y up, z forward at yaw 0) of a camera's pixels."""
    yaw, pitch, fov = (math.radians(v) for v in cam)
    t = math.tan(fov / 2)
    g = (2 * (np.arange(size) + 0.5) / size - 1) * t
    u, v = np.meshgrid(g, g)                       # u along columns, v along rows (down)
    d = np.stack([u, -v, np.ones_like(u)], -1)
    d /= np.linalg.norm(d, axis=-1, keepdims=True)
    cp, sp, cy, sy = math.cos(pitch), math.sin(pitch), math.cos(yaw), math.sin(yaw)
    rx = np.array([[1, 0, 0], [0, cp, sp], [0, -sp, cp]])    # pitch up: forward tilts to +y
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])    # yaw: forward turns to +x
    return d @ rx.T @ ry.T


def pixel_directions(H: int, W: int) -> np.ndarray:
    """Unit directions ``[H, W, 3]`` of the equirectangular canvas' pixel centres."""
    lon = ((np.arange(W) + 0.5) / W) * 2 * np.pi - np.pi
    lat = np.pi / 2 - ((np.arange(H) + 0.5) / H) * np.pi
    lon, lat = np.meshgrid(lon, lat)
    return np.stack([np.cos(lat) * np.sin(lon), np.sin(lat), np.cos(lat) * np.cos(lon)], -1)


def equirect_bilinear(directions: np.ndarray, H: int, W: int):
    """Bilinear taps of an ``H x W`` equirectangular image at unit ``directions [..., 3]``:
    ``(rows, cols, vals)`` with 4 taps per direction (row = the direction's flat index)."""
    d = directions.reshape(-1, 3)
    lon = np.arctan2(d[:, 0], d[:, 2])
    lat = np.arcsin(np.clip(d[:, 1], -1, 1))
    x = (lon + np.pi) / (2 * np.pi) * W - 0.5      # continuous column (pixel centres at c)
    y = (np.pi / 2 - lat) / np.pi * H - 0.5
    x0, y0 = np.floor(x), np.floor(y)
    fx, fy = x - x0, y - y0
    rows, cols, vals = [], [], []
    n = np.arange(len(d))
    for dy, wy in ((0, 1 - fy), (1, fy)):
        for dx, wx in ((0, 1 - fx), (1, fx)):
            r = np.clip(y0 + dy, 0, H - 1).astype(np.int64)
            c = np.mod(x0 + dx, W).astype(np.int64)
            rows.append(n)
            cols.append(r * W + c)
            vals.append(wy * wx)
    return np.concatenate(rows), np.concatenate(cols), np.concatenate(vals)


def panorama_views(channels: int, height: int, view_size: int,
                   cameras: Sequence[Sequence[float]] | None = None,
                   average_iters: int = 5, average_ridge: float = 0.05) -> SparseViews:
    """Perspective views ``view_size`` square of an equirectangular canvas
    ``(channels, height, 2 * height)``. ``average_iters`` conjugate-gradient steps towards the
    least-squares canonical average with a small ridge towards the normalised adjoint
    (:meth:`SparseViews.average`; ``average_iters=0`` = normalised adjoint). 5 steps and ridge
    0.05 were the best of a few on the exact benchmark; without a ridge the gradient-guided
    syncdiffusion diverges there (weakly seen pixels amplify inconsistent views)."""
    H, s = int(height), int(view_size)
    if H < 2 or s < 1:
        raise ValueError(f"height must be >= 2 and view_size >= 1, got {height}, {view_size}")
    cams = default_cameras() if cameras is None else [Camera360(*c) for c in cameras]
    maps = [equirect_bilinear(view_directions(c, s), H, 2 * H) for c in cams]
    views = SparseViews((channels, H, 2 * H), (s, s), maps, average_iters, average_ridge)
    views.cameras = cams
    return views


def panorama_problem(channels: int, height: int, view_size: int, cond: Any = None,
                     negative: Any = None, cameras: Sequence | None = None,
                     average_iters: int = 5) -> Problem:
    """A 360-degree panorama: every view gets ``cond`` (a list: one per camera)."""
    views = panorama_views(channels, height, view_size, cameras, average_iters)
    n = views.num_views
    conds = list(cond) if isinstance(cond, (list, tuple)) else [cond] * n
    negs = None if negative is None else \
        (list(negative) if isinstance(negative, (list, tuple)) else [negative] * n)
    return Problem(views, conds, negs, correlation=CoveredEarlierViews(), init="canvas")


def fill_uncovered(canvas: torch.Tensor, views: SparseViews) -> torch.Tensor:
    """The canvas with every pixel no view reads set to its nearest covered pixel (the
    task's output rule: those pixels carry no information from any view)."""
    cov = views.coverage(dtype=torch.float64)[0]
    seeds = (cov > 0).numpy()
    if seeds.all():
        return canvas
    near = torch.from_numpy(ops.nearest_seed(seeds).reshape(-1))
    flat = canvas.reshape(*canvas.shape[:-2], -1)
    return flat[..., near.to(flat.device)].reshape(canvas.shape)


def panorama_image(model: Any, prompt: Any, height: int = 512, negative_prompt: Any = None, *,
                   view_size: int | None = None, cameras: Sequence | None = None,
                   cube: bool = False, strategy: str | Strategy | None = None,
                   inv_lambda: float = 5.0, num_inference_steps: int = 50,
                   guidance_scale: float = 7.5, seed: int = 0, progress: bool = True,
                   max_batch: int | None = None, channels: int | None = None) -> Any:
    """A 360-degree equirectangular panorama ``height x 2 height`` (pixels) from any denoiser.
    ``view_size`` (pixels) defaults to the model's native size; ``cube`` uses the six cube
    faces. ``prompt`` may be a list (one per camera, e.g. "..., looking up")."""
    den = resolve_denoiser(model)
    C, f, native = model_geometry(den, channels)
    if height % f:
        raise ValueError(f"height must be a multiple of {f}, got {height}")
    s = (native if view_size is None else int(view_size) // f)
    if not s:
        raise ValueError("pass view_size= for a denoiser without a native size")
    cams = cube_cameras() if cube else cameras
    problem = panorama_problem(C, height // f, s, prompt, negative_prompt, cams)
    return run_problem(problem, den, task="panorama360", strategy=strategy, inv_lambda=inv_lambda,
                       num_inference_steps=num_inference_steps, guidance_scale=guidance_scale,
                       seed=seed, progress=progress, max_batch=max_batch, wrap="width",
                       output_rule=lambda r: fill_uncovered(r.canvas, problem.views),
                       settings=dict(prompt=prompt, negative_prompt=negative_prompt,
                                     height=height, width=2 * height, view_size=s * f,
                                     cameras=[list(c) for c in problem.views.cameras]))
