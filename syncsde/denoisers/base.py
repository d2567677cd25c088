"""The denoiser protocol and the one place where model outputs become eps (with CFG)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Protocol, Sequence, runtime_checkable

import torch

from syncsde import ops

PREDICTION_TYPES = ("epsilon", "sample", "v_prediction")


@runtime_checkable
class Denoiser(Protocol):
    prediction_type: str

    def __call__(self, x_t: torch.Tensor, t: int, cond: Sequence[Any]) -> torch.Tensor: ...


@dataclass
class FunctionDenoiser:
    """Wraps a plain function ``fn(x_t, t, cond) -> output`` as a denoiser."""

    fn: Callable[[torch.Tensor, int, Sequence[Any]], torch.Tensor]
    prediction_type: str = "epsilon"

    def __call__(self, x_t, t, cond):
        return self.fn(x_t, t, cond)


def _call_chunked(denoiser, x, t, cond, max_batch):
    if max_batch is None or len(x) <= max_batch:
        return denoiser(x, t, list(cond))
    outs = [denoiser(x[i:i + max_batch], t, list(cond[i:i + max_batch]))
            for i in range(0, len(x), max_batch)]
    return torch.cat(outs)


def predict_eps(denoiser, x_t: torch.Tensor, t: int, abar_t: float, cond: Sequence[Any],
                negative: Sequence[Any] | None = None, guidance_scale: float = 1.0,
                max_batch: int | None = None, step: int | None = None) -> torch.Tensor:
    """eps for every view in one model call (two halves when guidance is on).

    CFG ``out = out_neg + w (out_pos - out_neg)`` is applied to the model's native output;
    for x0 / v predictions the conversion to eps is affine in the output with the same x_t,
    so guiding before converting equals guiding eps.
    """
    kind = getattr(denoiser, "prediction_type", "epsilon")
    if kind not in PREDICTION_TYPES:
        raise ValueError(f"denoiser.prediction_type must be one of {PREDICTION_TYPES}, got {kind!r}")
    n = len(x_t)
    if len(cond) != n:
        raise ValueError(f"got {len(cond)} conditions for {n} views")
    if guidance_scale != 1.0:
        neg = list(negative) if negative is not None else [None] * n
        if len(neg) != n:
            raise ValueError(f"got {len(neg)} negative conditions for {n} views")
        both = _call_chunked(denoiser, torch.cat([x_t, x_t]), t, neg + list(cond), max_batch)
        out = ops.cfg_combine(both[:n], both[n:], guidance_scale)
    else:
        out = _call_chunked(denoiser, x_t, t, cond, max_batch)
    if out.shape != x_t.shape:
        raise ValueError(f"denoiser returned shape {tuple(out.shape)} for input {tuple(x_t.shape)}")
    if not torch.isfinite(out).all():
        where = f" at step {step}" if step is not None else ""
        raise FloatingPointError(f"denoiser returned non-finite values{where} (t={t})")
    if kind == "sample":
        out = ops.eps_from_x0(x_t, out, abar_t, out=out)
    elif kind == "v_prediction":
        out = ops.eps_from_v(x_t, out, abar_t, out=out)
    return out
