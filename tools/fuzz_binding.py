"""Coverage-guided fuzz target (atheris / libFuzzer) over the raw binding ``syncsde._C``.

Each input picks one kernel call of the bad-input matrix (``tools/bad_input_matrix.py``: a
valid call with its NumPy reference), then lets the fuzz bytes rewrite up to four of its
arguments:

- any tensor argument: a hand-made DLPack capsule with fuzzed dtype code/bits/lanes, ndim,
  shape, strides (negative, zero, huge), byte offset, misalignment, device, version, flags,
  NULL shape/strides/data; whenever the header describes at most 1 MiB, the capsule points at a
  real buffer of that extent (a correct consumer may read all of it), otherwise its sizes are
  pushed past 2^62 bytes so that a correct consumer must refuse it;
- or one of the matrix's named mutations (neg-bit views, broadcast, raising producers...);
- index arguments (offsets, permutation index, CSR indptr/indices): fuzzed integer values
  (in range, out of range, negative, int64 extremes) as tensors or Python lists (with floats
  and bools mixed in);
- scalar arguments: fuzzed ints (incl. +-2^62, 2^70), floats (nan, inf), bools, strings.

A call must either return or raise a clean exception (TypeError, ValueError, IndexError,
MemoryError, OverflowError, BufferError); anything else, and every crash or sanitizer report,
is a finding. When the base call is left valid, the result is checked against NumPy.

Run (plain build):   python tools/fuzz_binding.py -max_total_time=60
Run under ASan+UBSan (the way the 30-minute campaign ran; builds a sanitized copy of the tree):
    nice bash tools/asan_tests.sh --cmd python tools/fuzz_binding.py -max_total_time=1800 \\
        -print_final_stats=1
With GCC builds libFuzzer sees only the Python side's coverage (the wrappers and this file);
a clang build with -fsanitize=fuzzer-no-link would add the C edges.
"""
from __future__ import annotations

import os
import sys

import atheris

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.dirname(HERE))

import numpy as np  # noqa: E402  (not instrumented: only our own Python is)
import torch  # noqa: E402,F401

with atheris.instrument_imports(include=["bad_input_matrix", "dlpack_forge", "syncsde"]):
    import bad_input_matrix as M
    import syncsde.ops  # noqa: F401
    from dlpack_forge import Forged

import syncsde._C as C  # noqa: E402

BASES = M.make_bases()
CLEAN = M.CLEAN_EXCEPTIONS
ONE_MIB = 1 << 20
NP_DTYPES = [np.float32, np.float64, np.float16, np.int64, np.int32, np.int8, np.uint8, np.bool_]
SPECIAL_INTS = [0, 1, -1, 2, 3, 7, 2 ** 31 - 1, -2 ** 31, 2 ** 32, 2 ** 62, -2 ** 62,
                2 ** 63 - 1, -2 ** 63, 2 ** 60]


def fuzz_int(fdp) -> int:
    k = fdp.ConsumeIntInRange(0, 3)
    if k == 0:
        return fdp.PickValueInList(SPECIAL_INTS)
    if k == 1:
        return fdp.ConsumeIntInRange(-3, 12)
    return fdp.ConsumeIntInRange(-(2 ** 63), 2 ** 63 - 1) if k == 2 else fdp.ConsumeIntInRange(0, 40)


def forged_tensor(fdp):
    """A capsule with a fuzzed header; real memory whenever the header asks for <= 1 MiB."""
    dt = np.dtype(fdp.PickValueInList(NP_DTYPES))
    ndim = fdp.ConsumeIntInRange(0, 5) if fdp.ConsumeIntInRange(0, 15) else fdp.PickValueInList([-1, 9, 100])
    nd = max(ndim, 0)
    shape = [fdp.ConsumeIntInRange(0, 6) if fdp.ConsumeIntInRange(0, 7) else fuzz_int(fdp)
             for _ in range(min(nd, 9))]
    null_strides = fdp.ConsumeIntInRange(0, 7) == 0
    strides = None if null_strides else [
        fdp.ConsumeIntInRange(-8, 8) if fdp.ConsumeIntInRange(0, 7) else fuzz_int(fdp)
        for _ in range(len(shape))]
    item = dt.itemsize
    # the byte extent the header describes (below / above the data pointer)
    below = above = 0
    valid = ndim >= 0 and ndim <= 8 and all(s >= 0 for s in shape)
    if valid and any(s == 0 for s in shape):
        lo_hi = (0, 0)
    else:
        eff = strides
        if null_strides:
            eff, run = [], 1
            for s in reversed(shape):
                eff.append(run)
                run *= max(s, 1)
            eff = list(reversed(eff))
        for s, st in zip(shape, eff or []):
            span = (s - 1) * st * item if s > 0 else 0
            if span < 0:
                below -= span
            else:
                above += span
        lo_hi = (below, above + item)
    extent = lo_hi[0] + lo_hi[1]
    misalign = fdp.ConsumeIntInRange(0, 15) == 0
    byte_offset = fdp.ConsumeIntInRange(0, 3) if fdp.ConsumeIntInRange(0, 15) == 0 else 0
    if not valid or extent > ONE_MIB:
        # not real memory: make sure the header is one a consumer must refuse
        if valid:
            shape = shape + [2 ** 62] if len(shape) < 8 else [2 ** 62] + shape[1:]
            if strides is not None:
                strides = strides + [1] if len(strides) < len(shape) else strides
                strides[shape.index(2 ** 62)] = 1
            ndim = len(shape)
        buf = np.zeros(16, dtype=np.uint8)
        return Forged(buf, shape, strides, ndim=ndim, code=M_code(dt), bits=dt.itemsize * 8,
                      data_offset=0)
    buf = np.zeros(extent + 2 * item + 8, dtype=np.uint8)
    base = (-buf.ctypes.data) % item  # align the data pointer to the item size
    data_offset = base + lo_hi[0] + (1 if misalign else 0)
    f = Forged(buf, shape, strides, ndim=ndim, code=M_code(dt), bits=dt.itemsize * 8,
               data_offset=data_offset - byte_offset if data_offset >= byte_offset else data_offset,
               byte_offset=byte_offset if data_offset >= byte_offset else 0)
    if fdp.ConsumeIntInRange(0, 31) == 0:
        f.device = fdp.PickValueInList([2, 3, 4, 7, 13, 99])
    if fdp.ConsumeIntInRange(0, 31) == 0:
        f.lanes = fdp.PickValueInList([0, 2, 4])
    if fdp.ConsumeIntInRange(0, 31) == 0:
        f.major = fdp.PickValueInList([0, 2, 255])
    if fdp.ConsumeIntInRange(0, 15) == 0:
        f.flags = fdp.ConsumeIntInRange(0, 3)
    if fdp.ConsumeIntInRange(0, 31) == 0:
        f.versioned = False
    if fdp.ConsumeIntInRange(0, 63) == 0:
        f.null_data = True
    if fdp.ConsumeIntInRange(0, 63) == 0:
        f.shape = None
    return f


