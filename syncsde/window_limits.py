r"""What a window model can know: the maximum-entropy completion of the window marginals.

A strategy that only calls the model on windows (and their crops) sees, at every noise level,
the laws of the windows and nothing else. Many canvas laws share those window marginals; for a
chain of windows (full-height windows ordered along the width, not wrapping) the one with the
largest entropy is the junction-tree law

    p*(X) = prod_i p(C_i) / prod_i p(S_i),        S_i = C_i ∩ C_{i+1}          (docs/composition.md, eq. 6)

which samples the first window and then each window's new columns given its overlap with the
previous one. Where the canvas law carries information beyond the overlap (correlations longer
than it, a mixture component shared by the whole canvas) the target and ``p*`` differ, and no
window-only strategy is identified to do better than ``p*``: its distance to the target is a
floor for the family, which the benchmark prints beside the strategies.

- Gaussian windows: ``p*`` is Gaussian with precision ``sum_i P_i^T K_{C_i}^{-1} P_i -
  sum_i Q_i^T K_{S_i}^{-1} Q_i`` (:func:`chain_completion_law`).
- Mixture windows: ``p*`` is sampled exactly, window by window, from the window mixture's
  conditionals (:func:`sample_chain_completion`).
"""
from __future__ import annotations

from typing import Any

import torch

from syncsde.priors import GaussianLaw

__all__ = ["chain_order", "chain_completion_law", "sample_chain_completion"]


def chain_order(views: Any) -> list[tuple[int, int]]:
    """``[(left, width)]`` of the windows of a 1-D chain, sorted by ``left``; refuses windows that
    do not span the canvas height, wrap, or leave a gap."""
    C, H, W = views.canvas_shape
    h, w = (int(v) for v in views.size)
    if getattr(views, "circular", False):
        raise ValueError("a circular canvas is a loop, not a chain of windows")
    if h != H:
        raise ValueError("chain completion needs full-height windows (a 1-D chain)")
    lefts = sorted(int(v) for v in views.offsets[:, 1].tolist())
    if lefts[0] != 0 or lefts[-1] + w != W or any(b - a >= w for a, b in zip(lefts, lefts[1:])):
        raise ValueError("the windows must cover the canvas and overlap their neighbours")
    return [(a, w) for a in lefts]


def _columns(H: int, W: int, a: int, b: int) -> torch.Tensor:
    """Flat pixel indices of columns ``[a, b)`` of an ``H x W`` grid."""
    r = torch.arange(H).unsqueeze(1) * W
    return (r + torch.arange(a, b).unsqueeze(0)).reshape(-1)


def chain_completion_law(views: Any, spatial_covariance: torch.Tensor, mean_vector: torch.Tensor,
                         channels: int = 1) -> GaussianLaw:
    """The junction-tree law of a stationary Gaussian canvas law's window marginals: the
    canvas covariance ``[P, P]`` (``P = H W``) restricted to each window and overlap, composed
    in precision form; ``mean_vector`` ``[C P]``; channels independent with one spatial
    covariance. Returns a :class:`~syncsde.priors.GaussianLaw` on ``[C, H, W]``."""
    C, H, W = views.canvas_shape
    S = torch.as_tensor(spatial_covariance, dtype=torch.float64)
    P = H * W
    if tuple(S.shape) != (P, P):
        raise ValueError(f"spatial_covariance must be [{P}, {P}], got {tuple(S.shape)}")
    lam = torch.zeros(P, P, dtype=torch.float64)
    chain = chain_order(views)
    for k, (a, w) in enumerate(chain):
        idx = _columns(H, W, a, a + w)
        lam[idx[:, None], idx[None, :]] += torch.linalg.inv(S[idx][:, idx])
        if k + 1 < len(chain):
            b = chain[k + 1][0]
            sep = _columns(H, W, b, a + w)
            lam[sep[:, None], sep[None, :]] -= torch.linalg.inv(S[sep][:, sep])
    cov = torch.linalg.inv(0.5 * (lam + lam.T))
    full = torch.block_diag(*([0.5 * (cov + cov.T)] * channels))
    return GaussianLaw(torch.as_tensor(mean_vector, dtype=torch.float64).reshape(-1), full, (C, H, W))


def sample_chain_completion(views: Any, window_mixture: Any, n: int,
                            generator: torch.Generator | None = None) -> torch.Tensor:
    """``n`` exact samples ``[n, C, H, W]`` of the junction-tree law of a Gaussian-mixture
    window law (``window_mixture``: :class:`~syncsde.priors.GaussianMixturePrior` on one window,
    components with one spatial covariance per channel): the first window from the mixture, each
    next window's new columns from the mixture's conditional given its overlap with the previous
    window (component weights updated by the overlap's likelihood)."""
    C, H, W = views.canvas_shape
    h, w = (int(v) for v in views.size)
    g = generator or torch.Generator().manual_seed(0)
    comps = window_mixture.components
    logw = torch.log(torch.as_tensor(window_mixture.weights, dtype=torch.float64))
    means = torch.stack([c.mean_vector.reshape(C, h * w) for c in comps])     # [K, C, hw]
    covs = [c.spatial_covariance for c in comps]                              # [hw, hw] each
    out = torch.zeros(n, C, H * W, dtype=torch.float64)
    prev_right = None
    for a, _ in chain_order(views):
        win = _columns(H, W, a, a + w)
        if prev_right is None:
            known = torch.zeros(0, dtype=torch.long)
        else:
            known = _columns(h, w, 0, prev_right - a)                          # local indices
        free = torch.tensor([i for i in range(h * w) if i not in set(known.tolist())])
        x_known = out[:, :, win[known]] if len(known) else None               # [n, C, k]
        # per-component log-likelihood of the overlap and conditional moments
        ll, cmeans, cchols = [], [], []
        for c, S in enumerate(covs):
            mu = means[c]
            if len(known):
                Skk = S[known][:, known]
                Sfk = S[free][:, known]
                A = torch.linalg.solve(Skk, Sfk.T).T                          # S_fk S_kk^-1
                d = x_known - mu[:, known]                                    # [n, C, k]
                L = torch.linalg.cholesky(Skk)
                z = torch.linalg.solve_triangular(L, d.reshape(-1, len(known)).T, upper=False)
                quad = (z ** 2).sum(0).reshape(n, C).sum(1)
                ll.append(-0.5 * quad - C * torch.log(torch.diagonal(L)).sum())
                cmeans.append(mu[:, free] + d @ A.T)
                cov = S[free][:, free] - A @ Sfk.T
            else:
                ll.append(torch.zeros(n, dtype=torch.float64))
                cmeans.append(mu[:, free].expand(n, C, len(free)))
                cov = S[free][:, free]
            cov = 0.5 * (cov + cov.T) + 1e-10 * torch.eye(len(free), dtype=torch.float64)
            cchols.append(torch.linalg.cholesky(cov))
        post = logw + torch.stack(ll, 1)                                      # [n, K]
        k = torch.multinomial(torch.softmax(post, 1), 1, generator=g).reshape(-1)
        eps = torch.randn(n, C, len(free), generator=g, dtype=torch.float64)
        x = torch.zeros(n, C, len(free), dtype=torch.float64)
        for c in range(len(comps)):
            sel = k == c
            if sel.any():
                x[sel] = cmeans[c][sel] + eps[sel] @ cchols[c].T
        out[:, :, win[free]] = x
        prev_right = a + w
    return out.reshape(n, C, H, W)
