"""Texture projections as sparse maps, and the view set / correlation model of mesh texturing.

Canonical object. A texture ``[C, T, T]`` plus one background slot per view pixel, stored flat
as a canvas ``[C, 1, L]`` with ``L = T*T + N*h*w`` (texels first, then the background pixels of
view 0, 1, ...). Every view pixel is then a linear function of the canvas, so the canvas-space
strategies (MultiDiffusion, SyncTweedies) keep each view's background while they average the
mesh in texture space. :meth:`TextureViews.texture` cuts the texture out of a canvas.

Maps, built once per camera as CSR matrices and applied by the core's CSR kernels:

- render ``R_i`` ``[h*w, L]``: a mesh pixel reads its texel at the interpolated UV (``nearest``:
  the texel containing it, the authors' choice for latents; ``bilinear``: 4 taps with texel
  centres at ``(c + 1/2)/T``, clamped at the border); a background pixel reads its own slot.
- weighted adjoint ``A_i = R_i^T W_i`` ``[L, h*w]`` with ``W_i = cos_i^k`` on the mesh (1 on the
  background), ``a_i = A_i 1``.
- bake of a set S of views: the cos^k-weighted scatter-mean
  ``X = sum_{i in S} A_i y_i / sum_{i in S} a_i`` where the denominator is > 0 (the normalised
  weighted adjoint of render), then *filled*: a texel whose face some view of S sees but that no
  pixel of S hit copies the value of the nearest hit texel of the same UV island (exact Euclidean
  nearest-seed fill in the core, one index map per set, cached). So render(bake(views))
  reproduces a consistent set of views on every pixel they cover.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

from syncsde import ops
from syncsde.correlation import Correlation
from syncsde.mesh.camera import Camera, ViewRaster, rasterize_uv, rasterize_view
from syncsde.mesh.io import Mesh
from syncsde.views import ViewSet


@dataclass
class CSR:
    indptr: torch.Tensor   # int64 [n_rows + 1]
    indices: torch.Tensor  # int64 [nnz]
    values: torch.Tensor   # float64 [nnz] (cast per call to the data dtype)
    n_cols: int

    @property
    def n_rows(self) -> int:
        return len(self.indptr) - 1

    @classmethod
    def from_coo(cls, rows, cols, vals, n_rows: int, n_cols: int) -> "CSR":
        rows, cols = np.asarray(rows, np.int64), np.asarray(cols, np.int64)
        vals = np.asarray(vals, np.float64)
        if len(rows) and n_rows * max(n_cols, 1) < 2 ** 62:
            key = rows * max(n_cols, 1) + cols
            order = None if bool((np.diff(key) >= 0).all()) else np.argsort(key, kind="stable")
        else:
            order = np.lexsort((cols, rows))
        if order is None:
            order = slice(None)
        counts = np.bincount(rows, minlength=n_rows)
        indptr = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        return cls(torch.from_numpy(indptr), torch.from_numpy(cols[order].copy()),
                   torch.from_numpy(vals[order].copy()), int(n_cols))

    def to_dense(self) -> np.ndarray:
        d = np.zeros((self.n_rows, self.n_cols))
        rows = np.repeat(np.arange(self.n_rows), np.diff(self.indptr.numpy()))
        np.add.at(d, (rows, self.indices.numpy()), self.values.numpy())
        return d

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        """``A x`` over the last dim of ``x``."""
        vals = self.values if x.dtype == torch.float64 else self.values.to(x.dtype)
        return ops.csr_apply(x.contiguous(), self.indptr, self.indices, vals, self.n_cols)

    def first_rows(self, n: int) -> "CSR":
        """The first ``n`` rows."""
        end = int(self.indptr[n])
        return CSR(self.indptr[:n + 1].clone(), self.indices[:end], self.values[:end], self.n_cols)

    def first_cols(self, n: int) -> "CSR":
        """The entries in the first ``n`` columns (``n_cols = n``)."""
        keep = self.indices < n
        rows = torch.repeat_interleave(torch.arange(self.n_rows), torch.diff(self.indptr))[keep]
        counts = torch.bincount(rows, minlength=self.n_rows)
        indptr = torch.cat([torch.zeros(1, dtype=torch.int64), torch.cumsum(counts, 0)])
        return CSR(indptr, self.indices[keep], self.values[keep], n)

    def row_sums(self) -> torch.Tensor:
        rows = torch.repeat_interleave(torch.arange(self.n_rows), torch.diff(self.indptr))
        return torch.zeros(self.n_rows, dtype=torch.float64).index_add_(0, rows, self.values)


def _texel_taps(uv: np.ndarray, T: int, sampling: str):
    """``(texel index [n, k], weight [n, k])`` of UVs ``[n, 2]`` on a ``T x T`` texture."""
    x = uv[:, 0] * T
    y = (1.0 - uv[:, 1]) * T
    if sampling == "nearest":
        c = np.clip(np.floor(x), 0, T - 1).astype(np.int64)
        r = np.clip(np.floor(y), 0, T - 1).astype(np.int64)
        return (r * T + c)[:, None], np.ones((len(uv), 1))
    if sampling != "bilinear":
        raise ValueError(f"sampling must be 'nearest' or 'bilinear'; got {sampling!r}")
    xs, ys = x - 0.5, y - 0.5
    x0, y0 = np.floor(xs), np.floor(ys)
    fx, fy = xs - x0, ys - y0
    idx, wts = [], []
    for dy, wy in ((0, 1 - fy), (1, fy)):
        for dx, wx in ((0, 1 - fx), (1, fx)):
            r = np.clip(y0 + dy, 0, T - 1).astype(np.int64)
            c = np.clip(x0 + dx, 0, T - 1).astype(np.int64)
            idx.append(r * T + c)
            wts.append(wy * wx)
    return np.stack(idx, 1), np.stack(wts, 1)


def render_map(r: ViewRaster, T: int, sampling: str, bg_offset: int | None, n_cols: int) -> CSR:
    """``R_i``: pixel ``p`` <- texel taps (mesh) or slot ``bg_offset + p`` (background, when
    ``bg_offset`` is not None)."""
    H, W = r.face.shape
    P = H * W
    fg = r.mask.reshape(-1)
    pix = np.nonzero(fg)[0]
    idx, wts = _texel_taps(r.uv.reshape(-1, 2)[pix], T, sampling)
    rows = [np.repeat(pix, idx.shape[1])]
    cols = [idx.reshape(-1)]
    vals = [wts.reshape(-1)]
    if bg_offset is not None:
        bg = np.nonzero(~fg)[0]
        rows.append(bg)
        cols.append(bg_offset + bg)
        vals.append(np.ones(len(bg)))
    keep = np.concatenate(vals) != 0
    return CSR.from_coo(np.concatenate(rows)[keep], np.concatenate(cols)[keep],
                        np.concatenate(vals)[keep], P, n_cols)


def bake_map(R: CSR, weight: np.ndarray) -> CSR:
    """``A = R^T diag(weight)``: the weighted adjoint of render."""
    P = R.n_rows
    rows = np.repeat(np.arange(P), np.diff(R.indptr.numpy()))
    vals = R.values.numpy() * weight[rows]
    keep = vals != 0
    return CSR.from_coo(R.indices.numpy()[keep], rows[keep], vals[keep], R.n_cols, P)


class TextureViews(ViewSet):
    """N camera views ``[C, h, w]`` of a texture ``[C, T, T]`` on ``mesh`` (see the module
    docstring). ``cos_power`` is k of the bake weights ``cos^k`` (0: visibility only, the
    authors' latent bake; 6: their final RGB bake); ``fill`` turns the per-view nearest-seed
    fill of the bake on."""

    def __init__(self, mesh: Mesh, cameras: Sequence[Camera], view_size: int | Sequence[int],
                 texture_size: int, channels: int = 4, sampling: str = "nearest",
                 cos_power: float = 0.0, fill: bool = True, background: bool = True):
        if not cameras:
            raise ValueError("need at least one camera")
        h, w = (view_size, view_size) if isinstance(view_size, int) else tuple(view_size)
        T = int(texture_size)
        if h < 1 or w < 1 or T < 1 or channels < 1:
            raise ValueError(f"view_size, texture_size and channels must be >= 1; got "
                             f"{(h, w)}, {texture_size}, {channels}")
        self.mesh, self.cameras = mesh, list(cameras)
        self.T, self.size, self.sampling = T, (h, w), sampling
        self.num_views = len(self.cameras)
        P = h * w
        self.P = P
        self.background = bool(background)
        L = T * T + (self.num_views * P if background else 0)
        self.L = L
        self.canvas_shape = (channels, 1, L)
        self.view_shape = (channels, h, w)
        self.rasters = [rasterize_view(mesh, c, h, w) for c in self.cameras]
        self.texel_face, _ = rasterize_uv(mesh, T)
        islands = mesh.islands()
        tf = self.texel_face.reshape(-1)
        self.texel_island = np.where(tf >= 0, islands[np.maximum(tf, 0)], -1).astype(np.int64)
        self.fill = bool(fill)
        self.render, self.bake, self.bake_weight, self.seen = [], [], [], []
        self.render_tex, self.bake_tex = [], []
        self._fill_cache: dict = {}
        tf = self.texel_face.reshape(-1)
        for i, r in enumerate(self.rasters):
            R = render_map(r, T, sampling, T * T + i * P if background else None, L)
            weight = np.where(r.mask, r.cos ** cos_power if cos_power else 1.0, 1.0).reshape(-1)
            weight = np.where(r.mask.reshape(-1) & (r.cos.reshape(-1) <= 0), 0.0, weight)
            A = bake_map(R, weight)
            visible_faces = np.zeros(mesh.num_faces, bool)
            visible_faces[r.face[r.face >= 0]] = True
            self.render.append(R)
            self.bake.append(A)
            # texture-only parts (the SyncSDE references never touch background slots)
            self.render_tex.append(R.first_cols(T * T))
            self.bake_tex.append(A.first_rows(T * T))
            self.bake_weight.append(A.row_sums())
            self.seen.append(visible_faces[np.maximum(tf, 0)] & (tf >= 0))

    def fill_index(self, which: Sequence[int]) -> torch.Tensor:
        """``[L]`` int64 source of every canvas entry in the bake of views ``which``: itself where
        they hit it, the nearest hit texel of the same island for texels they see but miss
        (with ``fill``), -1 elsewhere."""
        key = tuple(sorted(set(int(i) for i in which)))
        if key in self._fill_cache:
            return self._fill_cache[key]
        T, L = self.T, self.L
        hit = np.zeros(L, bool)
        seen = np.zeros(T * T, bool)
        for i in key:
            hit |= self.bake_weight[i].numpy() > 0
            seen |= self.seen[i]
        src = np.where(hit, np.arange(L), -1)
        if self.fill and hit[:T * T].any():
            isl = self.texel_island
            near = ops.nearest_seed(hit[:T * T].reshape(T, T), isl.reshape(T, T)).reshape(-1)
            ok = seen & ~hit[:T * T] & (near >= 0) & (isl[np.maximum(near, 0)] == isl)
            src[:T * T][ok] = near[ok]
        out = torch.from_numpy(src.astype(np.int64))
        self._fill_cache[key] = out
        return out

    # ---- canvas <-> texture ----------------------------------------------------------------
    def texture(self, canvas: torch.Tensor) -> torch.Tensor:
        """``[*b, C, T, T]`` texture part of a canvas ``[*b, C, 1, L]``."""
        T = self.T
        return canvas[..., 0, :T * T].reshape(*canvas.shape[:-2], T, T)

    def _flat(self, canvas):
        return canvas.reshape(*canvas.shape[:-2], self.L)

    # ---- the ViewSet contract ----------------------------------------------------------------
    def forward(self, canvas, out=None):
        self.check_canvas(canvas)
        flat = self._flat(canvas).contiguous()
        if out is None:
            out = torch.empty((self.num_views, *canvas.shape[:-3], *self.view_shape),
                              dtype=canvas.dtype, device=canvas.device)
        for i in range(self.num_views):
            out[i] = self.forward_one(i, canvas, flat)
        return out

    def forward_one(self, i, canvas, flat=None):
        flat = self._flat(canvas).contiguous() if flat is None else flat
        y = self.render[i].apply(flat)
        return y.reshape(*y.shape[:-1], *self.size)

    def _view_flat(self, v):
        return v.reshape(*v.shape[:-2], self.P).contiguous()

    def adjoint(self, views, weights=None):
        """``sum_i R_i^T (w_i y_i)`` as a canvas."""
        self.check_views(views)
        acc = None
        for i in range(self.num_views):
            v = views[i] if weights is None else views[i] * weights[i]
            R = self.render[i]
            vals = R.values.to(views.dtype)
            a = ops.csr_apply(self._view_flat(v), R.indptr, R.indices, vals, R.n_cols, adjoint=True)
            acc = a if acc is None else acc + a
        return acc.reshape(*acc.shape[:-1], 1, self.L)

    def coverage(self, weights=None, dtype=torch.float32):
        """``sum_i R_i^T w_i`` as ``[1, 1, L]``."""
        acc = torch.zeros(self.L, dtype=dtype)
        for i in range(self.num_views):
            w = torch.ones(self.P, dtype=dtype) if weights is None else \
                weights[i].reshape(-1, self.P)[0].to(dtype).contiguous()
            R = self.render[i]
            acc += ops.csr_apply(w, R.indptr, R.indices, R.values.to(dtype), R.n_cols,
                                 adjoint=True)
        return acc.reshape(1, 1, self.L)

    def bake_sum(self, views, which: Sequence[int], weights=None):
        """``(sum_{i in which} A_i (w_i y_i), sum_{i in which} A_i w_i)`` (flat canvases)."""
        num, den = None, None
        for i in which:
            A = self.bake[i]
            v = views[i] if weights is None else views[i] * weights[i]
            n = A.apply(self._view_flat(v))
            if weights is None:
                d = self.bake_weight[i].to(device=views.device, dtype=views.dtype)
            else:
                w = weights[i].reshape(-1, *self.size)[:1].to(views.dtype)
                d = A.apply(self._view_flat(w.expand(1, *self.size)))[0]
            num = n if num is None else num + n
            den = d if den is None else den + d
        return num, den

    def bake_views(self, views, which: Sequence[int], weights=None, fallback=None):
        """Flat canvas ``[*b, C, L]`` baked from views ``which`` (filled), and the ``[L]`` bool
        map of the entries it reaches; the rest keep ``fallback`` (zeros when omitted)."""
        num, den = self.bake_sum(views, which, weights)
        mean = torch.where(den > 0, num / den.clamp_min(1e-30), torch.zeros_like(num))
        src = self.fill_index(which).to(num.device)
        reached = src >= 0
        out = torch.zeros_like(num) if fallback is None else self._flat(fallback).clone()
        out[..., reached] = mean[..., src[reached]]
        return out, reached

    def average(self, views, weights=None, fallback=None):
        """The bake of all views (see the module docstring) as a canvas ``[*b, C, 1, L]``;
        entries no view reaches keep ``fallback`` (zeros when omitted)."""
        self.check_views(views)
        out, _ = self.bake_views(views, range(self.num_views), weights, fallback)
        return out.reshape(*out.shape[:-1], 1, self.L)

    def paste_one_on_top(self, i, view, canvas):
        stack = view.unsqueeze(0).expand(self.num_views, *view.shape)
        baked, reached = self.bake_views(stack, [i])
        flat = self._flat(canvas)
        reached = reached.to(flat.device)
        flat[..., reached] = baked[..., reached]
        return canvas


class TextureEarlierViews(Correlation):
    """SyncSDE's mesh rule (the authors' corrected mask): view i is pulled to the render of the
    texture baked from views ``j < i``, on the pixels that bake reaches:

        Xtilde_i = R_i bake_{<i}(y),   M_i = 1[R_i c_{<i} > 0],

    ``c_{<i}`` the indicator of the texels bake_{<i} reaches (view i's background never; with
    bilinear taps the render is renormalised over the reached taps).
    """

    sequential = True

    def _reached(self, views: "TextureViews", i: int, dtype) -> torch.Tensor:
        T2 = views.T * views.T
        c = (views.fill_index(range(i))[:T2] >= 0).to(dtype)
        return views.render_tex[i].apply(c[None])[0]

    def _reached_on(self, views, i, like):
        return self._reached(views, i, like.dtype).to(like.device)

    def masks(self, views, like):
        if not isinstance(views, TextureViews):
            raise TypeError("TextureEarlierViews needs TextureViews")
        m = torch.zeros((views.num_views, 1, *views.size), dtype=like.dtype, device=like.device)
        for i in range(1, views.num_views):
            m[i, 0] = (self._reached(views, i, torch.float64) > 0).reshape(views.size).to(like.dtype)
        return m

    def references(self, y, views):
        T2 = views.T * views.T
        ref = y.clone()
        num, den = None, None
        for i in range(1, views.num_views):
            A = views.bake_tex[i - 1]
            n = A.apply(views._view_flat(y[i - 1]))
            d = views.bake_weight[i - 1][:T2].to(device=y.device, dtype=y.dtype)
            num = n if num is None else num.add_(n)
            den = d if den is None else den + d
            src = views.fill_index(range(i))[:T2].to(y.device)
            reached = src >= 0
            tex = torch.zeros_like(num)
            tex[..., reached] = num[..., src[reached]] / den[src[reached]]
            r = views.render_tex[i].apply(tex)
            cov = self._reached_on(views, i, y)
            r = torch.where(cov > 0, r / cov.clamp_min(1e-30), views._view_flat(y[i]))
            ref[i] = r.reshape(y[i].shape)
        return ref


def bake_texture(views: TextureViews, images: torch.Tensor, fill: bool = True) -> torch.Tensor:
    """The final texture ``[C, T, T]`` baked from ``images`` ``[N, C, h, w]`` with the view set's
    weights; with ``fill`` every texel no view reaches takes its nearest reached texel (same UV
    island when that island is reached, else any), so seams and gutters hold colour too."""
    T = views.T
    baked, reached = views.bake_views(images, range(views.num_views))
    tex, reached = baked[..., :T * T], reached[:T * T]
    if fill and reached.any():
        near = ops.nearest_seed(reached.numpy().reshape(T, T), views.texel_island.reshape(T, T))
        tex = tex[..., torch.from_numpy(near.reshape(-1))]
    return tex.reshape(*tex.shape[:-1], T, T)


__all__ = ["CSR", "TextureViews", "TextureEarlierViews", "bake_texture", "render_map", "bake_map"]
