"""Tests of crop_windows / paste_windows_add / paste_windows_on_top / window_coverage
against slow slicing references, over random shapes, strides, dtypes and both tensor kinds."""
import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import to_numpy64 as as_f64
from syncsde.ops import _common
from syncsde.ops.windows import crop_windows, paste_windows_add, paste_windows_on_top, window_coverage

SETTINGS = dict(deadline=None, max_examples=40, suppress_health_check=[HealthCheck.too_slow])

TORCH_DT = {"float32": torch.float32, "float64": torch.float64, "float16": torch.float16,
            "bfloat16": torch.bfloat16}
TOL = {"float64": (1e-10, 1e-10), "float32": (1e-5, 1e-5), "float16": (1e-2, 2e-2),
       "bfloat16": (2e-2, 1e-1)}


# ---- layouts ------------------------------------------------------------------------------

def make(x, dtype, kind, layout):
    """x (float64 ndarray) in dtype/kind with the given memory layout, same logical values
    (except 'expand', which repeats x[0] along dim 0). Returns (tensor, float64 values)."""
    if kind == "numpy" and dtype == "bfloat16":
        kind = "torch"
    if layout == "expand":
        x = np.broadcast_to(x[:1], x.shape)
    if kind == "torch":
        t = torch.from_numpy(np.array(x)).to(TORCH_DT[dtype])
        if layout == "transposed" and t.ndim >= 2:
            t = t.transpose(-1, -2).contiguous().transpose(-1, -2)
        elif layout == "sliced":
            buf = torch.full((*t.shape[:-1], 2 * t.shape[-1]), 7.0, dtype=t.dtype)
            buf[..., ::2] = t
            t = buf[..., ::2]
        elif layout == "expand":
            t = t[:1].expand(t.shape)
        elif layout == "neg":  # torch has no negative strides: a permuted copy instead
            if t.ndim >= 3:
                t = t.permute(*range(t.ndim - 3), t.ndim - 2, t.ndim - 3, t.ndim - 1).contiguous()
                t = t.permute(*range(t.ndim - 3), t.ndim - 2, t.ndim - 3, t.ndim - 1)
        return t, t.to(torch.float64).numpy().copy()
    a = np.ascontiguousarray(x).astype(dtype)
    if layout == "transposed" and a.ndim >= 2:
        a = np.swapaxes(np.ascontiguousarray(np.swapaxes(a, -1, -2)), -1, -2)
    elif layout == "sliced":
        buf = np.full((*a.shape[:-1], 2 * a.shape[-1]), 7.0, dtype=a.dtype)
        buf[..., ::2] = a
        a = buf[..., ::2]
    elif layout == "neg":
        buf = np.ascontiguousarray(a[..., ::-1, ::-1])
        a = buf[..., ::-1, ::-1]
    elif layout == "expand":
        a = np.broadcast_to(a[:1], a.shape)
    return a, a.astype(np.float64, copy=True)


def close(got, want, dtype):
    rtol, atol = TOL[dtype]
    np.testing.assert_allclose(as_f64(got), want, rtol=rtol, atol=atol)


# ---- references ---------------------------------------------------------------------------

def cols_of(left, w, W, circular):
    if circular:
        return (left + np.arange(w)) % W
    assert 0 <= left <= W - w
    return left + np.arange(w)


def ref_crop(canvas, offsets, h, w, circular):
    W = canvas.shape[-1]
    out = []
    for top, left in offsets:
        if circular:  # np.roll brings column `left` to 0
            out.append(np.roll(canvas, -left, axis=-1)[..., top:top + h, :w])
        else:
            out.append(canvas[..., top:top + h, left:left + w])
    return np.stack(out) if out else np.zeros((0, *canvas.shape[:-2], h, w))


def ref_paste_add(views, offsets, canvas, weights, circular):
    canvas = canvas.copy()
    W = canvas.shape[-1]
    h, w = views.shape[-2:]
    for i, (top, left) in enumerate(offsets):
        v = views[i] if weights is None else (views * weights)[i]
        cols = cols_of(left, w, W, circular)
        canvas[..., top:top + h, cols] += v
    return canvas


def ref_on_top(views, offsets, canvas, circular):
    canvas = canvas.copy()
    W = canvas.shape[-1]
    h, w = views.shape[-2:]
    for i, (top, left) in enumerate(offsets):
        canvas[..., top:top + h, cols_of(left, w, W, circular)] = views[i]
    return canvas


