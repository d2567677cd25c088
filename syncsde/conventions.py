"""diffusers' calling conventions for the one-call task functions (:mod:`syncsde.pipelines`).

- prompts: a string or a list (one sample per entry), ``num_images_per_prompt`` copies of each
  (diffusers' order: ``[p0, p0, p1, p1]``), ``negative_prompt`` a string or a list of the same
  length, ready-made ``prompt_embeds`` / ``negative_prompt_embeds`` (``[B, L, D]``), ``clip_skip``;
- ``generator``: a ``torch.Generator`` (its state is consumed as diffusers does) or a list with
  one per sample (each sample's initial noise from its own generator), ``latents``: given
  initial noise (scaled by the scheduler's ``init_noise_sigma``, as diffusers does);
- ``callback_on_step_end(control, step, timestep, callback_kwargs)`` with
  ``callback_on_step_end_tensor_inputs`` (``"latents"``: the task's current answer in the
  scheduler's own space, ``[B, C, h, w]``; ``"view_latents"``: every view's state
  ``[N, B, C, h, w]``); a changed tensor in the returned dict replaces the state, and
  ``control._interrupt = True`` stops the loop after this step (the result is the state at that
  step, as diffusers' ``continue`` over the remaining steps gives);
- ``output_type``: ``"pil"``, ``"np"`` (``[B, H, W, 3]`` in [0, 1]), ``"pt"``
  (``[B, 3, H, W]`` in [0, 1]) or ``"latent"`` (no decode).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Sequence

import torch

from syncsde.denoisers.batching import PerSample, per_sample

__all__ = ["OUTPUT_TYPES", "CALLBACK_TENSOR_INPUTS", "StepControl", "PromptBatch",
           "prompt_batch", "zip_batches", "GeneratorPlan", "plan_generator", "apply_plan",
           "StepCallback", "run_sampler", "format_images", "check_output_type", "PerSample"]

OUTPUT_TYPES = ("pil", "np", "pt", "latent")
CALLBACK_TENSOR_INPUTS = ("latents", "view_latents")


class _Interrupted(Exception):
    def __init__(self, step: int, y: torch.Tensor):
        super().__init__(step)
        self.step = step
        self.y = y


class StepControl:
    """The first argument of ``callback_on_step_end`` when no pipeline object is at hand:
    diffusers' callbacks stop a run by setting ``pipeline._interrupt = True``."""

    def __init__(self, pipe: Any = None, num_timesteps: int = 0, guidance_scale: float = 1.0):
        self.pipe = pipe
        self._interrupt = False
        self._num_timesteps = int(num_timesteps)
        self._guidance_scale = float(guidance_scale)

    @property
    def interrupt(self) -> bool:
        return bool(self._interrupt)

    @property
    def num_timesteps(self) -> int:
        return self._num_timesteps

    @property
    def guidance_scale(self) -> float:
        return self._guidance_scale

    @property
    def do_classifier_free_guidance(self) -> bool:
        return self._guidance_scale > 1


def check_output_type(output_type: str) -> str:
    if output_type not in OUTPUT_TYPES:
        raise ValueError(f"output_type must be one of {OUTPUT_TYPES}, got {output_type!r}")
    return output_type


def _prompt_list(prompt: Any, name: str) -> list | None:
    if prompt is None:
        return None
    if isinstance(prompt, str):
        return [prompt]
    if isinstance(prompt, (list, tuple)):
        if not prompt:
            raise ValueError(f"{name} is an empty list")
        for p in prompt:
            if not isinstance(p, str):
                raise TypeError(f"{name} must be a string or a list of strings, got an item of "
                                f"type {type(p).__name__}")
        return list(prompt)
    raise TypeError(f"{name} must be a string or a list of strings, got {type(prompt).__name__}")


def _embeds(emb: Any, name: str) -> list:
    t = torch.as_tensor(emb) if not isinstance(emb, torch.Tensor) else emb
    if t.dim() == 2:
        t = t[None]
    if t.dim() != 3:
        raise ValueError(f"{name} must be [batch, tokens, dim], got shape {tuple(t.shape)}")
    return list(t)


