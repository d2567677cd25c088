"""Nearest-seed fill (exact Euclidean) against brute force, with and without UV islands."""
import numpy as np
import pytest

from syncsde import _C, ops


def brute_min_dist2(seeds, labels=None):
    """Per texel: squared distance to the nearest allowed seed (inf when none), and whether the
    texel's own island was used (the fallback rule of nearest_seed)."""
    H, W = seeds.shape
    sr, sc = np.nonzero(seeds)
    rr, cc = np.meshgrid(np.arange(H), np.arange(W), indexing="ij")
    d2 = (rr[..., None] - sr) ** 2 + (cc[..., None] - sc) ** 2  # [H, W, S]
    if labels is None or len(sr) == 0:
        return d2.min(-1) if len(sr) else np.full((H, W), np.inf)
    slab = labels[sr, sc]
    own = labels[..., None] == slab
    island_has = np.array([(slab == l).any() for l in labels.reshape(-1)]).reshape(H, W)
    use_own = (labels >= 0) & island_has
    d_own = np.where(own, d2, np.iinfo(np.int64).max).min(-1)
    return np.where(use_own, d_own, d2.min(-1))


@pytest.mark.parametrize("seed", range(8))
def test_nearest_seed_is_a_nearest_seed(seed):
    rng = np.random.default_rng(seed)
    H, W = int(rng.integers(1, 40)), int(rng.integers(1, 40))
    seeds = rng.random((H, W)) < rng.choice([0.002, 0.02, 0.2, 0.7])
    near = ops.nearest_seed(seeds)
    if not seeds.any():
        assert (near == -1).all()
        return
    r, c = np.divmod(near, W)
    assert seeds[r, c].all()  # every answer is a seed
    rr, cc = np.meshgrid(np.arange(H), np.arange(W), indexing="ij")
    np.testing.assert_array_equal((rr - r) ** 2 + (cc - c) ** 2, brute_min_dist2(seeds))
    idx = np.arange(H * W).reshape(H, W)
    np.testing.assert_array_equal(near[seeds], idx[seeds])  # seeds map to themselves


@pytest.mark.parametrize("seed", range(8))
def test_nearest_seed_per_island(seed):
    rng = np.random.default_rng(100 + seed)
    H, W = int(rng.integers(2, 36)), int(rng.integers(2, 36))
    n = int(rng.integers(1, 6))
    # islands as random rectangles (later ones on top), the rest outside (-1)
    labels = np.full((H, W), -1, np.int32)
    for l in range(n):
        r0, c0 = rng.integers(0, H), rng.integers(0, W)
        labels[r0:r0 + rng.integers(1, H), c0:c0 + rng.integers(1, W)] = l
    seeds = rng.random((H, W)) < 0.05
    near = ops.nearest_seed(seeds, labels)
    if not seeds.any():
        assert (near == -1).all()
        return
    r, c = np.divmod(near, W)
    assert seeds[r, c].all()
    rr, cc = np.meshgrid(np.arange(H), np.arange(W), indexing="ij")
    np.testing.assert_array_equal((rr - r) ** 2 + (cc - c) ** 2, brute_min_dist2(seeds, labels))
    # texels of an island with seeds take a seed of that island
    has = {l: (seeds & (labels == l)).any() for l in range(n)}
    for l in range(n):
        if has[l]:
            sel = labels == l
            assert (labels[r[sel], c[sel]] == l).all()


def test_threads_do_not_change_the_fill():
    rng = np.random.default_rng(3)
    seeds = rng.random((300, 257)) < 0.001
    labels = (np.arange(300)[:, None] // 50 + np.arange(257)[None] // 64).astype(np.int32)
    n0 = ops.get_num_threads()
    try:
        ops.set_num_threads(1)
        a = ops.nearest_seed(seeds, labels)
        ops.set_num_threads(2)
        b = ops.nearest_seed(seeds, labels)
    finally:
        ops.set_num_threads(n0)
    np.testing.assert_array_equal(a, b)


def test_fill_bad_arguments():
    with pytest.raises(ValueError, match="seeds"):
        ops.nearest_seed(np.zeros(5))
    with pytest.raises(ValueError, match="labels"):
        ops.nearest_seed(np.zeros((3, 3)), np.zeros((3, 4), np.int32))
    with pytest.raises(ValueError, match="labels"):
        ops.nearest_seed(np.zeros((3, 3)), np.full((3, 3), -2))
    with pytest.raises(TypeError, match="labels"):
        ops.nearest_seed(np.zeros((3, 3)), np.zeros((3, 3)))
    out = np.empty((3, 3), np.int64)
    with pytest.raises(IndexError, match="labels"):
        _C.nearest_seed(out, np.ones((3, 3), np.int32), np.full((3, 3), 5, np.int32), 2)
    with pytest.raises(TypeError, match="seeds"):
        _C.nearest_seed(out, np.ones((3, 3), np.int64), None, 0)
    assert ops.nearest_seed(np.zeros((0, 4))).shape == (0, 4)
