"""Flow-matching transformers: Stable Diffusion 3 and FLUX.

These models predict a velocity ``v = eps - x0`` for ``x_sigma = (1 - sigma) x0 + sigma eps``
(``sigma = t / 1000``). The sampler and every strategy speak eps on a variance-preserving state,
so the adapters convert (docs/models/flow_matching.md):

    y = x / s,  s = sqrt((1 - sigma_e)^2 + sigma_e^2),  abar = ((1 - sigma_e) / s)^2,
    x0 = x - sigma v,   eps = (x - (1 - sigma_e) x0) / sigma_e,

with ``sigma_e = min(sigma, FLOW_SIGMA_CAP)`` (at sigma = 1 the state is pure noise and eps
would carry no x0). :class:`~syncsde.solvers.FlowMatchSolver` steps with the scheduler's true
sigmas, so ``independent`` sampling is diffusers' flow-matching Euler exactly.

- SD3 (:class:`SD3Denoiser`): ``transformer(x, t, encoder_hidden_states, pooled_projections)``
  on latents ``[B, 16, h, w]``; prompts through the pipeline's own ``encode_prompt`` (CLIP-L +
  CLIP-G + T5), cached per string.
- FLUX (:class:`FluxDenoiser`): latents ``[B, 16, h, w]`` packed into 2x2 patches
  (``[B, hw/4, 64]``) with their position ids for the transformer and unpacked after, so views
  crop the unpacked latent; ``guidance`` (FLUX-dev's guidance embedding) is the task's
  ``guidance_scale``; real classifier-free guidance (``true_cfg_scale``) runs only with a
  negative prompt, as in diffusers. The scheduler's ``mu`` follows the view's size.

The pipeline is referenced weakly (its ``encode_prompt`` is used, nothing is set on it).
"""
from __future__ import annotations

import weakref
from typing import Any, Sequence

import torch

from syncsde.denoisers.diffusers_models import StableDiffusionDenoiser, decode_latents
from syncsde.denoisers.pooled_prompts import PooledPromptCache
from syncsde.solvers import flow_level

__all__ = ["FlowPromptEncoder", "FlowMatchDenoiser", "SD3Denoiser", "FluxDenoiser",
           "calculate_shift"]


def calculate_shift(image_seq_len: int, base_seq_len: int = 256, max_seq_len: int = 4096,
                    base_shift: float = 0.5, max_shift: float = 1.15) -> float:
    """FLUX's ``mu``: linear in the number of image tokens between the two anchors."""
    m = (max_shift - base_shift) / (max_seq_len - base_seq_len)
    return image_seq_len * m + (base_shift - m * base_seq_len)


class FlowPromptEncoder(PooledPromptCache):
    """``(embeds [L, D], pooled [P])`` per prompt from the pipeline's ``encode_prompt``, cached
    per (prompt, clip_skip). ``None`` is the empty prompt (SD3 and FLUX encode "" for it)."""

    def __init__(self, pipe: Any, family: str, max_sequence_length: int | None = None,
                 cache_size: int = 256):
        if family not in ("sd3", "flux"):
            raise ValueError(f"family must be 'sd3' or 'flux', got {family!r}")
        self._pipe = weakref.ref(pipe)
        self._owned = None  # a strong reference when this encoder owns its pipeline (hold)
        self.family = family
        self.max_sequence_length = int(max_sequence_length or (256 if family == "sd3" else 512))
        self.label = "SD3" if family == "sd3" else "FLUX"
        super().__init__(cache_size)

    def hold(self, pipe: Any) -> None:
        """Keep the pipeline alive (for a pipeline loaded on the fly that nobody else holds)."""
        self._owned = pipe

    @property
    def pipe(self):
        p = self._pipe()
        if p is None:
            raise RuntimeError("the pipeline of this SD3 / FLUX prompt encoder no longer exists: "
                               "keep the pipeline object alive while its denoiser is used (or "
                               "build the denoiser with syncsde.models.load_denoiser)")
        return p

    @torch.no_grad()
    def _encode(self, text: str, clip_skip: int | None, device) -> tuple[torch.Tensor, torch.Tensor]:
        pipe = self.pipe
        if self.family == "sd3":
            pe, _, pp, _ = pipe.encode_prompt(prompt=text, prompt_2=None, prompt_3=None,
                                              device=device, num_images_per_prompt=1,
                                              do_classifier_free_guidance=False,
                                              clip_skip=clip_skip,
                                              max_sequence_length=self.max_sequence_length)
        else:
            if clip_skip is not None:
                raise ValueError("FLUX pipelines take no clip_skip")
            pe, pp, _ = pipe.encode_prompt(prompt=text, prompt_2=None, device=device,
                                           num_images_per_prompt=1,
                                           max_sequence_length=self.max_sequence_length)
        return pe[0].detach(), pp[0].detach()


