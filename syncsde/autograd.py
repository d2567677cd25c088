"""Differentiable view maps: every C view map as a ``torch.autograd.Function`` whose backward is
the C adjoint.

The maps of :mod:`syncsde.ops` are linear, ``y = A x``, so the vector-Jacobian product is the
adjoint, ``dL/dx = A^T dL/dy``, and the core already has every ``A^T``:

================================  ==========================================================
forward                           backward (the adjoint, also a C kernel)
================================  ==========================================================
``crop_windows``                  ``paste_windows_add`` (accumulating paste)
``paste_windows_add``             ``crop_windows`` (times the per-view weights)
``dihedral(op)``                  ``dihedral(dihedral_inverse(op))`` (a permutation: A^T = A^-1)
``skew(f)``                       ``skew(f, inverse=True)`` (a permutation)
``permute_pixels(gather)``        ``permute_pixels(scatter)`` for a permutation; otherwise the
                                  CSR adjoint of the 0/1 gather matrix (scatter-add)
``permute_pixels(scatter)``       ``permute_pixels(gather)``
``csr_apply(A)``                  ``csr_apply(A, adjoint=True)`` (and the other way round);
                                  the gradient of ``values`` is ``sum_batch g[r_k] x[c_k]``
``ViewSet.forward``               ``ViewSet.adjoint`` (any view set honouring the contract)
``ViewSet.adjoint``               ``ViewSet.forward``
================================  ==========================================================

Geometry arguments (offsets, ops, indices, view sets) carry no gradient. Only the data tensors
(and CSR ``values``) do. ``tests/test_autograd_views.py`` checks every map with
``torch.autograd.gradcheck`` in float64. These functions let a strategy differentiate a reward
or distance that is written in canvas space (SyncVC's rewards, SyncDiffusion's anchors) while
the maps themselves stay in the C core.
"""
from __future__ import annotations

from typing import Any

import torch

from syncsde import ops

__all__ = [
    "crop_windows",
    "csr_apply",
    "dihedral",
    "is_permutation",
    "paste_windows_add",
    "permute_pixels",
    "skew",
    "view_adjoint",
    "view_forward",
]


def _c(g: torch.Tensor) -> torch.Tensor:
    """Gradients may arrive expanded (zero strides); the kernels get a dense copy."""
    return g.contiguous()


# ---- windows ------------------------------------------------------------------------------
class _CropWindows(torch.autograd.Function):
    @staticmethod
    def forward(ctx, canvas, offsets, size, circular):
        ctx.offsets, ctx.circular = offsets, circular
        ctx.canvas_shape = canvas.shape
        return ops.crop_windows(canvas, offsets, size, circular=circular)

    @staticmethod
    def backward(ctx, g):
        out = g.new_zeros(ctx.canvas_shape)
        ops.paste_windows_add(_c(g), ctx.offsets, out, circular=ctx.circular)
        return out, None, None, None


class _PasteWindowsAdd(torch.autograd.Function):
    @staticmethod
    def forward(ctx, views, offsets, canvas_hw, circular, weights):
        ctx.offsets, ctx.circular, ctx.size = offsets, circular, tuple(views.shape[-2:])
        ctx.weights = weights
        out = views.new_zeros((*views.shape[1:-2], *canvas_hw))
        return ops.paste_windows_add(views, offsets, out, weights=weights, circular=circular)

    @staticmethod
    def backward(ctx, g):
        v = ops.crop_windows(_c(g), ctx.offsets, ctx.size, circular=ctx.circular)
        if ctx.weights is not None:
            v = v * ctx.weights
        return v, None, None, None, None


def _offsets(offsets: Any) -> torch.Tensor:
    t = torch.as_tensor(offsets)
    if t.is_floating_point() or t.dtype == torch.bool:
        raise TypeError(f"argument 'offsets' must hold integers, got dtype {t.dtype}")
    return t.detach().to("cpu", torch.int64).reshape(-1, 2).contiguous()