def ref_coverage(offsets, h, w, H, W, weights, circular):
    cov = np.zeros((H, W))
    for i, (top, left) in enumerate(offsets):
        wt = 1.0 if weights is None else weights[i]
        cov[top:top + h, cols_of(left, w, W, circular)] += wt
    return cov


# ---- strategies ---------------------------------------------------------------------------

@st.composite
def problems(draw, max_n=16):
    H = draw(st.integers(1, 12))
    W = draw(st.integers(1, 24))
    if draw(st.booleans()):  # tall canvases
        H, W = max(H, W) + draw(st.integers(0, 5)), min(H, W)
    h = draw(st.integers(1, H))
    w = draw(st.sampled_from([W, draw(st.integers(1, W))]))
    n = draw(st.integers(1, max_n))
    lead = tuple(draw(st.lists(st.integers(1, 3), min_size=0, max_size=2)))
    circular = draw(st.booleans())
    offs = []
    for _ in range(n):
        top = draw(st.integers(0, H - h))
        if circular:
            left = draw(st.integers(-3 * W, 3 * W))
        else:
            left = draw(st.integers(0, W - w))
        offs.append((top, left))
    off_kind = draw(st.sampled_from(["list", "np64", "np32", "torch64", "torch32"]))
    if off_kind == "np64":
        offsets = np.array(offs, dtype=np.int64)
    elif off_kind == "np32":
        offsets = np.array(offs, dtype=np.int32)
    elif off_kind == "torch64":
        offsets = torch.tensor(offs, dtype=torch.int64)
    elif off_kind == "torch32":
        offsets = torch.tensor(offs, dtype=torch.int32).t().contiguous().t()  # strided
    else:
        offsets = offs
    return dict(H=H, W=W, h=h, w=w, n=n, lead=lead, circular=circular, offs=offs,
                offsets=offsets, seed=draw(st.integers(0, 2**31 - 1)))


dtypes = st.sampled_from(["float32", "float64", "float16", "bfloat16"])
kinds = st.sampled_from(["torch", "numpy"])
in_layouts = st.sampled_from(["contig", "transposed", "sliced", "neg", "expand"])
out_layouts = st.sampled_from(["contig", "transposed", "sliced", "neg"])


@pytest.fixture(autouse=True, params=[1, 2], ids=["t1", "t2"])
def threads(request):
    old = _common.get_num_threads()
    _common.set_num_threads(request.param)
    yield
    _common.set_num_threads(old)


# ---- property tests -----------------------------------------------------------------------

@settings(**SETTINGS)
@given(p=problems(), dtype=dtypes, kind=kinds, layout=in_layouts, olayout=out_layouts,
       give_out=st.booleans())
def test_crop_matches_reference(p, dtype, kind, layout, olayout, give_out):
    rng = np.random.default_rng(p["seed"])
    shape = (*p["lead"], p["H"], p["W"])
    canvas, cv = make(rng.standard_normal(shape), dtype, kind, layout)
    want = ref_crop(cv, p["offs"], p["h"], p["w"], p["circular"])
    if give_out:
        out, _ = make(np.zeros(want.shape), dtype, kind if not isinstance(canvas, torch.Tensor) else "torch",
                      olayout)
        if isinstance(out, np.ndarray):
            out = out if out.flags.writeable else out.copy()
        got = crop_windows(canvas, p["offsets"], (p["h"], p["w"]), circular=p["circular"], out=out)
        assert got is out
    else:
        got = crop_windows(canvas, p["offsets"], (p["h"], p["w"]), circular=p["circular"])
    assert type(got) is type(canvas)
    assert tuple(got.shape) == want.shape
    np.testing.assert_array_equal(as_f64(got), want)  # a crop is an exact copy


@settings(**SETTINGS)
@given(p=problems(), dtype=dtypes, kind=kinds, layout=in_layouts, clayout=out_layouts,
       wmode=st.sampled_from([None, "pixel", "view", "full", "channel"]))
