"""The one lockstep sampler loop, shared by every task and every strategy.

Per step: one (chunked) model call for all views (both CFG halves), conversion to eps, then the
strategy's coupled update in the C core. The loop keeps only the current state (memory is
O(views), not O(views x steps)), can checkpoint it atomically every k steps and resume after
an interruption, shows a progress bar, and calls ``callback(step, t, y)`` for users who want
intermediate states.
"""
from __future__ import annotations

import copy
import math
import os
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import torch
from tqdm.auto import tqdm

from syncsde import ops, schedules
from syncsde.checkpoint import CheckpointError, describe, load_checkpoint, save_checkpoint
from syncsde.correlation import Correlation
from syncsde.denoisers.base import predict_eps
from syncsde.solvers import DDIMSolver, DiffusersSolver
from syncsde.strategies import StepInfo, Strategy, make_strategy
from syncsde.views import ViewSet


@dataclass
class SamplingSchedule:
    """An explicit ``abar`` table plus the descending timesteps to visit and the final abar."""

    abar: torch.Tensor
    timesteps: list[int]
    final_abar: float
    num_train_timesteps: int = 1000

    PRESETS = {
        # name: (beta schedule, spacing, steps_offset, set_alpha_to_one, default steps)
        "sd": ("scaled_linear", "leading", 1, False, 50),
        "deepfloyd": ("squaredcos_cap_v2", "leading", 0, True, 30),
        "mdm": ("cosine", "leading", 0, True, 50),
        "linear": ("linear", "leading", 0, True, 50),
    }

    @classmethod
    def preset(cls, name: str, num_steps: int | None = None) -> "SamplingSchedule":
        """``sd`` (Stable Diffusion 1.x/2.x DDIM), ``deepfloyd`` (IF), ``mdm``, ``linear``."""
        if name not in cls.PRESETS:
            raise ValueError(f"unknown schedule preset {name!r}; expected one of {sorted(cls.PRESETS)}")
        kind, spacing, offset, one, default = cls.PRESETS[name]
        n = default if num_steps is None else int(num_steps)
        if n < 1:
            raise ValueError(f"num_steps must be >= 1, got {num_steps!r}")
        abar = schedules.alphas_cumprod(kind)
        ts = schedules.ddim_timesteps(n, 1000, spacing=spacing, steps_offset=offset)
        return cls(abar, ts, schedules.final_abar(abar, one), 1000)

    def steps(self, eta: float = 0.0) -> list[StepInfo]:
        pairs = schedules.step_pairs(self.timesteps, self.num_train_timesteps, len(self.timesteps))
        out = []
        for k, (t, s) in enumerate(pairs):
            out.append(StepInfo(k, t, s, float(self.abar[t]),
                                schedules.prev_abar(self.abar, t, s, self.final_abar), eta,
                                list(self.timesteps)))
        return out


@dataclass
class Problem:
    """What a task hands the sampler: views, per-view conditions, the SyncSDE correlation
    model, canonical weights, and how trajectories start.

    ``init="canvas"`` crops every view's initial noise from one canvas-sized noise map (views
    agree on overlaps); ``"independent"`` draws each view's noise separately.
    ``initial_views`` maps a view index to a given initial state (e.g. an inverted x_T).
    """

    views: ViewSet
    cond: Sequence[Any]
    negative: Sequence[Any] | None = None
    correlation: Correlation | None = None
    weights: torch.Tensor | None = None
    init: str = "canvas"
    initial_views: dict[int, torch.Tensor] = field(default_factory=dict)
    output_view: int | None = None  # the task's answer is this trajectory (else the canvas)
    initial_canvas: torch.Tensor | None = None  # canvas-init strategies start from this

    def __post_init__(self):
        n = self.views.num_views
        if len(self.cond) != n:
            raise ValueError(f"got {len(self.cond)} conditions for {n} views")
        if self.negative is not None and len(self.negative) != n:
            raise ValueError(f"got {len(self.negative)} negative conditions for {n} views")
        if self.init not in ("canvas", "independent"):
            raise ValueError(f"init must be 'canvas' or 'independent', got {self.init!r}")


