"""Synchronization strategies: how the lockstep views are coupled at each step.

A strategy is a small object with ``prepare(run)`` (once per sampling run) and
``step(run, y, eps, info, noise) -> y_s``; the loop itself lives in :mod:`syncsde.sampler`.
All math runs in the C core through :mod:`syncsde.ops` and the view sets.

- ``independent``: plain DDIM per view (the floor).
- ``syncsde``: ``y_s = DDIM(y_t, eps) - gamma_t inv_lambda(t) M (y_t - Xtilde)`` with the task's
  correlation model (seed 000).
- ``multidiffusion``: average ``x_s`` of all views in canonical space, then re-crop.
- ``synctweedies``: average Tweedie ``x0`` in canonical space, then DDIM per view from the averaged
  x0 (eps re-derived from x_t and that x0, so views stay consistent).
- ``noise_average`` (Visual Anagrams): average eps mapped back through the inverse views.
"""
from __future__ import annotations

import inspect
import math
from dataclasses import dataclass, field
from typing import Any

import torch

from syncsde import ops
from syncsde.correlation import CORRELATIONS, Correlation
from syncsde.schedules import InvLambdaSchedule, LinearInvLambda


@dataclass
class StepInfo:
    """One step t -> s of a run: its index, timesteps and cumulative alphas."""

    index: int
    t: int
    s: int
    abar_t: float
    abar_s: float
    eta: float
    timesteps: list[int]


class Strategy:
    name = "base"
    # steps through run.solver (any solver); False: the strategy hard-codes DDIM and the
    # sampler refuses other solvers for it
    any_solver = True
    output_rule = "average"  # how a canvas task composes the final views
    # Canonical-space strategies start every view from one canvas noise map (their methods
    # denoise one canonical object); None keeps the task's choice.
    init: str | None = None

    def prepare(self, run: Any) -> None:
        """Called once before the first step (run holds views, correlation, weights)."""

    def step(self, run: Any, y: torch.Tensor, eps: torch.Tensor, info: StepInfo,
             noise: torch.Tensor | None) -> torch.Tensor:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class Independent(Strategy):
    name = "independent"

    def step(self, run, y, eps, info, noise):
        return run.solver.step(y, eps, info, noise, out=y)


