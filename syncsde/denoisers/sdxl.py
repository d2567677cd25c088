"""Stable Diffusion XL: two CLIP text encoders, pooled embeddings and ``add_time_ids``.

SDXL's UNet takes, besides the latent and the timestep, the hidden states of both text encoders
concatenated along features (``[L, 768 + 1280]``), the pooled projection of the second encoder
(``text_embeds``) and six numbers ``time_ids = original_size + crops_coords_top_left +
target_size`` (pixels). :class:`XLPromptEncoder` follows
``StableDiffusionXLPipeline.encode_prompt``; :class:`StableDiffusionXLDenoiser` builds the
``added_cond_kwargs`` per input, so every view can carry its own crop:

- :class:`XLCondition` ``(prompt, crop, target_size, original_size)``; a bare prompt means crop
  (0, 0) and the input's own pixel size (diffusers' defaults);
- in wide images each window is a crop of the canvas: ``crops_coords_top_left`` = the window's
  offset in pixels, ``target_size`` = the window's size, ``original_size`` = the canvas size
  (one window covering the canvas gives diffusers' defaults exactly);
- the unconditional branch carries the same sizes and crop (diffusers' default
  ``negative_add_time_ids = add_time_ids``); a missing negative prompt is all zeros when the
  pipeline's ``force_zeros_for_empty_prompt`` is set (SDXL base), as diffusers does.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import torch

from syncsde.denoisers.diffusers_models import StableDiffusionDenoiser, decode_latents
from syncsde.denoisers.pooled_prompts import PooledPromptCache

__all__ = ["XLCondition", "XLPromptEncoder", "StableDiffusionXLDenoiser"]


@dataclass(eq=False)
class XLCondition:
    """A prompt (string, None, or ``(embeds [L, D], pooled [P])``) with SDXL's size
    conditioning in pixels: ``crop`` = crops_coords_top_left (top, left), ``target_size`` and
    ``original_size`` as (height, width); None = the input's pixel size."""

    prompt: Any
    crop: tuple[int, int] = (0, 0)
    target_size: tuple[int, int] | None = None
    original_size: tuple[int, int] | None = None


class XLPromptEncoder(PooledPromptCache):
    """SDXL's two tokenizers / text encoders with a cache per (prompt, clip_skip).

    Calling it returns one ``(embeds [L, D1 + D2], pooled [P])`` pair per prompt: each encoder's
    hidden state before the last (``clip_skip`` more layers back), concatenated, and the pooled
    projection of the encoder that has one. ``None`` is the zero pair when
    ``force_zeros_for_empty_prompt`` (else the empty prompt); clip_skip never applies to it
    (diffusers encodes negative prompts without it).
    """

    def __init__(self, tokenizers: Sequence[Any], text_encoders: Sequence[Any],
                 force_zeros_for_empty_prompt: bool = True, cache_size: int = 256):
        if len(tokenizers) != len(text_encoders) or not tokenizers or \
                any(t is None for t in tokenizers) or any(e is None for e in text_encoders):
            raise ValueError("XLPromptEncoder needs both SDXL tokenizers and text encoders (a "
                             "refiner-only pipeline without text_encoder is not supported)")
        self.tokenizers = list(tokenizers)
        self.text_encoders = list(text_encoders)
        self.force_zeros = bool(force_zeros_for_empty_prompt)
        super().__init__(cache_size)

    label = "SDXL"

    @property
    def text_encoder(self):
        return self.text_encoders[0]

    def _device(self, device):
        if device is not None:
            return torch.device(device)
        try:
            return next(self.text_encoders[0].parameters()).device
        except StopIteration:  # pragma: no cover
            return torch.device("cpu")

    @torch.no_grad()
    def _encode(self, text: str, clip_skip: int | None, device) -> tuple[torch.Tensor, torch.Tensor]:
        hidden, pooled = [], None
        for tok, enc in zip(self.tokenizers, self.text_encoders):
            ids = tok([text], padding="max_length", max_length=tok.model_max_length,
                      truncation=True, return_tensors="pt").input_ids
            out = enc(ids.to(device), output_hidden_states=True)
            if pooled is None and out[0].ndim == 2:  # the projection of the second encoder
                pooled = out[0]
            hidden.append(out.hidden_states[-(int(clip_skip or 0) + 2)])
        if pooled is None:
            raise ValueError("no SDXL text encoder returned a pooled projection (expected a "
                             "CLIPTextModelWithProjection as text_encoder_2)")
        return torch.cat(hidden, dim=-1)[0].detach(), pooled[0].detach()

    def _empty_pair(self, device, clip_skip):
        if not self.force_zeros:
            return None
        e, q = self([""], device, None)[0]   # diffusers' force_zeros_for_empty_prompt
        return torch.zeros_like(e), torch.zeros_like(q)


