"""The DLPack consumer of the binding: capsule kinds, flags, devices, and every error path.

A ctypes producer builds versioned capsules by hand so that flags (read-only, copied) and an
unsupported major version can be exercised; numpy 2.x and torch export versioned capsules,
and a wrapper without ``max_version`` forces the legacy path.
"""
from __future__ import annotations

import ctypes
import multiprocessing as mp
import os
import subprocess
import sys
import threading

import numpy as np
import pytest
import torch

from syncsde import _C, ops


ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tools"))
# the DLPack ABI structures, declared once for the tests and the fuzz/matrix tools
from dlpack_forge import (DLDataType, DLDevice, DLManagedTensorVersioned,  # noqa: E402,F401
                          DLPackVersion, DLTensor)


_PyCapsule_New = ctypes.pythonapi.PyCapsule_New
_PyCapsule_New.restype = ctypes.py_object
_PyCapsule_New.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_void_p]
_NAME = ctypes.create_string_buffer(b"dltensor_versioned")


class HandMadeProducer:
    """Exports a float32/float64 numpy array as a versioned capsule with chosen fields."""

    def __init__(self, arr, major=1, flags=0, device=(1, 0), code=2, bits=None, lanes=1):
        self.arr = arr
        self.device = device
        self.keep = []
        m = DLManagedTensorVersioned()
        m.version = DLPackVersion(major, 0)
        m.flags = flags
        shape = (ctypes.c_int64 * arr.ndim)(*arr.shape)
        strides = (ctypes.c_int64 * arr.ndim)(*(s // arr.itemsize for s in arr.strides))
        m.dl_tensor = DLTensor(arr.ctypes.data, DLDevice(*device), arr.ndim,
                               DLDataType(code, bits or arr.itemsize * 8, lanes),
                               ctypes.cast(shape, ctypes.POINTER(ctypes.c_int64)),
                               ctypes.cast(strides, ctypes.POINTER(ctypes.c_int64)), 0)
        self.keep += [m, shape, strides]
        self.m = m

    def __dlpack_device__(self):
        return self.device

    def __dlpack__(self, stream=None, max_version=None, dl_device=None, copy=None):
        return _PyCapsule_New(ctypes.addressof(self.m), _NAME, None)


class LegacyOnly:
    """A producer that predates max_version: the consumer must fall back to a legacy capsule."""

    def __init__(self, t):
        self.t = t

    def __dlpack_device__(self):
        return self.t.__dlpack_device__()

    def __dlpack__(self, stream=None):
        return self.t.__dlpack__()


def _lincomb(out, x, y):
    _C.lincomb2(out, x, y, 2.0, -1.0)
    return out


def test_versioned_and_legacy_capsules_give_the_same_result():
    x = np.arange(12, dtype=np.float32).reshape(3, 4)
    y = np.ones((3, 4), np.float32)
    expect = 2 * x - y
    out = np.empty_like(x)
    _lincomb(out, HandMadeProducer(x), HandMadeProducer(y))
    np.testing.assert_array_equal(out, expect)
    t_out = torch.empty(3, 4)
    _lincomb(LegacyOnly(t_out), LegacyOnly(torch.from_numpy(x)), LegacyOnly(torch.from_numpy(y)))
    np.testing.assert_array_equal(t_out.numpy(), expect)


def test_read_only_output_refused_before_writing():
    x = np.ones((4, 4), np.float32)
    out = np.zeros((4, 4), np.float32)
    with pytest.raises(ValueError, match="'out' is read-only"):
        _lincomb(HandMadeProducer(out, flags=1), x, x)
    ro = np.zeros((4, 4), np.float32)
    ro.setflags(write=False)
    with pytest.raises(ValueError, match="read-only"):
        ops.lincomb(x, x, 1.0, 1.0, out=ro)
    assert not out.any() and not ro.any()


def test_read_only_input_is_fine():
    x = np.ones((4, 4), np.float32)
    x.setflags(write=False)
    out = ops.lincomb(x, x, 1.0, 2.0)
    np.testing.assert_array_equal(out, 3 * np.ones((4, 4)))


def test_copied_output_refused():
    out = np.zeros(4, np.float32)
    with pytest.raises(ValueError, match="copy"):
        _lincomb(HandMadeProducer(out, flags=2), np.ones(4, np.float32), np.ones(4, np.float32))


def test_major_version_refused():
    x = np.ones(4, np.float32)
    with pytest.raises(BufferError, match="major version 2"):
        _lincomb(np.empty_like(x), HandMadeProducer(x, major=2), x)


def test_unsupported_dtypes_and_lanes():
    x = np.ones(4, np.float32)
    with pytest.raises(TypeError, match="'x' has an unsupported dtype"):
        _lincomb(np.empty_like(x), HandMadeProducer(x, lanes=2), x)
    with pytest.raises(TypeError, match="'x' has an unsupported dtype"):
        _lincomb(np.empty_like(x), np.ones(4, np.complex64), x)
    with pytest.raises(TypeError, match="'out' has dtype int64"):
        ops.lincomb(np.ones(4, np.int64), np.ones(4, np.int64), 1, 1)
    with pytest.raises(TypeError, match="'y' has dtype float64; expected float32 like 'out'"):
        ops.lincomb(x, np.ones(4), 1, 1)


def test_device_refused_by_the_binding():
    x = np.ones(4, np.float32)
    with pytest.raises(ValueError, match="'x' is on device cuda:1"):
        _lincomb(np.empty_like(x), HandMadeProducer(x, device=(2, 1)), x)


def test_non_tensor_arguments():
    with pytest.raises(TypeError, match="'x' must be a tensor supporting DLPack"):
        _lincomb(np.zeros(3, np.float32), [1.0, 2.0, 3.0], np.zeros(3, np.float32))
    with pytest.raises(TypeError, match="torch.Tensor or numpy.ndarray"):
        ops.tweedie([1.0], np.zeros(1, np.float32), 0.5)
    with pytest.raises(TypeError, match="'out' is required"):
        _C.lincomb2(None, np.zeros(1), np.zeros(1), 1.0, 1.0)


def test_shape_mismatch_names_both_arguments():
    with pytest.raises(ValueError, match=r"'y' has shape \(3, 5\); expected \(3, 4\) like 'out'"):
        ops.lincomb(torch.zeros(3, 4), torch.zeros(3, 5), 1, 1)
    with pytest.raises(ValueError, match="'mask' has shape .* does not broadcast"):
        ops.syncsde_step(torch.zeros(2, 4, 8, 8), torch.zeros(2, 4, 8, 8), torch.zeros(2, 4, 8, 8),
                         torch.zeros(3, 1, 8, 8), 0.3, 0.4, 1.0)


def test_zero_stride_and_overlapping_outputs_refused():
    x = torch.ones(4, 8)
    with pytest.raises(ValueError, match="zero stride"):
        ops.lincomb(x, x, 1, 1, out=torch.zeros(1, 8).expand(4, 8))
    buf = torch.zeros(9)
    with pytest.raises(ValueError, match="may overlap"):
        ops.lincomb(torch.ones(4, 2), torch.ones(4, 2), 1, 1, out=buf.as_strided((4, 2), (2, 2)))
    big = torch.randn(10)
    with pytest.raises(ValueError, match="'out' overlaps input 'x'"):
        ops.lincomb(big[:-1], big[:-1], 1, 1, out=big[1:])


def test_output_requiring_grad_refused_and_inputs_with_grad_accepted():
    x = torch.randn(5, requires_grad=True)
    with pytest.raises(ValueError, match="requires grad"):
        ops.lincomb(x.detach(), x.detach(), 1, 1, out=torch.zeros(5, requires_grad=True))
    out = ops.tweedie(x, x, 0.25)
    torch.testing.assert_close(out, (x.detach() - 0.75**0.5 * x.detach()) / 0.5)
    assert not out.requires_grad


def test_zero_size_and_zero_dim_tensors():
    e = torch.zeros(0, 4)
    assert ops.tweedie(e, e, 0.5).shape == (0, 4)
    s = torch.tensor(2.0)
    assert float(ops.tweedie(s, torch.tensor(0.0), 0.25)) == pytest.approx(4.0)


def test_too_many_dimensions():
    x = np.zeros((1,) * 9, np.float32)
    with pytest.raises(ValueError, match="9 dimensions"):
        ops.lincomb(x, x, 1, 1)


def test_gil_released_threads_agree():
    g = torch.Generator().manual_seed(0)
    xs = [torch.randn(4, 64, 64, generator=g) for _ in range(4)]
    outs = [None] * 4

    def work(i):
        for _ in range(20):
            outs[i] = ops.tweedie(xs[i], xs[(i + 1) % 4], 0.3)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for i in range(4):
        torch.testing.assert_close(outs[i], (xs[i] - 0.7**0.5 * xs[(i + 1) % 4]) / 0.3**0.5)


def test_thread_count_follows_environment():
    code = "import syncsde; print(syncsde.get_num_threads())"
    env = dict(os.environ, SYNCSDE_NUM_THREADS="1")
    res = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert res.stdout.strip() == "1", res.stderr
    env["SYNCSDE_NUM_THREADS"] = "zero"
    res = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert res.returncode != 0 and "SYNCSDE_NUM_THREADS" in res.stderr
    with pytest.raises(ValueError):
        _C.set_num_threads(0)


def _child_work(q):
    # numpy only: torch's own OpenMP pool is not fork-safe either (a torch op in a forked
    # child can hang on its own); this test is about our kernels.
    x = np.ones((8, 4, 96, 96), np.float32)
    q.put(float(ops.tweedie(x, x, 0.5).sum()))


@pytest.mark.skipif(not hasattr(os, "fork"), reason="fork only")
def test_forked_child_does_not_hang():
    ops.set_num_threads(2)
    x = np.ones((8, 4, 96, 96), np.float32)
    ops.tweedie(x, x, 0.5)  # parent runs a parallel region first
    ctx = mp.get_context("fork")
    q = ctx.Queue()
    p = ctx.Process(target=_child_work, args=(q,))
    p.start()
    p.join(timeout=60)
    alive = p.is_alive()
    if alive:
        p.kill()
    ops.set_num_threads()
    assert not alive, "forked child hung in an OpenMP region"
    expect = float(ops.tweedie(x, x, 0.5).sum())
    assert q.get(timeout=5) == pytest.approx(expect)


def test_direct_binding_refuses_grad_tensors_and_cuda_like_devices():
    x = torch.zeros(3, requires_grad=True)
    with pytest.raises(ValueError, match="'x' requires grad"):
        _C.lincomb2(torch.zeros(3), x, torch.zeros(3), 1.0, 1.0)


def test_torch_fast_path_matches_generic_path():
    g = torch.Generator().manual_seed(3)
    x, y = torch.randn(5, 7, generator=g), torch.randn(5, 7, generator=g)
    fast = torch.empty(5, 7)
    _C.lincomb2(fast, x.t().contiguous().t(), y, 0.5, 2.0)  # transposed storage
    slow = torch.empty(5, 7)
    _C.lincomb2(LegacyOnly(slow), LegacyOnly(x.t().contiguous().t()), LegacyOnly(y), 0.5, 2.0)
    assert torch.equal(fast, slow) and torch.allclose(fast, 0.5 * x + 2 * y)
