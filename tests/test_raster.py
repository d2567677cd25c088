"""The C rasterizer against a slow NumPy reference (same coverage rule, written per face) and
against analytic cases (cube, sphere, a textured quad, an edge-on triangle)."""
import math

import numpy as np
import pytest

from syncsde import _C, ops
from syncsde.mesh import Camera, depth_image, mesh_from_arrays, rasterize_uv, rasterize_view


def reference_rasterize(corners, H, W, perspective, near=1e-6):
    """Per face, per pixel centre: the rule of ssde/raster.h, in float64 NumPy."""
    face = np.full((H, W), -1, np.int64)
    zbuf = np.full((H, W), np.inf)
    bary = np.zeros((H, W, 3))
    py, px = np.meshgrid(np.arange(H) + 0.5, np.arange(W) + 0.5, indexing="ij")

    def edge(ux, uy, vx, vy, qx, qy):
        return (vx - ux) * (qy - uy) - (vy - uy) * (qx - ux)

    for f, c in enumerate(np.asarray(corners, np.float64)):
        if not np.isfinite(c).all() or (perspective and (c[:, 2] <= near).any()):
            continue
        (ax, ay, az), (bx, by, bz), (cx, cy, cz) = c
        A = edge(ax, ay, bx, by, cx, cy)
        if not abs(A) > 0:
            continue
        s = 1.0 if A > 0 else -1.0
        e0 = edge(bx, by, cx, cy, px, py) * s
        e1 = edge(cx, cy, ax, ay, px, py) * s
        e2 = edge(ax, ay, bx, by, px, py) * s
        inside = (e0 >= 0) & (e1 >= 0) & (e2 >= 0)
        b0, b1, b2 = e0 / abs(A), e1 / abs(A), e2 / abs(A)
        if perspective:
            q0, q1, q2 = b0 / az, b1 / bz, b2 / cz
            z = 1.0 / (q0 + q1 + q2)
            b0, b1, b2 = q0 * z, q1 * z, q2 * z
        else:
            z = b0 * az + b1 * bz + b2 * cz
        win = inside & (z < zbuf)
        face[win] = f
        zbuf[win] = z[win]
        bary[win] = np.stack([b0, b1, b2], -1)[win]
    depth = np.where(face >= 0, zbuf, 0.0)
    return face, bary, depth


def random_corners(rng, n, H, W, perspective):
    c = np.empty((n, 3, 3))
    c[..., 0] = rng.uniform(-0.3 * W, 1.3 * W, (n, 3))
    c[..., 1] = rng.uniform(-0.3 * H, 1.3 * H, (n, 3))
    # smaller triangles mostly: shrink towards a random centre
    centre = c[:, :1, :2]
    c[..., :2] = centre + (c[..., :2] - centre) * rng.uniform(0.05, 1.0, (n, 1, 1))
    c[..., 2] = rng.uniform(0.5, 5.0, (n, 3)) if perspective else rng.uniform(-2, 2, (n, 3))
    return c


@pytest.mark.parametrize("perspective", [False, True])
@pytest.mark.parametrize("seed", range(6))
def test_matches_reference_on_random_triangles(perspective, seed):
    rng = np.random.default_rng(seed)
    H, W = int(rng.integers(1, 70)), int(rng.integers(1, 70))
    n = int(rng.integers(0, 40))
    c = random_corners(rng, n, H, W, perspective)
    if n > 3 and perspective:
        c[0, 1, 2] = 1e-9  # behind the near plane: skipped
        c[1, 2, 1] = np.nan  # non-finite: skipped
    f, b, d = ops.rasterize(c, H, W, perspective)
    rf, rb, rd = reference_rasterize(c, H, W, perspective)
    np.testing.assert_array_equal(f, rf)
    np.testing.assert_allclose(b, rb, atol=2e-6)
    np.testing.assert_allclose(d, rd, rtol=1e-6, atol=1e-6)


def test_integer_grid_shared_edges_and_ties():
    """A quad split on its diagonal (pixel centres on the shared edge belong to both; equal
    depth: the lower face id wins), drawn with both windings."""
    c = np.array([[[0, 0, 1], [8, 0, 1], [0, 8, 1]], [[8, 8, 1], [0, 8, 1], [8, 0, 1]]], float)
    c[:, :, :2] += 0.5  # corners on pixel centres
    for cc in (c, c[:, ::-1]):
        f, _, _ = ops.rasterize(cc, 10, 10)
        rf, _, _ = reference_rasterize(cc, 10, 10, False)
        np.testing.assert_array_equal(f, rf)
        assert f[0, 8] == 0 and f[8, 0] == 0  # diagonal: tie on depth, face 0 wins
        assert (f[:9, :9] >= 0).all() and (f[9] == -1).all()


