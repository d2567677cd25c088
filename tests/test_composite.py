"""Tests of normalize_accumulated and window_average against slow references."""
import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import to_numpy64 as as_f64
from syncsde.ops import _common
from syncsde.ops.composite import normalize_accumulated, window_average
from syncsde.ops.windows import paste_windows_add, window_coverage

SETTINGS = dict(deadline=None, max_examples=40, suppress_health_check=[HealthCheck.too_slow])
TORCH_DT = {"float32": torch.float32, "float64": torch.float64, "float16": torch.float16,
            "bfloat16": torch.bfloat16}
TOL = {"float64": (1e-10, 1e-10), "float32": (1e-5, 1e-5), "float16": (5e-3, 5e-3),
       "bfloat16": (2e-2, 2e-2)}


def make(x, dtype, kind, layout):
    """x (float64) in dtype/kind with a memory layout; returns (tensor, its float64 values)."""
    if kind == "numpy" and dtype == "bfloat16":
        kind = "torch"
    if np.ndim(x) == 0:
        layout = "contig"
    if kind == "torch":
        t = torch.from_numpy(np.array(x)).to(TORCH_DT[dtype])
        if layout == "transposed" and t.ndim >= 2:
            t = t.transpose(-1, -2).contiguous().transpose(-1, -2)
        elif layout in ("sliced", "neg"):
            buf = torch.full((*t.shape[:-1], 2 * t.shape[-1]), 7.0, dtype=t.dtype)
            buf[..., ::2] = t
            t = buf[..., ::2]
        return t, t.to(torch.float64).numpy().copy()
    a = np.array(x).astype(dtype)
    if layout == "transposed" and a.ndim >= 2:
        a = np.swapaxes(np.ascontiguousarray(np.swapaxes(a, -1, -2)), -1, -2)
    elif layout == "sliced":
        buf = np.full((*a.shape[:-1], 2 * a.shape[-1]), 7.0, dtype=a.dtype)
        buf[..., ::2] = a
        a = buf[..., ::2]
    elif layout == "neg":
        a = np.ascontiguousarray(a[..., ::-1])[..., ::-1]
    return a, a.astype(np.float64, copy=True)


def close(got, want, dtype):
    rtol, atol = TOL[dtype]
    np.testing.assert_allclose(as_f64(got), want, rtol=rtol, atol=atol)


def rounded(x, dtype):
    """x rounded to dtype, as float64 (what the kernel stores)."""
    return torch.from_numpy(np.array(x)).to(TORCH_DT[dtype]).to(torch.float64).numpy()


# ---- references ---------------------------------------------------------------------------

def ref_normalize(num, den, prev, uncovered):
    den = np.broadcast_to(den, num.shape)
    covered = den > 0
    out = np.where(covered, num / np.where(covered, den, 1.0), prev)
    if uncovered == "zero":
        out = np.where(covered, out, 0.0)
    return out


def ref_average(views, offsets, canvas, weights, circular):
    """Returns (sum_i f_i^T(w_i y_i), sum_i f_i^T(w_i)) by slicing, w_i broadcast to the views."""
    W = canvas.shape[-1]
    h, w = views.shape[-2:]
    wt = np.ones_like(views) if weights is None else np.broadcast_to(weights, views.shape)
    num = np.zeros_like(canvas)
    den = np.zeros_like(canvas)
    for i, (top, left) in enumerate(offsets):
        cols = (left + np.arange(w)) % W if circular else left + np.arange(w)
        num[..., top:top + h, cols] += wt[i] * views[i]
        den[..., top:top + h, cols] += wt[i]
    return num, den


@pytest.fixture(autouse=True, params=[1, 2], ids=["t1", "t2"])
def threads(request):
    old = _common.get_num_threads()
    _common.set_num_threads(request.param)
    yield
    _common.set_num_threads(old)


dtypes = st.sampled_from(["float32", "float64", "float16", "bfloat16"])
kinds = st.sampled_from(["torch", "numpy"])
layouts = st.sampled_from(["contig", "transposed", "sliced", "neg"])
policies = st.sampled_from(["keep", "zero"])


@st.composite
def problems(draw):
    H = draw(st.integers(1, 12))
    W = draw(st.integers(1, 24))
    if draw(st.booleans()):
        H, W = max(H, W) + draw(st.integers(0, 5)), min(H, W)
    h = draw(st.integers(1, H))
    w = draw(st.sampled_from([W, draw(st.integers(1, W))]))
    n = draw(st.integers(1, 16))
    lead = tuple(draw(st.lists(st.integers(1, 3), min_size=0, max_size=2)))
    circular = draw(st.booleans())
    offs = [(draw(st.integers(0, H - h)),
             draw(st.integers(-2 * W, 2 * W)) if circular else draw(st.integers(0, W - w)))
            for _ in range(n)]
    return dict(H=H, W=W, h=h, w=w, n=n, lead=lead, circular=circular, offs=offs,
                seed=draw(st.integers(0, 2**31 - 1)))


