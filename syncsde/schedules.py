"""Noise schedules, timestep lists and 1/lambda schedules as pure functions (no scheduler state).

Everything here reproduces what diffusers' ``DDIMScheduler`` computes, so a sampler can run on
an explicit ``abar`` table plus a list of ``(t, s)`` pairs:

* ``alphas_cumprod(kind)``: ``abar[t] = prod_{i<=t} (1 - beta_i)`` in float64;
* ``ddim_timesteps(n, spacing=...)``: the descending timestep list of ``set_timesteps``;
* ``step_pairs``: ``(t, s)`` with diffusers' rule ``s = t - num_train_timesteps // n``; a
  negative ``s`` means "the final abar" (``final_abar``: 1.0 or ``abar[0]``);
* SyncSDE's ``1/lambda(t)`` schedules (``LinearInvLambda`` is the authors' ``inv_lambda * t / T``).

The DDIM update itself lives in :mod:`syncsde.ops` (``ddim_coefficients``, ``ddim_step``).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any, Callable, Sequence

import numpy as np
import torch

__all__ = [
    "SCHEDULE_KINDS", "SPACINGS", "alphas_cumprod", "ddim_timesteps", "final_abar", "prev_abar",
    "step_pairs", "step_abars", "InvLambdaSchedule", "LinearInvLambda", "ConstantInvLambda",
    "CutoffInvLambda",
]

SCHEDULE_KINDS = ("scaled_linear", "linear", "squaredcos_cap_v2", "cosine")
SPACINGS = ("leading", "trailing", "linspace")


def _cosine_alpha_bar(u: float, s: float = 0.008) -> float:
    """Nichol & Dhariwal's continuous ``abar(u) = cos^2((u + s)/(1 + s) * pi/2)``, u in [0, 1]."""
    return math.cos((u + s) / (1.0 + s) * math.pi / 2.0) ** 2


def alphas_cumprod(kind: str, num_train_timesteps: int = 1000, beta_start: float = 0.00085,
                   beta_end: float = 0.012) -> torch.Tensor:
    """Cumulative alphas ``abar[t] = prod_{i=0..t} (1 - beta_i)``, float64, shape ``[N]``.

    kinds (betas ``beta_i``, i = 0..N-1):

    * ``"scaled_linear"`` (Stable Diffusion): ``beta_i = linspace(sqrt(b0), sqrt(b1), N)_i^2``;
    * ``"linear"``: ``beta_i = linspace(b0, b1, N)_i``;
    * ``"squaredcos_cap_v2"`` (DeepFloyd IF, GLIDE): ``beta_i = min(1 - f((i+1)/N) / f(i/N), 0.999)``
      with ``f(u) = cos^2((u + 0.008)/1.008 * pi/2)``; ``beta_start``/``beta_end`` are ignored;
    * ``"cosine"`` (MDM, guided-diffusion's ``get_named_beta_schedule("cosine")``): the *same*
      formula as ``"squaredcos_cap_v2"`` (s = 0.008, betas clipped at 0.999); an alias kept so
      motion configs can say what they mean.

    Equals ``DDIMScheduler(beta_schedule=kind, ...).alphas_cumprod`` (computed in float32 there)
    to float32 precision.
    """
    if kind not in SCHEDULE_KINDS:
        raise ValueError(f"unknown schedule kind {kind!r}; expected one of {SCHEDULE_KINDS}")
    n = int(num_train_timesteps)
    if n < 1:
        raise ValueError(f"num_train_timesteps must be >= 1, got {num_train_timesteps!r}")
    if kind == "scaled_linear":
        betas = torch.linspace(math.sqrt(beta_start), math.sqrt(beta_end), n, dtype=torch.float64) ** 2
    elif kind == "linear":
        betas = torch.linspace(beta_start, beta_end, n, dtype=torch.float64)
    else:  # squaredcos_cap_v2 / cosine
        betas = torch.tensor([min(1.0 - _cosine_alpha_bar((i + 1) / n) / _cosine_alpha_bar(i / n), 0.999)
                              for i in range(n)], dtype=torch.float64)
    if not bool(((betas > 0) & (betas < 1)).all()):
        raise ValueError("betas must lie in (0, 1); check beta_start/beta_end")
    return torch.cumprod(1.0 - betas, dim=0)


def ddim_timesteps(num_inference_steps: int, num_train_timesteps: int = 1000,
                   spacing: str = "leading", steps_offset: int = 0) -> list[int]:
    """Descending timesteps of ``DDIMScheduler.set_timesteps`` (Table 2 of arXiv 2305.08891).

    With ``n`` steps and ``N`` train timesteps:

    * ``"leading"``: ``t_k = k * (N // n) + steps_offset``, k = n-1..0 (SD: 981, 961, ..., 1);
    * ``"trailing"``: ``round(arange(N, 0, -N/n)) - 1`` (starts at N - 1);
    * ``"linspace"``: ``round(linspace(0, N - 1, n))`` reversed.

    ``steps_offset`` only applies to ``"leading"``, as in diffusers.
    """
    n, N = int(num_inference_steps), int(num_train_timesteps)
    if not 1 <= n <= N:
        raise ValueError(f"num_inference_steps must be in [1, {N}], got {num_inference_steps!r}")
    if spacing == "leading":
        ratio = N // n
        ts = np.arange(0, n)[::-1] * ratio + int(steps_offset)
    elif spacing == "trailing":
        ratio = N / n
        ts = np.round(np.arange(N, 0, -ratio)).astype(np.int64) - 1
    elif spacing == "linspace":
        ts = np.linspace(0, N - 1, n).round()[::-1].astype(np.int64)
    else:
        raise ValueError(f"unknown timestep spacing {spacing!r}; expected one of {SPACINGS}")
    return [int(t) for t in ts]


