"""Real-image editing: DDIM inversion, the attention mask (:class:`AttentionRecorder`), the
three-trajectory edit (:func:`edit_image`)."""
from __future__ import annotations

import dataclasses

import os
from typing import Any, Callable, Sequence

import torch
import torch.nn.functional as F

from syncsde.denoisers.diffusers_models import StableDiffusionDenoiser, load_image
from syncsde.pipelines.common import (
    PipelineResult, _cfg, _decode, _generator, _latent_size, _model_name, _resolve, ddim_loop,
    load_mask, make_task_strategy)
from syncsde.sampler import sample
from syncsde.strategies import Strategy


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
               strategy: str | Strategy | None = None, inv_lambda: float = 5.0,
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
    from syncsde.editing import (
        image_digest,
        load_inversion,
        match_source_word,
        replace_matched_word,
        save_inversion,
    )
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
    strat = make_task_strategy(strategy, inv_lambda, strategy_options, authors_compat,
                               task="edit")
    if getattr(strat, "name", None) == "projection" and strat.known is None \
            and strat.clean_source is None:
        # the projection conditions on the source latent itself (docs/composition.md sec. 7)
        if x0 is None:   # x_T came from the cache: encode the image again (same seed)
            x0 = den.encode(img, generator=_generator(seed), sample=sample_posterior)
        strat = dataclasses.replace(strat, clean_source=x0[0].cpu())
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
