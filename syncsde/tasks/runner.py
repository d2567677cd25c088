"""Runs a task's Problem on any denoiser: a loaded pipeline, a model id / folder, a syncsde
denoiser (Stable Diffusion, IF, the scenes model) or an exact-score prior. Shared by the one-call
functions of the tileable, 360-panorama and hybrid tasks; only public API is used."""
from __future__ import annotations

from typing import Any, Callable

import torch

from syncsde.sampler import Problem, SamplingSchedule, sample
from syncsde.strategies import Strategy

__all__ = ["resolve_denoiser", "model_geometry", "run_problem"]


def resolve_denoiser(model: Any) -> Any:
    """A denoiser from a model id / folder, a diffusers pipeline, or a denoiser (returned as is)."""
    from syncsde.models import denoiser_from_pipeline, load_pipeline

    if isinstance(model, (str, bytes)) or hasattr(model, "__fspath__"):
        model = load_pipeline(str(model))
    if hasattr(model, "unet") and not hasattr(model, "schedule"):
        return denoiser_from_pipeline(model)
    if not callable(model):
        raise TypeError(f"model must be a pipeline, a model id or a denoiser, got {type(model).__name__}")
    return model


def model_geometry(den: Any, channels: int | None = None) -> tuple[int, int, int | None]:
    """``(channels, vae_scale_factor, native sample size)`` of a denoiser (1 and None for a
    prior, whose channels must be given)."""
    f = int(getattr(den, "vae_scale_factor", 1))
    size = getattr(den, "sample_size", None)
    unet = getattr(den, "unet", None)
    if channels is None:
        channels = getattr(getattr(unet, "config", None), "in_channels", None)
        if channels is None:
            raise ValueError("pass channels= for a denoiser without a UNet")
    return int(channels), f, None if size is None else int(size)


def run_problem(problem: Problem, den: Any, *, task: str, strategy: str | Strategy | None = None,
                inv_lambda: float = 5.0, num_inference_steps: int = 30,
                guidance_scale: float = 7.5, seed: int = 0, progress: bool = True,
                max_batch: int | None = None, schedule: SamplingSchedule | str | None = None,
                output_rule: Callable[[Any], torch.Tensor] | None = None,
                settings: dict | None = None, wrap: Any = None) -> Any:
    """Samples ``problem`` and decodes its output (``output_rule(sample_result)`` when the task
    post-processes the canvas, e.g. fills pixels no view sees); returns a
    :class:`syncsde.pipelines.PipelineResult`. ``wrap`` ("width", "height", "both"): the canvas
    is periodic along those axes, so the VAE decodes it with wrap padding (no seam where the
    canvas meets itself)."""
    from syncsde.pipelines import PipelineResult, make_task_strategy  # diffusers extras: lazily

    from syncsde.task_defaults import TASK_DEFAULTS

    if strategy is None and task not in TASK_DEFAULTS:
        strategy = "syncsde"
    strat = make_task_strategy(strategy, inv_lambda, task=task)
    if schedule is None:
        schedule = den.schedule(num_inference_steps) if hasattr(den, "schedule") else "sd"
    device = getattr(den, "device", "cpu")
    if hasattr(strat, "run"):  # a scheme over whole runs (sequential windows)
        if isinstance(schedule, str):
            schedule = SamplingSchedule.preset(schedule, num_inference_steps)
        res = strat.run(problem, den, schedule, guidance_scale=guidance_scale, seed=seed,
                        device=device, progress=progress, max_batch=max_batch)
    else:
        res = sample(problem, den, strat, schedule=schedule,
                     num_steps=num_inference_steps if isinstance(schedule, str) else None,
                     guidance_scale=guidance_scale, seed=seed, device=device, progress=progress,
                     max_batch=max_batch)
    latents = res.output if output_rule is None else output_rule(res)
    images, tensors = [], None
    if getattr(den, "vae", None) is not None and hasattr(den, "decode"):
        from syncsde.denoisers.diffusers_models import to_pil

        if wrap:
            from syncsde.denoisers.vae_tiling import decode_canvas

            tensors = decode_canvas(den, latents, vae_tiling=False, wrap=wrap)
        else:
            tensors = den.decode(latents.unsqueeze(0) if latents.dim() == 3 else latents)
        images = to_pil(tensors)
    s = dict(task=task, strategy=res.strategy, inv_lambda=inv_lambda,
             num_inference_steps=num_inference_steps, guidance_scale=guidance_scale, seed=seed,
             num_views=problem.views.num_views, **(settings or {}))
    return PipelineResult(images, tensors, latents, res, s, {"problem": problem})
