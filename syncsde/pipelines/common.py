"""What the task functions share: the result type, model resolution, schedules, decoding,
masks, the plain DDIM loop, and diffusers' calling conventions (prompt batches, generators,
step-end callbacks, output types; :mod:`syncsde.conventions`)."""
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
    StableDiffusionDenoiser, UNetDenoiser, threshold_eps, to_pil)
from syncsde.denoisers.mdm import MDMDenoiser
from syncsde.sampler import SampleResult, SamplingSchedule, sample
from syncsde.strategies import Strategy, make_strategy


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
def make_task_strategy(strategy: str | Strategy | None, inv_lambda: Any = 5.0,
                       options: dict | None = None, authors_compat: bool = False,
                       task: str | None = None) -> Strategy:
    """``strategy`` by name; ``None``: the task's default (:mod:`syncsde.task_defaults`, with
    ``options`` on top), or SyncSDE when ``authors_compat``. ``inv_lambda`` only applies to
    ``syncsde``, and so does ``authors_compat`` (the authors' uncapped pull: ``max_pull=None``)."""
    if isinstance(strategy, Strategy):
        return strategy
    opts = dict(options or {})
    if strategy is None:
        if authors_compat or task is None:
            strategy = "syncsde"
        else:
            from syncsde.task_defaults import default_strategy

            strategy, defaults = default_strategy(task)
            opts = {**defaults, **opts}
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
    from syncsde.models import denoiser_from_pipeline, load_pipeline, owning_denoiser

    if isinstance(model, (str, bytes)) or hasattr(model, "__fspath__"):
        den = owning_denoiser(load_pipeline(os.fsdecode(model), **load_kw))
    elif isinstance(model, (UNetDenoiser, MDMDenoiser)):
        den = model
    else:
        den = denoiser_from_pipeline(model)
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


def canvas_decoder(den, vae_tiling: Any = None, vae_tile: int | None = None,
                   vae_tile_overlap: int | None = None, wrap: Any = False,
                   progress: bool = False) -> Callable | None:
    """The decoder of a one-call function's canvas (:mod:`syncsde.denoisers.vae_tiling`):
    ``None`` (``den.decode``) when ``vae_tiling`` is None / False and nothing wraps; otherwise
    a function of the latents that tiles (``"auto"``: when the latent is larger than the model's
    sample size; True: always) and / or wraps (``wrap``: "width", "height", "both")."""
    from syncsde.denoisers.vae_tiling import check_vae_tiling, check_wrap, decode_canvas

    default_tile = int(getattr(den, "sample_size", 64))
    check_vae_tiling(vae_tiling, default_tile if vae_tile is None else vae_tile, vae_tile_overlap)
    axes = check_wrap(wrap)
    if vae_tiling in (None, False) and not axes:
        return None
    if vae_tiling in (None, False) and axes == (-1,):
        return lambda z: decode_circular(den, z)  # diffusers' panorama decode (parity)
    tile = None if vae_tile is None else int(vae_tile)
    overlap = None if vae_tile_overlap is None else int(vae_tile_overlap)
    return lambda z: decode_canvas(den, z, vae_tiling=vae_tiling, tile=tile, overlap=overlap,
                                   wrap=wrap, progress=progress)


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
    from syncsde.conventions import (
        PerSample,
        StepCallback,
        StepControl,
        apply_plan,
        plan_generator,
        run_sampler,
    )
    from syncsde.denoisers.batching import BatchedDenoiser

    if hasattr(strat, "run"):  # a scheme over whole runs: windows one after another (sequential.py)
        if callback is not None or callback_on_step_end is not None or latents is not None \
                or generator is not None or control is not None:
            raise ValueError("strategy 'sequential' runs one window after another: it takes a "
                             "seed, not latents, generators, ControlNets or step callbacks")
        return strat.run(problem, den, sched, guidance_scale=_cfg(guidance_scale), seed=seed,
                         batch=batch, device=den.device, progress=progress, max_batch=max_batch)
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


def _window_conditions(den, problem, f: int, size_kw: dict | None = None,
                       window_grid: tuple | None = None) -> None:
    """Per-view conditions for models that condition on the crop (SDXL's add_time_ids): each
    window carries its own offset and size in pixels (views without offsets: the whole image
    at (0, 0)). ``size_kw`` holds diffusers' ``original_size`` / ``target_size`` /
    ``crops_coords_top_left`` overrides (the crop is added to each window's offset).
    ``window_grid = (size, offsets)`` (latent pixels) gives the windows of a view set that
    has no ``offsets`` of its own (windows that wrap the height are sparse gathers)."""
    from syncsde.denoisers.batching import map_condition

    size_kw = {k: v for k, v in (size_kw or {}).items() if v is not None}
    hook = getattr(den, "window_condition", None)
    if hook is None:
        if size_kw:
            raise ValueError(f"{', '.join(sorted(size_kw))} apply to SDXL only (this is "
                             f"{type(den).__name__})")
        return
    views = problem.views
    C, H, W = views.canvas_shape
    canvas = (H * f, W * f)
    if window_grid is not None:
        size = (window_grid[0][0] * f, window_grid[0][1] * f)
        offsets = [(int(top) * f, int(left) * f) for top, left in window_grid[1]]
    elif hasattr(views, "offsets"):
        size = (views.size[0] * f, views.size[1] * f)
        offsets = [(int(top) * f, int(left) * f) for top, left in views.offsets.tolist()]
    else:
        size, offsets = canvas, [(0, 0)] * views.num_views
    try:
        dt, dl = (int(v) for v in size_kw.get("crops_coords_top_left", (0, 0)))
    except (TypeError, ValueError):
        raise ValueError("crops_coords_top_left must be (top, left) in pixels, got "
                         f"{size_kw.get('crops_coords_top_left')!r}") from None
    original = size_kw.get("original_size", canvas)
    target = size_kw.get("target_size", size)

    def per_view(conds):
        out = []
        for c, (top, left) in zip(conds, offsets):
            crop = (top + dt, left + dl)
            out.append(map_condition(c, lambda p, crop=crop: hook(p, crop, target, original)))
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
