"""Frechet (W2) distance between Gaussians and the seam statistic."""
from __future__ import annotations


import numpy as np
import pytest
import torch

from syncsde.metrics import fit_gaussian, frechet_distance, frechet_to_law, seam_statistic
from syncsde.priors import GaussianPrior


def spd(d, seed):
    rng = np.random.default_rng(seed)
    a = rng.standard_normal((d, d))
    return a @ a.T / d + 0.1 * np.eye(d)


def test_zero_for_identical_gaussians():
    c = spd(6, 0)
    mu = np.arange(6.0)
    assert frechet_distance(mu, c, mu, c) == pytest.approx(0.0, abs=1e-9)
    # a singular covariance too (rank 2)
    b = np.random.default_rng(1).standard_normal((6, 2))
    cs = b @ b.T
    assert frechet_distance(mu, cs, mu, cs) == pytest.approx(0.0, abs=1e-7)


def test_one_dimensional_closed_form():
    for m1, s1, m2, s2 in [(0.0, 1.0, 0.0, 2.0), (1.5, 0.3, -0.5, 0.3), (2.0, 0.7, -1.0, 1.9)]:
        d = frechet_distance([m1], [[s1**2]], [m2], [[s2**2]])
        assert d == pytest.approx((m1 - m2) ** 2 + (s1 - s2) ** 2, rel=1e-12, abs=1e-12)


def test_isotropic_closed_form():
    D = 5
    mu1, mu2 = np.zeros(D), np.full(D, 0.5)
    d = frechet_distance(mu1, 4.0 * np.eye(D), mu2, 0.25 * np.eye(D))
    assert d == pytest.approx(D * 0.25 + D * (2.0 - 0.5) ** 2)


def test_commuting_and_general_properties():
    # diagonal (commuting) covariances: sum_i (sqrt(a_i) - sqrt(b_i))^2
    a, b = np.array([1.0, 2.0, 0.5]), np.array([3.0, 0.2, 0.5])
    d = frechet_distance(np.zeros(3), np.diag(a), np.zeros(3), np.diag(b))
    assert d == pytest.approx(((np.sqrt(a) - np.sqrt(b)) ** 2).sum())
    c1, c2 = spd(7, 2), spd(7, 3)
    m1, m2 = np.random.default_rng(4).standard_normal((2, 7))
    d12, d21 = frechet_distance(m1, c1, m2, c2), frechet_distance(m2, c2, m1, c1)
    assert d12 == pytest.approx(d21, rel=1e-9)
    assert d12 > 0
    # torch inputs and float32 are accepted; the result is a float
    dt = frechet_distance(torch.tensor(m1, dtype=torch.float32), torch.tensor(c1),
                          torch.tensor(m2), torch.tensor(c2))
    assert isinstance(dt, float) and dt == pytest.approx(d12, rel=1e-5)
    # rotation invariance
    q, _ = np.linalg.qr(np.random.default_rng(5).standard_normal((7, 7)))
    assert frechet_distance(q @ m1, q @ c1 @ q.T, q @ m2, q @ c2 @ q.T) == pytest.approx(d12, rel=1e-9)
    with pytest.raises(ValueError, match="mismatch"):
        frechet_distance(np.zeros(2), np.eye(2), np.zeros(3), np.eye(3))
    with pytest.raises(ValueError, match="covariance shape"):
        frechet_distance(np.zeros(2), np.eye(3), np.zeros(2), np.eye(2))


def test_frechet_to_law():
    p = GaussianPrior.field("matern", 6, channels=2, lengthscale=2.0, nu=1.5, mean=0.3)
    g = torch.Generator().manual_seed(0)
    x = p.sample(20000, g)                                 # [n, C, L]: flattened per sample
    d = frechet_to_law(x, p.mean_vector, p.covariance)
    assert d < 0.01
    assert frechet_to_law(x, p) == pytest.approx(d)
    assert frechet_to_law(x, p.mean_vector + 1.0, p.covariance) == pytest.approx(d + 12.0, abs=0.05)
    mu, cov = fit_gaussian(x)
    assert mu.shape == (12,) and cov.shape == (12, 12)
    with pytest.raises(ValueError, match="n >= 2"):
        fit_gaussian(np.zeros((1, 3)))
    with pytest.raises(ValueError, match="law_cov"):
        frechet_to_law(x, p.mean_vector)


def test_seam_statistic_stationary_and_seam():
    g = torch.Generator().manual_seed(1)
    n, W = 2000, 24
    p = GaussianPrior.field("matern", W, channels=2, lengthscale=3.0, nu=1.5)
    x = p.sample(n, g).numpy()                             # [n, C, L] stationary
    seams = [8, 16]
    assert seam_statistic(x, seams) == pytest.approx(1.0, abs=0.08)
    # independent halves glued at column 12: a visible seam
    y = np.concatenate([p.sample(n, g).numpy()[..., :12], p.sample(n, g).numpy()[..., 12:]], axis=-1)
    assert seam_statistic(y, [12]) > 3.0
    interior = [c for c in range(1, W) if c not in (8, 12, 16)]
    assert seam_statistic(y, [8, 16], interior) == pytest.approx(1.0, abs=0.08)
    assert seam_statistic(y, [8, 16]) < 0.9            # the default interior contains the jump
    # 2-D canvases [n, C, H, W]: columns are the last axis
    q = GaussianPrior.field("se", (4, 16), channels=1, lengthscale=2.0)
    z = q.sample(1000, g)
    assert seam_statistic(z, [5, 10], interior_columns=[2, 3, 7, 12, 14]) == pytest.approx(1.0, abs=0.1)
    z2 = z.clone()
    z2[..., 8:] += torch.randn(1000, 1, 4, 1, generator=g, dtype=z.dtype)
    assert seam_statistic(z2, [8]) > 3.0
    with pytest.raises(ValueError, match="seam_columns"):
        seam_statistic(x, [0])
    with pytest.raises(ValueError, match="seam_columns"):
        seam_statistic(x, [W])
    with pytest.raises(ValueError, match="shape"):
        seam_statistic(x[:, 0], [3])
