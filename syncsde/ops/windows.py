"""Window kernels: crop views out of a canvas, paste them back (adjoint or on top), coverage.

A *canvas* is the canonical object, a tensor ``[*L, H, W]`` (``L`` = leading dims such as
``[C]`` or ``[B, C]``; a 1-D sequence is a canvas with ``H = 1``). *Views* are windows of it,
``[N, *L, h, w]``. Window ``i`` has the offset ``offsets[i] = (top_i, left_i)`` (an int64/int32
tensor or a list of pairs, shape ``[N, 2]``) and covers canvas rows ``top_i .. top_i+h-1`` and
columns ``left_i .. left_i+w-1``.

- Without ``circular``: ``0 <= top <= H-h`` and ``0 <= left <= W-w`` (else IndexError naming
  the window).
- With ``circular=True`` the WIDTH wraps: view column ``j`` is canvas column
  ``(left + j) mod W``; ``left`` may be any integer (negative too). The height never wraps.
- Always ``h <= H`` and ``w <= W`` (else ValueError).

Let ``f_i`` be the crop of window ``i``. ``crop_windows`` applies every ``f_i``,
``paste_windows_add`` applies the adjoint ``sum_i f_i^T`` (accumulating into the canvas), so
``<crop(X), Y> == <X, paste_add(Y)>``. Data ops take float32/float64/float16/bfloat16 (16-bit
data are accumulated in float32), inputs of any strides, torch tensors or numpy arrays; outputs
are written in place and returned.
"""
from __future__ import annotations

import sys
from typing import Any

import numpy as np

from syncsde import _C
from syncsde.ops._common import Tensor, as_input, as_int, call_with_output, check_device, empty_like, is_torch

__all__ = ["crop_windows", "paste_windows_add", "paste_windows_on_top", "window_coverage"]


def _offsets(offsets: Any) -> Any:
    """Offsets in a form the binding borrows: CPU tensor, ndarray, or a nested list."""
    if is_torch(offsets):
        if offsets.is_floating_point() or offsets.dtype == sys.modules["torch"].bool:
            raise TypeError(f"argument 'offsets' must hold integers, got dtype {offsets.dtype}")
        t = as_input(offsets, "offsets")
        # a CPU integer tensor as an ndarray view: numpy's DLPack export is much cheaper
        torch = sys.modules["torch"]
        return t.numpy() if t.dtype in (torch.int64, torch.int32) else t
    if isinstance(offsets, np.ndarray) or hasattr(offsets, "__dlpack__"):
        return offsets
    if isinstance(offsets, (list, tuple)):
        if len(offsets) == 0:
            return np.zeros((0, 2), dtype=np.int64)
        try:
            arr = np.asarray(offsets)
        except ValueError as e:  # ragged
            raise ValueError(f"argument 'offsets' must have shape (N, 2); got {offsets!r}") from e
        if arr.dtype.kind not in "iu" or any(isinstance(v, (bool, np.bool_))
                                            for v in np.asarray(offsets, dtype=object).ravel()):
            raise TypeError(f"argument 'offsets' must hold integers (no floats or bools), got "
                            f"{offsets!r}")
        return arr.astype(np.int64, copy=False)
    raise TypeError(
        f"argument 'offsets' must be an integer tensor or a sequence of (top, left) pairs, "
        f"got {type(offsets).__name__}")


def _size(size: Any, name: str = "size") -> tuple[int, int]:
    """An int or an (h, w) pair of ints; 2.5, 2.0 and True are refused, not truncated."""
    if isinstance(size, (bool, np.bool_, float, np.floating, str)):
        raise TypeError(f"argument '{name}' must be an int or an (h, w) pair of ints, got {size!r}")
    if isinstance(size, (int, np.integer)):
        return int(size), int(size)
    try:
        h, w = size
    except (TypeError, ValueError) as e:
        raise ValueError(f"argument '{name}' must be an int or an (h, w) pair, got {size!r}") from e
    try:
        return as_int(h, name), as_int(w, name)
    except TypeError:
        raise TypeError(f"argument '{name}' must be an int or an (h, w) pair of ints, got "
                        f"{size!r}") from None


