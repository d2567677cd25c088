"""Step kernels (C) against a float64 NumPy reference over shapes, layouts, dtypes, kinds."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from syncsde import ops
from conftest import FLOAT_DTYPES, TOL, make_array, rounded64, shapes, to_numpy64


# ---- slow, obviously correct references (float64) ---------------------------------------
def ref_tweedie(x, e, a):
    return (x - math.sqrt(1 - a) * e) / math.sqrt(a)


def ref_ddim(x, e, a_t, a_s, eta=0.0, z=None):
    x0 = ref_tweedie(x, e, a_t)
    sigma = eta * math.sqrt((1 - a_s) / (1 - a_t)) * math.sqrt(1 - a_t / a_s)
    out = math.sqrt(a_s) * x0 + math.sqrt(max(1 - a_s - sigma**2, 0.0)) * e
    if z is not None:
        out = out + sigma * z
    return out


def ref_gamma(a_t, a_s):
    return math.sqrt(a_s / a_t) - math.sqrt((1 - a_s) / (1 - a_t))


def ref_syncsde(x, e, r, m, a_t, a_s, inv_lam, eta=0.0, z=None):
    sigma = eta * math.sqrt((1 - a_s) / (1 - a_t)) * math.sqrt(1 - a_t / a_s)
    gamma = math.sqrt(a_s / a_t) - math.sqrt((1 - a_s - sigma**2) / (1 - a_t))
    return ref_ddim(x, e, a_t, a_s, eta, z) - gamma * inv_lam * m * (x - r)


abars = st.floats(0.01, 0.99)
kinds = st.sampled_from(["torch", "numpy"])
layouts = st.integers(0, 3)


def _inputs(draw_data, shape, dtype, kind, layout, n, seed):
    g = np.random.default_rng(seed)
    arrs = [make_array(g.standard_normal(shape), dtype, kind, layout) for _ in range(n)]
    return arrs


@settings(deadline=None, max_examples=40)
@given(shape=shapes(), dtype=st.sampled_from(FLOAT_DTYPES), kind=kinds, layout=layouts,
       a=abars, seed=st.integers(0, 2**31))
def test_tweedie_matches_reference(shape, dtype, kind, layout, a, seed):
    x, e = _inputs(None, shape, dtype, kind, layout, 2, seed)
    out = ops.tweedie(x, e, a)
    np.testing.assert_allclose(to_numpy64(out), ref_tweedie(rounded64(x), rounded64(e), a),
                               rtol=TOL[dtype]["rtol"], atol=TOL[dtype]["atol"] * 10)


@settings(deadline=None, max_examples=40)
@given(shape=shapes(), dtype=st.sampled_from(FLOAT_DTYPES), kind=kinds, layout=layouts,
       a=abars, scale=st.floats(0, 15), seed=st.integers(0, 2**31))
def test_cfg_and_conversions_match_reference(shape, dtype, kind, layout, a, scale, seed):
    u, c = _inputs(None, shape, dtype, kind, layout, 2, seed)
    U, C = rounded64(u), rounded64(c)
    tol = dict(rtol=TOL[dtype]["rtol"], atol=TOL[dtype]["atol"] * 20)
    np.testing.assert_allclose(to_numpy64(ops.cfg_combine(u, c, scale)), U + scale * (C - U), **tol)
    np.testing.assert_allclose(to_numpy64(ops.eps_from_x0(u, c, a)),
                               (U - math.sqrt(a) * C) / math.sqrt(1 - a), **tol)
    np.testing.assert_allclose(to_numpy64(ops.eps_from_v(u, c, a)),
                               math.sqrt(a) * C + math.sqrt(1 - a) * U, **tol)


@settings(deadline=None, max_examples=40)
@given(shape=shapes(), dtype=st.sampled_from(FLOAT_DTYPES), kind=kinds, layout=layouts,
       a_t=abars, da=st.floats(0.001, 0.5), eta=st.sampled_from([0.0, 0.3, 1.0]),
       seed=st.integers(0, 2**31))
def test_ddim_step_matches_reference(shape, dtype, kind, layout, a_t, da, eta, seed):
    a_s = min(a_t + da, 1.0)
    x, e, z = _inputs(None, shape, dtype, kind, layout, 3, seed)
    out = ops.ddim_step(x, e, a_t, a_s, eta=eta, noise=z)
    ref = ref_ddim(rounded64(x), rounded64(e), a_t, a_s, eta, rounded64(z))
    np.testing.assert_allclose(to_numpy64(out), ref, rtol=TOL[dtype]["rtol"],
                               atol=TOL[dtype]["atol"] * 10)


@settings(deadline=None, max_examples=60)
@given(n=st.integers(1, 6), c=st.integers(1, 4), h=st.integers(1, 9), w=st.integers(1, 9),
       dtype=st.sampled_from(FLOAT_DTYPES), kind=kinds, layout=layouts,
       mask_kind=st.sampled_from(["pixel", "full", "view", "scalar"]),
       a_t=abars, da=st.floats(0.001, 0.5), inv_lam=st.floats(0, 8),
       eta=st.sampled_from([0.0, 0.5]), seed=st.integers(0, 2**31))
def test_syncsde_step_matches_reference(n, c, h, w, dtype, kind, layout, mask_kind, a_t, da,
                                        inv_lam, eta, seed):
    a_s = min(a_t + da, 1.0)
    shape = (n, c, h, w)
    x, e, r, z = _inputs(None, shape, dtype, kind, layout, 4, seed)
    g = np.random.default_rng(seed + 1)
    mshape = {"pixel": (n, 1, h, w), "full": shape, "view": (n, 1, 1, 1), "scalar": ()}[mask_kind]
    m64 = (g.random(mshape) > 0.4).astype(np.float64) * g.random(mshape)
    mask = make_array(m64, dtype, kind, 0) if mshape else 0.7
    out = ops.syncsde_step(x, e, r, mask, a_t, a_s, inv_lam, eta=eta, noise=z)
    M = rounded64(mask) if mshape else 0.7
    ref = ref_syncsde(rounded64(x), rounded64(e), rounded64(r), M, a_t, a_s, inv_lam, eta,
                      rounded64(z))
    np.testing.assert_allclose(to_numpy64(out), ref, rtol=TOL[dtype]["rtol"] * 4,
                               atol=TOL[dtype]["atol"] * 20)


def test_syncsde_with_zero_mask_is_ddim():
    g = torch.Generator().manual_seed(0)
    x, e, r = (torch.randn(3, 4, 8, 8, generator=g) for _ in range(3))
    a = ops.syncsde_step(x, e, r, torch.zeros(3, 1, 8, 8), 0.2, 0.3, 5.0)
    b = ops.ddim_step(x, e, 0.2, 0.3)
    assert torch.equal(a, b)


def test_in_place_update():
    g = torch.Generator().manual_seed(1)
    x, e, r = (torch.randn(2, 4, 16, 16, generator=g) for _ in range(3))
    expect = ops.syncsde_step(x, e, r, 1.0, 0.4, 0.5, 2.0)
    y = x.clone()
    res = ops.syncsde_step(y, e, r, 1.0, 0.4, 0.5, 2.0, out=y)
    assert res is y
    torch.testing.assert_close(y, expect, rtol=0, atol=0)


def test_large_parallel_matches_serial():
    g = torch.Generator().manual_seed(2)
    x, e, r = (torch.randn(8, 4, 64, 96, generator=g) for _ in range(3))
    m = (torch.rand(8, 1, 64, 96, generator=g) > 0.5).float()
    ops.set_num_threads(2)
    par = ops.syncsde_step(x, e, r, m, 0.3, 0.4, 3.0)
    ops.set_num_threads(1)
    ser = ops.syncsde_step(x, e, r, m, 0.3, 0.4, 3.0)
    ops.set_num_threads()
    assert torch.equal(par, ser)


def test_ddim_coefficients_closed_form():
    for a_t, a_s, eta in [(0.1, 0.2, 0.0), (0.5, 0.9, 1.0), (0.0047, 0.0054, 0.0), (0.9, 1.0, 0.0)]:
        c = ops.ddim_coefficients(a_t, a_s, eta)
        sigma = eta * math.sqrt((1 - a_s) / (1 - a_t)) * math.sqrt(1 - a_t / a_s)
        assert c.sigma == pytest.approx(sigma, abs=1e-15)
        assert c.c_x == pytest.approx(math.sqrt(a_s / a_t), rel=1e-14)
        if eta == 0:
            assert c.gamma == pytest.approx(ref_gamma(a_t, a_s), rel=1e-12, abs=1e-15)


@pytest.mark.parametrize("bad", [(0.0, 0.5, 0.0), (0.5, 1.5, 0.0), (0.5, 0.6, -1.0),
                                 (float("nan"), 0.5, 0.0)])
def test_ddim_coefficients_refuse_bad_scalars(bad):
    with pytest.raises(ValueError):
        ops.ddim_coefficients(*bad)


def test_eta_needs_noise():
    x = torch.zeros(2, 3)
    with pytest.raises(ValueError, match="noise"):
        ops.ddim_step(x, x, 0.3, 0.5, eta=1.0)
    with pytest.raises(ValueError, match="noise"):
        ops.syncsde_step(x, x, x, 1.0, 0.3, 0.5, 1.0, eta=1.0)


def test_negative_inv_lambda_refused():
    x = torch.zeros(2, 3)
    with pytest.raises(ValueError, match="inv_lambda"):
        ops.syncsde_step(x, x, x, 1.0, 0.3, 0.5, -1.0)


# ---- masked update (replacement / masked Langevin move) ------------------------------------
def ref_masked_update(x, m, y, w, c, a, b):
    return (1 - c * m) * x + m * (a * y + (0.0 if w is None else b * w))


@settings(deadline=None, max_examples=40)
@given(n=st.integers(1, 3), c=st.integers(1, 4), h=st.integers(1, 9), w=st.integers(1, 9),
       dtype=st.sampled_from(FLOAT_DTYPES), kind=kinds, layout=layouts,
       mask_kind=st.sampled_from(["pixel", "full", "view", "binary"]),
       move=st.booleans(), with_w=st.booleans(), a=st.floats(-3, 3), b=st.floats(-3, 3),
       seed=st.integers(0, 2**31))
def test_masked_update_matches_reference(n, c, h, w, dtype, kind, layout, mask_kind, move, with_w,
                                         a, b, seed):
    shape = (n, c, h, w)
    x, y, z = _inputs(None, shape, dtype, kind, layout, 3, seed)
    g = np.random.default_rng(seed + 1)
    mshape = {"pixel": (n, 1, h, w), "full": shape, "view": (n, 1, 1, 1), "binary": (1, 1, h, w)}[mask_kind]
    m64 = (g.random(mshape) > 0.5).astype(np.float64)
    if mask_kind != "binary":
        m64 = m64 * g.random(mshape)
    mask = make_array(m64, dtype, kind, 0)
    M = rounded64(mask)
    if move:
        out = ops.masked_move(x, mask, y, a, z if with_w else None, b)
        ref = ref_masked_update(rounded64(x), M, rounded64(y), rounded64(z) if with_w else None,
                                0.0, a, b)
    else:
        out = ops.replace_where(x, mask, y)
        ref = ref_masked_update(rounded64(x), M, rounded64(y), None, 1.0, 1.0, 0.0)
    np.testing.assert_allclose(to_numpy64(out), ref, rtol=TOL[dtype]["rtol"] * 4,
                               atol=TOL[dtype]["atol"] * 20)
    if not move and mask_kind == "binary":  # replacement is exact where the mask is 0 or 1
        got, xv, yv = to_numpy64(out), rounded64(x), rounded64(y)
        sel = np.broadcast_to(M, shape) == 1
        assert np.array_equal(got[sel], yv[sel]) and np.array_equal(got[~sel], xv[~sel])


def test_masked_update_in_place_and_errors():
    g = torch.Generator().manual_seed(3)
    x, y = torch.randn(2, 3, 4, 4, generator=g), torch.randn(2, 3, 4, 4, generator=g)
    m = torch.zeros(1, 1, 4, 4)
    m[..., :2] = 1
    want = torch.where(m.bool(), y, x)
    got = ops.replace_where(x, m, y, out=x)
    assert got is x and torch.equal(x, want)
    with pytest.raises((TypeError, ValueError)):
        ops.replace_where(x, m, y.double())
    with pytest.raises((TypeError, ValueError)):
        ops.replace_where(x, torch.zeros(3, 1, 4, 4), y)          # mask does not broadcast
    with pytest.raises(ValueError, match="finite"):
        ops.masked_move(x, m, y, float("nan"))
    ro = np.zeros((2, 3), np.float32)
    ro.flags.writeable = False
    with pytest.raises((TypeError, ValueError)):
        ops.replace_where(np.zeros((2, 3), np.float32), np.ones((1, 3), np.float32),
                          np.ones((2, 3), np.float32), out=ro)
