"""Bad-input matrix over the raw binding (``syncsde._C``) and the public ops API.

Every case is one call: a valid call of a kernel (the *base*) with one *mutation* applied to one
argument. A mutation either keeps the logical values (another layout, a lazy negation, int32
indices, a broadcast view, a hand-made DLPack capsule over the same memory...), and then the
call must give NumPy's answer, or it breaks the input (wrong dtype, shape or device, bogus
DLPack headers, floats as indices, overflowing sizes, raising producers...), and then the call
must raise a clean Python exception (TypeError, ValueError, IndexError, MemoryError,
OverflowError). The outcome of a case is one of

  ok          a value-preserving case gave the reference answer
  clean       the call raised a clean exception (expected, or allowed for "either" cases)
  wrong       a wrong answer, a bad input silently accepted, or an unexpected exception
  crash       the worker process died (signal, sanitizer report)

Cases run in worker subprocesses, a batch each; when a worker dies, the cases of its batch
without a result are re-run one per subprocess so that each crash is named.

  python tools/bad_input_matrix.py              # run everything, print the counts
  python tools/bad_input_matrix.py --list       # the case names
  python tools/bad_input_matrix.py --only crop  # cases whose name contains "crop"

Exit status 0 when there is no crash and no wrong answer. The test
``tests/test_bad_input_matrix.py`` runs it; ``tools/asan_tests.sh`` runs that test under
AddressSanitizer + UBSan.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import traceback
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)

CLEAN_EXCEPTIONS = (TypeError, ValueError, IndexError, MemoryError, OverflowError, BufferError)


# ---------------------------------------------------------------------------------------------
# tensors
# ---------------------------------------------------------------------------------------------
def _torch():
    import torch

    return torch


_TORCH_DT = {"float32": "float32", "float64": "float64", "float16": "float16",
             "bfloat16": "bfloat16", "int64": "int64", "int32": "int32"}


def to_f64(x: Any) -> np.ndarray:
    torch = _torch()
    if isinstance(x, torch.Tensor):
        return x.detach().resolve_neg().resolve_conj().to(torch.float64).cpu().numpy()
    return np.asarray(x, dtype=np.float64)


def as_dtype(values: np.ndarray, dtype: str) -> Any:
    """values (float64 or int) in dtype: numpy array, or torch tensor for bfloat16."""
    torch = _torch()
    if dtype == "bfloat16":
        return torch.from_numpy(np.ascontiguousarray(values, dtype=np.float64)).to(torch.bfloat16)
    return np.ascontiguousarray(values).astype(dtype)


def rounded(values: np.ndarray, dtype: str) -> np.ndarray:
    return to_f64(as_dtype(values, dtype))


TOL = {"float32": 2e-5, "float64": 1e-12, "float16": 4e-3, "bfloat16": 3e-2}


# ---------------------------------------------------------------------------------------------
# bases: one valid call per kernel with its NumPy reference
# ---------------------------------------------------------------------------------------------
@dataclass
class Base:
    """A valid call ``fn(*[args[k] for k in order])``. ``tensors`` names the tensor args and
    their roles ("out", "in", "index"); ``expected(values)`` gives the output's float64 values
    from the (rounded) logical values of every arg; ``out`` names the checked output."""
    name: str
    fn: str
    order: list
    args: dict
    roles: dict
    out: str
    expected: Callable[[dict], np.ndarray]
    dtype: str = "float32"


def _rng(seed):
    return np.random.default_rng(seed)


def _crop_ref(canvas, offsets, h, w, circular):
    W = canvas.shape[-1]
    res = []
    for t, l in np.asarray(offsets).reshape(-1, 2):
        cols = (l + np.arange(w)) % W if circular else l + np.arange(w)
        res.append(canvas[..., t:t + h, :][..., cols])
    return np.stack(res) if res else np.zeros((0,) + canvas.shape[:-2] + (h, w))


def _paste_add_ref(canvas, views, offsets, weights, circular):
    c = canvas.copy()
    W = c.shape[-1]
    h, w = views.shape[-2:]
    wt = np.ones_like(views) if weights is None else np.broadcast_to(weights, views.shape)
    for i, (t, l) in enumerate(np.asarray(offsets).reshape(-1, 2)):
        cols = (l + np.arange(w)) % W if circular else l + np.arange(w)
        c[..., t:t + h, cols] += wt[i] * views[i]
    return c


def _on_top_ref(canvas, views, offsets, circular):
    c = canvas.copy()
    W = c.shape[-1]
    h, w = views.shape[-2:]
    for i, (t, l) in enumerate(np.asarray(offsets).reshape(-1, 2)):
        cols = (l + np.arange(w)) % W if circular else l + np.arange(w)
        c[..., t:t + h, cols] = views[i]
    return c


def _coverage_ref(shape, offsets, h, w, weights, circular):
    out = np.zeros(shape)
    W = shape[-1]
    offs = np.asarray(offsets).reshape(-1, 2)
    wt = np.ones((len(offs), h, w)) if weights is None else (
        np.broadcast_to(weights.reshape(-1, 1, 1), (len(offs), h, w)) if weights.ndim == 1
        else np.broadcast_to(weights, (len(offs), h, w)))
    for i, (t, l) in enumerate(offs):
        cols = (l + np.arange(w)) % W if circular else l + np.arange(w)
        out[t:t + h, cols] += wt[i]
    return out


def _average_ref(canvas, views, offsets, weights, circular):
    num = _paste_add_ref(np.zeros_like(canvas), views, offsets, weights, circular)
    den = _paste_add_ref(np.zeros_like(canvas), np.ones_like(views), offsets, weights, circular)
    return np.where(den > 0, num / np.where(den > 0, den, 1), canvas)


def _dihedral_ref(x, op):
    return {"identity": x, "rot90_cw": np.rot90(x, -1, (-2, -1)), "rot90_ccw": np.rot90(x, 1, (-2, -1)),
            "rot180": np.rot90(x, 2, (-2, -1)), "hflip": x[..., :, ::-1], "vflip": x[..., ::-1, :],
            "transpose": np.swapaxes(x, -1, -2),
            "antitranspose": np.swapaxes(x[..., ::-1, ::-1], -1, -2)}[op]


def _skew_ref(x, factor, inverse):
    H, W = x.shape[-2:]
    out = np.empty_like(x)
    for w in range(W):
        d = int(factor * float(w - H // 2))
        if inverse:
            d = -d
        out[..., :, w] = np.roll(x[..., :, w], d, axis=-1)
    return out


def _permute_ref(x, index, scatter):
    H, W = x.shape[-2:]
    flat = x.reshape(x.shape[:-2] + (H * W,))
    idx = np.asarray(index).reshape(-1)
    out = np.empty_like(flat)
    if scatter:
        out[..., idx] = flat
    else:
        out = flat[..., idx]
    return out.reshape(x.shape)


def _csr_dense(indptr, indices, values, n_cols):
    indptr = np.asarray(indptr).reshape(-1)
    indices = np.asarray(indices).reshape(-1)
    A = np.zeros((len(indptr) - 1, n_cols))
    for r in range(len(indptr) - 1):
        for k in range(indptr[r], indptr[r + 1]):
            A[r, indices[k]] += values[k]
    return A


def make_bases() -> list:
    bases = []
    for dtype in ("float32", "float64", "float16", "bfloat16"):
        r = _rng(1)
        sh = (2, 3, 5)
        x, y, z = (r.standard_normal(sh) for _ in range(3))
        bases.append(Base(f"lincomb2[{dtype}]", "lincomb2", ["out", "x", "y", "a", "b"],
                          dict(out=np.zeros(sh), x=x, y=y, a=0.5, b=-2.0),
                          dict(out="out", x="in", y="in"), "out",
                          lambda v: v["a"] * v["x"] + v["b"] * v["y"], dtype))
    r = _rng(2)
    sh = (2, 3, 5)
    x, y, z = (r.standard_normal(sh) for _ in range(3))
    bases.append(Base("lincomb3", "lincomb3", ["out", "x", "y", "z", "a", "b", "c"],
                      dict(out=np.zeros(sh), x=x, y=y, z=z, a=0.5, b=-2.0, c=0.25),
                      dict(out="out", x="in", y="in", z="in"), "out",
                      lambda v: v["a"] * v["x"] + v["b"] * v["y"] + v["c"] * v["z"]))
    r = _rng(3)
    sh = (2, 3, 5)
    x, eps, ref, noise = (r.standard_normal(sh) for _ in range(4))
    mask = (r.random((2, 1, 5)) > 0.4).astype(float)
    bases.append(Base("syncsde_update", "syncsde_update",
                      ["out", "x", "eps", "ref", "mask", "noise", "c_x", "c_eps", "c_z", "pull"],
                      dict(out=np.zeros(sh), x=x, eps=eps, ref=ref, mask=mask, noise=noise,
                           c_x=0.9, c_eps=-0.3, c_z=0.2, pull=0.5),
                      dict(out="out", x="in", eps="in", ref="in", mask="in", noise="in"), "out",
                      lambda v: (v["c_x"] * v["x"] + v["c_eps"] * v["eps"] + v["c_z"] * v["noise"]
                                 - v["pull"] * v["mask"] * (v["x"] - v["ref"]))))
    r = _rng(4)
    canvas = r.standard_normal((2, 5, 7))
    offsets = np.array([[0, 0], [2, 3], [1, 5]], dtype=np.int64)
    for circ in (False, True):
        offs = offsets if circ else np.array([[0, 0], [2, 3], [1, 4]], dtype=np.int64)
        bases.append(Base(f"crop_windows[circular={circ}]", "crop_windows",
                          ["out", "canvas", "offsets", "h", "w", "circular"],
                          dict(out=np.zeros((3, 2, 3, 3)), canvas=canvas, offsets=offs, h=3, w=3,
                               circular=circ),
                          dict(out="out", canvas="in", offsets="index"), "out",
                          lambda v: _crop_ref(v["canvas"], v["offsets"], v["h"], v["w"], v["circular"])))
    views = r.standard_normal((3, 2, 3, 3))
    wts = r.random((3, 1, 3, 3)) + 0.1
    bases.append(Base("paste_windows_add", "paste_windows_add",
                      ["canvas", "views", "offsets", "weights", "circular"],
                      dict(canvas=canvas.copy(), views=views, offsets=offsets, weights=wts, circular=True),
                      dict(canvas="out", views="in", offsets="index", weights="in"), "canvas",
                      lambda v: _paste_add_ref(v["canvas"], v["views"], v["offsets"], v["weights"], True)))
    bases.append(Base("paste_windows_on_top", "paste_windows_on_top",
                      ["canvas", "views", "offsets", "circular"],
                      dict(canvas=canvas.copy(), views=views, offsets=offsets, circular=True),
                      dict(canvas="out", views="in", offsets="index"), "canvas",
                      lambda v: _on_top_ref(v["canvas"], v["views"], v["offsets"], True)))
    bases.append(Base("window_coverage", "window_coverage",
                      ["out", "offsets", "h", "w", "weights", "circular"],
                      dict(out=np.zeros((5, 7)), offsets=offsets, h=3, w=3,
                           weights=r.random(3) + 0.5, circular=True),
                      dict(out="out", offsets="index", weights="in"), "out",
                      lambda v: _coverage_ref((5, 7), v["offsets"], 3, 3, v["weights"], True)))
    num = r.standard_normal((2, 5, 7))
    den = np.where(r.random((5, 7)) > 0.3, r.random((5, 7)) + 0.5, 0.0)
    keep = r.standard_normal((2, 5, 7))
    bases.append(Base("normalize_accumulated", "normalize_accumulated",
                      ["out", "num", "den", "uncovered"],
                      dict(out=keep, num=num, den=den, uncovered="keep"),
                      dict(out="out", num="in", den="in"), "out",
                      lambda v: np.where(v["den"] > 0, v["num"] / np.where(v["den"] > 0, v["den"], 1),
                                         v["out"])))
    bases.append(Base("window_average", "window_average",
                      ["canvas", "views", "offsets", "weights", "circular", "uncovered"],
                      dict(canvas=canvas.copy(), views=views, offsets=offsets[:2], weights=None,
                           circular=True, uncovered="keep"),
                      dict(canvas="out", views="in", offsets="index", weights="in"), "canvas",
                      lambda v: _average_ref(v["canvas"], v["views"], v["offsets"], None, True)))
    bases[-1].args["views"] = views[:2]
    x = r.standard_normal((2, 4, 6))
    for op in ("rot90_cw", "antitranspose", "hflip"):
        shp = (2, 6, 4) if op != "hflip" else (2, 4, 6)
        bases.append(Base(f"dihedral[{op}]", "dihedral", ["out", "x", "op"],
                          dict(out=np.zeros(shp), x=x, op=op), dict(out="out", x="in"), "out",
                          lambda v: _dihedral_ref(v["x"], v["op"])))
    bases.append(Base("skew", "skew", ["out", "x", "factor", "inverse"],
                      dict(out=np.zeros_like(x), x=x, factor=1.5, inverse=False),
                      dict(out="out", x="in"), "out",
                      lambda v: _skew_ref(v["x"], v["factor"], v["inverse"])))
    perm = r.permutation(24).astype(np.int64)
    for scatter in (False, True):
        bases.append(Base(f"permute_pixels[scatter={scatter}]", "permute_pixels",
                          ["out", "x", "index", "scatter"],
                          dict(out=np.zeros_like(x), x=x, index=perm, scatter=scatter),
                          dict(out="out", x="in", index="index"), "out",
                          lambda v: _permute_ref(v["x"], v["index"], v["scatter"])))
    indptr = np.array([0, 2, 2, 5, 6], dtype=np.int64)
    indices = np.array([0, 3, 1, 1, 4, 2], dtype=np.int64)
    values = r.standard_normal(6)
    for adjoint in (False, True):
        xin = r.standard_normal((3, 4 if adjoint else 5))
        bases.append(Base(f"csr_apply[adjoint={adjoint}]", "csr_apply",
                          ["out", "x", "indptr", "indices", "values", "n_cols", "adjoint"],
                          dict(out=np.zeros((3, 5 if adjoint else 4)), x=xin, indptr=indptr,
                               indices=indices, values=values, n_cols=5, adjoint=adjoint),
                          dict(out="out", x="in", indptr="index", indices="index", values="in"), "out",
                          lambda v: (v["x"] @ _csr_dense(v["indptr"], v["indices"], v["values"], 5)
                                     if v["adjoint"] else
                                     v["x"] @ _csr_dense(v["indptr"], v["indices"], v["values"], 5).T)))
    bases.append(Base("csr_coverage", "csr_coverage", ["out", "indptr", "indices", "values", "n_cols"],
                      dict(out=np.zeros(5), indptr=indptr, indices=indices, values=values, n_cols=5),
                      dict(out="out", indptr="index", indices="index", values="in"), "out",
                      lambda v: _csr_dense(v["indptr"], v["indices"], v["values"], 5).sum(0)))
    return bases


# ---------------------------------------------------------------------------------------------
# mutations
# ---------------------------------------------------------------------------------------------
# A mutation maps (base, arg name, built args) to new built args. kind: "value" (the
# reference answer must come out), "error" (a clean exception must come out), "either".
@dataclass
class Mutation:
    name: str
    roles: tuple
    kind: str
    apply: Callable
    only: tuple = ()


class Raising:
    def __init__(self, exc):
        self.exc = exc

    def __dlpack__(self, *a, **k):
        raise self.exc

    def __dlpack_device__(self):
        return (1, 0)


class ReturnsNotACapsule:
    def __dlpack__(self, *a, **k):
        return 42


class UsedCapsule:
    def __init__(self, arr):
        self.arr = arr

    def __dlpack__(self, *a, **k):
        import ctypes

        cap = self.arr.__dlpack__()
        ctypes.pythonapi.PyCapsule_SetName.argtypes = [ctypes.py_object, ctypes.c_char_p]
        ctypes.pythonapi.PyCapsule_SetName(cap, b"used_dltensor")
        return cap


class DlpackAttrRaises:
    @property
    def __dlpack__(self):
        raise RuntimeError("property boom")


def _forge(arr, **kw):
    from dlpack_forge import KDL_BFLOAT, Forged

    torch = _torch()
    if isinstance(arr, torch.Tensor) and arr.dtype == torch.bfloat16:
        kw.setdefault("code", KDL_BFLOAT)
        kw.setdefault("bits", 16)
        arr = arr.contiguous().view(torch.int16).numpy()
    a = np.ascontiguousarray(arr)
    shape = kw.pop("shape", a.shape)
    return Forged(a, shape, **kw)


def _np(x):
    """x as a numpy array (error mutations start from numpy when x is torch bfloat16)."""
    torch = _torch()
    return x.float().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


def _torch_of(x):
    torch = _torch()
    return x if isinstance(x, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(x))


def _neg_view(x):
    torch = _torch()
    t = _torch_of(x)
    return torch._neg_view(-t)  # lazily negated view of -t: logical value t


def _conj_imag(x):
    torch = _torch()
    t = _torch_of(x)
    if t.dtype not in (torch.float32, torch.float64):
        return None
    z = torch.complex(torch.zeros_like(t), -t)  # imag -t; conj().imag is t with the neg bit
    return z.conj().imag


def _noncontig(x):
    if isinstance(x, np.ndarray):
        big = np.zeros(x.shape[:-1] + (2 * x.shape[-1],) if x.ndim else (2,), x.dtype)
        if x.ndim == 0:
            return x
        big[..., ::2] = x
        return big[..., ::2]
    torch = _torch()
    big = torch.zeros(*x.shape[:-1], 2 * x.shape[-1], dtype=x.dtype)
    big[..., ::2] = x
    return big[..., ::2]


def _negstride(x):
    if isinstance(x, np.ndarray) and x.ndim >= 1:
        return np.ascontiguousarray(x[..., ::-1])[..., ::-1]
    return None


def _transposed(x):
    if x.ndim < 2:
        return None
    if isinstance(x, np.ndarray):
        return np.ascontiguousarray(np.swapaxes(x, 0, -1)).swapaxes(0, -1)
    return x.transpose(0, -1).contiguous().transpose(0, -1)


def _misaligned(x):
    a = _np(x) if not isinstance(x, np.ndarray) else x
    if a.itemsize == 1 or a.ndim == 0:
        return None
    buf = np.zeros(a.nbytes + a.itemsize, dtype=np.uint8)
    m = buf[1:1 + a.nbytes].view(a.dtype).reshape(a.shape)
    m[...] = a
    return m


def _expanded(x):
    """A broadcast view with the same values when x is constant along dim 0... not in general:
    only used for index offsets repeated along dim 0."""
    return None


def _dtype_swap(x, dt):
    a = _np(x)
    return a.astype(dt)


def _readonly(x):
    a = _np(x).copy()
    a.flags.writeable = False
    return a


def _requires_grad(x):
    t = _torch_of(x).clone().float() if _np(x).dtype.kind == "f" else None
    if t is None:
        return None
    return t.requires_grad_(True)


def _zero_stride_out(x):
    a = _np(x)
    if a.ndim == 0:
        return None
    return np.broadcast_to(a[:1].copy(), a.shape)


def _list_of(x):
    return np.asarray(x).tolist()


MUTATIONS = [
    # ---- value-preserving on inputs ----
    Mutation("noncontiguous", ("in", "index"), "value", lambda x: _noncontig(x)),
    Mutation("negative_strides", ("in", "index"), "value", lambda x: _negstride(x)),
    Mutation("transposed_storage", ("in", "index"), "value", lambda x: _transposed(x)),
    Mutation("torch_tensor", ("in", "index", "out"), "value", lambda x: _torch_of(x)),
    Mutation("neg_bit_view", ("in",), "value", lambda x: _neg_view(x)),
    Mutation("conj_imag", ("in",), "value", lambda x: _conj_imag(x)),
    Mutation("misaligned", ("in",), "either", lambda x: _misaligned(x)),
    Mutation("forged_capsule_same_memory", ("in", "index"), "value", lambda x: _forge(x)),
    Mutation("forged_unversioned", ("in", "index"), "value", lambda x: _forge(x, versioned=False)),
    Mutation("forged_null_strides", ("in", "index"), "value", lambda x: _forge(x, strides=None)),
    Mutation("index_int32", ("index",), "value", lambda x: np.asarray(x).astype(np.int32)),
    Mutation("index_list", ("index",), "value", lambda x: _list_of(x)),
    Mutation("index_torch_int32", ("index",), "value", lambda x: _torch_of(np.asarray(x).astype(np.int32))),
    Mutation("out_noncontiguous", ("out",), "value", lambda x: _noncontig(x)),
    # ---- breaking ----
    Mutation("none", ("in", "index", "out"), "error", lambda x: None),
    Mutation("python_float", ("in", "index", "out"), "error", lambda x: 1.5),
    Mutation("string", ("in", "index", "out"), "error", lambda x: "tensor"),
    Mutation("dtype_int8", ("in", "index", "out"), "error", lambda x: _dtype_swap(x, np.int8)),
    Mutation("dtype_uint8", ("in", "index", "out"), "error", lambda x: _dtype_swap(x, np.uint8)),
    Mutation("dtype_bool", ("in", "index", "out"), "error", lambda x: _dtype_swap(x, np.bool_)),
    Mutation("dtype_complex", ("in", "index", "out"), "error", lambda x: _dtype_swap(x, np.complex64)),
    Mutation("dtype_uint64", ("index",), "error", lambda x: _dtype_swap(x, np.uint64)),
    Mutation("dtype_float_index", ("index",), "error", lambda x: _dtype_swap(x, np.float64)),
    Mutation("index_float_list", ("index",), "error", lambda x: (np.asarray(x) + 0.5).tolist()),
    Mutation("index_bool_list", ("index",), "error", lambda x: (np.asarray(x) % 2 == 1).tolist()),
    Mutation("index_list_with_true", ("index",), "error",
             lambda x: [True] + np.asarray(x).reshape(-1).tolist()[1:] if np.asarray(x).ndim == 1
             else [[True] + list(r)[1:] for r in np.asarray(x).tolist()]),
    Mutation("index_huge_int_list", ("index",), "error",
             lambda x: [2 ** 70] + np.asarray(x).reshape(-1).tolist()[1:] if np.asarray(x).ndim == 1
             else [[2 ** 70, 0]] + np.asarray(x).tolist()[1:]),
    Mutation("index_ragged_list", ("index",), "error", lambda x: [[0, 1], [2]]),
    Mutation("index_out_of_range", ("index",), "error", lambda x: np.asarray(x) + 10 ** 6),
    Mutation("index_negative", ("index",), "error", lambda x: np.asarray(x) - 10 ** 6),
    Mutation("index_int64_min", ("index",), "error", lambda x: np.full_like(np.asarray(x), np.iinfo(np.int64).min)),
    Mutation("zero_stride_2e60", ("index", "in"), "error",
             lambda x: _forge(_np(x).reshape(-1)[:1].copy(), shape=[2 ** 60] + list(_np(x).shape[1:]),
                              strides=[0] * _np(x).ndim)),
    Mutation("zero_stride_2e30", ("index",), "error",
             lambda x: _forge(_np(x).reshape(-1)[:1].copy(), shape=[2 ** 30] + list(_np(x).shape[1:]),
                              strides=[0] * _np(x).ndim)),
    Mutation("shape_overflow", ("in", "index", "out"), "error",
             lambda x: _forge(_np(x), shape=[2 ** 40] * max(_np(x).ndim, 2), strides=[1] * max(_np(x).ndim, 2))),
    Mutation("stride_overflow", ("in", "index", "out"), "error",
             lambda x: _forge(_np(x), shape=[2] + list(_np(x).shape[1:]), strides=[2 ** 62] + [1] * (_np(x).ndim - 1))
             if _np(x).ndim >= 1 else None),
    Mutation("stride_int64_min", ("in", "index"), "error",
             lambda x: _forge(_np(x), shape=[2] + list(_np(x).shape[1:]), strides=[-2 ** 63] + [1] * (_np(x).ndim - 1))
             if _np(x).ndim >= 1 else None),
    Mutation("negative_shape", ("in", "index", "out"), "error",
             lambda x: _forge(_np(x), shape=[-1] + list(_np(x).shape[1:]), strides=None) if _np(x).ndim >= 1 else None),
    Mutation("null_shape", ("in", "index", "out"), "error",
             lambda x: _forge(_np(x), shape=None, strides=None, ndim=max(_np(x).ndim, 1))),
    Mutation("null_data", ("in", "index", "out"), "error",
             lambda x: _forge(_np(x), null_data=True)),
    Mutation("misaligned_capsule", ("in", "index", "out"), "error",
             lambda x: _forge(np.concatenate([_np(x).reshape(-1)] * 2).reshape((2,) + _np(x).shape)[0], data_offset=1)),
    Mutation("misaligned_byte_offset", ("in", "index", "out"), "error",
             lambda x: _forge(np.concatenate([_np(x).reshape(-1)] * 2).reshape((2,) + _np(x).shape)[0], byte_offset=3)),
    Mutation("ndim_9", ("in", "index", "out"), "error",
             lambda x: _forge(_np(x).reshape(-1), shape=[1] * 8 + [_np(x).size])),
    Mutation("ndim_negative", ("in", "index", "out"), "error", lambda x: _forge(_np(x), ndim=-1)),
    Mutation("device_cuda", ("in", "index", "out"), "error", lambda x: _forge(_np(x), device=2)),
    Mutation("lanes_2", ("in", "index", "out"), "error", lambda x: _forge(_np(x), lanes=2)),
    Mutation("dlpack_major_2", ("in", "index", "out"), "error", lambda x: _forge(_np(x), major=2)),
    Mutation("bits_odd", ("in", "index", "out"), "error", lambda x: _forge(_np(x), bits=24)),
    Mutation("read_only_flag", ("out",), "error", lambda x: _forge(_np(x), flags=1)),
    Mutation("is_copied_flag", ("out",), "error", lambda x: _forge(_np(x), flags=2)),
    Mutation("numpy_read_only", ("out",), "error", lambda x: _readonly(x)),
    Mutation("zero_stride_out", ("out",), "error", lambda x: _zero_stride_out(x)),
    Mutation("neg_bit_out", ("out",), "error", lambda x: _neg_view(x)),
    Mutation("requires_grad", ("in", "out"), "error", lambda x: _requires_grad(x)),
    Mutation("producer_raises_keyerror", ("in", "index", "out"), "error", lambda x: Raising(KeyError("boom"))),
    Mutation("producer_raises_runtime", ("in", "index", "out"), "error", lambda x: Raising(RuntimeError("boom"))),
    Mutation("producer_raises_buffer", ("in", "index", "out"), "error", lambda x: Raising(BufferError("boom"))),
    Mutation("producer_returns_int", ("in", "index", "out"), "error", lambda x: ReturnsNotACapsule()),
    Mutation("producer_used_capsule", ("in", "out"), "error", lambda x: UsedCapsule(_np(x).copy())),
    Mutation("dlpack_property_raises", ("in", "index", "out"), "error", lambda x: DlpackAttrRaises()),
    Mutation("wrong_shape", ("in", "out"), "error", lambda x: np.zeros(_np(x).shape + (2,), _np(x).dtype)),
    Mutation("scalar_0d", ("in", "index", "out"), "error", lambda x: np.zeros((), _np(x).dtype)),
]

# Scalar argument mutations: (arg, value, kind).
SCALAR_MUTATIONS = {
    "h": [(-1, "error"), (2 ** 62, "error"), (2 ** 70, "error"), (2.5, "error"), ("3", "error")],
    "w": [(-1, "error"), (2 ** 62, "error"), (None, "error")],
    "n_cols": [(-1, "error"), (2 ** 63, "error"), (3, "error"), (1.0, "error")],
    "op": [("rot45", "error"), (3, "error"), (None, "error")],
    "uncovered": [("maybe", "error"), (0, "error")],
    "factor": [(float("nan"), "error"), (float("inf"), "error"), (1e300, "error"), ("x", "error")],
    "a": [("x", "error"), (None, "error")],
    "c_x": [(None, "error")],
}


# ---------------------------------------------------------------------------------------------
# public ops API cases
# ---------------------------------------------------------------------------------------------
def _ops_cases() -> list:
    """(name, kind, thunk, expected or None); thunk() returns the result to compare."""
    import syncsde.ops as ops

    torch = _torch()
    r = _rng(9)
    canvas = r.standard_normal((2, 5, 7)).astype(np.float32)
    offs = np.array([[0, 0], [2, 3]], dtype=np.int64)
    x = r.standard_normal((2, 4, 6)).astype(np.float32)
    cases = []

    def add(name, kind, thunk, expected=None, message=None):
        cases.append((name, kind, thunk, expected, message))

    add("ops.crop_windows[size=2.5]", "error", lambda: ops.crop_windows(canvas, offs, 2.5))
    add("ops.crop_windows[size=(True,2)]", "error", lambda: ops.crop_windows(canvas, offs, (True, 2)))
    add("ops.crop_windows[size=(2.0,2)]", "error", lambda: ops.crop_windows(canvas, offs, (2.0, 2)))
    add("ops.crop_windows[size=np.int32]", "value", lambda: ops.crop_windows(canvas, offs, np.int32(2)),
        _crop_ref(canvas.astype(float), offs, 2, 2, False))
    add("ops.crop_windows[offsets=floats]", "error", lambda: ops.crop_windows(canvas, [[0, 0.5]], 2))
    add("ops.crop_windows[offsets=bools]", "error", lambda: ops.crop_windows(canvas, [[True, False]], 2))
    add("ops.crop_windows[offsets=float tensor]", "error",
        lambda: ops.crop_windows(canvas, torch.zeros(1, 2), 2))
    add("ops.crop_windows[offsets=bool tensor]", "error",
        lambda: ops.crop_windows(canvas, torch.zeros(1, 2, dtype=torch.bool), 2))
    add("ops.crop_windows[meta]", "error",
        lambda: ops.crop_windows(torch.zeros(2, 5, 7, device="meta"), offs, 2))
    add("ops.paste_windows_add[meta canvas]", "error",
        lambda: ops.paste_windows_add(torch.zeros(2, 2, 2, 2), offs, torch.zeros(2, 5, 7, device="meta")))
    add("ops.window_coverage[size=1.5]", "error", lambda: ops.window_coverage(offs, 1.5, (5, 7)))
    add("ops.window_coverage[canvas_hw=(5.5,7)]", "error", lambda: ops.window_coverage(offs, 2, (5.5, 7)))
    add("ops.window_coverage[ok]", "value", lambda: ops.window_coverage(offs, 2, (5, 7)),
        _coverage_ref((5, 7), offs, 2, 2, None, False))
    add("ops.permute_pixels[float tensor index]", "error",
        lambda: ops.permute_pixels(x, torch.arange(24, dtype=torch.float32)))
    add("ops.permute_pixels[bool index]", "error",
        lambda: ops.permute_pixels(x, np.ones(24, dtype=bool)))
    add("ops.permute_pixels[float list]", "error",
        lambda: ops.permute_pixels(x, [float(i) for i in range(24)]))
    add("ops.permute_pixels[neg-bit x]", "value",
        lambda: ops.permute_pixels(_neg_view(x), np.arange(24)[::-1].copy()),
        _permute_ref(x.astype(float), np.arange(24)[::-1], False))
    add("ops.dihedral[meta]", "error", lambda: ops.dihedral(torch.zeros(2, 3, device="meta"), "hflip"))
    add("ops.skew[meta out]", "error",
        lambda: ops.skew(torch.zeros(2, 3), 1.0, out=torch.zeros(2, 3, device="meta")))
    add("ops.csr_apply[n_cols=5.0]", "error",
        lambda: ops.csr_apply(np.zeros((1, 5), np.float32), [0, 1], [0], np.ones(1, np.float32), 5.0))
    add("ops.csr_apply[float indices]", "error",
        lambda: ops.csr_apply(np.zeros((1, 5), np.float32), [0, 1], [0.0], np.ones(1, np.float32), 5))
    xt = torch.from_numpy(x)
    eps = torch.randn(2, 4, 6, generator=torch.Generator().manual_seed(0))
    add("ops.tweedie[eps wrong dtype names eps]", "error",
        lambda: ops.tweedie(xt, eps.double(), 0.5), None, "'eps'")
    add("ops.tweedie[eps wrong shape names eps]", "error",
        lambda: ops.tweedie(xt, eps[:1], 0.5), None, "'eps'")
    add("ops.ddim_step[noise wrong shape names noise]", "error",
        lambda: ops.ddim_step(xt, eps, 0.5, 0.7, eta=1.0, noise=eps[:1]), None, "'noise'")
    add("ops.cfg_combine[names eps_cond]", "error",
        lambda: ops.cfg_combine(xt, eps.double(), 7.5), None, "'eps_cond'")
    add("ops.lincomb[neg-bit y]", "value", lambda: ops.lincomb(xt, _neg_view(eps), 1.0, 2.0),
        x.astype(float) + 2.0 * eps.double().numpy())
    add("ops.lincomb[neg-bit out]", "error", lambda: ops.lincomb(xt, eps, 1.0, 2.0, out=_neg_view(eps.clone())))
    add("ops.tweedie[meta]", "error",
        lambda: ops.tweedie(torch.zeros(2, device="meta"), torch.zeros(2, device="meta"), 0.5))
    add("ops.syncsde_step[names noise]", "error",
        lambda: ops.syncsde_step(xt, eps, xt, 1.0, 0.5, 0.7, 0.1, eta=1.0, noise=eps.double()),
        None, "'noise'")
    add("ops.set_num_threads[2.5]", "error", lambda: ops.set_num_threads(2.5))
    add("ops.set_num_threads[True]", "error", lambda: ops.set_num_threads(True))
    add("ops.set_num_threads[0]", "error", lambda: ops.set_num_threads(0))
    add("ops.set_num_threads[10**9]", "error", lambda: ops.set_num_threads(10 ** 9))
    add("ops.normalize_accumulated[meta]", "error",
        lambda: ops.normalize_accumulated(torch.zeros(2, device="meta"), torch.ones(2, device="meta")))
    add("ops.window_average[offsets floats]", "error",
        lambda: ops.window_average(np.zeros((2, 2, 2, 2), np.float32), [[0, 0], [1.5, 0]],
                                   np.zeros((2, 5, 7), np.float32)))
    return cases


# ---------------------------------------------------------------------------------------------
# the case list
# ---------------------------------------------------------------------------------------------
@dataclass
class Case:
    name: str
    kind: str
    base: Any = None
    arg: str | None = None
    mutation: Any = None
    scalar: Any = field(default=None)


# (arg, mutation) pairs that are valid calls with other semantics (a 0-d mask broadcasts,
# no noise / no weights are allowed): not bad inputs.
NOT_BAD = {("mask", "scalar_0d"), ("noise", "none"), ("weights", "none"), ("den", "scalar_0d"),
           ("weights", "scalar_0d")}


def all_cases() -> list:
    cases = []
    bases = make_bases()
    for b in bases:
        cases.append(Case(f"{b.name}", "value", b))
        for arg, role in b.roles.items():
            for m in MUTATIONS:
                if (arg, m.name) in NOT_BAD:
                    continue
                if role in m.roles and b.args[arg] is not None:
                    cases.append(Case(f"{b.name}/{arg}/{m.name}", m.kind, b, arg, m))
        for arg in b.order:
            for value, kind in SCALAR_MUTATIONS.get(arg, []):
                cases.append(Case(f"{b.name}/{arg}={value!r}", kind, b, arg, None, ("scalar", value)))
    cases.append(Case("set_num_threads/0", "error", None, None, None, ("threads", 0)))
    cases.append(Case("set_num_threads/-1", "error", None, None, None, ("threads", -1)))
    cases.append(Case("set_num_threads/2**40", "error", None, None, None, ("threads", 2 ** 40)))
    cases.append(Case("set_num_threads/1e6", "error", None, None, None, ("threads", 10 ** 6)))
    cases.append(Case("set_num_threads/2.5", "error", None, None, None, ("threads", 2.5)))
    cases.append(Case("set_num_threads/True", "error", None, None, None, ("threads", True)))
    cases.append(Case("set_num_threads/'4'", "error", None, None, None, ("threads", "4")))
    cases.append(Case("set_num_threads/2", "value", None, None, None, ("threads", 2)))
    for i, (name, kind, _, _, _) in enumerate(_ops_case_names()):
        cases.append(Case(name, kind, None, None, None, ("ops", i)))
    return cases


_OPS_CACHE = None


def _ops_case_names():
    global _OPS_CACHE
    if _OPS_CACHE is None:
        _OPS_CACHE = _ops_cases()
    return _OPS_CACHE


def _build_args(b: Base) -> tuple:
    """Built args (dtype applied) and the float64 values the reference sees."""
    built, values = {}, {}
    for k, v in b.args.items():
        role = b.roles.get(k)
        if role in ("in", "out") and v is not None:
            t = as_dtype(v, b.dtype)
            built[k], values[k] = t, to_f64(t)
        else:
            built[k], values[k] = v, (np.asarray(v) if role == "index" else v)
    return built, values


def run_case(c: Case) -> tuple:
    """Returns (outcome, detail)."""
    import syncsde._C as C

    if c.scalar is not None and c.scalar[0] == "threads":
        before = C.get_num_threads()
        try:
            C.set_num_threads(c.scalar[1])
        except CLEAN_EXCEPTIONS as e:
            return ("clean", f"{type(e).__name__}: {e}") if c.kind == "error" else ("wrong", repr(e))
        finally:
            pass
        ok = C.get_num_threads() == c.scalar[1]
        C.set_num_threads(before)
        if c.kind == "error":
            return "wrong", "accepted"
        return ("ok", "") if ok else ("wrong", "not set")
    if c.scalar is not None and c.scalar[0] == "ops":
        name, kind, thunk, expected, message = _ops_case_names()[c.scalar[1]]
        try:
            res = thunk()
        except CLEAN_EXCEPTIONS as e:
            if kind == "value":
                return "wrong", f"unexpected {type(e).__name__}: {e}"
            if message is not None and message not in str(e):
                return "wrong", f"message does not name {message}: {e}"
            return "clean", f"{type(e).__name__}: {e}"
        if kind == "error":
            return "wrong", "bad input accepted"
        if expected is not None and not np.allclose(to_f64(res), expected, rtol=1e-5, atol=1e-5):
            return "wrong", "differs from the reference"
        return "ok", ""
    b = c.base
    built, values = _build_args(b)
    kind = c.kind
    if c.mutation is not None:
        new = c.mutation.apply(built[c.arg])
        if new is None and c.mutation.name != "none":
            return "skip", "mutation does not apply"
        built[c.arg] = new
        if kind == "value" and c.arg != b.out:
            values[c.arg] = np.asarray(c.arg and _values_of(new, values[c.arg]))
    elif c.scalar is not None:
        built[c.arg] = c.scalar[1]
        if kind == "value":
            values[c.arg] = c.scalar[1]
    expected = b.expected(values) if kind != "error" else None
    out_obj = built[b.out]
    try:
        getattr(C, b.fn)(*[built[k] for k in b.order])
    except CLEAN_EXCEPTIONS as e:
        if kind == "value":
            return "wrong", f"unexpected {type(e).__name__}: {e}"
        msg = str(e)
        if c.arg in b.roles and c.arg not in msg:
            return "wrong", f"message does not name '{c.arg}': {msg}"
        return "clean", f"{type(e).__name__}: {msg}"
    if kind == "error":
        return "wrong", "bad input accepted"
    got = to_f64(out_obj)
    tol = TOL[b.dtype]
    if got.shape != expected.shape or not np.allclose(got, expected, rtol=tol, atol=tol):
        return "wrong", f"differs from NumPy (max err {np.max(np.abs(got - expected)) if got.shape == expected.shape else 'shape'})"
    return "ok", ""


def _values_of(new, old):
    """float64 logical values of a value-preserving mutation's result (lists, forged)."""
    from dlpack_forge import Forged

    if isinstance(new, Forged):
        if new.code == 4:  # bfloat16 bits in an int16 buffer
            return old
        return new.buffer.astype(np.float64) if new.buffer.dtype.kind == "f" else new.buffer
    if isinstance(new, list):
        return np.asarray(new)
    if isinstance(new, np.ndarray) and new.dtype.kind in "iu":
        return new
    torch = _torch()
    if isinstance(new, torch.Tensor) and not new.is_floating_point():
        return new.numpy()
    return to_f64(new)


