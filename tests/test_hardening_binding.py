"""Regression tests of issue 7 (hardening) for the C binding and the ops wrappers.

Each test names the defect it pins down; each failed before its fix (see docs/c_core.md,
"Hardening"). Hand-made DLPack capsules come from tools/dlpack_forge.py. Tests that could
crash the interpreter before the fix run their body in a subprocess.
"""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

import syncsde._C as C
import syncsde.ops as ops

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tools"))
from dlpack_forge import KDL_BFLOAT, Forged  # noqa: E402


def run_isolated(code: str, timeout: float = 240) -> subprocess.CompletedProcess:
    """Runs `code` in a fresh interpreter (a crash fails the test instead of killing pytest)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([p for p in (ROOT, env.get("PYTHONPATH")) if p])
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True,
                          text=True, timeout=timeout, env=env, cwd=ROOT)


# ---- 1. sizes from shapes are overflow-checked ---------------------------------------------
def test_zero_stride_offsets_of_length_2_60_are_refused():
    """(2*n+1)*8 wrapped for n = 2^60 and the window copy wrote past a 16-byte buffer."""
    off = torch.zeros(1, 2, dtype=torch.int64).expand(2 ** 60, 2)
    for call in (lambda: C.window_coverage(torch.zeros(4, 4), off, 1, 1, None, False),
                 lambda: C.crop_windows(torch.zeros(2 ** 60, 1, 1).expand(2 ** 60, 1, 1)
                                        if False else torch.zeros(0, 1, 1), torch.zeros(4, 4),
                                        off, 1, 1, False)):
        with pytest.raises(ValueError, match="offsets"):
            call()


def test_broadcast_index_tensors_are_capped():
    off = torch.zeros(1, 2, dtype=torch.int64).expand(2 ** 30, 2)
    with pytest.raises(ValueError, match="offsets.*broadcast"):
        C.window_coverage(torch.zeros(4, 4), off, 1, 1, None, False)
    # a small broadcast index is copied and works like the materialized one
    small = torch.tensor([[1, 2]]).expand(3, 2)
    out, ref = torch.zeros(4, 4), torch.zeros(4, 4)
    C.window_coverage(out, small, 2, 2, None, False)
    ref[1:3, 2:4] = 3
    assert torch.equal(out, ref)


@pytest.mark.parametrize("shape,strides,what", [
    ([2 ** 40, 2 ** 40], [1, 1], "more elements"),
    ([2, 3], [2 ** 62, 1], "strides"),
    ([2, 3], [-(2 ** 63), 1], "strides"),
    ([-1, 3], None, "negative"),
    ([2 ** 62, 4], None, "more elements"),
])
def test_layouts_no_memory_can_hold_are_refused(shape, strides, what):
    x = Forged(np.zeros(6, np.float32), shape, strides)
    with pytest.raises(ValueError, match=f"'x'.*{what}"):
        C.lincomb2(np.zeros((2, 3), np.float32), x, np.zeros((2, 3), np.float32), 1.0, 1.0)


def test_empty_tensor_with_huge_other_dims_is_refused():
    """(0, 2^62, 2^62): numel 0, but H*W overflows inside the kernels."""
    x = Forged(np.zeros(4, np.float32), [0, 2 ** 62, 2 ** 62], [1, 1, 1])
    with pytest.raises(ValueError, match="'x'"):
        C.permute_pixels(np.zeros((0, 1, 1), np.float32), x, [0], False)


def test_null_shape_and_null_data_are_refused():
    buf = np.zeros(6, np.float32)
    out = np.zeros((2, 3), np.float32)
    with pytest.raises(ValueError, match="'x'.*NULL shape"):
        C.lincomb2(out, Forged(buf, None, None, ndim=2), out.copy(), 1.0, 1.0)
    with pytest.raises(ValueError, match="'x'.*NULL data"):
        C.lincomb2(out, Forged(buf, [2, 3], null_data=True), out.copy(), 1.0, 1.0)


def test_null_strides_mean_row_major():
    """DLPack: NULL strides describe a compact row-major tensor."""
    a = np.arange(6, dtype=np.float64)
    out = np.zeros((2, 3))
    C.lincomb2(out, Forged(a, [2, 3], None), np.zeros((2, 3)), 2.0, 0.0)
    np.testing.assert_array_equal(out, 2 * a.reshape(2, 3))


# ---- 7. misaligned data ----------------------------------------------------------------------
def misaligned(n: int) -> np.ndarray:
    buf = np.zeros(8 * n + 8, np.uint8)
    a = buf[1:1 + 8 * n].view(np.float64)
    a[...] = np.arange(n)
    return a


def test_misaligned_arrays_are_refused_by_the_binding_and_copied_by_ops():
    a = misaligned(16)
    assert not a.flags.aligned
    with pytest.raises(ValueError, match="'x'.*not aligned"):
        C.lincomb2(np.zeros(16), a, np.zeros(16), 1.0, 1.0)
    with pytest.raises(ValueError, match="'out'.*not aligned"):
        C.lincomb2(misaligned(16), np.zeros(16), np.zeros(16), 1.0, 1.0)
    got = ops.lincomb(a, np.ones(16), 2.0, 1.0)
    np.testing.assert_array_equal(got, 2 * np.arange(16) + 1)


def test_misaligned_byte_offset_capsule_is_refused():
    f = Forged(np.zeros(8, np.float32), [4], byte_offset=2)
    with pytest.raises(ValueError, match="'x'.*not aligned"):
        C.lincomb2(np.zeros(4, np.float32), f, np.zeros(4, np.float32), 1.0, 1.0)


# ---- 2. check-then-use race on index arrays --------------------------------------------------
RACE = """
import threading, numpy as np, torch, syncsde._C as C
C.set_num_threads(2)
H = W = 128
P = H * W
x = torch.randn(16, H, W)
out = torch.empty_like(x)
perm = torch.randperm(P)
index = perm.clone()
bad = torch.full((P,), 1 << 40, dtype=torch.int64)
stop = False
def scribble():
    while not stop:
        index.copy_(bad)     # torch releases the GIL while it writes
        index.copy_(perm)