@dataclass
class PromptBatch:
    """One condition per sample (``size = len(prompts) * num_images_per_prompt``)."""

    conds: list
    negatives: list | None
    size: int
    batched: bool  # the caller used the batch form (a list, embeddings or several images)

    def cond(self) -> Any:
        return per_sample(self.conds)

    def negative(self) -> Any:
        return None if self.negatives is None else per_sample(self.negatives)


def _positive_int(v: Any, name: str) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or v < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {v!r}")
    return int(v)


def prompt_batch(prompt: Any, negative_prompt: Any = None, num_images_per_prompt: int = 1,
                 prompt_embeds: Any = None, negative_prompt_embeds: Any = None,
                 clip_skip: int | None = None, encoder: Any = None, name: str = "prompt",
                 embed_extra: Callable[[list, list | None], tuple[list, list | None]] | None = None
                 ) -> PromptBatch:
    """The per-sample conditions of a call. ``encoder`` (a PromptEncoder) turns strings into
    embeddings when ``clip_skip`` is given (positive prompts only, as diffusers' SD pipeline)."""
    nipp = _positive_int(num_images_per_prompt, "num_images_per_prompt")
    if prompt is not None and prompt_embeds is not None:
        raise ValueError(f"pass either {name} or prompt_embeds, not both")
    if negative_prompt is not None and negative_prompt_embeds is not None:
        raise ValueError("pass either negative_prompt or negative_prompt_embeds, not both")
    if prompt_embeds is not None:
        conds: list = _embeds(prompt_embeds, "prompt_embeds")
    else:
        conds = _prompt_list(prompt, name)
        if conds is None:
            raise ValueError(f"pass {name} (a string or a list of strings) or prompt_embeds")
        if clip_skip is not None:
            if encoder is None or not hasattr(encoder, "__call__"):
                raise ValueError("clip_skip needs the model's text encoder (pass prompt_embeds "
                                 "computed with it instead)")
            try:
                conds = list(encoder(conds, clip_skip=clip_skip))
            except TypeError as e:
                if "clip_skip" not in str(e):
                    raise
                raise ValueError(f"clip_skip is not supported by this model's text encoder "
                                 f"({type(encoder).__name__})") from None
    B = len(conds)
    if negative_prompt_embeds is not None:
        negs: list | None = _embeds(negative_prompt_embeds, "negative_prompt_embeds")
    else:
        negs = _prompt_list(negative_prompt, "negative_prompt")
        if negs is not None and len(negs) == 1 and B > 1 and isinstance(negative_prompt, str):
            negs = negs * B
    if negs is not None and len(negs) != B:
        raise ValueError(f"negative_prompt has {len(negs)} entries for {B} prompts")
    if embed_extra is not None:
        conds, negs = embed_extra(conds, negs)
    conds = [c for c in conds for _ in range(nipp)]
    negs = None if negs is None else [c for c in negs for _ in range(nipp)]
    batched = not isinstance(prompt, str) or nipp > 1
    return PromptBatch(conds, negs, len(conds), batched)


def zip_batches(batches: Sequence[PromptBatch], names: Sequence[str]) -> int:
    """The common batch size of several prompt batches (a single prompt is broadcast)."""
    sizes = {b.size for b in batches if b.size > 1 or b.batched}
    if len(sizes) > 1:
        raise ValueError(f"{', '.join(names)} have different batch sizes: {sorted(sizes)}")
    return max(b.size for b in batches)


# ---- generators and initial noise -----------------------------------------------------------
@dataclass
class GeneratorPlan:
    """What the sampler gets as ``seed`` and, when the noise was drawn here, the initial noise
    (``canvas`` for canvas-init runs, ``views`` for independent init)."""

    seed: Any
    canvas: torch.Tensor | None = None
    views: torch.Tensor | None = None


def _draw(shape, generator: torch.Generator) -> torch.Tensor:
    return torch.randn(shape, generator=generator, device=generator.device,
                       dtype=torch.float32).cpu()


