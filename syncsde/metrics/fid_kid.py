r"""FID and KID from features (any feature network; see :mod:`syncsde.metrics.features`).

- FID (Heusel et al. 2017): the Frechet distance between Gaussians fitted to the two feature
  sets, ``|mu_a - mu_b|^2 + tr(S_a + S_b - 2 (S_a^{1/2} S_b S_a^{1/2})^{1/2})`` with unbiased
  covariances (:func:`syncsde.metrics.gaussian.frechet_distance`, float64 eigendecompositions).
- KID (Binkowski et al. 2018): the unbiased MMD^2 estimator with the cubic polynomial kernel
  ``k(x, y) = (x.y / d + 1)^3``, averaged over random subsets of size ``m`` drawn without
  replacement (as clean-fid and torchmetrics do):

      MMD^2_u = sum_{i != j} k(x_i, x_j) / (m (m-1)) + sum_{i != j} k(y_i, y_j) / (m (m-1))
                - 2 sum_{i, j} k(x_i, y_j) / m^2.

  Its expectation is exactly 0 for two sets of one law. Papers report KID x 1e3
  (:func:`kid` returns the raw value; :data:`KID_SCALE` is the reporting factor).

Both are implemented here on NumPy/SciPy rather than through torchmetrics: torchmetrics is not
needed for the math and its default Inception path needs torch-fidelity (and torchvision).
"""
from __future__ import annotations

from typing import Any

import numpy as np

from syncsde.metrics.gaussian import fit_gaussian, frechet_distance

__all__ = ["fid", "kid", "KID_SCALE", "polynomial_kernel", "mmd2_unbiased"]

KID_SCALE = 1e3  # KID is reported x 1e3 in SyncSDE, SyncDiffusion, StochSync, SyncVC


def _features(x: Any, name: str) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().cpu().double().numpy()
    a = np.asarray(x, dtype=np.float64)
    if a.ndim != 2:
        raise ValueError(f"{name} must be features [n, d], got shape {a.shape}")
    if not np.isfinite(a).all():
        raise ValueError(f"{name} contains non-finite values")
    return a


def fid(feats_a: Any, feats_b: Any) -> float:
    """FID between two feature sets ``[n, d]`` (n >= 2 each)."""
    a, b = _features(feats_a, "feats_a"), _features(feats_b, "feats_b")
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"feature dimensions differ: {a.shape[1]} vs {b.shape[1]}")
    if len(a) < 2 or len(b) < 2:
        raise ValueError(f"fid needs at least 2 samples per set, got {len(a)} and {len(b)}")
    return frechet_distance(*fit_gaussian(a), *fit_gaussian(b))


def polynomial_kernel(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """``(x y^T / d + 1)^3`` (KID's kernel)."""
    return (x @ y.T / x.shape[1] + 1.0) ** 3


def mmd2_unbiased(x: np.ndarray, y: np.ndarray) -> float:
    """The unbiased MMD^2 (diagonals of the within-set kernels left out); ``len(x) == len(y)``."""
    m = len(x)
    kxx, kyy, kxy = polynomial_kernel(x, x), polynomial_kernel(y, y), polynomial_kernel(x, y)
    return float((kxx.sum() - np.trace(kxx)) / (m * (m - 1))
                 + (kyy.sum() - np.trace(kyy)) / (m * (m - 1)) - 2.0 * kxy.mean())


def kid(feats_a: Any, feats_b: Any, subsets: int = 100, subset_size: int = 1000,
        seed: int = 0) -> tuple[float, float]:
    """KID ``(mean, std)`` over ``subsets`` random subsets of ``min(subset_size, n_a, n_b)``
    samples per set (raw scale; multiply by :data:`KID_SCALE` to report)."""
    a, b = _features(feats_a, "feats_a"), _features(feats_b, "feats_b")
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"feature dimensions differ: {a.shape[1]} vs {b.shape[1]}")
    if int(subsets) < 1:
        raise ValueError(f"subsets must be >= 1, got {subsets}")
    m = min(int(subset_size), len(a), len(b))
    if m < 2:
        raise ValueError(f"kid needs at least 2 samples per set, got {len(a)} and {len(b)}")
    rng = np.random.default_rng(seed)
    vals = [mmd2_unbiased(a[rng.choice(len(a), m, replace=False)],
                          b[rng.choice(len(b), m, replace=False)]) for _ in range(int(subsets))]
    return float(np.mean(vals)), float(np.std(vals))
