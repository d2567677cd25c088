"""Denoiser adapters for diffusers models: Stable Diffusion, ControlNet, DeepFloyd IF I / II.

Each adapter follows the protocol of :mod:`syncsde.denoisers.base`:
``out = denoiser(x_t [B, C, H, W], t, cond)`` with ``cond`` a list of B conditions, and a
``prediction_type`` read from the model's scheduler config (``epsilon`` for SD 1.x / SD2-base /
IF, ``v_prediction`` for SD 2 at 768 px). The sampler does classifier-free guidance once for all
views and converts v / x0 outputs to eps (:func:`~syncsde.denoisers.base.predict_eps`).

Conditions:

- a prompt string; ``None`` is the empty prompt ``""`` (the unconditional branch);
- a tensor ``[L, D]`` (or ``[1, L, D]``): ready-made text embeddings;
- :class:`ImagePrompt` ``(prompt, image)``: a prompt plus a per-view image, the depth map of a
  ControlNet view or the upscaled low-resolution image of IF stage II. Negative conditions
  carry the same image (ControlNet and IF-II see it on both CFG halves).

Prompts are encoded once and cached (:class:`PromptEncoder`), so a 13-window panorama with one
prompt runs the text encoder twice in all (prompt and ""), however many steps.

The adapters only call the PyTorch modules (``unet``, ``controlnet``, ``text_encoder``, ``vae``);
all elementwise diffusion math stays in :mod:`syncsde.ops`. They also carry the sampling schedule
of their scheduler config (:meth:`UNetDenoiser.schedule`), so a run uses exactly the
``alphas_cumprod`` table, timesteps and final alpha of the diffusers DDIM scheduler.
"""
from __future__ import annotations

import logging
import math
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np
import torch

from syncsde import ops
from syncsde.strategies import Strategy

__all__ = [
    "ImagePrompt", "PromptEncoder", "UNetDenoiser", "StableDiffusionDenoiser",
    "ControlNetDenoiser", "IFDenoiser", "IFSuperResolutionDenoiser", "PixelDenoiser",
    "PixelSpace", "schedule_from_scheduler",
    "DynamicThresholding", "threshold_eps", "dynamic_threshold", "encode_images",
    "decode_latents", "to_pil", "load_image", "pil_to_tensor",
]

log = logging.getLogger(__name__)


# ---- conditions ---------------------------------------------------------------------------
@dataclass(eq=False)
class ImagePrompt:
    """A prompt plus one image for this view: ControlNet's control image (``[3, H, W]`` in [0, 1]
    at pixel resolution) or IF stage II's noised upscaled image (``[3, H, W]`` in [-1, 1]).

    ``scale`` overrides the ControlNet conditioning scale for this view (None = the denoiser's).
    """

    prompt: Any
    image: torch.Tensor
    scale: float | None = None


def _split(cond: Sequence[Any]) -> tuple[list[Any], list[ImagePrompt | None]]:
    prompts, images = [], []
    for c in cond:
        if isinstance(c, ImagePrompt):
            prompts.append(c.prompt)
            images.append(c)
        else:
            prompts.append(c)
            images.append(None)
    return prompts, images


