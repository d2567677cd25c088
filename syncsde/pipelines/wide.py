"""Wide images and panoramas: windows of one canvas (:func:`wide_image`)."""
from __future__ import annotations

from typing import Any, Callable, Sequence

from syncsde.denoisers.diffusers_models import StableDiffusionDenoiser
from syncsde.pipelines.common import (
    PipelineResult, _decode, _describe, _finish_images, _guidance, _latent_channels,
    _latent_size, _model_name, _prompts, _resolve, _sample_task, _scheduler_name,
    _seed_setting, _window_conditions, canvas_decoder, make_task_strategy, sampling_schedule)
from syncsde.strategies import Strategy


def _wrapped_window_problem(canvas_shape, window, stride, axes, cond, negative):
    """Windows of ``window`` every ``stride`` that wrap round the height (``-2 in axes``) and /
    or the width, as sparse gathers (the width-only wrap uses :class:`WindowViews`); returns
    ``(problem, window offsets)``. Same layout and correlation as :func:`wide_problem`."""
    import numpy as np

    from syncsde.correlation import EarlierViews
    from syncsde.sampler import Problem
    from syncsde.tasks.sparse_views import SparseViews
    from syncsde.views import window_offsets

    C, H, W = canvas_shape
    (h, w), (sh, sw) = window, stride
    tops = window_offsets(H, h, sh, circular=-2 in axes)
    lefts = window_offsets(W, w, sw, circular=-1 in axes)
    r, c = np.arange(h)[:, None], np.arange(w)[None, :]
    offsets = [(t, l) for t in tops for l in lefts]
    index = np.stack([((t + r) % H) * W + (l + c) % W for t, l in offsets])
    views = SparseViews.from_gather((C, H, W), index)
    n = views.num_views
    problem = Problem(views, [cond] * n, None if negative is None else [negative] * n,
                      correlation=EarlierViews(), init="canvas")
    return problem, offsets


