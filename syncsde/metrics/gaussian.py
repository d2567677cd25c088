r"""Gaussian metrics: Frechet (2-Wasserstein) distance and a seam statistic.

``frechet_distance`` is the squared 2-Wasserstein distance between two Gaussians (the FID
formula, without any network):

    W2^2 = ||mu_1 - mu_2||^2 + tr(S_1 + S_2 - 2 (S_1^{1/2} S_2 S_1^{1/2})^{1/2}).

Both matrix square roots are taken with a symmetric eigendecomposition in float64 (eigenvalues
clipped at 0), so the result is real; it is clipped at 0 against round-off.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

__all__ = ["fit_gaussian", "frechet_distance", "frechet_to_law", "seam_statistic"]


def _np64(x: Any) -> np.ndarray:
    if hasattr(x, "detach"):  # torch tensor
        x = x.detach().cpu().double().numpy()
    return np.asarray(x, dtype=np.float64)


def _sqrtm_psd(a: np.ndarray) -> np.ndarray:
    """Symmetric PSD square root ``U diag(sqrt(max(s, 0))) U^T``."""
    s, u = np.linalg.eigh(0.5 * (a + a.T))
    return (u * np.sqrt(np.clip(s, 0.0, None))) @ u.T


def _mean_cov(mu: Any, cov: Any, name: str) -> tuple[np.ndarray, np.ndarray]:
    m = _np64(mu).reshape(-1)
    c = _np64(cov)
    if c.ndim == 0 and m.size == 1:
        c = c.reshape(1, 1)
    if c.shape != (m.size, m.size):
        raise ValueError(f"{name}: covariance shape {c.shape} does not match mean of size {m.size}")
    if not (np.isfinite(m).all() and np.isfinite(c).all()):
        raise ValueError(f"{name}: non-finite mean or covariance")
    return m, c


def frechet_distance(mu1: Any, cov1: Any, mu2: Any, cov2: Any) -> float:
    r"""``W2^2(N(mu1, cov1), N(mu2, cov2)) = |mu1-mu2|^2 + tr(cov1 + cov2 - 2 (cov1^{1/2} cov2
    cov1^{1/2})^{1/2})`` in float64 (1-D: ``(m1-m2)^2 + (s1-s2)^2``). Accepts torch or numpy."""
    m1, c1 = _mean_cov(mu1, cov1, "first Gaussian")
    m2, c2 = _mean_cov(mu2, cov2, "second Gaussian")
    if m1.size != m2.size:
        raise ValueError(f"dimension mismatch: {m1.size} vs {m2.size}")
    r1 = _sqrtm_psd(c1)
    inner = r1 @ (0.5 * (c2 + c2.T)) @ r1
    s = np.linalg.eigvalsh(0.5 * (inner + inner.T))
    cross = np.sqrt(np.clip(s, 0.0, None)).sum()
    d = float(((m1 - m2) ** 2).sum() + np.trace(c1) + np.trace(c2) - 2.0 * cross)
    return max(d, 0.0)


def fit_gaussian(samples: Any) -> tuple[np.ndarray, np.ndarray]:
    """Empirical mean ``[D]`` and unbiased covariance ``[D, D]`` of ``samples [n, ...]`` (flattened
    per sample), float64. Needs n >= 2."""
    x = _np64(samples)
    if x.ndim < 1 or x.shape[0] < 2:
        raise ValueError(f"samples must be [n, ...] with n >= 2, got shape {x.shape}")
    x = x.reshape(x.shape[0], -1)
    mu = x.mean(axis=0)
    y = x - mu
    return mu, (y.T @ y) / (x.shape[0] - 1)


def frechet_to_law(samples: Any, law_mean: Any, law_cov: Any = None) -> float:
    """Frechet distance between the Gaussian fitted to ``samples [n, D]`` (or ``[n, *event]``,
    flattened) and ``N(law_mean, law_cov)``. ``law_mean`` may also be a law object with
    ``mean_vector`` and ``covariance`` (then leave ``law_cov`` as None)."""
    if law_cov is None:
        if not (hasattr(law_mean, "mean_vector") and hasattr(law_mean, "covariance")):
            raise ValueError("law_cov is required unless law_mean is a law with mean_vector/covariance")
        law_mean, law_cov = law_mean.mean_vector, law_mean.covariance
    mu, cov = fit_gaussian(samples)
    return frechet_distance(mu, cov, law_mean, law_cov)


def _columns(cols: Sequence[int], width: int, name: str) -> np.ndarray:
    c = np.asarray(list(cols), dtype=np.int64).reshape(-1)
    if c.size == 0:
        raise ValueError(f"{name} is empty")
    if (c < 1).any() or (c > width - 1).any():
        raise ValueError(f"{name} must lie in [1, {width - 1}] (column c compares c-1 with c), got {c.tolist()}")
    return c


def seam_statistic(canvas_samples: Any, seam_columns: Sequence[int],
                   interior_columns: Sequence[int] | None = None) -> float:
    r"""Mean squared jump across seams over the mean squared jump inside windows.

    ``canvas_samples`` is ``[n, C, H, W]`` (images) or ``[n, C, L]`` (sequences: the last dim is
    the column axis). Column ``c`` denotes the boundary between columns ``c-1`` and ``c``:

        stat = mean_{n, C, H, c in seams} (x[..., c] - x[..., c-1])^2
               / mean_{n, C, H, c in interior} (x[..., c] - x[..., c-1])^2.

    ``interior_columns=None`` uses every column in ``[1, W-1]`` that is not a seam. 1 is ideal
    (seams look like the rest of a stationary field); > 1 means visible seams.
    """
    x = _np64(canvas_samples)
    if x.ndim not in (3, 4):
        raise ValueError(f"canvas_samples must be [n, C, H, W] or [n, C, L], got shape {x.shape}")
    W = x.shape[-1]
    if W < 2:
        raise ValueError("need at least 2 columns")
    seams = _columns(seam_columns, W, "seam_columns")
    if interior_columns is None:
        interior = np.setdiff1d(np.arange(1, W), seams)
        if interior.size == 0:
            raise ValueError("no interior columns left")
    else:
        interior = _columns(interior_columns, W, "interior_columns")
    d2 = np.diff(x, axis=-1) ** 2          # d2[..., c-1] = (x[..., c] - x[..., c-1])^2
    num = d2[..., seams - 1].mean()
    den = d2[..., interior - 1].mean()
    if den <= 0:
        raise ValueError("interior columns have zero variation; the statistic is undefined")
    return float(num / den)