# ---- prompt encoding ----------------------------------------------------------------------
class PromptEncoder:
    """Text encoder + tokenizer with a cache of embeddings per prompt string.

    ``style="clip"`` follows ``StableDiffusionPipeline.encode_prompt`` (pad to the tokenizer's
    ``model_max_length``, attention mask only if the encoder config asks for it); ``style="t5"``
    follows ``IFPipeline.encode_prompt`` (77 tokens, lower-cased and stripped, attention mask
    passed to T5). ``None`` encodes as ``""``. Tensors pass through unchanged.
    """

    def __init__(self, tokenizer, text_encoder, style: str = "clip", max_length: int | None = None,
                 cache_size: int = 256):
        if style not in ("clip", "t5"):
            raise ValueError(f"style must be 'clip' or 't5', got {style!r}")
        if tokenizer is None or text_encoder is None:
            raise ValueError("PromptEncoder needs a tokenizer and a text encoder (pass prompt "
                             "embeddings as tensors to run without them)")
        self.tokenizer = tokenizer
        self.text_encoder = text_encoder
        self.style = style
        if max_length is None:
            max_length = 77 if style == "t5" else int(getattr(tokenizer, "model_max_length", 77))
        self.max_length = int(max_length)
        self.cache_size = int(cache_size)
        self._cache: OrderedDict[str, torch.Tensor] = OrderedDict()
        self.hits = 0
        self.misses = 0

    def clear(self) -> None:
        self._cache.clear()

    def _encoder_device(self, device):
        if device is not None:
            return torch.device(device)
        try:
            return next(self.text_encoder.parameters()).device
        except StopIteration:  # pragma: no cover
            return torch.device("cpu")

    def _encode_strings(self, texts: list[str], device, clip_skip: int | None = None) -> torch.Tensor:
        if self.style == "t5":
            texts = [t.lower().strip() for t in texts]
            tok = self.tokenizer(texts, padding="max_length", max_length=self.max_length,
                                 truncation=True, add_special_tokens=True, return_tensors="pt")
            mask = tok.attention_mask.to(device)
        else:
            tok = self.tokenizer(texts, padding="max_length", max_length=self.max_length,
                                 truncation=True, return_tensors="pt")
            use_mask = getattr(self.text_encoder.config, "use_attention_mask", False)
            mask = tok.attention_mask.to(device) if use_mask else None
        if clip_skip:
            if self.style != "clip":
                raise ValueError("clip_skip applies to CLIP text encoders only")
            # StableDiffusionPipeline.encode_prompt: the hidden state clip_skip layers before the
            # last, through the final layer norm
            out = self.text_encoder(tok.input_ids.to(device), attention_mask=mask,
                                    output_hidden_states=True)
            hidden = out.hidden_states[-(int(clip_skip) + 1)]
            model = getattr(self.text_encoder, "text_model", self.text_encoder)  # transformers 5: flat
            return model.final_layer_norm(hidden)
        out = self.text_encoder(tok.input_ids.to(device), attention_mask=mask)
        return out[0]

    @torch.no_grad()
    def __call__(self, prompts: Sequence[Any], device=None, dtype=None,
                 clip_skip: int | None = None) -> torch.Tensor:
        """Embeddings ``[B, L, D]`` for B prompts (strings, None, or embedding tensors).
        ``clip_skip`` (diffusers' meaning) takes a layer that many before the last."""
        if clip_skip is not None and (isinstance(clip_skip, bool) or not isinstance(clip_skip, int)
                                      or clip_skip < 0):
            raise ValueError(f"clip_skip must be an integer >= 0, got {clip_skip!r}")
        dev = self._encoder_device(device)
        tag = f"\0clip_skip={clip_skip}\0" if clip_skip else ""
        keys = []
        for p in prompts:
            if p is None:
                keys.append(tag)
            elif isinstance(p, str):
                keys.append(tag + p)
            elif isinstance(p, torch.Tensor):
                keys.append(None)
            else:
                raise TypeError(f"a prompt must be a string, None or an embedding tensor, got "
                                f"{type(p).__name__}")
        missing = list(dict.fromkeys(k for k in keys if k is not None and k not in self._cache))
        if missing:
            self.misses += len(missing)
            embs = self._encode_strings([k[len(tag):] for k in missing], dev, clip_skip)
            for k, e in zip(missing, embs):
                self._cache[k] = e.detach()
                while len(self._cache) > self.cache_size:
                    self._cache.popitem(last=False)
        rows = []
        for k, p in zip(keys, prompts):
            if k is None:
                e = p[0] if p.dim() == 3 else p
                if e.dim() != 2:
                    raise ValueError(f"prompt embeddings must be [L, D] or [1, L, D], got {tuple(p.shape)}")
            else:
                if k not in missing:
                    self.hits += 1
                e = self._cache[k]
                self._cache.move_to_end(k)
            rows.append(e)
        out = torch.stack([r.to(dev) for r in rows])
        if dtype is not None:
            out = out.to(dtype)
        return out

    def token_indices(self, prompt: str, word: str) -> list[int]:
        """Positions of ``word``'s tokens in the tokenized ``prompt`` (BOS counted), for the
        cross-attention map of editing. Raises if the word's tokens do not occur."""
        ids = self.tokenizer(prompt, truncation=True, max_length=self.max_length).input_ids
        wid = self.tokenizer(word, add_special_tokens=False).input_ids
        if not wid:
            raise ValueError(f"word {word!r} has no tokens")
        for i in range(len(ids) - len(wid) + 1):
            if ids[i:i + len(wid)] == wid:
                return list(range(i, i + len(wid)))
        # a word-final BPE token differs from the same letters mid-sentence: retry with a
        # leading space / as the last word
        wid2 = self.tokenizer(" " + word, add_special_tokens=False).input_ids
        for i in range(len(ids) - len(wid2) + 1):
            if ids[i:i + len(wid2)] == wid2:
                return list(range(i, i + len(wid2)))
        raise ValueError(f"word {word!r} does not occur in the tokenized prompt {prompt!r}")


