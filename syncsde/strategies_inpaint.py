r"""Conditional sampling by replacement with annealed Langevin correctors (editing, mask
composition, outpainting).

The target is a conditional law ``p(x_U | x_K = k)``: the pixels ``K`` are known (the kept
background of an edit, the part of a window that earlier windows already generated), the rest
``U`` is sampled with the model's own score. Each level t keeps the known pixels on a path to
``k`` and samples the unknown ones from ``p_t(x_U | x_K,t)``:

1. *replacement*: ``x_K,t`` is set to a noised copy of ``k`` (RePaint: ``sqrt(abar_t) k +
   sqrt(1 - abar_t) z`` with fresh ``z``), or to another trajectory's state where the task gives
   a correlation model (the three-trajectory mask / edit problems: ``y_i <- y_i + M_i (Xtilde_i
   - y_i)``, SyncSDE's pull at full strength);
2. *correction*: ``K`` unadjusted Langevin moves on the unknown pixels only,

       x_U <- x_U - h eps_U(x) / sqrt(1 - abar_t) + sqrt(2 h) z_U,      h = snr (1 - abar_t),

   which leave ``p_t(x_U | x_K,t)`` invariant (up to the step's bias); without them the
   replaced path is RePaint's and its known/unknown boundary is not harmonized (the
   noised conditional is not the conditional of the noised law);
3. the solver's step with the last eps, then the replacement at the new level. At the last
   step the known pixels are set to ``k`` itself.

As t -> 0, ``p_t(x_U | x_K,t)`` tends to ``p(x_U | x_K = k)``, so with enough correctors the
output law is the conditional law (docs/composition.md, eq. 4). Views without known pixels step
as plain DDIM (nothing to correct), views with every pixel known are copies. Model inputs per
step: ``N + K * (views with known and unknown pixels)``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch

from syncsde import ops
from syncsde.strategies import STRATEGIES, Strategy
from syncsde.strategies_regiongraph import step_generator

__all__ = ["Inpaint", "known_pixels"]


@dataclass
class Inpaint(Strategy):
    """``known`` (the clean values, shaped like one view ``[*batch, C, h, w]`` or ``[C, h, w]``)
    with ``known_mask`` (``[h, w]``, 1 = known) conditions every view on those pixels; without
    them the task's correlation model says which pixels of which trajectory are copied from
    which (mask composition, editing)."""

    corrector_steps: int = 1
    snr: float = 0.5
    known: Any = None
    known_mask: Any = None
    reference_noise: str = "fresh"
    seed: int = 0
    name: str = "inpaint"
    _free: Any = field(default=None, init=False, repr=False)
    _pull: Any = field(default=None, init=False, repr=False)
    _corrected: Any = field(default=None, init=False, repr=False)

    def __post_init__(self):
        if not (isinstance(self.corrector_steps, int) and not isinstance(self.corrector_steps, bool)
                and self.corrector_steps >= 0):
            raise ValueError(f"corrector_steps must be an int >= 0, got {self.corrector_steps!r}")
        if not (isinstance(self.snr, (int, float)) and math.isfinite(self.snr) and self.snr > 0):
            raise ValueError(f"snr must be a finite number > 0, got {self.snr!r}")
        if self.reference_noise not in ("fresh", "trajectory"):
            raise ValueError(f"reference_noise must be 'fresh' or 'trajectory', got "
                             f"{self.reference_noise!r}")
        if (self.known is None) != (self.known_mask is None):
            raise ValueError("pass known and known_mask together (or neither, to use the task's "
                             "correlation model)")

    def __repr__(self) -> str:
        k = "correlation" if self.known is None else f"known {tuple(self.known.shape)}"
        return f"Inpaint(corrector_steps={self.corrector_steps}, snr={self.snr}, {k})"

    # ---- setup -----------------------------------------------------------------------------
    def prepare(self, run):
        self._known, self._pull, self._free, self._corrected = known_pixels(
            run, self.known, self.known_mask, type(self).name)
        self._n_steps = len(run.timesteps)

    # ---- the three moves ---------------------------------------------------------------------
    def _replace(self, run, y, abar, index, final, x0_ref=None):
        """The known pixels of ``y`` (at level ``abar``) put back on their path: the clean
        known values (or the sources' Tweedie estimates ``x0_ref``) noised afresh, or the
        sources' states themselves (``reference_noise="trajectory"``, and at the last step)."""
        if self._known is None:
            if x0_ref is None or final or abar >= 1.0:
                return ops.replace_where(y, self._pull, run.correlation.references(y, run.views))
            k = x0_ref
        else:
            k = self._known.expand(y.shape[1:]).contiguous()  # one draw of noise per sample
            if final or abar >= 1.0:
                return ops.replace_where(y, self._pull, k.expand_as(y).contiguous())
        gen = step_generator(self.seed + 7919, index)
        z = torch.randn(k.shape, generator=gen, dtype=torch.float32).to(k)
        noised = ops.lincomb(k, z, math.sqrt(abar), math.sqrt(1.0 - abar))
        return ops.replace_where(y, self._pull, noised.expand_as(y).contiguous())

    def _eps(self, run, y, eps, idx, t, abar):
        e = run.predict_eps(y[idx], t, abar, [run.cond[i] for i in idx],
                            None if run.negative is None else [run.negative[i] for i in idx])
        eps[idx] = e
        return eps

    def step(self, run, y, eps, info, noise):
        a = info.abar_t
        if info.index == 0:  # the initial states: condition them, then the model on them
            y = self._replace(run, y, a, -1, final=False)
            eps = self._eps(run, y, eps, list(range(run.views.num_views)), info.t, a)
        idx = self._corrected
        if idx and self.corrector_steps and a < 1.0:
            h = self.snr * (1.0 - a)
            gen = step_generator(self.seed, info.index)
            free = self._free[idx]
            for _ in range(self.corrector_steps):
                z = torch.randn(y[idx].shape, generator=gen, dtype=torch.float32).to(y)
                y[idx] = ops.masked_move(y[idx], free, eps[idx], -h / math.sqrt(1.0 - a), z,
                                         math.sqrt(2.0 * h))
                eps = self._eps(run, y, eps, idx, info.t, a)
        x0_ref = None
        if self._known is None and self.reference_noise == "fresh" and a < 1.0:
            x0_ref = run.correlation.references(ops.tweedie(y, eps, a), run.views)
        y = run.solver.step(y, eps, info, noise, out=y)
        return self._replace(run, y, info.abar_s, info.index, info.index == self._n_steps - 1, x0_ref)


def known_pixels(run, known, known_mask, strategy: str = "inpaint"):
    """Which pixels of which view are known, for the conditional-sampling strategies.

    Returns ``(known, pull, free, corrected)``: the checked clean values (``None`` when the task's
    correlation model names the sources instead), the known-pixel mask ``pull`` and its
    complement ``free`` shaped ``[N, 1 (batch)..., 1, h, w]`` to broadcast over ``[N, *batch, C,
    h, w]``, and the views that have both known and free pixels (the ones to condition)."""
    views = run.views
    n = views.num_views
    hw = tuple(views.view_shape[1:])
    like = torch.zeros((n, *views.view_shape), dtype=run.dtype, device=run.device)
    if known is not None:
        m = torch.as_tensor(known_mask, dtype=run.dtype, device=run.device)
        while m.dim() > 2 and m.shape[0] == 1:
            m = m[0]
        if tuple(m.shape) != hw:
            raise ValueError(f"known_mask has shape {tuple(m.shape)}; expected {hw}")
        if not torch.isfinite(m).all() or ((m != 0) & (m != 1)).any():
            raise ValueError("known_mask must hold only 0 (unknown) and 1 (known)")
        k = torch.as_tensor(known, dtype=run.dtype, device=run.device)
        if not torch.isfinite(k).all():
            raise ValueError("known holds NaN or infinite values")
        want = tuple(views.view_shape)
        if tuple(k.shape[-3:]) != want:
            raise ValueError(f"known has shape {tuple(k.shape)}; expected (..., {want})")
        pull = m.expand(n, 1, *hw)
    else:
        if run.correlation is None:
            raise ValueError(f"{strategy} needs known= and known_mask=, or a task with a "
                             "correlation model (mask composition, editing)")
        pull = run.correlation.masks(views, like).clamp(0.0, 1.0)
        k = None
    pull = pull.reshape((n,) + (1,) * (run.batch_dims + 1) + hw)
    free = 1.0 - pull
    has_known = (pull > 0).flatten(1).any(1)
    has_free = (free > 0).flatten(1).any(1)
    corrected = [i for i in range(n) if bool(has_known[i]) and bool(has_free[i])]
    return k, pull, free, corrected


STRATEGIES["inpaint"] = Inpaint
