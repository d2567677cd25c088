"""Solvers: how one step ``t -> s`` turns the views' states and eps into the next states.

The sampler keeps every trajectory in variance-preserving form, ``y_t = sqrt(abar_t) x0 +
sqrt(1 - abar_t) eps``, and strategies speak in eps (a coupling is a change of eps; SyncSDE's
correlation term is the conditional score ``eps_i <- eps_i + inv_lambda(t) M_i (y_i - Xtilde_i) /
sqrt(1 - abar_t)``, which under DDIM is exactly ``- gamma_t inv_lambda(t) M_i (y_i - Xtilde_i)``,
docs/method.md). The solver then moves the states:

- :class:`DDIMSolver` (the default): the C core's DDIM step (eta >= 0), fused with the SyncSDE
  pull in one kernel;
- :class:`DiffusersSolver`: the user's own diffusers scheduler object drives the step
  (``scheduler.step``), for DDPM, DDIM with ``clip_sample`` or thresholding, Euler,
  Euler-ancestral and DPM-Solver++ (multistep). Sigma-space schedulers (Euler) are fed
  ``y / sqrt(abar_t)`` and their result is scaled back, so the model always sees the VP state
  (which is what diffusers' ``scale_model_input`` gives it too). A scheduler it cannot drive is
  refused with its name: nothing is swapped silently.
"""
from __future__ import annotations

import copy
import logging
import math
from typing import Any

import torch

from syncsde import ops

__all__ = ["DDIMSolver", "DiffusersSolver", "FlowMatchSolver", "SUPPORTED_SCHEDULERS",
           "FLOW_SCHEDULERS", "FLOW_SIGMA_CAP", "flow_level", "is_plain_ddim"]

# class name -> the state the scheduler steps: "vp" (x_t as the model sees it) or "sigma"
# (x = x0 + sigma eps, Karras / k-diffusion form)
SUPPORTED_SCHEDULERS = {
    "DDIMScheduler": "vp",
    "DDPMScheduler": "vp",
    "DPMSolverMultistepScheduler": "vp",
    "EulerDiscreteScheduler": "sigma",
    "EulerAncestralDiscreteScheduler": "sigma",
    "LCMScheduler": "vp",  # few-step consistency sampling (LCM, LCM-LoRA)
}


# flow-matching schedulers: x_sigma = (1 - sigma) x0 + sigma eps, the model predicts v = eps - x0
FLOW_SCHEDULERS = ("FlowMatchEulerDiscreteScheduler",)
# levels above this sigma are represented at it for the eps <-> x0 conversion (docs/models/
# flow_matching.md): at sigma = 1 the VP state is pure noise and eps carries no x0 at all
FLOW_SIGMA_CAP = 0.98


def flow_level(sigma: float) -> tuple[float, float, float]:
    """``(sigma_e, s, abar)`` of a flow-matching level: the represented sigma
    ``min(sigma, FLOW_SIGMA_CAP)``, the scale ``s = sqrt((1 - sigma_e)^2 + sigma_e^2)`` with
    ``x = s y`` (y the variance-preserving state) and ``abar = ((1 - sigma_e) / s)^2``."""
    se = min(float(sigma), FLOW_SIGMA_CAP)
    s = math.sqrt((1.0 - se) ** 2 + se ** 2)
    return se, s, ((1.0 - se) / s) ** 2


class DDIMSolver:
    """The C core's DDIM update (deterministic at eta = 0, the noise ``z`` given by the sampler)."""

    name = "ddim"
    fused_syncsde = True  # SyncSDE uses the fused kernel ops.syncsde_step
    stateful = False

    def step(self, y, eps, info, noise, out=None):
        return ops.ddim_step(y, eps, info.abar_t, info.abar_s, info.eta, noise, out=out)


def is_plain_ddim(config: Any) -> bool:
    """True when a scheduler config is a DDIM without the options the C step does not do
    (``clip_sample``, dynamic thresholding)."""
    cfg = dict(getattr(config, "config", config) or {})
    return cfg.get("_class_name", "DDIMScheduler") == "DDIMScheduler" and \
        not cfg.get("clip_sample", False) and not cfg.get("thresholding", False)