# ---- schedules ----------------------------------------------------------------------------
def schedule_from_scheduler(scheduler_or_config, num_steps: int):
    """A :class:`~syncsde.sampler.SamplingSchedule` equal to diffusers' ``DDIMScheduler`` built
    from this scheduler's config (the authors swap every model's scheduler for DDIM): the same
    float32 ``alphas_cumprod``, ``set_timesteps`` list and final alpha."""
    from diffusers import DDIMScheduler

    from syncsde.sampler import SamplingSchedule

    config = getattr(scheduler_or_config, "config", scheduler_or_config)
    dlog = logging.getLogger("diffusers.configuration_utils")
    level = dlog.level
    dlog.setLevel(logging.ERROR)  # "variance_type is not expected" for IF's DDPM config
    try:
        ddim = DDIMScheduler.from_config(config)
    finally:
        dlog.setLevel(level)
    ddim.set_timesteps(int(num_steps))
    abar = ddim.alphas_cumprod.to(torch.float64)
    ts = [int(t) for t in ddim.timesteps]
    return SamplingSchedule(abar, ts, float(ddim.final_alpha_cumprod),
                            int(ddim.config.num_train_timesteps))


def scheduler_class_name(scheduler) -> str | None:
    """The diffusers class of a scheduler object, or the ``_class_name`` of a saved config."""
    if scheduler is None:
        return None
    if hasattr(scheduler, "config") and hasattr(scheduler, "step"):
        return type(scheduler).__name__
    return dict(scheduler).get("_class_name")


# ---- adapters -----------------------------------------------------------------------------
def _module_device(module) -> torch.device:
    try:
        return next(module.parameters()).device
    except StopIteration:  # pragma: no cover
        return torch.device("cpu")


