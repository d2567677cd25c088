r"""Exact output laws of the samplers on Gaussian priors, and sample metrics for the rest.

On a Gaussian prior the exact score ``E[eps | x_t]`` is affine in ``x_t``; every strategy of the
sampler (averages, crops, pulls, the collage / region-graph compositions) and the deterministic
solvers (DDIM at eta = 0, Euler, DPM-Solver++) are linear in the states. So the whole run is an
affine map of the initial noise ``z``: ``out = b + A z``, and with ``z ~ N(0, s^2 I)`` the output
law is exactly

    N(b, s^2 A A^T).

:func:`push_forward_law` finds ``b`` and ``s A`` by pushing the zero vector and the scaled basis
``s e_k`` through the sampler in float64 (one batched run of ``D + 1`` samples, ``D`` the noise
dimension: the canvas for canvas-initialised strategies, the stacked free views otherwise), and
checks affinity on a few random inputs, so a non-affine run (mixture priors, gradient-based
strategies, stochastic solvers) is refused instead of giving a wrong law.

Distances between laws: :func:`gaussian_w2` (the Frechet / squared 2-Wasserstein distance) and
:func:`gaussian_kl` (``KL(N_1 || N_2)``, infinite when ``N_1`` has mass off ``N_2``'s support).
For non-Gaussian targets: :func:`energy_distance` on samples (zero iff the laws are equal, no
Gaussian fit, so it sees mode mixing that the moment-matched Frechet distance cannot).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch

from syncsde.metrics.gaussian import frechet_distance

__all__ = ["OutputLaw", "push_forward_law", "gaussian_w2", "gaussian_kl", "energy_distance",
           "CountingDenoiser"]


@dataclass
class OutputLaw:
    """``N(mean_vector, covariance)`` of a sampler's flattened output; ``factor`` is ``s A``
    (``covariance = factor @ factor.T``), ``noise_dim`` the dimension of the initial noise."""

    mean_vector: torch.Tensor
    covariance: torch.Tensor
    factor: torch.Tensor
    noise_dim: int
    event_shape: tuple[int, ...]
    batch: int = 0          # samples in the batched run (zero, basis, affinity checks)


class CountingDenoiser:
    """Wraps a denoiser and counts model inputs (``inputs``) and their pixels (``pixels``)."""

    def __init__(self, denoiser: Any):
        self.denoiser = denoiser
        self.prediction_type = getattr(denoiser, "prediction_type", "epsilon")
        self.inputs = 0
        self.pixels = 0
        self.calls = 0
        self.backward_inputs = 0   # vector-Jacobian products through the model (count_backward)

    def __call__(self, x_t, t, cond=None):
        self.calls += 1
        self.inputs += int(x_t.shape[0])
        self.pixels += int(x_t.shape[0]) * int(math.prod(x_t.shape[2:]))
        return self.denoiser(x_t, t, cond)

    def __getattr__(self, name):  # abar, priors, ... of the wrapped denoiser
        if name == "denoiser":
            raise AttributeError(name)
        return getattr(self.denoiser, name)


def _strategy_init(strategy: Any, options: dict) -> str | None:
    from syncsde.strategies import make_strategy

    return make_strategy(strategy, **options).init


def push_forward_law(problem: Any, denoiser: Any, strategy: Any, schedule: Any,
                     guidance_scale: float = 1.0, check_seed: int = 12345, checks: int = 4,
                     atol: float = 1e-5, **strategy_options: Any) -> OutputLaw:
    """Exact law of ``sample(problem, denoiser, strategy, schedule).output`` over its initial
    noise, for an affine run (Gaussian priors, eta = 0, a deterministic solver).

    ``schedule`` is what :func:`syncsde.sampler.sample` takes (a ``SamplingSchedule`` or a
    ``DiffusersSolver``). Raises ``ValueError`` when the run is not affine in the noise (checked
    on ``checks`` random inputs, to ``atol`` relative to the output scale). A mixture prior whose
    responsibilities stay saturated (0 or 1) over the noise passes this check: the law is then
    affine to that accuracy. The default ``atol`` allows for diffusers' schedulers, which step
    in float32 internally (Euler casts the state): their maps are affine to ~1e-7 relative.
    """
    from syncsde.sampler import sample

    init = _strategy_init(strategy, strategy_options) or problem.init
    scale = float(getattr(schedule, "initial_noise_scale", 1.0))
    views = problem.views
    f64 = torch.float64
    g = torch.Generator().manual_seed(int(check_seed))
    if init == "canvas":
        shape = tuple(views.canvas_shape)
        D = 0 if problem.initial_canvas is not None else math.prod(shape)
        if D:
            basis = torch.cat([torch.zeros(1, D, dtype=f64), scale * torch.eye(D, dtype=f64),
                               scale * torch.randn(checks, D, generator=g, dtype=f64)])
            prob = replace(problem, initial_canvas=basis.reshape(D + 1 + checks, *shape))
        else:
            prob = problem
        z_check = basis[D + 1:] / scale if D else None
    else:
        free = [i for i in range(views.num_views) if i not in problem.initial_views]
        per = math.prod(views.view_shape)
        D = per * len(free)
        basis = torch.cat([torch.zeros(1, D, dtype=f64), scale * torch.eye(D, dtype=f64),
                           scale * torch.randn(checks, D, generator=g, dtype=f64)])
        init_views = dict(problem.initial_views)
        for k, i in enumerate(free):
            init_views[i] = basis[:, k * per:(k + 1) * per].reshape(D + 1 + checks, *views.view_shape)
        prob = replace(problem, initial_views=init_views)
        z_check = basis[D + 1:] / scale
    n = D + 1 + (checks if D else 0)
    r = sample(prob, denoiser, strategy, schedule, guidance_scale=guidance_scale, seed=0,
               batch=n, dtype=f64, progress=False, **strategy_options)
    out = r.output.reshape(n, -1).to(f64)
    b = out[0]
    M = (out[1:D + 1] - b).T                     # [out_dim, D] = s A
    if D:
        pred = b + z_check @ M.T                 # b + s A z  for the check inputs s z
        err = float((pred - out[D + 1:]).abs().max())
        ref = float(out.abs().max()) + 1e-300
        if not err <= atol * max(ref, 1.0):
            raise ValueError(f"strategy {getattr(strategy, 'name', strategy)!r} is not affine in the "
                             f"initial noise here (deviation {err:.3g}); use sampled metrics")
    cov = M @ M.T
    return OutputLaw(b.clone(), 0.5 * (cov + cov.T), M, D, tuple(r.output.shape[1:]), n)


def gaussian_w2(law_a: Any, law_b: Any) -> float:
    """Squared 2-Wasserstein (Frechet) distance between two laws with mean_vector/covariance."""
    return frechet_distance(law_a.mean_vector, law_a.covariance, law_b.mean_vector, law_b.covariance)


def gaussian_kl(law_p: Any, law_q: Any, rel_tol: float = 1e-10) -> float:
    r"""``KL(N_p || N_q) = 1/2 (tr(S_q^+ S_p) + d^T S_q^+ d - r + log pdet S_q - log pdet S_p)``.

    Computed on the support of ``S_q`` (eigenvalues above ``rel_tol`` times the largest); it is
    ``inf`` when ``N_p`` puts mass off that support or is degenerate on it (rank of ``S_p`` on
    the support below ``r``), ``d = mu_p - mu_q``.
    """
    mp = law_p.mean_vector.double().reshape(-1).numpy()
    mq = law_q.mean_vector.double().reshape(-1).numpy()
    Sp = law_p.covariance.double().numpy()
    Sq = law_q.covariance.double().numpy()
    sq, Uq = np.linalg.eigh(0.5 * (Sq + Sq.T))
    tol = rel_tol * max(float(sq.max()), 1e-300)
    keep = sq > tol
    U, s = Uq[:, keep], sq[keep]
    Uo = Uq[:, ~keep]
    d = mp - mq
    scale = max(float(np.abs(Sp).max()), float(np.abs(Sq).max()), 1.0)
    if Uo.shape[1] and (float(np.abs(Uo.T @ Sp @ Uo).max()) > 1e-9 * scale
                        or float(np.abs(Uo.T @ d).max()) > 1e-7 * math.sqrt(scale)):
        return math.inf
    Sp_r = U.T @ Sp @ U
    sp = np.linalg.eigvalsh(0.5 * (Sp_r + Sp_r.T))
    if float(sp.min()) <= rel_tol * max(float(sp.max()), 1e-300):
        return math.inf
    dr = U.T @ d
    val = 0.5 * (float(np.trace(Sp_r / s[:, None])) + float((dr * dr / s).sum()) - len(s)
                 + float(np.log(s).sum()) - float(np.log(sp).sum()))
    return max(val, 0.0)


def energy_distance(x: Any, y: Any, chunk: int = 2048) -> float:
    r"""Energy distance ``2 E|X - Y| - E|X - X'| - E|Y - Y'|`` (Euclidean norms of the flattened
    samples; U-statistics for the within-sample terms). Zero iff the laws are equal (Szekely);
    an unbiased estimate, so it can be slightly negative for equal laws."""
    xa = torch.as_tensor(np.asarray(x, dtype=np.float64) if not isinstance(x, torch.Tensor) else x)
    ya = torch.as_tensor(np.asarray(y, dtype=np.float64) if not isinstance(y, torch.Tensor) else y)
    xa = xa.reshape(len(xa), -1).double()
    ya = ya.reshape(len(ya), -1).double()
    if len(xa) < 2 or len(ya) < 2 or xa.shape[1] != ya.shape[1]:
        raise ValueError(f"energy_distance needs [n>=2, D] samples of one dimension, got "
                         f"{tuple(xa.shape)} and {tuple(ya.shape)}")

    def mean_dist(a, b, same):
        tot = 0.0
        for i in range(0, len(a), chunk):
            tot += float(torch.cdist(a[i:i + chunk], b, compute_mode="donot_use_mm_for_euclid_dist").sum())
        n = len(a) * len(b) - (len(a) if same else 0)
        return tot / n

    return 2 * mean_dist(xa, ya, False) - mean_dist(xa, xa, True) - mean_dist(ya, ya, True)
