"""The tasks built through the extension API: tileable (torus), 360 panorama, near/far hybrid.

Every view map is checked against an independent NumPy / pure-Python reference, the
correlation models against their formulas, and each task's output against the property it
claims (the torus wraps without a seam, the panorama is a filled 2:1 equirectangular image whose
longitude wraps, the hybrid's far reading follows the far prompt)."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from syncsde.correlation import EarlierViews
from syncsde.priors import FieldDenoiser, GaussianPrior, PriorDenoiser
from syncsde.sampler import SamplingSchedule, sample
from syncsde.tasks import wide_problem
from syncsde.tasks.hybrid import ScaleCorrelation, block_mean, far_reading, hybrid_problem, hybrid_views
from syncsde.tasks.panorama360 import (cube_cameras, default_cameras, fill_uncovered,
                                       panorama_problem, panorama_views)
from syncsde.tasks.sparse_views import CoveredEarlierViews, SparseViews
from syncsde.tasks.tileable import tile, tileable_problem, torus_views, wrap_seam_statistic

SCHED = SamplingSchedule.preset("sd", 10)


def dense_maps(views):
    return [views.to_dense(i) for i in range(views.num_views)]


# ---- SparseViews against dense matrices ---------------------------------------------------------
@pytest.mark.parametrize("seed", range(4))
def test_sparse_views_match_dense_reference(seed):
    rng = np.random.default_rng(seed)
    C, H, W, h, w, n = rng.integers(1, 4), rng.integers(2, 7), rng.integers(2, 7), 2, 3, rng.integers(1, 5)
    maps, dense = [], []
    for _ in range(n):
        k = int(rng.integers(0, 25))
        r, c, v = rng.integers(0, h * w, k), rng.integers(0, H * W, k), rng.normal(size=k)
        maps.append((r, c, v))
        A = np.zeros((h * w, H * W))
        for a, b, x in zip(r, c, v):  # repeated pairs add up
            A[a, b] += x
        dense.append(A)
    views = SparseViews((C, H, W), (h, w), maps)
    X = rng.normal(size=(3, C, H, W))
    y = views.forward(torch.from_numpy(X)).numpy()
    for i, A in enumerate(dense):
        np.testing.assert_allclose(y[i], (X.reshape(3, C, -1) @ A.T).reshape(3, C, h, w), atol=1e-12)
        np.testing.assert_allclose(views.forward_one(i, torch.from_numpy(X)).numpy(), y[i], atol=1e-12)
    Y = rng.normal(size=(n, 3, C, h, w))
    wts = rng.uniform(0.1, 2, size=(n, 1, 1, h, w))
    adj = views.adjoint(torch.from_numpy(Y), torch.from_numpy(wts)).numpy()
    ref = sum(((wts[i] * Y[i]).reshape(3, C, -1) @ dense[i]) for i in range(n)).reshape(3, C, H, W)
    np.testing.assert_allclose(adj, ref, atol=1e-12)
    cov = views.coverage(torch.from_numpy(wts[:, 0]), dtype=torch.float64).numpy()
    np.testing.assert_allclose(cov[0], sum(wts[i, 0, 0].reshape(-1) @ dense[i] for i in range(n)).reshape(H, W),
                               atol=1e-12)
    np.testing.assert_allclose(views.coverage(dtype=torch.float64)[0].numpy(),
                               sum(A.sum(0) for A in dense).reshape(H, W), atol=1e-12)
    # paste on top: A_i^T y / a_i where a_i > 0, the canvas elsewhere
    canvas = torch.from_numpy(rng.normal(size=(3, C, H, W)))
    before = canvas.clone().numpy()
    views.paste_one_on_top(0, torch.from_numpy(Y[0]), canvas)
    a = dense[0].sum(0)
    num = (Y[0].reshape(3, C, -1) @ dense[0]).reshape(3, C, H * W)
    expect = np.where(a > 0, num / np.where(a > 0, a, 1), before.reshape(3, C, -1)).reshape(3, C, H, W)
    np.testing.assert_allclose(canvas.numpy(), expect, atol=1e-12)


def test_sparse_views_bad_input():
    with pytest.raises(IndexError, match="cols"):
        SparseViews((1, 2, 2), (1, 1), [([0], [4], [1.0])])
    with pytest.raises(IndexError, match="rows"):
        SparseViews((1, 2, 2), (1, 1), [([1], [0], [1.0])])
    with pytest.raises(ValueError, match="finite"):
        SparseViews((1, 2, 2), (1, 1), [([0], [0], [float("nan")])])
    with pytest.raises(TypeError, match="integers"):
        SparseViews((1, 2, 2), (1, 1), [([0.5], [0], [1.0])])
    with pytest.raises(ValueError, match="at least one"):
        SparseViews((1, 2, 2), (1, 1), [])
    v = SparseViews((1, 2, 2), (1, 1), [([0], [0], [1.0])])
    with pytest.raises(ValueError, match="canvas"):
        v.forward(torch.zeros(1, 3, 3))


# ---- tileable -----------------------------------------------------------------------------------
@pytest.mark.parametrize("H,W,win,stride", [(12, 12, 6, 3), (10, 14, (4, 6), (3, 5)), (7, 9, 7, 2)])
def test_torus_views_are_wrapped_crops(H, W, win, stride):
    h, w = (win, win) if isinstance(win, int) else win
    sh, sw = (stride, stride) if isinstance(stride, int) else stride
    views = torus_views((2, H, W), win, stride)
    assert views.num_views == math.ceil(H / sh) * math.ceil(W / sw)
    X = np.random.default_rng(0).normal(size=(2, H, W))
    y = views.forward(torch.from_numpy(X)).numpy()
    k = 0
    for t in range(0, H, sh):
        if t >= math.ceil(H / sh) * sh:
            break
        for left in [sw * j for j in range(math.ceil(W / sw))]:
            ref = np.roll(X, (-t, -left), axis=(1, 2))[:, :h, :w]
            np.testing.assert_array_equal(y[k], ref)
            k += 1
    assert k == views.num_views


def test_torus_coverage_is_uniform_when_the_stride_divides():
    cov = torus_views((1, 12, 12), 6, 3).coverage()
    assert torch.equal(cov, torch.full_like(cov, 4.0))  # no pixel, edge or not, is special


def test_covered_earlier_views_equals_earlier_views_on_gathers():
    views = torus_views((2, 8, 8), 4, 2)
    y = torch.randn(views.num_views, 3, 2, 4, 4, dtype=torch.float64)
    like = torch.zeros(views.num_views, 2, 4, 4, dtype=torch.float64)
    a, b = CoveredEarlierViews(), EarlierViews()
    m = a.masks(views, like)
    torch.testing.assert_close(m, b.masks(views, like))
    m = m.unsqueeze(1)  # the pull M (y - Xtilde) is what the step uses (refs differ off the mask)
    torch.testing.assert_close(m * (y - a.references(y, views)), m * (y - b.references(y, views)))


def test_tile_and_wrap_statistic_reference():
    x = torch.arange(6.0).reshape(1, 2, 3)
    t = tile(x, 3)
    assert t.shape == (1, 6, 9)
    assert torch.equal(t[:, 2:4, 3:6], x)
    rng = np.random.default_rng(1)
    s = rng.normal(size=(50, 1, 6, 8))
    st = wrap_seam_statistic(torch.from_numpy(s), 2)
    d_wrap = ((s[..., 0] - s[..., -1]) ** 2).mean()
    d_in = (np.diff(s, axis=-1) ** 2).mean()
    assert st["columns"] == pytest.approx(d_wrap / d_in, rel=1e-12)
    d_phase = (np.stack([s[..., c] - s[..., c - 1] for c in (2, 4, 6)]) ** 2).mean()
    assert st["columns_vs_phase"] == pytest.approx(d_wrap / d_phase, rel=1e-12)
    r_wrap = ((s[..., 0, :] - s[..., -1, :]) ** 2).mean()
    assert st["rows"] == pytest.approx(r_wrap / (np.diff(s, axis=-2) ** 2).mean(), rel=1e-12)


def test_tileable_output_wraps_like_the_interior_and_a_plain_canvas_does_not():
    den = FieldDenoiser({"f": {"kernel": "se", "lengthscale": 1.5}}, SCHED.abar)
    tor = sample(tileable_problem((1, 12, 12), 6, 3, cond="f"), den, "multidiffusion", SCHED,
                 batch=250, progress=False).output
    flat = sample(wide_problem((1, 12, 12), 6, 3, cond="f"), den, "multidiffusion", SCHED,
                  batch=250, progress=False).output
    st_t, st_f = wrap_seam_statistic(tor, 3), wrap_seam_statistic(flat, 3)
    # the torus' wrap is one window boundary among others: the same jump as its phase-mates
    assert 0.85 < st_t["columns_vs_phase"] < 1.15 and 0.85 < st_t["rows_vs_phase"] < 1.15
    # a plain canvas' opposite edges are nearly independent: a far larger jump
    assert st_f["columns"] > 2 * st_t["columns"] and st_f["rows"] > 2 * st_t["rows"]


# ---- 360 panorama -----------------------------------------------------------------------------
def ref_direction(yaw, pitch, fov, s, r, c):
    """Camera basis vectors, written out (independent of the rotation matrices of the module)."""
    y, p = math.radians(yaw), math.radians(pitch)
    fwd = (math.cos(p) * math.sin(y), math.sin(p), math.cos(p) * math.cos(y))
    right = (math.cos(y), 0.0, -math.sin(y))
    up = (-math.sin(p) * math.sin(y), math.cos(p), -math.sin(p) * math.cos(y))
    t = math.tan(math.radians(fov) / 2)
    u = (2 * (c + 0.5) / s - 1) * t
    v = (2 * (r + 0.5) / s - 1) * t
    d = [fwd[k] + u * right[k] - v * up[k] for k in range(3)]
    n = math.sqrt(sum(x * x for x in d))
    return [x / n for x in d]


def ref_bilinear(img, d):
    H, W = img.shape
    lon, lat = math.atan2(d[0], d[2]), math.asin(max(-1, min(1, d[1])))
    x = (lon / (2 * math.pi) + 0.5) * W - 0.5
    y = (0.5 - lat / math.pi) * H - 0.5
    x0, y0 = math.floor(x), math.floor(y)
    total = 0.0
    for dy in (0, 1):
        for dx in (0, 1):
            wgt = (x - x0 if dx else 1 - (x - x0)) * (y - y0 if dy else 1 - (y - y0))
            total += wgt * img[min(max(y0 + dy, 0), H - 1), (x0 + dx) % W]
    return total


@pytest.mark.parametrize("cams", [None, "cube", [(30.0, 20.0, 70.0), (-100.0, -60.0, 110.0)]])
def test_panorama_views_match_pure_python_projection(cams):
    H, s = 8, 5
    cameras = cube_cameras() if cams == "cube" else cams
    views = panorama_views(1, H, s, cameras)
    img = np.random.default_rng(2).normal(size=(H, 2 * H))
    y = views.forward(torch.from_numpy(img[None])).numpy()
    for i, cam in enumerate(views.cameras):
        ref = [[ref_bilinear(img, ref_direction(*cam, s, r, c)) for c in range(s)] for r in range(s)]
        np.testing.assert_allclose(y[i, 0], ref, atol=1e-10)


def test_panorama_geometry():
    views = panorama_views(1, 16, 8)
    assert views.canvas_shape == (1, 16, 32)  # equirectangular 2:1
    assert len(default_cameras()) == 10 and len(cube_cameras()) == 6
    # a canvas equal to sin(latitude) is seen by the up view as bright, the down view as dark
    lat = (0.5 - (np.arange(16) + 0.5) / 16) * np.pi
    canvas = torch.from_numpy(np.repeat(np.sin(lat)[:, None], 32, 1)[None])
    y = views.forward(canvas)
    # fov 90 up/down views reach latitude +-asin(1/sqrt 3) = 35.3 degrees at their corners (sin 0.577)
    assert float(y[8].min()) > 0.55 and float(y[9].max()) < -0.55
    assert abs(float(y[0].mean())) < 0.05  # a horizontal view is centred on the horizon
    rows = views.to_dense(3).sum(1)
    np.testing.assert_allclose(rows, 1.0, atol=1e-12)  # bilinear rows interpolate


def test_fill_uncovered_copies_the_nearest_covered_pixel():
    views = panorama_views(1, 16, 8)
    cov = views.coverage()[0]
    assert (cov == 0).any()
    canvas = torch.randn(2, 1, 16, 32, dtype=torch.float64)
    out = fill_uncovered(canvas, views)
    covered = cov > 0
    assert torch.equal(out[..., covered], canvas[..., covered])
    pos = np.argwhere(covered.numpy())
    for r, c in np.argwhere(~covered.numpy())[:20]:
        d2 = ((pos - (r, c)) ** 2).sum(1)
        nearest = pos[d2 == d2.min()]
        assert any(torch.equal(out[..., r, c], canvas[..., a, b]) for a, b in nearest)


def test_covered_earlier_views_formula_on_bilinear_maps():
    views = panorama_views(1, 6, 4)
    n = views.num_views
    A = dense_maps(views)
    y = torch.randn(n, 1, 4, 4, dtype=torch.float64)
    corr = CoveredEarlierViews()
    m = corr.masks(views, y).numpy()
    ref = corr.references(y, views).numpy()
    Z = np.zeros(72)
    cover = np.zeros(72)
    for i in range(1, n):
        a = A[i - 1].sum(0)
        Z = np.where(a > 0, (y[i - 1, 0].numpy().reshape(-1) @ A[i - 1]) / np.where(a > 0, a, 1), Z)
        cover = np.where(a > 0, 1.0, cover)
        np.testing.assert_allclose(m[i, 0].reshape(-1), A[i] @ cover, atol=1e-12)
        # the pull M_i (y_i - Xtilde_i) = M_i y_i - A_i Z
        pull = m[i, 0].reshape(-1) * (y[i, 0].numpy().reshape(-1) - ref[i, 0].reshape(-1))
        np.testing.assert_allclose(pull, m[i, 0].reshape(-1) * y[i, 0].numpy().reshape(-1) - A[i] @ Z,
                                   atol=1e-10)
    assert np.all(m[0] == 0)


def test_panorama_output_is_filled_and_its_longitude_wraps():
    prob = panorama_problem(1, 8, 6, cond="f")
    yy = torch.linspace(-1, 1, 6)[:, None].expand(6, 6)
    den = PriorDenoiser({"f": GaussianPrior.field("se", (6, 6), lengthscale=1.5, mean=0.5 * yy)}, SCHED.abar)
    r = sample(prob, den, "syncsde", SCHED, batch=300, progress=False)
    out = fill_uncovered(r.canvas, prob.views)
    assert out.shape == (300, 1, 8, 16)
    ext = torch.cat([out, out[..., :1]], -1).double()
    from syncsde.metrics import seam_statistic
    assert seam_statistic(ext, [16]) < 1.5   # the 180-degree meridian is not a seam


# ---- hybrid ---------------------------------------------------------------------------------
def test_hybrid_views_match_numpy_reference():
    views = hybrid_views(2, 4, 2, 2)
    X = np.random.default_rng(3).normal(size=(2, 8, 8))
    y = views.forward(torch.from_numpy(X)).numpy()
    np.testing.assert_allclose(y[0], X.reshape(2, 4, 2, 4, 2).mean(axis=(2, 4)), atol=1e-12)
    offs = [0, 2, 4]
    k = 1
    for t in offs:
        for left in offs:
            np.testing.assert_array_equal(y[k], X[:, t:t + 4, left:left + 4])
            k += 1
    assert views.num_views == 10
    np.testing.assert_allclose(far_reading(torch.from_numpy(X), 2).numpy(), y[0], atol=1e-12)
    with pytest.raises(ValueError, match="multiples"):
        hybrid_views(1, 5, 2)


def test_block_mean_reference():
    x = torch.randn(3, 4, 6, dtype=torch.float64)
    b = block_mean(x, 2)
    for i in range(0, 4, 2):
        for j in range(0, 6, 2):
            blk = x[:, i:i + 2, j:j + 2]
            torch.testing.assert_close(b[:, i:i + 2, j:j + 2], blk.mean((1, 2), keepdim=True).expand_as(blk))


def test_scale_correlation_formula():
    views = hybrid_views(1, 4, 2, 2)
    n = views.num_views
    y = torch.randn(n, 2, 1, 4, 4, dtype=torch.float64)
    corr = ScaleCorrelation(2)
    m = corr.masks(views, y[:, 0])
    assert torch.equal(m[0], torch.zeros_like(m[0])) and torch.equal(m[1:], torch.ones_like(m[1:]))
    ref = corr.references(y, views)
    up = np.kron(y[0, :, 0].numpy(), np.ones((2, 2)))          # far view upsampled (nearest)
    offs = [(t, left) for t in (0, 2, 4) for left in (0, 2, 4)]
    covered = np.zeros((8, 8), bool)
    canvas = np.zeros((2, 8, 8))
    for i in range(1, n):
        t, left = offs[i - 1]
        yi = y[i, :, 0].numpy()
        bm = yi.reshape(2, 2, 2, 2, 2).mean(axis=(2, 4))
        low = yi - np.kron(bm, np.ones((2, 2))) + up[:, t:t + 4, left:left + 4]
        cov = covered[t:t + 4, left:left + 4]
        expect = np.where(cov, canvas[:, t:t + 4, left:left + 4], low)
        np.testing.assert_allclose(ref[i, :, 0].numpy(), expect, atol=1e-12)
        canvas[:, t:t + 4, left:left + 4] = yi
        covered[t:t + 4, left:left + 4] = True


def test_hybrid_far_reading_follows_the_far_prompt_under_syncsde():
    xx = torch.linspace(-1, 1, 8)[None, :].expand(8, 8)
    den = PriorDenoiser({"A": GaussianPrior.field("se", (8, 8), lengthscale=2.0, mean=1.5 * xx),
                         "B": GaussianPrior.field("se", (8, 8), lengthscale=1.0)}, SCHED.abar)
    prob = hybrid_problem(1, 8, "A", "B", 2, 4)

    def slope(strategy):
        out = sample(prob, den, strategy, SCHED, batch=200, progress=False).output
        far = far_reading(out, 2).mean(0)[0]
        return float((far * xx).mean() / (xx * xx).mean() / 1.5)  # 1 = the far prompt's mean

    coupled, uncoupled = slope("syncsde"), slope("independent")
    assert coupled > 0.45
    assert uncoupled < coupled - 0.15   # uncoupled windows ignore the far prompt


# ---- one-call functions and the CLI on a tiny random-weight model -------------------------------
@pytest.fixture(scope="module")
def tiny_sd(tmp_path_factory):
    pytest.importorskip("diffusers")
    import tiny_models as tm

    return tm.sd_pipeline(tmp_path_factory.mktemp("sd"))


def test_one_call_functions_on_a_tiny_model(tiny_sd):
    from syncsde.tasks import hybrid_image, panorama_image, tileable_image

    r = tileable_image(tiny_sd, "a cat", 48, 48, window=32, stride=16, num_inference_steps=2,
                       progress=False)
    assert r.tensors.shape == (1, 3, 48, 48) and r.result.views.shape[0] == 9
    assert torch.equal(r.extras["tiled"], r.tensors.tile(1, 1, 3, 3))
    r = panorama_image(tiny_sd, "a cat", 32, view_size=16, num_inference_steps=2, progress=False,
                       cube=True)
    assert r.tensors.shape == (1, 3, 32, 64) and r.result.views.shape[0] == 6
    r = hybrid_image(tiny_sd, "a cat", "a dog", num_inference_steps=2, progress=False)
    assert r.tensors.shape == (1, 3, 64, 64) and r.extras["far"].shape == (1, 3, 32, 32)


def _parser():
    import argparse

    from syncsde.tasks.cli_new import add_new_task_commands

    ap = argparse.ArgumentParser()
    add_new_task_commands(ap.add_subparsers(dest="command", required=True))
    return ap


def test_cli_subcommands_write_files(tiny_sd, tmp_path, monkeypatch):
    import syncsde.models

    monkeypatch.setattr(syncsde.models, "load_pipeline", lambda *a, **k: tiny_sd)
    ap = _parser()
    for argv in (["tileable", "--prompt", "a cat", "--height", "32", "--width", "32", "--stride", "16"],
                 ["panorama360", "--prompt", "a cat", "--height", "32", "--cube"],
                 ["hybrid", "--far", "a cat", "--near", "a dog"]):
        args = ap.parse_args(argv + ["--steps", "1", "--no-progress", "--device", "cpu",
                                     "--out", str(tmp_path)])
        files = args.func(args)
        assert files and all((tmp_path / f).exists() or __import__("os").path.exists(f) for f in files)
    names = sorted(p.name for p in tmp_path.iterdir())
    assert "tileable_multidiffusion_seed0_tiled3x3.png" in names and "hybrid_syncsde_seed0_far.png" in names
    from PIL import Image
    assert Image.open(tmp_path / "panorama360_multidiffusion_seed0.png").size == (64, 32)


def test_cli_bench_new_and_bad_arguments(capsys, tmp_path):
    ap = _parser()
    args = ap.parse_args(["bench-new", "--samples", "20", "--steps", "1", "--cases", "tileable",
                          "--json", str(tmp_path / "b.json")])
    args.func(args)
    out = capsys.readouterr().out
    assert "| oracle |" in out and (tmp_path / "b.json").exists()
    with pytest.raises(SystemExit):
        ap.parse_args(["tileable"])            # --prompt is required
    with pytest.raises(SystemExit):
        ap.parse_args(["hybrid", "--far", "a", "--near", "b", "--factor", "0"])


def test_least_squares_average_matches_numpy_lstsq():
    rng = np.random.default_rng(5)
    H, W, h, w = 3, 4, 2, 3
    P = H * W
    maps, dense = [], []
    for i in range(3):  # random interpolating maps plus a gather of the whole canvas: full rank
        rows = np.repeat(np.arange(h * w), 3)
        cols = rng.integers(0, P, rows.size)
        vals = rng.uniform(0.1, 1, rows.size)
        maps.append((rows, cols, vals))
    maps.append((np.arange(h * w), np.arange(h * w) * 2, np.ones(h * w)))  # every other pixel
    maps.append((np.arange(h * w), np.arange(h * w) * 2 + 1, np.ones(h * w)))
    views = SparseViews((2, H, W), (h, w), maps, average_iters=P)  # CG is exact in <= P steps
    dense = dense_maps(views)
    y = torch.from_numpy(rng.normal(size=(len(maps), 2, h, w)))
    wts = torch.from_numpy(rng.uniform(0.5, 2, size=(len(maps), 1, 1, 1)))
    got = views.average(y, wts).numpy()
    A = np.concatenate([np.sqrt(float(wts[i])) * dense[i] for i in range(len(maps))])
    for ch in range(2):
        b = np.concatenate([np.sqrt(float(wts[i])) * y[i, ch].numpy().reshape(-1) for i in range(len(maps))])
        ref = np.linalg.lstsq(A, b, rcond=None)[0]
        np.testing.assert_allclose(got[ch].reshape(-1), ref, atol=1e-8)
    # with no iterations it is the normalised adjoint
    views.average_iters = 0
    num = sum(float(wts[i]) * (y[i].numpy().reshape(2, -1) @ dense[i]) for i in range(len(maps)))
    den = sum(float(wts[i]) * dense[i].sum(0) for i in range(len(maps)))
    np.testing.assert_allclose(views.average(y, wts).numpy().reshape(2, -1), num / den, atol=1e-12)


def test_ridge_average_matches_numpy_solve():
    rng = np.random.default_rng(6)
    H, W, h, w = 3, 3, 2, 2
    maps = [(np.repeat(np.arange(h * w), 2), rng.integers(0, H * W, 2 * h * w),
             rng.uniform(0.2, 1, 2 * h * w)) for _ in range(4)]
    views = SparseViews((1, H, W), (h, w), maps, average_iters=H * W, average_ridge=0.3)
    A = dense_maps(views)
    y = torch.from_numpy(rng.normal(size=(4, 1, h, w)))
    got = views.average(y).numpy().reshape(-1)
    views.average_iters = 0
    x0 = views.average(y).numpy().reshape(-1)
    cov = sum(a.sum(0) for a in A)
    cv = cov > 0
    M = sum(a.T @ a for a in A) + 0.3 * np.diag(cov)
    b = sum(a.T @ y[i, 0].numpy().reshape(-1) for i, a in enumerate(A)) + 0.3 * cov * x0
    ref = x0.copy()
    ref[cv] = np.linalg.solve(M[np.ix_(cv, cv)], b[cv])
    np.testing.assert_allclose(got, ref, atol=1e-8)


def test_tileable_and_panorama360_decode_with_wrap_padding_on_a_latent_model(tmp_path):
    """On a VAE model the periodic canvas is decoded with its wrap: the image equals a decode of
    the latents padded circularly by 8 latent pixels (along both axes for tileable, along the
    width for the 360-degree panorama) with the padding's pixels cut (built here with
    torch.cat); a plain decode differs."""
    pytest.importorskip("diffusers")
    from tiny_models import sd_pipeline

    from syncsde.models import denoiser_from_pipeline
    from syncsde.tasks import panorama_image, tileable_image

    torch.set_num_threads(1)
    den = denoiser_from_pipeline(sd_pipeline(tmp_path))
    f = den.vae_scale_factor

    def padded_decode(z, rows: bool):
        p = 8
        zz = torch.cat([z[..., -p:], z, z[..., :p]], dim=-1)
        if rows:
            zz = torch.cat([zz[..., -p:, :], zz, zz[..., :p, :]], dim=-2)
        img = den.decode(zz)
        c = p * f
        img = img[..., c:img.shape[-1] - c]
        return img[..., c:img.shape[-2] - c, :] if rows else img

    r = tileable_image(den, "a", height=32 * f // 2, width=32 * f // 2, num_inference_steps=2,
                       guidance_scale=1.0, progress=False)
    z = r.latents[None] if r.latents.dim() == 3 else r.latents
    assert torch.allclose(r.tensors, padded_decode(z, True), atol=1e-5)
    assert not torch.allclose(r.tensors, den.decode(z), atol=1e-3)
    p = panorama_image(den, "a", height=16 * f // 2, num_inference_steps=2, guidance_scale=1.0,
                       progress=False)
    z = p.latents[None] if p.latents.dim() == 3 else p.latents
    assert torch.allclose(p.tensors, padded_decode(z, False), atol=1e-5)