class UNetDenoiser:
    """Shared part of the diffusers UNet adapters.

    ``device`` is where model inputs go (``None``: the UNet's device; with
    ``enable_model_cpu_offload`` pass the pipeline's execution device); ``dtype`` the model's
    input dtype (``None``: the UNet's). The sampler state may stay float32: inputs are cast to
    the model dtype and outputs back to the state's dtype and device.
    """

    def __init__(self, unet, prompts: PromptEncoder | None, scheduler=None,
                 prediction_type: str | None = None, device=None, dtype=None,
                 cross_attention_kwargs: dict | None = None):
        self.unet = unet
        self.prompts = prompts
        self.scheduler_config = getattr(scheduler, "config", scheduler)
        self.scheduler_class = scheduler_class_name(scheduler)
        if prediction_type is None:
            prediction_type = (self.scheduler_config or {}).get("prediction_type", "epsilon")
        if prediction_type not in ("epsilon", "sample", "v_prediction"):
            raise ValueError(f"unsupported prediction_type {prediction_type!r}")
        self.prediction_type = prediction_type
        self._device = None if device is None else torch.device(device)
        self._dtype = dtype
        self.cross_attention_kwargs = cross_attention_kwargs
        self.calls = 0  # model calls (batches), for tests and benchmarks

    @property
    def device(self) -> torch.device:
        return self._device if self._device is not None else _module_device(self.unet)

    @device.setter
    def device(self, value) -> None:
        self._device = None if value is None else torch.device(value)

    @property
    def dtype(self) -> torch.dtype:
        return self._dtype if self._dtype is not None else self.unet.dtype

    @property
    def sample_size(self) -> int:
        s = self.unet.config.sample_size
        return int(s[0] if isinstance(s, (tuple, list)) else s)

    def schedule(self, num_steps: int):
        """The DDIM sampling schedule of this model's scheduler config."""
        if self.scheduler_config is None:
            from syncsde.sampler import SamplingSchedule

            return SamplingSchedule.preset("sd", num_steps)
        return schedule_from_scheduler(self.scheduler_config, num_steps)

    def abar(self, t: int) -> float:
        """``alphas_cumprod[t]`` of the model's training schedule (cached table)."""
        table = getattr(self, "_abar_table", None)
        if table is None:
            table = self._abar_table = self.schedule(1).abar
        return float(table[int(t)])

    def embed(self, prompts: Sequence[Any]) -> torch.Tensor:
        if self.prompts is None:
            if all(isinstance(p, torch.Tensor) for p in prompts):
                return torch.stack([(p[0] if p.dim() == 3 else p) for p in prompts]).to(
                    self.device, self.dtype)
            raise ValueError("this denoiser has no text encoder: pass prompt embeddings as tensors")
        return self.prompts(prompts, device=self.device, dtype=self.dtype)

    # LCM-distilled UNets (``time_cond_proj_dim``) embed the guidance scale instead of running
    # classifier-free guidance; the task functions set it through guidance_plan
    guidance_embedding: float | None = None

    def guidance_plan(self, guidance_scale: float, has_negative: bool,
                      true_cfg_scale: float | None) -> float:
        """The CFG scale of the run: the task's, or 1 for a UNet that embeds the guidance
        (diffusers: ``w - 1`` through ``get_guidance_scale_embedding``, no CFG)."""
        if true_cfg_scale is not None:
            raise ValueError("true_cfg_scale applies to FLUX pipelines only")
        if getattr(self.unet.config, "time_cond_proj_dim", None) is not None:
            self.guidance_embedding = float(guidance_scale)
            return 1.0
        return float(guidance_scale)

    def _timestep_cond(self, n: int, device, dtype):
        dim = getattr(self.unet.config, "time_cond_proj_dim", None)
        if dim is None or self.guidance_embedding is None:
            return None
        # the sinusoidal embedding of 1000 (w - 1), as StableDiffusionPipeline's
        w = torch.full((n,), (self.guidance_embedding - 1.0) * 1000.0, dtype=torch.float32)
        half = int(dim) // 2
        freq = torch.exp(torch.arange(half, dtype=torch.float32)
                         * -(torch.log(torch.tensor(10000.0)) / (half - 1)))
        emb = w[:, None] * freq[None, :]
        emb = torch.cat([torch.sin(emb), torch.cos(emb)], dim=1)
        if int(dim) % 2:
            emb = torch.nn.functional.pad(emb, (0, 1))
        return emb.to(device=device, dtype=dtype)

    def _unet(self, x, t, emb, **kw):
        self.calls += 1
        if self.cross_attention_kwargs is not None:
            kw.setdefault("cross_attention_kwargs", self.cross_attention_kwargs)
        cond = self._timestep_cond(len(x), x.device, x.dtype)
        if cond is not None:
            kw.setdefault("timestep_cond", cond)
        return self.unet(x, t, encoder_hidden_states=emb, return_dict=False, **kw)[0]

    def _forward(self, x, t, prompts, images):  # pragma: no cover - interface
        raise NotImplementedError

    @torch.no_grad()
    def __call__(self, x_t: torch.Tensor, t: int, cond: Sequence[Any]) -> torch.Tensor:
        if len(cond) != len(x_t):
            raise ValueError(f"got {len(cond)} conditions for a batch of {len(x_t)}")
        prompts, images = _split(cond)
        x = x_t.to(device=self.device, dtype=self.dtype)
        # integer timesteps stay integers; fractional ones (Euler's linspace grid) pass as is
        t = int(t) if float(t).is_integer() else float(t)
        out = self._forward(x, t, prompts, images)
        return out.to(device=x_t.device, dtype=x_t.dtype)