t = threading.Thread(target=scribble)
t.start()
ok = errors = 0
try:
    for it in range(300):
        for scatter in (False, True):
            try:
                C.permute_pixels(out, x, index, scatter)
                ok += 1
            except (IndexError, ValueError):
                errors += 1
    # CSR with indices scribbled
    n_rows, n_cols = 64, P
    nnz = 4 * n_rows
    indptr = torch.arange(0, nnz + 1, 4)
    good_idx = torch.randint(0, n_cols, (nnz,))
    indices = good_idx.clone()
    vals = torch.randn(nnz)
    xs = torch.randn(16, n_cols)
    o = torch.empty(16, n_rows)
    def scribble2():
        while not stop:
            indices.fill_(1 << 40)
            indices.copy_(good_idx)
            indptr[1:].fill_(1 << 40)
            indptr.copy_(torch.arange(0, nnz + 1, 4))
    stop = True
    t.join()
    stop = False
    t = threading.Thread(target=scribble2)
    t.start()
    for it in range(300):
        try:
            C.csr_apply(o, xs, indptr, indices, vals, n_cols, False)
            ok += 1
        except (IndexError, ValueError):
            errors += 1
        try:
            C.csr_apply(xs, o, indptr, indices, vals, n_cols, True)
            ok += 1
        except (IndexError, ValueError):
            errors += 1
    # window offsets scribbled
    stop = True
    t.join()
    stop = False
    canvas = torch.randn(4, 256, 256)
    good_off = torch.randint(0, 128, (16, 2))
    offsets = good_off.clone()
    views = torch.empty(16, 4, 128, 128)
    def scribble3():
        while not stop:
            offsets.fill_(1 << 40)
            offsets.copy_(good_off)
    t = threading.Thread(target=scribble3)
    t.start()
    for it in range(60):
        for circular in (False, True):
            try:
                C.crop_windows(views, canvas, offsets, 128, 128, circular)
                C.paste_windows_add(canvas, views, offsets, None, circular)
                ok += 1
            except (IndexError, ValueError):
                errors += 1