def plan_generator(generator: Any, seed: Any, latents: Any, problem: Any, batch: int | None,
                   init: str, noise_scale: float) -> GeneratorPlan:
    """diffusers' ``generator`` / ``latents`` turned into the sampler's seed and, when needed,
    explicit initial noise. A CPU generator is handed to the sampler as is (it draws the noise
    exactly as ``randn_tensor`` does); a list of generators, a generator on another device, or
    given ``latents`` make the initial noise here (step noise of stochastic schedulers then comes
    from the first generator's seed)."""
    v = problem.views
    bshape = () if batch is None else (batch,)
    shape = (*bshape, *v.canvas_shape) if init == "canvas" else (v.num_views, *bshape, *v.view_shape)
    if latents is not None:
        z = torch.as_tensor(latents, dtype=torch.float32).detach().cpu()
        want = (*bshape, *v.canvas_shape)
        if z.dim() == len(want) + 1 and z.shape[0] == 1 and batch is None:
            z = z[0]
        if tuple(z.shape) != want:
            raise ValueError(f"latents must have shape {list(want)} (the canvas), got "
                             f"{list(z.shape)}")
        z = z * noise_scale
        s = _fallback_seed(generator, seed)
        if init == "canvas":
            return GeneratorPlan(s, canvas=z)
        return GeneratorPlan(s, views=v.forward(z.contiguous()))
    if generator is None:
        return GeneratorPlan(seed)
    if isinstance(generator, torch.Generator):
        if generator.device.type == "cpu":
            return GeneratorPlan(generator)
        return _explicit([generator], shape, init, batch, noise_scale, seed)
    if isinstance(generator, (list, tuple)):
        gens = list(generator)
        if not gens or not all(isinstance(g, torch.Generator) for g in gens):
            raise TypeError("generator must be a torch.Generator or a list of them")
        n = 1 if batch is None else batch
        if len(gens) != n:
            raise ValueError(f"got a list of {len(gens)} generators for a batch of {n} images "
                             "(one per image, as diffusers)")
        return _explicit(gens, shape, init, batch, noise_scale, seed)
    raise TypeError(f"generator must be a torch.Generator or a list of them, got "
                    f"{type(generator).__name__}")


def _fallback_seed(generator: Any, seed: Any) -> Any:
    g = generator[0] if isinstance(generator, (list, tuple)) and generator else generator
    if isinstance(g, torch.Generator):
        if g.device.type == "cpu" and not isinstance(generator, (list, tuple)):
            return g
        return torch.Generator().manual_seed(int(g.initial_seed()))
    return seed


def _explicit(gens, shape, init, batch, noise_scale, seed) -> GeneratorPlan:
    if len(gens) == 1:
        z = _draw(shape, gens[0])
    elif init == "canvas":  # one sample per generator, as randn_tensor with a list
        z = torch.cat([_draw((1, *shape[1:]), g) for g in gens])
    else:
        z = torch.stack([_draw((shape[0], *shape[2:]), g) for g in gens], dim=1)
    z = z * noise_scale
    s = _fallback_seed(gens if len(gens) > 1 else gens[0], seed)
    if init == "canvas":
        return GeneratorPlan(s, canvas=z)
    return GeneratorPlan(s, views=z)


def apply_plan(problem: Any, plan: GeneratorPlan) -> None:
    if plan.canvas is not None:
        problem.initial_canvas = plan.canvas
    if plan.views is not None:  # views the task already fixed (e.g. an inverted x_T) stay
        given = dict(problem.initial_views)
        problem.initial_views = {i: plan.views[i] for i in range(len(plan.views))}
        problem.initial_views.update(given)