class StableDiffusionDenoiser(UNetDenoiser):
    """Stable Diffusion 1.x / 2.x UNet on latents ``[B, 4, h, w]``; carries the VAE for
    :meth:`encode` / :meth:`decode`."""

    def __init__(self, unet, prompts: PromptEncoder | None, scheduler=None, vae=None, **kw):
        super().__init__(unet, prompts, scheduler, **kw)
        self.vae = vae

    @property
    def vae_scale_factor(self) -> int:
        if self.vae is None:
            return 8
        return 2 ** (len(self.vae.config.block_out_channels) - 1)

    def _forward(self, x, t, prompts, images):
        if any(i is not None for i in images):
            raise TypeError("ImagePrompt conditions need a ControlNetDenoiser")
        return self._unet(x, t, self.embed(prompts))

    def encode(self, images, generator: torch.Generator | None = None, sample: bool = True):
        """Images (``[B, 3, H, W]`` in [0, 1], PIL, arrays, paths) -> scaled latents."""
        if self.vae is None:
            raise ValueError("this denoiser has no VAE")
        return encode_images(self.vae, images, generator=generator, sample=sample,
                             device=self.device)

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Scaled latents ``[B, 4, h, w]`` -> images ``[B, 3, H, W]`` in [0, 1] (float32, CPU)."""
        if self.vae is None:
            raise ValueError("this denoiser has no VAE")
        return decode_latents(self.vae, latents, device=self.device)


class ControlNetDenoiser(StableDiffusionDenoiser):
    """SD UNet + ControlNet: every condition is an :class:`ImagePrompt` whose image is the view's
    control image (``[3, H, W]`` in [0, 1] at pixel size, e.g. normalized inverse depth).

    ``conditioning_scale`` is a number or ``fn(t) -> number`` (SyncMVD anneals 0.7 -> 0.9);
    a per-view ``ImagePrompt.scale`` overrides it.
    """

    def __init__(self, unet, controlnet, prompts, scheduler=None, vae=None,
                 conditioning_scale: float | Callable[[int], float] = 1.0, **kw):
        super().__init__(unet, prompts, scheduler, vae, **kw)
        self.controlnet = controlnet
        self.conditioning_scale = conditioning_scale

    def _control(self, images, x):
        H, W = x.shape[-2] * self.vae_scale_factor, x.shape[-1] * self.vae_scale_factor
        out = []
        for ip in images:
            if ip is None:
                raise TypeError("a ControlNetDenoiser needs an ImagePrompt(prompt, control_image) "
                                "for every view and every negative condition")
            img = torch.as_tensor(ip.image)
            if img.dim() == 4 and img.shape[0] == 1:
                img = img[0]
            if img.dim() == 2:
                img = img[None]
            if img.shape[0] == 1:
                img = img.expand(3, *img.shape[1:])
            if img.dim() != 3 or img.shape[0] != 3:
                raise ValueError(f"control image must be [3, H, W], got {tuple(ip.image.shape)}")
            img = img.to(device=x.device, dtype=torch.float32)
            if tuple(img.shape[-2:]) != (H, W):
                img = torch.nn.functional.interpolate(img[None], (H, W), mode="bilinear",
                                                      align_corners=False)[0]
            out.append(img)
        return torch.stack(out).to(x.dtype)

    def _scales(self, t, images):
        base = self.conditioning_scale(t) if callable(self.conditioning_scale) else self.conditioning_scale
        return [float(base if ip.scale is None else ip.scale) for ip in images]

    def _forward(self, x, t, prompts, images):
        emb = self.embed(prompts)
        ctrl = self._control(images, x)
        scales = self._scales(t, images)
        groups: dict[float, list[int]] = {}
        for i, s in enumerate(scales):
            groups.setdefault(s, []).append(i)
        out = torch.empty_like(x)
        for s, idx in groups.items():
            sel = torch.tensor(idx, device=x.device)
            down, mid = self.controlnet(x[sel], t, encoder_hidden_states=emb[sel],
                                        controlnet_cond=ctrl[sel], conditioning_scale=s,
                                        return_dict=False)
            out[sel] = self._unet(x[sel], t, emb[sel], down_block_additional_residuals=down,
                                  mid_block_additional_residual=mid)
        return out


class IFDenoiser(UNetDenoiser):
    """DeepFloyd IF stage I on pixels ``[B, 3, 64, 64]`` in [-1, 1]. The UNet predicts 6 channels
    (eps + learned variance); the variance half is dropped (DDIM needs only eps)."""

    def _forward(self, x, t, prompts, images):
        if any(i is not None for i in images):
            raise TypeError("ImagePrompt conditions need an IFSuperResolutionDenoiser")
        out = self._unet(x, t, self.embed(prompts))
        return out[:, : x.shape[1]]


class PixelSpace:
    """The identity "autoencoder" of a pixel-space model: latents are the pixels in [-1, 1]
    (``scaling_factor`` 1, spatial factor 1)."""

    class config:  # noqa: N801 - mirrors ``vae.config``
        scaling_factor = 1.0
        block_out_channels = (0,)


class PixelDenoiser(StableDiffusionDenoiser, IFDenoiser):
    """A text-conditioned pixel-space UNet (the built-in scenes model): pixels ``[B, 3, H, W]``
    in [-1, 1], eps from cross-attention on prompt embeddings.

    It is both a :class:`StableDiffusionDenoiser` whose "VAE" is the identity
    (:class:`PixelSpace`; ``encode`` maps [0, 1] images to [-1, 1], ``decode`` back), so the
    wide / mask / edit tasks run on it, and an :class:`IFDenoiser` (a 3-channel output, nothing
    dropped), so the ambiguous task runs on it."""

    def __init__(self, unet, prompts: PromptEncoder | None, scheduler=None, **kw):
        super().__init__(unet, prompts, scheduler, vae=PixelSpace(), **kw)

    @property
    def vae_scale_factor(self) -> int:
        return 1

    def encode(self, images, generator: torch.Generator | None = None, sample: bool = True):
        """Images (``[B, 3, H, W]`` in [0, 1], PIL, arrays, paths) -> pixels in [-1, 1]
        (``generator`` / ``sample`` are unused: the map is deterministic)."""
        return (_as_image_batch(images) * 2.0 - 1.0).to(self.device)

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Pixels in [-1, 1] -> images ``[B, 3, H, W]`` in [0, 1] (float32, CPU)."""
        z = latents[None] if latents.dim() == 3 else latents
        return (z.float().cpu() / 2 + 0.5).clamp(0, 1)


