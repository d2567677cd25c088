r"""Conditional sampling by Tweedie moment projection: the score of the noised conditional law.

The target is ``p(x_U | x_K = k)`` (editing, mask composition, outpainting; ``inpaint``'s
target). Replacement (``inpaint``) follows the model's ``p_t(x_U,t | x_K,t)``, the conditional
given *noised* known pixels; the law to follow is the noised conditional ``p_t(x_t | x_K,0 =
k)``, whose score is

    grad log p_t(x_t | k) = grad log p_t(x_t) + grad_{x_t} log p(k | x_t).

Tweedie's formulas give the first two moments of ``x_0 | x_t``: the mean ``x0_hat(x_t) = (x_t -
sigma_t eps(x_t)) / sqrt(abar_t)`` and the covariance ``C_t = (sigma_t^2 / sqrt(abar_t)) J``,
``J = d x0_hat / d x_t``. Projecting ``x_0 | x_t`` on the Gaussian with these moments,

    p(k | x_t) ~ N(k; A x0_hat, A C_t A^T)          (A: the known pixels)

and with ``C_t`` held fixed the conditional eps is (docs/composition.md, eq. 7)

    eps_k = eps - (sqrt(abar_t) / sigma_t) J^T A^T v,     (A J A^T) v = k - A x0_hat,

so that the conditional Tweedie estimate ``x0_hat + J^T A^T v`` meets ``k`` on the known pixels
and moves the unknown ones by their regression on the residual. For a Gaussian prior ``x0_hat``
is affine, ``C_t`` is exact and constant, and ``eps_k`` is the exact noised conditional score: the
sampler then follows the conditional law's own probability flow, and its only error is the
solver's (the oracle's). For a learned model it is the moment-projection approximation (Boys et
al. 2023, "Tweedie moment projected diffusions"; Song et al. 2023, PiGDM, with ``C_t``
isotropic).

``(A J A^T) v = r`` is solved by conjugate gradients with ``cg_steps`` iterations; each applies
``J^T`` once (a vector-Jacobian product through the model: ``J`` of an exact denoiser is
symmetric). Cost per step and conditioned view: one more model input, with its graph, and
``cg_steps + 1`` backward passes through it, recorded by
:func:`~syncsde.guidance.model.count_backward`. Known values come from ``known=`` /
``known_mask=`` (clean pixels), or, in the mask and edit problems, from the source
trajectory's Tweedie estimate at the same level (its final state at the last step). At the last
step the known pixels are copied, as in ``inpaint``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch

from syncsde import ops
from syncsde.guidance.model import count_backward, differentiable_eps
from syncsde.strategies import STRATEGIES, Strategy
from syncsde.strategies_inpaint import known_pixels

__all__ = ["MomentProjection"]


def _dot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-sample inner products of ``[B, ...]`` tensors, shaped ``[B, 1, ..., 1]``."""
    d = (a * b).flatten(1).sum(1)
    return d.reshape((-1,) + (1,) * (a.dim() - 1))