def crop_windows(canvas: torch.Tensor, offsets: Any, size: Any, circular: bool = False) -> torch.Tensor:
    """Differentiable :func:`syncsde.ops.crop_windows` (``[*L, H, W] -> [N, *L, h, w]``)."""
    h, w = (size, size) if isinstance(size, int) else tuple(size)
    return _CropWindows.apply(canvas, _offsets(offsets), (h, w), bool(circular))


def paste_windows_add(views: torch.Tensor, offsets: Any, canvas_hw: Any, weights: Any = None,
                      circular: bool = False) -> torch.Tensor:
    """Differentiable adjoint of the crop: a new canvas ``[*L, H, W]`` holding
    ``sum_i f_i^T(weights_i * views_i)``. ``weights`` (geometry, no gradient) broadcasts to the
    views as in :func:`syncsde.ops.paste_windows_add`."""
    H, W = (canvas_hw, canvas_hw) if isinstance(canvas_hw, int) else tuple(canvas_hw)
    if weights is not None:
        weights = torch.as_tensor(weights, dtype=views.dtype).detach()
    return _PasteWindowsAdd.apply(views, _offsets(offsets), (int(H), int(W)), bool(circular),
                                  weights)


# ---- pixel maps ---------------------------------------------------------------------------
class _Dihedral(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, op):
        ctx.inv = ops.dihedral_inverse(op)
        return ops.dihedral(x, op)

    @staticmethod
    def backward(ctx, g):
        return ops.dihedral(_c(g), ctx.inv), None


class _Skew(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, factor, inverse):
        ctx.factor, ctx.inverse = factor, inverse
        return ops.skew(x, factor, inverse=inverse)

    @staticmethod
    def backward(ctx, g):
        return ops.skew(_c(g), ctx.factor, inverse=not ctx.inverse), None, None


def is_permutation(index: torch.Tensor) -> bool:
    """Whether a flat index map of length P holds every value of [0, P) exactly once."""
    idx = torch.as_tensor(index).reshape(-1).to(torch.int64)
    P = idx.numel()
    if P == 0 or int(idx.min()) < 0 or int(idx.max()) >= P:
        return False
    return bool((torch.bincount(idx, minlength=P) == 1).all())


class _PermutePixels(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, index, scatter, perm):
        ctx.index, ctx.scatter, ctx.perm = index, scatter, perm
        ctx.hw = tuple(x.shape[-2:])
        return ops.permute_pixels(x, index, mode="scatter" if scatter else "gather")

    @staticmethod
    def backward(ctx, g):
        g = _c(g)
        if ctx.scatter:  # scatter by a permutation: its adjoint is the gather by it
            return ops.permute_pixels(g, ctx.index, mode="gather"), None, None, None
        if ctx.perm:
            return ops.permute_pixels(g, ctx.index, mode="scatter"), None, None, None
        # a gather that repeats pixels: out = G x with G[p, index[p]] = 1; x-bar = G^T g (CSR)
        P = ctx.index.numel()
        indptr = torch.arange(P + 1, dtype=torch.int64)
        vals = torch.ones(P, dtype=g.dtype)
        flat = g.reshape(*g.shape[:-2], P)
        out = ops.csr_apply(flat, indptr, ctx.index, vals, P, adjoint=True)
        return out.reshape(g.shape[:-2] + ctx.hw), None, None, None


def permute_pixels(x: torch.Tensor, index: Any, mode: str = "gather") -> torch.Tensor:
    """Differentiable :func:`syncsde.ops.permute_pixels`. A gather may use any index map (its
    backward then scatter-adds through the CSR adjoint); a scatter needs a permutation."""
    if mode not in ("gather", "scatter"):
        raise ValueError(f"argument 'mode' must be 'gather' or 'scatter'; got {mode!r}")
    idx = torch.as_tensor(index)
    if idx.is_floating_point() or idx.dtype == torch.bool:
        raise TypeError(f"argument 'index' must hold integers, got dtype {idx.dtype}")
    idx = idx.detach().to("cpu", torch.int64).reshape(-1).contiguous()
    perm = is_permutation(idx)
    if mode == "scatter" and not perm:
        raise ValueError("argument 'index' must be a permutation for mode='scatter'")
    return _PermutePixels.apply(x, idx, mode == "scatter", perm)