def test_thread_count_does_not_change_results():
    rng = np.random.default_rng(7)
    c = random_corners(rng, 300, 200, 170, True)
    n0 = ops.get_num_threads()
    try:
        ops.set_num_threads(1)
        a = ops.rasterize(c, 200, 170, True)
        ops.set_num_threads(2)
        b = ops.rasterize(c, 200, 170, True)
    finally:
        ops.set_num_threads(n0)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)


def test_empty_inputs():
    f, b, d = ops.rasterize(np.zeros((0, 3, 3)), 5, 4)
    assert (f == -1).all() and (b == 0).all() and (d == 0).all()
    f, b, d = ops.rasterize(np.zeros((2, 3, 3)), 0, 4)
    assert f.shape == (0, 4)


def test_bad_arguments_named():
    with pytest.raises(ValueError, match="corners"):
        ops.rasterize(np.zeros((2, 3)), 4, 4)
    with pytest.raises(ValueError, match="height"):
        ops.rasterize(np.zeros((1, 3, 3)), -1, 4)
    with pytest.raises(TypeError, match="corners"):
        _C.rasterize(np.empty((4, 4), np.int64), np.empty((4, 4, 3), np.float32),
                     np.empty((4, 4), np.float32), np.zeros((1, 3, 3), np.float32), False, 0.0)
    with pytest.raises(ValueError, match="contiguous"):
        _C.rasterize(np.empty((4, 8), np.int64)[:, ::2], np.empty((4, 4, 3), np.float32),
                     np.empty((4, 4), np.float32), np.zeros((1, 3, 3)), False, 0.0)
    with pytest.raises(ValueError, match="bary"):
        _C.rasterize(np.empty((4, 4), np.int64), np.empty((4, 5, 3), np.float32),
                     np.empty((4, 4), np.float32), np.zeros((1, 3, 3)), False, 0.0)


# ---- analytic cases ------------------------------------------------------------------------
def cube(half=0.5):
    import trimesh

    b = trimesh.creation.box(extents=(2 * half,) * 3)
    return mesh_from_arrays(b.vertices, b.faces, normalize=False, atlas="per_triangle")


def test_cube_front_orthographic():
    m = cube(0.5)
    N = 40
    r = rasterize_view(m, Camera(0, 0, distance=3.0, perspective=False, scale=1.0), N, N)
    centres = (np.arange(N) + 0.5) / N * 2 - 1  # NDC of pixel centres
    inside = (np.abs(centres)[:, None] <= 0.5) & (np.abs(centres)[None, :] <= 0.5)
    np.testing.assert_array_equal(r.mask, inside)
    np.testing.assert_allclose(r.depth[inside], 2.5, rtol=1e-6)
    np.testing.assert_allclose(r.cos[inside], 1.0, atol=1e-12)
    normals = m.face_normals()[r.face[inside]]
    np.testing.assert_allclose(normals, np.tile([0, 0, 1.0], (inside.sum(), 1)), atol=1e-12)


def test_cube_corner_view_sees_three_faces():
    m = cube(0.5)
    r = rasterize_view(m, Camera(45, 35.264389682754654, 4.0, perspective=False), 64, 64)
    normals = m.face_normals()[r.face[r.mask]]
    seen = {tuple(np.round(n).astype(int)) for n in normals}
    assert seen == {(1, 0, 0), (0, 1, 0), (0, 0, 1)}
    # the view direction is the diagonal: every visible face has cos 1/sqrt(3)
    np.testing.assert_allclose(r.cos[r.mask], 1 / math.sqrt(3), atol=1e-9)


def test_sphere_perspective_silhouette_and_depth():
    import trimesh

    s = trimesh.creation.icosphere(5)
    m = mesh_from_arrays(s.vertices, s.faces, normalize=False, atlas="per_triangle")
    d, fov, N = 2.0, 60.0, 128
    r = rasterize_view(m, Camera(0, 0, d, True, fov), N, N)
    radius = math.tan(math.asin(1 / d)) / math.tan(math.radians(fov) / 2)  # NDC
    expected = math.pi * radius ** 2 / 4 * N * N
    assert abs(r.mask.sum() - expected) / expected < 0.01
    c = N // 2
    assert abs(float(r.depth[c, c]) - (d - 1)) < 2e-3
    # perspective-correct barycentrics: the interpolated point projects to the pixel centre
    pix = Camera(0, 0, d, True, fov).to_pixels(r.points[r.mask], N, N)
    ii, jj = np.nonzero(r.mask)
    np.testing.assert_allclose(pix[:, 0], jj + 0.5, atol=1e-4)
    np.testing.assert_allclose(pix[:, 1], ii + 0.5, atol=1e-4)
    np.testing.assert_allclose(np.linalg.norm(r.points[r.mask], axis=1), 1.0, atol=2e-3)