# ---- normalize ----------------------------------------------------------------------------

@settings(**SETTINGS)
@given(shape=st.lists(st.integers(1, 9), min_size=1, max_size=4), dtype=dtypes, kind=kinds,
       layout=layouts, dlayout=layouts, policy=policies, den_dims=st.integers(0, 4),
       mode=st.sampled_from(["out", "inplace", "none"]), seed=st.integers(0, 2**31 - 1))
def test_normalize_matches_reference(shape, dtype, kind, layout, dlayout, policy, den_dims, mode,
                                     seed):
    rng = np.random.default_rng(seed)
    shape = tuple(shape)
    dshape = shape[len(shape) - min(den_dims, len(shape)):]
    dshape = tuple(1 if rng.random() < 0.3 else s for s in dshape)
    num, nv = make(rng.standard_normal(shape), dtype, kind, layout)
    kind = "torch" if isinstance(num, torch.Tensor) else "numpy"
    d = rng.choice([0.0, 0.5, 1.0, 2.0, 3.0, -1.0], size=dshape)
    den, dv = make(d, dtype, kind, dlayout)
    if mode == "out":
        out, prev = make(rng.standard_normal(shape), dtype, kind, "transposed")
        got = normalize_accumulated(num, den, out=out, uncovered=policy)
        assert got is out
    elif mode == "inplace":
        prev = nv
        got = normalize_accumulated(num, den, out=num, uncovered=policy)
        assert got is num
    else:
        prev = np.zeros(shape)
        got = normalize_accumulated(num, den, uncovered=policy)
        assert type(got) is type(num) and tuple(got.shape) == shape
    want = ref_normalize(nv, dv, prev, policy)
    # the quotient is rounded once from the exact value
    close(got, rounded(want, dtype), dtype)


def test_normalize_den_dtype_is_cast():
    num = torch.ones(3, 4, 4, dtype=torch.float16) * 6
    den = torch.full((4, 4), 3.0)  # float32 coverage
    out = normalize_accumulated(num, den)
    assert out.dtype == torch.float16 and torch.all(out == 2)
    nnum = np.ones((3, 4, 4)) * 6
    assert np.all(normalize_accumulated(nnum, np.full((4, 4), 3.0, dtype=np.float32)) == 2)


def test_normalize_error_policy():
    num = torch.ones(2, 3, 3)
    den = torch.ones(3, 3)
    out = torch.full((2, 3, 3), 9.0)
    normalize_accumulated(num, den, out=out, uncovered="error")
    assert torch.all(out == 1)
    den[1, 2] = 0
    out.fill_(9.0)
    with pytest.raises(ValueError, match="1 element"):
        normalize_accumulated(num, den, out=out, uncovered="error")
    assert torch.all(out == 9)  # nothing written
    den[0, 0] = float("nan")
    with pytest.raises(ValueError, match="2 element"):
        normalize_accumulated(num, den, out=out, uncovered="error")


def test_normalize_errors():
    num = torch.ones(2, 3, 3)
    with pytest.raises(ValueError, match="uncovered"):
        normalize_accumulated(num, torch.ones(3, 3), uncovered="ignore")
    with pytest.raises(ValueError, match="uncovered"):
        normalize_accumulated(num, torch.ones(3, 3), uncovered=None)
    with pytest.raises(TypeError, match="den"):
        normalize_accumulated(num, torch.ones(3, 3, dtype=torch.int32))
    with pytest.raises(TypeError, match="num"):
        normalize_accumulated(num.int(), torch.ones(3, 3))
    with pytest.raises(TypeError, match="num"):
        normalize_accumulated(num, torch.ones(3, 3), out=torch.zeros(2, 3, 3, dtype=torch.float64))
    with pytest.raises(ValueError, match="den"):
        normalize_accumulated(num, torch.ones(2, 3))
    with pytest.raises(ValueError, match="num"):
        normalize_accumulated(num, torch.ones(3, 3), out=torch.zeros(3, 3))
    with pytest.raises(ValueError, match="read-only"):
        o = np.zeros((2, 3, 3))
        o.setflags(write=False)
        normalize_accumulated(np.ones((2, 3, 3)), np.ones((3, 3)), out=o)
    with pytest.raises(ValueError, match="zero stride"):
        normalize_accumulated(num, torch.ones(3, 3), out=torch.zeros(1, 3, 3).expand(2, 3, 3))
    with pytest.raises(ValueError, match="overlaps"):
        buf = torch.ones(30)
        normalize_accumulated(buf[:18].view(2, 3, 3), torch.ones(3, 3), out=buf[9:27].view(2, 3, 3))
    with pytest.raises(ValueError, match="overlaps"):
        d = torch.ones(2, 3, 3)
        normalize_accumulated(num, d[0], out=d)
    with pytest.raises(ValueError, match="requires grad"):
        normalize_accumulated(num, torch.ones(3, 3), out=torch.zeros(2, 3, 3, requires_grad=True))
    with pytest.raises(TypeError, match="num"):
        normalize_accumulated([1.0, 2.0], torch.ones(2))
    with pytest.raises(TypeError, match="den"):
        normalize_accumulated(num, 2.0)


