"""Denoisers: anything with ``out = denoiser(x_t, t, cond)`` and a ``prediction_type``.

``x_t`` is a batch ``[B, ...]`` of views, ``t`` an integer timestep, ``cond`` a sequence of B
conditions (prompt keys, strings, embeddings; ``None`` = unconditional). The sampler handles
classifier-free guidance once for all views and converts x0 / v predictions to eps.
"""
from syncsde.denoisers.base import Denoiser, FunctionDenoiser, predict_eps

__all__ = ["Denoiser", "FunctionDenoiser", "predict_eps", "StableDiffusionDenoiser",
           "ControlNetDenoiser", "IFDenoiser", "IFSuperResolutionDenoiser", "MDMDenoiser",
           "ImagePrompt", "PromptEncoder", "StableDiffusionXLDenoiser", "SD3Denoiser",
           "FluxDenoiser"]

_LAZY = {
    "StableDiffusionDenoiser": "syncsde.denoisers.diffusers_models",
    "ControlNetDenoiser": "syncsde.denoisers.diffusers_models",
    "IFDenoiser": "syncsde.denoisers.diffusers_models",
    "IFSuperResolutionDenoiser": "syncsde.denoisers.diffusers_models",
    "ImagePrompt": "syncsde.denoisers.diffusers_models",
    "PromptEncoder": "syncsde.denoisers.diffusers_models",
    "MDMDenoiser": "syncsde.denoisers.mdm",
    "StableDiffusionXLDenoiser": "syncsde.denoisers.sdxl",
    "SD3Denoiser": "syncsde.denoisers.flow",
    "FluxDenoiser": "syncsde.denoisers.flow",
}


def __getattr__(name):
    """The model adapters import diffusers lazily, so plain syncsde works without it."""
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'syncsde.denoisers' has no attribute {name!r}")