class IFSuperResolutionDenoiser(UNetDenoiser):
    """DeepFloyd IF stage II: every condition is an :class:`ImagePrompt` whose image is the
    noised upscaled stage-I image (``[3, H, W]``, see :meth:`prepare_image`); the UNet sees
    ``cat(x_t, image)`` and ``class_labels = noise_level``."""

    def __init__(self, unet, prompts, scheduler=None, image_noising_scheduler=None,
                 noise_level: int = 250, **kw):
        super().__init__(unet, prompts, scheduler, **kw)
        self.image_noising_scheduler = image_noising_scheduler
        self.noise_level = int(noise_level)

    def prepare_image(self, low_res: torch.Tensor, size: int | Sequence[int] | None = None,
                      generator: torch.Generator | None = None,
                      noise_level: int | None = None) -> torch.Tensor:
        """Bilinear upscale (align_corners=True, as IF-II) of ``[B, 3, h, w]`` in [-1, 1] and
        forward-noise it to ``noise_level`` with the image-noising schedule. The noise is drawn
        on the CPU from ``generator``."""
        level = self.noise_level if noise_level is None else int(noise_level)
        if size is None:
            size = self.sample_size
        size = (size, size) if isinstance(size, int) else tuple(size)
        x = torch.as_tensor(low_res, dtype=torch.float32).cpu()
        up = torch.nn.functional.interpolate(x, size, mode="bilinear", align_corners=True)
        if level <= 0:
            return up
        if self.image_noising_scheduler is None:
            raise ValueError("no image_noising_scheduler: pass noise_level=0 or the pipeline's")
        abar = float(self.image_noising_scheduler.alphas_cumprod[level])
        noise = torch.randn(up.shape, generator=generator, dtype=torch.float32)
        return ops.lincomb(up, noise, math.sqrt(abar), math.sqrt(1.0 - abar))

    def _forward(self, x, t, prompts, images):
        if any(i is None for i in images):
            raise TypeError("an IFSuperResolutionDenoiser needs an ImagePrompt(prompt, "
                            "upscaled_image) for every view and negative condition")
        emb = self.embed(prompts)
        up = torch.stack([torch.as_tensor(i.image) for i in images]).to(x.device, x.dtype)
        if up.shape[-2:] != x.shape[-2:]:
            raise ValueError(f"upscaled image {tuple(up.shape[-2:])} does not match the sample "
                             f"{tuple(x.shape[-2:])}")
        labels = torch.full((len(x),), self.noise_level, device=x.device, dtype=torch.long)
        out = self._unet(torch.cat([x, up], dim=1), t, emb, class_labels=labels)
        return out[:, : x.shape[1]]


