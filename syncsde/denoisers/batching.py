"""Per-sample conditions for batched runs (lists of prompts, ``num_images_per_prompt``).

The sampler repeats each view's condition once per sample: the model's input list is
view-major, sample-minor (``[view0 sample0, view0 sample1, ..., view1 sample0, ...]``, and with
classifier-free guidance the negative half followed by the positive half, each a multiple of
the batch). So element ``p`` of any such list belongs to sample ``p % batch``.
:class:`PerSample` holds one condition per sample and :class:`BatchedDenoiser` resolves it by
that position before calling the real denoiser (and does the ``max_batch`` chunking itself, so
positions are never lost in a chunk).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Sequence

import torch

__all__ = ["PerSample", "BatchedDenoiser", "per_sample", "map_condition"]


@dataclass(eq=False)
class PerSample:
    """One condition per sample of a batch (``items[j]`` for sample j)."""

    items: tuple

    def __post_init__(self):
        self.items = tuple(self.items)
        if not self.items:
            raise ValueError("PerSample needs at least one condition")


def _same(a: Any, b: Any) -> bool:
    if a is b:
        return True
    if isinstance(a, str) and isinstance(b, str):
        return a == b
    return False


def per_sample(items: Sequence[Any]) -> Any:
    """``items[0]`` when every sample has the same condition, else :class:`PerSample`."""
    items = list(items)
    if all(_same(items[0], c) for c in items[1:]):
        return items[0]
    return PerSample(tuple(items))


def map_condition(cond: Any, fn: Callable[[Any], Any]) -> Any:
    """``fn`` applied to a condition, or to each sample's condition of a :class:`PerSample`."""
    if isinstance(cond, PerSample):
        return PerSample(tuple(fn(c) for c in cond.items))
    return fn(cond)


class BatchedDenoiser:
    """Wraps a denoiser for a run of ``batch`` samples whose conditions may be
    :class:`PerSample`; every other attribute is the wrapped denoiser's."""

    def __init__(self, inner: Any, batch: int, max_batch: int | None = None):
        self.inner = inner
        self.batch = int(batch)
        self.max_batch = None if max_batch is None else int(max_batch)

    def __getattr__(self, name):  # prediction_type, device, decode, ...
        return getattr(self.inner, name)

    def resolve(self, cond: Sequence[Any]) -> list:
        b = self.batch
        if len(cond) % b:
            raise ValueError(f"{len(cond)} conditions are not a multiple of the batch ({b})")
        out = []
        for p, c in enumerate(cond):
            if isinstance(c, PerSample):
                if len(c.items) != b:
                    raise ValueError(f"a per-sample condition has {len(c.items)} entries for a "
                                     f"batch of {b}")
                c = c.items[p % b]
            out.append(c)
        return out

    def __call__(self, x_t: torch.Tensor, t, cond: Sequence[Any]) -> torch.Tensor:
        cond = self.resolve(cond)
        m = self.max_batch
        if m is None or len(x_t) <= m:
            return self.inner(x_t, t, cond)
        return torch.cat([self.inner(x_t[i:i + m], t, cond[i:i + m])
                          for i in range(0, len(x_t), m)])
