"""One-call task functions on real models, with the authors' defaults.

Every function takes a loaded diffusers pipeline (see :func:`syncsde.models.load_pipeline`), a
denoiser built from one, or a model id / folder (loaded on the fly), plus ``strategy=`` (so every
synchronization method runs on the same inputs), ``seed``, ``num_inference_steps``,
``guidance_scale`` and ``progress``; each returns a :class:`PipelineResult` with PIL images, the
image tensors, the final latents / samples, the sampler's :class:`~syncsde.sampler.SampleResult`
and the settings (written into PNG metadata by the CLI).

- :func:`wide_image`: SD2-base panoramas, 512x2048, windows 64 latent columns every 16.
- :func:`mask_generation`: SD2-base, background / object / combined prompts and a region mask.
- :func:`edit_image`: SD 1.4 real-image editing: DDIM inversion, an object mask from attention
  (:class:`AttentionRecorder`, running sums only), then the three-trajectory edit.
- :func:`ambiguous_image`: DeepFloyd IF stage I synchronized, stage II per view.
- :func:`controlnet_eps`: depth-conditioned eps for any batch of views (texturing builds on it).
- :func:`long_motion`: MDM-format models over 120-frame windows with 30 frames of overlap.

Models in float16 on a GPU are fine: the sampler state stays float32 and model inputs are cast.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from syncsde import ops
from syncsde.denoisers.base import predict_eps
from syncsde.denoisers.diffusers_models import (
    ControlNetDenoiser, DynamicThresholding, IFDenoiser, IFSuperResolutionDenoiser, ImagePrompt,
    StableDiffusionDenoiser, UNetDenoiser, load_image, pil_to_tensor, threshold_eps, to_pil)
from syncsde.denoisers.mdm import MDMDenoiser, recover_joints
from syncsde.sampler import SampleResult, SamplingSchedule, sample
from syncsde.strategies import Strategy, make_strategy

__all__ = ["PipelineResult", "wide_image", "mask_generation", "edit_image", "ambiguous_image",
           "controlnet_eps", "controlnet_conditions", "long_motion", "load_mask",
           "AttentionRecorder", "ddim_loop", "make_task_strategy", "replace_word"]


@dataclass
class PipelineResult:
    """What a task function returns.

    ``images``: PIL images (the task's answer first); ``tensors``: the same as ``[B, 3, H, W]``
    in [0, 1]; ``latents``: the final latent (or pixel / motion) samples the images come from;
    ``result``: the sampler's result (all trajectories); ``settings``: the call's parameters;
    ``extras``: task-specific tensors (editing mask, x_T, IF stage-I images, motion joints...).
    """

    images: list
    tensors: torch.Tensor | None
    latents: torch.Tensor
    result: SampleResult | None
    settings: dict
    extras: dict = field(default_factory=dict)


# ---- shared helpers -----------------------------------------------------------------------
def make_task_strategy(strategy: str | Strategy, inv_lambda: Any = 5.0,
                       options: dict | None = None, authors_compat: bool = False) -> Strategy:
    """``strategy`` by name; ``inv_lambda`` only applies to ``syncsde``, and so does
    ``authors_compat`` (the authors' uncapped pull: ``max_pull=None``)."""
    if isinstance(strategy, Strategy):
        return strategy
    opts = dict(options or {})
    if strategy == "syncsde":
        opts.setdefault("inv_lambda", inv_lambda)
        if authors_compat:
            opts.setdefault("max_pull", None)
    return make_strategy(strategy, **opts)


def _model_name(obj) -> str:
    for o in (obj, getattr(obj, "unet", None)):
        cfg = getattr(o, "config", None)
        name = getattr(cfg, "_name_or_path", None) if cfg is not None else None
        if name:
            return str(name)
    return type(obj).__name__


def _resolve(model, want: type, **load_kw):
    """A denoiser of class ``want`` from a pipeline, a denoiser, or an id / folder."""
    from syncsde.models import denoiser_from_pipeline, load_pipeline

    if isinstance(model, (str, bytes)) or hasattr(model, "__fspath__"):
        model = load_pipeline(str(model), **load_kw)
    den = model if isinstance(model, (UNetDenoiser, MDMDenoiser)) else denoiser_from_pipeline(model)
    if not isinstance(den, want):
        names = " or ".join(w.__name__ for w in (want if isinstance(want, tuple) else (want,)))
        raise TypeError(f"this task needs a {names} (got {type(den).__name__})")
    return den


def _generator(seed) -> torch.Generator:
    if isinstance(seed, torch.Generator):
        return seed
    return torch.Generator().manual_seed(0 if seed is None else int(seed))


def _decode(den: StableDiffusionDenoiser, latents: torch.Tensor):
    if den.vae is None:
        return [], None
    imgs = den.decode(latents)
    return to_pil(imgs), imgs


def decode_circular(den: StableDiffusionDenoiser, latents: torch.Tensor,
                    padding: int = 8) -> torch.Tensor:
    """Decodes a 360-degree panorama with wrap padding: ``padding`` latent columns from each end
    are copied to the other side before the VAE decode and their pixels cropped after, so the
    decoder sees the wrap as an interior (diffusers' panorama pipeline does the same)."""
    z = latents[None] if latents.dim() == 3 else latents
    p = max(0, min(int(padding), z.shape[-1]))
    if p == 0:
        return den.decode(z)
    padded = torch.cat([z[..., -p:], z, z[..., :p]], dim=-1)
    img = den.decode(padded)
    cut = p * (img.shape[-1] // padded.shape[-1])
    return img[..., cut:img.shape[-1] - cut]


def _latent_size(den: StableDiffusionDenoiser, height: int, width: int) -> tuple[int, int]:
    f = den.vae_scale_factor
    if height % f or width % f:
        raise ValueError(f"height and width must be multiples of {f} (the VAE factor), got "
                         f"{height}x{width}")
    return height // f, width // f


def _latent_channels(den) -> int:
    """Channels of the sampled state (FLUX: the unpacked latent, a quarter of its input)."""
    c = getattr(den, "latent_channels", None)
    return int(c) if c is not None else int(den.unet.config.in_channels)


def _guidance(den, guidance_scale: float, has_negative: bool, true_cfg_scale) -> float:
    """The classifier-free guidance scale of the run (FLUX embeds guidance_scale instead)."""
    plan = getattr(den, "guidance_plan", None)
    if plan is None:
        if true_cfg_scale is not None:
            raise ValueError("true_cfg_scale applies to FLUX pipelines only")
        return guidance_scale
    return plan(guidance_scale, has_negative, true_cfg_scale)


def sampling_schedule(den, num_steps: int, scheduler: Any = "pipeline",
                      view_hw: Sequence[int] | None = None):
    """What drives the sampling steps of a one-call function: ``"pipeline"`` follows the
    pipeline's own scheduler (a plain DDIM takes the C fast path; DDPM, DDIM with clipping or
    thresholding, Euler, Euler-ancestral and DPM-Solver++ are driven through diffusers; any other
    is refused by name), ``"ddim"`` builds DDIM from its config (the authors' choice), or a
    diffusers scheduler object given here."""
    from syncsde.solvers import DiffusersSolver, is_plain_ddim

    if isinstance(scheduler, str):
        if scheduler == "ddim":
            return den.schedule(num_steps)
        if scheduler != "pipeline":
            raise ValueError(f"scheduler must be 'pipeline', 'ddim' or a diffusers scheduler, "
                             f"got {scheduler!r}")
        config = getattr(den, "scheduler_config", None)
        if config is None:
            return den.schedule(num_steps)
        config = {**dict(config), "_class_name": getattr(den, "scheduler_class", None) or
                  dict(config).get("_class_name") or "DDIMScheduler"}
        if is_plain_ddim(config):
            return den.schedule(num_steps)
        return DiffusersSolver(config, num_steps, **_schedule_kwargs(den, view_hw))
    return DiffusersSolver(scheduler, num_steps, **_schedule_kwargs(den, view_hw))


def _schedule_kwargs(den, view_hw) -> dict:
    """FLUX's resolution-dependent shift ``mu`` from one view's latent size."""
    fn = getattr(den, "schedule_kwargs", None)
    if fn is None or view_hw is None:
        return {}
    return fn(int(view_hw[0]), int(view_hw[1]))


def _cfg(guidance_scale: float) -> float:
    """diffusers' rule: a guidance scale <= 1 means no classifier-free guidance."""
    return float(guidance_scale) if guidance_scale > 1 else 1.0


def _scheduler_name(schedule) -> str:
    return getattr(schedule, "name", "DDIMScheduler")


def ddim_loop(denoiser, x: torch.Tensor, schedule: SamplingSchedule, cond: Sequence[Any],
              negative: Sequence[Any] | None = None, guidance_scale: float = 1.0,
              eta: float = 0.0, generator: torch.Generator | None = None,
              thresholding: tuple[float, float] | None = None, progress: bool = False,
              after_eps: Callable | None = None, max_batch: int | None = None) -> torch.Tensor:
    """Plain batched DDIM (no coupling) from ``x`` at the schedule's first level: the
    editing mask's source reconstruction and IF stage II use it. ``thresholding`` =
    ``(ratio, max_value)`` applies IF's dynamic thresholding (:func:`threshold_eps`)."""
    from tqdm.auto import tqdm

    x = x.clone()
    for info in tqdm(schedule.steps(eta), disable=not progress, leave=False, desc="ddim"):
        eps = predict_eps(denoiser, x, info.t, info.abar_t, cond, negative, guidance_scale,
                          max_batch, step=info.index)
        if after_eps is not None:
            after_eps(info)
        if thresholding is not None:
            eps = threshold_eps(x, eps, info.abar_t, info.abar_s, eta, *thresholding)
        noise = None
        if eta > 0:
            noise = torch.randn(x.shape, generator=generator, dtype=torch.float32).to(x)
        x = ops.ddim_step(x, eps, info.abar_t, info.abar_s, eta, noise, out=x)
    return x


def load_mask(mask, size: Sequence[int]) -> torch.Tensor:
    """A binary ``[h, w]`` float mask (1 = object) from a PNG path, PIL image or array: grayscale
    in [0, 1] (arrays above 1 are read as 0..255), binarized at 0.5, then nearest-resized to
    ``size = (h, w)`` (the authors' order). A file that is missing or not an image, a zero-sized
    or non-finite array, and a mask that selects no pixel are clear ``ValueError``s."""
    from PIL import Image, UnidentifiedImageError

    h, w = _positive_size(size, "size")
    if isinstance(mask, (str, bytes)) or hasattr(mask, "__fspath__") or isinstance(mask, Image.Image):
        what = "mask" if isinstance(mask, Image.Image) else f"mask {os.fsdecode(mask)!r}"
        try:
            img = Image.open(mask) if not isinstance(mask, Image.Image) else mask
            m = torch.from_numpy(np.asarray(img.convert("L"), dtype=np.float32) / 255.0)
        except FileNotFoundError:
            raise ValueError(f"{what}: no such file") from None
        except IsADirectoryError:
            raise ValueError(f"{what}: is a folder, not an image") from None
        except PermissionError:
            raise ValueError(f"{what}: not readable (permission denied)") from None
        except (UnidentifiedImageError, OSError, SyntaxError) as e:
            raise ValueError(f"{what}: not a readable image ({e})") from None
    else:
        what = "mask"
        arr = mask.detach().cpu() if isinstance(mask, torch.Tensor) else mask
        try:
            m = torch.as_tensor(np.asarray(arr, dtype=np.float32))
        except (TypeError, ValueError) as e:
            raise ValueError(f"mask: not a numeric array ({e})") from None
        if m.numel() and not torch.isfinite(m).all():
            raise ValueError("mask: contains NaN or infinite values")
        while m.dim() > 2:
            if m.shape[0] in (1, 3, 4) and m.dim() == 3 and m.shape[-1] not in (1, 3, 4):
                m = m.mean(0)  # CHW
            elif m.shape[-1] in (1, 3, 4):
                m = m[..., :3].mean(-1)  # HWC
            else:
                m = m[0]
        if m.numel() and float(m.max()) > 1.0:
            m = m / 255.0
    if m.dim() != 2 or m.numel() == 0:
        raise ValueError(f"{what}: expected a non-empty 2-D mask, got shape {tuple(m.shape)}")
    b = (m > 0.5).float()
    if tuple(b.shape) != (h, w):
        b = F.interpolate(b[None, None], (h, w), mode="nearest")[0, 0]
    if not b.any():
        raise ValueError(f"{what}: selects no pixel (white = object; at size {h}x{w})")
    return b


def _positive_size(size: Any, name: str) -> tuple[int, int]:
    try:
        h, w = size
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be (height, width), got {size!r}") from None
    out = []
    for v in (h, w):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
            raise ValueError(f"{name} must be two positive integers, got {size!r}")
        out.append(int(v))
    return out[0], out[1]


def replace_word(caption: str, source: str, target: str) -> str:
    """``caption`` with the first whole-word ``source`` replaced by ``target``."""
    pat = re.compile(rf"\b{re.escape(source)}\b", re.IGNORECASE)
    if not pat.search(caption):
        raise ValueError(f"the source word {source!r} does not occur in {caption!r}; pass "
                         "target_prompt= explicitly")
    return pat.sub(target, caption, count=1)


# ---- diffusers conventions shared by the task functions ------------------------------------
def _sample_task(den, problem, strat, sched, *, guidance_scale: float, eta: float, seed: Any,
                 generator: Any, latents: Any, batch: int | None, progress: bool,
                 max_batch: int | None, callback: Callable | None,
                 callback_on_step_end: Callable | None, tensor_inputs: Sequence[str] | None,
                 control: Any = None) -> SampleResult:
    """``sample`` with diffusers' generator / latents / per-sample prompts / step-end callback
    (:mod:`syncsde.conventions`)."""
    from syncsde.conventions import (PerSample, StepCallback, StepControl, apply_plan,
                                     plan_generator, run_sampler)
    from syncsde.denoisers.batching import BatchedDenoiser

    init = getattr(strat, "init", None) or problem.init
    plan = plan_generator(generator, seed, latents, problem, batch, init,
                          float(getattr(sched, "initial_noise_scale", 1.0)))
    apply_plan(problem, plan)
    conds = list(problem.cond) + list(problem.negative or [])
    wrap = any(isinstance(c, PerSample) for c in conds)
    model = BatchedDenoiser(den, batch or 1, max_batch) if wrap else den
    cb = callback
    if callback_on_step_end is not None:
        if control is None:
            control = StepControl(None, len(sched.timesteps), guidance_scale)
        cb = StepCallback(problem, strat, sched, eta, callback_on_step_end, tensor_inputs, control,
                          batched=batch is not None, legacy=callback)
    return run_sampler(
        lambda: sample(problem, model, strat, schedule=sched, guidance_scale=_cfg(guidance_scale),
                       eta=eta, seed=plan.seed, device=den.device, progress=progress,
                       max_batch=None if wrap else max_batch, callback=cb, batch=batch),
        cb if callback_on_step_end is not None else None, problem, strat)


def _finish_images(den, latents: torch.Tensor, output_type: str, batched: bool, decode: bool,
                   decoder: Callable | None = None):
    """``(images, tensors)`` for ``output_type``; ``latents`` is ``[B, C, h, w]`` when
    ``batched``, else one ``[C, h, w]``."""
    from syncsde.conventions import check_output_type, format_images

    check_output_type(output_type)
    z = latents if batched else latents[None]
    if output_type == "latent" or not decode or den.vae is None:
        return format_images(None, z, output_type), None
    tensors = (decoder or den.decode)(z)
    return format_images(tensors, z, output_type), tensors


def _window_conditions(den, problem, f: int) -> None:
    """Per-window conditions for models that condition on the crop (SDXL's add_time_ids):
    each window's condition carries its own offset and size in pixels."""
    from syncsde.denoisers.batching import map_condition

    hook = getattr(den, "window_condition", None)
    views = problem.views
    if hook is None or not hasattr(views, "offsets"):
        return
    C, H, W = views.canvas_shape
    size = (views.size[0] * f, views.size[1] * f)
    canvas = (H * f, W * f)

    def per_view(conds):
        out = []
        for c, (top, left) in zip(conds, views.offsets.tolist()):
            crop = (int(top) * f, int(left) * f)
            out.append(map_condition(c, lambda p, crop=crop: hook(p, crop, size, canvas)))
        return out

    problem.cond = per_view(problem.cond)
    if problem.negative is not None:
        problem.negative = per_view(problem.negative)
    else:  # the unconditional branch carries the same crop (diffusers' negative_add_time_ids)
        problem.negative = per_view([None] * views.num_views)


def _prompts(den, prompt, negative_prompt, num_images_per_prompt, prompt_embeds,
             negative_prompt_embeds, clip_skip, name="prompt", extra: dict | None = None):
    from syncsde.conventions import prompt_batch

    enc = getattr(den, "prompts", None)
    embed_extra = getattr(den, "batch_embeddings", None)
    fn = None
    if embed_extra is not None:
        fn = lambda c, n: embed_extra(c, n, **(extra or {}))  # noqa: E731
    elif extra and any(v is not None for v in extra.values()):
        raise ValueError(f"{', '.join(k for k, v in extra.items() if v is not None)} apply to "
                         f"SDXL-type models only (this is {type(den).__name__})")
    return prompt_batch(prompt, negative_prompt, num_images_per_prompt, prompt_embeds,
                        negative_prompt_embeds, clip_skip, enc, name, fn)


# ---- wide images --------------------------------------------------------------------------
def wide_image(model, prompt: str | list | None = None, height: int | None = None,
               width: int | None = None, negative_prompt: str | list | None = None, *,
               window: int | None = None,
               stride: int | None = None, circular: bool = False,
               strategy: str | Strategy = "syncsde", inv_lambda: float = 5.0,
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
    """
    from syncsde.tasks import wide_problem

    den = _resolve(model, StableDiffusionDenoiser)
    native = den.sample_size * den.vae_scale_factor
    height = native if height is None else height
    width = 4 * native if width is None else width
    h, w = _latent_size(den, height, width)
    f = den.vae_scale_factor
    win = den.sample_size if window is None else int(window) // f
    st = max(1, win // 4) if stride is None else int(stride) // f
    C = _latent_channels(den)
    pb = _prompts(den, prompt, negative_prompt, num_images_per_prompt, prompt_embeds,
                  negative_prompt_embeds, clip_skip,
                  extra=dict(pooled_prompt_embeds=pooled_prompt_embeds,
                             negative_pooled_prompt_embeds=negative_pooled_prompt_embeds))
    problem = wide_problem((C, h, w), (min(win, h), win), (st, st), cond=pb.cond(),
                           negative=pb.negative(), circular=circular)
    _window_conditions(den, problem, f)
    if init not in ("canvas", "independent"):
        raise ValueError(f"init must be 'canvas' or 'independent', got {init!r}")
    problem.init = init
    strat = make_task_strategy(strategy, inv_lambda, strategy_options, authors_compat)
    sched = sampling_schedule(den, num_inference_steps, scheduler, problem.views.view_shape[-2:])
    batch = pb.size if pb.batched else None
    cfg = _guidance(den, guidance_scale, pb.negatives is not None, true_cfg_scale)
    res = _sample_task(den, problem, strat, sched, guidance_scale=cfg, eta=eta,
                       seed=seed, generator=generator, latents=latents, batch=batch,
                       progress=progress, max_batch=max_batch, callback=callback,
                       callback_on_step_end=callback_on_step_end,
                       tensor_inputs=callback_on_step_end_tensor_inputs, control=_control)
    latents_out = res.output
    decoder = (lambda z: decode_circular(den, z)) if circular else None
    images, tensors = _finish_images(den, latents_out, output_type, batch is not None, decode,
                                     decoder)
    extras: dict[str, Any] = {}
    if decode_windows:
        wv = res.views.reshape(-1, *res.views.shape[-3:])
        extras["window_images"], extras["window_tensors"] = _decode(den, wv)
    settings = dict(task="wide", model=_model_name(den.unet), prompt=_describe(prompt),
                    negative_prompt=_describe(negative_prompt), height=height, width=width,
                    window=win * f, stride=st * f, circular=circular, strategy=res.strategy,
                    inv_lambda=inv_lambda, num_inference_steps=num_inference_steps,
                    guidance_scale=guidance_scale, eta=eta, seed=_seed_setting(seed, generator),
                    init=init, scheduler=_scheduler_name(sched),
                    authors_compat=authors_compat, num_views=problem.views.num_views,
                    num_images=pb.size, output_type=output_type, steps_run=res.steps)
    return PipelineResult(images, tensors, latents_out, res, settings, extras)


def _describe(prompt: Any) -> Any:
    if prompt is None or isinstance(prompt, str):
        return prompt
    if isinstance(prompt, (list, tuple)) and all(isinstance(p, str) for p in prompt):
        return list(prompt)
    return f"<{type(prompt).__name__}>"


def _seed_setting(seed: Any, generator: Any) -> Any:
    if generator is None:
        return seed
    gens = generator if isinstance(generator, (list, tuple)) else [generator]
    seeds = [int(g.initial_seed()) for g in gens if isinstance(g, torch.Generator)]
    return seeds[0] if len(seeds) == 1 else seeds


# ---- mask-based generation ----------------------------------------------------------------
def mask_generation(model, mask, background_prompt: str | list | None = None,
                    object_prompt: str | list | None = None,
                    combined_prompt: str | list | None = None,
                    negative_prompt: str | list | None = None,
                    height: int | None = None, width: int | None = None, *, strategy: str | Strategy = "syncsde",
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
    """
    from syncsde.conventions import zip_batches
    from syncsde.tasks import masked_problem

    den = _resolve(model, StableDiffusionDenoiser)
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
    _window_conditions(den, problem, den.vae_scale_factor)
    strat = make_task_strategy(strategy, inv_lambda, strategy_options, authors_compat)
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
        images, tensors = _finish_images(den, trio, output_type, True, True)
    else:
        images, tensors = _finish_images(den, latents, output_type, batch is not None, True)
    settings = dict(task="mask", model=_model_name(den.unet),
                    background_prompt=_describe(background_prompt),
                    object_prompt=_describe(object_prompt),
                    combined_prompt=_describe(combined_prompt),
                    negative_prompt=_describe(negative_prompt), height=height, width=width,
                    strategy=res.strategy, inv_lambda=inv_lambda,
                    num_inference_steps=num_inference_steps, guidance_scale=guidance_scale,
                    eta=eta, seed=_seed_setting(seed, generator), mask_fraction=float(m.mean()),
                    authors_compat=authors_compat, scheduler=_scheduler_name(sched),
                    num_images=pb.size, output_type=output_type, steps_run=res.steps)
    return PipelineResult(images, tensors, latents, res, settings, {"mask": m})


# ---- attention maps for the editing mask --------------------------------------------------
def _layer_hw(tokens: int, H: int, W: int) -> tuple[int, int]:
    h, w = H, W
    for _ in range(12):
        if h * w == tokens:
            return h, w
        h, w = (h + 1) // 2, (w + 1) // 2
    raise ValueError(f"an attention layer with {tokens} query tokens does not match a {H}x{W} latent")


class _RecordingProcessor:
    """Plain (non-fused) attention that hands its probabilities to the recorder."""

    def __init__(self, recorder: "AttentionRecorder", name: str, kind: str):
        self.recorder, self.name, self.kind = recorder, name, kind

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None,
                 temb=None, *args, **kwargs):
        residual = hidden_states
        if getattr(attn, "spatial_norm", None) is not None:
            hidden_states = attn.spatial_norm(hidden_states, temb)
        ndim = hidden_states.ndim
        if ndim == 4:
            b, c, hh, ww = hidden_states.shape
            hidden_states = hidden_states.view(b, c, hh * ww).transpose(1, 2)
        context = hidden_states if encoder_hidden_states is None else encoder_hidden_states
        b, n_kv = context.shape[0], context.shape[1]
        attention_mask = attn.prepare_attention_mask(attention_mask, n_kv, b)
        if getattr(attn, "group_norm", None) is not None:
            hidden_states = attn.group_norm(hidden_states.transpose(1, 2)).transpose(1, 2)
        query = attn.to_q(hidden_states)
        if encoder_hidden_states is None:
            context = hidden_states
        elif attn.norm_cross:
            context = attn.norm_encoder_hidden_states(encoder_hidden_states)
        key, value = attn.to_k(context), attn.to_v(context)
        query, key, value = (attn.head_to_batch_dim(t) for t in (query, key, value))
        probs = attn.get_attention_scores(query, key, attention_mask)
        self.recorder._record(self.name, self.kind, probs)
        out = attn.batch_to_head_dim(torch.bmm(probs, value))
        out = attn.to_out[1](attn.to_out[0](out))
        if ndim == 4:
            out = out.transpose(-1, -2).reshape(b, c, hh, ww)
        if getattr(attn, "residual_connection", False):
            out = out + residual
        return out / attn.rescale_output_factor


class AttentionRecorder:
    """Running sums of the attention maps that make the editing mask (seed 000 section 3.2).

    Per step: the cross-attention probabilities of ``token_indices`` in every ``attn2`` layer
    with at most ``max_cross_tokens`` queries (SD at 64x64 latents: the 16x16 and 8x8 layers;
    default ``(H/4) (W/4)``; when no layer is that coarse, the coarsest ones), averaged over
    batch and heads, upsampled (bicubic) to the finest selected resolution, averaged over
    layers, divided by their max and upsampled to the latent; plus the probabilities of one
    self-attention layer (default: the last ``attn1`` of the last up block, full resolution),
    averaged over batch and heads. Only the sums over steps are kept (one ``[H, W]`` map and
    one ``[HW, HW]`` matrix), never per-step maps.

    :meth:`mask`: ``m = mean cross map`` (clamped to [0, 1]), propagated ``m' = S m`` with the
    step-averaged self-attention S (row-major pixels), then ``m' > tau``.

    Use as a context manager around the model calls; call :meth:`end_step` after each step.
    """

    def __init__(self, unet, latent_hw: Sequence[int], token_indices: Sequence[int],
                 max_cross_tokens: int | None = None, self_layer: str | None = None):
        from diffusers.models.attention_processor import Attention

        self.unet = unet
        self.H, self.W = int(latent_hw[0]), int(latent_hw[1])
        self.token_indices = [int(i) for i in token_indices]
        if not self.token_indices:
            raise ValueError("need at least one token index")
        self.max_cross_tokens = (max(1, self.H // 4) * max(1, self.W // 4)
                                 if max_cross_tokens is None else int(max_cross_tokens))
        mods = dict(unet.named_modules())
        self.cross_layers = [n for n, m in mods.items() if n.endswith("attn2") and isinstance(m, Attention)]
        if self_layer is None:
            try:
                blk = unet.up_blocks[-1].attentions[-1].transformer_blocks[0].attn1
                self_layer = next(n for n, m in mods.items() if m is blk)
            except (AttributeError, IndexError, StopIteration):
                ups = [n for n, m in mods.items() if n.startswith("up_blocks") and n.endswith("attn1")
                       and isinstance(m, Attention)]
                if not ups:
                    raise ValueError("the UNet has no self-attention layer in its up blocks")
                self_layer = ups[-1]
        if not self.cross_layers:
            raise ValueError("the UNet has no cross-attention layers")
        self.self_layer = self_layer
        self._mods = mods
        self._saved: dict[str, Any] = {}
        self.cross_sum = torch.zeros(self.H, self.W, dtype=torch.float32)
        self.self_sum: torch.Tensor | None = None
        self.steps = 0
        self.self_steps = 0
        self.self_hw = (self.H, self.W)  # resolution of the self-attention layer
        self._step_maps: dict[str, torch.Tensor] = {}  # this step's per-layer maps (small)
        self._step_counts: dict[str, int] = {}

    # installation
    def __enter__(self):
        for n in self.cross_layers:
            self._install(n, "cross")
        self._install(self.self_layer, "self")
        return self

    def __exit__(self, *exc):
        for n, proc in self._saved.items():
            self._mods[n].set_processor(proc)
        self._saved.clear()
        return False

    def _install(self, name, kind):
        mod = self._mods[name]
        self._saved.setdefault(name, mod.processor)
        mod.set_processor(_RecordingProcessor(self, name, kind))

    # recording
    @torch.no_grad()
    def _record(self, name: str, kind: str, probs: torch.Tensor) -> None:
        if kind == "self":
            n = probs.shape[-1]
            if n != self.H * self.W:  # a coarser layer (small pixel models): propagate at its size
                self.self_hw = _layer_hw(n, self.H, self.W)
            s = probs.mean(0, dtype=torch.float32)  # stays on the model's device
            self.self_sum = s if self.self_sum is None else self.self_sum.add_(s)
            self.self_steps += 1
            return
        m = probs[..., self.token_indices].float().mean(-1).mean(0).cpu()  # [q]
        if name in self._step_maps:
            self._step_maps[name] += m
            self._step_counts[name] += 1
        else:
            self._step_maps[name] = m
            self._step_counts[name] = 1

    def end_step(self) -> None:
        """Folds this step's cross-attention maps into the running sum."""
        if not self._step_maps:
            return
        maps = {n: m / self._step_counts[n] for n, m in self._step_maps.items()}
        self._step_maps, self._step_counts = {}, {}
        sel = {n: m for n, m in maps.items() if m.numel() <= self.max_cross_tokens}
        if not sel:
            coarsest = min(m.numel() for m in maps.values())
            sel = {n: m for n, m in maps.items() if m.numel() == coarsest}
        shapes = {n: _layer_hw(m.numel(), self.H, self.W) for n, m in sel.items()}
        th, tw = max(shapes.values(), key=lambda s: s[0] * s[1])
        acc = torch.zeros(th, tw)
        for n, m in sel.items():
            img = m.reshape(1, 1, *shapes[n])
            if shapes[n] != (th, tw):
                img = F.interpolate(img, (th, tw), mode="bicubic", align_corners=False)
            acc += img[0, 0]
        acc /= len(sel)
        acc = acc / acc.max().clamp_min(1e-12)
        up = F.interpolate(acc[None, None], (self.H, self.W), mode="bicubic", align_corners=False)
        self.cross_sum += up[0, 0]
        self.steps += 1

    def cross_map(self) -> torch.Tensor:
        """The step-averaged cross-attention map ``[H, W]`` clamped to [0, 1]."""
        if self.steps == 0:
            raise RuntimeError("no steps were recorded")
        return (self.cross_sum / self.steps).clamp(0, 1)

    def self_map(self) -> torch.Tensor:
        """The step-averaged self-attention ``[HW, HW]`` (on the model's device)."""
        if self.self_sum is None:
            raise RuntimeError("no self-attention was recorded")
        return self.self_sum / self.self_steps

    def propagated(self) -> torch.Tensor:
        S = self.self_map()
        h, w = self.self_hw
        m = self.cross_map()
        if (h, w) != (self.H, self.W):
            m = F.interpolate(m[None, None], (h, w), mode="area")[0, 0]
        out = (S @ m.reshape(-1).to(S.device)).reshape(h, w).cpu()
        if (h, w) != (self.H, self.W):
            out = F.interpolate(out[None, None], (self.H, self.W), mode="bicubic",
                                align_corners=False)[0, 0]
        return out

    def mask(self, tau: float = 0.3) -> torch.Tensor:
        """The binary object mask ``[H, W]`` (1 = edit here)."""
        return (self.propagated() > float(tau)).float()


# ---- real-image editing -------------------------------------------------------------------
def edit_image(model, image, source_prompt: str | None = None, source_word: str | None = None,
               target_word: str | None = None, target_prompt: str | None = None, *,
               height: int | None = None, width: int | None = None,
               strategy: str | Strategy = "syncsde", inv_lambda: float = 5.0,
               num_inference_steps: int = 50, guidance_scale: float = 5.0, tau: float = 0.3,
               mask=None, token_indices: Sequence[int] | None = None,
               sample_posterior: bool = True, seed: int = 0, progress: bool = True,
               decode_reconstruction: bool = False, strategy_options: dict | None = None,
               callback: Callable | None = None, inversion: str | None = None,
               captioner: Callable[[Any], str] | None = None, xt_cache: str | None = None,
               authors_compat: bool = False, generator: Any = None,
               output_type: str = "pil") -> PipelineResult:
    """Text-driven editing of a real image (authors: SD 1.4, CFG 5, 50 steps, tau 0.3).

    1. The image (path, PIL, array) is resized to the model size and VAE-encoded (a posterior
       sample seeded by ``seed``, as the authors do; ``sample_posterior=False`` takes the mean).
       Without ``source_prompt`` the ``captioner`` (e.g. :class:`syncsde.editing.Captioner`,
       BLIP as the authors) writes the caption.
    2. DDIM inversion with the caption, without guidance: ``inversion="ddim"`` (textbook,
       the default) or ``"authors"`` (their index scheme, :func:`syncsde.sampler.inversion_steps`).
       ``xt_cache`` (a file) stores ``x_T`` with its caption and settings and reuses it on the
       next call; a cache of another image, model or setting is refused.
    3. The object mask, unless given: a reconstruction from x_T with the source prompt records
       cross-attention of the source word and the last full-resolution self-attention as running
       sums (:class:`AttentionRecorder`), propagated and thresholded at ``tau``. (The authors use
       CFG 5 with the caption as both prompts here, which equals no guidance; we run one branch.)
    4. Three trajectories (reconstruction, target from fresh noise, edit from x_T with the
       source prompt as negative), CFG ``guidance_scale``; the answer is the edit.

    ``target_prompt`` defaults to the caption with ``source_word`` replaced by ``target_word``;
    the caption word is found as the authors do (:func:`syncsde.editing.match_source_word`:
    exact word, then substring, then text-embedding similarity). ``authors_compat`` selects the
    authors' inversion and uncapped pull. Editing always samples with DDIM built from the
    pipeline's scheduler config (DDIM inversion and its reconstruction need DDIM's deterministic
    map); ``settings["scheduler"]`` says so.

    diffusers' conventions: ``generator`` (one CPU ``torch.Generator``; its seed is used where
    ``seed`` is: the VAE posterior sample and the target trajectory's noise) and
    ``output_type`` (pil / np / pt / latent).
    """
    from syncsde.conventions import check_output_type, format_images

    check_output_type(output_type)
    if generator is not None:
        if not isinstance(generator, torch.Generator) or generator.device.type != "cpu":
            raise ValueError("edit_image takes one CPU torch.Generator as generator")
        seed = int(generator.initial_seed())
    from syncsde.editing import (image_digest, load_inversion, match_source_word,
                                 replace_matched_word, save_inversion)
    from syncsde.sampler import INVERSION_SCHEMES, invert
    from syncsde.tasks import edit_problem

    inversion = inversion or ("authors" if authors_compat else "ddim")
    if inversion not in INVERSION_SCHEMES:
        raise ValueError(f"inversion must be one of {INVERSION_SCHEMES}, got {inversion!r}")
    den = _resolve(model, StableDiffusionDenoiser)
    if not getattr(den, "supports_editing", True):
        raise ValueError(f"edit_image does not support {type(den).__name__}: editing needs DDIM "
                         "inversion and the editing mask reads SD 1.x/2.x UNet cross-attention "
                         "of one text encoder; use an SD 1.x/2.x pipeline")
    if den.vae is None:
        raise ValueError("editing needs the VAE (pass a pipeline or a denoiser with vae=)")
    f = den.vae_scale_factor
    height = height or den.sample_size * f
    width = width or den.sample_size * f
    h, w = _latent_size(den, height, width)
    img = load_image(image, (width, height))
    if source_prompt is None:
        if captioner is None:
            raise ValueError("pass source_prompt (a caption of the image) or a captioner")
        source_prompt = captioner(img)
    match = None
    if source_word is not None and (target_prompt is None or (mask is None and token_indices is None)):
        match = match_source_word(source_prompt, source_word, den.prompts)
    if target_prompt is None:
        if source_word is None or target_word is None:
            raise ValueError("pass target_prompt, or source_word and target_word")
        target_prompt = replace_matched_word(source_prompt, match, source_word, target_word)
    sched = den.schedule(num_inference_steps)
    cache_key = dict(model=_model_name(den.unet), image=image_digest(img), height=height,
                     width=width, num_inference_steps=num_inference_steps, inversion=inversion,
                     sample_posterior=sample_posterior, seed=seed)
    if xt_cache is not None and os.path.exists(xt_cache):
        x_T, _ = load_inversion(xt_cache, cache_key, source_prompt)
        x_T = x_T.to(den.device)[None]
        x0 = None
    else:
        x0 = den.encode(img, generator=_generator(seed), sample=sample_posterior)
        x_T = invert(x0.to(den.device), den, source_prompt, sched, guidance_scale=1.0,
                     progress=progress, scheme=inversion)
        if xt_cache is not None:
            save_inversion(xt_cache, x_T[0].cpu(), source_prompt, cache_key)
    extras: dict[str, Any] = {"x_T": x_T[0].cpu(), "source_prompt": source_prompt,
                              "target_prompt": target_prompt}
    if x0 is not None:
        extras["x0"] = x0[0].cpu()
    if match is not None:
        extras["word_match"] = match
    if mask is None:
        if token_indices is None:
            if source_word is None:
                raise ValueError("pass source_word (or token_indices, or mask) to locate the object")
            if den.prompts is None:
                raise ValueError("no tokenizer: pass token_indices= or mask=")
            token_indices = den.prompts.token_indices(source_prompt, match.word)
        rec = AttentionRecorder(den.unet, (h, w), token_indices)
        with rec:
            recon = ddim_loop(den, x_T, sched, [source_prompt], progress=progress,
                              after_eps=lambda info: rec.end_step())
        m = rec.mask(tau)
        extras.update(cross_map=rec.cross_map(), propagated=rec.propagated(),
                      token_indices=list(token_indices), reconstruction_latent=recon[0].cpu())
        del rec
    else:
        m = load_mask(mask, (h, w))
    extras["mask"] = m
    problem = edit_problem(x_T[0].cpu(), m, source_prompt, target_prompt, null=None)
    strat = make_task_strategy(strategy, inv_lambda, strategy_options, authors_compat)
    res = sample(problem, den, strat, schedule=sched, guidance_scale=_cfg(guidance_scale),
                 seed=seed, device=den.device, progress=progress, callback=callback)
    latents = res.output
    decode = torch.stack([latents, res.views[0]]) if decode_reconstruction else latents
    batch = decode if decode.dim() == 4 else decode[None]
    if output_type == "latent":
        images, tensors = batch, None
    else:
        _, tensors = _decode(den, batch)
        images = format_images(tensors, batch, output_type)
    settings = dict(task="edit", model=_model_name(den.unet), source_prompt=source_prompt,
                    target_prompt=target_prompt, source_word=source_word, target_word=target_word,
                    height=height, width=width, strategy=res.strategy, inv_lambda=inv_lambda,
                    num_inference_steps=num_inference_steps, guidance_scale=guidance_scale,
                    tau=tau, seed=seed, sample_posterior=sample_posterior, inversion=inversion,
                    scheduler="DDIMScheduler",
                    authors_compat=authors_compat, mask_fraction=float(m.mean()))
    return PipelineResult(images, tensors, latents, res, settings, extras)


# ---- ambiguous images (DeepFloyd IF) ------------------------------------------------------
def _if_images(x: torch.Tensor) -> torch.Tensor:
    return (x.float().cpu() / 2 + 0.5).clamp(0, 1)


def ambiguous_image(stage1, prompt_a: str, prompt_b: str, view: Any = "rot90_cw",
                    stage2=None, negative_prompt: str | None = None, *,
                    strategy: str | Strategy = "syncsde", inv_lambda: float = 5.0,
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
    strat = make_task_strategy(strategy, inv_lambda, strategy_options, authors_compat)
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


# ---- ControlNet ---------------------------------------------------------------------------
def _control_tensor(img) -> torch.Tensor:
    if isinstance(img, torch.Tensor):
        t = img.float()
        if t.dim() == 2:
            t = t[None]
        return t
    return pil_to_tensor(load_image(img))


def controlnet_conditions(prompts: Sequence[Any] | str, control_images,
                          negative_prompts: Sequence[Any] | str | None = None,
                          scales: Sequence[float] | None = None):
    """``(cond, negative)`` lists of :class:`ImagePrompt` for N views: view i gets prompt i (or
    the one prompt) and control image i on both CFG halves."""
    imgs = [_control_tensor(i) for i in (control_images if not isinstance(control_images, torch.Tensor)
                                         or control_images.dim() == 4 else [control_images])]
    n = len(imgs)
    ps = [prompts] * n if isinstance(prompts, str) or prompts is None else list(prompts)
    ns = [negative_prompts] * n if isinstance(negative_prompts, str) or negative_prompts is None \
        else list(negative_prompts)
    if len(ps) != n or len(ns) != n:
        raise ValueError(f"{n} control images but {len(ps)} prompts / {len(ns)} negative prompts")
    sc = [None] * n if scales is None else [float(s) for s in scales]
    cond = [ImagePrompt(p, im, s) for p, im, s in zip(ps, imgs, sc)]
    neg = [ImagePrompt(q, im, s) for q, im, s in zip(ns, imgs, sc)]
    return cond, neg


def controlnet_eps(model, x_t: torch.Tensor, t: int, prompts, control_images,
                   negative_prompts=None, guidance_scale: float = 7.5,
                   conditioning_scale: float | Sequence[float] | None = None,
                   max_batch: int | None = None) -> torch.Tensor:
    """Depth- (or any control-) conditioned eps for a batch of views ``x_t [N, 4, h, w]`` at
    timestep ``t``: ControlNet + UNet on both CFG halves, guidance combined once, converted to
    eps if the model predicts v. ``control_images``: ``[N, 3, H, W]`` in [0, 1] at pixel size
    (or a list of PIL images / arrays); ``conditioning_scale`` a number or one per view."""
    den = _resolve(model, ControlNetDenoiser)
    scales = None
    if conditioning_scale is not None:
        scales = ([float(conditioning_scale)] * len(x_t) if np.isscalar(conditioning_scale)
                  else list(conditioning_scale))
    cond, neg = controlnet_conditions(prompts, control_images, negative_prompts, scales)
    if len(cond) != len(x_t):
        raise ValueError(f"{len(cond)} control images for {len(x_t)} views")
    return predict_eps(den, x_t, int(t), den.abar(int(t)), cond, neg, guidance_scale, max_batch)


# ---- long motion (MDM) --------------------------------------------------------------------
def long_motion(model, prompt: str | None, length: int = 600, *, window: int = 120,
                overlap: int = 30, strategy: str | Strategy = "syncsde", inv_lambda: float = 3.0,
                num_inference_steps: int = 50, guidance_scale: float = 2.5,
                diffusion_steps: int | None = None, max_pull: float = 1.0,
                negative_prompt: str | None = None, mean=None, std=None, seed: int = 0,
                progress: bool = True, eta: float = 0.0, channels: int | None = None,
                strategy_options: dict | None = None,
                callback: Callable | None = None) -> PipelineResult:
    """A long motion of ``length`` frames from an MDM-format model (x0 prediction) over
    windows of ``window`` frames overlapping by ``overlap`` (design: 120 / 30, inv_lambda 3;
    MDM's CFG 2.5, cosine schedule, 50 DDIM steps).

    First-step guard: MDM's cosine schedule starts at abar ~ 1e-9 .. 1e-6, where gamma_t is
    ~ 30 and ``gamma * inv_lambda`` would push each window 3x past its reference. SyncSDE's
    1/lambda(t) is therefore capped so that ``gamma_t / lambda(t) <= max_pull * sqrt(abar_s /
    abar_t)`` (:class:`~syncsde.strategies.SyncSDE`'s ``max_pull``): at most a full replacement by
    the reference on the overlap. Only the steps where the authors' schedule overshoots are
    touched: with MDM-1000 and 50 leading steps only the first (1/lambda 3 -> 1.95 at t=980),
    with MDM-50 stepped one by one the first two (3 -> 1.03, 2.94 -> 2.0). We clamp rather than
    skip the first step's coupling so that the windows still start out agreeing on their
    overlaps. Other values (e.g. 0.5) are tighter or looser; ``max_pull=None`` turns the guard
    off (the authors' uncapped update).

    ``channels``: features per frame (default: the model's ``njoints``, 263 for HumanML3D).
    Returns ``latents`` = the normalized canvas ``[F, 1, length]``, ``extras["features"]`` =
    ``[length, F]`` de-normalized with ``mean`` / ``std`` when given, and ``extras["joints"]``
    (``[length, 22, 3]``) for 263-d HumanML3D features when mean / std are given.
    """
    from syncsde.tasks import sequence_problem

    if isinstance(model, MDMDenoiser):
        den = model
    elif isinstance(model, torch.nn.Module):
        den = MDMDenoiser(model, diffusion_steps=diffusion_steps or 1000)
    else:
        raise TypeError("long_motion needs an MDM-format torch module or an MDMDenoiser")
    if diffusion_steps is not None:
        den.diffusion_steps = int(diffusion_steps)
    if channels is None:  # MDM names the 263 HumanML3D features "njoints" (nfeats = 1)
        channels = getattr(den.model, "njoints", None) or 263
    nfeats = int(channels)
    sched = den.schedule(num_inference_steps)
    problem = sequence_problem(int(nfeats), int(length), int(window), int(overlap), cond=prompt,
                               negative=negative_prompt)
    opts = dict(strategy_options or {})
    if isinstance(strategy, str) and strategy == "syncsde":
        opts.setdefault("max_pull", max_pull)  # the first-step guard (SyncSDE.max_pull)
    strat = make_task_strategy(strategy, inv_lambda, opts)
    res = sample(problem, den, strat, schedule=sched, guidance_scale=guidance_scale, eta=eta,
                 seed=seed, device=den.device, progress=progress, callback=callback)
    canvas = res.output  # [F, 1, L]
    feats = canvas[:, 0, :].T.float().cpu().numpy()
    if std is not None:
        feats = feats * np.asarray(std, dtype=np.float32)
    if mean is not None:
        feats = feats + np.asarray(mean, dtype=np.float32)
    extras: dict[str, Any] = {"features": feats}
    if feats.shape[1] == 263 and mean is not None and std is not None:
        extras["joints"] = recover_joints(feats)
    settings = dict(task="motion", model=type(den.model).__name__, prompt=prompt, length=length,
                    window=window, overlap=overlap, strategy=res.strategy, inv_lambda=inv_lambda,
                    max_pull=max_pull, num_inference_steps=num_inference_steps,
                    guidance_scale=guidance_scale, diffusion_steps=den.diffusion_steps,
                    seed=seed, num_views=problem.views.num_views)
    return PipelineResult([], None, canvas.cpu(), res, settings, extras)
