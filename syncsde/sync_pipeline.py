"""A diffusers-style pipeline object over the one-call task functions.

    from syncsde import SyncPipeline
    sync = SyncPipeline.from_pipe(pipe)                    # or SyncPipeline.from_pretrained(id)
    out = sync("a beach at sunset", task="wide", strategy="syncsde", width=2048,
               generator=torch.Generator().manual_seed(0), num_images_per_prompt=2)
    out.images                                             # as diffusers: PIL / np / pt / latent

``task="wide"`` calls :func:`syncsde.pipelines.wide_image`, ``"mask"``
:func:`~syncsde.pipelines.mask_generation` (``prompt`` = the combined prompt, or a
``(background, object, combined)`` triple; ``mask=`` required), ``"ambiguous"``
:func:`~syncsde.pipelines.ambiguous_image` (``prompt`` = ``(prompt_a, prompt_b)``; ``stage2=``
optional), ``"edit"`` :func:`~syncsde.pipelines.edit_image` (``image=``). Every other keyword
goes to that function unchanged. The wrapped pipeline is not modified (no attribute is set on
it); ``callback_on_step_end`` receives this object as its first argument, and setting
``sync._interrupt = True`` inside it stops the run, as with a diffusers pipeline.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from syncsde.conventions import StepControl

__all__ = ["SyncPipeline", "SyncPipelineOutput", "TASKS"]

TASKS = ("wide", "mask", "ambiguous", "edit")


@dataclass
class SyncPipelineOutput:
    """``images`` as diffusers' outputs have them; ``result`` is the task function's
    :class:`~syncsde.pipelines.PipelineResult` (latents, trajectories, settings, extras)."""

    images: Any
    result: Any = None

    def __getitem__(self, i):
        return self.to_tuple()[i]

    def to_tuple(self) -> tuple:
        return (self.images,)


class SyncPipeline(StepControl):
    """Synchronized sampling with diffusers' calling conventions (see the module doc). The
    callback state diffusers' callbacks read (``interrupt``, ``num_timesteps``,
    ``guidance_scale``, ``do_classifier_free_guidance``) comes from :class:`StepControl`."""

    def __init__(self, pipe: Any):
        if pipe is None:
            raise ValueError("SyncPipeline needs a diffusers pipeline (or a syncsde denoiser)")
        super().__init__(pipe)

    @classmethod
    def from_pipe(cls, pipe: Any) -> "SyncPipeline":
        """Wraps a loaded pipeline (it is used as is, never modified)."""
        return cls(pipe)

    @classmethod
    def from_pretrained(cls, model_id_or_path: str, **kwargs) -> "SyncPipeline":
        """Loads with :func:`syncsde.models.load_pipeline` (same keywords)."""
        from syncsde.models import load_pipeline

        return cls(load_pipeline(model_id_or_path, **kwargs))

    @property
    def device(self):
        return getattr(self.pipe, "device", None)

    def to(self, *args, **kwargs) -> "SyncPipeline":
        """Moves the wrapped pipeline (``pipe.to(...)``, your explicit call) and returns self."""
        self.pipe = self.pipe.to(*args, **kwargs)
        return self

    def __repr__(self) -> str:
        return f"SyncPipeline({type(self.pipe).__name__})"

    def _callback(self, user):
        if user is None:
            return None
        inputs = getattr(user, "tensor_inputs", None)

        def on_step_end(control, i, t, kwargs):
            out = user(self, i, t, kwargs)
            if self._interrupt:
                control._interrupt = True
            return out

        if inputs is not None:
            on_step_end.tensor_inputs = inputs
        return on_step_end

    def __call__(self, prompt: Any = None, task: str = "wide", strategy: Any = None, *,
                 return_dict: bool = True, **kwargs):
        from syncsde import pipelines as P

        if task not in TASKS:
            raise ValueError(f"task must be one of {TASKS}, got {task!r}")
        self._interrupt = False
        self._guidance_scale = float(kwargs.get("guidance_scale", 1.0) or 1.0)
        self._num_timesteps = int(kwargs.get("num_inference_steps", 0) or 0)
        cb = self._callback(kwargs.pop("callback_on_step_end", None))
        if cb is not None and task == "edit":
            raise ValueError("callback_on_step_end is not available for task='edit'")
        if cb is not None:
            kwargs["callback_on_step_end"] = cb
        kwargs["strategy"] = strategy
        if task == "wide":
            res = P.wide_image(self.pipe, prompt, **kwargs)
        elif task == "mask":
            if "mask" not in kwargs:
                raise ValueError("task='mask' needs mask= (a path, image or array; 1 = object)")
            mask = kwargs.pop("mask")
            if prompt is not None:
                if isinstance(prompt, tuple) and len(prompt) == 3:
                    kwargs.update(zip(("background_prompt", "object_prompt", "combined_prompt"),
                                      prompt))
                else:
                    kwargs["combined_prompt"] = prompt
            res = P.mask_generation(self.pipe, mask, **kwargs)
        elif task == "ambiguous":
            if prompt is None or not isinstance(prompt, (tuple, list)) or len(prompt) != 2:
                raise ValueError("task='ambiguous' needs prompt=(prompt_a, prompt_b)")
            res = P.ambiguous_image(self.pipe, prompt[0], prompt[1], **kwargs)
        else:
            if "image" not in kwargs:
                raise ValueError("task='edit' needs image= (the real image to edit)")
            image = kwargs.pop("image")
            if prompt is not None:
                kwargs.setdefault("target_prompt", prompt)
            res = P.edit_image(self.pipe, image, **kwargs)
        if not return_dict:
            return (res.images,)
        return SyncPipelineOutput(res.images, res)