# ---- window average -----------------------------------------------------------------------

@settings(**SETTINGS)
@given(p=problems(), dtype=dtypes, kind=kinds, vlayout=layouts, clayout=layouts, policy=policies,
       wmode=st.sampled_from([None, "pixel", "view", "full", "zeros"]))
def test_window_average_matches_reference(p, dtype, kind, vlayout, clayout, policy, wmode):
    rng = np.random.default_rng(p["seed"])
    vshape = (p["n"], *p["lead"], p["h"], p["w"])
    views, vv = make(rng.standard_normal(vshape), dtype, kind, vlayout)
    kind = "torch" if isinstance(views, torch.Tensor) else "numpy"
    canvas, cv = make(rng.standard_normal((*p["lead"], p["H"], p["W"])), dtype, kind, clayout)
    weights, wv = None, None
    nl = len(p["lead"])
    if wmode == "pixel":
        weights, wv = make(rng.uniform(0.1, 2, (p["n"], *([1] * nl), p["h"], p["w"])), dtype, kind,
                           "transposed")
    elif wmode == "view":
        weights, wv = make(rng.uniform(0.1, 2, (p["n"], *([1] * (nl + 2)))), dtype, kind, "contig")
    elif wmode == "full":
        weights, wv = make(rng.uniform(0.1, 2, vshape), dtype, kind, "sliced")
    elif wmode == "zeros":  # some weights zero: uncovered pixels inside windows
        weights, wv = make(rng.choice([0.0, 1.0], (p["n"], *([1] * nl), p["h"], p["w"])), dtype,
                           kind, "contig")
    num, den = ref_average(vv, p["offs"], cv, wv, p["circular"])
    want = ref_normalize(num, den, cv, policy)
    got = window_average(views, p["offs"], canvas, weights=weights, circular=p["circular"],
                         uncovered=policy)
    assert got is canvas
    close(got, rounded(want, dtype), dtype)


@settings(**SETTINGS)
@given(p=problems(), policy=policies)
def test_window_average_equals_three_calls(p, policy):
    """window_average == paste_add(num) / coverage(den) via normalize_accumulated."""
    rng = np.random.default_rng(p["seed"])
    views = rng.standard_normal((p["n"], *p["lead"], p["h"], p["w"]))
    canvas = rng.standard_normal((*p["lead"], p["H"], p["W"]))
    num = paste_windows_add(views, p["offs"], np.zeros_like(canvas), circular=p["circular"])
    den = window_coverage(p["offs"], (p["h"], p["w"]), (p["H"], p["W"]), circular=p["circular"],
                          out=np.zeros((p["H"], p["W"])))
    want = normalize_accumulated(num, den, out=canvas.copy(), uncovered=policy)
    got = window_average(views, p["offs"], canvas, circular=p["circular"], uncovered=policy)
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("dtype", ["float32", "float16", "bfloat16", "float64"])
@pytest.mark.parametrize("shape,n", [((4, 64, 64), 2), ((4, 64, 256), 8), ((4, 96, 256), 16)])
def test_window_average_sd_sizes(dtype, shape, n):
    rng = np.random.default_rng(1)
    C, H, W = shape
    h, w = min(H, 64), 64
    lefts = np.linspace(0, W - w, n).astype(int)
    offs = [(0 if H == h else int(rng.integers(0, H - h + 1)), int(l)) for l in lefts]
    views, vv = make(rng.standard_normal((n, C, h, w)), dtype, "torch", "contig")
    canvas, cv = make(rng.standard_normal(shape), dtype, "torch", "contig")
    wt, wv = make(rng.uniform(0.1, 1, (n, 1, h, w)), dtype, "torch", "contig")
    for weights, wvals in ((None, None), (wt, wv)):
        c = canvas.clone()
        num, den = ref_average(vv, offs, cv, wvals, False)
        window_average(views, offs, c, weights=weights)
        close(c, rounded(ref_normalize(num, den, cv, "keep"), dtype), dtype)