@dataclass
class SampleResult:
    views: torch.Tensor   # [N, *batch, C, h, w] final trajectories
    canvas: torch.Tensor  # [*batch, C, H, W] composed by the strategy's output rule
    output: torch.Tensor  # the task's answer: problem.output_view of views, else the canvas
    strategy: str
    steps: int


@dataclass
class _Run:
    views: ViewSet
    correlation: Correlation | None
    weights: torch.Tensor | None
    timesteps: list[int]
    dtype: torch.dtype
    device: torch.device
    batch_dims: int
    canvas: torch.Tensor | None = None
    # what a strategy needs to call the model itself (e.g. on overlaps)
    denoiser: Any = None
    cond: Sequence[Any] = ()
    negative: Sequence[Any] | None = None
    guidance_scale: float = 1.0
    max_batch: int | None = None
    solver: Any = field(default_factory=DDIMSolver)

    def predict_eps(self, x: torch.Tensor, t: int, abar_t: float, view_cond, view_negative=None,
                    guidance_scale: float | None = None):
        """eps for extra model inputs ``[M, *batch, C, h', w']`` given per-input conditions
        (``guidance_scale``: the run's own unless given; 1.0 = the conditions' plain eps)."""
        b = 1 if self.batch_dims == 0 else x.shape[1]
        flat = x.reshape(-1, *x.shape[-3:])
        cond = [c for c in view_cond for _ in range(b)]
        neg = None if view_negative is None else [c for c in view_negative for _ in range(b)]
        w = self.guidance_scale if guidance_scale is None else float(guidance_scale)
        return predict_eps(self.denoiser, flat, t, abar_t, cond, neg, w,
                           self.max_batch).reshape(x.shape)


def _generator(seed: int | torch.Generator | None) -> torch.Generator:
    if isinstance(seed, torch.Generator):
        return seed
    g = torch.Generator()
    g.manual_seed(0 if seed is None else int(seed))
    return g