finally:
    stop = True
    t.join()
print("race ok", ok, "errors", errors)
"""


def test_index_scribbled_by_another_thread_never_reads_out_of_bounds():
    """The kernels used to validate an index and then read it again with the GIL released;
    a thread writing 2^40 into it in between sent the gather out of bounds (segfault; under
    ASan a heap-buffer-overflow). The kernels now copy the index before checking it."""
    r = run_isolated(RACE)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "race ok" in r.stdout


# ---- 4. the negative bit ---------------------------------------------------------------------
def neg_view(t: torch.Tensor) -> torch.Tensor:
    """A lazily negated view whose logical values equal t (memory holds -t)."""
    v = torch._neg_view(-t)
    assert v.is_neg()
    return v


def test_negative_bit_inputs_are_resolved_in_the_fast_path():
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(4, 5, generator=g), torch.randn(4, 5, generator=g)
    z = torch.complex(torch.zeros_like(y), -y)
    im = z.conj().imag  # == y, with the negative bit
    assert im.is_neg()
    for yy in (im, neg_view(y)):
        out = torch.empty(4, 5)
        C.lincomb2(out, x, yy, 1.0, 2.0)
        np.testing.assert_allclose(out.numpy(), x.numpy() + 2 * y.numpy(), rtol=1e-6, atol=1e-6)
        got = ops.lincomb(x, yy, 1.0, 2.0)
        np.testing.assert_allclose(got.numpy(), x.numpy() + 2 * y.numpy(), rtol=1e-6, atol=1e-6)
    # window and pixel-map kernels read through the same borrow
    canvas = torch.randn(2, 6, 6, generator=g)
    views = ops.crop_windows(neg_view(canvas), [[0, 1]], 3)
    np.testing.assert_array_equal(views.numpy(), canvas[None, :, 0:3, 1:4].numpy())
    vals = torch.randn(3, generator=g)
    got = ops.csr_apply(torch.ones(1, 2), [0, 2, 3], [0, 1, 1], neg_view(vals), 2)
    np.testing.assert_allclose(got.numpy(), [[vals[0] + vals[1], vals[2]]], rtol=1e-6)


def test_negative_bit_outputs_are_refused():
    x = torch.randn(3)
    for call in (lambda o: C.lincomb2(o, x, x, 1.0, 1.0), lambda o: ops.lincomb(x, x, 1.0, 1.0, out=o)):
        with pytest.raises(ValueError, match="'out'.*negative bit"):
            call(neg_view(torch.zeros(3)))


# ---- 7. index lists: integers only --------------------------------------------------------
@pytest.mark.parametrize("offsets", [[[0, 0.5]], [[0, True]], [[False, 1]], [[0, 1.0]],
                                     [[0, "1"]], [[0, None]], [[0, 2 ** 64]]])
def test_offset_lists_with_floats_or_bools_are_refused(offsets):
    with pytest.raises(TypeError, match="'offsets'"):
        C.crop_windows(torch.empty(1, 1, 1), torch.zeros(3, 3), offsets, 1, 1, False)
    with pytest.raises(TypeError, match="'offsets'"):
        ops.crop_windows(torch.zeros(3, 3), offsets, 1)


def test_index_lists_of_numpy_integers_work():
    out = torch.empty(1, 1, 1)
    C.crop_windows(out, torch.arange(9.0).reshape(3, 3), [[np.int32(1), np.int64(2)]], 1, 1, False)
    assert out.item() == 5.0


@pytest.mark.parametrize("index", [[0.0, 1.0, 2.0, 3.0], [True, False, True, False],
                                   np.arange(4, dtype=np.float32), torch.arange(4.0),
                                   np.ones(4, dtype=bool)])
def test_permutation_indices_must_be_integer(index):
    x = torch.randn(2, 2)
    with pytest.raises(TypeError, match="'index'"):
        C.permute_pixels(torch.empty(2, 2), x, index, False)
    with pytest.raises(TypeError, match="'index'"):
        ops.permute_pixels(x, index)


# ---- 7. producer exceptions ----------------------------------------------------------------
class Raising:
    def __init__(self, exc):
        self.exc = exc

    def __dlpack__(self, *args, **kwargs):
        raise self.exc


@pytest.mark.parametrize("exc,kind", [(KeyError("boom"), ValueError),
                                      (RuntimeError("boom"), ValueError),
                                      (BufferError("boom"), ValueError),
                                      (TypeError("boom"), TypeError)])
def test_producer_exceptions_are_reraised_naming_the_argument(exc, kind):
    with pytest.raises(kind, match="argument 'y' cannot be exported via DLPack.*boom") as info:
        C.lincomb2(np.zeros(3), np.zeros(3), Raising(exc), 1.0, 1.0)
    assert info.value.__cause__ is exc


def test_keyboard_interrupt_from_a_producer_passes_through():
    with pytest.raises(KeyboardInterrupt):
        C.lincomb2(np.zeros(3), Raising(KeyboardInterrupt()), np.zeros(3), 1.0, 1.0)


def test_unsupported_capsule_headers_are_refused():
    buf = np.zeros(6, np.float32)
    out = np.zeros((2, 3), np.float32)
    y = np.zeros((2, 3), np.float32)
    for f, err in [(Forged(buf, [2, 3], major=2), BufferError),
                   (Forged(buf, [2, 3], lanes=2), TypeError),
                   (Forged(buf, [2, 3], device=2), ValueError),
                   (Forged(buf, [2, 3], ndim=9, strides=None), ValueError),
                   (Forged(buf, [2, 3], ndim=-1), ValueError),
                   (Forged(buf.view(np.int16)[:6], [2, 3], code=KDL_BFLOAT, bits=24), TypeError)]:
        with pytest.raises(err, match="'x'"):
            C.lincomb2(out, f, y, 1.0, 1.0)


# ---- 7. set_num_threads ---------------------------------------------------------------------
def test_set_num_threads_bounds():
    cap = C.max_num_threads()
    assert cap == max(1024, 4 * os.cpu_count())
    before = C.get_num_threads()
    try:
        for n in (1, 2, cap):
            C.set_num_threads(n)
            assert C.get_num_threads() == n
        for bad, kind in [(0, ValueError), (-1, ValueError), (cap + 1, ValueError),
                          (2 ** 70, ValueError), (2.0, TypeError), (True, TypeError),
                          ("4", TypeError), (None, TypeError)]:
            with pytest.raises(kind, match="num_threads"):
                C.set_num_threads(bad)
            with pytest.raises(kind, match="num_threads"):
                ops.set_num_threads(bad) if bad is not None else ops.set_num_threads(2.5)
        assert C.get_num_threads() == cap
    finally:
        C.set_num_threads(before)


# ---- 8. ops: integer sizes, devices, argument names -------------------------------------------
@pytest.mark.parametrize("size", [2.5, 2.0, True, (2, 2.5), (True, 2), ("2", 2)])
def test_window_sizes_must_be_integers(size):
    with pytest.raises(TypeError, match="'size'"):
        ops.crop_windows(torch.zeros(4, 4), [[0, 0]], size)
    with pytest.raises(TypeError, match="'size'"):
        ops.window_coverage([[0, 0]], size, (4, 4))


def test_canvas_hw_must_be_integers():
    with pytest.raises(TypeError, match="'canvas_hw'"):
        ops.window_coverage([[0, 0]], 2, (4.5, 4))


def test_offsets_tensors_must_be_integer():
    for off in (torch.zeros(1, 2), torch.zeros(1, 2, dtype=torch.bool), np.zeros((1, 2))):
        with pytest.raises(TypeError, match="'offsets'"):
            ops.crop_windows(torch.zeros(4, 4), off, 2)


@pytest.mark.parametrize("call", [
    lambda m: ops.tweedie(m, m, 0.5),
    lambda m: ops.crop_windows(m, [[0, 0]], 1),
    lambda m: ops.dihedral(m, "hflip"),
    lambda m: ops.skew(torch.zeros(2, 2), 1.0, out=m),
    lambda m: ops.normalize_accumulated(m, m),
    lambda m: ops.paste_windows_add(torch.zeros(1, 1, 1), [[0, 0]], m),
])
def test_meta_tensors_are_refused(call):
    with pytest.raises(ValueError, match="meta device"):
        call(torch.zeros(2, 2, device="meta"))


def test_errors_name_the_callers_arguments():
    x = torch.randn(2, 3)
    with pytest.raises(TypeError, match="argument 'eps' has dtype float64") as e:
        ops.tweedie(x, x.double(), 0.5)
    assert "'y'" not in str(e.value)
    with pytest.raises(ValueError, match="argument 'eps' has shape"):
        ops.ddim_step(x, x[:1], 0.5, 0.7)
    with pytest.raises(ValueError, match="argument 'noise' has shape"):
        ops.ddim_step(x, x, 0.5, 0.7, eta=1.0, noise=x[:1])
    with pytest.raises(TypeError, match="argument 'eps_cond'"):
        ops.cfg_combine(x, x.double(), 7.5)
    with pytest.raises(TypeError, match="argument 'v'"):
        ops.eps_from_v(x, x.double(), 0.5)
    with pytest.raises(ValueError, match="argument 'noise' has shape"):
        ops.syncsde_step(x, x, x, 1.0, 0.5, 0.7, 0.1, eta=1.0, noise=x[:1])


# ---- 9. fork ---------------------------------------------------------------------------------
FORK = """
import os, numpy as np, torch, syncsde._C as C, syncsde.ops as ops
C.set_num_threads(2)
torch.set_num_threads(2)
g = torch.Generator().manual_seed(0)
x = torch.randn(64, 64, 64, generator=g)   # big enough for the parallel path
y = torch.randn(64, 64, 64, generator=g)
(x @ y).sum()                              # the parent uses torch's thread pool
ops.lincomb(x, y, 1.0, 2.0)                # and syncsde's
pid = os.fork()
if pid == 0:
    code = 1
    try:
        torch.set_num_threads(1)           # torch's own rule for a forked child
        out = ops.lincomb(x, y, 1.0, 2.0)
        ok = np.allclose(out.numpy(), x.numpy() + 2 * y.numpy(), atol=1e-5)
        views = ops.crop_windows(x, [[0, 0], [10, 20]], 16)
        ok &= np.array_equal(views[1].numpy(), x[:, 10:26, 20:36].numpy())
        perm = np.random.default_rng(0).permutation(64 * 64)
        p = ops.permute_pixels(x, perm)
        ok &= np.array_equal(p.reshape(64, -1).numpy(), x.reshape(64, -1).numpy()[:, perm])
        code = 0 if ok else 2
    finally:
        os._exit(code)
