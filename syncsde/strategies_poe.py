r"""Product-of-experts score with annealed Langevin correctors (illusions, any full-image views).

Target ``p(x) ∝ prod_i p_i(f_i x)`` (ambiguous images: ``p_A(x) p_B(P x)``). The score of the
product of the views' *noised* laws at level t,

    s_q(x) = sum_i f_i^T s_i(f_i x),        eps_q(x) = sum_i f_i^T eps_i(f_i x)      (sum, not mean),

is the score of ``q_t(x) ∝ prod_i p_{i,t}(f_i x)``, a path of laws that ends at the target
(``q_0 = p``) but is not the noised target at t > 0 (noise-dominated directions have half the
variance for two views). Annealed MCMC along ``q_t`` (Du et al. 2023, "Reduce, reuse, recycle")
corrects that: before each step, ``K`` unadjusted Langevin moves

    x <- x + h s_q(x) + sqrt(2 h) z,        h = snr (1 - abar_t),

each one more batch of N model inputs, then the deterministic step with ``eps_q`` (``combine =
"sum"``) or with the mean of the views' eps (``"mean"``, Visual Anagrams' average). ``K = 0`` and
``"mean"`` is ``noise_average``. Model inputs per step: ``N (1 + K)`` at the steps where the
corrector runs (``corrector_from``: the fraction of the steps, from the end, that get it).
With a single view the path is the noised law itself and no corrector runs (plain DDIM).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from syncsde.strategies import STRATEGIES, Strategy
from syncsde.strategies_regiongraph import step_generator

__all__ = ["ProductOfExperts"]


@dataclass
class ProductOfExperts(Strategy):
    corrector_steps: int = 1
    snr: float = 0.1
    combine: str = "sum"
    corrector_from: float = 1.0      # fraction of the steps (the last ones) with correctors
    seed: int = 0
    name: str = "poe"
    init: str = "canvas"

    def __post_init__(self):
        if not (isinstance(self.corrector_steps, int) and self.corrector_steps >= 0):
            raise ValueError(f"corrector_steps must be an int >= 0, got {self.corrector_steps!r}")
        if not (self.snr > 0 and math.isfinite(self.snr)):
            raise ValueError(f"snr must be a finite number > 0, got {self.snr!r}")
        if self.combine not in ("sum", "mean"):
            raise ValueError(f"combine must be 'sum' or 'mean', got {self.combine!r}")
        if not 0.0 <= self.corrector_from <= 1.0:
            raise ValueError(f"corrector_from must be in [0, 1], got {self.corrector_from!r}")

    def prepare(self, run):
        if tuple(run.views.view_shape) != tuple(run.views.canvas_shape):
            raise ValueError("poe composes full-image views (a product of experts on one image); "
                             "windows of a canvas need collage / regiongraph")
        self._n_steps = len(run.timesteps)

    def _eps_q(self, run, x, t, abar_t):
        y = run.views.forward(x)
        eps = run.predict_eps(y, t, abar_t, run.cond, run.negative)
        return run.views.adjoint(eps), y, eps

    def step(self, run, y, eps, info, noise):
        views = run.views
        x = views.average(y)
        eps_q = views.adjoint(eps)
        a = info.abar_t
        k = self.corrector_steps if info.index >= self._n_steps * (1.0 - self.corrector_from) else 0
        if views.num_views == 1:
            k = 0  # one expert: q_t is the noised law itself, nothing to correct (plain DDIM)
        if a < 1.0:
            h = self.snr * (1.0 - a)
            gen = step_generator(self.seed, info.index)
            for _ in range(k):
                z = torch.randn(x.shape, generator=gen, dtype=torch.float32).to(x)
                x = x - (h / math.sqrt(1.0 - a)) * eps_q + math.sqrt(2.0 * h) * z
                eps_q, y, eps = self._eps_q(run, x, info.t, a)
            y = views.forward(x, out=y)
        if self.combine == "mean":
            eps_q = eps_q / views.coverage(dtype=eps_q.dtype).to(eps_q.device)
        eps = views.forward(eps_q, out=eps)
        return run.solver.step(y, eps, info, noise, out=y)


STRATEGIES["poe"] = ProductOfExperts