# ---------------------------------------------------------------------------------------------
# runner
# ---------------------------------------------------------------------------------------------
def worker(start: int, stop: int, names_filter: str | None) -> None:
    sys.path.insert(0, HERE)
    cases = all_cases()
    for i in range(start, min(stop, len(cases))):
        c = cases[i]
        print(json.dumps({"start": i}), flush=True)
        try:
            outcome, detail = run_case(c)
        except Exception as e:  # noqa: BLE001 - an unclean exception is a finding
            outcome, detail = "wrong", f"unclean {type(e).__name__}: {e}\n{traceback.format_exc(limit=3)}"
        print(json.dumps({"case": i, "outcome": outcome, "detail": str(detail)[:300]}), flush=True)


def _spawn(start: int, stop: int, timeout: float) -> tuple:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([ROOT, HERE] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    try:
        p = subprocess.run([sys.executable, os.path.abspath(__file__), "--worker", str(start), str(stop)],
                           capture_output=True, text=True, timeout=timeout, env=env, cwd=ROOT)
        rc, out, err = p.returncode, p.stdout, p.stderr
    except subprocess.TimeoutExpired as e:
        rc, out, err = -9, (e.stdout or b"").decode() if isinstance(e.stdout, bytes) else (e.stdout or ""), "timeout"
    results = {}
    last_started = None
    for line in out.splitlines():
        try:
            d = json.loads(line)
        except ValueError:
            continue
        if "case" in d:
            results[d["case"]] = (d["outcome"], d["detail"])
        elif "start" in d:
            last_started = d["start"]
    return rc, results, err, last_started


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--worker", nargs=2, type=int, help=argparse.SUPPRESS)
    ap.add_argument("--list", action="store_true", help="print the case names")
    ap.add_argument("--only", default=None, help="run the cases whose name contains this")
    ap.add_argument("--exclude", default=None, help="skip the cases whose name contains this")
    ap.add_argument("--batch", type=int, default=400, help="cases per worker subprocess")
    ap.add_argument("--jobs", type=int, default=2, help="worker subprocesses at once")
    ap.add_argument("--json", default=None, help="write every case's outcome to this file")
    args = ap.parse_args(argv)
    sys.path.insert(0, HERE)
    if args.worker:
        worker(args.worker[0], args.worker[1], args.only)
        return 0
    cases = all_cases()
    if args.list:
        for i, c in enumerate(cases):
            print(i, c.kind, c.name)
        return 0
    idx = [i for i, c in enumerate(cases) if (args.only is None or args.only in c.name)
           and (args.exclude is None or args.exclude not in c.name)]
    t0 = time.time()
    results: dict = {}
    crashes: dict = {}
    # contiguous index runs, batched
    batches = []
    for k in range(0, len(idx), args.batch):
        chunk = idx[k:k + args.batch]
        batches.append(chunk)
    from concurrent.futures import ThreadPoolExecutor

    def run_alone(i, out):
        rc1, res1, err1, _ = _spawn(i, i + 1, timeout=120)
        if i in res1 and rc1 == 0:
            out[i] = res1[i]
        else:
            tail = "\n".join(err1.strip().splitlines()[-6:])
            out[i] = ("crash", f"exit {rc1}: {tail}")

    def run_batch(chunk):
        # one worker over the batch; when it dies, the case it was running is re-run alone
        # (a crash when it dies again) and a new worker resumes after it
        wanted = set(chunk)
        out = {}
        lo, hi = chunk[0], chunk[-1] + 1
        while lo < hi:
            rc, res, err, last = _spawn(lo, hi, timeout=600)
            out.update({i: r for i, r in res.items() if i in wanted})
            if rc == 0 and all(i in out for i in range(lo, hi) if i in wanted):
                break
            culprit = last if last is not None and last not in res else None
            if culprit is None:  # died before or between cases: run what is left one by one
                for i in range(lo, hi):
                    if i in wanted and i not in out:
                        run_alone(i, out)
                break
            if culprit in wanted:
                run_alone(culprit, out)
            lo = culprit + 1
        return out

    with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as ex:
        for out in ex.map(run_batch, batches):
            results.update(out)
    counts = {"ok": 0, "clean": 0, "wrong": 0, "crash": 0, "skip": 0}
    for i in idx:
        counts[results[i][0]] += 1
    tried = len(idx) - counts["skip"]
    bad = [(cases[i].name, results[i]) for i in idx if results[i][0] in ("wrong", "crash")]
    for name, (outcome, detail) in bad:
        print(f"{outcome.upper()}: {name}: {detail}")
    print(f"bad-input matrix: tried {tried} / correct answers {counts['ok']} / clean errors "
          f"{counts['clean']} / wrong answers {counts['wrong']} / crashes {counts['crash']} "
          f"({counts['skip']} not applicable; {time.time() - t0:.1f} s)")
    if args.json:
        with open(args.json + ".tmp", "w") as f:
            json.dump({"counts": counts, "tried": tried,
                       "cases": {cases[i].name: results[i] for i in idx}}, f, indent=1)
        os.replace(args.json + ".tmp", args.json)
    return 1 if counts["wrong"] or counts["crash"] else 0


if __name__ == "__main__":
    sys.exit(main())