def test_paste_add_matches_reference(p, dtype, kind, layout, clayout, wmode):
    rng = np.random.default_rng(p["seed"])
    vshape = (p["n"], *p["lead"], p["h"], p["w"])
    views, vv = make(rng.standard_normal(vshape), dtype, kind, layout)
    kind = "torch" if isinstance(views, torch.Tensor) else "numpy"
    canvas, cv = make(rng.standard_normal((*p["lead"], p["H"], p["W"])), dtype, kind, clayout)
    weights, wv = None, None
    if wmode is not None:
        nl = len(p["lead"])
        wshape = {"pixel": (p["n"], *([1] * nl), p["h"], p["w"]),
                  "view": (p["n"], *([1] * (nl + 2))),
                  "full": vshape,
                  "channel": (*p["lead"], 1, 1)}[wmode]
        weights, wv = make(rng.uniform(0.1, 2.0, wshape), dtype, kind, "contig")
    want = ref_paste_add(vv, p["offs"], cv, wv, p["circular"])
    got = paste_windows_add(views, p["offsets"], canvas, weights=weights, circular=p["circular"])
    assert got is canvas
    close(got, want, dtype)


@settings(**SETTINGS)
@given(p=problems(), dtype=dtypes, kind=kinds, layout=in_layouts, clayout=out_layouts)
def test_paste_on_top_matches_reference(p, dtype, kind, layout, clayout):
    rng = np.random.default_rng(p["seed"])
    views, vv = make(rng.standard_normal((p["n"], *p["lead"], p["h"], p["w"])), dtype, kind, layout)
    kind = "torch" if isinstance(views, torch.Tensor) else "numpy"
    canvas, cv = make(rng.standard_normal((*p["lead"], p["H"], p["W"])), dtype, kind, clayout)
    want = ref_on_top(vv, p["offs"], cv, p["circular"])
    got = paste_windows_on_top(views, p["offsets"], canvas, circular=p["circular"])
    assert got is canvas
    np.testing.assert_array_equal(as_f64(got), want)


@settings(**SETTINGS)
@given(p=problems(), dtype=dtypes, kind=kinds, wmode=st.sampled_from([None, "pixel", "view"]),
       give_out=st.booleans())
def test_coverage_matches_reference(p, dtype, kind, wmode, give_out):
    rng = np.random.default_rng(p["seed"])
    weights, wv = None, None
    if wmode == "pixel":
        weights, wv = make(rng.uniform(0, 2, (p["n"], p["h"], p["w"])), dtype, kind, "transposed")
    elif wmode == "view":
        weights, wv = make(rng.uniform(0, 2, (p["n"],)), dtype, kind, "contig")
    want = ref_coverage(p["offs"], p["h"], p["w"], p["H"], p["W"], wv, p["circular"])
    out = None
    if give_out:
        out, _ = make(np.full((p["H"], p["W"]), 5.0), dtype, kind, "transposed")
    got = window_coverage(p["offsets"], (p["h"], p["w"]), (p["H"], p["W"]), weights=weights,
                          circular=p["circular"], out=out)
    if give_out:
        assert got is out
    elif weights is None:
        assert str(got.dtype).endswith("float32")
    close(got, want, dtype if (give_out or weights is not None) else "float32")


@settings(**SETTINGS)
@given(p=problems(), wmode=st.sampled_from([None, "pixel", "view"]))
def test_adjointness(p, wmode):
    """<crop(X), Y> == <X, paste_add(Y)> (and with weights: <crop(X), w Y> == <X, paste_add(Y, w)>)."""
    rng = np.random.default_rng(p["seed"])
    X = rng.standard_normal((*p["lead"], p["H"], p["W"]))
    Y = rng.standard_normal((p["n"], *p["lead"], p["h"], p["w"]))
    nl = len(p["lead"])
    wt = None
    if wmode == "pixel":
        wt = rng.uniform(0, 2, (p["n"], *([1] * nl), p["h"], p["w"]))
    elif wmode == "view":
        wt = rng.uniform(0, 2, (p["n"], *([1] * (nl + 2))))
    cx = crop_windows(X, p["offsets"], (p["h"], p["w"]), circular=p["circular"])
    px = paste_windows_add(Y, p["offsets"], np.zeros_like(X), weights=wt, circular=p["circular"])
    lhs = np.sum(cx * (Y if wt is None else wt * Y))
    rhs = np.sum(X * px)
    assert abs(lhs - rhs) <= 1e-9 * (1 + abs(lhs))