class DiffusersSolver:
    """A diffusers scheduler driving the lockstep views. ``scheduler`` is a scheduler object
    or a config (with ``_class_name``); a private copy is made, set to ``num_steps`` steps and
    told to expect eps (the sampler always hands eps, whatever the model predicts)."""

    fused_syncsde = False

    def __new__(cls, scheduler: Any = None, num_steps: int = 1, **kw):
        if cls is DiffusersSolver and scheduler is not None:
            config = dict(getattr(scheduler, "config", scheduler) or {})
            name = config.get("_class_name") or type(scheduler).__name__
            if name in FLOW_SCHEDULERS:
                return super().__new__(FlowMatchSolver)
        return super().__new__(cls)

    def callback_scale(self, info) -> float:
        """diffusers' latents after this step are ``y / callback_scale``."""
        return math.sqrt(info.abar_s) if self.space == "sigma" else 1.0

    def __init__(self, scheduler: Any, num_steps: int):
        import diffusers

        config = dict(getattr(scheduler, "config", scheduler))
        cls_name = config.get("_class_name") or type(scheduler).__name__
        if cls_name not in SUPPORTED_SCHEDULERS:
            raise ValueError(f"syncsde cannot drive the scheduler {cls_name}; supported: "
                             f"{', '.join(sorted(SUPPORTED_SCHEDULERS))} (or pass a "
                             "SamplingSchedule for the C DDIM path)")
        if int(num_steps) < 1:
            raise ValueError(f"num_steps must be >= 1, got {num_steps!r}")
        config["prediction_type"] = "epsilon"
        dlog = logging.getLogger("diffusers.configuration_utils")
        level = dlog.level
        dlog.setLevel(logging.ERROR)  # keys of another scheduler class are expected here
        try:
            self.scheduler = getattr(diffusers, cls_name).from_config(config)
        finally:
            dlog.setLevel(level)
        self.name = cls_name
        self.space = SUPPORTED_SCHEDULERS[cls_name]
        self.stateful = cls_name == "DPMSolverMultistepScheduler" or self.space == "sigma"
        # keeps past eps and extrapolates from them (SyncSDE pulls the state, not the eps)
        self.multistep = cls_name == "DPMSolverMultistepScheduler"
        self.scheduler.set_timesteps(int(num_steps))
        self.timesteps = self.scheduler.timesteps.tolist()
        self.num_train_timesteps = int(self.scheduler.config.num_train_timesteps)
        self._abar = self.scheduler.alphas_cumprod.to(torch.float64)
        self.generator = None  # set by the sampler
        # the first state in VP form is randn * this (Euler: init_noise_sigma * sqrt(abar_0))
        sigma0 = float(self.scheduler.init_noise_sigma)
        self.initial_noise_scale = sigma0 * math.sqrt(self._abar_at(0)) \
            if self.space == "sigma" else sigma0

    def _abar_at(self, k: int) -> float:
        """abar of the state before step k (k = number of steps: the state after the last)."""
        sch = self.scheduler
        sigmas = getattr(sch, "sigmas", None)
        if sigmas is not None:  # Euler, DPM-Solver: sigma = sqrt((1 - abar) / abar)
            sigma = float(sigmas[k]) if k < len(sigmas) else 0.0
            return 1.0 / (1.0 + sigma * sigma)
        if k < len(self.timesteps):
            return float(self._abar[int(self.timesteps[k])])
        t = int(self.timesteps[-1])  # the level after the last step, as the scheduler has it
        if self.name == "DDIMScheduler":
            prev = t - self.num_train_timesteps // len(self.timesteps)
            return float(self._abar[prev]) if prev >= 0 else float(sch.final_alpha_cumprod)
        prev = int(sch.previous_timestep(t))
        return float(self._abar[prev]) if prev >= 0 else 1.0

    def eps_eta(self, info) -> float:
        """The DDIM eta whose eps coefficient this scheduler's step has: 1 for the ancestral
        steps (DDPM with its default posterior variance and Euler-ancestral are DDIM at eta = 1
        for an eps model), ``info.eta`` otherwise. SyncSDE caps its pull with it: the pull it
        adds to eps is moved by the solver's eps coefficient, not DDIM's at eta = 0."""
        if self.name == "EulerAncestralDiscreteScheduler" or (
                self.name == "DDPMScheduler"
                and self.scheduler.config.variance_type in ("fixed_small", "fixed_small_log")):
            return 1.0
        return info.eta

    def steps(self, eta: float = 0.0) -> list:
        from syncsde.strategies import StepInfo

        n = len(self.timesteps)
        out = []
        for k, t in enumerate(self.timesteps):
            s = self.timesteps[k + 1] if k + 1 < n else -1
            t = int(t) if float(t).is_integer() else float(t)
            abar_s = self._abar_at(k + 1)
            if self.name == "DDIMScheduler":  # DDIM steps to t - T/n whatever the spacing
                prev = int(t) - self.num_train_timesteps // n
                abar_s = float(self._abar[prev]) if prev >= 0 else \
                    float(self.scheduler.final_alpha_cumprod)
            out.append(StepInfo(k, t, s, self._abar_at(k), abar_s, eta, list(self.timesteps)))
        return out

    def step(self, y, eps, info, noise, out=None):
        sch = self.scheduler
        generator = self.generator
        scale_t = math.sqrt(info.abar_t) if self.space == "sigma" else 1.0
        scale_s = math.sqrt(info.abar_s) if self.space == "sigma" else 1.0
        x = y / scale_t if scale_t != 1.0 else y
        if self.space == "sigma":
            sch.scale_model_input(x, sch.timesteps[info.index])  # marks the input as scaled (diffusers checks it)
        kw = {"generator": generator} if self.name in ("DDPMScheduler", "LCMScheduler",
                                                       "EulerAncestralDiscreteScheduler") else {}
        if self.name == "DDIMScheduler":
            kw = {"eta": info.eta, "generator": generator}
        flat = x.reshape(-1, *x.shape[-3:])
        t = sch.timesteps[info.index]  # the scheduler's own timestep value (a tensor)
        res = sch.step(eps.reshape(flat.shape).to(flat.dtype), t, flat, return_dict=True, **kw)
        x_s = res.prev_sample.reshape(y.shape)
        if scale_s != 1.0:
            x_s = x_s * scale_s
        if out is not None:
            out.copy_(x_s)
            return out
        return x_s

    def __deepcopy__(self, memo):
        new = copy.copy(self)
        new.scheduler = copy.deepcopy(self.scheduler, memo)
        return new


