"""Pixel-map views: dihedral maps, the column skew, pixel permutations and CSR sparse linear maps.

The image ops act on the last two dims ``[..., H, W]`` (leading dims are batch/views/channels and
are all mapped alike); the CSR ops act on the last dim only. Data tensors are float32, float64,
float16 or bfloat16 (the data moves are bit-exact; the CSR maps accumulate 16-bit types in
float32). Outputs are written into ``out`` (allocated contiguous when omitted) and returned; an
output must not overlap its inputs. Index arguments may be int64/int32 tensors or lists of ints.
"""
from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np

from syncsde import _C
from syncsde.ops._common import (
    Tensor,
    as_input,
    check_output,
    device_of,
    empty_like,
    is_torch,
)

#: Names accepted by :func:`dihedral`, in the C core's order.
DIHEDRAL_OPS = ("identity", "rot90_cw", "rot90_ccw", "rot180", "hflip", "vflip", "transpose",
                "antitranspose")

_SWAPS_AXES = frozenset({"rot90_cw", "rot90_ccw", "transpose", "antitranspose"})
_INVERSE = {"rot90_cw": "rot90_ccw", "rot90_ccw": "rot90_cw"}


def _check_op(op: Any) -> str:
    if not isinstance(op, str) or op not in DIHEDRAL_OPS:
        raise ValueError(f"argument 'op' must be one of {', '.join(repr(o) for o in DIHEDRAL_OPS)}; "
                         f"got {op!r}")
    return op


def dihedral_inverse(op: str) -> str:
    """The dihedral op undoing ``op``: ``rot90_cw`` <-> ``rot90_ccw``; every other op is its own
    inverse. ``dihedral(dihedral(x, op), dihedral_inverse(op))`` equals ``x``."""
    op = _check_op(op)
    return _INVERSE.get(op, op)


def dihedral_swaps_axes(op: str) -> bool:
    """Whether ``op`` turns an ``H x W`` image into a ``W x H`` one."""
    return _check_op(op) in _SWAPS_AXES


def dihedral_shape(shape: Sequence[int], op: str) -> tuple:
    """Output shape of :func:`dihedral` on an input of ``shape``."""
    shape = tuple(int(s) for s in shape)
    if len(shape) < 2:
        raise ValueError(f"dihedral maps need a shape [..., H, W]; got {shape}")
    if dihedral_swaps_axes(op):
        return shape[:-2] + (shape[-1], shape[-2])
    return shape


def _tensor(x: Any, name: str) -> Any:
    """A host tensor the binding can borrow (TypeError for anything else)."""
    return as_input(x, name)


def _index(v: Any, name: str) -> Any:
    """Index arguments: tensors go to host; plain sequences become int64 arrays (floats and
    bools are refused rather than truncated)."""
    if is_torch(v) or isinstance(v, np.ndarray) or hasattr(v, "__dlpack__"):
        return as_input(v, name)
    try:
        a = np.asarray(v)
    except (TypeError, ValueError) as e:
        raise TypeError(f"argument '{name}' must be an integer tensor or a sequence of integers, "
                        f"got {type(v).__name__}") from e
    if a.size == 0:
        return a.astype(np.int64)
    if a.dtype.kind not in "iu":
        raise TypeError(f"argument '{name}' must be an integer tensor or a sequence of integers; "
                        f"got a sequence of {a.dtype}")
    return a.astype(np.int64, copy=False)


def _ndim_at_least(x: Any, n: int, name: str, layout: str) -> None:
    if x.ndim < n:
        raise ValueError(f"argument '{name}' must have {n} to {_C.MAX_DIMS} dimensions ({layout}); "
                         f"got shape {tuple(x.shape)}")


def _run(kernel: Any, out: Any, *args: Any) -> Any:
    """``kernel(out, *args)`` on host memory; a non-CPU ``out`` goes through a host buffer."""
    check_output(out)
    if device_of(out) == "cpu":
        kernel(out, *args)
        return out
    import torch

    host = out.detach().to("cpu", memory_format=torch.contiguous_format)
    kernel(host, *args)
    with torch.no_grad():
        out.copy_(host)
    return out