class FlowMatchDenoiser(StableDiffusionDenoiser):
    """Shared part of the flow-matching adapters: the velocity -> eps conversion at the
    represented level, the scheduler's ``mu``, the VAE's shift factor."""

    family = "flow"
    supports_editing = False  # edit_image refuses it (see syncsde.pipelines.edit_image)

    def __init__(self, transformer, prompts: FlowPromptEncoder | None, scheduler=None, vae=None,
                 sample_size: int | None = None, **kw):
        kw.pop("prediction_type", None)
        super().__init__(transformer, prompts, scheduler, vae, prediction_type="epsilon", **kw)
        self.transformer = transformer
        self._sample_size = sample_size
        self.guidance = None  # FLUX-dev's embedded guidance, set per call by the tasks

    @property
    def sample_size(self) -> int:
        if self._sample_size is not None:
            return int(self._sample_size)
        s = getattr(self.transformer.config, "sample_size", 128)
        return int(s[0] if isinstance(s, (tuple, list)) else s)

    @property
    def latent_channels(self) -> int:
        return int(self.transformer.config.in_channels)

    @property
    def num_train_timesteps(self) -> int:
        return int((self.scheduler_config or {}).get("num_train_timesteps", 1000))

    def schedule(self, num_steps: int):
        raise ValueError(f"{type(self).__name__} samples with its flow-matching scheduler "
                         "(FlowMatchEulerDiscreteScheduler); DDIM (scheduler='ddim') does not "
                         "apply: use scheduler='pipeline'")

    def abar(self, t) -> float:
        return flow_level(float(t) / self.num_train_timesteps)[2]

    def schedule_kwargs(self, h: int, w: int) -> dict:
        """``mu`` for schedulers with dynamic shifting, from one view's latent size."""
        cfg = self.scheduler_config or {}
        if not cfg.get("use_dynamic_shifting", False):
            return {}
        return {"mu": calculate_shift(self._image_seq_len(h, w),
                                      cfg.get("base_image_seq_len", 256),
                                      cfg.get("max_image_seq_len", 4096),
                                      cfg.get("base_shift", 0.5), cfg.get("max_shift", 1.15))}

    def _image_seq_len(self, h: int, w: int) -> int:
        p = int(getattr(self.transformer.config, "patch_size", 1) or 1)
        return (h // p) * (w // p)

    def guidance_plan(self, guidance_scale: float, has_negative: bool,
                      true_cfg_scale: float | None) -> float:
        """The classifier-free guidance scale the sampler uses (SD3: the task's)."""
        if true_cfg_scale is not None:
            raise ValueError("true_cfg_scale applies to FLUX; SD3 uses guidance_scale")
        return float(guidance_scale)

    def batch_embeddings(self, conds, negs, pooled_prompt_embeds=None,
                         negative_pooled_prompt_embeds=None):
        from syncsde.denoisers.sdxl import StableDiffusionXLDenoiser

        return StableDiffusionXLDenoiser.batch_embeddings(self, conds, negs, pooled_prompt_embeds,
                                                          negative_pooled_prompt_embeds)

    def _pairs(self, prompts):
        if self.prompts is None:
            if all(isinstance(p, tuple) for p in prompts):
                return [(e.to(self.device, self.dtype), q.to(self.device, self.dtype))
                        for e, q in prompts]
            raise ValueError("this denoiser has no text encoders: pass (embeds, pooled)")
        return self.prompts(prompts, device=self.device, dtype=self.dtype)

    def embed(self, prompts):
        return torch.stack([e for e, _ in self._pairs(prompts)])

    def _velocity(self, x, t: float, prompts) -> torch.Tensor:  # pragma: no cover - interface
        raise NotImplementedError

    @torch.no_grad()
    def __call__(self, x_t: torch.Tensor, t, cond: Sequence[Any]) -> torch.Tensor:
        from syncsde.denoisers.diffusers_models import _split

        if len(cond) != len(x_t):
            raise ValueError(f"got {len(cond)} conditions for a batch of {len(x_t)}")
        prompts, images = _split(cond)
        if any(i is not None for i in images):
            raise TypeError(f"ImagePrompt conditions are not supported by {type(self).__name__}")
        sigma = float(t) / self.num_train_timesteps
        se, s, _ = flow_level(sigma)
        x = x_t.to(device=self.device, dtype=torch.float32) * s  # the flow latent
        v = self._velocity(x.to(self.dtype), float(t), prompts).float()
        self.calls += 1
        x0 = x - sigma * v
        eps = (x - (1.0 - se) * x0) / se  # eps at the represented level (module doc)
        return eps.to(device=x_t.device, dtype=x_t.dtype)

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """``vae.decode(z / scaling_factor + shift_factor)`` as the SD3 / FLUX pipelines."""
        if self.vae is None:
            raise ValueError("no VAE")
        z = latents[None] if latents.dim() == 3 else latents
        shift = getattr(self.vae.config, "shift_factor", None) or 0.0
        z = z.float() + shift * float(self.vae.config.scaling_factor)
        return decode_latents(self.vae, z, device=self.device)


class SD3Denoiser(FlowMatchDenoiser):
    family = "sd3"

    def _velocity(self, x, t, prompts):
        pairs = self._pairs(prompts)
        emb = torch.stack([e for e, _ in pairs])
        pooled = torch.stack([q for _, q in pairs])
        ts = torch.full((len(x),), t, dtype=torch.float32, device=x.device)
        return self.transformer(hidden_states=x, timestep=ts, encoder_hidden_states=emb,
                                pooled_projections=pooled, return_dict=False)[0]


class FluxDenoiser(FlowMatchDenoiser):
    family = "flux"

    @property
    def latent_channels(self) -> int:
        return int(self.transformer.config.in_channels) // 4

    def _image_seq_len(self, h: int, w: int) -> int:
        return (h // 2) * (w // 2)

    def guidance_plan(self, guidance_scale: float, has_negative: bool,
                      true_cfg_scale: float | None) -> float:
        """FLUX-dev embeds ``guidance_scale``; real CFG only with a negative prompt and
        ``true_cfg_scale > 1`` (diffusers' rule)."""
        self.guidance = float(guidance_scale) if getattr(self.transformer.config, "guidance_embeds",
                                                         False) else None
        cfg = 1.0 if true_cfg_scale is None else float(true_cfg_scale)
        return cfg if (has_negative and cfg > 1) else 1.0

    @staticmethod
    def pack(x: torch.Tensor) -> torch.Tensor:
        B, C, h, w = x.shape
        x = x.view(B, C, h // 2, 2, w // 2, 2).permute(0, 2, 4, 1, 3, 5)
        return x.reshape(B, (h // 2) * (w // 2), C * 4)

    @staticmethod
    def unpack(z: torch.Tensor, h: int, w: int) -> torch.Tensor:
        B, _, D = z.shape
        z = z.view(B, h // 2, w // 2, D // 4, 2, 2).permute(0, 3, 1, 4, 2, 5)
        return z.reshape(B, D // 4, h, w)

    @staticmethod
    def image_ids(h2: int, w2: int, device, dtype) -> torch.Tensor:
        ids = torch.zeros(h2, w2, 3)
        ids[..., 1] += torch.arange(h2)[:, None]
        ids[..., 2] += torch.arange(w2)[None, :]
        return ids.reshape(h2 * w2, 3).to(device=device, dtype=dtype)

    def _velocity(self, x, t, prompts):
        B, C, h, w = x.shape
        if h % 2 or w % 2:
            raise ValueError(f"FLUX packs 2x2 latent patches: views must have even latent sizes, "
                             f"got {h}x{w} (use windows / strides that are multiples of "
                             f"{2 * self.vae_scale_factor} pixels)")
        pairs = self._pairs(prompts)
        emb = torch.stack([e for e, _ in pairs])
        pooled = torch.stack([q for _, q in pairs])
        txt_ids = torch.zeros(emb.shape[1], 3, device=x.device, dtype=x.dtype)
        img_ids = self.image_ids(h // 2, w // 2, x.device, x.dtype)
        ts = torch.full((B,), t, dtype=x.dtype, device=x.device) / 1000
        guidance = None
        if getattr(self.transformer.config, "guidance_embeds", False):
            g = 3.5 if self.guidance is None else self.guidance
            guidance = torch.full((B,), g, dtype=torch.float32, device=x.device)
        out = self.transformer(hidden_states=self.pack(x), timestep=ts, guidance=guidance,
                               pooled_projections=pooled, encoder_hidden_states=emb,
                               txt_ids=txt_ids, img_ids=img_ids, return_dict=False)[0]
        return self.unpack(out, h, w)