_, status = os.waitpid(pid, 0)
print("child exit", os.waitstatus_to_exitcode(status))
"""


def test_kernels_work_in_a_forked_child():
    r = run_isolated(FORK, timeout=120)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "child exit 0" in r.stdout, r.stdout + r.stderr[-2000:]


def test_dihedral_index_map_refuses_negative_sizes():
    """H - 1 overflowed for H = -2^63 (signed overflow, a UBSan report)."""
    for H, W in ((-(2 ** 63), 4), (4, -1)):
        with pytest.raises(ValueError, match="H and W must be >= 0"):
            C.dihedral_index_map("rot180", H, W)
    assert C.dihedral_index_map("rot180", 3, 5) == (-1, 0, 2, 0, -1, 4)


def test_views_wrapping_the_address_space_are_refused():
    """A data pointer of 64 with a negative stride reaching 400 bytes below it (or a pointer
    near the top of the address space reaching above it) wraps around: refused, never read."""
    out = np.zeros(100, np.float32)
    for f in (Forged(np.zeros(1, np.float32), [100], [-1], address=64),
              Forged(np.zeros(1, np.float32), [100], [1], address=2 ** 64 - 256)):
        with pytest.raises(ValueError, match="'x'.*wrap"):
            C.lincomb2(out, f, out.copy(), 1.0, 1.0)
