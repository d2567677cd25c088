"""Correlation models of SyncSDE: which reference ``Xtilde_i`` and which mask ``M_i`` each
trajectory is pulled to (seed 000, design notes section 2).

The conditional score of trajectory i adds ``grad log N(Xtilde_i; y_i, lambda (1-abar_t) M_i^-1)``;
the update is ``y_i(s) = DDIM(y_i(t)) - gamma_t inv_lambda(t) M_i (y_i(t) - Xtilde_i(t))``.
A model gives masks once per run and references once per step, both stacked over views and
built from the **pre-step** states. When the reference of i uses trajectories j < i only
(``sequential = True``), running all views in lockstep equals generating them one by one.

- :class:`PreviousView`: ``Xtilde_i = f_i(f_{i-1}^T y_{i-1})`` on the overlap of views i-1 and i
  (the authors' wide image: each window pulled to its left neighbour, shifted).
- :class:`EarlierViews`: ``Xtilde_i = f_i(composite of y_j, j < i, later on top)`` on the pixels
  any earlier view covers (the authors' mesh-texturing rule).
- :class:`Explicit`: per trajectory a list of ``(source j, weight map)``; ``Xtilde_i`` is the
  weight-normalised sum of the sources and ``M_i`` the summed weight (mask T2I and editing:
  ``x1 <- x0 on 1-B``, ``x2 <- x0 on 1-B and x1 on B``).
- :class:`TwoSided`: every view pulled to the canonical average of the *other* views on its
  overlap with them; symmetric, so it is not sequential.
"""
from __future__ import annotations

from typing import Sequence

import torch

from syncsde.views import ViewSet


def mask_shape(y: torch.Tensor) -> tuple[int, ...]:
    """``[N, 1.., h, w]``: a per-pixel map that broadcasts over batch and channel dims of y."""
    return (y.shape[0],) + (1,) * (y.dim() - 3) + tuple(y.shape[-2:])


class Correlation:
    """Base: ``masks(views, like)`` once per run, ``references(y, views)`` once per step.

    ``like`` has the shape of one stack of views ``[N, C, h, w]``; masks are ``[N, 1, h, w]``.
    ``y`` may carry batch dimensions ``[N, *batch, C, h, w]``.
    """

    sequential = True

    def masks(self, views: ViewSet, like: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def references(self, y: torch.Tensor, views: ViewSet) -> torch.Tensor:
        raise NotImplementedError


class _Chain(Correlation):
    """View i >= 1 pulled to the on-top composite of earlier views (all of them, or only i-1)."""

    only_previous: bool

    def _walk(self, y: torch.Tensor, views: ViewSet, per_view):
        canvas = views.canvas_zeros(y)
        for i in range(1, views.num_views):
            if self.only_previous:
                canvas.zero_()
            views.paste_one_on_top(i - 1, y[i - 1], canvas)
            per_view(i, views.forward_one(i, canvas))

    def masks(self, views, like):
        n = views.num_views
        ones = torch.ones((n, *views.view_shape), dtype=like.dtype, device=like.device)
        m = torch.zeros((n, 1, *views.view_shape[1:]), dtype=like.dtype, device=like.device)

        def put(i, seen):
            m[i, 0] = (seen[0] > 0).to(like.dtype)

        self._walk(ones, views, put)
        return m

    def references(self, y, views):
        ref = y.clone()  # view 0 (mask 0) keeps itself

        def put(i, seen):
            ref[i] = seen

        self._walk(y, views, put)
        return ref


class PreviousView(_Chain):
    only_previous = True


class EarlierViews(_Chain):
    only_previous = False


class Explicit(Correlation):
    """``sources[i] = [(j, weight), ...]`` with j < i; weights broadcast to ``[1, h, w]``.

    ``Xtilde_i = sum_j W_ij y_j / sum_j W_ij`` and ``M_i = sum_j W_ij``, so that
    ``M_i (y_i - Xtilde_i) = sum_j W_ij (y_i - y_j)``: the authors' mask T2I / editing terms.
    """

    def __init__(self, sources: dict[int, Sequence[tuple[int, torch.Tensor | float]]]):
        for i, src in sources.items():
            for j, _ in src:
                if not 0 <= j < i:
                    raise ValueError(f"trajectory {i} may only be pulled to earlier trajectories, got {j}")
        self.sources = sources

    def _weights(self, views, like):
        n = views.num_views
        hw = views.view_shape[1:]
        W = {}
        for i, src in self.sources.items():
            if i >= n:
                raise ValueError(f"correlation names trajectory {i} but there are {n}")
            for j, w in src:
                w = torch.as_tensor(w, dtype=like.dtype, device=like.device)
                try:
                    W[i, j] = w.expand(1, *hw).contiguous()
                except RuntimeError as e:
                    raise ValueError(f"weight map for ({i}, {j}) has shape {tuple(w.shape)}; "
                                     f"expected one that broadcasts to (1, {hw[0]}, {hw[1]})") from e
        return W

    def masks(self, views, like):
        m = torch.zeros((views.num_views, 1, *views.view_shape[1:]), dtype=like.dtype, device=like.device)
        for (i, _), w in self._weights(views, like).items():
            m[i] += w
        return m

    def references(self, y, views):
        W = self._weights(views, y)
        num = torch.zeros_like(y)
        den = torch.zeros(mask_shape(y), dtype=y.dtype, device=y.device)
        for (i, j), w in W.items():
            w = w.reshape(den.shape[1:])
            num[i] += w * y[j]
            den[i] += w
        return torch.where(den > 0, num / den.clamp_min(1e-30), y)


class TwoSided(Correlation):
    """Every view pulled to the average of the *other* views where at least one other covers."""

    sequential = False

    def _cov_views(self, views, like):
        """How many views see each pixel of each view, as ``[N, 1.., h, w]``."""
        cov = views.coverage(dtype=like.dtype).to(like.device)
        cv = views.forward(cov.expand(views.canvas_shape[0], *cov.shape[1:]).contiguous())
        return cv[:, :1].reshape(mask_shape(like))

    def masks(self, views, like):
        return (self._cov_views(views, like) > 1.5).to(like.dtype)

    def references(self, y, views):
        cov_v = self._cov_views(views, y)
        num_v = views.forward(views.adjoint(y))
        others = (num_v - y) / (cov_v - 1).clamp_min(1)
        return torch.where(cov_v > 1.5, others, y)


CORRELATIONS = {"previous": PreviousView, "earlier": EarlierViews, "two_sided": TwoSided}
