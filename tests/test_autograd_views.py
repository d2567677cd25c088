"""Differentiable view maps (syncsde.autograd): gradcheck in float64 for every C view map, and
gradients equal to those of a pure-torch reference of the same map (slicing, rot90/flip, roll,
fancy indexing, a dense matrix)."""
import numpy as np
import pytest
import torch
from torch.autograd import gradcheck

from syncsde import autograd as ag
from syncsde import ops
from syncsde.views import PixelMapViews, WindowViews

DT = torch.float64


def rnd(*shape, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g, dtype=DT, requires_grad=True)


def ref_crop(canvas, offsets, size, circular):
    h, w = size
    W = canvas.shape[-1]
    out = []
    for t, l in offsets:
        cols = torch.tensor([(l + j) % W for j in range(w)]) if circular else torch.arange(l, l + w)
        out.append(canvas[..., t:t + h, :][..., cols])
    return torch.stack(out)


def grads_match(f_ours, f_ref, x, seed=1):
    g = torch.randn(f_ref(x).shape, generator=torch.Generator().manual_seed(seed), dtype=DT)
    (a,) = torch.autograd.grad((f_ours(x) * g).sum(), x)
    (b,) = torch.autograd.grad((f_ref(x) * g).sum(), x)
    torch.testing.assert_close(a, b, rtol=0, atol=1e-12)


@pytest.mark.parametrize("circular", [False, True])
def test_crop_windows_gradcheck_and_reference(circular):
    offs = [(0, 0), (1, 3), (2, 4)] if not circular else [(0, 6), (1, -2), (2, 9)]
    x = rnd(2, 5, 8)
    f = lambda c: ag.crop_windows(c, offs, (3, 4), circular=circular)
    assert gradcheck(f, (x,))
    torch.testing.assert_close(f(x), ref_crop(x, offs, (3, 4), circular))
    grads_match(f, lambda c: ref_crop(c, offs, (3, 4), circular), x)


@pytest.mark.parametrize("circular", [False, True])
def test_paste_windows_add_gradcheck_and_adjoint(circular):
    offs = [(0, 0), (1, 3), (2, 4)] if not circular else [(0, 6), (1, -2), (2, 9)]
    v = rnd(3, 2, 3, 4)
    wts = torch.rand(3, 1, 3, 4, dtype=DT) + 0.5
    f = lambda y: ag.paste_windows_add(y, offs, (5, 8), weights=wts, circular=circular)
    assert gradcheck(f, (v,))
    # adjoint identity against the reference crop: <crop(X), w*Y> == <paste(Y; w), X>
    X = torch.randn(2, 5, 8, dtype=DT)
    lhs = (ref_crop(X, offs, (3, 4), circular) * wts * v).sum()
    torch.testing.assert_close((f(v) * X).sum(), lhs)


REF_DIHEDRAL = {
    "identity": lambda x: x, "rot90_cw": lambda x: torch.rot90(x, -1, (-2, -1)),
    "rot90_ccw": lambda x: torch.rot90(x, 1, (-2, -1)), "rot180": lambda x: torch.rot90(x, 2, (-2, -1)),
    "hflip": lambda x: x.flip(-1), "vflip": lambda x: x.flip(-2),
    "transpose": lambda x: x.transpose(-1, -2),
    "antitranspose": lambda x: x.flip(-1).flip(-2).transpose(-1, -2),
}


@pytest.mark.parametrize("op", ops.DIHEDRAL_OPS)
def test_dihedral_gradcheck_and_reference(op):
    x = rnd(2, 4, 5)
    assert gradcheck(lambda t: ag.dihedral(t, op), (x,))
    torch.testing.assert_close(ag.dihedral(x, op), REF_DIHEDRAL[op](x))
    grads_match(lambda t: ag.dihedral(t, op), REF_DIHEDRAL[op], x)


