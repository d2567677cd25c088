"""Pixel-map views (C) against slow NumPy / SciPy references over shapes, strides, dtypes, kinds.

Covers dihedral maps, the column skew, pixel permutations (gather / scatter) and CSR sparse
linear maps (forward, adjoint, coverage), plus every error path of their bindings.
"""
from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st

import syncsde
from syncsde import _C
from syncsde.ops import pixelmaps as pm
from syncsde.ops._common import empty_like

FLOAT_DTYPES = ["float32", "float64", "float16", "bfloat16"]
TORCH_DTYPES = {"float32": torch.float32, "float64": torch.float64, "float16": torch.float16,
                "bfloat16": torch.bfloat16}
# relative tolerance of a sum of products, in units of sum |v| |x| (16-bit: one final rounding)
SUM_TOL = {"float32": 1e-5, "float64": 1e-12, "float16": 2e-3, "bfloat16": 1.6e-2}


# ---- array factory -------------------------------------------------------------------------
def make_array(a: np.ndarray, dtype: str, kind: str, layout: int):
    """``a`` (float64) as a torch tensor or numpy array of ``dtype`` with a layout:
    0 contiguous, 1 last two axes transposed in memory, 2 every other element of the last dim,
    3 negative steps (numpy) / reversed dim order (torch)."""
    if dtype == "bfloat16":
        kind = "torch"  # numpy has no bfloat16
    nd = a.ndim
    if layout == 1 and nd >= 2:
        buf = np.ascontiguousarray(np.swapaxes(a, -1, -2))
        view = lambda b: b.swapaxes(-1, -2) if kind == "numpy" else b.transpose(-1, -2)  # noqa: E731
    elif layout == 2 and nd >= 1:
        buf = np.zeros(a.shape[:-1] + (2 * a.shape[-1],))
        buf[..., ::2] = a
        view = lambda b: b[..., ::2]  # noqa: E731
    elif layout == 3 and nd >= 1:
        if kind == "numpy":
            buf = np.ascontiguousarray(a[..., ::-1, ::-1] if nd >= 2 else a[::-1])
            view = lambda b: b[..., ::-1, ::-1] if nd >= 2 else b[::-1]  # noqa: E731
        else:
            perm = tuple(reversed(range(nd)))
            buf = np.ascontiguousarray(a.transpose(perm))
            view = lambda b: b.permute(perm)  # noqa: E731
    else:
        buf = np.ascontiguousarray(a)
        view = lambda b: b  # noqa: E731
    if kind == "torch":
        t = torch.from_numpy(buf).to(TORCH_DTYPES[dtype])
        out = view(t)
        assert torch.equal(out.double(), torch.from_numpy(a).to(TORCH_DTYPES[dtype]).double())
        return out
    out = view(buf.astype(dtype))
    return out


def to64(x) -> np.ndarray:
    """Exact float64 copy of a tensor/array (every supported dtype converts exactly)."""
    if isinstance(x, torch.Tensor):
        return x.detach().double().numpy().copy()
    return np.array(x, dtype=np.float64, copy=True)


def kind_of(x) -> str:
    return "torch" if isinstance(x, torch.Tensor) else "numpy"


def dtype_name(x) -> str:
    return str(x.dtype).replace("torch.", "")


def assert_same_kind(out, x):
    assert kind_of(out) == kind_of(x)
    assert dtype_name(out) == dtype_name(x)


# ---- strategies ----------------------------------------------------------------------------
@st.composite
def image_shapes(draw, max_hw=40):
    lead = draw(st.lists(st.integers(0, 3), min_size=0, max_size=3))
    if draw(st.integers(0, 9)) > 0:  # mostly non-empty leading dims
        lead = [max(d, 1) for d in lead]
    H = draw(st.integers(1, max_hw))
    W = draw(st.integers(1, max_hw))
    return tuple(lead) + (H, W)


dtypes = st.sampled_from(FLOAT_DTYPES)
kinds = st.sampled_from(["torch", "numpy"])
layouts = st.integers(0, 3)
seeds = st.integers(0, 2**31 - 1)


def random_input(shape, dtype, kind, layout, seed):
    # numpy gives empty arrays all-zero strides, which the binding refuses for outputs
    # (foundation issue reported to the lead): empty numpy cases are left to torch
    if kind == "numpy" and 0 in shape:
        kind = "torch"
    g = np.random.default_rng(seed)
    return make_array(g.standard_normal(shape), dtype, kind, layout)


def fresh_out(x, shape, layout):
    """An output of x's kind/dtype; layout 1 gives a transposed (non-contiguous) view."""
    if layout == 1 and len(shape) >= 2:
        buf = empty_like(x, tuple(shape[:-2]) + (shape[-1], shape[-2]))
        return buf.swapaxes(-1, -2) if kind_of(x) == "numpy" else buf.transpose(-1, -2)
    return empty_like(x, shape)


# ---- references (slow, obviously correct) --------------------------------------------------
def ref_dihedral(a: np.ndarray, op: str) -> np.ndarray:
    H, W = a.shape[-2:]
    swaps = op in ("rot90_cw", "rot90_ccw", "transpose", "antitranspose")
    OH, OW = (W, H) if swaps else (H, W)
    out = np.empty(a.shape[:-2] + (OH, OW))
    src = {
        "identity": lambda i, j: (i, j),
        "rot90_cw": lambda i, j: (H - 1 - j, i),
        "rot90_ccw": lambda i, j: (j, W - 1 - i),
        "rot180": lambda i, j: (H - 1 - i, W - 1 - j),
        "hflip": lambda i, j: (i, W - 1 - j),
        "vflip": lambda i, j: (H - 1 - i, j),
        "transpose": lambda i, j: (j, i),
        "antitranspose": lambda i, j: (H - 1 - j, W - 1 - i),
    }[op]
    for i in range(OH):
        for j in range(OW):
            r, c = src(i, j)
            out[..., i, j] = a[..., r, c]
    return out


