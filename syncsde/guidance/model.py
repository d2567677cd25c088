"""Differentiable model calls for gradient-based strategies.

The sampler's :func:`~syncsde.denoisers.base.predict_eps` runs in the C core (CFG combine and the
x0/v -> eps conversions are C kernels, which do not record autograd graphs) and the model
adapters run under ``torch.no_grad``. A guidance strategy that differentiates *through the model*
(SyncDiffusion's ``d x0_hat / d x_t`` with the UNet Jacobian; SyncVC's state controls) calls
:func:`differentiable_eps` instead, which computes the same eps with torch ops:

- exact-score priors (:class:`~syncsde.priors.PriorDenoiser`, :class:`~syncsde.priors.FieldDenoiser`):
  the closed form ``E[eps | x_t] = U diag(sqrt(1-a)/(a s + 1 - a)) U^T (x_t - sqrt(a) mu)``
  (mixtures: responsibilities ``softmax_k(log w_k + log N_k(x_t))``) evaluated on the input with
  its graph;
- adapters whose ``__call__`` is wrapped by ``torch.no_grad`` (the diffusers UNet adapters): the
  undecorated call (``__call__.__wrapped__``);
- anything else (an ``nn.Module``, a :class:`~syncsde.denoisers.base.FunctionDenoiser` over torch
  ops) is called as it is.

Then ``eps = out_u + s (out_c - out_u)`` (CFG on the native output, as the sampler) and the
affine conversions of ``sample`` / ``v_prediction`` outputs.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch

__all__ = ["CallCounter", "count_backward", "differentiable_eps"]


def _prior_eps(prior_den: Any, x: torch.Tensor, t: int, cond: Sequence[Any]) -> torch.Tensor:
    """PriorDenoiser output with autograd (same groups-by-key logic as its ``__call__``)."""
    a = float(prior_den.abar[int(t)])
    B = x.shape[0]
    x64 = x.to(torch.float64).reshape(B, -1)
    keys = list(cond)
    groups: dict[Any, list[int]] = {}
    for i, key in enumerate(keys):
        groups.setdefault(key, []).append(i)
    parts = []
    order = []
    for key, idx in groups.items():
        law = prior_den.law(key)
        xi = x64[idx]
        if a >= 1.0:
            e = torch.zeros_like(xi)
        elif hasattr(law, "components"):
            e, _ = law._eps_resp(xi, a)
        else:
            e, _ = law._eps_logpdf(xi, a, False)
        parts.append(e)
        order += idx
    eps = torch.cat(parts)[torch.argsort(torch.tensor(order))]
    kind = prior_den.prediction_type
    if kind != "epsilon":
        x0 = (x64 - math.sqrt(1.0 - a) * eps) / math.sqrt(a)
        eps = x0 if kind == "sample" else math.sqrt(a) * eps - math.sqrt(1.0 - a) * x0
    return eps.reshape(x.shape).to(x.dtype)


def _raw_call(denoiser: Any, x: torch.Tensor, t: int, cond: Sequence[Any]) -> torch.Tensor:
    from syncsde.exact_laws import CountingDenoiser
    from syncsde.priors import FieldDenoiser, PriorDenoiser

    if isinstance(denoiser, PriorDenoiser):
        return _prior_eps(denoiser, x, t, cond)
    if isinstance(denoiser, FieldDenoiser):
        spatial = tuple(x.shape[2:])
        if spatial not in denoiser._cache:  # builds (and caches) the per-shape priors
            denoiser(x[:1].detach(), t, list(cond)[:1])
        return _prior_eps(denoiser._cache[spatial], x, t, cond)
    if isinstance(denoiser, CallCounter):
        denoiser.calls += 1
        denoiser.inputs += len(x)
        return _raw_call(denoiser.inner, x, t, cond)
    if isinstance(denoiser, CountingDenoiser):
        denoiser.calls += 1
        denoiser.inputs += len(x)
        denoiser.pixels += len(x) * math.prod(x.shape[2:])
        return _raw_call(denoiser.denoiser, x, t, cond)
    call = getattr(type(denoiser).__call__, "__wrapped__", None)
    if call is not None:  # an adapter decorated with torch.no_grad
        return call(denoiser, x, t, list(cond))
    return denoiser(x, t, list(cond))


def count_backward(denoiser: Any, inputs: int) -> None:
    """Record ``inputs`` model inputs back-propagated (one vector-Jacobian product each) on every
    counting wrapper around ``denoiser`` (:class:`CallCounter`,
    :class:`~syncsde.exact_laws.CountingDenoiser`), in their ``backward_inputs``."""
    while denoiser is not None:
        own = getattr(denoiser, "__dict__", {})
        if "backward_inputs" in own:
            own["backward_inputs"] += int(inputs)
        denoiser = own.get("inner", own.get("denoiser"))


def differentiable_eps(denoiser: Any, x_t: torch.Tensor, t: int, abar_t: float,
                       cond: Sequence[Any], negative: Sequence[Any] | None = None,
                       guidance_scale: float = 1.0) -> torch.Tensor:
    """eps of ``x_t [B, C, h, w]`` with an autograd graph back to ``x_t`` (see module doc).

    Raises ValueError when the model output does not depend differentiably on ``x_t`` (a
    black-box denoiser): use the strategies' ``grad_through="tweedie"`` mode then.
    """
    n = len(x_t)
    if len(cond) != n:
        raise ValueError(f"got {len(cond)} conditions for {n} inputs")
    with torch.enable_grad():
        if guidance_scale != 1.0:
            neg = list(negative) if negative is not None else [None] * n
            both = _raw_call(denoiser, torch.cat([x_t, x_t]), t, neg + list(cond))
            out = both[:n] + guidance_scale * (both[n:] - both[:n])
        else:
            out = _raw_call(denoiser, x_t, t, cond)
        if out.shape != x_t.shape:
            raise ValueError(f"denoiser returned shape {tuple(out.shape)} for input {tuple(x_t.shape)}")
        out = out.to(x_t.dtype)
        if x_t.requires_grad and not out.requires_grad:
            raise ValueError(
                "the denoiser's output carries no gradient with respect to x_t (a black-box "
                "model); pass grad_through='tweedie' to differentiate only through Tweedie's "
                "formula and the decoder")
        kind = getattr(denoiser, "prediction_type", "epsilon")
        a = float(abar_t)
        if kind == "sample":
            out = (x_t - math.sqrt(a) * out) / math.sqrt(1.0 - a)
        elif kind == "v_prediction":
            out = math.sqrt(a) * out + math.sqrt(1.0 - a) * x_t
    return out


class CallCounter:
    """Wraps a denoiser and counts its calls (batches) and inputs; for the cost benchmark.

    Behaves like the wrapped denoiser (``prediction_type``, attributes) in the sampler and in
    :func:`differentiable_eps`."""

    def __init__(self, inner: Any):
        self.inner = inner
        self.calls = 0
        self.inputs = 0
        self.backward_inputs = 0   # inputs back-propagated through the model (count_backward)

    @property
    def prediction_type(self) -> str:
        return getattr(self.inner, "prediction_type", "epsilon")

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def __call__(self, x_t, t, cond):
        self.calls += 1
        self.inputs += len(x_t)
        return self.inner(x_t, t, cond)
