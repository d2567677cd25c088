"""Tiled img2img and upscaling: a large image resized up by ``scale``, encoded with the tiled VAE,
started at a strength (SDEdit noise or DDIM inversion over windows), synchronized over
model-sized windows with a prompt, decoded tiled; optionally only inside a mask.

Start. With ``N`` steps and strength ``s`` the last ``k = int(N s)`` timesteps of the DDIM
schedule run (diffusers' img2img rule). ``start="noise"`` (SDEdit):
``x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) n``; ``start="inversion"``: deterministic DDIM
inversion of ``x_0`` up to ``t`` over the same windows, each step with the canvas eps
``eps(X) = sum_i f_i^T eps(f_i X) / coverage`` (tiled noise inversion), no guidance.

Background preservation. With a mask (1 = regenerate) every step ends with
``y = m y + (1 - m) (sqrt(abar_s) x_0 + sqrt(1 - abar_s) e_0)``, ``e_0`` the start's noise
(``(x_t - sqrt(abar_t) x_0) / sqrt(1 - abar_t)``, so the kept part follows the start's own
path), and the decoded image takes the (resized) input's pixels outside the mask.

One window and scale 1 is plain img2img (tested against a diffusers DDIM loop).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
import torch.nn.functional as F

from syncsde import ops
from syncsde.sampler import SamplingSchedule, inversion_steps
from syncsde.strategies import StepInfo, Strategy
from syncsde.views import ViewSet

__all__ = ["PartialSchedule", "img2img_schedule", "window_inversion", "KeepOutside", "upscale_image",
           "upscaled_size"]


@dataclass
class PartialSchedule(SamplingSchedule):
    """The last steps of a schedule: each step keeps its place in the full schedule (its
    ``t -> s`` pair uses the full schedule's spacing, not ``T / len(timesteps)``)."""

    full_timesteps: list[int] = field(default_factory=list)

    def steps(self, eta: float = 0.0) -> list[StepInfo]:
        full = SamplingSchedule(self.abar, list(self.full_timesteps), self.final_abar,
                                self.num_train_timesteps).steps(eta)
        tail = full[len(full) - len(self.timesteps):]
        return [StepInfo(k, i.t, i.s, i.abar_t, i.abar_s, i.eta, list(self.timesteps))
                for k, i in enumerate(tail)]


def img2img_schedule(schedule: SamplingSchedule, strength: float) -> SamplingSchedule:
    """The last ``int(N * strength)`` steps of ``schedule`` (diffusers' img2img rule)."""
    if isinstance(strength, bool) or not isinstance(strength, (int, float)) or \
            not (math.isfinite(strength) and 0 < strength <= 1):
        raise ValueError(f"strength must be a number in (0, 1], got {strength!r}")
    n = len(schedule.timesteps)
    k = min(int(n * strength), n)
    if k < 1:
        raise ValueError(f"strength {strength} leaves no step of {n} (use more steps or a "
                         "larger strength)")
    if int(schedule.timesteps[n - k]) <= 0:
        raise ValueError(f"strength {strength} with {n} steps runs only the t = 0 step (nothing "
                         "to denoise); use more steps or a larger strength")
    return PartialSchedule(schedule.abar, list(schedule.timesteps[n - k:]), schedule.final_abar,
                           schedule.num_train_timesteps, list(schedule.timesteps))


@torch.no_grad()
def window_inversion(x0: torch.Tensor, denoiser: Any, views: ViewSet, cond: Any,
                     schedule: SamplingSchedule, progress: bool = False,
                     max_batch: int | None = None) -> torch.Tensor:
    """DDIM inversion of a canvas ``x0 [C, H, W]`` to the first level of ``schedule``; the eps of
    every step is the coverage-average of the windows' eps (equals
    :func:`syncsde.sampler.invert` for one window covering the canvas). ``cond``: one condition
    for all windows or a list with one per view (control crops, SDXL crop conditions)."""
    from tqdm.auto import tqdm

    from syncsde.denoisers.base import predict_eps

    x = x0.clone()
    n = views.num_views
    conds = list(cond) if isinstance(cond, (list, tuple)) and len(cond) == n else [cond] * n
    for t_eval, a_eval, a_from, a_to in tqdm(inversion_steps(schedule, "ddim"), desc="inversion",
                                             disable=not progress, leave=False):
        y = views.forward(x)
        eps = predict_eps(denoiser, y, t_eval, a_eval, conds, None, 1.0, max_batch)
        x = ops.ddim_step(x, views.average(eps), a_from, a_to, out=x)
    return x


class KeepOutside(Strategy):
    """Wraps any strategy: after each step the views outside ``view_masks`` (1 = regenerate)
    are reset to the start's path ``sqrt(abar_s) x0 + sqrt(1 - abar_s) e0`` (module docstring)."""

    def __init__(self, inner: Strategy, view_masks: torch.Tensor, x0_views: torch.Tensor,
                 eps0_views: torch.Tensor):
        self.inner = inner
        self.name = inner.name
        self.init = inner.init
        self.output_rule = inner.output_rule
        self.any_solver = inner.any_solver
        self.view_masks, self.x0_views, self.eps0_views = view_masks, x0_views, eps0_views

    def prepare(self, run):
        self.inner.prepare(run)
        def put(t):  # [N, C, h, w] -> [N, 1.., C, h, w] (batch dims of the run)
            t = t.to(device=run.device, dtype=run.dtype)
            return t.reshape((t.shape[0],) + (1,) * run.batch_dims + tuple(t.shape[1:]))
        self._m, self._x0, self._e0 = (put(t) for t in (self.view_masks, self.x0_views,
                                                        self.eps0_views))

    def step(self, run, y, eps, info, noise):
        y = self.inner.step(run, y, eps, info, noise)
        keep = math.sqrt(info.abar_s) * self._x0 + math.sqrt(max(0.0, 1 - info.abar_s)) * self._e0
        return y.copy_(keep + self._m * (y - keep))

    def __repr__(self):
        return f"KeepOutside({self.inner!r})"


def upscaled_size(width: int, height: int, scale: float) -> tuple[int, int]:
    """``(scale * width, scale * height)``; refuses a scale that does not give whole pixels."""
    if isinstance(scale, bool) or not isinstance(scale, (int, float)) or \
            not (math.isfinite(scale) and scale > 0):
        raise ValueError(f"scale must be a finite number > 0, got {scale!r}")
    out = []
    for v, name in ((width, "width"), (height, "height")):
        s = v * scale
        if abs(s - round(s)) > 1e-6 or round(s) < 1:
            raise ValueError(f"scale {scale} times the input {name} {v} is not a whole number of "
                             "pixels")
        out.append(int(round(s)))
    return out[0], out[1]


def upscale_image(model, image: Any, scale: float = 2, prompt: str = "",
                  negative_prompt: str | None = None, *, strength: float = 0.5,
                  start: str = "noise", strategy: str | Strategy = "syncsde",
                  inv_lambda: float = 5.0, num_inference_steps: int = 50,
                  guidance_scale: float = 7.5, window: int | None = None,
                  stride: int | None = None, mask: Any = None, seed: int = 0,
                  progress: bool = True, max_batch: int | None = None,
                  vae_tile: int | None = None, control_image: Any = None,
                  controlnet_scale: float | None = None, strategy_options: dict | None = None,
                  callback: Callable | None = None):
    """``image`` (path, PIL, array, ``[3, H, W]`` in [0, 1]) resized by ``scale`` (LANCZOS) and
    re-generated over windows with ``prompt`` at ``strength``. The output is exactly
    ``scale`` times the input size (the canvas is padded to the VAE grid and cropped back).
    ``window`` / ``stride`` in pixels (default: the model's size and half of it); ``mask``
    (1 = regenerate) keeps the input elsewhere; ``control_image`` (ControlNet models) is
    resized to the output and cropped per window. Returns a
    :class:`syncsde.pipelines.PipelineResult` (``extras``: the upscaled input, x0, the start)."""
    from syncsde.denoisers.diffusers_models import (ControlNetDenoiser, load_image,
                                                    pil_to_tensor, to_pil)
    from syncsde.denoisers.tiled_vae import tiled_decode, tiled_encode
    from syncsde.pipelines import PipelineResult, load_mask, make_task_strategy
    from syncsde.sampler import sample
    from syncsde.tasks.control_windows import with_window_control, with_window_crop_conditions
    from syncsde.tasks.runner import resolve_denoiser
    from syncsde.tasks.wide import wide_problem

    if start not in ("noise", "inversion"):
        raise ValueError(f"start must be 'noise' or 'inversion', got {start!r}")
    den = resolve_denoiser(model)
    if getattr(den, "unet", None) is None or not hasattr(den, "encode"):
        raise TypeError("upscale_image needs an SD-like model with a VAE (or the scenes model)")
    try:
        src = load_image(image)
    except (FileNotFoundError, IsADirectoryError):
        raise ValueError(f"image {image!r}: no such file") from None
    except OSError as e:
        raise ValueError(f"image: not a readable image ({e})") from None
    W0, H0 = src.size
    Wt, Ht = upscaled_size(W0, H0, scale)
    up = pil_to_tensor(src.resize((Wt, Ht), resample=_lanczos()) if (Wt, Ht) != (W0, H0) else src)
    f = int(den.vae_scale_factor)
    Hp, Wp = -(-Ht // f) * f, -(-Wt // f) * f
    padded = F.pad(up[None], (0, Wp - Wt, 0, Hp - Ht), mode="replicate") if (Hp, Wp) != (Ht, Wt) \
        else up[None]
    h, w = Hp // f, Wp // f
    native = int(den.sample_size)
    win = native if window is None else max(1, int(window) // f)
    st = max(1, win // 2) if stride is None else max(1, int(stride) // f)
    x0 = tiled_encode(den, padded, tile=vae_tile, progress=progress).float().cpu()[0]  # [C, h, w]
    C = x0.shape[0]
    problem = wide_problem((C, h, w), (min(win, h), min(win, w)), (st, st), cond=prompt,
                           negative=negative_prompt)
    with_window_crop_conditions(den, problem, f)  # SDXL: each window's crop in add_time_ids
    if control_image is not None:
        if not isinstance(den, ControlNetDenoiser):
            raise ValueError("a control image needs a ControlNet model")
        if getattr(strategy, "name", strategy) == "collage":
            raise ValueError("collage's overlap inputs belong to no single window: it cannot "
                             "take per-window control images")
        ctrl = pil_to_tensor(load_image(control_image, (Wt, Ht))) \
            if not isinstance(control_image, torch.Tensor) else control_image.float()
        if tuple(ctrl.shape[-2:]) != (Ht, Wt):
            ctrl = F.interpolate(ctrl.reshape(1, -1, *ctrl.shape[-2:]), (Ht, Wt), mode="bilinear",
                                 align_corners=False)[0]
        ctrl = F.pad(ctrl[None], (0, Wp - Wt, 0, Hp - Ht), mode="replicate")[0]
        with_window_control(problem, ctrl, f, controlnet_scale)
    full = den.schedule(num_inference_steps)
    sched = img2img_schedule(full, strength)
    a = float(sched.abar[sched.timesteps[0]])
    if start == "noise":
        n = torch.randn(x0.shape, generator=torch.Generator().manual_seed(int(seed)),
                        dtype=torch.float32)
        x_t = math.sqrt(a) * x0 + math.sqrt(1 - a) * n
    else:
        x_t = window_inversion(x0.to(den.device), den, problem.views, list(problem.cond), sched,
                               progress=progress, max_batch=max_batch).float().cpu()
    eps0 = (x_t - math.sqrt(a) * x0) / math.sqrt(1 - a)
    problem.initial_canvas = x_t
    problem.init = "canvas"
    strat = make_task_strategy(strategy, inv_lambda, strategy_options)
    pix_mask = None
    if mask is not None:
        pix_mask = load_mask(mask, (Ht, Wt))
        pm = F.pad(pix_mask[None, None], (0, Wp - Wt, 0, Hp - Ht), mode="replicate")
        lat_mask = (F.max_pool2d(pm, f)[0, 0] if f > 1 else pm[0, 0])
        views = problem.views
        vm = views.forward(lat_mask.expand(C, h, w).contiguous())[:, :1]
        strat = KeepOutside(strat, vm, views.forward(x0), views.forward(eps0))
    cfg = float(guidance_scale) if guidance_scale > 1 else 1.0
    res = sample(problem, den, strat, schedule=sched, guidance_scale=cfg, seed=seed,
                 device=getattr(den, "device", "cpu"), progress=progress, max_batch=max_batch,
                 callback=callback)
    latents = res.output
    img = tiled_decode(den, latents[None], tile=vae_tile, progress=progress)[..., :Ht, :Wt]
    if pix_mask is not None:
        img = pix_mask * img + (1 - pix_mask) * up[None]
    settings = dict(task="upscale", model=str(getattr(getattr(den.unet, "config", None),
                                                       "_name_or_path", "") or type(den.unet).__name__),
                    prompt=prompt, negative_prompt=negative_prompt, scale=scale,
                    input_size=[W0, H0], output_size=[Wt, Ht], strength=strength, start=start,
                    strategy=res.strategy, inv_lambda=inv_lambda,
                    num_inference_steps=num_inference_steps, steps_run=len(sched.timesteps),
                    guidance_scale=guidance_scale, window=min(win, w) * f, stride=st * f,
                    seed=seed, mask=mask is not None, control=control_image is not None,
                    num_views=problem.views.num_views)
    return PipelineResult(to_pil(img), img, latents, res, settings,
                          {"upscaled_input": up, "x0": x0, "x_start": x_t, "problem": problem})


def _lanczos():
    from PIL import Image

    return Image.LANCZOS