@dataclass
class SyncSDE(Strategy):
    """SyncSDE with ``inv_lambda`` (a number = the authors' ``inv_lambda * t / T``, or any
    :class:`~syncsde.schedules.InvLambdaSchedule`) and a correlation model (``None`` = the task's
    default; or a name: ``previous``, ``earlier``, ``two_sided``).

    ``max_pull`` guards against overshoot: the pull ``gamma_t * inv_lambda(t)`` is capped at
    ``max_pull * c_x`` with ``c_x = sqrt(abar_s/abar_t)`` the DDIM state coefficient; at
    ``max_pull = 1`` the pull fully replaces the trajectory's own ``x_t`` term by the reference
    (an inpainting step), more would push it past the reference and amplify the mismatch. The
    default cap never binds for Stable Diffusion with the authors' settings (largest pull 0.62 vs
    c_x >= 1), but it does at the first steps of cosine schedules (DeepFloyd IF: 3.94 at t=957;
    MDM: abar ~ 1e-9 at its first step, gamma ~ c_x ~ 30). ``max_pull=None`` reproduces the
    authors' uncapped update.
    """

    inv_lambda: float | InvLambdaSchedule = 5.0
    correlation: Correlation | str | None = None
    max_pull: float | None = 1.0
    name: str = "syncsde"
    output_rule: str = "on_top"
    _schedule: Any = field(default=None, init=False, repr=False)
    _masks: Any = field(default=None, init=False, repr=False)
    _corr: Any = field(default=None, init=False, repr=False)

    def __post_init__(self):
        if self.max_pull is not None and not self.max_pull > 0:
            raise ValueError(f"max_pull must be > 0 or None, got {self.max_pull!r}")
        if isinstance(self.inv_lambda, (int, float)):
            if not self.inv_lambda >= 0:
                raise ValueError(f"inv_lambda must be >= 0, got {self.inv_lambda!r}")
            self.inv_lambda = LinearInvLambda(float(self.inv_lambda))
        if isinstance(self.correlation, str):
            if self.correlation not in CORRELATIONS:
                raise ValueError(f"unknown correlation {self.correlation!r}; expected one of "
                                 f"{sorted(CORRELATIONS)}")
            self.correlation = CORRELATIONS[self.correlation]()

    def prepare(self, run):
        self._corr = self.correlation or run.correlation
        if self._corr is None:
            raise ValueError("syncsde needs a correlation model: the task gives none and none was passed")
        self._schedule = self.inv_lambda.bind(run.timesteps)
        like = torch.zeros((run.views.num_views, *run.views.view_shape), dtype=run.dtype,
                           device=run.device)
        m = self._corr.masks(run.views, like)
        self._masks = m.reshape((m.shape[0],) + (1,) * (run.batch_dims + 1) + tuple(m.shape[-2:]))

    def inv_lambda_at(self, info: StepInfo, eta: float | None = None) -> float:
        """1/lambda at this step, capped so that the pull is at most ``max_pull * c_x``; ``eta``:
        the DDIM eta whose eps coefficient the solver's step has (default ``info.eta``)."""
        inv = self._schedule(info.t)
        if self.max_pull is not None and inv > 0:
            c = ops.ddim_coefficients(info.abar_t, info.abar_s, info.eta if eta is None else eta)
            if c.gamma * inv > self.max_pull * c.c_x:
                inv = self.max_pull * c.c_x / c.gamma
        return inv

    def step(self, run, y, eps, info, noise):
        ref = self._corr.references(y, run.views)
        eps_eta = getattr(run.solver, "eps_eta", None)
        inv = self.inv_lambda_at(info, eps_eta(info) if eps_eta is not None else None)
        if run.solver.fused_syncsde:
            return ops.syncsde_step(y, eps, ref, self._masks, info.abar_t, info.abar_s, inv,
                                    info.eta, noise, out=y)
        if getattr(run.solver, "multistep", False) and inv > 0:
            # a multistep solver keeps the eps it is handed in its history and extrapolates
            # from it at later steps: the pull goes on the state after the step instead, as
            # the update of seed 000 writes it, - gamma_t inv_lambda(t) M_i (y_i - Xtilde_i)
            gamma = ops.ddim_coefficients(info.abar_t, info.abar_s, info.eta).gamma
            pull = (y - ref) * self._masks * (gamma * inv)
            y = run.solver.step(y, eps, info, noise, out=y)
            return y.sub_(pull)
        # any other solver: the correlation term as the conditional score it is,
        # eps_i + inv_lambda(t) M_i (y_i - Xtilde_i) / sqrt(1 - abar_t) (docs/method.md)
        if inv > 0 and info.abar_t < 1.0:
            eps = eps + (y - ref) * self._masks * (inv / math.sqrt(1.0 - info.abar_t))
        return run.solver.step(y, eps, info, noise, out=y)


class MultiDiffusion(Strategy):
    name = "multidiffusion"
    init = "canvas"

    def step(self, run, y, eps, info, noise):
        x_s = run.solver.step(y, eps, info, noise)
        run.canvas = run.views.average(x_s, run.weights, fallback=run.canvas)
        return run.views.forward(run.canvas, out=y)


class SyncTweedies(Strategy):
    name = "synctweedies"
    init = "canvas"

    def step(self, run, y, eps, info, noise):
        x0 = ops.tweedie(y, eps, info.abar_t)
        x0_canvas = run.views.average(x0, run.weights)
        x0 = run.views.forward(x0_canvas, out=x0)
        if info.abar_t < 1.0:
            eps = ops.eps_from_x0(y, x0, info.abar_t, out=eps)
        return run.solver.step(y, eps, info, noise, out=y)


