"""Texture projections: render against an independent sampler (scipy), the adjoint identity,
bake = normalised weighted adjoint of render, render(bake(views)) = views, the fill rule, the
SyncSDE earlier-views correlation, and every strategy running on the texture view set."""
import numpy as np
import pytest
import torch

trimesh = pytest.importorskip("trimesh")
ndimage = pytest.importorskip("scipy.ndimage")

from syncsde.mesh import (Camera, TextureEarlierViews, TextureViews, bake_texture,  # noqa: E402
                          default_cameras, mesh_from_arrays)


@pytest.fixture(scope="module")
def sphere():
    s = trimesh.creation.icosphere(2)
    return mesh_from_arrays(s.vertices, s.faces)


def cams(n=5):
    return [Camera(a, e, 2.2) for a, e in [(0, 0), (72, 10), (144, -10), (216, 20), (288, 0)][:n]]


@pytest.mark.parametrize("sampling", ["nearest", "bilinear"])
def test_render_matches_an_independent_sampler(sphere, sampling):
    T = 24
    V = TextureViews(sphere, cams(3), 20, T, channels=2, sampling=sampling)
    tex = torch.randn(2, T, T, dtype=torch.float64)
    canvas = torch.zeros(2, 1, V.L, dtype=torch.float64)
    canvas[:, 0, :T * T] = tex.reshape(2, -1)
    bg = torch.randn(2, V.L - T * T, dtype=torch.float64)
    canvas[:, 0, T * T:] = bg
    y = V.forward(canvas)
    for i, r in enumerate(V.rasters):
        fg = r.mask
        # texel coordinates of the pixel UVs; texel centres at integer + 0.5
        rows = (1 - r.uv[fg][:, 1]) * T - 0.5
        cols = r.uv[fg][:, 0] * T - 0.5
        for ch in range(2):
            if sampling == "nearest":
                want = tex[ch].numpy()[np.clip(np.floor(rows + 0.5), 0, T - 1).astype(int),
                                       np.clip(np.floor(cols + 0.5), 0, T - 1).astype(int)]
            else:
                want = ndimage.map_coordinates(tex[ch].numpy(), [rows, cols], order=1,
                                               mode="nearest")
            np.testing.assert_allclose(y[i, ch].numpy()[fg], want, atol=1e-12)
            start = i * V.P
            np.testing.assert_array_equal(y[i, ch].numpy()[~fg],
                                          bg[ch, start:start + V.P].numpy().reshape(20, 20)[~fg])


def test_adjoint_identity(sphere):
    V = TextureViews(sphere, cams(), 16, 20, channels=3, sampling="bilinear")
    g = torch.Generator().manual_seed(0)
    x = torch.randn(3, 1, V.L, generator=g, dtype=torch.float64)
    y = torch.randn(V.num_views, 3, 16, 16, generator=g, dtype=torch.float64)
    w = torch.rand(V.num_views, 1, 16, 16, generator=g, dtype=torch.float64)
    lhs = (V.forward(x) * w * y).sum()
    rhs = (x * V.adjoint(y, w)).sum()
    assert abs(float(lhs - rhs)) < 1e-9 * float(lhs.abs() + 1)
    cov = V.coverage(w, dtype=torch.float64)
    np.testing.assert_allclose(cov[0, 0], V.adjoint(torch.ones_like(y), w)[0, 0], atol=1e-12)


def dense_render(V, i):
    """R_i by rendering every basis canvas (columns)."""
    eye = torch.eye(V.L, dtype=torch.float64).reshape(V.L, 1, V.L)
    return V.forward_one(i, eye).reshape(V.L, -1).T.numpy()  # [P, L]


@pytest.mark.parametrize("k", [0.0, 6.0])
def test_bake_is_the_normalised_weighted_adjoint(sphere, k):
    V = TextureViews(sphere, cams(4), 12, 16, channels=1, cos_power=k, fill=False)
    g = torch.Generator().manual_seed(1)
    y = torch.randn(V.num_views, 1, 12, 12, generator=g, dtype=torch.float64)
    num, den = np.zeros(V.L), np.zeros(V.L)
    for i, r in enumerate(V.rasters):
        R = dense_render(V, i)
        w = np.where(r.mask, r.cos ** k, 1.0).reshape(-1)
        num += R.T @ (w * y[i, 0].numpy().reshape(-1))
        den += R.T @ w
    want = np.where(den > 0, num / np.where(den > 0, den, 1), 0.0)
    got = V.average(y)[0, 0].numpy()
    np.testing.assert_allclose(got, want, atol=1e-12)


