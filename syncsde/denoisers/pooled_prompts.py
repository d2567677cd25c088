"""Prompt encoders that return ``(embeds [L, D], pooled [P])`` per prompt (SDXL, SD3, FLUX):
the shared part, a per-(prompt, clip_skip) LRU cache and the checks of what a prompt may be.
Subclasses write ``_encode(text, clip_skip, device)`` and name their family in ``label``."""
from __future__ import annotations

from collections import OrderedDict
from typing import Any, Sequence

import torch

__all__ = ["PooledPromptCache"]


class PooledPromptCache:
    label = "this model's"   # in error messages: "<label> prompt embeddings need ..."

    def __init__(self, cache_size: int = 256):
        self.cache_size = int(cache_size)
        self._cache: OrderedDict[tuple, tuple[torch.Tensor, torch.Tensor]] = OrderedDict()
        self.misses = 0

    def _encode(self, text: str, clip_skip: int | None, device) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def _device(self, device) -> torch.device:
        return torch.device(device) if device is not None else torch.device("cpu")

    def _empty_pair(self, device, clip_skip) -> tuple[torch.Tensor, torch.Tensor] | None:
        """The pair for a ``None`` prompt when it is not the encoded empty prompt (SDXL's
        zeros); ``None`` = encode ""."""
        return None

    def __call__(self, prompts: Sequence[Any], device=None, dtype=None,
                 clip_skip: int | None = None) -> list[tuple[torch.Tensor, torch.Tensor]]:
        if clip_skip is not None and (isinstance(clip_skip, bool) or not isinstance(clip_skip, int)
                                      or clip_skip < 0):
            raise ValueError(f"clip_skip must be an integer >= 0, got {clip_skip!r}")
        dev = self._device(device)
        out = []
        for p in prompts:
            pair = self._empty_pair(dev, clip_skip) if p is None else None
            if pair is not None:
                e, q = pair
            elif isinstance(p, tuple) and len(p) == 2 and all(isinstance(t, torch.Tensor) for t in p):
                e, q = p
                e = e[0] if e.dim() == 3 else e
                q = q[0] if q.dim() == 2 else q
            elif p is None or isinstance(p, str):
                # negative prompts (None) are encoded without clip_skip, as diffusers does
                key = ("" if p is None else p, None if p is None else clip_skip)
                if key not in self._cache:
                    self.misses += 1
                    self._cache[key] = self._encode(key[0], key[1], dev)
                    while len(self._cache) > self.cache_size:
                        self._cache.popitem(last=False)
                self._cache.move_to_end(key)
                e, q = self._cache[key]
            elif isinstance(p, torch.Tensor):
                raise ValueError(f"{self.label} prompt embeddings need their pooled embeddings: "
                                 "pass pooled_prompt_embeds (and negative_pooled_prompt_embeds)")
            else:
                raise TypeError(f"a {self.label} prompt must be a string, None or (embeds, "
                                f"pooled), got {type(p).__name__}")
            e, q = e.to(dev), q.to(dev)
            if dtype is not None:
                e, q = e.to(dtype), q.to(dtype)
            out.append((e, q))
        return out
