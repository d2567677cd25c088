"""View sets: the linear maps f_i from a canonical object X to the views y_i = f_i(X).

A view set maps a canvas ``[C, H, W]`` to a stack of views ``[N, C, h, w]`` (one tensor, so all
views go through the model in one batch) and back. Everything runs in the C core through
``syncsde.ops``; these classes only hold geometry.

- ``forward(X)``: ``y_i = f_i(X)`` for all i.
- ``adjoint(Y, weights)``: ``sum_i f_i^T(w_i y_i)`` (canvas-shaped).
- ``coverage(weights)``: ``sum_i f_i^T(w_i)`` (``[1, H, W]``).
- ``average(Y, weights, fallback)``: the canonical average ``adjoint / coverage`` used by
  MultiDiffusion / SyncTweedies / Visual Anagrams; pixels no view covers keep ``fallback``
  (zeros when omitted).
- ``composite_on_top(Y)``: later views overwrite earlier ones (the authors' wide-image rule).

Shapes carry optional batch dimensions between the view axis and the channels: a canvas is
``[*batch, C, H, W]`` and its views ``[N, *batch, C, h, w]``, so a benchmark can run thousands
of samples in one sampler call. Weights and masks broadcast as ``[N, 1.., h, w]``.

Adding a new kind of view means writing a class with these five methods.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import torch

from syncsde import ops


class ViewSet:
    """Base class; see the module docstring for the contract."""

    num_views: int
    canvas_shape: tuple[int, int, int]
    view_shape: tuple[int, int, int]

    def forward(self, canvas: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
        raise NotImplementedError

    def adjoint(self, views: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
        raise NotImplementedError

    def coverage(self, weights: torch.Tensor | None = None, dtype=torch.float32) -> torch.Tensor:
        raise NotImplementedError

    def canvas_zeros(self, views: torch.Tensor) -> torch.Tensor:
        """A zero canvas ``[*batch, C, H, W]`` matching a stack of views ``[N, *batch, C, h, w]``."""
        return torch.zeros((*views.shape[1:-3], *self.canvas_shape), dtype=views.dtype,
                           device=views.device)

    def average(self, views: torch.Tensor, weights: torch.Tensor | None = None,
                fallback: torch.Tensor | None = None) -> torch.Tensor:
        num = self.adjoint(views, weights)
        den = self.coverage(weights, dtype=views.dtype)
        out = fallback.clone() if fallback is not None else torch.zeros_like(num)
        return ops.normalize_accumulated(num, den, out=out, uncovered="keep")

    def composite_on_top(self, views: torch.Tensor,
                         fallback: torch.Tensor | None = None) -> torch.Tensor:
        canvas = fallback.clone() if fallback is not None else self.canvas_zeros(views)
        for i in range(self.num_views):
            self.paste_one_on_top(i, views[i], canvas)
        return canvas

    def forward_one(self, i: int, canvas: torch.Tensor) -> torch.Tensor:
        """``f_i(X)`` for one view."""
        raise NotImplementedError

    def paste_one_on_top(self, i: int, view: torch.Tensor, canvas: torch.Tensor) -> torch.Tensor:
        """Writes ``view`` into ``canvas`` where view i sees it (in place); returns canvas."""
        raise NotImplementedError

    def check_views(self, views: torch.Tensor, name: str = "views") -> None:
        if views.dim() < 4 or views.shape[0] != self.num_views or \
                tuple(views.shape[-3:]) != tuple(self.view_shape):
            raise ValueError(f"{name} has shape {tuple(views.shape)}; expected "
                             f"({self.num_views}, *batch, {', '.join(map(str, self.view_shape))})")

    def check_canvas(self, canvas: torch.Tensor, name: str = "canvas") -> None:
        if canvas.dim() < 3 or tuple(canvas.shape[-3:]) != tuple(self.canvas_shape):
            raise ValueError(f"{name} has shape {tuple(canvas.shape)}; expected "
                             f"(*batch, {', '.join(map(str, self.canvas_shape))})")


def _int(v, name: str) -> int:
    """An integer argument; bools, floats (even 2.0) and strings are refused, not truncated."""
    if isinstance(v, bool) or not hasattr(v, "__index__"):
        raise TypeError(f"{name} must be an integer, got {type(v).__name__} ({v!r})")
    return v.__index__()


def _int_tuple(v, n: int, name: str) -> tuple[int, ...]:
    try:
        items = list(v)
    except TypeError:
        raise TypeError(f"{name} must be {n} integers, got {v!r}") from None
    if len(items) != n:
        raise ValueError(f"{name} must be {n} integers, got {v!r}")
    return tuple(_int(x, name) for x in items)


def _has_bool(seq) -> bool:
    return any(_has_bool(v) if isinstance(v, (list, tuple)) else isinstance(v, bool) for v in seq)


def _int_offsets(offsets) -> torch.Tensor:
    """Window offsets ``[N, 2]`` (top, left) as int64; float, bool and complex data refused."""
    t = offsets if isinstance(offsets, torch.Tensor) else None
    if t is None:
        import numpy as np

        try:
            arr = np.asarray(offsets)
        except (TypeError, ValueError) as e:
            raise TypeError(f"offsets must be integers, got {offsets!r}") from e
        if arr.dtype == object or arr.size and arr.dtype.kind not in "iu":
            raise TypeError(f"offsets must be integers, got dtype {arr.dtype} ({offsets!r:.80})")
        if isinstance(offsets, (list, tuple)) and _has_bool(offsets):  # numpy reads True as 1
            raise TypeError(f"offsets must be integers, got a bool in {offsets!r:.80}")
        t = torch.from_numpy(arr.astype(np.int64).reshape(-1)) if arr.size else \
            torch.zeros(0, dtype=torch.int64)
    elif t.is_floating_point() or t.is_complex() or t.dtype == torch.bool:
        raise TypeError(f"offsets must be an integer tensor, got {t.dtype}")
    if t.device.type == "meta":
        raise ValueError("offsets are on the meta device (no data)")
    if t.numel() % 2:
        raise ValueError(f"offsets must be (top, left) pairs, got {t.numel()} numbers")
    return t.detach().to("cpu", torch.int64).reshape(-1, 2).contiguous()


def window_offsets(length: int, window: int, stride: int, circular: bool = False) -> list[int]:
    """Start positions of windows of size ``window`` every ``stride`` along ``length``.

    Without wrap the last window is moved to end exactly at ``length`` when the grid does not
    land there, so every column is covered (peers leave the last columns uncovered). With
    ``circular`` the windows go round the loop: ``ceil(length / stride)`` windows.
    """
    length, window, stride = (_int(v, n) for v, n in ((length, "length"), (window, "window"),
                                                       (stride, "stride")))
    if window < 1 or stride < 1:
        raise ValueError(f"window and stride must be >= 1, got window={window}, stride={stride}")
    if window > length:
        raise ValueError(f"window {window} is larger than the canvas ({length})")
    if circular:
        return [k * stride for k in range(math.ceil(length / stride))]
    starts = list(range(0, length - window + 1, stride))
    if starts[-1] != length - window:
        starts.append(length - window)
    return starts


@dataclass
class WindowViews(ViewSet):
    """Windows ``size = (h, w)`` of a canvas ``[C, H, W]`` at ``offsets[i] = (top, left)``.

    ``circular`` wraps the width (360-degree panoramas). 1-D sequences (motion) use H = h = 1.
    """

    canvas_shape: tuple[int, int, int]
    size: tuple[int, int]
    offsets: torch.Tensor
    circular: bool = False

    def __post_init__(self):
        C, H, W = _int_tuple(self.canvas_shape, 3, "canvas_shape")
        h, w = _int_tuple(self.size, 2, "size")
        if min(C, H, W, h, w) < 1:
            raise ValueError(f"canvas_shape and size must be positive, got {self.canvas_shape} "
                             f"and {self.size}")
        self.canvas_shape = (C, H, W)
        self.size = (h, w)
        self.offsets = _int_offsets(self.offsets)
        if h > H or w > W:
            raise ValueError(f"window {h}x{w} is larger than the canvas {H}x{W}")
        if len(self.offsets) == 0:
            raise ValueError("a window view set needs at least one window")
        tops, lefts = self.offsets[:, 0], self.offsets[:, 1]
        if (tops < 0).any() or (tops > H - h).any():
            raise ValueError(f"window tops must lie in [0, {H - h}], got {tops.tolist()}")
        if not self.circular and ((lefts < 0).any() or (lefts > W - w).any()):
            raise ValueError(f"window lefts must lie in [0, {W - w}], got {lefts.tolist()}")
        self.num_views = len(self.offsets)
        self.view_shape = (C, h, w)

    @classmethod
    def grid(cls, canvas_shape: Sequence[int], size: Sequence[int], stride: Sequence[int] | int,
             circular: bool = False) -> "WindowViews":
        """Row-major grid of windows covering the whole canvas (last row/column moved in)."""
        C, H, W = canvas_shape
        h, w = size
        sh, sw = (stride, stride) if isinstance(stride, int) else stride
        tops = window_offsets(H, h, sh)
        lefts = window_offsets(W, w, sw, circular)
        offs = [(t, l) for t in tops for l in lefts]
        return cls((C, H, W), (h, w), torch.tensor(offs, dtype=torch.int64), circular)

    def forward(self, canvas, out=None):
        self.check_canvas(canvas)
        return ops.crop_windows(canvas, self.offsets, self.size, circular=self.circular, out=out)

    def separators(self) -> list[tuple["WindowViews", list[int]]]:
        """The overlaps S_i = C_{i-1} ∩ C_i of a 1-D chain of windows (one row or one column),
        as window view sets grouped by size, each with the index of the window i it belongs to.

        Sorted along the chain, windows satisfy the running-intersection property
        (C_i ∩ ∪_{j<i} C_j ⊆ C_{i-1}), so for a Markov field
        ``p(X) = prod_i p(C_i) / prod_i p(S_i)`` (the junction-tree factorisation used by
        DiffCollage). Circular chains add the closing overlap (then it is an approximation).
        """
        tops, lefts = self.offsets[:, 0], self.offsets[:, 1]
        h, w = self.size
        H, W = self.canvas_shape[1:]
        if bool((tops == tops[0]).all()):
            axis, pos, size, length = 1, lefts.tolist(), w, W
        elif bool((lefts == lefts[0]).all()):
            axis, pos, size, length = 0, tops.tolist(), h, H
        else:
            raise ValueError("a factor-graph (collage) composition needs a 1-D chain of windows "
                             "(one row or one column); this grid is 2-D")
        order = sorted(range(self.num_views), key=lambda i: pos[i])
        pairs = list(zip(order[:-1], order[1:]))
        if self.circular and axis == 1 and len(order) > 1:
            pairs.append((order[-1], order[0]))
        groups: dict[int, tuple[list, list]] = {}
        for a, b in pairs:
            start = pos[b]
            stop = pos[a] + size if pos[a] <= pos[b] else pos[a] + size - length  # wrap
            extent = stop - start
            if extent <= 0:
                continue
            off = (int(tops[b]), start) if axis == 1 else (start, int(lefts[b]))
            groups.setdefault(extent, ([], []))
            groups[extent][0].append(off)
            groups[extent][1].append(b)
        out = []
        for extent, (offs, owners) in sorted(groups.items()):
            sz = (h, extent) if axis == 1 else (extent, w)
            out.append((WindowViews(self.canvas_shape, sz, torch.tensor(offs), self.circular), owners))
        return out

    def adjoint(self, views, weights=None):
        self.check_views(views)
        canvas = self.canvas_zeros(views)
        ops.paste_windows_add(views, self.offsets, canvas, weights=weights, circular=self.circular)
        return canvas

    def coverage(self, weights=None, dtype=torch.float32):
        if weights is not None:
            n, (h, w) = self.num_views, self.size
            if tuple(weights.shape[-2:]) == (h, w):
                weights = weights.reshape(n, -1, h, w)[:, 0].to(dtype).contiguous()
            else:
                weights = weights.reshape(n, -1)[:, 0].to(dtype).contiguous()
        out = torch.zeros(self.canvas_shape[1:], dtype=dtype)
        ops.window_coverage(self.offsets, self.size, self.canvas_shape[1:], weights=weights,
                            circular=self.circular, out=out)
        return out.unsqueeze(0)

    def average(self, views, weights=None, fallback=None):
        self.check_views(views)
        out = fallback.clone() if fallback is not None else self.canvas_zeros(views)
        return ops.window_average(views, self.offsets, out, weights=weights,
                                  circular=self.circular, uncovered="keep")

    def composite_on_top(self, views, fallback=None):
        self.check_views(views)
        out = fallback.clone() if fallback is not None else self.canvas_zeros(views)
        return ops.paste_windows_on_top(views, self.offsets, out, circular=self.circular)

    def forward_one(self, i, canvas):
        return ops.crop_windows(canvas, self.offsets[i:i + 1], self.size, circular=self.circular)[0]

    def paste_one_on_top(self, i, view, canvas):
        ops.paste_windows_on_top(view.unsqueeze(0), self.offsets[i:i + 1], canvas,
                                 circular=self.circular)
        return canvas


# ---- full-image pixel maps (Visual Anagrams-style views) --------------------------------
_DIHEDRAL = ("identity", "rot90_cw", "rot90_ccw", "rot180", "hflip", "vflip", "transpose",
             "antitranspose")


@dataclass(frozen=True)
class PixelMap:
    """One invertible pixel map of an ``[C, S, S]`` image: a dihedral op, a skew, or an
    arbitrary permutation ``index`` (gather: ``out.flat[p] = x.flat[index[p]]``)."""

    kind: str
    factor: float = 0.0
    index: torch.Tensor | None = None

    @staticmethod
    def parse(spec) -> "PixelMap":
        if isinstance(spec, PixelMap):
            return spec
        if isinstance(spec, torch.Tensor):
            return PixelMap("permutation", index=spec.to(torch.int64).contiguous())
        if isinstance(spec, str):
            if spec in _DIHEDRAL:
                return PixelMap(spec)
            if spec == "flip":  # the authors' "flip" is upside down
                return PixelMap("vflip")
            if spec == "skew":
                return PixelMap("skew", factor=1.5)
            if spec.startswith("skew"):
                try:
                    return PixelMap("skew", factor=float(spec.split(":", 1)[1]))
                except (IndexError, ValueError):
                    pass
        raise ValueError(f"unknown view {spec!r}; expected one of {list(_DIHEDRAL)}, 'flip', "
                         "'skew', 'skew:<factor>' or a permutation index tensor")

    def apply(self, x, out=None):
        if self.kind == "skew":
            return ops.skew(x, self.factor, out=out)
        if self.kind == "permutation":
            return ops.permute_pixels(x, self.index, mode="gather", out=out)
        return ops.dihedral(x, self.kind, out=out)

    def invert(self, x, out=None):
        if self.kind == "skew":
            return ops.skew(x, self.factor, inverse=True, out=out)
        if self.kind == "permutation":
            return ops.permute_pixels(x, self.index, mode="scatter", out=out)
        return ops.dihedral(x, ops.dihedral_inverse(self.kind), out=out)


class PixelMapViews(ViewSet):
    """N full-image views ``y_i = P_i X`` of a square canvas, each P_i a permutation of pixels
    (so the adjoint is the inverse and every pixel is covered once by every view)."""

    def __init__(self, canvas_shape: Sequence[int], maps: Sequence):
        C, H, W = (int(v) for v in canvas_shape)
        self.maps = [PixelMap.parse(m) for m in maps]
        if not self.maps:
            raise ValueError("need at least one view")
        if H != W and any(m.kind in ("rot90_cw", "rot90_ccw", "transpose", "antitranspose")
                          for m in self.maps):
            raise ValueError(f"rotations and transposes need a square canvas, got {H}x{W}")
        for m in self.maps:
            if m.kind == "permutation" and m.index.numel() != H * W:
                raise ValueError(f"a permutation view needs {H * W} indices, got {m.index.numel()}")
        self.canvas_shape = (C, H, W)
        self.view_shape = (C, H, W)
        self.num_views = len(self.maps)

    def forward(self, canvas, out=None):
        self.check_canvas(canvas)
        if out is None:
            out = torch.empty((self.num_views, *canvas.shape), dtype=canvas.dtype,
                              device=canvas.device)
        for i, m in enumerate(self.maps):
            m.apply(canvas, out=out[i])
        return out

    def inverse_one(self, i: int, view: torch.Tensor) -> torch.Tensor:
        return self.maps[i].invert(view)

    def adjoint(self, views, weights=None):
        self.check_views(views)
        acc = self.canvas_zeros(views)
        for i, m in enumerate(self.maps):
            v = views[i] if weights is None else views[i] * weights[i]
            acc += m.invert(v.contiguous())
        return acc

    def coverage(self, weights=None, dtype=torch.float32):
        H, W = self.canvas_shape[1:]
        if weights is None:
            return torch.full((1, H, W), float(self.num_views), dtype=dtype)
        acc = torch.zeros((1, H, W), dtype=dtype)
        for i, m in enumerate(self.maps):
            w = weights[i].to(dtype).reshape(-1, *weights.shape[-2:])[:1].expand(1, H, W).contiguous()
            acc += m.invert(w)
        return acc

    def forward_one(self, i, canvas):
        return self.maps[i].apply(canvas)

    def paste_one_on_top(self, i, view, canvas):
        canvas.copy_(self.maps[i].invert(view.contiguous()))  # a full-image view covers all
        return canvas