def _num_windows(offsets: Any) -> int:
    shape = getattr(offsets, "shape", None)
    if shape is not None:
        return int(shape[0]) if len(shape) >= 1 else 0
    return len(offsets)


def _weights(weights: Any) -> Any:
    return None if weights is None else as_input(weights, "weights")


def crop_windows(canvas: Tensor, offsets: Any, size: Any, circular: bool = False,
                 out: Tensor | None = None) -> Tensor:
    """Crops ``N`` windows of ``size = (h, w)`` out of ``canvas [*L, H, W]``.

    Returns ``views [N, *L, h, w]`` with ``views[i] = canvas[..., t_i:t_i+h, l_i:l_i+w]``
    (columns taken mod ``W`` when ``circular``). ``out`` is allocated when omitted (contiguous,
    canvas' dtype and kind); a given ``out`` must not overlap ``canvas``.
    """
    h, w = _size(size)
    off = _offsets(offsets)
    if not (is_torch(canvas) or hasattr(canvas, "__dlpack__")):
        raise TypeError(f"argument 'canvas' must be a torch.Tensor or numpy.ndarray, got "
                        f"{type(canvas).__name__}")
    check_device(canvas, "canvas")
    if out is None:
        if canvas.ndim < 2:
            raise ValueError(
                f"argument 'canvas' must have at least 2 dimensions ([*L, H, W]); got shape "
                f"{tuple(getattr(canvas, 'shape', ()))}")
        out = empty_like(canvas, (_num_windows(off), *canvas.shape[:-2], h, w))
    return call_with_output(_C.crop_windows, out, (canvas,), ("canvas",), off, h, w, bool(circular))


def paste_windows_add(views: Tensor, offsets: Any, canvas: Tensor, weights: Tensor | None = None,
                      circular: bool = False) -> Tensor:
    """Adjoint of :func:`crop_windows`, accumulating: ``canvas += sum_i f_i^T(weights_i * views_i)``.

    ``views [N, *L, h, w]``; ``canvas [*L, H, W]`` is updated in place and returned.
    ``weights`` (optional, views' dtype) broadcasts to the views with numpy rules, e.g.
    ``[N, 1, ..., 1, h, w]`` per pixel or ``[N, 1, ..., 1]`` per view (a 1-D ``[N]`` would align
    with ``w``: reshape it). Overlapping windows add up in window order.
    """
    return call_with_output(_C.paste_windows_add, canvas, (views,), ("views",), _offsets(offsets),
                            _weights(weights), bool(circular))


def paste_windows_on_top(views: Tensor, offsets: Any, canvas: Tensor,
                         circular: bool = False) -> Tensor:
    """Writes the views into ``canvas`` in order: later windows overwrite earlier ones.

    Window ``N-1`` ends on top; canvas pixels no window covers keep their values. ``canvas``
    is updated in place and returned.
    """
    return call_with_output(_C.paste_windows_on_top, canvas, (views,), ("views",), _offsets(offsets),
                            bool(circular))


def window_coverage(offsets: Any, size: Any, canvas_hw: Any, weights: Tensor | None = None,
                    circular: bool = False, out: Tensor | None = None) -> Tensor:
    """``[H, W]`` map of ``sum_i f_i^T(weights_i)``: how many windows (or how much weight) cover
    each canvas pixel.

    ``weights`` is per view ``[N]`` or per pixel (broadcastable to ``[N, h, w]``), in out's dtype.
    ``out`` (overwritten) fixes the dtype; when omitted it is allocated with the weights' dtype,
    or float32 without weights, as a torch tensor if ``offsets`` or ``weights`` is one, else as a
    numpy array.
    """
    h, w = _size(size)
    H, W = _size(canvas_hw, "canvas_hw")
    off = _offsets(offsets)
    wt = _weights(weights)
    if out is None:
        like = weights if weights is not None else offsets
        if is_torch(like):
            import torch

            dtype = weights.dtype if weights is not None else torch.float32
            out = torch.zeros((H, W), dtype=dtype, device=like.device)
        else:
            dtype = np.asarray(weights).dtype if weights is not None else np.float32
            out = np.zeros((H, W), dtype=dtype)
    return call_with_output(_C.window_coverage, out, (), (), off, h, w, wt, bool(circular))


