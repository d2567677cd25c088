"""Compositing: normalize an accumulated numerator, and the canonical window average.

Uncovered pixels. A pixel is *covered* when its denominator is ``> 0``; a denominator that
is 0 (no window, or zero total weight), negative or NaN makes it *uncovered*, and the
``uncovered`` policy decides what is written there:

- ``"keep"``: leave the output's existing value (pass the previous state as ``out`` /
  ``canvas`` to keep it);
- ``"zero"``: write 0;
- ``"error"``: raise ValueError if any pixel is uncovered, checked before anything is written.
"""
from __future__ import annotations

from typing import Any

from syncsde import _C
from syncsde.ops._common import Tensor, call_with_output, is_torch, zeros_like
from syncsde.ops.windows import _offsets, _weights

__all__ = ["normalize_accumulated", "window_average", "UNCOVERED_POLICIES"]

UNCOVERED_POLICIES = ("keep", "zero", "error")


def _policy(uncovered: Any) -> str:
    if not isinstance(uncovered, str) or uncovered not in UNCOVERED_POLICIES:
        raise ValueError(f"argument 'uncovered' must be 'keep', 'zero' or 'error'; got {uncovered!r}")
    return uncovered


def _cast_like(den: Any, num: Any) -> Any:
    """den in num's floating dtype when both are of one kind (torch / numpy) and den is floating."""
    if is_torch(den) and is_torch(num):
        if den.dtype != num.dtype and den.is_floating_point() and num.is_floating_point():
            return den.to(num.dtype)
        return den
    dt, nt = getattr(den, "dtype", None), getattr(num, "dtype", None)
    if not is_torch(den) and not is_torch(num) and dt is not None and nt is not None and dt != nt:
        import numpy as np

        if np.issubdtype(dt, np.floating) and np.issubdtype(nt, np.floating):
            return den.astype(nt)
    return den


def normalize_accumulated(num: Tensor, den: Tensor, out: Tensor | None = None,
                          uncovered: str = "keep") -> Tensor:
    """``out = num / den`` where ``den > 0``; ``uncovered`` (see the module doc) elsewhere.

    ``den`` broadcasts to ``num`` (e.g. ``[H, W]`` coverage to ``[C, H, W]``); a floating ``den``
    of another dtype is cast to num's dtype first. ``out`` may be ``num`` itself (in place);
    when omitted a zero tensor is allocated, so ``"keep"`` then leaves 0 on uncovered pixels.
    """
    policy = _policy(uncovered)
    if out is None:
        if not (is_torch(num) or hasattr(num, "__dlpack__")):
            raise TypeError(f"argument 'num' must be a torch.Tensor or numpy.ndarray, got "
                            f"{type(num).__name__}")
        out = zeros_like(num)
    if not (is_torch(den) or hasattr(den, "__dlpack__")):
        raise TypeError(f"argument 'den' must be a torch.Tensor or numpy.ndarray, got "
                        f"{type(den).__name__}")
    den = _cast_like(den, num)
    return call_with_output(_C.normalize_accumulated, out, (num, den), ("num", "den"), policy)


def window_average(views: Tensor, offsets: Any, canvas: Tensor, weights: Tensor | None = None,
                   circular: bool = False, uncovered: str = "keep") -> Tensor:
    """The MultiDiffusion / SyncTweedies canonical average, in one pass over the canvas::

        canvas = sum_i f_i^T(w_i * views_i) / sum_i f_i^T(w_i)      where the denominator > 0

    ``views [N, *L, h, w]``, ``offsets [N, 2]`` (see :mod:`syncsde.ops.windows`, ``circular``
    wraps the width), ``canvas [*L, H, W]`` is overwritten in place and returned (its values
    stay on uncovered pixels with ``"keep"``). ``weights`` (optional, views' dtype) broadcasts
    to the views with numpy rules (``[N, 1, .., 1, h, w]`` per pixel, ``[N, 1, .., 1]`` per
    view). ``uncovered`` as in the module doc; ``"error"`` raises before writing anything.
    """
    policy = _policy(uncovered)
    return call_with_output(_C.window_average, canvas, (views,), ("views",), _offsets(offsets),
                            _weights(weights), bool(circular), policy)


