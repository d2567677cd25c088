r"""Region-graph (Kikuchi / cluster-variation) score composition for any set of windows.

The regions are the windows and every intersection of them (the closure under intersection);
each region R gets the counting number of the cluster variation method,

    c_R = 1 - sum_{S strictly contains R} c_S          (windows: c = 1),

and the canvas score is composed as

    eps(X) = sum_R c_R P_R^T eps(P_R X)                 (docs/composition.md, eq. (1)).

It is the exact score of ``p(X) = prod_R p(R)^{c_R}``. On a 1-D chain of windows every
intersection deeper than two consecutive windows gets c = 0 and this is the ``collage``
junction-tree rule; on a 2-D grid it is "windows minus pairwise overlaps plus their
intersections" (for a 2 x 2 block: four windows, minus four strips, plus the centre square),
exact for a field that is Markov at the overlap scale in both directions (e.g. the separable
exponential kernel, docs/composition.md); on a circular chain it is the Bethe approximation of
the loop (not exact: a loop has no junction tree of crops).

Regions with ``c_R = 0`` are dropped; every other region is one extra model input per step (the
model on the region's crop, with the prompt of a window that contains it). Model inputs per
step: ``N + #{R: c_R != 0, R not a window}``. Intersections of two circular windows that fall
apart into two arcs are refused (windows wider than half the canvas).

Classifier-free guidance (``guidance="windows"``, the default): (1) composes the *conditional*
law, and the guidance term ``(w - 1)(eps_c - eps_u)`` is the windows' average (MultiDiffusion's
rule), so that no region is guided with a negative weight:

    eps(X) = sum_R c_R P_R^T eps_c(P_R X) + (w - 1) A[eps_c - eps_u](X)          (2)

(``A`` = the windows' coverage-weighted average). Composing the guided eps by (1) instead
(``guidance="regions"``, linear, so the same as composing eps_c and eps_u separately) raises the
ratio of window and overlap classifiers ``prod_W p(c|x_W) / prod_O p(c|x_O)`` to the power
``w``: any disagreement between a learned model's window and overlap terms is multiplied by
``w`` with the sign of ``c_R``, and the overlaps are pushed *away* from the prompt (on the
scenes model at CFG 3: night and grass patches in a sunset over the sea; docs/composition.md).
(2) costs the same model inputs as guided regions (the overlaps conditional only, the windows'
unconditional eps once more, since the sampler hands the strategy only the guided eps); at
``w = 1`` the two are the same.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from syncsde.strategies import STRATEGIES, Strategy
from syncsde.views import WindowViews

__all__ = ["Region", "region_graph", "region_groups", "RegionGraph", "step_generator"]


def step_generator(seed: int, step: int) -> torch.Generator:
    """The corrector noise of step ``step``: a generator seeded from (seed, step) only, so a run
    resumed from a checkpoint draws the same noise as an uninterrupted one."""
    return torch.Generator().manual_seed((int(seed) * 1_000_003 + int(step)) % (2 ** 63))


@dataclass(frozen=True)
class Region:
    """Rectangle rows ``[top, top + h)`` x columns ``[left, left + w)`` (columns mod W when the
    canvas wraps; ``left`` in ``[0, W)``)."""

    top: int
    left: int
    h: int
    w: int

    def columns(self, W: int, circular: bool) -> frozenset[int]:
        return frozenset((self.left + k) % W if circular else self.left + k for k in range(self.w))


def _arc(cols: frozenset[int], W: int, circular: bool) -> tuple[int, int] | None:
    """``(left, width)`` of a set of columns that is one interval (one arc when circular)."""
    if not cols:
        return None
    if len(cols) == W:
        return 0, W
    starts = [c for c in cols if ((c - 1) % W if circular else c - 1) not in cols]
    if len(starts) != 1:
        raise ValueError("two windows intersect in two pieces (circular windows wider than half "
                         "the canvas); the region graph needs intersections that are crops")
    return starts[0], len(cols)


def _intersect(a: Region, b: Region, W: int, circular: bool) -> Region | None:
    top, bot = max(a.top, b.top), min(a.top + a.h, b.top + b.h)
    if bot <= top:
        return None
    arc = _arc(a.columns(W, circular) & b.columns(W, circular), W, circular)
    if arc is None:
        return None
    return Region(top, arc[0], bot - top, arc[1])


def _contains(big: Region, small: Region, W: int, circular: bool) -> bool:
    return (big.top <= small.top and small.top + small.h <= big.top + big.h
            and small.columns(W, circular) <= big.columns(W, circular))


def region_graph(views: WindowViews) -> list[tuple[Region, int, int]]:
    """Regions of the cluster variation method on ``views``: ``(region, c_R, owner)`` for every
    window and intersection with ``c_R != 0``; ``owner`` is a window containing the region.
    Windows come first, in view order."""
    if not isinstance(views, WindowViews):
        raise ValueError("the region-graph composition needs window views (crops of a canvas); "
                         f"got {type(views).__name__}")
    W = views.canvas_shape[2]
    circ = bool(views.circular)
    h, w = views.size
    wins = [Region(int(top), int(left) % W if circ else int(left), h, w)
            for top, left in views.offsets.tolist()]
    if len(set(wins)) != len(wins):
        raise ValueError("the region graph needs distinct windows (two views are the same crop)")
    regions = set(wins)
    frontier = list(wins)
    while frontier:  # closure under intersection
        new = set()
        for a in frontier:
            for b in list(regions):
                r = _intersect(a, b, W, circ)
                if r is not None and r not in regions:
                    new.add(r)
        regions |= new
        frontier = list(new)
    order = sorted(regions, key=lambda r: (-(r.h * r.w), r.top, r.left, r.h, r.w))
    count: dict[Region, int] = {}
    for r in order:
        if r in wins:
            count[r] = 1
            continue
        count[r] = 1 - sum(c for s, c in count.items()
                           if s != r and (s.h * s.w) > (r.h * r.w) and _contains(s, r, W, circ))
    out = [(r, 1, i) for i, r in enumerate(wins)]
    for r in order:
        if r in wins or count[r] == 0:
            continue
        owner = next(i for i, win in enumerate(wins) if _contains(win, r, W, circ))
        out.append((r, count[r], owner))
    return out


def region_groups(views: WindowViews, graph=None, dtype=torch.float32, device=None):
    """The non-window regions of ``region_graph(views)`` (or of ``graph``) batched by size:
    ``[(region views, counting numbers c_R as a tensor, owner window of each)]``, one model
    batch each."""
    graph = region_graph(views) if graph is None else graph
    groups: dict[tuple[int, int], list[tuple[Region, int, int]]] = {}
    for r, c, owner in graph[views.num_views:]:
        groups.setdefault((r.h, r.w), []).append((r, c, owner))
    out = []
    for (rh, rw), items in sorted(groups.items()):
        offs = torch.tensor([(r.top, r.left) for r, _, _ in items], dtype=torch.int64)
        sub = WindowViews(views.canvas_shape, (rh, rw), offs, views.circular)
        coef = torch.tensor([float(c) for _, c, _ in items], dtype=dtype, device=device)
        out.append((sub, coef, [o for _, _, o in items]))
    return out


class RegionGraph(Strategy):
    """``eps(X) = sum_R c_R P_R^T eps(P_R X)`` over the region graph of the windows (module
    docstring). Canvas init; every view then steps with the crop of the composed canvas eps,
    so views stay consistent. Extra model inputs per step: the non-window regions with
    ``c_R != 0``, batched by region size.

    ``mix = beta`` in [0, 1) shrinks the composed (conditional) eps toward the windows' average,

        eps = A[eps_W] + beta (sum_R c_R P_R^T eps_R - A[eps_W])                          (3)

    (beta = 1: the region graph; beta = 0: MultiDiffusion's average at the region graph's cost).
    With a learned model the region graph's sum of ``N + #regions`` model errors has a larger
    variance than the average's; on the scenes model the least-squares beta of the composed
    denoising loss on true panoramas is 0.2-0.3 at every t (syncsde/scenes/composed_loss.py).

    ``corrector_steps = K > 0`` adds K unadjusted Langevin moves on the canvas with the composed
    score before each step, ``X <- X - h eps(X) / sqrt(1 - abar_t) + sqrt(2 h) z`` with
    ``h = snr (1 - abar_t)`` (noise from a generator seeded with ``(seed, step)``): annealed MCMC on the
    path of composed laws, which ends at the exact law where (1) is exact at t = 0 (Markov
    fields; docs/composition.md). Each move costs one more set of region inputs.
    """

    name = "regiongraph"
    init = "canvas"

    def __init__(self, corrector_steps: int = 0, snr: float = 0.5, seed: int = 0,
                 guidance: str = "windows", mix: float = 1.0, start: float = 0.0,
                 stop: float = 1.0):
        if not (isinstance(corrector_steps, int) and corrector_steps >= 0):
            raise ValueError(f"corrector_steps must be an int >= 0, got {corrector_steps!r}")
        if not (isinstance(snr, (int, float)) and 0 < snr < float("inf")):
            raise ValueError(f"snr must be a finite number > 0, got {snr!r}")
        if guidance not in ("windows", "regions"):
            raise ValueError(f"guidance must be 'windows' or 'regions', got {guidance!r}")
        self.corrector_steps, self.snr, self.seed = corrector_steps, float(snr), int(seed)
        if isinstance(mix, bool) or not (isinstance(mix, (int, float)) and 0.0 <= mix <= 1.0):
            raise ValueError(f"mix must be a number in [0, 1], got {mix!r}")
        self.guidance, self.mix = guidance, float(mix)
        for name, value in (("start", start), ("stop", stop)):
            if isinstance(value, bool) or not (isinstance(value, (int, float))
                                               and 0.0 <= value <= 1.0):
                raise ValueError(f"{name} must be a number in [0, 1], got {value!r}")
        if not start < stop:
            raise ValueError(f"start must be below stop, got start={start!r}, stop={stop!r}")
        self.start, self.stop = float(start), float(stop)

    def __repr__(self) -> str:
        return (f"RegionGraph(corrector_steps={self.corrector_steps}, snr={self.snr}, "
                f"seed={self.seed}, guidance={self.guidance!r}, mix={self.mix}, "
                f"start={self.start}, stop={self.stop})")

    def prepare(self, run):
        self.regions = region_graph(run.views)
        self._groups = region_groups(run.views, self.regions, run.dtype, run.device)

    @property
    def extra_inputs_per_step(self) -> int:
        """Regions other than the windows with ``c_R != 0`` (one model input each per
        composition, without CFG). Under CFG, ``guidance="regions"`` doubles them;
        ``guidance="windows"`` runs them once and the windows once more (unconditional)."""
        return sum(len(o) for _, _, o in self._groups)

    def _compose(self, run, x, y, eps, info):
        """Canvas eps from the windows' states ``y`` and guided eps ``eps`` and the other
        regions' model calls: (1), or (2) under guidance with ``guidance="windows"``."""
        w = float(run.guidance_scale)
        split = self.guidance == "windows" and w != 1.0
        if split:   # eps = e_u + w (e_c - e_u): recover e_c from one more unconditional call
            uncond = run.negative if run.negative is not None else [None] * run.views.num_views
            eps_u = run.predict_eps(y, info.t, info.abar_t, uncond, guidance_scale=1.0)
            eps_c = eps_u + (eps - eps_u) / w
            eps_canvas = run.views.adjoint(eps_c)
        else:
            eps_canvas = run.views.adjoint(eps)
        for sub, coef, owners in self._groups:
            xs = sub.forward(x)
            cond = [run.cond[i] for i in owners]
            if split:
                es = run.predict_eps(xs, info.t, info.abar_t, cond, guidance_scale=1.0)
            else:
                neg = None if run.negative is None else [run.negative[i] for i in owners]
                es = run.predict_eps(xs, info.t, info.abar_t, cond, neg)
            es = es * coef.reshape((-1,) + (1,) * (es.dim() - 1))
            eps_canvas += sub.adjoint(es)
        if self.mix != 1.0:   # (3): shrink toward the windows' average
            average = run.views.average(eps_c if split else eps)
            eps_canvas = average + self.mix * (eps_canvas - average)
        if split:   # (2): the guidance term averaged over windows, never negatively weighted
            eps_canvas += (w - 1.0) * run.views.average(eps_c - eps_u)
        return eps_canvas

    def active(self, info) -> bool:
        """Whether step ``info.index`` lies in the ``[start, stop)`` fraction of the run (counted
        from the noisiest step) where the region terms are composed; outside it the step is
        MultiDiffusion's (the windows' average) and costs no region inputs."""
        fraction = info.index / max(len(info.timesteps), 1)
        return self.start <= fraction < self.stop

    def step(self, run, y, eps, info, noise):
        views = run.views
        if not self.active(info):
            eps = views.forward(views.average(eps), out=eps)
            return run.solver.step(y, eps, info, noise, out=y)
        x = views.average(y)
        eps_canvas = self._compose(run, x, y, eps, info)
        a = info.abar_t
        if self.corrector_steps and a < 1.0:
            h = self.snr * (1.0 - a)
            gen = step_generator(self.seed, info.index)
            for _ in range(self.corrector_steps):
                z = torch.randn(x.shape, generator=gen, dtype=torch.float32).to(x)
                x = x - (h / math.sqrt(1.0 - a)) * eps_canvas + math.sqrt(2.0 * h) * z
                y = views.forward(x, out=y)
                eps = run.predict_eps(y, info.t, a, run.cond, run.negative)
                eps_canvas = self._compose(run, x, y, eps, info)
        eps = views.forward(eps_canvas, out=eps)
        return run.solver.step(y, eps, info, noise, out=y)


STRATEGIES["regiongraph"] = RegionGraph