# ---- fixed cases --------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", ["float32", "float64", "float16", "bfloat16"])
@pytest.mark.parametrize("circular", [False, True])
def test_sd_latent_size_all_ops(dtype, circular):
    """SD latent sizes: big enough for the threaded paths."""
    rng = np.random.default_rng(0)
    H, W, h, w = 64, 256, 64, 64
    lefts = [0, 24, 48, 96, 144, 192] if not circular else [-20, 40, 100, 160, 220, 250]
    offs = [(0, l) for l in lefts]
    canvas, cv = make(rng.standard_normal((4, H, W)), dtype, "torch", "contig")
    views = crop_windows(canvas, offs, (h, w), circular=circular)
    np.testing.assert_array_equal(as_f64(views), ref_crop(cv, offs, h, w, circular))
    vv = as_f64(views) * 0.5
    views2, vv = make(vv, dtype, "torch", "contig")
    acc = torch.zeros_like(canvas)
    paste_windows_add(views2, offs, acc, circular=circular)
    close(acc, ref_paste_add(vv, offs, np.zeros_like(cv), None, circular), dtype)
    wt, wv = make(rng.uniform(0, 1, (len(offs), 1, h, w)), dtype, "torch", "contig")
    acc = torch.zeros_like(canvas)
    paste_windows_add(views2, offs, acc, weights=wt, circular=circular)
    close(acc, ref_paste_add(vv, offs, np.zeros_like(cv), wv, circular), dtype)
    top = canvas.clone()
    paste_windows_on_top(views2, offs, top, circular=circular)
    np.testing.assert_array_equal(as_f64(top), ref_on_top(vv, offs, cv, circular))
    cov = window_coverage(offs, (h, w), (H, W), circular=circular)
    close(cov, ref_coverage(offs, h, w, H, W, None, circular), "float32")


def test_sequence_canvas_h1():
    """1-D sequences are canvases with H = 1; batch + channel leading dims."""
    x = np.arange(2 * 3 * 1 * 20, dtype=np.float32).reshape(2, 3, 1, 20)
    offs = [(0, 0), (0, 15), (0, -3)]
    v = crop_windows(x, offs, (1, 8), circular=True)
    assert v.shape == (3, 2, 3, 1, 8)
    np.testing.assert_array_equal(v[1, ..., :5], x[..., 15:20])
    np.testing.assert_array_equal(v[1, ..., 5:], x[..., 0:3])
    np.testing.assert_array_equal(v[2], np.roll(x, 3, axis=-1)[..., :8])


def test_zero_windows_and_full_width():
    c = torch.randn(3, 5, 7)
    v = crop_windows(c, np.zeros((0, 2), dtype=np.int64), (2, 7))
    assert v.shape == (0, 3, 2, 7)
    before = c.clone()
    paste_windows_add(v, np.zeros((0, 2), dtype=np.int64), c)
    assert torch.equal(c, before)
    v = crop_windows(c, [(1, 0)], (2, 7))
    assert torch.equal(v[0], c[:, 1:3, :])
    v = crop_windows(c, [(0, 4)], (5, 7), circular=True)
    assert torch.equal(v[0], torch.roll(c, -4, dims=-1))


def test_views_on_cuda_style_requires_grad_inputs_are_detached():
    c = torch.randn(2, 6, 6, requires_grad=True)
    v = crop_windows(c, [(0, 0), (2, 2)], 4)
    assert not v.requires_grad
    assert torch.equal(v[1], c.detach()[:, 2:6, 2:6])
    acc = torch.zeros(2, 6, 6)
    paste_windows_add(v.requires_grad_(), [(0, 0), (2, 2)], acc)
    assert acc[0, 3, 3] == 2 * c.detach()[0, 3, 3]


# ---- errors -------------------------------------------------------------------------------

OFF = [(0, 0), (1, 2)]


def test_error_wrong_dtype():
    with pytest.raises(TypeError, match="canvas"):
        crop_windows(torch.zeros(4, 4, dtype=torch.int32), OFF, 2)
    with pytest.raises(TypeError, match="views"):
        paste_windows_add(torch.zeros(2, 2, 2, dtype=torch.float64), OFF, torch.zeros(4, 4))
    with pytest.raises(TypeError, match="weights"):
        paste_windows_add(torch.zeros(2, 2, 2), OFF, torch.zeros(4, 4),
                          weights=torch.ones(2, 1, 1, dtype=torch.float64))
    with pytest.raises(TypeError, match="out"):
        crop_windows(torch.zeros(4, 4), OFF, 2, out=torch.zeros(2, 2, 2, dtype=torch.float64))
    with pytest.raises(TypeError, match="offsets"):
        crop_windows(torch.zeros(4, 4), torch.zeros(2, 2), 2)
    with pytest.raises(TypeError, match="weights"):
        window_coverage(OFF, 2, (4, 4), weights=torch.ones(2, dtype=torch.float64),
                        out=torch.zeros(4, 4))


