"""Mask-based generation: background, object and combined trajectories (:func:`mask_generation`)."""
from __future__ import annotations

from typing import Any, Callable, Sequence

import torch

from syncsde.denoisers.diffusers_models import StableDiffusionDenoiser
from syncsde.pipelines.common import (
    PipelineResult, _describe, _finish_images, _guidance, _latent_channels, _latent_size,
    _model_name, _prompts, _resolve, _sample_task, _scheduler_name, _seed_setting,
    _window_conditions, canvas_decoder, load_mask, make_task_strategy, sampling_schedule)
from syncsde.strategies import Strategy


# ---- mask-based generation ----------------------------------------------------------------
def mask_generation(model, mask, background_prompt: str | list | None = None,
                    object_prompt: str | list | None = None,
                    combined_prompt: str | list | None = None,
                    negative_prompt: str | list | None = None,
                    height: int | None = None, width: int | None = None, *, strategy: str | Strategy | None = None,
                    inv_lambda: float = 5.0, num_inference_steps: int = 50,
                    guidance_scale: float = 7.5, eta: float = 0.0, seed: int = 0,
                    progress: bool = True, decode_all: bool = False,
                    strategy_options: dict | None = None,
                    callback: Callable | None = None,
                    authors_compat: bool = False, scheduler: Any = "pipeline",
                    generator: Any = None, num_images_per_prompt: int = 1,
                    output_type: str = "pil", max_batch: int | None = None,
                    callback_on_step_end: Callable | None = None,
                    callback_on_step_end_tensor_inputs: Sequence[str] | None = None,
                    clip_skip: int | None = None, true_cfg_scale: float | None = None,
                    original_size: Any = None, target_size: Any = None,
                    crops_coords_top_left: Any = None, vae_tiling: bool | str | None = None,
                    vae_tile: int | None = None, vae_tile_overlap: int | None = None,
                    _control: Any = None) -> PipelineResult:
    """Mask-based text-to-image (authors: SD2-base, 50 steps, CFG 7.5, inv_lambda 5;
    ``authors_compat`` selects their uncapped pull).

    Three trajectories with independent noise: background (free), object (pulled to the
    background outside the mask), combined (pulled to the background outside and to the
    object inside). ``mask`` (PNG path or array, 1 = object) is binarized at 0.5 and
    nearest-resized to the latent. The answer is the combined trajectory; ``decode_all`` also
    decodes the other two (``images[1:]``).

    diffusers' conventions as in :func:`wide_image`: each of the three prompts may be a list
    (sample j uses entry j of each; a single string is shared), ``num_images_per_prompt``,
    ``generator``, ``output_type``, ``callback_on_step_end`` (``"latents"`` is the combined
    trajectory), ``clip_skip``. With a batch and ``decode_all`` the images are ordered
    combined, background, object per sample block.
    SDXL: ``original_size`` (default: the canvas), ``target_size`` (default: the window /
    image) and ``crops_coords_top_left`` (added to each window's own offset) as diffusers'.
    ``vae_tiling`` / ``vae_tile`` / ``vae_tile_overlap`` as in :func:`wide_image` (``"auto"``
    decodes a canvas larger than the model in blended tiles).
    """
    from syncsde.conventions import zip_batches
    from syncsde.tasks import masked_problem

    den = _resolve(model, StableDiffusionDenoiser)
    decoder = canvas_decoder(den, vae_tiling, vae_tile, vae_tile_overlap, False, progress)
    height = height or den.sample_size * den.vae_scale_factor  # default: the model's size
    width = width or den.sample_size * den.vae_scale_factor
    h, w = _latent_size(den, height, width)
    m = load_mask(mask, (h, w))
    C = _latent_channels(den)
    names = ("background_prompt", "object_prompt", "combined_prompt")
    given = (background_prompt, object_prompt, combined_prompt)
    sizes = [len(p) for p in given if isinstance(p, (list, tuple))]
    n_list = max(sizes) if sizes else 1
    batches = []
    for name, p in zip(names, given):
        if isinstance(p, str):  # broadcast to the batch of the list prompts
            p = [p] * n_list if sizes else p
        neg = negative_prompt
        if isinstance(neg, str) and sizes:
            neg = [neg] * n_list
        batches.append(_prompts(den, p, neg, num_images_per_prompt, None, None, clip_skip,
                                name=name))
    zip_batches(batches, names)
    pb = batches[2]
    problem = masked_problem((C, h, w), m, batches[0].cond(), batches[1].cond(), pb.cond(),
                             negative=pb.negative())
    _window_conditions(den, problem, den.vae_scale_factor,
                       dict(original_size=original_size, target_size=target_size,
                            crops_coords_top_left=crops_coords_top_left))
    strat = make_task_strategy(strategy, inv_lambda, strategy_options, authors_compat,
                               task="mask")
    sched = sampling_schedule(den, num_inference_steps, scheduler, (h, w))
    batched = pb.batched or any(isinstance(p, (list, tuple)) for p in given)
    batch = pb.size if batched else None
    cfg = _guidance(den, guidance_scale, pb.negatives is not None, true_cfg_scale)
    res = _sample_task(den, problem, strat, sched, guidance_scale=cfg, eta=eta,
                       seed=seed, generator=generator, latents=None, batch=batch,
                       progress=progress, max_batch=max_batch, callback=callback,
                       callback_on_step_end=callback_on_step_end,
                       tensor_inputs=callback_on_step_end_tensor_inputs, control=_control)
    latents = res.output
    if decode_all:
        trio = torch.stack([res.views[2], res.views[0], res.views[1]])
        trio = trio.transpose(0, 1).reshape(-1, *trio.shape[-3:]) if batch is not None else trio
        images, tensors = _finish_images(den, trio, output_type, True, True, decoder)
    else:
        images, tensors = _finish_images(den, latents, output_type, batch is not None, True,
                                         decoder)
    settings = dict(task="mask", model=_model_name(den.unet),
                    background_prompt=_describe(background_prompt),
                    object_prompt=_describe(object_prompt),
                    combined_prompt=_describe(combined_prompt),
                    negative_prompt=_describe(negative_prompt), height=height, width=width,
                    strategy=res.strategy, inv_lambda=inv_lambda,
                    num_inference_steps=num_inference_steps, guidance_scale=guidance_scale,
                    eta=eta, seed=_seed_setting(seed, generator), mask_fraction=float(m.mean()),
                    vae_tiling=vae_tiling,
                    authors_compat=authors_compat, scheduler=_scheduler_name(sched),
                    num_images=pb.size, output_type=output_type, steps_run=res.steps)
    return PipelineResult(images, tensors, latents, res, settings, {"mask": m})
