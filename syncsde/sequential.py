r"""Sequential (autoregressive) sampling of a canvas of windows: one window after another, each
sampled conditionally on the pixels that earlier windows already generated.

The chain rule ``p(X) = p(C_1) prod_i p(C_i \ K_i | K_i)``, with ``K_i`` the part of window
``i`` covered by earlier windows, is exact for a field that is Markov at the overlap scale when
every conditional is sampled exactly; each conditional is one run of the same sampler with the
:class:`~syncsde.strategies_inpaint.Inpaint` strategy (known pixels by replacement, Langevin
correctors on the rest; docs/composition.md, eq. 5). Unlike the lockstep strategies, a window
only starts once its neighbours are finished, so a choice made at high noise by the first window
(a mixture component, a horizon, a palette) is *seen* by the next one as clean pixels: the
lockstep strategies couple windows while all of them are still noise and cannot keep one mode
across the canvas (docs/benchmarks.md, mixtures).

Cost: each window is one trajectory of ``steps`` steps with ``1 + corrector_steps`` model
inputs per step once it has known pixels, so model inputs per step over the N views (SyncSDE's
cost) are ``1 + corrector_steps`` (the first window: 1); the windows run one after another
(the batch is ``batch``, not ``N * batch``).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
from tqdm.auto import tqdm

from syncsde import ops

from syncsde.strategies import STRATEGIES, Strategy
from syncsde.strategies_inpaint import Inpaint
from syncsde.views import WindowViews

__all__ = ["Sequential", "sample_sequential"]


@dataclass
class Sequential(Strategy):
    """``strategy="sequential"`` for the window tasks (``wide_image``, ``run_problem``): not a
    lockstep coupling but a scheme that runs :func:`sample_sequential` with these options."""

    corrector_steps: int = 1
    snr: float = 0.5
    order: Any = None
    name: str = "sequential"

    def __post_init__(self):  # the options are checked by the Inpaint runs; fail early here
        Inpaint(corrector_steps=self.corrector_steps, snr=self.snr)

    def prepare(self, run):
        raise ValueError("'sequential' samples windows one after another, not in lockstep: call "
                         "syncsde.sequential.sample_sequential (the window tasks do)")

    def run(self, problem, denoiser, schedule, **kw):
        return sample_sequential(problem, denoiser, schedule, corrector_steps=self.corrector_steps,
                                 snr=self.snr, order=self.order, **kw)


STRATEGIES["sequential"] = Sequential


def _window_seed(seed: int, i: int) -> int:
    return (int(seed) * 1_000_003 + 7 * int(i) + 1) % (2 ** 62)


def sample_sequential(problem: Any, denoiser: Any, schedule: Any = "sd",
                      num_steps: int | None = None, corrector_steps: int = 1, snr: float = 0.5,
                      order: list[int] | None = None, guidance_scale: float = 1.0,
                      seed: int = 0, batch: int | None = None, dtype: torch.dtype = torch.float32,
                      device: str | torch.device = "cpu", progress: bool = True,
                      max_batch: int | None = None, checkpoint: str | None = None) -> Any:
    """Samples the windows of ``problem`` (a :class:`~syncsde.views.WindowViews` problem: wide
    images, grids, circular canvases, long sequences) one after another in ``order`` (default:
    the views' order), each conditioned on what the earlier ones generated. Returns a
    :class:`~syncsde.sampler.SampleResult` whose ``canvas`` and ``output`` are the canvas and
    ``views`` its crops. ``checkpoint`` names a file that receives the canvas after every
    window (atomically); a run started with an existing file of the same run resumes after
    its last finished window (a file of another run is refused with what differs)."""
    from syncsde.checkpoint import describe, load_checkpoint, save_checkpoint
    from syncsde.sampler import Problem, SampleResult, sample  # the sampler imports strategies
    views = problem.views
    if not isinstance(views, WindowViews):
        raise ValueError("sequential sampling needs window views (wide images, grids, long "
                         f"sequences), got {type(views).__name__}")
    if problem.output_view is not None:
        raise ValueError("sequential sampling composes a canvas; this task answers with one "
                         "trajectory")
    n = views.num_views
    order = list(range(n)) if order is None else [int(i) for i in order]
    if sorted(order) != list(range(n)):
        raise ValueError(f"order must be a permutation of the {n} windows, got {order}")
    bshape = () if batch is None else (int(batch),)
    C, H, W = views.canvas_shape
    canvas = torch.zeros((*bshape, C, H, W), dtype=dtype, device=device)
    known = torch.zeros((1, H, W), dtype=dtype, device=device)
    h, w = (int(s) for s in views.size)
    one = WindowViews((C, h, w), (h, w), [(0, 0)])
    start = 0
    run_id = None
    if checkpoint:
        run_id = {"scheme": "sequential", "order": order, "corrector_steps": int(corrector_steps),
                  "snr": float(snr), "seed": describe(seed), "batch": batch, "dtype": str(dtype),
                  "guidance_scale": float(guidance_scale), "schedule": describe(schedule),
                  "num_steps": num_steps, "views": describe(views), "cond": describe(list(problem.cond)),
                  "negative": describe(None if problem.negative is None else list(problem.negative)),
                  "initial_views": describe(problem.initial_views)}
        if os.path.exists(checkpoint):
            start, state = load_checkpoint(checkpoint, run_id, n)
            canvas = state["canvas"].to(dtype=dtype, device=device)
            known = state["known"].to(dtype=dtype, device=device)
    steps = 0
    bar = tqdm(total=n, initial=start, desc="sequential windows", disable=not progress,
               leave=False)
    for done, i in enumerate(order):
        if done < start:
            continue
        sub = Problem(one, [problem.cond[i]],
                      None if problem.negative is None else [problem.negative[i]],
                      init="independent",
                      initial_views={0: problem.initial_views[i]} if i in problem.initial_views else {})
        offs = views.offsets[i:i + 1]
        k_mask = ops.crop_windows(known, offs, views.size, circular=views.circular)[0][0]
        if bool((k_mask > 0).any()):
            k = ops.crop_windows(canvas, offs, views.size, circular=views.circular)[0]
            strategy = Inpaint(corrector_steps=corrector_steps, snr=snr, known=k,
                               known_mask=(k_mask > 0).to(dtype), seed=_window_seed(seed, i))
        else:
            strategy = "independent"
        res = sample(sub, denoiser, strategy, schedule, num_steps=num_steps,
                     guidance_scale=guidance_scale, seed=_window_seed(seed, i), batch=batch,
                     dtype=dtype, device=device, progress=False, max_batch=max_batch)
        steps = res.steps
        ops.paste_windows_on_top(res.output.unsqueeze(0), offs, canvas, circular=views.circular)
        ops.paste_windows_on_top(torch.ones((1, 1, h, w), dtype=dtype, device=device), offs, known,
                                 circular=views.circular)
        if checkpoint:
            save_checkpoint(checkpoint, done + 1, n, run_id, {"canvas": canvas, "known": known})
        bar.update(1)
    bar.close()
    if steps == 0:  # every window came from the checkpoint
        steps = len(getattr(schedule, "timesteps", ())) or int(num_steps or 0)
    return SampleResult(views.forward(canvas), canvas, canvas, "sequential", steps)