# ---- dynamic thresholding (IF's scheduler) ------------------------------------------------
def dynamic_threshold(x0: torch.Tensor, ratio: float = 0.995, max_value: float = 1.0,
                      sample_dims: int = 3) -> torch.Tensor:
    """Imagen's dynamic thresholding of x0 per sample (the last ``sample_dims`` dims): s = the
    ``ratio`` quantile of |x0|, clamped to [1, max_value]; x0 -> clamp(x0, -s, s) / s."""
    shape = x0.shape
    flat = x0.reshape(-1, int(np.prod(shape[-sample_dims:]))).float()
    s = torch.quantile(flat.abs(), ratio, dim=1).clamp(min=1.0, max=max_value).unsqueeze(1)
    return (torch.maximum(torch.minimum(flat, s), -s) / s).reshape(shape).to(x0.dtype)


def threshold_eps(y: torch.Tensor, eps: torch.Tensor, abar_t: float, abar_s: float,
                  eta: float = 0.0, ratio: float = 0.95, max_value: float = 1.5) -> torch.Tensor:
    """The eps for which our DDIM step equals diffusers' DDIM step with ``thresholding=True``.

    diffusers thresholds x0 but keeps the raw eps for the direction term:
    ``x_s = sqrt(abar_s) thr(x0) + sqrt(1 - abar_s - sigma^2) eps + sigma z``. Solving
    ``c_x y + c_eps eps' = sqrt(abar_s) thr(x0) + sqrt(1-abar_s-sigma^2) eps`` gives eps'
    (``c_eps`` is never 0 for abar_s > abar_t). Any strategy that steps with DDIM on eps then
    reproduces the IF scheduler exactly; the SyncSDE term is added on top, as in the authors'
    code."""
    c = ops.ddim_coefficients(abar_t, abar_s, eta)
    x0 = dynamic_threshold(ops.tweedie(y, eps, abar_t), ratio, max_value)
    target = ops.lincomb(x0, eps, math.sqrt(abar_s), math.sqrt(max(1.0 - abar_s - c.sigma ** 2, 0.0)))
    return ops.lincomb(target, y, 1.0 / c.c_eps, -c.c_x / c.c_eps, out=target)


class DynamicThresholding(Strategy):
    """Wraps a strategy so that every step first applies IF's dynamic thresholding
    (:func:`threshold_eps`): ``sample(..., strategy=DynamicThresholding(make_strategy("syncsde")))``.

    For strategies that step with DDIM on eps (independent, syncsde, multidiffusion) the
    per-view update equals the diffusers IF DDIM step (SyncSDE's pull is added after the
    threshold, as the authors do); ``noise_average`` averages the views' eps first and then
    thresholds (Visual Anagrams' order); SyncTweedies averages the Tweedie estimate implied by
    the adjusted eps.
    """

    def __init__(self, inner, ratio: float = 0.95, max_value: float = 1.5):
        from syncsde.strategies import make_strategy

        self.inner = make_strategy(inner)
        self.ratio = float(ratio)
        self.max_value = float(max_value)
        self.name = self.inner.name
        self.output_rule = self.inner.output_rule
        self.init = getattr(self.inner, "init", None)

    @classmethod
    def from_config(cls, inner, config) -> "DynamicThresholding":
        return cls(inner, config.get("dynamic_thresholding_ratio", 0.995),
                   config.get("sample_max_value", 1.0))

    def prepare(self, run):
        self.inner.prepare(run)

    def step(self, run, y, eps, info, noise):
        from syncsde.strategies import NoiseAverage

        if isinstance(self.inner, NoiseAverage):
            # Visual Anagrams' order: average the views' eps first, then threshold the step
            eps = threshold_eps(y, NoiseAverage.average_eps(run, eps), info.abar_t, info.abar_s,
                                info.eta, self.ratio, self.max_value)
            return run.solver.step(y, eps, info, noise, out=y)
        eps = threshold_eps(y, eps, info.abar_t, info.abar_s, info.eta, self.ratio, self.max_value)
        return self.inner.step(run, y, eps, info, noise)

    def __repr__(self):
        return f"DynamicThresholding({self.inner!r}, ratio={self.ratio}, max_value={self.max_value})"