def test_error_wrong_ndim_and_shape():
    with pytest.raises(ValueError, match="canvas"):
        crop_windows(torch.zeros(4), OFF, 2)
    with pytest.raises(ValueError, match="canvas"):
        paste_windows_add(torch.zeros(2, 2), OFF, torch.zeros(4))
    with pytest.raises(ValueError, match="views"):
        paste_windows_add(torch.zeros(2, 2, 2), OFF, torch.zeros(3, 4, 4))  # missing lead dim
    with pytest.raises(ValueError, match="views"):
        paste_windows_add(torch.zeros(2, 2, 2, 2), OFF, torch.zeros(3, 4, 4))  # lead 2 != 3
    with pytest.raises(ValueError, match="views"):
        paste_windows_on_top(torch.zeros(3, 2, 2), OFF, torch.zeros(4, 4))  # 3 views, 2 offsets
    with pytest.raises(ValueError, match="out"):
        crop_windows(torch.zeros(4, 4), OFF, 2, out=torch.zeros(2, 3, 2))
    with pytest.raises(ValueError, match="out"):
        window_coverage(OFF, 2, (4, 4), out=torch.zeros(1, 4, 4))


@pytest.mark.parametrize("bad", [[(0, 0, 0)], [0, 1], np.zeros((2, 2, 2), dtype=np.int64),
                                 torch.zeros(3, 1, dtype=torch.int64)])
def test_error_offsets_wrong_shape(bad):
    with pytest.raises(ValueError, match="offsets"):
        crop_windows(torch.zeros(4, 4), bad, 2)


def test_error_offsets_not_integers():
    with pytest.raises(TypeError, match="offsets"):
        crop_windows(torch.zeros(4, 4), "abc", 2)
    with pytest.raises(TypeError, match="offsets"):
        crop_windows(torch.zeros(4, 4), [(0.5, 1.0)], 2)


def test_error_window_larger_than_canvas():
    with pytest.raises(ValueError, match="larger than the canvas"):
        crop_windows(torch.zeros(4, 4), [(0, 0)], (5, 2))
    with pytest.raises(ValueError, match="larger than the canvas"):
        crop_windows(torch.zeros(4, 4), [(0, 0)], (2, 5), circular=True)
    with pytest.raises(ValueError, match="larger than the canvas"):
        paste_windows_add(torch.zeros(1, 2, 6), [(0, 0)], torch.zeros(4, 4))
    with pytest.raises(ValueError, match="larger than the canvas"):
        window_coverage([(0, 0)], (5, 1), (4, 4))


@pytest.mark.parametrize("off,circ", [([(0, 0), (3, 0)], False), ([(0, 0), (0, 3)], False),
                                      ([(0, 0), (-1, 0)], False), ([(0, 0), (0, -1)], False),
                                      ([(0, 0), (3, 1)], True), ([(0, 0), (-1, 5)], True)])
def test_error_offset_out_of_range(off, circ):
    c = torch.zeros(2, 4, 4)
    with pytest.raises(IndexError, match="window 1"):
        crop_windows(c, off, 2, circular=circ)
    before = c.clone()
    with pytest.raises(IndexError, match="window 1"):
        paste_windows_add(torch.ones(2, 2, 2, 2), off, c, circular=circ)
    with pytest.raises(IndexError, match="window 1"):
        paste_windows_on_top(torch.ones(2, 2, 2, 2), off, c, circular=circ)
    with pytest.raises(IndexError, match="window 1"):
        window_coverage(off, 2, (4, 4), circular=circ)
    assert torch.equal(c, before)


