r"""SyncVC (variational controls for diffusion synchronization; seed 003), on the SyncSDE update.

Derivation in docs/method.md ("SyncVC"). Per step t -> s and per view i, a control ``u_i``
(the variational parameter of the transition ``q(y_s^i | y_t^i, y_t^{<i})``) moves the state,
``y_t^i <- y_t^i + alpha u_i``, and is found by a few Adam iterations on

    L_i(u) = rho * mean( M_i (x0_i(u) - ref_i)^2 )  +  lambda * mean( (alpha u)^2 )
             - extra_reward(D(x0_i(u)), i)

- ``x0_i(u)``: Tweedie's estimate at the controlled state, ``(y + alpha u - sqrt(1-a) eps) /
  sqrt(a)``; ``grad_through="tweedie"`` holds eps at the model's prediction for ``y`` (no model
  call in the loop: ``x0_i(u) = x0_i + alpha u / sqrt(a)``), ``"model"`` predicts eps at the
  controlled state (one model forward + backward per iteration, as a DTM-style control).
- ``ref_i, M_i``: the reward's reference and mask. ``reward="correlation"`` uses the task's
  correlation model on the Tweedie estimates: the previous window shifted onto the overlap
  (wide, Eq. 8), the illusion transform of the other view (Eq. 9), the render of the texture
  baked from the earlier views (Eq. 10). ``reward="adjoint"`` uses any view set through its
  maps: ``ref_i = f_i( sum_{j<i} f_j^T x0_j / sum_{j<i} f_j^T 1 )`` on the pixels earlier views
  cover, built with the differentiable view maps of :mod:`syncsde.autograd` (so ``order="joint"``
  passes gradients to earlier views' controls).
- the KL term is the KL of the controlled to the prior transition, ``|mu_q - mu_p|^2 /
  (2 sigma_t^2)`` with ``mu_q - mu_p = c_x alpha u`` to first order, with its coefficient
  ``c_x^2 / (2 sigma_t^2)`` dropped (it is infinite for DDIM's sigma = 0; the paper drops it too).

Views are optimised greedily in order (``order="greedy"``, the paper): view i's reference uses the
already-controlled estimates of views j < i. View 0 has no reward and keeps ``u = 0`` unless an
``extra_reward`` is given (the paper's style / CLIP guidance, Eq. 23-24). After the controls,
the step is SyncSDE's (the coupling term of Eq. 6) from the controlled states; with
``iterations=0`` it is SyncSDE bit for bit.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

from syncsde import autograd as ag
from syncsde.correlation import _Chain
from syncsde.guidance._common import (
    Costs,
    batch_size,
    check_decode,
    check_grad_through,
    check_int,
    check_nonneg,
    flat_cond,
)
from syncsde.guidance.model import differentiable_eps
from syncsde.strategies import SyncSDE

__all__ = ["DEFAULT_LR", "SyncVC"]

#: Adam learning rate when none is given (tuned on the exact-score benchmark; the paper's value
#: is not in the seed text).
DEFAULT_LR = 0.05
REWARDS = ("correlation", "adjoint")
ORDERS = ("greedy", "joint")


@dataclass
class SyncVC(SyncSDE):
    """SyncVC: per-step, per-view controls by Adam against reward + KL (module docstring).

    ``iterations``: Adam iterations per view per step (``None``: the paper's 5 for wide and
    ambiguous images, 3 for texture views); ``lr``: Adam's rate (``None``: :data:`DEFAULT_LR`;
    a positive rate with ``iterations=0`` is an error); ``reward_weight`` (rho), ``kl_weight``
    (lambda), ``strength`` (alpha); ``reward`` (``"correlation"`` | ``"adjoint"``); ``order``
    (``"greedy"`` | ``"joint"``); ``extra_reward(images, view) -> [B]`` (higher is better) on
    ``decode``-d Tweedie estimates; ``grad_through`` (``"tweedie"`` | ``"model"``). The SyncSDE
    options (``inv_lambda``, ``correlation``, ``max_pull``) set the coupling.
    """

    iterations: int | None = None
    lr: float | None = None
    reward_weight: float = 1.0
    kl_weight: float = 0.1
    strength: float = 1.0
    reward: str = "correlation"
    order: str = "greedy"
    extra_reward: Callable | None = None
    decode: Callable | None = None
    grad_through: str = "tweedie"
    name: str = "syncvc"

    def __post_init__(self):
        self.costs = Costs()  # not a field: a run's description must not depend on it
        super().__post_init__()
        if self.iterations is not None:
            self.iterations = check_int(self.iterations, "iterations", 0)
        if self.lr is not None:
            self.lr = check_nonneg(self.lr, "lr")
            if self.iterations == 0 and self.lr > 0:
                raise ValueError(f"iterations=0 with lr={self.lr} > 0: zero iterations never use "
                                 "the rate; pass iterations >= 1, or lr=0 / None")
            if self.lr == 0 and self.iterations:
                raise ValueError(f"lr=0 with iterations={self.iterations}: the controls would never "
                                 "move; pass lr > 0 or iterations=0")
        self.reward_weight = check_nonneg(self.reward_weight, "reward_weight")
        self.kl_weight = check_nonneg(self.kl_weight, "kl_weight")
        self.strength = check_nonneg(self.strength, "strength")
        if self.reward not in REWARDS:
            raise ValueError(f"reward must be one of {REWARDS}, got {self.reward!r}")
        if self.order not in ORDERS:
            raise ValueError(f"order must be one of {ORDERS}, got {self.order!r}")
        if self.extra_reward is not None and not callable(self.extra_reward):
            raise TypeError("extra_reward must be a callable (images, view) -> Tensor[B]")
        self.decode = check_decode(self.decode)
        self.grad_through = check_grad_through(self.grad_through)

    # ---- setup --------------------------------------------------------------------------
    def prepare(self, run):
        super().prepare(run)
        self.costs.reset()
        if self.iterations is None:
            try:
                from syncsde.mesh.views import TextureViews
            except ImportError:  # the mesh extra is not installed: no texture views either
                TextureViews = ()
            self._iters = 3 if isinstance(run.views, TextureViews) else 5
        else:
            self._iters = self.iterations
        self._lr = DEFAULT_LR if self.lr is None else self.lr
        n = run.views.num_views
        start = 0 if self.extra_reward is not None else 1
        self._controlled = list(range(start, n))
        if self.reward == "adjoint":
            ones = torch.ones((n, *run.views.view_shape), dtype=run.dtype, device=run.device)
            self._den, self._adj_masks = [], []
            for i in range(n):
                sel = (torch.arange(n, device=run.device) < i).to(run.dtype).reshape(n, 1, 1, 1)
                den = run.views.adjoint(ones * sel)
                self._den.append(den)
                self._adj_masks.append(run.views.forward((den > 0).to(run.dtype))[i])

    @property
    def active(self) -> bool:
        return self._iters > 0 and self.strength > 0 and \
            (self.reward_weight > 0 or self.extra_reward is not None)

    # ---- the reward's reference ---------------------------------------------------------
    def _adjoint_ref(self, run, x0, i):
        """``f_i(sum_{j<i} f_j^T x0_j / sum_{j<i} f_j^T 1)`` (differentiable in x0)."""
        n = run.views.num_views
        sel = (torch.arange(n, device=x0.device) < i).to(x0.dtype)
        sel = sel.reshape(n, *([1] * (x0.dim() - 1)))
        num = ag.view_adjoint(run.views, x0 * sel)
        den = self._den[i]
        mean = torch.where(den > 0, num / den.clamp_min(1e-30), torch.zeros_like(num))
        return ag.view_forward(run.views, mean)[i], self._adj_masks[i]

    def _reference(self, run, x0, i):
        if self.reward == "adjoint":
            return self._adjoint_ref(run, x0, i)
        ref = self._corr.references(x0.detach(), run.views)[i]
        return ref, self._masks[i]

    # ---- the objective ------------------------------------------------------------------
    def _x0(self, run, y_i, eps_i, u, info, which, b):
        a = info.abar_t
        yc = y_i + self.strength * u
        if self.grad_through == "model":
            shape = tuple(y_i.shape[-3:])
            e = differentiable_eps(run.denoiser, yc.reshape(-1, *shape), info.t, a,
                                   flat_cond(run, which, b), flat_cond(run, which, b, True),
                                   run.guidance_scale).reshape(yc.shape)
            k = len(e.reshape(-1, *shape)) * (2 if run.guidance_scale != 1.0 else 1)
            self.costs.model_inputs += k
            self.costs.grad_model_inputs += k
        else:
            e = eps_i
        return (yc - math.sqrt(1.0 - a) * e) / math.sqrt(a)

    def _loss(self, x0_i, ref, mask, u, i):
        per = x0_i.dim() - 3  # leading dims: view/batch
        red = tuple(range(per, x0_i.dim()))
        loss = 0
        if self.reward_weight > 0:
            loss = self.reward_weight * (mask * (x0_i - ref) ** 2).mean(dim=red)
        if self.kl_weight > 0:
            loss = loss + self.kl_weight * ((self.strength * u) ** 2).mean(dim=red)
        if self.extra_reward is not None:
            shape = tuple(x0_i.shape[-3:])
            imgs = x0_i.reshape(-1, *shape)
            if self.decode is not None:
                imgs = self.decode(imgs)
            r = self.extra_reward(imgs, i)
            loss = loss - r.reshape(x0_i.shape[:per])
        return loss.sum()

    # ---- the step -----------------------------------------------------------------------
    def step(self, run, y, eps, info, noise):
        if self.active and self._controlled:
            if self.order == "greedy":
                self._greedy(run, y, eps, info)
            else:
                self._joint(run, y, eps, info)
            self.costs.guided_steps += 1
        return super().step(run, y, eps, info, noise)

    def _refresh(self, run, y, eps, which, info):
        neg = None if run.negative is None else [run.negative[i] for i in which]
        new = run.predict_eps(y[which], info.t, info.abar_t, [run.cond[i] for i in which], neg)
        b = batch_size(run, y)
        self.costs.model_inputs += len(which) * b * (2 if run.guidance_scale != 1.0 else 1)
        eps[which] = new

    def _greedy(self, run, y, eps, info):
        a = info.abar_t
        b = batch_size(run, y)
        x0 = (y - math.sqrt(1.0 - a) * eps) / math.sqrt(a)
        chain = self.reward == "correlation" and isinstance(self._corr, _Chain)
        canvas = run.views.canvas_zeros(y) if chain else None
        for i in self._controlled:
            if chain:  # the correlation's own walk, one view at a time (O(N) maps per step)
                if i == 0:
                    ref, mask = x0[0], self._masks[0]
                else:
                    if self._corr.only_previous:
                        canvas.zero_()
                    run.views.paste_one_on_top(i - 1, x0[i - 1], canvas)
                    ref, mask = run.views.forward_one(i, canvas), self._masks[i]
            with torch.enable_grad():
                if not chain:
                    ref, mask = self._reference(run, x0, i)
                ref, mask = ref.detach(), mask.detach()
                u = torch.zeros_like(y[i], requires_grad=True)
                opt = torch.optim.Adam([u], lr=self._lr)
                for _ in range(self._iters):
                    opt.zero_grad()
                    loss = self._loss(self._x0(run, y[i], eps[i], u, info, [i], b), ref, mask, u, i)
                    loss.backward()
                    self.costs.backward += 1
                    opt.step()
            with torch.no_grad():
                y[i] += self.strength * u.detach().to(y.dtype)
                if self.grad_through == "model":
                    self._refresh(run, y, eps, [i], info)
                x0[i] = (y[i] - math.sqrt(1.0 - a) * eps[i]) / math.sqrt(a)

    def _joint(self, run, y, eps, info):
        b = batch_size(run, y)
        which = self._controlled
        with torch.enable_grad():
            u = torch.zeros_like(y[which], requires_grad=True)
            opt = torch.optim.Adam([u], lr=self._lr)
            for _ in range(self._iters):
                opt.zero_grad()
                x0c = self._x0(run, y[which], eps[which], u, info, which, b)
                # the full stack: uncontrolled views keep their (constant) estimates
                a = info.abar_t
                x0 = ((y - math.sqrt(1.0 - a) * eps) / math.sqrt(a)).detach()
                idx = torch.tensor(which, device=y.device)
                x0 = x0.index_copy(0, idx, x0c)
                loss = 0
                for k, i in enumerate(which):
                    if i == 0 and self.extra_reward is None:
                        continue
                    ref, mask = self._reference(run, x0, i)
                    loss = loss + self._loss(x0[i], ref, mask, u[k], i)
                loss.backward()
                self.costs.backward += 1
                opt.step()
        with torch.no_grad():
            y[which] += self.strength * u.detach().to(y.dtype)
            if self.grad_through == "model":
                self._refresh(run, y, eps, which, info)
