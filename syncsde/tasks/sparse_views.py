"""A general linear view set: every view a sparse matrix over the canvas pixels (the C core's CSR
maps), and the SyncSDE correlation model that suits interpolating maps.

``SparseViews`` holds N maps ``A_i`` of shape ``[h*w, H*W]``, one CSR matrix of ``N*h*w`` rows
(view-major) built from any (row, column, value) triplets; the channels are mapped alike. With
``x = X.reshape(C, H*W)`` and ``a_i = A_i^T 1`` (column sums):

- ``forward``:  ``y_i = A_i x``                   (one ``ops.csr_apply`` for all views)
- ``adjoint``:  ``sum_i A_i^T (w_i * y_i)``       (one transposed ``ops.csr_apply``)
- ``coverage``: ``sum_i A_i^T w_i``               (``ops.csr_coverage`` when unweighted)
- ``paste_one_on_top(i)``: ``X <- A_i^T y_i / a_i`` where ``a_i > 0`` (the normalised adjoint:
  exact for gathers, a weighted back-projection for interpolating maps).

Crops that wrap in both axes (torus windows), bilinear projections (panoramas) and area
downsampling (multi-scale views) are all of this form: a task only builds the triplets.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from syncsde import ops
from syncsde.correlation import Correlation
from syncsde.views import ViewSet

__all__ = ["SparseViews", "CoveredEarlierViews"]


def _shape3(v, name: str) -> tuple[int, int, int]:
    try:
        t = tuple(v)
    except TypeError:
        raise TypeError(f"{name} must be 3 positive integers, got {v!r}") from None
    if len(t) != 3 or any(isinstance(x, bool) or not hasattr(x, "__index__") or x.__index__() < 1
                          for x in t):
        raise ValueError(f"{name} must be 3 positive integers, got {v!r}")
    return tuple(x.__index__() for x in t)


class SparseViews(ViewSet):
    """N views of one size ``(h, w)``; view i is the sparse map given by ``maps[i]``.

    ``maps[i] = (rows, cols, vals)``: 1-D arrays of equal length with ``rows`` in ``[0, h*w)``
    (flat view pixel), ``cols`` in ``[0, H*W)`` (flat canvas pixel) and finite ``vals``;
    ``y_i[r] = sum_{k: rows[k] = r} vals[k] X[cols[k]]`` (repeated pairs add up).
    """

    def __init__(self, canvas_shape: Sequence[int], view_size: Sequence[int], maps: Sequence,
                 average_iters: int = 0, average_ridge: float = 0.0):
        if isinstance(average_iters, bool) or not isinstance(average_iters, int) or average_iters < 0:
            raise ValueError(f"average_iters must be an integer >= 0, got {average_iters!r}")
        if isinstance(average_ridge, bool) or not float(average_ridge) >= 0:
            raise ValueError(f"average_ridge must be a number >= 0, got {average_ridge!r}")
        self.average_iters = average_iters
        self.average_ridge = float(average_ridge)
        C, H, W = _shape3(canvas_shape, "canvas_shape")
        _, h, w = _shape3((1, *view_size), "view_size")
        if len(maps) == 0:
            raise ValueError("a sparse view set needs at least one view")
        hw, P = h * w, H * W
        rows, cols, vals = [], [], []
        for i, m in enumerate(maps):
            if len(m) != 3:
                raise ValueError(f"maps[{i}] must be (rows, cols, vals)")
            r, c, v = (np.asarray(a).reshape(-1) for a in m)
            if not (len(r) == len(c) == len(v)):
                raise ValueError(f"maps[{i}]: rows, cols and vals have lengths {len(r)}, {len(c)}, {len(v)}")
            if r.size and (r.dtype.kind not in "iu" or c.dtype.kind not in "iu"):
                raise TypeError(f"maps[{i}]: rows and cols must be integers")
            if r.size and (r.min() < 0 or r.max() >= hw):
                raise IndexError(f"maps[{i}]: rows must lie in [0, {hw}) (view pixels)")
            if c.size and (c.min() < 0 or c.max() >= P):
                raise IndexError(f"maps[{i}]: cols must lie in [0, {P}) (canvas pixels)")
            v = v.astype(np.float64)
            if not np.isfinite(v).all():
                raise ValueError(f"maps[{i}]: vals must be finite")
            rows.append(r.astype(np.int64) + i * hw)
            cols.append(c.astype(np.int64))
            vals.append(v)
        r, c, v = np.concatenate(rows), np.concatenate(cols), np.concatenate(vals)
        order = np.lexsort((c, r))
        counts = np.bincount(r, minlength=len(maps) * hw)
        self.indptr = torch.from_numpy(np.concatenate([[0], np.cumsum(counts)]).astype(np.int64))
        self.indices = torch.from_numpy(c[order].copy())
        self.values = torch.from_numpy(v[order].copy())
        self.canvas_shape, self.view_shape = (C, H, W), (C, h, w)
        self.num_views = len(maps)
        self._vals: dict = {}
        self._one: dict = {}
        cov = ops.csr_coverage(self.indptr, self.indices, self.values, P)
        self._cov_all = cov
        self._cov_one = [self._part(i)[2] for i in range(self.num_views)]

    # ---- construction helpers ----------------------------------------------------------
    @classmethod
    def from_gather(cls, canvas_shape: Sequence[int], index: torch.Tensor | np.ndarray) -> "SparseViews":
        """Views that copy canvas pixels: ``index[i, r, c]`` is the flat canvas pixel shown at
        ``(r, c)`` of view i (``[N, h, w]`` integers)."""
        idx = np.asarray(index)
        if idx.ndim != 3:
            raise ValueError(f"index must be [N, h, w], got shape {idx.shape}")
        n, h, w = idx.shape
        rows = np.arange(h * w)
        return cls(canvas_shape, (h, w), [(rows, idx[i].reshape(-1), np.ones(h * w)) for i in range(n)])

    def _part(self, i: int):
        """CSR of view i alone: (indptr, indices, values, coverage a_i)."""
        if i in self._one:
            return self._one[i]
        hw = self.view_shape[1] * self.view_shape[2]
        lo, hi = int(self.indptr[i * hw]), int(self.indptr[(i + 1) * hw])
        ip = (self.indptr[i * hw:(i + 1) * hw + 1] - lo).contiguous()
        part = (ip, self.indices[lo:hi].contiguous(), self.values[lo:hi].contiguous())
        cov = ops.csr_coverage(*part, self.canvas_shape[1] * self.canvas_shape[2])
        self._one[i] = (*part, cov)
        return self._one[i]

    def _v(self, values: torch.Tensor, dtype) -> torch.Tensor:
        return values if dtype == torch.float64 else values.to(dtype)

    def to_dense(self, i: int) -> np.ndarray:
        """``A_i`` as a dense ``[h*w, H*W]`` array (tests, small sizes)."""
        ip, ix, v, _ = self._part(i)
        d = np.zeros((len(ip) - 1, self.canvas_shape[1] * self.canvas_shape[2]))
        np.add.at(d, (np.repeat(np.arange(len(ip) - 1), np.diff(ip.numpy())), ix.numpy()), v.numpy())
        return d

    # ---- the ViewSet contract ----------------------------------------------------------
    def _apply(self, x, parts, adjoint):
        ip, ix, v = parts[:3]
        P = self.canvas_shape[1] * self.canvas_shape[2]
        return ops.csr_apply(x.contiguous(), ip, ix, self._v(v, x.dtype), P, adjoint=adjoint)

    def forward(self, canvas, out=None):
        self.check_canvas(canvas)
        C, H, W = self.canvas_shape
        _, h, w = self.view_shape
        b = tuple(canvas.shape[:-3])
        y = self._apply(canvas.reshape(*b, C, H * W), (self.indptr, self.indices, self.values), False)
        y = y.reshape(*b, C, self.num_views, h, w).movedim(-3, 0)
        if out is None:
            return y.contiguous()
        out.copy_(y)
        return out

    def adjoint(self, views, weights=None):
        self.check_views(views)
        C, H, W = self.canvas_shape
        v = views if weights is None else views * weights.to(views.dtype)
        b = tuple(views.shape[1:-3])
        flat = v.movedim(0, -3).reshape(*b, C, -1)
        return self._apply(flat, (self.indptr, self.indices, self.values), True).reshape(*b, C, H, W)

    def coverage(self, weights=None, dtype=torch.float32):
        _, H, W = self.canvas_shape
        n, (h, w) = self.num_views, self.view_shape[1:]
        if weights is None:
            return self._cov_all.to(dtype).reshape(1, H, W)
        if tuple(weights.shape[-2:]) == (h, w):
            rw = weights.reshape(n, -1, h, w)[:, 0].reshape(-1)
        else:
            rw = weights.reshape(n, -1)[:, :1].expand(n, h * w).reshape(-1)
        cov = self._apply(rw.to(torch.float64).contiguous(), (self.indptr, self.indices, self.values), True)
        return cov.to(dtype).reshape(1, H, W)

    def average(self, views, weights=None, fallback=None):
        """The canonical average. With ``average_iters = 0`` the normalised adjoint
        ``sum_i A_i^T w_i y_i / sum_i A_i^T w_i`` (the least-squares solution when the maps are
        gathers); otherwise that many conjugate-gradient steps, started there (``X_0``), towards
        the weighted least-squares canvas
        ``argmin_X sum_i |w_i^(1/2) (A_i X - y_i)|^2 + ridge sum_p c_p (X_p - X_0p)^2`` on the
        covered pixels (``c = sum_i A_i^T w_i``; ``ridge = average_ridge``). With ridge 0 this is
        MultiDiffusion's definition, which for interpolating maps differs from the normalised
        adjoint: that one blurs, and blurs again at every step. The ridge keeps directions the
        views barely determine (bilinear taps near the poles) from amplifying inconsistent
        views."""
        x = super().average(views, weights, fallback)
        if not self.average_iters:
            return x
        dtype = x.dtype
        views64 = views.to(torch.float64)
        w64 = None if weights is None else weights.to(torch.float64)
        cov = self.coverage(w64, torch.float64).to(views.device)
        covered = cov > 0

        ridge = self.average_ridge * cov

        def normal(z):  # (sum_i A_i^T W_i A_i + ridge) z, on covered pixels
            return (self.adjoint(self.forward(z), w64) + ridge * z) * covered

        # CG in float64; a direction the normal matrix does not see (p^T M p ~ 0: pixels only
        # determined together, round-off) or a converged system stops updating
        dims = (-2, -1)
        x = x.to(torch.float64)
        x0 = x.clone()
        r = (self.adjoint(views64, w64) + ridge * x0 - normal(x)) * covered
        p = r.clone()
        rs = (r * r).sum(dims, keepdim=True)
        tol = 1e-20 * rs.clamp_min(1e-300)
        scale = float(cov.max()) if cov.numel() else 1.0
        for _ in range(self.average_iters):
            q = normal(p)
            pq, pp = (p * q).sum(dims, keepdim=True), (p * p).sum(dims, keepdim=True)
            active = (pq > 1e-10 * scale * pp) & (rs > tol)
            alpha = torch.where(active, rs / pq.clamp_min(1e-300), torch.zeros_like(rs))
            x = x + alpha * p
            r = r - alpha * q
            rs_new = (r * r).sum(dims, keepdim=True)
            p = torch.where(active, r + rs_new / rs.clamp_min(1e-300) * p, torch.zeros_like(p))
            rs = torch.where(active, rs_new, rs)
        return x.to(dtype)

    def forward_one(self, i, canvas):
        C, H, W = self.canvas_shape
        _, h, w = self.view_shape
        b = tuple(canvas.shape[:-3])
        return self._apply(canvas.reshape(*b, C, H * W), self._part(i), False).reshape(*b, C, h, w)

    def paste_one_on_top(self, i, view, canvas):
        C, H, W = self.canvas_shape
        b = tuple(view.shape[:-3])
        parts = self._part(i)
        num = self._apply(view.reshape(*b, C, -1), parts, True).reshape(*b, C, H, W)
        a = parts[3].to(view.dtype).reshape(H, W)
        canvas.copy_(torch.where(a > 0, num / a.clamp_min(1e-30), canvas))
        return canvas


class CoveredEarlierViews(Correlation):
    """SyncSDE's earlier-views rule for maps that interpolate (rows summing to 1).

    With ``Z`` the on-top composite of views ``j < i`` and ``c`` the indicator of the canvas
    pixels they cover, view i gets ``M_i = A_i c`` (the share of each pixel's taps on covered
    pixels, in [0, 1]) and ``Xtilde_i = A_i Z / M_i``, so ``M_i (y_i - Xtilde_i) = M_i y_i -
    A_i Z``: a pixel half on covered canvas is pulled half as hard, never towards the zeros of
    the uncovered part. For gathers (0/1 rows) it equals :class:`~syncsde.correlation.EarlierViews`.
    """

    sequential = True

    def _walk(self, y, views, per_view):
        canvas = views.canvas_zeros(y)
        for i in range(1, views.num_views):
            views.paste_one_on_top(i - 1, y[i - 1], canvas)
            per_view(i, views.forward_one(i, canvas))

    def masks(self, views, like):
        n = views.num_views
        m = torch.zeros((n, 1, *views.view_shape[1:]), dtype=like.dtype, device=like.device)
        ones = torch.ones((n, *views.view_shape), dtype=like.dtype, device=like.device)

        def put(i, seen):
            m[i, 0] = seen[0].clamp(0, 1)

        self._walk(ones, views, put)
        return m

    def references(self, y, views):
        key = (id(views), y.dtype, str(y.device))
        if getattr(self, "_frac_key", None) != key:  # masks do not change during a run
            ones = torch.ones((views.num_views, *views.view_shape), dtype=y.dtype, device=y.device)
            self._frac, self._frac_key = self.masks(views, ones), key
        frac = self._frac
        ref = y.clone()

        def put(i, seen):
            f = frac[i].reshape((1,) * (seen.dim() - 2) + tuple(seen.shape[-2:]))
            ref[i] = torch.where(f > 0, seen / f.clamp_min(1e-12), y[i])

        self._walk(y, views, put)
        return ref