def initial_state(problem: Problem, batch: int | None, generator: torch.Generator,
                  dtype=torch.float32, device="cpu", init: str | None = None,
                  noise_scale: float = 1.0) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Initial views ``[N, *batch, C, h, w]`` (noise drawn on the CPU so seeds agree across
    devices) and the canvas noise they were cropped from (``None`` for independent init).
    ``init`` overrides the problem's choice ("canvas" or "independent"); ``noise_scale``
    multiplies the drawn noise (a solver whose first level is not pure noise, e.g. Euler's
    ``init_noise_sigma`` seen in VP form), not given initial states."""
    v = problem.views
    bshape = () if batch is None else (int(batch),)
    canvas = None
    if (init or problem.init) == "canvas":
        canvas = torch.randn((*bshape, *v.canvas_shape), generator=generator, dtype=torch.float32)
        if noise_scale != 1.0:
            canvas = canvas * noise_scale
        canvas = canvas.to(dtype)
        if problem.initial_canvas is not None:
            canvas[...] = torch.as_tensor(problem.initial_canvas, dtype=dtype)
            return v.forward(canvas).to(device), canvas.to(device)
        y = v.forward(canvas)
    else:
        y = torch.randn((v.num_views, *bshape, *v.view_shape), generator=generator,
                        dtype=torch.float32)
        if noise_scale != 1.0:
            y = y * noise_scale
        y = y.to(dtype)
    for i, x in problem.initial_views.items():
        x = torch.as_tensor(x, dtype=dtype)
        try:
            y[i] = x.expand(y[i].shape)
        except RuntimeError as e:
            raise ValueError(f"initial state of view {i} has shape {tuple(x.shape)}; expected "
                             f"{tuple(y[i].shape)}") from e
    return y.to(device), None if canvas is None else canvas.to(device)


def _positive_int(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, torch.SymInt)) and \
            not (hasattr(value, "__index__") and not isinstance(value, float)):
        raise TypeError(f"{name} must be an integer >= 1, got {value!r}")
    value = int(value)
    if value < 1:
        raise ValueError(f"{name} must be >= 1, got {value}")
    return value


def _run_description(problem: Problem, strategy: Strategy, schedule: SamplingSchedule,
                     seed: Any, eta: float, guidance_scale: float, batch: int | None,
                     dtype: torch.dtype, shape: tuple[int, ...]) -> dict:
    """What identifies a run for its checkpoint: resuming with any of it changed is refused."""
    p = problem
    return {
        "timesteps": list(schedule.timesteps), "abar": describe(schedule.abar),
        "final_abar": float(schedule.final_abar),
        "seed": describe(seed.get_state() if isinstance(seed, torch.Generator) else seed),
        "eta": float(eta), "guidance_scale": float(guidance_scale), "batch": batch,
        "dtype": str(dtype), "shape": list(shape), "strategy": describe(strategy),
        "views": describe(p.views), "cond": describe(list(p.cond)),
        "negative": describe(None if p.negative is None else list(p.negative)),
        "correlation": describe(p.correlation), "weights": describe(p.weights), "init": p.init,
        "initial_views": describe(p.initial_views), "output_view": p.output_view,
        "initial_canvas": describe(p.initial_canvas)}


@torch.no_grad()
def sample(problem: Problem, denoiser: Any, strategy: str | Strategy = "syncsde",
           schedule: Any = "sd", num_steps: int | None = None,
           guidance_scale: float = 1.0, eta: float = 0.0,
           seed: int | torch.Generator | None = 0, batch: int | None = None,
           dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu",
           progress: bool = True, callback: Callable[[int, int, torch.Tensor], None] | None = None,
           max_batch: int | None = None, checkpoint: str | None = None,
           checkpoint_every: int = 1, **strategy_options) -> SampleResult:
    """Runs all views of ``problem`` in lockstep with ``strategy``.

    ``schedule`` is a :class:`SamplingSchedule` or a preset name (the C DDIM path), or a
    diffusers scheduler object / :class:`~syncsde.solvers.DiffusersSolver` (DDPM, DDIM with
    clipping or thresholding, Euler, Euler-ancestral, DPM-Solver++; pass ``num_steps``), which
    then drives every step.

    ``batch`` draws that many independent samples at once (views become
    ``[N, batch, C, h, w]``; the model sees ``N * batch`` inputs per step). ``checkpoint`` names
    a file that receives the state every ``checkpoint_every`` steps; if it exists when the
    run starts (same problem size and schedule), sampling resumes from it.
    """
    solver = DDIMSolver()
    if isinstance(schedule, str):
        schedule = SamplingSchedule.preset(schedule, num_steps)
    elif not isinstance(schedule, (SamplingSchedule, DiffusersSolver)) and hasattr(schedule, "step") \
            and hasattr(schedule, "set_timesteps"):
        if num_steps is None:
            raise ValueError("pass num_steps with a diffusers scheduler")
        schedule = DiffusersSolver(schedule, num_steps)
    elif num_steps is not None and num_steps != len(schedule.timesteps):
        raise ValueError("pass num_steps only with a preset name or a diffusers scheduler; the "
                         "schedule fixes its steps")
    if isinstance(schedule, DiffusersSolver):
        solver = schedule = copy.deepcopy(schedule)  # scheduler state is per run
        if eta > 0 and solver.name != "DDIMScheduler":
            raise ValueError(f"eta applies to DDIM only; {solver.name} brings its own noise")
        if checkpoint:
            raise ValueError(f"checkpoints need the C DDIM path; {solver.name}'s internal state "
                             "is not saved (pass a SamplingSchedule)")
    if len(schedule.timesteps) < 1:
        raise ValueError("the schedule has zero steps")
    if isinstance(eta, bool) or not isinstance(eta, (int, float)) or not (math.isfinite(eta) and eta >= 0):
        raise ValueError(f"eta must be a finite number >= 0, got {eta!r}")
    if batch is not None:
        batch = _positive_int(batch, "batch")
    checkpoint_every = _positive_int(checkpoint_every, "checkpoint_every")
    if max_batch is not None:
        max_batch = _positive_int(max_batch, "max_batch")
    strategy = make_strategy(strategy, **strategy_options)
    if not isinstance(solver, DDIMSolver) and not strategy.any_solver:
        raise ValueError(f"strategy {strategy.name!r} steps with DDIM only; it cannot run with "
                         f"{solver.name}")
    if checkpoint and not getattr(strategy, "resumable", True):
        raise ValueError(f"{strategy!r} carries state from step to step that a checkpoint does "
                         "not hold; run it without checkpoint=")
    seed_description = seed.get_state() if isinstance(seed, torch.Generator) else seed
    ops.set_num_threads()  # follow torch.get_num_threads() / SYNCSDE_NUM_THREADS
    device = torch.device(device)
    gen = _generator(seed)
    y, canvas = initial_state(problem, batch, gen, dtype, device, strategy.init,
                              getattr(solver, "initial_noise_scale", 1.0))
    n = problem.views.num_views
    b = 1 if batch is None else int(batch)
    run = _Run(problem.views, problem.correlation, problem.weights, list(schedule.timesteps),
               dtype, device, 0 if batch is None else 1, canvas, denoiser, list(problem.cond),
               None if problem.negative is None else list(problem.negative), guidance_scale,
               max_batch, solver)
    if isinstance(solver, DiffusersSolver):
        solver.generator = gen  # ancestral schedulers draw their noise from the run's seed
    if run.weights is not None:
        w = run.weights.to(dtype=dtype, device=device)
        run.weights = w.reshape((n,) + (1,) * (run.batch_dims + 1) + tuple(w.shape[-2:]))
    infos = schedule.steps(eta)
    start = 0
    if checkpoint:
        run_id = _run_description(problem, strategy, schedule, seed_description, eta,
                                  guidance_scale, batch, dtype, tuple(y.shape))
        if os.path.exists(checkpoint):
            start, state = load_checkpoint(checkpoint, run_id, len(infos))
            if "y" not in state or tuple(state["y"].shape) != tuple(y.shape) or \
                    ("canvas" in state) != (run.canvas is not None) or "rng" not in state:
                raise CheckpointError(checkpoint, "its tensors do not match this run")
            y = state["y"].to(dtype=dtype, device=device)
            if run.canvas is not None:
                run.canvas = state["canvas"].to(dtype=run.canvas.dtype, device=run.canvas.device)
            gen.set_state(state["rng"])
    strategy.prepare(run)
    cond = [c for c in problem.cond for _ in range(b)]
    negative = None if problem.negative is None else [c for c in problem.negative for _ in range(b)]
    flat_shape = (n * b, *problem.views.view_shape)
    bar = tqdm(infos[start:], desc=f"{strategy.name}", disable=not progress, leave=False)
    for info in bar:
        x = y.reshape(flat_shape)
        eps = predict_eps(denoiser, x, info.t, info.abar_t, cond, negative, guidance_scale,
                          max_batch, step=info.index).reshape(y.shape)
        noise = None
        if isinstance(solver, DiffusersSolver):
            pass  # the scheduler draws its own noise
        elif eta > 0 and strategy.init == "canvas":
            # canonical strategies keep views consistent: crop the noise from one canvas map
            z = torch.randn((*y.shape[1:-3], *problem.views.canvas_shape), generator=gen,
                            dtype=torch.float32).to(dtype=dtype, device=device)
            noise = problem.views.forward(z)
        elif eta > 0:
            noise = torch.randn(y.shape, generator=gen, dtype=torch.float32).to(dtype=dtype, device=device)
        y = strategy.step(run, y, eps, info, noise)
        if callback is not None:
            callback(info.index, info.t, y)
        done = info.index + 1
        if checkpoint and (done % checkpoint_every == 0 or done == len(infos)):
            tensors = {"y": y, "rng": gen.get_state()}
            if run.canvas is not None:
                tensors["canvas"] = run.canvas
            save_checkpoint(checkpoint, done, len(infos), run_id, tensors)
    bar.close()
    canvas = compose(problem.views, y, strategy.output_rule, run.weights)
    output = canvas if problem.output_view is None else y[problem.output_view]
    return SampleResult(y, canvas, output, strategy.name, len(infos))


def compose(views: ViewSet, y: torch.Tensor, rule: str, weights=None) -> torch.Tensor:
    """The canvas from final views: ``on_top`` (later views overwrite) or ``average``."""
    if rule == "on_top":
        return views.composite_on_top(y)
    if rule == "average":
        return views.average(y, weights)
    raise ValueError(f"unknown output rule {rule!r}; expected 'on_top' or 'average'")


INVERSION_SCHEMES = ("ddim", "authors")


def inversion_steps(schedule: SamplingSchedule,
                    scheme: str = "ddim") -> list[tuple[int, float, float, float]]:
    """The ``(t_eval, abar_eval, abar_from, abar_to)`` steps of a DDIM inversion, in order
    (``abar_eval`` is what the model's output conversion uses, e.g. for v-prediction).

    - ``"ddim"`` (textbook): the sampling steps walked backwards; from level ``abar_s`` (the
      final abar for the last step) the model is evaluated at ``max(s, 0)`` and the map moves to
      ``abar_t``, so ``x_T`` ends exactly at the sampler's first level ``abar[T]``.
    - ``"authors"`` (the SyncSDE / CSG / pix2pix-zero inverse scheduler): the sampling timesteps
      reversed with the first and last dropped (48 of 50 for SD: t = 21, 41, ..., 961); at each
      the model is evaluated at ``t`` and the map moves from ``abar[t-1]`` to ``abar[t+d-1]``
      (``d`` = train steps / inference steps). The clean sample is treated as sitting at
      ``abar[d]`` and ``x_T`` ends at ``abar[T-1]``, one index below where sampling starts.
    """
    if scheme == "ddim":
        return [(max(i.s, 0), i.abar_s, i.abar_s, i.abar_t) for i in reversed(schedule.steps())]
    if scheme == "authors":
        ts = sorted(int(t) for t in schedule.timesteps)[1:-1]
        d = int(schedule.num_train_timesteps) // len(schedule.timesteps)
        abar = schedule.abar
        if ts and (min(ts) < 1 or max(ts) + d - 1 >= abar.numel()):
            raise ValueError("the authors' inversion needs 1 <= t and t + d - 1 < len(abar)")
        return [(t, float(abar[t]), float(abar[t - 1]), float(abar[t + d - 1])) for t in ts]
    raise ValueError(f"unknown inversion scheme {scheme!r}; expected one of {INVERSION_SCHEMES}")


@torch.no_grad()
def invert(x0: torch.Tensor, denoiser: Any, cond: Any, schedule: SamplingSchedule | str = "sd",
           num_steps: int | None = None, guidance_scale: float = 1.0, negative: Any = None,
           progress: bool = True, scheme: str = "ddim") -> torch.Tensor:
    """DDIM inversion of a clean sample ``x0`` ``[B, C, H, W]`` towards the first timestep's
    level, by the steps of :func:`inversion_steps` (``scheme`` "ddim" or "authors"). Guidance
    is off by default (the authors invert with the source caption and no CFG)."""
    if isinstance(schedule, str):
        schedule = SamplingSchedule.preset(schedule, num_steps)
    steps = inversion_steps(schedule, scheme)
    x = x0.clone()
    b = len(x)
    conds = [cond] * b
    negs = None if negative is None else [negative] * b
    for t_eval, a_eval, a_from, a_to in tqdm(steps, desc="inversion", disable=not progress,
                                             leave=False):
        eps = predict_eps(denoiser, x, t_eval, a_eval, conds, negs, guidance_scale)
        x = ops.ddim_step(x, eps, a_from, a_to, out=x)
    return x