class NoiseAverage(Strategy):
    name = "noise_average"
    init = "canvas"

    @staticmethod
    def average_eps(run, eps):
        """Every view's eps replaced by the canonical average mapped back (Visual Anagrams)."""
        return run.views.forward(run.views.average(eps, run.weights), out=eps)

    def step(self, run, y, eps, info, noise):
        return run.solver.step(y, self.average_eps(run, eps), info, noise, out=y)


class Collage(Strategy):
    """Factor-graph score composition on a chain of windows (DiffCollage's junction-tree rule):

        eps(X) = sum_i f_i^T eps(f_i X) - sum_i g_i^T eps(g_i X),

    with g_i the overlap of windows i-1 and i. For a Markov field this is the exact score of
    the whole canvas, since ``log p(X) = sum_i log p(C_i) - sum_i log p(S_i)``; it needs the model
    on overlap-sized inputs too (one extra batch per step). Views stay consistent (canvas init),
    each steps with the canvas eps. Found by the exact-score benchmark (docs/benchmarks.md).
    """

    name = "collage"
    init = "canvas"

    def prepare(self, run):
        if not hasattr(run.views, "separators"):
            raise ValueError("collage needs window views (wide images, long sequences)")
        self._seps = run.views.separators()

    def step(self, run, y, eps, info, noise):
        views = run.views
        x = views.average(y)
        eps_canvas = views.adjoint(eps)
        for sep, owners in self._seps:
            xs = sep.forward(x)
            neg = None if run.negative is None else [run.negative[i] for i in owners]
            es = run.predict_eps(xs, info.t, info.abar_t, [run.cond[i] for i in owners], neg)
            eps_canvas -= sep.adjoint(es)
        eps = views.forward(eps_canvas, out=eps)
        return run.solver.step(y, eps, info, noise, out=y)


STRATEGIES = {
    "independent": Independent,
    "syncsde": SyncSDE,
    "multidiffusion": MultiDiffusion,
    "synctweedies": SyncTweedies,
    "noise_average": NoiseAverage,
    "collage": Collage,
}


def make_strategy(spec: str | Strategy, **kwargs) -> Strategy:
    """A strategy from its name (with keyword options) or the object itself."""
    if isinstance(spec, Strategy):
        return spec
    if spec not in STRATEGIES:
        raise ValueError(f"unknown strategy {spec!r}; expected one of {sorted(STRATEGIES)}")
    cls = STRATEGIES[spec]
    params = inspect.signature(cls).parameters
    takes_any = any(p.kind is p.VAR_KEYWORD for p in params.values())
    unknown = sorted(k for k in kwargs if k not in params or k == "name") if not takes_any else []
    if unknown:
        accepted = sorted(k for k in params if k != "name")
        raise ValueError(f"strategy {spec!r} takes no option {', '.join(map(repr, unknown))}; its "
                         f"options are {accepted}")
    return cls(**kwargs)

# gradient-based strategies live in syncsde.guidance (they subclass the classes above)
from syncsde.guidance.syncdiffusion import SyncDiffusion  # noqa: E402
from syncsde.guidance.syncvc import SyncVC  # noqa: E402
STRATEGIES["syncdiffusion"] = SyncDiffusion
STRATEGIES["syncvc"] = SyncVC
# region-graph (Kikuchi) composition for 2-D grids and loops of windows (issue 13)
import syncsde.strategies_regiongraph  # noqa: E402,F401  (registers "regiongraph")
import syncsde.strategies_poe  # noqa: E402,F401  (registers "poe")
import syncsde.strategies_inpaint  # noqa: E402,F401  (registers "inpaint")
import syncsde.strategies_projection  # noqa: E402,F401  (registers "projection")
import syncsde.sequential  # noqa: E402,F401  (registers "sequential": windows one after another)
