r"""SyncDiffusion (Lee et al., NeurIPS 2023; seed 004): MultiDiffusion plus one gradient step per
window towards perceptual agreement with an anchor window (docs/method.md, "SyncDiffusion").

At a guided step ``k`` (``(k + 1) % every == 0`` and ``k < first``), with ``a = abar_t``:

1. the anchor's Tweedie estimate ``x0_a = (y_a - sqrt(1-a) eps_a) / sqrt(a)`` is decoded once
   (no gradient) to the target ``A = D(x0_a)``;
2. every other window ``j`` takes ``y_j <- y_j - w_k grad_{y_j} d(D(x0_j(y_j)), A)`` with
   ``w_k = weight * decay^k`` (the paper: w = 20, decay 0.95, LPIPS);
3. (``refresh``) eps of the moved windows is predicted again, then the MultiDiffusion step
   (DDIM per window, canonical average of ``x_s``, re-crop) runs as usual.

``grad_through="model"`` differentiates ``x0_j(y_j)`` through the model (the paper: a UNet
backward per window); ``"tweedie"`` holds eps fixed, so ``d x0_j / d y_j = I / sqrt(a)`` and only
the decoder and the distance are differentiated (no model backward at all). All windows'
gradients come from one batched forward/backward (each loss depends on its own window only, so
the gradient of the sum is the per-window gradient).
"""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from syncsde.guidance._common import (
    Costs,
    batch_size,
    check_decode,
    check_grad_through,
    check_int,
    check_nonneg,
    flat_cond,
)
from syncsde.guidance.distances import resolve_distance
from syncsde.guidance.model import differentiable_eps
from syncsde.strategies import MultiDiffusion

__all__ = ["SyncDiffusion"]


@dataclass
class SyncDiffusion(MultiDiffusion):
    """MultiDiffusion + SyncDiffusion's perceptual gradient step (module docstring).

    Options: ``weight`` (w >= 0; 0 is MultiDiffusion bit for bit), ``decay`` (in (0, 1]),
    ``anchor`` (view index; ``None`` = the middle view ``N // 2``, as the authors), ``distance``
    (``"gram"``, ``"pixel"`` or a callable ``d(images, target) -> [B]``, e.g.
    :class:`~syncsde.guidance.distances.LPIPSDistance`), ``every`` (guide when
    ``(k+1) % every == 0``: f guided steps out of T is ``every = T / f``), ``first`` (guide only
    steps ``k < first``; ``None``: all), ``decode`` (latents -> images; ``None``: identity for
    pixel models and priors, the VAE decoder for latent models), ``grad_through``
    (``"model"`` | ``"tweedie"``), ``refresh`` (predict eps again after the move; the paper does).
    """

    weight: float = 20.0
    decay: float = 0.95
    anchor: int | None = None
    distance: Any = "gram"
    every: int = 1
    first: int | None = None
    decode: Callable | None = None
    grad_through: str = "model"
    refresh: bool = True
    name: str = "syncdiffusion"

    def __post_init__(self):
        self.costs = Costs()  # not a field: a run's description must not depend on it
        self.weight = check_nonneg(self.weight, "weight")
        d = self.decay
        if isinstance(d, bool) or not isinstance(d, (int, float)) or not 0 < d <= 1:
            raise ValueError(f"decay must be a number in (0, 1], got {d!r}")
        self.every = check_int(self.every, "every", 1)
        if self.first is not None:
            self.first = check_int(self.first, "first", 0)
        if self.anchor is not None:
            self.anchor = check_int(self.anchor, "anchor", 0)
        self._distance = resolve_distance(self.distance)
        self.decode = check_decode(self.decode)
        self.grad_through = check_grad_through(self.grad_through)
        if not isinstance(self.refresh, bool):
            raise TypeError(f"refresh must be True or False, got {self.refresh!r}")

    def prepare(self, run):
        n = run.views.num_views
        self._anchor = n // 2 if self.anchor is None else self.anchor
        if self._anchor >= n:
            raise ValueError(f"anchor view {self._anchor} does not exist: the problem has {n} views")
        self._others = [i for i in range(n) if i != self._anchor]
        self.costs.reset()

    def weight_at(self, index: int) -> float:
        """``w * decay^k`` on guided steps, 0 elsewhere."""
        if (index + 1) % self.every or (self.first is not None and index >= self.first):
            return 0.0
        return self.weight * self.decay ** index

    def _decode(self, x0: torch.Tensor) -> torch.Tensor:
        return x0 if self.decode is None else self.decode(x0)

    def distances(self, y: torch.Tensor, eps: torch.Tensor, abar_t: float) -> torch.Tensor:
        """``d(D(x0_j), D(x0_anchor))`` for every view, ``[N, *batch]`` (the anchor's is 0):
        what the guided step lowers. Call after :meth:`prepare` (it fixes the anchor)."""
        with torch.no_grad():
            x0 = (y - math.sqrt(1.0 - abar_t) * eps) / math.sqrt(abar_t)
            shape = tuple(y.shape[-3:])
            target = self._decode(x0[self._anchor].reshape(-1, *shape))
            imgs = self._decode(x0.reshape(-1, *shape))
            t = target.repeat(y.shape[0], *([1] * (target.dim() - 1)))
            return self._distance(imgs, t).reshape(y.shape[0], *y.shape[1:-3])

    def step(self, run, y, eps, info, noise):
        w = self.weight_at(info.index) if self.weight > 0 else 0.0
        if w > 0 and self._others:
            self._guide(run, y, eps, info, w)
        return super().step(run, y, eps, info, noise)

    def _guide(self, run, y, eps, info, w):
        a = info.abar_t
        others = self._others
        b = batch_size(run, y)
        shape = tuple(y.shape[-3:])
        with torch.no_grad():
            x0_anchor = (y[self._anchor] - math.sqrt(1.0 - a) * eps[self._anchor]) / math.sqrt(a)
            target = self._decode(x0_anchor.reshape(-1, *shape)).detach()
        target = target.repeat(len(others), *([1] * (target.dim() - 1)))
        with torch.enable_grad():
            x = y[others].reshape(-1, *shape).detach().clone().requires_grad_(True)
            if self.grad_through == "model":
                e = differentiable_eps(run.denoiser, x, info.t, a, flat_cond(run, others, b),
                                       flat_cond(run, others, b, negative=True),
                                       run.guidance_scale)
                self.costs.model_inputs += len(x) * (2 if run.guidance_scale != 1.0 else 1)
                self.costs.grad_model_inputs += len(x) * (2 if run.guidance_scale != 1.0 else 1)
            else:
                e = eps[others].reshape(x.shape)
            x0 = (x - math.sqrt(1.0 - a) * e) / math.sqrt(a)
            loss = self._distance(self._decode(x0), target).sum()
            (g,) = torch.autograd.grad(loss, x)
        self.costs.backward += 1
        self.costs.guided_steps += 1
        idx = torch.tensor(others, device=y.device)
        y.index_copy_(0, idx, y[others] - w * g.reshape(y[others].shape).to(y.dtype))
        if self.refresh:
            neg = None if run.negative is None else [run.negative[i] for i in others]
            new = run.predict_eps(y[others], info.t, a, [run.cond[i] for i in others], neg)
            self.costs.model_inputs += len(others) * b * (2 if run.guidance_scale != 1.0 else 1)
            eps.index_copy_(0, idx, new)
