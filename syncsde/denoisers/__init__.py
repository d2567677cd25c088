"""Denoisers: anything with ``out = denoiser(x_t, t, cond)`` and a ``prediction_type``.

``x_t`` is a batch ``[B, ...]`` of views, ``t`` an integer timestep, ``cond`` a sequence of B
conditions (prompt keys, strings, embeddings; ``None`` = unconditional). The sampler handles
classifier-free guidance once for all views and converts x0 / v predictions to eps.
"""
from syncsde.denoisers.base import Denoiser, FunctionDenoiser, predict_eps

__all__ = ["Denoiser", "FunctionDenoiser", "predict_eps"]