def M_code(dt) -> int:
    from dlpack_forge import _NP_CODES

    return _NP_CODES[np.dtype(dt)][0]


def fuzz_index(fdp, like):
    n = fdp.ConsumeIntInRange(0, 40)
    vals = [fuzz_int(fdp) if fdp.ConsumeIntInRange(0, 3) == 0 else fdp.ConsumeIntInRange(-2, 30)
            for _ in range(n)]
    shape2 = np.asarray(like).ndim == 2 and fdp.ConsumeBool()
    k = fdp.ConsumeIntInRange(0, 4)
    if k == 0:  # a Python list, sometimes with a float or bool in it
        if vals and fdp.ConsumeIntInRange(0, 3) == 0:
            vals[fdp.ConsumeIntInRange(0, len(vals) - 1)] = fdp.PickValueInList([0.5, True, 1.0, "x", None])
        if shape2 and len(vals) % 2 == 0:
            return [vals[i:i + 2] for i in range(0, len(vals), 2)]
        return vals
    arr = np.array([v if -2 ** 63 <= v < 2 ** 63 else 0 for v in vals if isinstance(v, int)],
                   dtype=np.int64 if k != 1 else np.int64)
    if k == 1:
        arr = np.clip(arr, -2 ** 31, 2 ** 31 - 1).astype(np.int32)
    if shape2 and arr.size % 2 == 0:
        arr = arr.reshape(-1, 2)
    if k == 3 and arr.ndim >= 1 and arr.size:
        arr = np.repeat(arr, 2, axis=0)[::2]  # a strided view
    if k == 4:
        import torch

        return torch.from_numpy(arr)
    return arr


def fuzz_scalar(fdp, old):
    k = fdp.ConsumeIntInRange(0, 6)
    if k == 0:
        return fuzz_int(fdp)
    if k == 1:
        return fdp.ConsumeRegularFloat() if fdp.ConsumeBool() else fdp.PickValueInList(
            [float("nan"), float("inf"), -float("inf"), 0.0, -0.0, 1e300, 2.5])
    if k == 2:
        return fdp.ConsumeBool()
    if k == 3:
        return fdp.PickValueInList(["", "keep", "zero", "error", "rot90_cw", "hflip", "x" * 64])
    if k == 4:
        return None
    if isinstance(old, bool):
        return not old
    if isinstance(old, int):
        return old + fdp.ConsumeIntInRange(-3, 3)
    return old


def TestOneInput(data: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    b = BASES[fdp.ConsumeIntInRange(0, len(BASES) - 1)]
    built, values = M._build_args(b)
    changed = False
    for _ in range(fdp.ConsumeIntInRange(0, 4)):
        arg = fdp.PickValueInList(b.order)
        role = b.roles.get(arg)
        changed = True
        if role in ("in", "out"):
            k = fdp.ConsumeIntInRange(0, 2)
            if k == 0:
                built[arg] = forged_tensor(fdp)
            else:
                muts = [m for m in M.MUTATIONS if role in m.roles]
                m = muts[fdp.ConsumeIntInRange(0, len(muts) - 1)]
                try:
                    new = m.apply(built[arg]) if built[arg] is not None else None
                except Exception:  # noqa: BLE001 - a mutation that does not apply
                    new = None
                if new is None:
                    continue
                built[arg] = new
        elif role == "index":
            built[arg] = fuzz_index(fdp, built[arg]) if fdp.ConsumeIntInRange(0, 3) else forged_tensor(fdp)
        else:
            built[arg] = fuzz_scalar(fdp, built[arg])
    threads = fdp.ConsumeIntInRange(0, 7) == 0
    if threads:
        try:
            C.set_num_threads(fdp.PickValueInList([1, 2, 3, 0, -1, 10 ** 6, 2.0, True]))
        except CLEAN:
            pass
    try:
        getattr(C, b.fn)(*[built[k] for k in b.order])
    except CLEAN:
        return
    finally:
        if threads:
            C.set_num_threads(1)
    if not changed:
        got = M.to_f64(built[b.out])
        want = b.expected(values)
        tol = M.TOL[b.dtype]
        if not np.allclose(got, want, rtol=tol, atol=tol):
            raise AssertionError(f"{b.name}: differs from NumPy")


def main() -> None:
    C.set_num_threads(1)
    atheris.Setup(sys.argv, TestOneInput)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