@dataclass
class MomentProjection(Strategy):
    """``cg_steps`` conjugate-gradient iterations per step (the exact solve needs as many as
    there are known pixels; fewer give a partial projection; the default 3 keeps an edit within
    4x SyncSDE's model inputs, docs/benchmarks.md). ``warm_start`` starts each step's solve
    from the previous step's solution (one more backward pass; closer to the oracle on the
    exact benchmark). ``known`` / ``known_mask`` as in
    :class:`~syncsde.strategies_inpaint.Inpaint`. In the mask and edit problems
    ``clean_source`` (one view's shape; an edit's source latent) gives the known values
    instead of the sources' Tweedie estimates: the pixels each view copies, taken from the
    clean source through the task's correlation model; at the last step the source views (those
    with no known pixels: an edit's reconstruction) end at the clean source, so the output keeps
    the source's own pixels, not their reconstruction, where it copies them."""

    cg_steps: int = 3
    warm_start: bool = False
    known: Any = None
    known_mask: Any = None
    clean_source: Any = None
    name: str = "projection"
    _known: Any = field(default=None, init=False, repr=False)
    _pull: Any = field(default=None, init=False, repr=False)
    _corrected: Any = field(default=None, init=False, repr=False)

    def __post_init__(self):
        if not (isinstance(self.cg_steps, int) and not isinstance(self.cg_steps, bool)
                and self.cg_steps >= 1):
            raise ValueError(f"cg_steps must be an int >= 1, got {self.cg_steps!r}")
        if not isinstance(self.warm_start, bool):
            raise ValueError(f"warm_start must be True or False, got {self.warm_start!r}")
        if (self.known is None) != (self.known_mask is None):
            raise ValueError("pass known and known_mask together (or neither, to use the task's "
                             "correlation model)")
        if self.known is not None and self.clean_source is not None:
            raise ValueError("clean_source is for the task's correlation model; with known= "
                             "the known values are given already")

    @property
    def resumable(self) -> bool:
        """A warm start carries the last solution from step to step, which checkpoints do not
        hold: the sampler refuses ``checkpoint=`` then."""
        return not self.warm_start

    def __repr__(self) -> str:
        k = "correlation" if self.known is None else f"known {tuple(self.known.shape)}"
        return f"MomentProjection(cg_steps={self.cg_steps}, warm_start={self.warm_start}, {k})"

    def prepare(self, run):
        if run.denoiser is None:
            raise ValueError("projection differentiates through the model: the run has none")
        self._known, self._pull, _, self._corrected = known_pixels(
            run, self.known, self.known_mask, self.name)
        self._n_steps = len(run.timesteps)
        self._previous = None
        self._clean = self._clean_refs = None
        if self.clean_source is not None:
            c = torch.as_tensor(self.clean_source, dtype=run.dtype, device=run.device)
            want = tuple(run.views.view_shape)
            if tuple(c.shape[-3:]) != want or c.dim() > 3 + run.batch_dims:
                raise ValueError(f"clean_source has shape {tuple(c.shape)}; expected (..., {want})")
            if not torch.isfinite(c).all():
                raise ValueError("clean_source holds NaN or infinite values")
            self._clean = c
        self._sources = self._source_views(run) if self._clean is not None else []

    def _source_views(self, run):
        """The views with no known pixels that a conditioned view copies from (an edit's
        reconstruction; not a view that is free only because its mask is empty), found by
        probing the correlation model with one view at a time."""
        n = run.views.num_views
        shape = (n,) + (1,) * run.batch_dims + tuple(run.views.view_shape)
        out = []
        for j in range(n):
            if bool((self._pull[j] > 0).any()) or not self._corrected:
                continue
            probe = torch.zeros(shape, dtype=run.dtype, device=run.device)
            probe[j] = 1.0
            seen = run.correlation.references(probe, run.views) * self._pull
            if bool((seen[self._corrected] != 0).any()):
                out.append(j)
        return out

    def _references(self, run, y, eps, abar):
        """The known values for every view at level ``abar``: the clean ``known``, or the
        sources' Tweedie estimates through the task's correlation model."""
        if self._known is not None:
            return self._known.expand(y.shape[1:]).expand_as(y)
        if self._clean is not None:   # the same at every level: mapped once per run
            if self._clean_refs is None or self._clean_refs.shape != y.shape:
                self._clean_refs = run.correlation.references(
                    self._clean.expand_as(y).contiguous(), run.views)
            return self._clean_refs
        return run.correlation.references(ops.tweedie(y, eps, abar), run.views)

    def _projected_eps(self, run, x, k, mask, cond, negative, info):
        """eq. (7) for the states ``x [M, *batch, C, h, w]`` of the conditioned views."""
        a = info.abar_t
        sigma = math.sqrt(1.0 - a)
        shape = x.shape
        flat_x = x.reshape(-1, *shape[-3:]).detach().clone().requires_grad_(True)
        per = 1 if run.batch_dims == 0 else shape[1]
        cond = [c for c in cond for _ in range(per)]
        negative = None if negative is None else [c for c in negative for _ in range(per)]
        m = mask.expand(shape).reshape(flat_x.shape)
        with torch.enable_grad():
            e = differentiable_eps(run.denoiser, flat_x, info.t, a, cond, negative,
                                   run.guidance_scale)
            x0 = (flat_x - sigma * e) / math.sqrt(a)
            graph_inputs = len(flat_x)

            def jt(v):   # J^T v, one backward pass through the model
                count_backward(run.denoiser, graph_inputs)
                (g,) = torch.autograd.grad(x0, flat_x, grad_outputs=v, retain_graph=True)
                return g

            residual = m * (k.reshape(flat_x.shape) - x0.detach())
            v = torch.zeros_like(residual)
            if self.warm_start and self._previous is not None:
                v = self._previous.reshape(residual.shape)
                residual = residual - m * jt(m * v)
            p = residual.clone()
            rs = _dot(residual, residual)
            for _ in range(self.cg_steps):
                ap = m * jt(m * p)
                pap = _dot(p, ap)
                # converged samples (or a model whose J is not positive there) stop moving
                ok = (pap > 0) & (rs > 0)
                alpha = torch.where(ok, rs / torch.where(ok, pap, torch.ones_like(pap)),
                                    torch.zeros_like(pap))
                v = v + alpha * p
                residual = residual - alpha * ap
                rs_new = _dot(residual, residual)
                beta = torch.where(ok, rs_new / torch.where(ok, rs, torch.ones_like(rs)),
                                   torch.zeros_like(rs))
                p = residual + beta * p
                rs = rs_new
            correction = jt(m * v)
            self._previous = v.detach()
        out = e.detach() - (math.sqrt(a) / sigma) * correction
        return out.reshape(shape).to(x.dtype)

    def step(self, run, y, eps, info, noise):
        a = info.abar_t
        idx = self._corrected
        if idx and a < 1.0:
            k = self._references(run, y, eps, a)[idx]
            neg = None if run.negative is None else [run.negative[i] for i in idx]
            eps[idx] = self._projected_eps(run, y[idx], k, self._pull[idx],
                                           [run.cond[i] for i in idx], neg, info)
        y = run.solver.step(y, eps, info, noise, out=y)
        final = info.index == self._n_steps - 1
        # views whose every pixel is known (the composite of the three-trajectory problems)
        # copy their sources at every level; the conditioned ones only at the end
        copy = self._pull.clone()
        if not final:
            copy[idx] = 0.0
        if self._known is not None:
            if not final:
                return y
            return ops.replace_where(y, copy, self._known.expand_as(y).contiguous())
        if final and self._clean is not None and self._sources:
            y[self._sources] = self._clean.expand_as(y[self._sources])
        return ops.replace_where(y, copy, run.correlation.references(y, run.views))


STRATEGIES["projection"] = MomentProjection
