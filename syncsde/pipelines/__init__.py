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

One module per task (``wide``, ``mask``, ``edit``, ``ambiguous``, ``controlnet``, ``motion``)
over the shared pieces of ``common``; every name stays importable from ``syncsde.pipelines``.

Models in float16 on a GPU are fine: the sampler state stays float32 and model inputs are cast.
"""
from syncsde.pipelines.ambiguous import ambiguous_image  # noqa: F401
from syncsde.pipelines.common import (  # noqa: F401
    PipelineResult, _cfg, _decode, _describe, _finish_images, _generator, _guidance,
    _latent_channels, _latent_size, _model_name, _positive_size, _prompts, _resolve,
    _sample_task, _schedule_kwargs, _scheduler_name, _seed_setting, _window_conditions,
    ddim_loop, decode_circular, load_mask, make_task_strategy, replace_word, sampling_schedule)
from syncsde.pipelines.controlnet import controlnet_conditions, controlnet_eps  # noqa: F401
from syncsde.pipelines.edit import AttentionRecorder, edit_image  # noqa: F401
from syncsde.pipelines.mask import mask_generation  # noqa: F401
from syncsde.pipelines.motion import long_motion  # noqa: F401
from syncsde.pipelines.wide import wide_image  # noqa: F401

__all__ = ["PipelineResult", "wide_image", "mask_generation", "edit_image", "ambiguous_image",
           "controlnet_eps", "controlnet_conditions", "long_motion", "load_mask",
           "AttentionRecorder", "ddim_loop", "make_task_strategy", "replace_word"]
