"""Step kernels: Tweedie, DDIM (eta >= 0), classifier-free guidance, the fused SyncSDE update.

All take explicit cumulative alphas (``abar``), never scheduler state, and work on any batch
of views at once. Outputs are written in place into ``out`` (allocated when omitted); passing
``out=x_t`` updates the state in place.
"""
from __future__ import annotations

import math
from typing import Any, NamedTuple

from syncsde import _C
from syncsde.ops._common import Tensor, call_with_output, check_abar, empty_like, is_torch


class DDIMCoefficients(NamedTuple):
    """Scalars of one DDIM step t -> s: ``x_s = c_x x_t + c_eps eps + sigma z``.

    ``gamma`` is SyncSDE's gamma_t: the step moves by ``-gamma * (1/lambda) * M (x_t - ref)``
    when the correlation score is added (it reduces to
    ``sqrt(abar_s/abar_t) - sqrt((1-abar_s)/(1-abar_t))`` for eta = 0).
    """

    c_x: float
    c_eps: float
    sigma: float
    gamma: float


def ddim_coefficients(abar_t: float, abar_s: float, eta: float = 0.0) -> DDIMCoefficients:
    """Coefficients of the DDIM step from ``abar_t`` to ``abar_s`` (computed in C, float64)."""
    check_abar(abar_t, "abar_t")
    check_abar(abar_s, "abar_s")
    if not eta >= 0:
        raise ValueError(f"eta must be >= 0, got {eta!r}")
    return DDIMCoefficients(*_C.ddim_coefficients(float(abar_t), float(abar_s), float(eta)))


def _out(out: Any, like: Any) -> Any:
    return empty_like(like) if out is None else out


def lincomb(x: Tensor, y: Tensor, a: float, b: float, out: Tensor | None = None) -> Tensor:
    """``out = a x + b y`` in one pass."""
    return _lincomb(x, y, a, b, out, ("x", "y"))


def _lincomb(x: Tensor, y: Tensor, a: float, b: float, out: Tensor | None,
             names: tuple[str, str]) -> Tensor:
    """lincomb with the caller's argument names in error messages."""
    out = _out(out, x)
    return call_with_output(_C.lincomb2, out, (x, y), names, float(a), float(b),
                            binding_names=("x", "y"))


def tweedie(x_t: Tensor, eps: Tensor, abar_t: float, out: Tensor | None = None) -> Tensor:
    """Tweedie's denoised estimate ``x0 = (x_t - sqrt(1-abar_t) eps) / sqrt(abar_t)``."""
    a = check_abar(abar_t, "abar_t")
    s = math.sqrt(a)
    return _lincomb(x_t, eps, 1.0 / s, -math.sqrt(1.0 - a) / s, out, ("x_t", "eps"))


def eps_from_x0(x_t: Tensor, x0: Tensor, abar_t: float, out: Tensor | None = None) -> Tensor:
    """Noise implied by an x0 prediction: ``eps = (x_t - sqrt(abar_t) x0) / sqrt(1-abar_t)``."""
    a = check_abar(abar_t, "abar_t")
    if a >= 1.0:
        raise ValueError("eps_from_x0 needs abar_t < 1 (no noise is left at abar_t = 1)")
    r = math.sqrt(1.0 - a)
    return _lincomb(x_t, x0, 1.0 / r, -math.sqrt(a) / r, out, ("x_t", "x0"))


def eps_from_v(x_t: Tensor, v: Tensor, abar_t: float, out: Tensor | None = None) -> Tensor:
    """Noise implied by a v prediction: ``eps = sqrt(abar_t) v + sqrt(1-abar_t) x_t``."""
    a = check_abar(abar_t, "abar_t")
    return _lincomb(x_t, v, math.sqrt(1.0 - a), math.sqrt(a), out, ("x_t", "v"))


def cfg_combine(eps_uncond: Tensor, eps_cond: Tensor, scale: float,
                out: Tensor | None = None) -> Tensor:
    """Classifier-free guidance ``eps = eps_u + scale (eps_c - eps_u)``."""
    scale = float(scale)
    if math.isnan(scale):
        raise ValueError("guidance scale is NaN")
    return _lincomb(eps_uncond, eps_cond, 1.0 - scale, scale, out, ("eps_uncond", "eps_cond"))


