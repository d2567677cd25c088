"""One call: a textured mesh from a prompt with SD 1.5 + depth ControlNet (the authors' setup).

``texture_mesh(model, "mesh.obj", "a wooden chair", out="outdir")`` writes ``textured.obj`` (+
``.mtl``, ``.png``), ``textured.glb``, ``turntable.png`` (a strip of renders) and
``turntable.gif``; the settings go into the PNG metadata and ``settings.json``.
"""
from __future__ import annotations

import json
import os
from typing import Any, Sequence

import numpy as np
import torch

from syncsde.mesh.camera import Camera, default_cameras, depth_image, rasterize_view
from syncsde.mesh.io import Mesh, load_mesh, save_glb, save_obj
from syncsde.mesh.views import TextureViews, bake_texture

DEFAULT_NEGATIVE = "oversmoothed, blurry, depth of field, out of focus, low quality, bloom, glowing effect."


def control_images(mesh: Mesh, cameras: Sequence[Camera], size: int) -> torch.Tensor:
    """``[N, 3, size, size]`` depth-ControlNet inputs (normalized inverse depth, background 0)."""
    out = [depth_image(rasterize_view(mesh, c, size, size)) for c in cameras]
    return torch.from_numpy(np.stack(out)).float()[:, None].expand(-1, 3, -1, -1).contiguous()


def render_textured(mesh: Mesh, texture: torch.Tensor, cameras: Sequence[Camera], size: int,
                    background: float = 1.0) -> torch.Tensor:
    """``[N, C, size, size]`` renders of ``texture`` ``[C, T, T]`` (bilinear) over a flat
    background."""
    C, T, _ = texture.shape
    V = TextureViews(mesh, cameras, size, T, channels=C, sampling="bilinear", fill=False)
    canvas = torch.full((C, 1, V.L), float(background), dtype=texture.dtype)
    canvas[:, 0, :T * T] = texture.reshape(C, -1)
    return V.forward(canvas)


def turntable(mesh: Mesh, texture: torch.Tensor, frames: int = 8, size: int = 256,
              elevation: float = 15.0, distance: float = 2.0) -> torch.Tensor:
    cams = [Camera(360.0 * k / frames, elevation, distance) for k in range(frames)]
    return render_textured(mesh, texture, cams, size).clamp(0, 1)


def _to_uint8(x: torch.Tensor) -> np.ndarray:
    """``[3, H, W]`` in [0, 1] -> ``[H, W, 3]`` uint8."""
    return (x.clamp(0, 1).permute(1, 2, 0).cpu().numpy() * 255 + 0.5).astype(np.uint8)


def write_outputs(out: str | os.PathLike, mesh: Mesh, texture: torch.Tensor, frames: torch.Tensor,
                  settings: dict) -> dict:
    """Textured OBJ/MTL/PNG, GLB, turntable strip PNG and GIF (all written atomically)."""
    from PIL import Image, PngImagePlugin

    from syncsde.atomic import atomic_path, atomic_save_png, atomic_write_json, check_output_dir

    folder = check_output_dir(out)
    info = PngImagePlugin.PngInfo()
    info.add_text("syncsde", json.dumps(settings))
    tex = _to_uint8(texture)
    paths = save_obj(mesh, tex, folder, "textured", pnginfo=info)
    paths["glb"] = save_glb(mesh, tex, folder / "textured.glb")
    strip = np.concatenate([_to_uint8(f) for f in frames], axis=1)
    paths["turntable_png"] = atomic_save_png(Image.fromarray(strip), folder / "turntable.png",
                                             pnginfo=info)
    imgs = [Image.fromarray(_to_uint8(f)) for f in frames]
    gif = folder / "turntable.gif"
    with atomic_path(gif) as tmp:
        imgs[0].save(tmp, format="GIF", save_all=True, append_images=imgs[1:], duration=150, loop=0)
    paths["turntable_gif"] = str(gif)
    paths["settings"] = atomic_write_json(folder / "settings.json", settings)
    return paths