def test_textured_quad_uvs():
    v = np.array([[-1, -1, 0], [1, -1, 0], [1, 1, 0], [-1, 1, 0]], float)
    f = np.array([[0, 1, 2], [0, 2, 3]])
    uv = np.array([[0, 0], [1, 0], [1, 1], [0, 1]], float)
    m = mesh_from_arrays(v, f, uv, normalize=False)
    N = 16
    r = rasterize_view(m, Camera(0, 0, 2.0, perspective=False, scale=1.0), N, N)
    assert r.mask.all()
    centres = (np.arange(N) + 0.5) / N
    np.testing.assert_allclose(r.uv[..., 0], np.tile(centres, (N, 1)), atol=1e-6)
    np.testing.assert_allclose(r.uv[..., 1], np.tile(centres[::-1, None], (1, N)), atol=1e-6)
    # UV space: texel (r, c) of the quad's own atlas lies in face 0 below the diagonal
    tf, _ = rasterize_uv(m, 8)
    assert (tf >= 0).all()
    rr, cc = np.meshgrid(np.arange(8), np.arange(8), indexing="ij")
    u, vv = (cc + 0.5) / 8, 1 - (rr + 0.5) / 8
    np.testing.assert_array_equal(tf, np.where(vv <= u, 0, 1))


def test_edge_on_triangle_covers_nothing():
    v = np.array([[0.3, -0.5, -0.5], [0.3, 0.5, -0.5], [0.3, 0.0, 0.5]])
    m = mesh_from_arrays(v, np.array([[0, 1, 2]]), normalize=False, atlas="per_triangle")
    r = rasterize_view(m, Camera(0, 0, 3.0, perspective=False), 32, 32)
    assert not r.mask.any()
    r = rasterize_view(m, Camera(90, 0, 3.0, perspective=False), 32, 32)  # seen face-on
    assert r.mask.sum() > 50


def test_depth_image_convention():
    import trimesh

    s = trimesh.creation.icosphere(3)
    m = mesh_from_arrays(s.vertices, s.faces, normalize=False, atlas="per_triangle")
    r = rasterize_view(m, Camera(0, 0, 2.0), 64, 64)
    d = depth_image(r)
    assert (d[~r.mask] == 0).all()
    assert d[r.mask].min() >= 0.1 - 1e-12 and abs(d[r.mask].max() - 1) < 1e-12
    # nearer is brighter: the centre is nearest
    assert d[32, 32] == d[r.mask].max() or d[32, 32] > 0.99
    inv = 1 / r.depth[r.mask].astype(np.float64)
    np.testing.assert_allclose(d[r.mask], 0.1 + 0.9 * (inv - inv.min()) / np.ptp(inv))


@pytest.mark.parametrize("seed", range(4))
def test_random_cameras_on_a_mesh_match_the_reference(seed):
    import trimesh

    rng = np.random.default_rng(50 + seed)
    s = trimesh.creation.icosphere(2)
    s.vertices *= rng.uniform(0.5, 1.5, 3)  # an ellipsoid: occlusion matters
    m = mesh_from_arrays(s.vertices, s.faces, atlas="per_triangle")
    cam = Camera(rng.uniform(0, 360), rng.uniform(-80, 80), rng.uniform(1.5, 4.0),
                 perspective=bool(seed % 2), fov=rng.uniform(30, 90), scale=rng.uniform(0.8, 1.5))
    H, W = int(rng.integers(8, 60)), int(rng.integers(8, 60))
    r = rasterize_view(m, cam, H, W)
    rf, rb, rd = reference_rasterize(cam.to_pixels(m.vertices[m.faces], H, W), H, W,
                                     cam.perspective)
    np.testing.assert_array_equal(r.face, rf)
    np.testing.assert_allclose(r.depth, rd, rtol=1e-6, atol=1e-6)
    # visible faces face the camera: the surface normal points towards the eye
    fg = r.mask
    to_eye = cam.eye() - r.points[fg] if cam.perspective else np.broadcast_to(-cam.axes()[2], (fg.sum(), 3))
    n = m.face_normals()[r.face[fg]]
    assert ((n * to_eye).sum(1) > -1e-9).all()