def test_error_weights_not_broadcastable():
    with pytest.raises(ValueError, match="weights"):
        paste_windows_add(torch.zeros(2, 3, 2, 2), OFF, torch.zeros(3, 4, 4),
                          weights=torch.ones(2, 2, 2, 2))
    with pytest.raises(ValueError, match="weights"):  # per view [N] alone aligns with w
        paste_windows_add(torch.zeros(2, 3, 3, 3), OFF, torch.zeros(3, 4, 5), weights=torch.ones(2))
    with pytest.raises(ValueError, match="weights"):
        window_coverage(OFF, 2, (4, 4), weights=torch.ones(3))
    with pytest.raises(ValueError, match="weights"):
        window_coverage(OFF, 2, (4, 4), weights=torch.ones(2, 3, 2))


def test_error_readonly_numpy_output():
    c = np.zeros((4, 4), dtype=np.float32)
    c.setflags(write=False)
    with pytest.raises(ValueError, match="read-only"):
        paste_windows_add(np.ones((2, 2, 2), dtype=np.float32), OFF, c)
    out = np.zeros((2, 2, 2), dtype=np.float32)
    out.setflags(write=False)
    with pytest.raises(ValueError, match="read-only"):
        crop_windows(np.zeros((4, 4), dtype=np.float32), OFF, 2, out=out)


def test_error_expanded_output():
    c = torch.zeros(1, 4, 4).expand(3, 4, 4)
    with pytest.raises(ValueError, match="zero stride"):
        paste_windows_on_top(torch.ones(2, 3, 2, 2), OFF, c)
    with pytest.raises(ValueError, match="zero stride"):
        crop_windows(torch.zeros(4, 4), OFF, 2, out=torch.zeros(1, 2, 2).expand(2, 2, 2))
    with pytest.raises(ValueError, match="zero stride"):
        window_coverage(OFF, 2, (4, 4), out=torch.zeros(1, 4).expand(4, 4))


def test_error_output_overlaps_input():
    buf = torch.zeros(40)
    canvas = buf[:16].view(4, 4)
    out = buf[8:16].view(2, 2, 2)
    with pytest.raises(ValueError, match="overlaps"):
        crop_windows(canvas, OFF, 2, out=out)
    c = torch.zeros(4, 4)
    with pytest.raises(ValueError, match="overlaps"):
        paste_windows_add(c[None, :2, :2], [(0, 0)], c)
    w = torch.ones(4, 4)
    with pytest.raises(ValueError, match="overlaps"):
        paste_windows_add(torch.ones(1, 2, 2), [(0, 0)], c, weights=c[None, :2, :2])
    with pytest.raises(ValueError, match="overlaps"):
        window_coverage([(0, 0)], 2, (4, 4), weights=w[None, :2, :2], out=w)


def test_error_output_requires_grad():
    with pytest.raises(ValueError, match="requires grad"):
        paste_windows_add(torch.ones(2, 2, 2), OFF, torch.zeros(4, 4, requires_grad=True))
    with pytest.raises(ValueError, match="requires grad"):
        crop_windows(torch.zeros(4, 4), OFF, 2, out=torch.zeros(2, 2, 2, requires_grad=True))


def test_error_non_tensor_arguments():
    with pytest.raises(TypeError, match="canvas"):
        crop_windows([[0.0] * 4] * 4, OFF, 2)
    with pytest.raises(TypeError, match="views"):
        paste_windows_add([[[0.0] * 2] * 2] * 2, OFF, torch.zeros(4, 4))
    with pytest.raises(TypeError, match="weights"):
        paste_windows_add(torch.zeros(2, 2, 2), OFF, torch.zeros(4, 4), weights=[1.0, 2.0])
    with pytest.raises(TypeError, match="offsets"):
        crop_windows(torch.zeros(4, 4), 3, 2)
    with pytest.raises(ValueError, match="size"):
        crop_windows(torch.zeros(4, 4), OFF, (1, 2, 3))


@pytest.mark.parametrize("circular", [False, True])
def test_large_single_window_row_chunks(circular):
    """One window, no leading dims: the threaded crop splits the window's rows into chunks."""
    rng = np.random.default_rng(3)
    c = rng.standard_normal((256, 300)).astype(np.float32)
    offs = [(17, 250 if circular else 90)]
    v = crop_windows(c, offs, (210, 200), circular=circular)
    np.testing.assert_array_equal(v, ref_crop(c, offs, 210, 200, circular))
    acc = np.zeros_like(c)
    paste_windows_add(v, offs, acc, circular=circular)
    np.testing.assert_array_equal(acc, ref_paste_add(v, offs, np.zeros_like(c), None, circular))
