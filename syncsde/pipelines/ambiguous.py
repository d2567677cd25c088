"""Ambiguous images with DeepFloyd IF (pixel space): stage I synchronized, stage II per view
(:func:`ambiguous_image`)."""
from __future__ import annotations

from typing import Any, Callable, Sequence

import torch

from syncsde.denoisers.diffusers_models import (
    DynamicThresholding, IFDenoiser, IFSuperResolutionDenoiser, ImagePrompt,
    StableDiffusionDenoiser)
from syncsde.pipelines.common import (
    PipelineResult, _generator, _model_name, _resolve, _sample_task, _scheduler_name,
    _seed_setting, ddim_loop, make_task_strategy, sampling_schedule)
from syncsde.sampler import SamplingSchedule
from syncsde.strategies import Strategy


# ---- ambiguous images (DeepFloyd IF) ------------------------------------------------------
def _if_images(x: torch.Tensor) -> torch.Tensor:
    return (x.float().cpu() / 2 + 0.5).clamp(0, 1)


def ambiguous_image(stage1, prompt_a: str, prompt_b: str, view: Any = "rot90_cw",
                    stage2=None, negative_prompt: str | None = None, *,
                    strategy: str | Strategy | None = None, inv_lambda: float = 5.0,
                    num_inference_steps: int = 30, guidance_scale: float = 10.0,
                    stage2_steps: int | None = None, stage2_guidance_scale: float | None = None,
                    noise_level: int = 250, thresholding: bool | None = None, seed: int = 0,
                    progress: bool = True, strategy_options: dict | None = None,
                    callback: Callable | None = None,
                    authors_compat: bool = False, scheduler: Any = "ddim",
                    generator: Any = None, output_type: str = "pil",
                    callback_on_step_end: Callable | None = None,
                    callback_on_step_end_tensor_inputs: Sequence[str] | None = None,
                    _control: Any = None) -> PipelineResult:
    """An image that reads as ``prompt_a`` and, seen through ``view``, as ``prompt_b``
    (authors: IF-I-M 64 px, 30 DDIM steps, CFG 10, inv_lambda 5; IF-II-M to 256 px).

    Stage I runs the two views in lockstep with ``strategy`` (SyncSDE pulls view 2 to
    ``view(view 1)``, M = 1). Stage II (optional) super-resolves both views independently
    (``noise_level`` 250 as diffusers' default; same step count and CFG unless given). The
    answer for ``prompt_b`` is view 2's final image and the one for ``prompt_a`` is its inverse
    transform, so both readings come from one image. The SyncSDE strategy caps its first-step
    pull by default (authors: 1/lambda * gamma = 3.94 at t = 957, capped at c_x = 1.79); pass
    ``strategy_options={"max_pull": None}`` for the authors' exact update. IF's dynamic
    thresholding of the DDIM
    step is kept (``thresholding=None`` follows each scheduler config, as the authors'
    diffusers DDIM step does; True / False force it); no safety checker or watermark is
    applied.

    ``images`` = [image for prompt_a, image for prompt_b, view 1's own image];
    ``extras["stage1"]`` holds the 64 px trajectories.

    diffusers' conventions: ``generator`` (a CPU ``torch.Generator``; overrides ``seed`` and
    continues into stage II as ``seed`` does), ``output_type`` (pil / np / pt; ``"latent"``
    returns the final ``[2, 3, S, S]`` samples in [-1, 1]), ``callback_on_step_end`` on stage I
    (``"latents"`` = the view-2 sample, ``"view_latents"`` = both views). Latent models
    (SD, SDXL, SD3, FLUX) are refused: rotations and flips of a VAE latent are not the latents
    of the rotated image, so this task needs a pixel-space model (IF, the scenes model).
    """
    from syncsde.conventions import check_output_type, format_images

    check_output_type(output_type)
    from syncsde.tasks import ambiguous_problem
    from syncsde.views import PixelMap

    if generator is not None:
        if not isinstance(generator, torch.Generator) or generator.device.type != "cpu":
            raise ValueError("ambiguous_image takes one CPU torch.Generator as generator")
        seed = generator
    den1 = _resolve(stage1, (IFDenoiser, StableDiffusionDenoiser))
    if not isinstance(den1, IFDenoiser):
        raise TypeError(f"ambiguous_image needs a pixel-space IFDenoiser (DeepFloyd IF, the "
                        f"scenes model); {type(den1).__name__} samples VAE latents, and a "
                        "rotated or flipped latent is not the latent of the rotated image (the "
                        "views are not latent-safe)")
    S = den1.sample_size
    C = den1.unet.config.in_channels
    pmap = PixelMap.parse(view)
    problem = ambiguous_problem((C, S, S), view, prompt_a, prompt_b, negative=negative_prompt)
    strat = make_task_strategy(strategy, inv_lambda, strategy_options, authors_compat,
                               task="ambiguous")
    cfg = den1.scheduler_config or {}
    sched1 = sampling_schedule(den1, num_inference_steps, scheduler)
    thr = None
    if cfg.get("thresholding", False) if thresholding is None else thresholding:
        thr = (float(cfg.get("dynamic_thresholding_ratio", 0.95)),
               float(cfg.get("sample_max_value", 1.5)))
        if not isinstance(sched1, SamplingSchedule):
            if thresholding is not None:
                raise ValueError("a diffusers scheduler applies its own thresholding config; "
                                 "pass thresholding=None with scheduler='pipeline'")
        else:
            strat = DynamicThresholding(strat, *thr)
    # the authors draw stage I's noise and then stage II's from one generator
    gen = _generator(seed)
    problem.output_view = 1  # the answer (and a step callback's "latents"): view 2
    res = _sample_task(den1, problem, strat, sched1, guidance_scale=guidance_scale, eta=0.0,
                       seed=gen, generator=None, latents=None, batch=None, progress=progress,
                       max_batch=None, callback=callback,
                       callback_on_step_end=callback_on_step_end,
                       tensor_inputs=callback_on_step_end_tensor_inputs, control=_control)
    views = res.views  # [2, 3, S, S] in [-1, 1]
    extras: dict[str, Any] = {"stage1": views.cpu()}
    final = views
    if stage2 is not None:
        den2 = stage2 if isinstance(stage2, IFSuperResolutionDenoiser) else None
        if den2 is None:
            from syncsde.models import denoiser_from_pipeline

            den2 = denoiser_from_pipeline(stage2, prompts=den1.prompts) \
                if getattr(stage2, "text_encoder", None) is None else denoiser_from_pipeline(stage2)
        if den2.prompts is None:
            den2.prompts = den1.prompts
        den2.noise_level = int(noise_level)
        S2 = den2.sample_size
        if authors_compat:
            # the authors: stage I's generator continues; x_T is drawn before the image noise
            # (diffusers' IF-II order), and stage II reuses stage I's DDIM scheduler config
            x = torch.randn((2, C, S2, S2), generator=gen, dtype=torch.float32).to(den2.device)
            up = den2.prepare_image(views.float().cpu(), S2, generator=gen)
            sched2, cfg2 = den1.schedule(stage2_steps or num_inference_steps), cfg
        else:
            gen = _generator(int(seed.initial_seed() if isinstance(seed, torch.Generator)
                                 else seed) + 1)
            up = den2.prepare_image(views.float().cpu(), S2, generator=gen)
            x = torch.randn((2, C, S2, S2), generator=gen, dtype=torch.float32).to(den2.device)
            sched2 = den2.schedule(stage2_steps or num_inference_steps)
            cfg2 = den2.scheduler_config or {}
        cond = [ImagePrompt(prompt_a, up[0]), ImagePrompt(prompt_b, up[1])]
        neg = [ImagePrompt(negative_prompt, up[0]), ImagePrompt(negative_prompt, up[1])]
        use2 = cfg2.get("thresholding", False) if thresholding is None else thresholding
        thr2 = (float(cfg2.get("dynamic_thresholding_ratio", 0.95)),
                float(cfg2.get("sample_max_value", 1.5))) if use2 else None
        final = ddim_loop(den2, x, sched2, cond, neg,
                          guidance_scale=stage2_guidance_scale or guidance_scale,
                          thresholding=thr2, progress=progress)
    img_b = final[1].float().cpu().contiguous()
    img_a = pmap.invert(img_b)
    own_a = final[0].float().cpu()
    tensors = _if_images(torch.stack([img_a, img_b, own_a]))
    settings = dict(task="ambiguous", model=_model_name(den1.unet), prompt_a=prompt_a,
                    prompt_b=prompt_b, view=str(view), negative_prompt=negative_prompt,
                    strategy=res.strategy, inv_lambda=inv_lambda,
                    num_inference_steps=num_inference_steps, guidance_scale=guidance_scale,
                    stage2=stage2 is not None, noise_level=noise_level,
                    thresholding=thr is not None, seed=_seed_setting(seed, generator),
                    authors_compat=authors_compat, scheduler=_scheduler_name(sched1),
                    output_type=output_type, steps_run=res.steps)
    images = format_images(tensors, final.cpu(), output_type)
    return PipelineResult(images, tensors, final.cpu(), res, settings, extras)