def final_abar(abar: torch.Tensor, set_alpha_to_one: bool) -> float:
    """abar after the last step: ``1.0`` if ``set_alpha_to_one`` else ``abar[0]`` (diffusers)."""
    return 1.0 if set_alpha_to_one else float(abar[0])


def prev_abar(abar: torch.Tensor, t: int, s: int, final: float) -> float:
    """``abar[s]`` if ``s >= 0`` else ``final`` (diffusers' ``alpha_prod_t_prev``). ``t`` is only
    checked (``s < t``)."""
    if s >= t:
        raise ValueError(f"prev_abar: need s < t, got t={t}, s={s}")
    return float(abar[s]) if s >= 0 else float(final)


def step_pairs(timesteps: Sequence[int], num_train_timesteps: int,
               num_inference_steps: int) -> list[tuple[int, int]]:
    """``[(t, s)]`` with ``s = t - num_train_timesteps // num_inference_steps`` (diffusers'
    ``prev_timestep``); ``s`` may be negative, meaning the final abar."""
    d = int(num_train_timesteps) // int(num_inference_steps)
    if d < 1:
        raise ValueError("num_inference_steps must not exceed num_train_timesteps")
    return [(int(t), int(t) - d) for t in timesteps]


def step_abars(abar: torch.Tensor, pairs: Sequence[tuple[int, int]],
               final: float) -> list[tuple[float, float]]:
    """``[(abar_t, abar_s)]`` for the pairs of :func:`step_pairs` (``abar_s = final`` for s < 0)."""
    return [(float(abar[t]), prev_abar(abar, t, s, final)) for t, s in pairs]


# ---- 1/lambda schedules -------------------------------------------------------------------
def _check_nonneg(value: float, name: str) -> float:
    v = float(value)
    if not v >= 0 or math.isinf(v):
        raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
    return v


class InvLambdaSchedule:
    """A callable ``t -> 1/lambda(t) >= 0``. ``bind(timesteps)`` returns a copy with any
    data-dependent constant (T) filled from the sampled timestep list."""

    def __call__(self, t: Any) -> float:  # pragma: no cover - interface
        raise NotImplementedError

    def bind(self, timesteps: Sequence[int]) -> "InvLambdaSchedule":
        return self


@dataclass(frozen=True)
class LinearInvLambda(InvLambdaSchedule):
    """SyncSDE authors' schedule ``1/lambda(t) = inv_lambda * t / T``.

    ``T`` is the first (largest) sampled timestep; when ``None`` it is set by
    ``bind(timesteps)`` to ``max(timesteps)`` (SD 50 steps: T = 981, so 1/lambda(981) = 5 and
    1/lambda(1) = 5/981). Mesh texturing uses ``T = 1000`` (wrap in :class:`CutoffInvLambda`).
    """

    inv_lambda: float = 5.0
    T: float | None = None

    def __post_init__(self) -> None:
        _check_nonneg(self.inv_lambda, "inv_lambda")
        if self.T is not None and not float(self.T) > 0:
            raise ValueError(f"T must be > 0, got {self.T!r}")

    def bind(self, timesteps: Sequence[int]) -> "LinearInvLambda":
        if self.T is not None:
            return self
        ts = [int(t) for t in timesteps]
        if not ts:
            raise ValueError("LinearInvLambda.bind: empty timestep list")
        # a single step at t = 0 (one-step leading schedules) has no pull: 1/lambda(0) = 0
        return replace(self, T=max(max(ts), 1))

    def __call__(self, t: Any) -> float:
        if self.T is None:
            raise ValueError("LinearInvLambda: T is unset; call .bind(timesteps) first or pass T")
        return self.inv_lambda * float(t) / float(self.T)


@dataclass(frozen=True)
class ConstantInvLambda(InvLambdaSchedule):
    """``1/lambda(t) = c`` at every step."""

    c: float = 5.0

    def __post_init__(self) -> None:
        _check_nonneg(self.c, "c")

    def __call__(self, t: Any) -> float:
        return float(self.c)


@dataclass(frozen=True)
class CutoffInvLambda(InvLambdaSchedule):
    """``base(t)`` while ``t > t_min``, else 0 (mesh texturing: ``inv_lambda * t / 1000`` only
    while t > 200, i.e. ``CutoffInvLambda(LinearInvLambda(5.0, T=1000), t_min=200)``)."""

    base: Callable[[Any], float]
    t_min: float = 200

    def bind(self, timesteps: Sequence[int]) -> "CutoffInvLambda":
        b = self.base.bind(timesteps) if hasattr(self.base, "bind") else self.base
        return self if b is self.base else replace(self, base=b)

    def __call__(self, t: Any) -> float:
        if float(t) <= float(self.t_min):
            return 0.0
        return _check_nonneg(self.base(t), "inv_lambda(t)")