# ---- images and the VAE -------------------------------------------------------------------
def load_image(image, size: Sequence[int] | int | None = None, mode: str = "RGB"):
    """A PIL image from a path, PIL image, or HWC/CHW array; resized (LANCZOS) to ``size``
    (``(width, height)`` or an int for a square) when given."""
    from PIL import Image

    if isinstance(image, (str, bytes)) or hasattr(image, "__fspath__"):
        img = Image.open(image)
    elif isinstance(image, Image.Image):
        img = image
    else:
        a = image.detach().cpu().numpy() if isinstance(image, torch.Tensor) else np.asarray(image)
        if a.ndim == 3 and a.shape[0] in (1, 3, 4) and a.shape[-1] not in (1, 3, 4):
            a = a.transpose(1, 2, 0)
        if a.dtype != np.uint8:
            a = np.clip(a * 255.0 if a.max() <= 1.0 else a, 0, 255).round().astype(np.uint8)
        img = Image.fromarray(a.squeeze(-1) if a.ndim == 3 and a.shape[-1] == 1 else a)
    img = img.convert(mode)
    if size is not None:
        size = (size, size) if isinstance(size, int) else tuple(size)
        if img.size != size:
            img = img.resize(size, Image.LANCZOS)
    return img


def pil_to_tensor(img) -> torch.Tensor:
    """PIL RGB -> ``[3, H, W]`` float32 in [0, 1]."""
    a = np.asarray(img.convert("RGB"), dtype=np.float32) / 255.0
    return torch.from_numpy(a.transpose(2, 0, 1).copy())


def _as_image_batch(images) -> torch.Tensor:
    if isinstance(images, torch.Tensor):
        x = images.float()
        return x[None] if x.dim() == 3 else x
    if not isinstance(images, (list, tuple)):
        images = [images]
    return torch.stack([pil_to_tensor(load_image(i)) for i in images])


@torch.no_grad()
def encode_images(vae, images, generator: torch.Generator | None = None, sample: bool = True,
                  device=None) -> torch.Tensor:
    """Images in [0, 1] -> VAE latents times ``scaling_factor`` (float32, on ``device``).

    ``sample=True`` draws from the latent distribution (the authors' inversion does), using
    ``generator`` on the CPU; ``False`` takes its mean."""
    x = _as_image_batch(images)
    dev = _module_device(vae) if device is None else torch.device(device)
    x = (x * 2.0 - 1.0).to(device=dev, dtype=vae.dtype)
    dist = vae.encode(x).latent_dist
    if sample:
        noise = torch.randn(dist.mean.shape, generator=generator, dtype=torch.float32)
        z = dist.mean.float() + dist.std.float() * noise.to(dev)
    else:
        z = dist.mean.float()
    return z * float(vae.config.scaling_factor)


@torch.no_grad()
def decode_latents(vae, latents: torch.Tensor, device=None) -> torch.Tensor:
    """Scaled latents -> images ``[B, 3, H, W]`` in [0, 1] (float32, CPU)."""
    z = latents[None] if latents.dim() == 3 else latents
    dev = _module_device(vae) if device is None else torch.device(device)
    z = (z.float() / float(vae.config.scaling_factor)).to(device=dev, dtype=vae.dtype)
    img = vae.decode(z, return_dict=False)[0]
    return (img.float() / 2 + 0.5).clamp(0, 1).cpu()


def to_pil(images: torch.Tensor) -> list:
    """``[B, 3, H, W]`` (or ``[3, H, W]``) in [0, 1] -> list of PIL images."""
    from PIL import Image

    x = images[None] if images.dim() == 3 else images
    a = (x.detach().float().cpu().clamp(0, 1) * 255).round().to(torch.uint8)
    return [Image.fromarray(i.permute(1, 2, 0).numpy()) for i in a]