def ddim_step(x_t: Tensor, eps: Tensor, abar_t: float, abar_s: float, eta: float = 0.0,
              noise: Tensor | None = None, out: Tensor | None = None) -> Tensor:
    """One DDIM step ``x_s = sqrt(abar_s) x0 + sqrt(1-abar_s-sigma^2) eps + sigma z``.

    ``noise`` (z) is required when ``eta > 0``; seed it from Python.
    """
    c = ddim_coefficients(abar_t, abar_s, eta)
    out = _out(out, x_t)
    if c.sigma > 0.0:
        if noise is None:
            raise ValueError("ddim_step: eta > 0 needs a noise tensor (draw it with a seeded generator)")
        return call_with_output(_C.lincomb3, out, (x_t, eps, noise), ("x_t", "eps", "noise"),
                                c.c_x, c.c_eps, c.sigma, binding_names=("x", "y", "z"))
    return call_with_output(_C.lincomb2, out, (x_t, eps), ("x_t", "eps"), c.c_x, c.c_eps,
                            binding_names=("x", "y"))


def _as_mask(mask: Any, like: Any) -> Any:
    """Mask in x's dtype and kind; scalars become 0-d tensors (they broadcast)."""
    if is_torch(like):
        import torch

        if not isinstance(mask, torch.Tensor):
            mask = torch.as_tensor(mask, dtype=like.dtype)
        elif mask.dtype != like.dtype:
            mask = mask.to(like.dtype)
        return mask
    import numpy as np

    m = np.asarray(mask)
    return m if m.dtype == like.dtype else m.astype(like.dtype)


def syncsde_step(x_t: Tensor, eps: Tensor, ref: Tensor, mask: Any, abar_t: float, abar_s: float,
                 inv_lambda_t: float, eta: float = 0.0, noise: Tensor | None = None,
                 out: Tensor | None = None) -> Tensor:
    """Fused SyncSDE update (seed 000; design notes section 2), one pass over memory::

        y_s = DDIM(y_t, eps) - gamma_t * inv_lambda_t * M * (y_t - ref)

    ``x_t, eps, ref`` have one shape, e.g. ``[N, C, H, W]`` for N views; ``mask`` broadcasts
    to it (``[N, 1, H, W]`` per pixel, ``[N, 1, 1, 1]`` per view, a scalar, or full). ``ref``
    and ``mask`` are built from the pre-step states. No ``1/(1-abar_t)`` factor: it cancels.
    """
    if not inv_lambda_t >= 0:
        raise ValueError(f"inv_lambda_t must be >= 0, got {inv_lambda_t!r}")
    c = ddim_coefficients(abar_t, abar_s, eta)
    out = _out(out, x_t)
    if c.sigma > 0.0 and noise is None:
        raise ValueError("syncsde_step: eta > 0 needs a noise tensor (draw it with a seeded generator)")
    m = _as_mask(mask, x_t)
    return call_with_output(_C.syncsde_update, out, (x_t, eps, ref, m, noise if c.sigma > 0 else None),
                            ("x_t", "eps", "ref", "mask", "noise"),
                            c.c_x, c.c_eps, c.sigma, c.gamma * float(inv_lambda_t),
                            binding_names=("x", "eps", "ref", "mask", "noise"))


def replace_where(x: Tensor, mask: Any, y: Tensor, out: Tensor | None = None) -> Tensor:
    """``out = (1 - mask) x + mask y`` in one pass: ``y`` where ``mask`` = 1 (exactly), ``x``
    where 0, the blend between (conditional sampling's replacement of known pixels). ``mask``
    broadcasts to ``x`` (``[..., 1, H, W]`` per pixel)."""
    out = _out(out, x)
    return call_with_output(_C.masked_update, out, (x, _as_mask(mask, x), y, None),
                            ("x", "mask", "y", "w"), 1.0, 1.0, 0.0)


def masked_move(x: Tensor, mask: Any, y: Tensor, a: float, w: Tensor | None = None, b: float = 0.0,
                out: Tensor | None = None) -> Tensor:
    """``out = x + mask (a y + b w)`` in one pass (a Langevin move on the pixels where ``mask``
    is 1: ``y`` the eps, ``w`` the noise). ``mask`` broadcasts to ``x``."""
    a, b = float(a), float(b)
    if not (math.isfinite(a) and math.isfinite(b)):
        raise ValueError(f"masked_move coefficients must be finite, got a={a!r}, b={b!r}")
    out = _out(out, x)
    return call_with_output(_C.masked_update, out, (x, _as_mask(mask, x), y, w),
                            ("x", "mask", "y", "w"), 0.0, a, b)