NUMPY_DIHEDRAL = {
    "identity": lambda a: a,
    "rot90_cw": lambda a: np.rot90(a, k=-1, axes=(-2, -1)),
    "rot90_ccw": lambda a: np.rot90(a, k=1, axes=(-2, -1)),
    "rot180": lambda a: np.rot90(a, k=2, axes=(-2, -1)),
    "hflip": lambda a: a[..., :, ::-1],
    "vflip": lambda a: a[..., ::-1, :],
    "transpose": lambda a: np.swapaxes(a, -1, -2),
    "antitranspose": lambda a: np.swapaxes(a[..., ::-1, ::-1], -1, -2),
}


def ref_skew(a: np.ndarray, factor: float, inverse: bool = False) -> np.ndarray:
    H, W = a.shape[-2:]
    out = np.empty_like(a)
    for w in range(W):
        d = int(factor * (w - H // 2))  # float64 product, truncation toward zero
        out[..., :, w] = np.roll(a[..., :, w], -d if inverse else d, axis=-1)
    return out


def ref_permute(a: np.ndarray, index: np.ndarray, mode: str) -> np.ndarray:
    H, W = a.shape[-2:]
    flat = a.reshape(a.shape[:-2] + (H * W,))
    out = np.empty_like(flat)
    for p in range(H * W):
        if mode == "gather":
            out[..., p] = flat[..., index[p]]
        else:
            out[..., index[p]] = flat[..., p]
    return out.reshape(a.shape)


def dense_of_csr(indptr, indices, values, n_cols) -> np.ndarray:
    n_rows = len(indptr) - 1
    A = np.zeros((n_rows, n_cols))
    for r in range(n_rows):
        for k in range(indptr[r], indptr[r + 1]):
            A[r, indices[k]] += values[k]
    return A


# ---- dihedral ------------------------------------------------------------------------------
def test_dihedral_names_and_inverses():
    assert pm.DIHEDRAL_OPS == ("identity", "rot90_cw", "rot90_ccw", "rot180", "hflip", "vflip",
                               "transpose", "antitranspose")
    assert pm.dihedral_inverse("rot90_cw") == "rot90_ccw"
    assert pm.dihedral_inverse("rot90_ccw") == "rot90_cw"
    for op in ("identity", "rot180", "hflip", "vflip", "transpose", "antitranspose"):
        assert pm.dihedral_inverse(op) == op
    assert pm.dihedral_shape((2, 3, 5, 7), "rot90_cw") == (2, 3, 7, 5)
    assert pm.dihedral_shape((5, 7), "hflip") == (5, 7)


@pytest.mark.parametrize("op", pm.DIHEDRAL_OPS)
def test_dihedral_numpy_definitions_agree(op):
    """The loop reference, numpy's functions and the C index map all say the same."""
    a = np.random.default_rng(0).standard_normal((2, 5, 7))
    np.testing.assert_array_equal(ref_dihedral(a, op), NUMPY_DIHEDRAL[op](a))
    m = _C.dihedral_index_map(op, 5, 7)
    ref = ref_dihedral(a, op)
    for i in range(ref.shape[-2]):
        for j in range(ref.shape[-1]):
            np.testing.assert_array_equal(ref[:, i, j],
                                          a[:, m[0] * i + m[1] * j + m[2], m[3] * i + m[4] * j + m[5]])


def test_antitranspose_is_rot90_ccw_of_vflip():
    a = np.random.default_rng(1).standard_normal((3, 4, 6))
    np.testing.assert_array_equal(pm.dihedral(a, "antitranspose"),
                                  pm.dihedral(pm.dihedral(a, "vflip"), "rot90_ccw"))


@settings(deadline=None, max_examples=150)
@given(shape=image_shapes(), dtype=dtypes, kind=kinds, layout=layouts, out_layout=st.integers(0, 1),
       op=st.sampled_from(pm.DIHEDRAL_OPS), seed=seeds)
def test_dihedral_matches_numpy(shape, dtype, kind, layout, out_layout, op, seed):
    x = random_input(shape, dtype, kind, layout, seed)
    a = to64(x)
    if out_layout:
        out = fresh_out(x, pm.dihedral_shape(shape, op), 1)
        res = pm.dihedral(x, op, out=out)
        assert res is out
    else:
        res = pm.dihedral(x, op)
    assert_same_kind(res, x)
    assert tuple(res.shape) == pm.dihedral_shape(shape, op)
    np.testing.assert_array_equal(to64(res), NUMPY_DIHEDRAL[op](a))
    # applying the inverse restores x exactly
    back = pm.dihedral(res, pm.dihedral_inverse(op))
    np.testing.assert_array_equal(to64(back), a)


@pytest.mark.parametrize("op", pm.DIHEDRAL_OPS)
@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
def test_dihedral_threaded_large(op, dtype):
    """Big enough for the OpenMP path (and tiles that do not divide the image)."""
    old = syncsde.get_num_threads()
    syncsde.set_num_threads(2)
    try:
        for layout in (0, 1):
            x = random_input((3, 4, 70, 101), dtype, "torch", layout, 7)
            np.testing.assert_array_equal(to64(pm.dihedral(x, op)), NUMPY_DIHEDRAL[op](to64(x)))
    finally:
        syncsde.set_num_threads(old)


def test_dihedral_group_closure():
    """Composition of any two ops is one of the eight (the map is a group action)."""
    a = np.random.default_rng(2).standard_normal((4, 4))
    images = {op: pm.dihedral(a, op) for op in pm.DIHEDRAL_OPS}
    for p in pm.DIHEDRAL_OPS:
        for q in pm.DIHEDRAL_OPS:
            c = pm.dihedral(pm.dihedral(a, p), q)
            assert any(np.array_equal(c, v) for v in images.values())


# ---- skew ----------------------------------------------------------------------------------
@pytest.mark.parametrize("factor", [1.5, -1.5, 0.0, 0.37, 3.0])
def test_skew_shifts_match_truncation(factor):
    for H, W in [(64, 64), (5, 9), (8, 3), (1, 1)]:
        assert pm.skew_shifts(H, W, factor) == [int(factor * (w - H // 2)) for w in range(W)]


@settings(deadline=None, max_examples=150)
@given(shape=image_shapes(), dtype=dtypes, kind=kinds, layout=layouts, out_layout=st.integers(0, 1),
       factor=st.one_of(st.just(1.5), st.floats(-4, 4, allow_nan=False)), seed=seeds)
def test_skew_matches_roll_reference(shape, dtype, kind, layout, out_layout, factor, seed):
    x = random_input(shape, dtype, kind, layout, seed)
    a = to64(x)
    out = fresh_out(x, shape, out_layout)
    res = pm.skew(x, factor, out=out)
    assert res is out
    assert_same_kind(res, x)
    np.testing.assert_array_equal(to64(res), ref_skew(a, factor))
    np.testing.assert_array_equal(to64(pm.skew(x, factor, inverse=True)), ref_skew(a, factor, True))
    # exact inverse both ways
    np.testing.assert_array_equal(to64(pm.skew(res, factor, inverse=True)), a)
    np.testing.assert_array_equal(to64(pm.skew(pm.skew(x, factor, inverse=True), factor)), a)


@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
def test_skew_visual_anagrams_view_threaded(dtype):
    old = syncsde.get_num_threads()
    syncsde.set_num_threads(2)
    try:
        for layout in (0, 1, 3):
            x = random_input((2, 4, 64, 64), dtype, "torch", layout, 3)
            y = pm.skew(x, 1.5)
            np.testing.assert_array_equal(to64(y), ref_skew(to64(x), 1.5))
            np.testing.assert_array_equal(to64(pm.skew(y, 1.5, inverse=True)), to64(x))
    finally:
        syncsde.set_num_threads(old)


def test_skew_large_factor_wraps_many_times():
    a = np.random.default_rng(4).standard_normal((3, 6, 11))
    for f in (1000.25, -777.5):
        np.testing.assert_array_equal(pm.skew(a, f), ref_skew(a, f))


# ---- pixel permutations --------------------------------------------------------------------
def _index_as(index: np.ndarray, itype: str, shape2d=None):
    """index as int64/int32 numpy, torch (optionally strided) or a list."""
    idx = index.reshape(shape2d) if shape2d is not None else index
    if itype == "list":
        return idx.tolist()
    if itype == "np32":
        return idx.astype(np.int32)
    if itype == "torch64_strided":
        buf = torch.zeros(idx.shape[:-1] + (2 * idx.shape[-1],), dtype=torch.int64)
        buf[..., ::2] = torch.from_numpy(idx.astype(np.int64))
        return buf[..., ::2]
    if itype == "torch32":
        return torch.from_numpy(idx.astype(np.int32))
    return idx.astype(np.int64)


itypes = st.sampled_from(["np64", "np32", "list", "torch64_strided", "torch32"])


@settings(deadline=None, max_examples=150)
@given(shape=image_shapes(), dtype=dtypes, kind=kinds, layout=layouts, out_layout=st.integers(0, 1),
       mode=st.sampled_from(["gather", "scatter"]), itype=itypes, as2d=st.booleans(),
       repeat=st.booleans(), seed=seeds)
def test_permute_pixels_matches_reference(shape, dtype, kind, layout, out_layout, mode, itype,
                                          as2d, repeat, seed):
    g = np.random.default_rng(seed)
    H, W = shape[-2:]
    P = H * W
    if mode == "gather" and repeat:
        index = g.integers(0, P, size=P)  # any index map, pixels may repeat
    else:
        index = g.permutation(P)
    x = random_input(shape, dtype, kind, layout, seed)
    out = fresh_out(x, shape, out_layout)
    res = pm.permute_pixels(x, _index_as(index, itype, (H, W) if as2d else None), mode, out=out)
    assert res is out
    assert_same_kind(res, x)
    np.testing.assert_array_equal(to64(res), ref_permute(to64(x), index, mode))


@settings(deadline=None, max_examples=30)
@given(shape=image_shapes(), dtype=dtypes, kind=kinds, layout=layouts, seed=seeds)
def test_scatter_undoes_gather(shape, dtype, kind, layout, seed):
    g = np.random.default_rng(seed)
    P = shape[-1] * shape[-2]
    perm = g.permutation(P)
    x = random_input(shape, dtype, kind, layout, seed)
    y = pm.permute_pixels(x, perm, "gather")
    np.testing.assert_array_equal(to64(pm.permute_pixels(y, perm, "scatter")), to64(x))
    inv = np.argsort(perm)
    np.testing.assert_array_equal(to64(pm.permute_pixels(x, perm, "scatter")),
                                  to64(pm.permute_pixels(x, inv, "gather")))


@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
@pytest.mark.parametrize("mode", ["gather", "scatter"])
def test_permute_pixels_threaded_large(dtype, mode):
    old = syncsde.get_num_threads()
    syncsde.set_num_threads(2)
    try:
        g = np.random.default_rng(5)
        perm = g.permutation(96 * 80)
        for layout in (0, 1):
            x = random_input((2, 4, 96, 80), dtype, "torch", layout, 5)
            res = pm.permute_pixels(x, torch.from_numpy(perm), mode)
            np.testing.assert_array_equal(to64(res), ref_permute(to64(x), perm, mode))
    finally:
        syncsde.set_num_threads(old)


def test_permute_dihedral_as_index_map():
    """A dihedral map of a square image is a pixel permutation: both paths agree."""
    H = 9
    a = np.random.default_rng(6).standard_normal((2, H, H))
    ids = np.arange(H * H, dtype=np.float64).reshape(H, H)
    for op in pm.DIHEDRAL_OPS:
        index = pm.dihedral(ids, op).reshape(-1).astype(np.int64)
        np.testing.assert_array_equal(pm.permute_pixels(a, index), pm.dihedral(a, op))


# ---- CSR -----------------------------------------------------------------------------------
@st.composite
def csr_matrices(draw):
    n_rows = draw(st.integers(0, 30))
    n_cols = draw(st.integers(0, 30))
    seed = draw(seeds)
    g = np.random.default_rng(seed)
    counts = g.integers(0, 6, size=n_rows) if n_cols > 0 else np.zeros(n_rows, dtype=np.int64)
    indptr = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    nnz = int(indptr[-1])
    indices = g.integers(0, max(n_cols, 1), size=nnz)  # duplicates within a row allowed
    values = g.standard_normal(nnz)
    return indptr, indices, values, n_cols


def _csr_args(indptr, indices, values, dtype, kind, itype, vlayout):
    ip, ix = indptr, indices
    if itype == "list":
        ip, ix = indptr.tolist(), indices.tolist()
    elif itype == "np32":
        ip, ix = indptr.astype(np.int32), indices.astype(np.int32)
    elif itype == "torch":
        ip, ix = torch.from_numpy(indptr.astype(np.int64)), torch.from_numpy(indices.astype(np.int32))
    vals = make_array(values, dtype, kind, 2 if vlayout else 0)
    return ip, ix, vals


@settings(deadline=None, max_examples=150)
@given(csr=csr_matrices(), lead=st.lists(st.integers(1, 3), min_size=0, max_size=3), dtype=dtypes,
       kind=kinds, layout=layouts, itype=st.sampled_from(["np64", "np32", "list", "torch"]),
       vlayout=st.booleans(), seed=seeds)
def test_csr_apply_matches_scipy_and_dense(csr, lead, dtype, kind, layout, itype, vlayout, seed):
    indptr, indices, values, n_cols = csr
    n_rows = len(indptr) - 1
    if n_rows == 0 or n_cols == 0:
        kind = "torch"  # empty numpy outputs: see test_empty_numpy_output
    ip, ix, vals = _csr_args(indptr, indices, values, dtype, kind, itype, vlayout)
    v64 = to64(vals)
    # scipy may canonicalise (sum duplicates) the arrays it is given in place: pass copies
    A = sp.csr_matrix((v64.copy(), indices.copy(), indptr.copy()), shape=(n_rows, n_cols))
    Ad = dense_of_csr(indptr, indices, v64, n_cols)
    # |entries| summed without merging duplicates first (abs(A) would let them cancel)
    Aabs = dense_of_csr(indptr, indices, np.abs(v64), n_cols)
    tol = SUM_TOL[dtype]
    for adjoint in (False, True):
        n_in, n_out = (n_rows, n_cols) if adjoint else (n_cols, n_rows)
        x = random_input(tuple(lead) + (n_in,), dtype, kind if dtype != "bfloat16" else "torch",
                         layout, seed)
        nb = int(np.prod(lead, dtype=np.int64))
        x64 = to64(x).reshape(nb, n_in)
        res = pm.csr_apply(x, ip, ix, vals, n_cols, adjoint=adjoint)
        assert_same_kind(res, x)
        assert tuple(res.shape) == tuple(lead) + (n_out,)
        got = to64(res).reshape(nb, n_out)
        if adjoint:
            ref, bound = (A.T @ x64.T).T, np.abs(x64) @ Aabs
            np.testing.assert_allclose(ref, x64 @ Ad, rtol=1e-12, atol=1e-12)
        else:
            ref, bound = (A @ x64.T).T, np.abs(x64) @ Aabs.T
            np.testing.assert_allclose(ref, x64 @ Ad.T, rtol=1e-12, atol=1e-12)
        assert np.all(np.abs(got - ref) <= tol * bound + 1e-300), (got, ref)


@settings(deadline=None, max_examples=40)
@given(csr=csr_matrices(), dtype=dtypes, kind=kinds, itype=st.sampled_from(["np64", "np32", "list", "torch"]),
       vlayout=st.booleans())
def test_csr_coverage_is_adjoint_of_ones(csr, dtype, kind, itype, vlayout):
    indptr, indices, values, n_cols = csr
    n_rows = len(indptr) - 1
    if n_rows == 0 or n_cols == 0:
        kind = "torch"  # empty numpy outputs: see test_empty_numpy_output
    ip, ix, vals = _csr_args(indptr, indices, values, dtype, kind, itype, vlayout)
    cov = pm.csr_coverage(ip, ix, vals, n_cols)
    assert_same_kind(cov, vals)
    assert tuple(cov.shape) == (n_cols,)
    ones = empty_like(vals, (n_rows,))
    ones[...] = 1
    adj = pm.csr_apply(ones, ip, ix, vals, n_cols, adjoint=True)
    np.testing.assert_array_equal(to64(cov), to64(adj))  # bit for bit
    v64 = to64(vals)
    ref = np.zeros(n_cols)
    np.add.at(ref, indices, v64)
    bound = np.zeros(n_cols)
    np.add.at(bound, indices, np.abs(v64))
    assert np.all(np.abs(to64(cov) - ref) <= SUM_TOL[dtype] * bound + 1e-300)


@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
def test_csr_threaded_texture_sized(dtype):
    """A bake-like map (4 taps per output pixel) on [V, C, P] with the OpenMP path."""
    old = syncsde.get_num_threads()
    syncsde.set_num_threads(2)
    try:
        g = np.random.default_rng(8)
        P_img, P_tex = 48 * 40, 37 * 41
        A = sp.random(P_img, P_tex, density=4.0 / P_tex, format="csr", random_state=8)
        v = torch.from_numpy(A.data).to(TORCH_DTYPES[dtype])
        A = sp.csr_matrix((v.double().numpy(), A.indices, A.indptr), shape=A.shape)
        ip, ix = torch.from_numpy(A.indptr.astype(np.int64)), torch.from_numpy(A.indices.astype(np.int64))
        tol = SUM_TOL[dtype]
        for adjoint in (False, True):
            n_in = P_img if adjoint else P_tex
            x = make_array(g.standard_normal((3, 4, n_in)), dtype, "torch", 0)
            x64 = to64(x).reshape(-1, n_in)
            M = A.T if adjoint else A
            ref, bound = (M @ x64.T).T, (abs(M) @ np.abs(x64).T).T
            got = to64(pm.csr_apply(x, ip, ix, v, P_tex, adjoint=adjoint)).reshape(ref.shape)
            assert np.all(np.abs(got - ref) <= tol * bound + 1e-300)
    finally:
        syncsde.set_num_threads(old)


def test_csr_empty_structures():
    x = torch.randn(2, 5, dtype=torch.float64)
    z = torch.zeros(0, dtype=torch.float64)
    # 3 x 5 all-zero matrix
    out = pm.csr_apply(x, [0, 0, 0, 0], [], z, 5)
    assert torch.equal(out, torch.zeros(2, 3, dtype=torch.float64))
    out = pm.csr_apply(torch.ones(2, 3, dtype=torch.float64), [0, 0, 0, 0], [], z, 5, adjoint=True)
    assert torch.equal(out, torch.zeros(2, 5, dtype=torch.float64))
    # 0 x 5 matrix
    assert tuple(pm.csr_apply(x, [0], [], z, 5).shape) == (2, 0)
    assert torch.equal(pm.csr_coverage([0], [], z, 5), torch.zeros(5, dtype=torch.float64))
    # 0 batches
    assert tuple(pm.csr_apply(torch.zeros(0, 5), [0, 1], [4], torch.ones(1), 5).shape) == (0, 1)
    # errors are still raised for an empty output
    with pytest.raises(IndexError, match="'indices'"):
        pm.csr_apply(torch.zeros(0, 5), [0, 1], [5], torch.ones(1), 5)


def test_empty_numpy_output():
    x = np.zeros((0, 3, 4), np.float32)
    assert pm.dihedral(x, "rot90_cw").shape == (0, 4, 3)


# ---- error paths ---------------------------------------------------------------------------
def _x(shape=(2, 3, 4, 5), dtype=np.float32):
    return np.random.default_rng(10).standard_normal(shape).astype(dtype)


SENTINEL = 123.0


def _sentinel_out(shape, dtype=np.float32):
    o = np.empty(shape, dtype=dtype)
    o[...] = SENTINEL
    return o


def _untouched(o):
    assert np.all(to64(o) == SENTINEL), "output was written before the error"


def test_unknown_dihedral_op_lists_valid_names():
    with pytest.raises(ValueError) as e:
        pm.dihedral(_x(), "rot90")
    for name in pm.DIHEDRAL_OPS:
        assert name in str(e.value)
    with pytest.raises(ValueError, match="antitranspose"):
        _C.dihedral(np.empty((2, 3, 5, 4), np.float32), _x(), "flip")
    with pytest.raises(ValueError, match="rot90_cw"):
        pm.dihedral_inverse("nope")
    with pytest.raises(ValueError, match="identity"):
        pm.dihedral(_x(), 3)


@pytest.mark.parametrize("call", [
    lambda x, o: pm.dihedral(x, "hflip", out=o),
    lambda x, o: pm.skew(x, 1.5, out=o),
    lambda x, o: pm.permute_pixels(x, np.arange(20), out=o),
])
class TestImageOpErrors:
    def test_wrong_input_dtype(self, call):
        with pytest.raises(TypeError, match="'x'.*int32"):
            call(np.zeros((3, 4, 5), np.int32), np.zeros((3, 4, 5), np.float32))

    def test_unsupported_input_dtype(self, call):
        with pytest.raises(TypeError, match="'x'"):
            call(torch.zeros((3, 4, 5), dtype=torch.complex64), torch.zeros((3, 4, 5)))

    def test_out_dtype_mismatch(self, call):
        o = _sentinel_out((2, 3, 4, 5), np.float64)
        with pytest.raises(TypeError, match="'out'.*float64.*float32"):
            call(_x(), o)
        _untouched(o)

    def test_wrong_out_shape(self, call):
        o = _sentinel_out((2, 3, 4, 6))
        with pytest.raises(ValueError, match=r"'out' has shape \(2, 3, 4, 6\)"):
            call(_x(), o)
        _untouched(o)

    def test_wrong_ndim(self, call):
        with pytest.raises(ValueError, match="'x' must have 2 to"):
            call(np.zeros(20, np.float32), None)
        with pytest.raises(ValueError, match="'x' must have 2 to"):
            call(np.zeros(20, np.float32), np.zeros(20, np.float32))

    def test_read_only_out(self, call):
        o = _sentinel_out((2, 3, 4, 5))
        o.setflags(write=False)
        with pytest.raises(ValueError, match="'out' is read-only"):
            call(_x(), o)
        _untouched(o)

    def test_expanded_out(self, call):
        o = torch.zeros((1, 3, 4, 5)).expand(2, 3, 4, 5)
        with pytest.raises(ValueError, match="'out' has a zero stride"):
            call(torch.from_numpy(_x()), o)

    def test_out_overlaps_input(self, call):
        x = _x()
        with pytest.raises(ValueError, match="'out' overlaps input 'x'"):
            call(x, x)
        buf = np.zeros((2, 2, 3, 4, 5), np.float32)
        with pytest.raises(ValueError, match="overlaps"):
            call(buf[0], buf[0])

    def test_out_requires_grad(self, call):
        o = torch.zeros((2, 3, 4, 5), requires_grad=True)
        with pytest.raises(ValueError, match="requires grad"):
            call(torch.from_numpy(_x()), o)

    def test_non_tensor_x(self, call):
        with pytest.raises(TypeError, match="'x'"):
            call([[1.0, 2.0]], np.zeros((1, 2), np.float32))
        with pytest.raises(TypeError, match="'x'"):
            call("image", None)

    def test_non_tensor_out_in_binding(self, call):
        with pytest.raises(TypeError, match="'out'"):
            call(_x(), [0.0])


def test_binding_rejects_non_tensor_and_none():
    x = _x()
    with pytest.raises(TypeError, match="'x' must be a tensor"):
        _C.dihedral(np.empty_like(x), [1.0], "identity")
    with pytest.raises(TypeError, match="'out' is required"):
        _C.skew(None, x, 1.0, False)
    with pytest.raises(TypeError, match="'index'"):
        pm.permute_pixels(x, [0.5] * 20)
    with pytest.raises(TypeError, match="'index'"):
        pm.permute_pixels(x, [True] * 20)
    with pytest.raises(TypeError, match="'index'"):
        _C.permute_pixels(np.empty_like(x), x, object(), False)


def test_dihedral_out_shape_for_swapping_ops():
    x = _x((2, 4, 5))
    with pytest.raises(ValueError, match=r"expected \(2, 5, 4\)"):
        pm.dihedral(x, "rot90_cw", out=np.empty((2, 4, 5), np.float32))
    with pytest.raises(ValueError, match=r"expected \(2, 4, 5\)"):
        pm.dihedral(x, "vflip", out=np.empty((2, 5, 4), np.float32))


def test_skew_bad_factor():
    for f in (float("nan"), float("inf"), -float("inf")):
        with pytest.raises(ValueError, match="factor"):
            pm.skew(_x(), f)
    o = _sentinel_out((2, 3, 4, 5))
    with pytest.raises(ValueError, match="factor"):
        _C.skew(o, _x(), 1e300, False)
    _untouched(o)
    with pytest.raises(ValueError, match="factor"):
        _C.skew(o, _x(), float("nan"), False)
    _untouched(o)


def test_permute_bad_index_length_and_shape():
    x = _x((2, 4, 5))
    for bad in (np.arange(19), np.arange(21), np.arange(20).reshape(5, 4), np.arange(20).reshape(2, 10),
                np.arange(20).reshape(1, 4, 5), np.int64(3)):
        o = _sentinel_out((2, 4, 5))
        with pytest.raises(ValueError, match="'index' has shape"):
            pm.permute_pixels(x, bad, out=o)
        _untouched(o)


def test_permute_index_dtype():
    x = _x((2, 4, 5))
    with pytest.raises(TypeError, match="'index'.*float64"):
        pm.permute_pixels(x, np.arange(20, dtype=np.float64))
    with pytest.raises(TypeError, match="'index'.*int16|'index'"):
        pm.permute_pixels(x, torch.arange(20, dtype=torch.int16))
    with pytest.raises(ValueError, match="'mode'"):
        pm.permute_pixels(x, np.arange(20), mode="inverse")


@pytest.mark.parametrize("mode", ["gather", "scatter"])
@pytest.mark.parametrize("bad", [20, -1, 2**40])
def test_permute_out_of_range_index(mode, bad):
    x = _x((2, 4, 5))
    index = np.arange(20)
    index[7] = bad
    o = _sentinel_out((2, 4, 5))
    with pytest.raises(IndexError, match=rf"'index' holds {bad} at position 7; expected entries in \[0, 20\)"):
        pm.permute_pixels(x, index, mode, out=o)
    _untouched(o)
    with pytest.raises(IndexError):
        pm.permute_pixels(x, torch.from_numpy(index.astype(np.int32) if abs(bad) < 2**31 else index), mode)


def test_scatter_requires_permutation():
    x = _x((2, 4, 5))
    index = np.arange(20)
    index[11] = 3
    o = _sentinel_out((2, 4, 5))
    with pytest.raises(ValueError, match="permutation.*value 3 appears at positions 3 and 11"):
        pm.permute_pixels(x, index, "scatter", out=o)
    _untouched(o)
    # the same index is a valid gather (pixel 3 read twice)
    res = pm.permute_pixels(x, index, "gather")
    np.testing.assert_array_equal(res, ref_permute(x.astype(np.float64), index, "gather"))


def test_permute_index_overlapping_out():
    x = torch.randn(2, 4, 5, dtype=torch.float64)
    o = torch.zeros(2, 4, 5, dtype=torch.float64)
    index = o.view(torch.int64).reshape(-1)[:20]
    with pytest.raises(ValueError, match="'out' overlaps input 'index'"):
        _C.permute_pixels(o, x, index, False)


# ---- CSR errors ----------------------------------------------------------------------------
def _csr():
    # 3 x 4: rows [0: cols 1, 3], [1: -], [2: col 0]
    return np.array([0, 2, 2, 3]), np.array([1, 3, 0]), np.array([1.0, 2.0, 3.0], np.float32)


def _csr_call(x, indptr, indices, values, n_cols=4, adjoint=False, out_shape=None):
    o = _sentinel_out(out_shape or (x.shape[:-1] + ((n_cols if adjoint else 3),)), np.float32)
    try:
        pm.csr_apply(x, indptr, indices, values, n_cols, adjoint=adjoint, out=o)
    finally:
        _untouched(o)


def test_csr_malformed_indptr_start():
    ip, ix, v = _csr()
    with pytest.raises(ValueError, match=r"'indptr' must start at 0; got indptr\[0\] = 1"):
        _csr_call(_x((2, 4)), [1, 2, 2, 3], ix, v)


def test_csr_malformed_indptr_order():
    ip, ix, v = _csr()
    with pytest.raises(ValueError, match=r"non-decreasing; got indptr\[2\] = 1 < indptr\[1\] = 2"):
        _csr_call(_x((2, 4)), [0, 2, 1, 3], ix, v)


def test_csr_malformed_indptr_end():
    ip, ix, v = _csr()
    with pytest.raises(ValueError, match=r"end at len\(indices\) = len\(values\) = 3; got indptr\[-1\] = 2"):
        _csr_call(_x((2, 4)), [0, 2, 2, 2], ix, v)
    with pytest.raises(ValueError, match=r"got indptr\[-1\] = 4"):
        _csr_call(_x((2, 4)), [0, 2, 2, 4], ix, v)


def test_csr_indices_values_length_mismatch():
    ip, ix, v = _csr()
    with pytest.raises(ValueError, match=r"'values' has 2 entries; expected len\(indices\) = 3"):
        _csr_call(_x((2, 4)), ip, ix, v[:2])


def test_csr_indices_out_of_range():
    ip, ix, v = _csr()
    for bad in (4, -1):
        with pytest.raises(IndexError, match=rf"'indices' holds {bad} at position 1; expected column indices in \[0, n_cols = 4\)"):
            _csr_call(_x((2, 4)), ip, [1, bad, 0], v)
        with pytest.raises(IndexError, match="'indices'"):
            _csr_call(_x((2, 3)), ip, [1, bad, 0], v, adjoint=True)
        with pytest.raises(IndexError, match="'indices'"):
            pm.csr_coverage(ip, [1, bad, 0], v, 4)


def test_csr_structure_shapes_and_dtypes():
    ip, ix, v = _csr()
    x = _x((2, 4))
    with pytest.raises(ValueError, match="'indptr' must have n_rows"):
        pm.csr_apply(x, [], [], np.zeros(0, np.float32), 4)
    with pytest.raises(ValueError, match="'indptr' must have n_rows"):
        _C.csr_apply(np.empty((2, 0), np.float32), x, np.zeros(0, np.int64), ix, v, 4, False)
    with pytest.raises(ValueError, match="'indptr' must have 1 dimensions"):
        _C.csr_apply(np.empty((2, 3), np.float32), x, ip.reshape(2, 2), ix, v, 4, False)
    with pytest.raises(ValueError, match="'indices' must have 1 dimensions"):
        _csr_call(x, ip, ix.reshape(3, 1), v)
    with pytest.raises(ValueError, match="'values' must have 1 dimensions"):
        _csr_call(x, ip, ix, v.reshape(3, 1))
    with pytest.raises(TypeError, match="'values' has dtype float64; expected float32 like 'x'"):
        _csr_call(x, ip, ix, v.astype(np.float64))
    with pytest.raises(TypeError, match="'indptr'"):
        _csr_call(x, ip.astype(np.float32), ix, v)
    with pytest.raises(TypeError, match="'indices'"):
        _csr_call(x, ip, ix.astype(np.int16), v)
    with pytest.raises(TypeError, match="'values'"):
        pm.csr_apply(x, ip, ix, [1.0, 2.0, 3.0], 4)
    with pytest.raises(TypeError, match="'values'"):
        pm.csr_apply(x, ip, ix, v.astype(np.int32), 4)
    with pytest.raises(ValueError, match="'n_cols' must be >= 0"):
        pm.csr_apply(x, ip, ix, v, -1)
    with pytest.raises(ValueError, match="'n_cols' must be >= 0"):
        _C.csr_apply(np.empty((2, 3), np.float32), x, ip, ix, v, -1, False)
    with pytest.raises(TypeError, match="'n_cols'"):
        pm.csr_apply(x, ip, ix, v, 4.0)


def test_csr_x_and_out_shapes():
    ip, ix, v = _csr()
    with pytest.raises(ValueError, match=r"'x' has shape \(2, 5\); its last dim must be n_cols = 4"):
        _csr_call(_x((2, 5)), ip, ix, v, out_shape=(2, 3))
    with pytest.raises(ValueError, match=r"last dim must be n_rows = 3"):
        _csr_call(_x((2, 4)), ip, ix, v, adjoint=True)
    with pytest.raises(ValueError, match=r"'out' has shape \(2, 4\); expected \(2, 3\)"):
        _csr_call(_x((2, 4)), ip, ix, v, out_shape=(2, 4))
    with pytest.raises(ValueError, match=r"'out' has shape \(3, 3\); expected \(2, 3\)"):
        _csr_call(_x((2, 4)), ip, ix, v, out_shape=(3, 3))
    with pytest.raises(ValueError, match="'x' must have 1 to"):
        pm.csr_apply(np.array(1.0, np.float32), ip, ix, v, 4)
    with pytest.raises(ValueError, match=r"'out' has shape \(3,\); expected \(4,\)"):
        pm.csr_coverage(ip, ix, v, 4, out=np.empty(3, np.float32))
    with pytest.raises(TypeError, match="'out' has dtype float64"):
        pm.csr_coverage(ip, ix, v, 4, out=np.empty(4, np.float64))


def test_csr_output_errors():
    ip, ix, v = _csr()
    x = torch.from_numpy(_x((2, 4)))
    with pytest.raises(ValueError, match="requires grad"):
        pm.csr_apply(x, ip, ix, v, 4, out=torch.zeros(2, 3, requires_grad=True))
    with pytest.raises(ValueError, match="zero stride"):
        pm.csr_apply(x, ip, ix, torch.from_numpy(v), 4, out=torch.zeros(1, 3).expand(2, 3))
    o = _sentinel_out((2, 3))
    o.setflags(write=False)
    with pytest.raises(ValueError, match="read-only"):
        pm.csr_apply(x.numpy(), ip, ix, v, 4, out=o)
    # out overlapping x, and out overlapping values
    buf = np.zeros((2, 4), np.float32)
    with pytest.raises(ValueError, match="'out' overlaps input 'x'"):
        pm.csr_apply(buf, ip, ix, v, 4, out=buf[:, :3])
    vbuf = np.zeros(6, np.float32)
    with pytest.raises(ValueError, match="'out' overlaps input 'values'"):
        pm.csr_apply(x.numpy(), ip, ix, vbuf[:3], 4, out=vbuf.reshape(2, 3))
    with pytest.raises(ValueError, match="'out' overlaps input 'values'"):
        pm.csr_coverage(ip, ix, vbuf[:3], 3, out=vbuf[2:5])
    with pytest.raises(TypeError, match="'x'"):
        pm.csr_apply([[1.0, 2.0, 3.0, 4.0]], ip, ix, v, 4)


@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_csr_results_do_not_depend_on_thread_count(dtype):
    """Every output sums its terms in entry order, whatever the blocking and the team size."""
    g = np.random.default_rng(11)
    A = sp.random(3000, 2500, density=6.0 / 2500, format="csr", random_state=11)
    ip, ix = A.indptr.astype(np.int64), A.indices.astype(np.int64)
    v = torch.from_numpy(A.data).to(TORCH_DTYPES[dtype])
    old = syncsde.get_num_threads()
    try:
        for B in (1, 2, 3, 8, 13):
            results = []
            for nt in (1, 2, 3):
                syncsde.set_num_threads(nt)
                xf = make_array(g.standard_normal((B, 2500)), dtype, "torch", 0) if not results else xf
                xa = make_array(g.standard_normal((B, 3000)), dtype, "torch", 0) if not results else xa
                results.append((pm.csr_apply(xf, ip, ix, v, 2500),
                                pm.csr_apply(xa, ip, ix, v, 2500, adjoint=True)))
            for fwd, adj in results[1:]:
                assert torch.equal(fwd, results[0][0]) and torch.equal(adj, results[0][1])
            # each slice alone gives the same bits as inside the batch
            for b in range(B):
                assert torch.equal(pm.csr_apply(xa[b], ip, ix, v, 2500, adjoint=True), results[0][1][b])
                assert torch.equal(pm.csr_apply(xf[b:b + 1], ip, ix, v, 2500), results[0][0][b:b + 1])
    finally:
        syncsde.set_num_threads(old)


@pytest.mark.parametrize("batch", [1, 3, 9, 17, 33, 100])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_csr_forward_over_many_batch_blocks_matches_scipy(batch, dtype):
    """Batches with more blocks of slices than threads take the block-per-thread path; fewer
    share each block's rows: both equal scipy's product (strided input included)."""
    syncsde.set_num_threads(2)
    try:
        A = sp.random(37, 53, density=0.2, random_state=batch, format="csr")
        x = torch.randn(batch, 7, 53, dtype=dtype)[:, 2]
        ref = torch.from_numpy((A @ x.double().numpy().T).T)
        out = pm.csr_apply(x, torch.from_numpy(A.indptr.astype(np.int64)),
                            torch.from_numpy(A.indices.astype(np.int64)),
                            torch.from_numpy(A.data).to(dtype), 53)
        tol = 1e-5 if dtype == torch.float32 else 1e-12
        torch.testing.assert_close(out.double(), ref, atol=tol, rtol=tol)
    finally:
        syncsde.set_num_threads()