def dihedral(x: Tensor, op: str, out: Tensor | None = None) -> Tensor:
    """A dihedral map of the last two dims (one strided copy, tiled when it transposes).

    With ``x`` of shape ``[..., H, W]`` and NumPy on the last two axes:

    ================  =====================================  ============
    op                equals                                 output
    ================  =====================================  ============
    ``identity``      ``x``                                  ``[.., H, W]``
    ``rot90_cw``      ``np.rot90(x, -1, axes=(-2, -1))``     ``[.., W, H]``
    ``rot90_ccw``     ``np.rot90(x, 1, axes=(-2, -1))``      ``[.., W, H]``
    ``rot180``        ``np.rot90(x, 2, axes=(-2, -1))``      ``[.., H, W]``
    ``hflip``         ``x[..., :, ::-1]``                    ``[.., H, W]``
    ``vflip``         ``x[..., ::-1, :]``                    ``[.., H, W]``
    ``transpose``     ``np.swapaxes(x, -1, -2)``             ``[.., W, H]``
    ``antitranspose`` ``np.swapaxes(x[..., ::-1, ::-1], -1, -2)``  ``[.., W, H]``
    ================  =====================================  ============

    ``antitranspose`` is the reflection across the anti-diagonal,
    ``out[..., i, j] = x[..., H-1-j, W-1-i]``. See :func:`dihedral_inverse`.
    """
    op = _check_op(op)
    x = _tensor(x, "x")
    if out is None:
        _ndim_at_least(x, 2, "x", "[..., H, W]")
        out = empty_like(x, dihedral_shape(x.shape, op))
    return _run(_C.dihedral, out, x, op)


