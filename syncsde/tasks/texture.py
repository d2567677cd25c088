"""Mesh texturing: N camera views of one texture (the canonical object), coupled in texture space.

Authors' setting (seed 000 notes, section 3.5): SD 1.5 + depth ControlNet v1.1, 10 views
(azimuths 180, 225, ..., 135 at elevation 0, then (30, 0) and (30, 180)), 96x96 latents, 30
steps, CFG 15.5, directional prompts, synchronization only while t > 200. SyncSDE pulls view i
to the render of the latent texture baked from views j < i on the pixels that bake covers
(their corrected mask), with ``1/lambda = inv_lambda * t / 1000``. MultiDiffusion on the texture
view set is SyncMVD's texture-space step (average ``x_s`` in texture space, noise drawn in
texture space); SyncTweedies averages the Tweedie ``x0`` in texture space.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

from syncsde.mesh.camera import Camera, default_cameras, direction_suffix
from syncsde.mesh.io import Mesh
from syncsde.mesh.views import TextureEarlierViews, TextureViews
from syncsde.sampler import Problem
from syncsde.schedules import CutoffInvLambda, LinearInvLambda
from syncsde.strategies import Independent, Strategy, SyncSDE, make_strategy

#: strategies of the texture task: label -> (strategy name in syncsde.strategies, note)
TEXTURE_STRATEGIES = {
    "syncsde": "view i pulled to the render of the bake of views < i (authors)",
    "syncmvd": "average x_s in texture space, texture-space noise (= multidiffusion here)",
    "synctweedies": "average the Tweedie x0 in texture space",
    "independent": "no coupling",
}


def directional_prompt(prompt: str, cam: Camera, prefix: str = "Best quality, extremely detailed ") -> str:
    return f"{prefix}{prompt}, {direction_suffix(cam)} view."


def texture_problem(mesh: Mesh, cond: Sequence[Any], negative: Sequence[Any] | None = None,
                    cameras: Sequence[Camera] | None = None, latent_size: int = 96,
                    texture_size: int = 512, channels: int = 4, sampling: str = "nearest",
                    cos_power: float = 0.0) -> Problem:
    """The texture view set and SyncSDE's earlier-views correlation; independent initial noise
    per view (the authors'); canvas strategies start from one texture-space noise instead."""
    cams = default_cameras() if cameras is None else list(cameras)
    views = TextureViews(mesh, cams, latent_size, texture_size, channels, sampling=sampling,
                         cos_power=cos_power)
    return Problem(views, list(cond), None if negative is None else list(negative),
                   correlation=TextureEarlierViews(), init="independent")


@dataclass
class UntilT(Strategy):
    """``inner`` while ``t > t_min``, plain per-view steps after (the authors stop every kind of
    synchronization for the last 20% of steps: t <= 200)."""

    inner: Strategy
    t_min: float = 200.0

    def __post_init__(self):
        self.name = f"{self.inner.name}"
        self.init = self.inner.init
        self.output_rule = self.inner.output_rule
        self._plain = Independent()

    def prepare(self, run):
        self.inner.prepare(run)

    def step(self, run, y, eps, info, noise):
        if info.t > self.t_min:
            return self.inner.step(run, y, eps, info, noise)
        return self._plain.step(run, y, eps, info, noise)


def texture_strategy(name: str | Strategy, inv_lambda: float = 5.0, t_min: float = 200.0,
                     max_pull: float | None = 1.0) -> Strategy:
    """A texture strategy by label (``TEXTURE_STRATEGIES``) with the authors' cut-off."""
    if isinstance(name, Strategy):
        return name
    if name == "syncsde":
        return SyncSDE(CutoffInvLambda(LinearInvLambda(float(inv_lambda), T=1000.0), t_min),
                       max_pull=max_pull)
    if name == "independent":
        return Independent()
    if name not in TEXTURE_STRATEGIES:
        raise ValueError(f"unknown texture strategy {name!r}; expected one of "
                         f"{sorted(TEXTURE_STRATEGIES)}")
    inner = make_strategy("multidiffusion" if name == "syncmvd" else name)
    s = UntilT(inner, t_min)
    s.name = name
    return s


__all__ = ["TEXTURE_STRATEGIES", "texture_problem", "texture_strategy", "directional_prompt",
           "UntilT"]