# ---- callback_on_step_end -------------------------------------------------------------------
class StepCallback:
    """The sampler's ``callback(step, t, y)`` carrying diffusers' ``callback_on_step_end``."""

    def __init__(self, problem: Any, strategy: Any, schedule: Any, eta: float,
                 on_step_end: Callable | None, tensor_inputs: Sequence[str] | None,
                 control: Any, batched: bool, legacy: Callable | None = None):
        from syncsde.solvers import DiffusersSolver

        self.problem = problem
        self.strategy = strategy
        self.on_step_end = on_step_end
        if on_step_end is not None and hasattr(on_step_end, "tensor_inputs"):
            tensor_inputs = on_step_end.tensor_inputs  # diffusers' PipelineCallback objects
        self.inputs = list(tensor_inputs if tensor_inputs is not None else ["latents"])
        bad = [k for k in self.inputs if k not in CALLBACK_TENSOR_INPUTS]
        if bad:
            raise ValueError(f"callback_on_step_end_tensor_inputs has {bad}; allowed: "
                             f"{list(CALLBACK_TENSOR_INPUTS)}")
        self.control = control
        self.batched = batched
        self.legacy = legacy
        infos = schedule.steps(eta)
        # diffusers' latents after step k are y / scale: sigma-space schedulers keep
        # x / sqrt(abar), flow matching x = s(sigma) y
        self.scales = [schedule.callback_scale(info) if isinstance(schedule, DiffusersSolver)
                       else 1.0 for info in infos]
        self.timesteps = [info.t for info in infos]
        self.last_y: torch.Tensor | None = None

    def _answer(self, y: torch.Tensor) -> torch.Tensor:
        from syncsde.sampler import compose

        p = self.problem
        if p.output_view is not None:
            out = y[p.output_view]
        else:
            w = p.weights
            if w is not None:
                n = p.views.num_views
                w = w.to(dtype=y.dtype, device=y.device)
                w = w.reshape((n,) + (1,) * (y.dim() - 3) + tuple(w.shape[-2:]))
            out = compose(p.views, y, self.strategy.output_rule, w)
        return out if self.batched else out[None]

    def _write_latents(self, y: torch.Tensor, new: torch.Tensor, scale: float) -> None:
        p = self.problem
        new = torch.as_tensor(new).to(device=y.device, dtype=y.dtype) * scale
        if not self.batched and new.dim() == 4:  # handed out as [1, C, h, w]
            new = new[0]
        if p.output_view is not None:
            y[p.output_view] = new.expand(y[p.output_view].shape)
        else:
            y.copy_(p.views.forward(new.expand(y.shape[1:-3] + tuple(p.views.canvas_shape))
                                    .contiguous()))

    def __call__(self, i: int, t: Any, y: torch.Tensor) -> None:
        self.last_y = y
        if self.legacy is not None:
            self.legacy(i, t, y)
        if self.on_step_end is None:
            return
        scale = self.scales[i]
        kwargs: dict[str, Any] = {}
        given: dict[str, torch.Tensor] = {}
        if "latents" in self.inputs:
            lat = self._answer(y) / scale
            given["latents"] = lat.clone()
            kwargs["latents"] = lat
        if "view_latents" in self.inputs:
            given["view_latents"] = y.clone()
            kwargs["view_latents"] = y
        out = self.on_step_end(self.control, i, torch.as_tensor(self.timesteps[i]), kwargs)
        out = {} if out is None else out
        if not isinstance(out, dict):
            raise TypeError(f"callback_on_step_end must return a dict, got {type(out).__name__}")
        v = out.get("view_latents")
        if v is not None and v is not y:
            y.copy_(torch.as_tensor(v).to(device=y.device, dtype=y.dtype).expand(y.shape))
        lat = out.get("latents")
        if lat is not None and not (lat.shape == given["latents"].shape
                                    and torch.equal(lat, given["latents"])):
            self._write_latents(y, lat, scale)
        if getattr(self.control, "_interrupt", False):
            raise _Interrupted(i, y)


def run_sampler(sample_fn: Callable, callback: StepCallback | None, problem: Any,
                strategy: Any) -> Any:
    """``sample_fn()``, or when the step callback interrupted the run, a SampleResult of the
    state at that step."""
    from syncsde.sampler import SampleResult

    try:
        return sample_fn()
    except _Interrupted as stop:
        y = stop.y
        p = problem
        canvas = callback._answer(y) if callback is not None else y
        if not callback.batched:
            canvas = canvas[0]
        output = canvas if p.output_view is None else y[p.output_view]
        return SampleResult(y, canvas, output, strategy.name, stop.step + 1)


# ---- output ---------------------------------------------------------------------------------
def format_images(tensors: torch.Tensor | None, latents: torch.Tensor, output_type: str):
    """``images`` in diffusers' ``output_type`` from decoded ``[B, 3, H, W]`` in [0, 1]
    (``latents`` ``[B, C, h, w]`` for ``"latent"``)."""
    from syncsde.denoisers.diffusers_models import to_pil

    if output_type == "latent":
        return latents
    if tensors is None:
        return [] if output_type == "pil" else None
    if output_type == "pt":
        return tensors
    if output_type == "np":
        return tensors.permute(0, 2, 3, 1).float().numpy()
    return to_pil(tensors)