def skew_shifts(H: int, W: int, factor: float) -> list:
    """Per-column shifts ``d_w = trunc(factor * (w - H // 2))`` of :func:`skew` (as the C core
    computes them: the product in float64, truncated toward zero)."""
    return [int(float(factor) * float(w - int(H) // 2)) for w in range(int(W))]


def skew(x: Tensor, factor: float, inverse: bool = False, out: Tensor | None = None) -> Tensor:
    """Skew view: column ``w`` rolled circularly along the height by
    ``d_w = trunc(factor * (w - H // 2))``::

        out[..., i, w] = x[..., (i - d_w) % H, w]     # == np.roll(x[..., :, w], d_w, axis=-1)

    ``inverse=True`` rolls by ``-d_w`` and undoes the forward map exactly. ``factor=1.5`` is the
    Visual Anagrams / SyncSDE skew view.
    """
    f = float(factor)
    if not math.isfinite(f):
        raise ValueError(f"argument 'factor' must be finite; got {factor!r}")
    x = _tensor(x, "x")
    if out is None:
        _ndim_at_least(x, 2, "x", "[..., H, W]")
        out = empty_like(x)
    return _run(_C.skew, out, x, f, bool(inverse))


def permute_pixels(x: Tensor, index: Any, mode: str = "gather", out: Tensor | None = None) -> Tensor:
    """Permutes the pixels of the last two dims by a flat index map (``P = H * W``)::

        gather:  out.flat[p] = x.flat[index[p]]
        scatter: out.flat[index[p]] = x.flat[p]

    over the flattened ``[H, W]`` of every leading slice. ``index`` holds ``P`` int64/int32
    entries (shape ``(P,)`` or ``(H, W)``; a tensor or a list). Entries outside ``[0, P)`` raise
    IndexError and ``mode='scatter'`` requires a permutation (ValueError otherwise), both before
    anything is written. A gather may repeat pixels (any index map); a scatter with a permutation
    ``index`` is the gather with its inverse.
    """
    if mode not in ("gather", "scatter"):
        raise ValueError(f"argument 'mode' must be 'gather' or 'scatter'; got {mode!r}")
    x = _tensor(x, "x")
    index = _index(index, "index")
    if out is None:
        _ndim_at_least(x, 2, "x", "[..., H, W]")
        out = empty_like(x)
    return _run(_C.permute_pixels, out, x, index, mode == "scatter")


def _n_cols(n_cols: Any) -> int:
    if isinstance(n_cols, bool) or not isinstance(n_cols, (int, np.integer)):
        raise TypeError(f"argument 'n_cols' must be an int; got {type(n_cols).__name__}")
    n = int(n_cols)
    if n < 0:
        raise ValueError(f"argument 'n_cols' must be >= 0; got {n}")
    return n


def _len(v: Any, name: str) -> int:
    try:
        return int(v.shape[0]) if hasattr(v, "shape") else len(v)
    except (TypeError, IndexError) as e:
        raise ValueError(f"argument '{name}' must be 1-D; got {v!r}") from e


def csr_apply(x: Tensor, indptr: Any, indices: Any, values: Tensor, n_cols: int,
              adjoint: bool = False, out: Tensor | None = None) -> Tensor:
    """Applies the CSR matrix ``A`` (``n_rows = len(indptr) - 1`` by ``n_cols``) to the LAST dim.

    Forward: ``x [..., n_cols] -> out [..., n_rows]``,
    ``out[..., r] = sum_{k in indptr[r]:indptr[r+1]} values[k] * x[..., indices[k]]``.
    Adjoint (``adjoint=True``): ``x [..., n_rows] -> out [..., n_cols]``, ``out = A^T x``.

    ``values`` has x's floating dtype; ``indptr``/``indices`` are int64/int32 (tensors or lists,
    e.g. the arrays of a ``scipy.sparse.csr_matrix``). The structure is checked before anything
    is written: ``indptr[0] == 0``, ``indptr`` non-decreasing, ``indptr[-1] == len(indices) ==
    len(values)`` (ValueError), ``indices`` in ``[0, n_cols)`` (IndexError). Duplicate column
    entries within a row are summed. The adjoint transposes ``A`` once per call (counting sort)
    and sums in increasing row order, so results are deterministic and race-free.
    """
    n = _n_cols(n_cols)
    x = _tensor(x, "x")
    values = _tensor(values, "values")
    indptr = _index(indptr, "indptr")
    indices = _index(indices, "indices")
    if out is None:
        _ndim_at_least(x, 1, "x", "[..., n_rows]" if adjoint else "[..., n_cols]")
        n_out = n if adjoint else _len(indptr, "indptr") - 1
        if n_out < 0:
            raise ValueError("argument 'indptr' must have n_rows + 1 >= 1 entries; got shape (0,)")
        out = empty_like(x, tuple(x.shape[:-1]) + (n_out,))
    return _run(_C.csr_apply, out, x, indptr, indices, values, n, bool(adjoint))


def csr_coverage(indptr: Any, indices: Any, values: Tensor, n_cols: int,
                 out: Tensor | None = None) -> Tensor:
    """Column sums of the CSR matrix, ``out[c] = sum_{k: indices[k] == c} values[k]`` (shape
    ``[n_cols]``, values' dtype): the adjoint applied to ones, bit for bit equal to
    ``csr_apply(ones(n_rows), ..., adjoint=True)``. Used to normalise texture bakes."""
    n = _n_cols(n_cols)
    values = _tensor(values, "values")
    indptr = _index(indptr, "indptr")
    indices = _index(indices, "indices")
    if out is None:
        out = empty_like(values, (n,))
    return _run(_C.csr_coverage, out, indptr, indices, values, n)


__all__ = [
    "DIHEDRAL_OPS", "dihedral", "dihedral_inverse", "dihedral_swaps_axes", "dihedral_shape",
    "skew", "skew_shifts", "permute_pixels", "csr_apply", "csr_coverage",
]