def dihedral(x: torch.Tensor, op: str) -> torch.Tensor:
    """Differentiable :func:`syncsde.ops.dihedral`."""
    ops.dihedral_inverse(op)  # validates the name before autograd sees it
    return _Dihedral.apply(x, op)


def skew(x: torch.Tensor, factor: float, inverse: bool = False) -> torch.Tensor:
    """Differentiable :func:`syncsde.ops.skew`."""
    return _Skew.apply(x, float(factor), bool(inverse))


# ---- CSR ----------------------------------------------------------------------------------
class _CSRApply(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, values, indptr, indices, n_cols, adjoint):
        ctx.save_for_backward(x, values)
        ctx.indptr, ctx.indices, ctx.n_cols, ctx.adjoint = indptr, indices, n_cols, adjoint
        return ops.csr_apply(x, indptr, indices, values, n_cols, adjoint=adjoint)

    @staticmethod
    def backward(ctx, g):
        x, values = ctx.saved_tensors
        g = _c(g)
        gx = gv = None
        if ctx.needs_input_grad[0]:
            gx = ops.csr_apply(g, ctx.indptr, ctx.indices, values, ctx.n_cols,
                               adjoint=not ctx.adjoint)
        if ctx.needs_input_grad[1]:
            # entry k of A sits at (row r_k, col c_k): d<g, A x>/dA_k = sum_batch g[r] x[c]
            rows = torch.repeat_interleave(torch.arange(len(ctx.indptr) - 1),
                                           torch.diff(ctx.indptr))
            cols = ctx.indices
            if ctx.adjoint:  # y = A^T x: y[c] += A_k x[r]
                gv = (g[..., cols] * x[..., rows]).reshape(-1, len(cols)).sum(0)
            else:
                gv = (g[..., rows] * x[..., cols]).reshape(-1, len(cols)).sum(0)
        return gx, gv, None, None, None, None


def csr_apply(x: torch.Tensor, indptr: Any, indices: Any, values: torch.Tensor, n_cols: int,
              adjoint: bool = False) -> torch.Tensor:
    """Differentiable :func:`syncsde.ops.csr_apply` over the last dim (in ``x`` and in
    ``values``; the structure ``indptr``/``indices`` is geometry)."""
    indptr = torch.as_tensor(indptr).detach().to("cpu", torch.int64).contiguous()
    indices = torch.as_tensor(indices).detach().to("cpu", torch.int64).contiguous()
    return _CSRApply.apply(x, values, indptr, indices, int(n_cols), bool(adjoint))


# ---- whole view sets ----------------------------------------------------------------------
class _ViewForward(torch.autograd.Function):
    @staticmethod
    def forward(ctx, canvas, views):
        ctx.views = views
        return views.forward(canvas)

    @staticmethod
    def backward(ctx, g):
        return ctx.views.adjoint(_c(g)), None


class _ViewAdjoint(torch.autograd.Function):
    @staticmethod
    def forward(ctx, y, views, weights):
        ctx.views, ctx.weights = views, weights
        return views.adjoint(y, weights)

    @staticmethod
    def backward(ctx, g):
        v = ctx.views.forward(_c(g))
        if ctx.weights is not None:
            v = v * ctx.weights
        return v, None, None


def view_forward(views: Any, canvas: torch.Tensor) -> torch.Tensor:
    """``y_i = f_i(X)`` for every view of a :class:`~syncsde.views.ViewSet`, differentiable
    (backward: the view set's adjoint). Works for windows, pixel maps, texture (CSR) views and
    any user view set whose ``adjoint`` is the adjoint of its ``forward``."""
    return _ViewForward.apply(canvas, views)


def view_adjoint(views: Any, y: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
    """``sum_i f_i^T(w_i y_i)``, differentiable in ``y`` (backward: ``w_i f_i(g)``)."""
    if weights is not None:
        weights = weights.detach().to(dtype=y.dtype, device=y.device)
    return _ViewAdjoint.apply(y, views, weights)