class FlowMatchSolver(DiffusersSolver):
    """Flow-matching Euler (SD3, FLUX) with the scheduler's own sigmas and timesteps.

    The sampler's state stays variance preserving: ``y = x / s(sigma)`` with ``x = (1 - sigma)
    x0 + sigma eps`` the flow latent (:func:`flow_level`), and the flow denoisers hand eps at
    the same represented level, so every strategy's eps math (SyncSDE's conditional score,
    Tweedie averages) applies unchanged. A step recovers x0 by Tweedie, the velocity with the
    scheduler's true sigma, ``v = (x - x0) / sigma``, and moves ``x + (sigma_next - sigma) v``
    exactly as ``FlowMatchEulerDiscreteScheduler.step`` (``stochastic_sampling``:
    ``(1 - sigma_next) x0 + sigma_next z``). ``mu`` is FLUX's resolution-dependent shift."""

    def __init__(self, scheduler: Any, num_steps: int, mu: float | None = None,
                 sigmas: Any = None):
        import diffusers

        config = dict(getattr(scheduler, "config", scheduler))
        cls_name = config.get("_class_name") or type(scheduler).__name__
        if cls_name not in FLOW_SCHEDULERS:
            raise ValueError(f"FlowMatchSolver drives {FLOW_SCHEDULERS}, got {cls_name}")
        if int(num_steps) < 1:
            raise ValueError(f"num_steps must be >= 1, got {num_steps!r}")
        if config.get("invert_sigmas", False):
            raise ValueError(f"{cls_name} with invert_sigmas=True is not supported")
        self.scheduler = getattr(diffusers, cls_name).from_config(config)
        self.name = cls_name
        self.space = "flow"
        self.stateful = False
        kw: dict = {}
        if mu is not None:
            kw["mu"] = float(mu)
        if sigmas is not None:
            kw["sigmas"] = list(sigmas)
        elif self.scheduler.config.get("use_dynamic_shifting", False):
            if mu is None:
                raise ValueError(f"{cls_name} uses dynamic shifting: pass mu (FLUX computes it "
                                 "from the image size)")
            # FLUX's pipeline hands these sigmas with mu
            import numpy as np

            kw["sigmas"] = np.linspace(1.0, 1 / int(num_steps), int(num_steps)).tolist()
        self.scheduler.set_timesteps(int(num_steps), **kw)
        self.timesteps = [float(t) for t in self.scheduler.timesteps]
        self.sigmas = [float(v) for v in self.scheduler.sigmas]
        self.num_train_timesteps = int(self.scheduler.config.num_train_timesteps)
        self.stochastic = bool(self.scheduler.config.get("stochastic_sampling", False))
        self.generator = None
        # x_T = unit noise (flow pipelines do not scale it): y_0 = x_T / s(sigma_0)
        self.initial_noise_scale = 1.0 / flow_level(self.sigmas[0])[1]

    def _abar_at(self, k: int) -> float:
        return flow_level(self.sigmas[k] if k < len(self.sigmas) else 0.0)[2]

    def steps(self, eta: float = 0.0) -> list:
        from syncsde.strategies import StepInfo

        n = len(self.timesteps)
        return [StepInfo(k, t, self.timesteps[k + 1] if k + 1 < n else 0.0, self._abar_at(k),
                         self._abar_at(k + 1), eta, list(self.timesteps))
                for k, t in enumerate(self.timesteps)]

    def callback_scale(self, info) -> float:
        return 1.0 / flow_level(self.sigmas[info.index + 1])[1]

    def step(self, y, eps, info, noise, out=None):
        k = info.index
        sigma, sigma_next = self.sigmas[k], self.sigmas[k + 1]
        _, s_t, a_t = flow_level(sigma)
        _, s_n, _ = flow_level(sigma_next)
        yf = y.float()
        x0 = (yf - math.sqrt(1.0 - a_t) * eps.float()) / math.sqrt(a_t)  # Tweedie, eq. of flow_level
        x = yf * s_t
        if self.stochastic:
            z = torch.randn(x.shape, generator=self.generator, dtype=torch.float32).to(x.device)
            x_next = (1.0 - sigma_next) * x0 + sigma_next * z
        else:
            v = (x - x0) / sigma
            x_next = x + (sigma_next - sigma) * v
        y_next = (x_next / s_n).to(y.dtype)
        if out is not None:
            out.copy_(y_next)
            return out
        return y_next
