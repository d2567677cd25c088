"""Long motion from MDM-format models over overlapping windows (:func:`long_motion`)."""
from __future__ import annotations

from typing import Any, Callable

import numpy as np
import torch

from syncsde.denoisers.mdm import MDMDenoiser, recover_joints
from syncsde.pipelines.common import PipelineResult, make_task_strategy
from syncsde.sampler import sample
from syncsde.strategies import Strategy


# ---- long motion (MDM) --------------------------------------------------------------------
def long_motion(model, prompt: str | None, length: int = 600, *, window: int = 120,
                overlap: int = 30, strategy: str | Strategy = "syncsde", inv_lambda: float = 3.0,
                num_inference_steps: int = 50, guidance_scale: float = 2.5,
                diffusion_steps: int | None = None, max_pull: float = 1.0,
                negative_prompt: str | None = None, mean=None, std=None, seed: int = 0,
                progress: bool = True, eta: float = 0.0, channels: int | None = None,
                strategy_options: dict | None = None,
                callback: Callable | None = None) -> PipelineResult:
    """A long motion of ``length`` frames from an MDM-format model (x0 prediction) over
    windows of ``window`` frames overlapping by ``overlap`` (design: 120 / 30, inv_lambda 3;
    MDM's CFG 2.5, cosine schedule, 50 DDIM steps).

    First-step guard: MDM's cosine schedule starts at abar ~ 1e-9 .. 1e-6, where gamma_t is
    ~ 30 and ``gamma * inv_lambda`` would push each window 3x past its reference. SyncSDE's
    1/lambda(t) is therefore capped so that ``gamma_t / lambda(t) <= max_pull * sqrt(abar_s /
    abar_t)`` (:class:`~syncsde.strategies.SyncSDE`'s ``max_pull``): at most a full replacement by
    the reference on the overlap. Only the steps where the authors' schedule overshoots are
    touched: with MDM-1000 and 50 leading steps only the first (1/lambda 3 -> 1.95 at t=980),
    with MDM-50 stepped one by one the first two (3 -> 1.03, 2.94 -> 2.0). We clamp rather than
    skip the first step's coupling so that the windows still start out agreeing on their
    overlaps. Other values (e.g. 0.5) are tighter or looser; ``max_pull=None`` turns the guard
    off (the authors' uncapped update).

    ``channels``: features per frame (default: the model's ``njoints``, 263 for HumanML3D).
    Returns ``latents`` = the normalized canvas ``[F, 1, length]``, ``extras["features"]`` =
    ``[length, F]`` de-normalized with ``mean`` / ``std`` when given, and ``extras["joints"]``
    (``[length, 22, 3]``) for 263-d HumanML3D features when mean / std are given.
    """
    from syncsde.tasks import sequence_problem

    if isinstance(model, MDMDenoiser):
        den = model
    elif isinstance(model, torch.nn.Module):
        den = MDMDenoiser(model, diffusion_steps=diffusion_steps or 1000)
    else:
        raise TypeError("long_motion needs an MDM-format torch module or an MDMDenoiser")
    if diffusion_steps is not None:
        den.diffusion_steps = int(diffusion_steps)
    if channels is None:  # MDM names the 263 HumanML3D features "njoints" (nfeats = 1)
        channels = getattr(den.model, "njoints", None) or 263
    nfeats = int(channels)
    sched = den.schedule(num_inference_steps)
    problem = sequence_problem(int(nfeats), int(length), int(window), int(overlap), cond=prompt,
                               negative=negative_prompt)
    opts = dict(strategy_options or {})
    if isinstance(strategy, str) and strategy == "syncsde":
        opts.setdefault("max_pull", max_pull)  # the first-step guard (SyncSDE.max_pull)
    strat = make_task_strategy(strategy, inv_lambda, opts)
    res = sample(problem, den, strat, schedule=sched, guidance_scale=guidance_scale, eta=eta,
                 seed=seed, device=den.device, progress=progress, callback=callback)
    canvas = res.output  # [F, 1, L]
    feats = canvas[:, 0, :].T.float().cpu().numpy()
    if std is not None:
        feats = feats * np.asarray(std, dtype=np.float32)
    if mean is not None:
        feats = feats + np.asarray(mean, dtype=np.float32)
    extras: dict[str, Any] = {"features": feats}
    if feats.shape[1] == 263 and mean is not None and std is not None:
        extras["joints"] = recover_joints(feats)
    settings = dict(task="motion", model=type(den.model).__name__, prompt=prompt, length=length,
                    window=window, overlap=overlap, strategy=res.strategy, inv_lambda=inv_lambda,
                    max_pull=max_pull, num_inference_steps=num_inference_steps,
                    guidance_scale=guidance_scale, diffusion_steps=den.diffusion_steps,
                    seed=seed, num_views=problem.views.num_views)
    return PipelineResult([], None, canvas.cpu(), res, settings, extras)