def test_window_average_error_policy():
    canvas = torch.full((2, 4, 6), 5.0)
    views = torch.ones(2, 2, 4, 3)
    window_average(views, [(0, 0), (0, 3)], canvas, uncovered="error")
    assert torch.all(canvas == 1)
    canvas.fill_(5.0)
    with pytest.raises(ValueError, match="16 canvas element"):  # columns 2, 3 x 4 rows x 2
        window_average(torch.ones(2, 2, 4, 2), [(0, 0), (0, 4)], canvas, uncovered="error")
    assert torch.all(canvas == 5)
    wt = torch.ones(2, 1, 4, 3)
    wt[1, 0, 0, 0] = 0
    with pytest.raises(ValueError, match="2 canvas element"):
        window_average(views, [(0, 0), (0, 3)], canvas, weights=wt, uncovered="error")
    wt = torch.ones(2, 2, 4, 3)  # weights varying over the leading dim
    wt[1, 1, 0, 0] = 0
    with pytest.raises(ValueError, match="1 canvas element"):
        window_average(views, [(0, 0), (0, 3)], canvas, weights=wt, uncovered="error")
    assert torch.all(canvas == 5)
    window_average(views, [(0, 0), (0, 3)], canvas, weights=wt, uncovered="keep")
    assert canvas[1, 0, 3] == 5 and canvas[0, 0, 3] == 1
    window_average(views, [(0, 0), (0, 3)], canvas, weights=wt, uncovered="zero")
    assert canvas[1, 0, 3] == 0


def test_window_average_errors():
    c = torch.zeros(2, 4, 4)
    v = torch.ones(2, 2, 2, 2)
    off = [(0, 0), (2, 2)]
    with pytest.raises(ValueError, match="uncovered"):
        window_average(v, off, c, uncovered="skip")
    with pytest.raises(TypeError, match="views"):
        window_average(v.double(), off, c)
    with pytest.raises(TypeError, match="canvas"):
        window_average(v.int(), off, c.int())
    with pytest.raises(TypeError, match="weights"):
        window_average(v, off, c, weights=torch.ones(2, 1, 1, 1, dtype=torch.float64))
    with pytest.raises(ValueError, match="weights"):
        window_average(v, off, c, weights=torch.ones(3, 1, 1, 1))
    with pytest.raises(ValueError, match="views"):
        window_average(torch.ones(2, 3, 2, 2), off, c)
    with pytest.raises(ValueError, match="views"):
        window_average(torch.ones(3, 2, 2, 2), off, c)
    with pytest.raises(ValueError, match="canvas"):
        window_average(torch.ones(2, 2), off, torch.zeros(4))
    with pytest.raises(ValueError, match="offsets"):
        window_average(v, [(0, 0, 0), (1, 1, 1)], c)
    with pytest.raises(ValueError, match="larger than the canvas"):
        window_average(torch.ones(2, 2, 5, 2), off, c)
    with pytest.raises(IndexError, match="window 1"):
        window_average(v, [(0, 0), (3, 0)], c)
    with pytest.raises(IndexError, match="window 1"):
        window_average(v, [(0, 0), (0, 3)], c)
    with pytest.raises(ValueError, match="read-only"):
        a = np.zeros((2, 4, 4))
        a.setflags(write=False)
        window_average(np.ones((2, 2, 2, 2)), off, a)
    with pytest.raises(ValueError, match="zero stride"):
        window_average(v, off, torch.zeros(1, 4, 4).expand(2, 4, 4))
    with pytest.raises(ValueError, match="overlaps"):
        window_average(c[None, :, :2, :2].expand(2, 2, 2, 2), off, c)
    with pytest.raises(ValueError, match="overlaps"):
        window_average(v, off, c, weights=c[None, :, :2, :2])
    with pytest.raises(ValueError, match="requires grad"):
        window_average(v, off, torch.zeros(2, 4, 4, requires_grad=True))
    with pytest.raises(TypeError, match="views"):
        window_average([[1.0]], off, c)
    with pytest.raises(TypeError, match="canvas"):
        window_average(v, off, [[0.0]])