def _pair(v: Any, name: str) -> tuple[int, int]:
    try:
        a, b = v
        return int(a), int(b)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be (height, width), got {v!r}") from None


class StableDiffusionXLDenoiser(StableDiffusionDenoiser):
    """SDXL UNet on latents ``[B, 4, h, w]`` with per-input size / crop conditioning."""
    supports_editing = False  # edit_image refuses it (see syncsde.pipelines.edit_image)

    def __init__(self, unet, prompts: XLPromptEncoder | None, scheduler=None, vae=None, **kw):
        super().__init__(unet, prompts, scheduler, vae, **kw)

    # hooks used by the one-call functions (syncsde.pipelines)
    def window_condition(self, prompt: Any, crop: tuple[int, int], size: tuple[int, int],
                         canvas: tuple[int, int]) -> XLCondition:
        """The condition of a window at pixel offset ``crop`` of a ``canvas``-sized image."""
        return XLCondition(prompt, tuple(crop), tuple(size), tuple(canvas))

    def batch_embeddings(self, conds: list, negs: list | None, pooled_prompt_embeds=None,
                         negative_pooled_prompt_embeds=None):
        """Pairs user-given ``prompt_embeds`` rows with their pooled embeddings."""
        def pair(items, pooled, name):
            if items is None or not items or not isinstance(items[0], torch.Tensor):
                if pooled is not None:
                    raise ValueError(f"{name} needs the matching prompt embeddings")
                return items
            if pooled is None:
                raise ValueError(f"SDXL prompt embeddings need {name}")
            pooled = torch.as_tensor(pooled)
            pooled = pooled[None] if pooled.dim() == 1 else pooled
            if len(pooled) != len(items):
                raise ValueError(f"{name} has {len(pooled)} rows for {len(items)} prompts")
            return [(e, q) for e, q in zip(items, pooled)]

        return (pair(conds, pooled_prompt_embeds, "pooled_prompt_embeds"),
                pair(negs, negative_pooled_prompt_embeds, "negative_pooled_prompt_embeds"))

    def embed(self, prompts: Sequence[Any]) -> torch.Tensor:
        return torch.stack([e for e, _ in self._pairs(prompts)])

    def _pairs(self, prompts):
        if self.prompts is None:
            if all(isinstance(p, tuple) for p in prompts):
                return [(e.to(self.device, self.dtype), q.to(self.device, self.dtype))
                        for e, q in prompts]
            raise ValueError("this SDXL denoiser has no text encoders: pass (embeds, pooled)")
        return self.prompts(prompts, device=self.device, dtype=self.dtype)

    def _forward(self, x, t, prompts, images):
        if any(i is not None for i in images):
            raise TypeError("ImagePrompt conditions are not supported with SDXL")
        f = self.vae_scale_factor
        own = (x.shape[-2] * f, x.shape[-1] * f)
        conds = [p if isinstance(p, XLCondition) else XLCondition(p) for p in prompts]
        pairs = self._pairs([c.prompt for c in conds])
        emb = torch.stack([e for e, _ in pairs])
        pooled = torch.stack([q for _, q in pairs])
        rows = []
        for c in conds:
            target = own if c.target_size is None else _pair(c.target_size, "target_size")
            orig = target if c.original_size is None else _pair(c.original_size, "original_size")
            rows.append([*orig, *_pair(c.crop, "crop"), *target])
        time_ids = torch.tensor(rows, dtype=emb.dtype, device=x.device)
        return self._unet(x, t, emb, added_cond_kwargs={"text_embeds": pooled,
                                                        "time_ids": time_ids})

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """As diffusers' SDXL: latents_mean / latents_std when the VAE config has them, and an
        fp16 VAE with ``force_upcast`` decodes in float32 (restored afterwards)."""
        vae = self.vae
        if vae is None:
            raise ValueError("no VAE")
        cfg = vae.config
        z = latents[None] if latents.dim() == 3 else latents
        mean, std = getattr(cfg, "latents_mean", None), getattr(cfg, "latents_std", None)
        if mean is not None and std is not None:
            m = torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1)
            s = torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1)
            # decode_latents divides by scaling_factor: hand it z * std + mean * scaling_factor
            z = z.float().cpu() * s + m * float(cfg.scaling_factor)
        upcast = vae.dtype == torch.float16 and getattr(cfg, "force_upcast", False)
        if not upcast:
            return decode_latents(vae, z, device=self.device)
        vae.to(torch.float32)
        try:
            return decode_latents(vae, z, device=self.device)
        finally:
            vae.to(torch.float16)