# ---- wide images --------------------------------------------------------------------------
def wide_image(model, prompt: str | list | None = None, height: int | None = None,
               width: int | None = None, negative_prompt: str | list | None = None, *,
               window: int | None = None,
               stride: int | None = None, circular: bool | str = False,
               strategy: str | Strategy | None = None, inv_lambda: float = 5.0,
               num_inference_steps: int = 50, guidance_scale: float = 7.5, eta: float = 0.0,
               seed: int = 0, progress: bool = True, max_batch: int | None = None,
               decode: bool = True, strategy_options: dict | None = None,
               callback: Callable | None = None, init: str = "canvas",
               decode_windows: bool = False, authors_compat: bool = False,
               scheduler: Any = "pipeline", generator: Any = None,
               num_images_per_prompt: int = 1, output_type: str = "pil", latents: Any = None,
               callback_on_step_end: Callable | None = None,
               callback_on_step_end_tensor_inputs: Sequence[str] | None = None,
               prompt_embeds: Any = None, negative_prompt_embeds: Any = None,
               pooled_prompt_embeds: Any = None, negative_pooled_prompt_embeds: Any = None,
               clip_skip: int | None = None, true_cfg_scale: float | None = None,
               original_size: Any = None, target_size: Any = None,
               crops_coords_top_left: Any = None, vae_tiling: bool | str | None = None,
               vae_tile: int | None = None, vae_tile_overlap: int | None = None,
               _control: Any = None) -> PipelineResult:
    """A wide image from SD windows (authors: SD2-base, 512x2048, CFG 7.5, 50 steps).

    ``init="canvas"`` crops every window's initial noise from one canvas-sized map (the authors'
    README setting, ``--init_xt_from_zt``); ``"independent"`` draws each window's noise on its
    own (their script's default; canonical strategies such as MultiDiffusion still start from
    one canvas). ``decode_windows`` also decodes every window's own final latent
    (``extras["window_images"]``). ``authors_compat`` selects the authors' uncapped pull.

    ``height`` defaults to the model's native size and ``width`` to four times it (512 x 2048
    for SD2-base, 32 x 128 for the scenes model). ``window`` / ``stride`` are in pixels
    (default: the model's native size and a quarter of it: 512 / 128 for SD2-base, i.e. 64 / 16 latent columns; for 768-px models such as SD 2
    pass ``height=768``). The initial noise of all windows
    is cropped from one canvas-sized map. With ``syncsde`` each window is pulled to the windows
    before it and later windows go on top; the whole latent is decoded once.

    diffusers' conventions (:mod:`syncsde.conventions`): ``prompt`` may be a list (a batch),
    ``num_images_per_prompt``, ``generator`` (one or a list; overrides ``seed``), ``latents``,
    ``output_type`` (pil / np / pt / latent), ``callback_on_step_end`` with
    ``callback_on_step_end_tensor_inputs``, ``prompt_embeds`` / ``negative_prompt_embeds``
    (SDXL also ``pooled_prompt_embeds``), ``clip_skip``; ``guidance_scale <= 1`` means no CFG.
    With a batch, ``latents`` is ``[B, C, h, w]`` and ``images`` has B entries. SDXL windows
    get their own ``crops_coords_top_left`` (the window offset in pixels).

    ``circular``: False, True (= ``"width"``: a 360-degree panorama), ``"height"`` or
    ``"both"`` (a torus): the windows go round the wrapped axes and the decode wraps too
    (wrap padding, or tiles that cross the seam when tiled), so there is no seam at the wrap.
    ``vae_tiling`` (:mod:`syncsde.denoisers.vae_tiling`): None (default) / False decode the
    whole latent with the VAE's own decode (which tiles itself after diffusers'
    ``pipe.enable_vae_tiling()``); ``"auto"`` decodes in blended tiles when the latent is
    larger than the model's sample size (what a 512x8192 panorama needs); True always tiles.
    ``vae_tile`` / ``vae_tile_overlap`` are in latent pixels (default: the sample size and a
    quarter of it).
    SDXL: ``original_size`` (default: the canvas), ``target_size`` (default: the window /
    image) and ``crops_coords_top_left`` (added to each window's own offset) as diffusers'.
    """
    from syncsde.tasks import wide_problem

    from syncsde.denoisers.vae_tiling import check_wrap

    den = _resolve(model, StableDiffusionDenoiser)
    axes = check_wrap(circular)
    decoder = canvas_decoder(den, vae_tiling, vae_tile, vae_tile_overlap, circular, progress)
    native = den.sample_size * den.vae_scale_factor
    height = native if height is None else height
    width = 4 * native if width is None else width
    h, w = _latent_size(den, height, width)
    f = den.vae_scale_factor
    win = min(den.sample_size, w) if window is None else int(window) // f  # default: native, within the canvas
    st = max(1, win // 4) if stride is None else int(stride) // f
    C = _latent_channels(den)
    pb = _prompts(den, prompt, negative_prompt, num_images_per_prompt, prompt_embeds,
                  negative_prompt_embeds, clip_skip,
                  extra=dict(pooled_prompt_embeds=pooled_prompt_embeds,
                             negative_pooled_prompt_embeds=negative_pooled_prompt_embeds))
    grid = None
    if -2 in axes:  # windows round the height: sparse gathers
        problem, offsets = _wrapped_window_problem((C, h, w), (min(win, h), win), (st, st),
                                                   axes, pb.cond(), pb.negative())
        grid = ((min(win, h), win), offsets)
    else:
        problem = wide_problem((C, h, w), (min(win, h), win), (st, st), cond=pb.cond(),
                               negative=pb.negative(), circular=bool(axes))
    _window_conditions(den, problem, f,
                       dict(original_size=original_size, target_size=target_size,
                            crops_coords_top_left=crops_coords_top_left), grid)
    if init not in ("canvas", "independent"):
        raise ValueError(f"init must be 'canvas' or 'independent', got {init!r}")
    problem.init = init
    # a canvas that wraps is a 360 panorama (round the width) or a tile (both ways): their
    # defaults (syncsde.task_defaults)
    task = "wide" if not axes else ("tileable" if -2 in axes else "panorama360")
    strat = make_task_strategy(strategy, inv_lambda, strategy_options, authors_compat, task=task)
    sched = sampling_schedule(den, num_inference_steps, scheduler, problem.views.view_shape[-2:])
    batch = pb.size if pb.batched else None
    cfg = _guidance(den, guidance_scale, pb.negatives is not None, true_cfg_scale)
    res = _sample_task(den, problem, strat, sched, guidance_scale=cfg, eta=eta,
                       seed=seed, generator=generator, latents=latents, batch=batch,
                       progress=progress, max_batch=max_batch, callback=callback,
                       callback_on_step_end=callback_on_step_end,
                       tensor_inputs=callback_on_step_end_tensor_inputs, control=_control)
    latents_out = res.output
    images, tensors = _finish_images(den, latents_out, output_type, batch is not None, decode,
                                     decoder)
    extras: dict[str, Any] = {}
    if decode_windows:
        wv = res.views.reshape(-1, *res.views.shape[-3:])
        extras["window_images"], extras["window_tensors"] = _decode(den, wv)
    settings = dict(task="wide", model=_model_name(den.unet), prompt=_describe(prompt),
                    negative_prompt=_describe(negative_prompt), height=height, width=width,
                    window=win * f, stride=st * f, circular=circular, vae_tiling=vae_tiling,
                    strategy=res.strategy,
                    inv_lambda=inv_lambda, num_inference_steps=num_inference_steps,
                    guidance_scale=guidance_scale, eta=eta, seed=_seed_setting(seed, generator),
                    init=init, scheduler=_scheduler_name(sched),
                    authors_compat=authors_compat, num_views=problem.views.num_views,
                    num_images=pb.size, output_type=output_type, steps_run=res.steps)
    return PipelineResult(images, tensors, latents_out, res, settings, extras)