def texture_mesh(model, mesh: Mesh | str | os.PathLike, prompt: str, out: str | None = None, *,
                 strategy: Any = "syncsde", inv_lambda: float = 5.0, num_inference_steps: int = 30,
                 guidance_scale: float = 15.5, negative_prompt: str | None = DEFAULT_NEGATIVE,
                 view_size: int = 768, latent_texture_size: int = 512,
                 rgb_texture_size: int = 1024, cameras: Sequence[Camera] | None = None,
                 sync_until: float = 200.0, eta: float = 1.0, cos_power: float = 6.0,
                 conditioning_scale: tuple[float, float] = (0.7, 0.9), seed: int = 0,
                 progress: bool = True, turntable_frames: int = 8, turntable_size: int = 256,
                 max_batch: int | None = None):
    """Textures ``mesh`` (a :class:`Mesh` or a file) for ``prompt``; returns a
    :class:`~syncsde.pipelines.PipelineResult` whose ``extras`` hold the texture ``[3, T, T]``,
    the view images, the turntable frames and the written paths (when ``out`` is given).

    Defaults follow the authors (see :mod:`syncsde.tasks.texture`); ``eta=1`` is DDPM-like
    ancestral sampling (they use DDPM), ``latent_texture_size`` 512 (theirs: 1536, see
    docs/models/texture.md), ``conditioning_scale`` goes linearly from 0.7 at t = 1000 to 0.9 at
    t = 0.
    """
    from syncsde.denoisers.diffusers_models import ControlNetDenoiser
    from syncsde.pipelines import PipelineResult, _decode, _latent_size, _model_name, _resolve
    from syncsde.pipelines import controlnet_conditions
    from syncsde.sampler import sample
    from syncsde.tasks.texture import directional_prompt, texture_problem, texture_strategy

    if not isinstance(mesh, Mesh):
        mesh = load_mesh(mesh)
    den = _resolve(model, ControlNetDenoiser)
    h, w = _latent_size(den, view_size, view_size)
    cams = default_cameras() if cameras is None else list(cameras)
    lo, hi = (float(v) for v in conditioning_scale)
    den.conditioning_scale = lambda t: lo + (hi - lo) * (1.0 - float(t) / 1000.0)
    ctrl = control_images(mesh, cams, view_size)
    prompts = [directional_prompt(prompt, c) for c in cams]
    cond, neg = controlnet_conditions(prompts, ctrl, [negative_prompt or ""] * len(cams))
    C = den.unet.config.in_channels
    problem = texture_problem(mesh, cond, neg, cams, h, latent_texture_size, C)
    strat = texture_strategy(strategy, inv_lambda, sync_until)
    res = sample(problem, den, strat, schedule=den.schedule(num_inference_steps),
                 guidance_scale=guidance_scale, eta=eta, seed=seed, device=den.device,
                 progress=progress, max_batch=max_batch)
    latents = res.views
    images, tensors = _decode(den, latents)
    if tensors is None:
        raise ValueError("texture_mesh needs a model with a VAE to decode the views")
    tensors = tensors.float().cpu()
    rgb = TextureViews(mesh, cams, view_size, rgb_texture_size, channels=3, cos_power=cos_power,
                       background=False)
    texture = bake_texture(rgb, tensors.to(torch.float64)).float()
    frames = turntable(mesh, texture, turntable_frames, turntable_size)
    settings = dict(task="texture", model=_model_name(den.unet), prompt=prompt,
                    negative_prompt=negative_prompt, strategy=res.strategy, inv_lambda=inv_lambda,
                    num_inference_steps=num_inference_steps, guidance_scale=guidance_scale,
                    view_size=view_size, latent_texture_size=latent_texture_size,
                    rgb_texture_size=rgb_texture_size, sync_until=sync_until, eta=eta,
                    cos_power=cos_power, conditioning_scale=[lo, hi], seed=seed,
                    cameras=[[c.azimuth, c.elevation, c.distance] for c in cams], mesh=mesh.name)
    extras = {"texture": texture, "turntable": frames, "control": ctrl}
    if out is not None:
        extras["files"] = write_outputs(out, mesh, texture, frames, settings)
    return PipelineResult(images, tensors, latents.cpu(), res, settings, extras)


__all__ = ["texture_mesh", "control_images", "render_textured", "turntable", "write_outputs",
           "DEFAULT_NEGATIVE"]
