"""Option checks and small helpers shared by the guidance strategies."""
from __future__ import annotations

import math
from typing import Any

import torch

GRAD_THROUGH = ("model", "tweedie")


def check_nonneg(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or \
            not (math.isfinite(value) and value >= 0):
        raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
    return float(value)


def check_int(value: Any, name: str, low: int) -> int:
    if isinstance(value, bool) or not hasattr(value, "__index__"):
        raise TypeError(f"{name} must be an integer >= {low}, got {value!r}")
    v = value.__index__()
    if v < low:
        raise ValueError(f"{name} must be an integer >= {low}, got {v}")
    return v


def check_grad_through(value: Any) -> str:
    if value not in GRAD_THROUGH:
        raise ValueError(f"grad_through must be one of {GRAD_THROUGH}, got {value!r}")
    return value


def check_decode(value: Any) -> Any:
    if value is not None and not callable(value):
        raise TypeError(f"decode must be None (identity) or a callable latents -> images, got "
                        f"{type(value).__name__}")
    return value


def flat_cond(run: Any, which: list[int], b: int, negative: bool = False):
    """Per-input conditions of views ``which`` repeated over ``b`` batch samples."""
    src = run.negative if negative else run.cond
    if src is None:
        return None
    return [src[i] for i in which for _ in range(b)]


def batch_size(run: Any, y: torch.Tensor) -> int:
    return 1 if run.batch_dims == 0 else int(y.shape[1])


class Costs:
    """What a guidance strategy spent beyond the sampler's own model calls."""

    def __init__(self):
        self.reset()

    def reset(self):
        self.model_inputs = 0      # extra model forward inputs (with or without a graph)
        self.grad_model_inputs = 0  # of which ran with an autograd graph
        self.backward = 0          # backward passes (each over a batch of views)
        self.guided_steps = 0

    def as_dict(self) -> dict:
        return dict(vars(self))