def ref_skew(x, factor, inverse):
    H, W = x.shape[-2:]
    cols = []
    for w in range(W):
        d = int(factor * (w - H // 2))
        cols.append(torch.roll(x[..., :, w], -d if inverse else d, dims=-1))
    return torch.stack(cols, -1)


@pytest.mark.parametrize("inverse", [False, True])
def test_skew_gradcheck_and_reference(inverse):
    x = rnd(2, 6, 6)
    f = lambda t: ag.skew(t, 1.5, inverse=inverse)
    assert gradcheck(f, (x,))
    torch.testing.assert_close(f(x), ref_skew(x, 1.5, inverse))
    grads_match(f, lambda t: ref_skew(t, 1.5, inverse), x)


@pytest.mark.parametrize("kind", ["perm_gather", "perm_scatter", "repeating_gather"])
def test_permute_pixels_gradcheck_and_reference(kind):
    g = torch.Generator().manual_seed(3)
    P = 20
    idx = torch.randperm(P, generator=g) if kind != "repeating_gather" else \
        torch.randint(0, P, (P,), generator=g)
    assert ag.is_permutation(idx) == (kind != "repeating_gather")
    x = rnd(3, 4, 5)
    mode = "scatter" if kind == "perm_scatter" else "gather"
    f = lambda t: ag.permute_pixels(t, idx, mode)

    def ref(t):
        flat = t.reshape(3, P)
        if mode == "gather":
            return flat[:, idx].reshape(3, 4, 5)
        return flat[:, torch.argsort(idx)].reshape(3, 4, 5)

    assert gradcheck(f, (x,))
    torch.testing.assert_close(f(x), ref(x))
    grads_match(f, ref, x)


def test_permute_pixels_scatter_needs_a_permutation():
    with pytest.raises(ValueError, match="permutation"):
        ag.permute_pixels(torch.zeros(2, 2, dtype=DT), [0, 0, 1, 2], "scatter")
    with pytest.raises(TypeError, match="index"):
        ag.permute_pixels(torch.zeros(2, 2, dtype=DT), torch.zeros(4), "gather")


@pytest.mark.parametrize("adjoint", [False, True])
def test_csr_apply_gradcheck_in_x_and_values(adjoint):
    rng = np.random.default_rng(0)
    n_rows, n_cols = 6, 9
    dense = rng.standard_normal((n_rows, n_cols)) * (rng.random((n_rows, n_cols)) < 0.4)
    dense[2] = 0  # an empty row
    r, c = np.nonzero(dense)
    indptr = torch.from_numpy(np.concatenate([[0], np.cumsum(np.bincount(r, minlength=n_rows))]))
    indices = torch.from_numpy(c)
    values = torch.from_numpy(dense[r, c]).requires_grad_(True)
    x = rnd(2, 3, n_rows if adjoint else n_cols)
    f = lambda t, v: ag.csr_apply(t, indptr, indices, v, n_cols, adjoint=adjoint)
    assert gradcheck(f, (x, values))

    def ref(t, v):
        A = torch.zeros(n_rows, n_cols, dtype=DT).index_put((torch.from_numpy(r), indices), v)
        return t @ (A if adjoint else A.T)

    torch.testing.assert_close(f(x, values), ref(x, values))
    g = torch.randn(ref(x, values).shape, dtype=DT)
    a = torch.autograd.grad((f(x, values) * g).sum(), (x, values))
    b = torch.autograd.grad((ref(x, values) * g).sum(), (x, values))
    for u, w in zip(a, b):
        torch.testing.assert_close(u, w, rtol=0, atol=1e-12)


def test_view_set_maps_gradcheck_windows_and_pixel_maps():
    wv = WindowViews.grid((2, 4, 10), (4, 4), (1, 3), circular=True)
    x = rnd(2, 4, 10)
    assert gradcheck(lambda c: ag.view_forward(wv, c), (x,))
    y = rnd(wv.num_views, 2, 4, 4)
    w = torch.rand(wv.num_views, 1, 4, 4, dtype=DT)
    assert gradcheck(lambda t: ag.view_adjoint(wv, t, w), (y,))
    grads_match(lambda c: ag.view_forward(wv, c),
                lambda c: ref_crop(c, wv.offsets.tolist(), (4, 4), True), x)
    pv = PixelMapViews((1, 5, 5), ["identity", "rot90_cw", "skew", torch.randperm(25)])
    x = rnd(3, 1, 5, 5)  # a batch dimension
    assert gradcheck(lambda c: ag.view_forward(pv, c), (x,))
    y = rnd(4, 3, 1, 5, 5)
    assert gradcheck(lambda t: ag.view_adjoint(pv, t), (y,))


def test_view_set_maps_gradcheck_texture_views():
    trimesh = pytest.importorskip("trimesh")
    from syncsde.mesh import Camera, TextureViews, mesh_from_arrays
    s = trimesh.creation.icosphere(1)
    mesh = mesh_from_arrays(s.vertices, s.faces)
    V = TextureViews(mesh, [Camera(0, 0, 2.2), Camera(120, 10, 2.2)], 6, 5, channels=1,
                     sampling="bilinear")
    x = rnd(1, 1, V.L)
    assert gradcheck(lambda c: ag.view_forward(V, c), (x,))
    y = rnd(2, 1, 6, 6)
    assert gradcheck(lambda t: ag.view_adjoint(V, t), (y,))
    # forward against the dense render matrices
    dense = [torch.from_numpy(R.to_dense()) for R in V.render]
    want = torch.stack([(D @ x.reshape(-1)).reshape(1, 6, 6) for D in dense])
    torch.testing.assert_close(ag.view_forward(V, x), want)