@pytest.mark.parametrize("fill", [False, True])
def test_render_of_bake_reproduces_consistent_views(sphere, fill):
    V = TextureViews(sphere, default_cameras(), 24, 32, channels=4, cos_power=2.0, fill=fill)
    x = torch.randn(4, 1, V.L, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    y = V.forward(x)
    np.testing.assert_allclose(V.forward(V.average(y)), y, atol=1e-12)
    # batch dims pass through
    xb = torch.stack([x, 2 * x])
    np.testing.assert_allclose(V.forward(V.average(V.forward(xb)))[:, 1], 2 * y, atol=1e-12)


def test_fill_copies_the_nearest_hit_texel_of_the_island(sphere):
    T = 48
    V = TextureViews(sphere, cams(2), 16, T, channels=1, fill=True)
    src = V.fill_index([0, 1]).numpy()[:T * T]
    hit = np.zeros(T * T, bool)
    for i in (0, 1):
        hit |= V.bake_weight[i].numpy()[:T * T] > 0
    seen = V.seen[0] | V.seen[1]
    isl = V.texel_island
    assert (src[hit] == np.nonzero(hit)[0]).all()  # hit texels keep their own value
    rr, cc = np.divmod(np.arange(T * T), T)
    filled = np.nonzero(src[:T * T] >= 0)[0]
    assert len(filled) > hit.sum()  # the fill did something
    for t in filled:
        if hit[t]:
            continue
        assert seen[t]
        cand = np.nonzero(hit & (isl == isl[t]))[0]
        d2 = (rr[cand] - rr[t]) ** 2 + (cc[cand] - cc[t]) ** 2
        s = src[t]
        assert isl[s] == isl[t] and (rr[s] - rr[t]) ** 2 + (cc[s] - cc[t]) ** 2 == d2.min()
    # texels no view sees stay unreached
    assert (src[~seen & ~hit] == -1).all()


def test_earlier_views_masks_and_references(sphere):
    V = TextureViews(sphere, default_cameras(), 16, 24, channels=2, fill=False)
    corr = TextureEarlierViews()
    x = torch.randn(2, 1, V.L, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    y = V.forward(x)
    M = corr.masks(V, y)
    hit_before = np.zeros(V.L, bool)
    for i in range(V.num_views):
        R = dense_render(V, i)
        want = (R[:, hit_before].sum(1) > 0).reshape(16, 16)
        np.testing.assert_array_equal(M[i, 0].numpy() > 0, want)
        hit_before |= V.bake_weight[i].numpy() > 0
        hit_before[V.T * V.T:] = False  # backgrounds belong to their own view
    assert M[0].sum() == 0 and M[1:].sum() > 0
    ref = corr.references(y, V)
    np.testing.assert_allclose(ref * M, y * M, atol=1e-12)  # consistent views: ref = y there
    # inconsistent views: the reference is the bake of the earlier views, rendered
    y2 = y + torch.randn(y.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    ref2 = corr.references(y2, V)
    for i in (1, 4, 9):
        baked, _ = V.bake_views(y2, range(i))
        baked[..., V.T * V.T:] = 0
        want = V.forward_one(i, baked.reshape(2, 1, V.L))
        np.testing.assert_allclose((ref2[i] * M[i]).numpy(), (want * M[i]).numpy(), atol=1e-12)


def test_bake_texture_fills_every_island_texel(sphere):
    V = TextureViews(sphere, default_cameras(), 24, 32, channels=3, cos_power=6.0)
    imgs = torch.rand(V.num_views, 3, 24, 24, dtype=torch.float64)
    tex = bake_texture(V, imgs)
    assert tex.shape == (3, 32, 32)
    inside = V.texel_face >= 0
    assert torch.isfinite(tex).all()
    # every texel (islands and gutters) holds a value baked from some view: within [0, 1]
    assert float(tex.min()) >= 0 and float(tex.max()) <= 1
    assert (tex[:, torch.from_numpy(inside)] != 0).all()


def test_every_strategy_runs_on_texture_views(sphere):
    from syncsde.sampler import Problem, sample

    V = TextureViews(sphere, default_cameras(), 8, 16, channels=4)

    def den(x, t, cond):  # a smooth toy model: eps proportional to x
        return 0.5 * x

    for name, opts in [("independent", {}), ("syncsde", {"inv_lambda": 5.0}),
                       ("multidiffusion", {}), ("synctweedies", {})]:
        p = Problem(V, [None] * V.num_views, correlation=TextureEarlierViews(),
                    init="independent")
        r = sample(p, den, name, "sd", num_steps=4, progress=False, batch=2, **opts)
        assert r.views.shape == (10, 2, 4, 8, 8) and torch.isfinite(r.views).all()
        if name in ("multidiffusion", "synctweedies"):  # canvas strategies: consistent views
            np.testing.assert_allclose(V.forward(V.average(r.views)), r.views, atol=1e-5)
