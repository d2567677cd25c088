"""MDM-format motion denoisers (Motion Diffusion Model, Tevet et al. 2023).

An MDM model is called as ``model(x [B, F, 1, L], timesteps [B], y)`` with ``y`` a dict
(``mask`` bool ``[B, 1, 1, L]``, ``lengths`` ``[B]``, ``text`` list of strings, ``uncond`` to
force the null condition) and predicts the clean sample x0 ("predict_xstart"). F = 263 for
HumanML3D features. :class:`MDMDenoiser` adapts it to the denoiser protocol: conditions are
text prompts (``None`` = unconditional) or dicts of extra ``y`` entries; the sampler's CFG on the
x0 output equals MDM's ``ClassifierFreeSampleModel``.

Also here: the cosine schedule of MDM (:meth:`MDMDenoiser.schedule`), the first-step guard
HumanML3D joint recovery (:func:`recover_joints`) and a stick-figure
GIF writer (:func:`save_stick_figure_gif`).
"""
from __future__ import annotations

import os
from typing import Any, Sequence

import numpy as np

import torch

__all__ = ["MDMDenoiser", "mdm_schedule", "recover_joints",
           "T2M_KINEMATIC_CHAIN", "save_stick_figure_gif"]


def mdm_schedule(num_steps: int = 50, diffusion_steps: int = 1000):
    """DDIM over MDM's cosine schedule (``diffusion_steps`` = the model's T: 1000 for the
    original checkpoints, 50 for the fast ones), leading spacing, final abar 1."""
    from syncsde import schedules
    from syncsde.sampler import SamplingSchedule

    abar = schedules.alphas_cumprod("cosine", int(diffusion_steps))
    ts = schedules.ddim_timesteps(int(num_steps), int(diffusion_steps), spacing="leading")
    return SamplingSchedule(abar, ts, 1.0, int(diffusion_steps))


def _read_state_dict(path: str) -> dict:
    """A state dict from safetensors or a torch file, never unpickling arbitrary objects; a
    damaged or foreign file is one ``ValueError`` naming it."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"checkpoint {path!r} does not exist")
    try:
        if str(path).endswith(".safetensors"):
            from safetensors.torch import load_file

            return load_file(path)
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - torch/safetensors raise many types for bad files
        raise ValueError(f"checkpoint {path!r} is not a readable weights file (only tensors and "
                         f"plain containers are loaded): {str(e).splitlines()[0][:200]}") from None


class MDMDenoiser:
    """Adapter for an MDM-format model (x0 prediction).

    ``text_key`` names the ``y`` entry for prompts (``"text"``); conditions that are dicts are
    merged into ``y`` (e.g. ``{"text": "...", "action": ...}``). Unconditional items (``None``)
    run in a separate model call with ``y["uncond"] = True``, as MDM's CFG wrapper does.
    """

    prediction_type = "sample"

    def __init__(self, model, device=None, dtype=None, diffusion_steps: int = 1000,
                 text_key: str = "text", extra_y: dict | None = None):
        self.model = model
        self._device = None if device is None else torch.device(device)
        self._dtype = dtype
        self.diffusion_steps = int(diffusion_steps)
        self.text_key = text_key
        self.extra_y = dict(extra_y or {})
        self.calls = 0

    @property
    def device(self) -> torch.device:
        if self._device is not None:
            return self._device
        try:
            return next(self.model.parameters()).device
        except (StopIteration, AttributeError):
            return torch.device("cpu")

    @property
    def dtype(self) -> torch.dtype:
        if self._dtype is not None:
            return self._dtype
        try:
            return next(self.model.parameters()).dtype
        except (StopIteration, AttributeError):
            return torch.float32

    def schedule(self, num_steps: int = 50):
        return mdm_schedule(num_steps, self.diffusion_steps)

    @classmethod
    def from_checkpoint(cls, build_model, checkpoint: str, device=None, strict: bool = False,
                        **kw) -> "MDMDenoiser":
        """``build_model()`` makes the (MDM-repo) module; ``checkpoint`` is its ``model*.pt``
        (read with ``weights_only=True``: tensors and plain containers only, no code runs) or a
        ``.safetensors`` file. MDM checkpoints omit the frozen CLIP weights, hence
        ``strict=False``."""
        model = build_model()
        state = _read_state_dict(checkpoint)
        if isinstance(state, dict) and "model" in state and isinstance(state["model"], dict):
            state = state["model"]
        missing, unexpected = model.load_state_dict(state, strict=strict)
        bad = [k for k in missing if not k.startswith("clip_model.")]
        if bad:
            raise ValueError(f"checkpoint {checkpoint} lacks {len(bad)} weights, e.g. {bad[:3]}")
        model.eval()
        if device is not None:
            model.to(device)
        return cls(model, device=device, **kw)

    def _y(self, conds: list, n: int, length: int, dev) -> dict:
        y = dict(self.extra_y)
        y["mask"] = torch.ones((n, 1, 1, length), dtype=torch.bool, device=dev)
        y["lengths"] = torch.full((n,), length, dtype=torch.long, device=dev)
        texts = []
        for c in conds:
            if isinstance(c, dict):
                for k, v in c.items():
                    if k != self.text_key:
                        y.setdefault(k, []).append(v)
                texts.append(c.get(self.text_key, ""))
            else:
                texts.append("" if c is None else c)
        y[self.text_key] = texts
        return y

    @torch.no_grad()
    def __call__(self, x_t: torch.Tensor, t: int, cond: Sequence[Any]) -> torch.Tensor:
        if x_t.dim() != 4 or x_t.shape[2] != 1:
            raise ValueError(f"MDM inputs are [B, features, 1, frames], got {tuple(x_t.shape)}")
        if len(cond) != len(x_t):
            raise ValueError(f"got {len(cond)} conditions for a batch of {len(x_t)}")
        dev = self.device
        x = x_t.to(device=dev, dtype=self.dtype)
        out = torch.empty_like(x)
        uncond = [i for i, c in enumerate(cond) if c is None]
        condi = [i for i, c in enumerate(cond) if c is not None]
        for idx, is_uncond in ((condi, False), (uncond, True)):
            if not idx:
                continue
            sel = torch.tensor(idx, device=dev)
            y = self._y([cond[i] for i in idx], len(idx), x.shape[-1], dev)
            if is_uncond:
                y["uncond"] = True
            ts = torch.full((len(idx),), int(t), dtype=torch.long, device=dev)
            self.calls += 1
            out[sel] = self.model(x[sel], ts, y).to(x.dtype)
        return out.to(device=x_t.device, dtype=x_t.dtype)


# ---- HumanML3D features -> joints ---------------------------------------------------------
T2M_KINEMATIC_CHAIN = [[0, 2, 5, 8, 11], [0, 1, 4, 7, 10], [0, 3, 6, 9, 12, 15],
                       [9, 14, 17, 19, 21], [9, 13, 16, 18, 20]]


def _qrot_y(angle: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Rotate vectors ``v [..., 3]`` about +Y by ``angle`` (broadcast over leading dims)."""
    c, s = np.cos(angle), np.sin(angle)
    x, y, z = v[..., 0], v[..., 1], v[..., 2]
    return np.stack([c * x + s * z, y, -s * x + c * z], axis=-1)


def recover_joints(features: np.ndarray, joints_num: int = 22) -> np.ndarray:
    """HumanML3D ``[L, 263]`` features (de-normalized) -> joint positions ``[L, 22, 3]``.

    Layout: 0 root yaw velocity, 1:3 root XZ velocity in the root frame, 3 root height,
    4:67 the 21 other joints relative to the root in the root-facing frame (then rotations,
    velocities, foot contacts, unused here). The yaw angle a is integrated from frame 0 (the
    dataset stores the root orientation as the quaternion ``(cos a, 0, sin a, 0)``), the root
    velocity rotated to world and integrated, and the local joints rotated back.
    """
    f = np.asarray(features, dtype=np.float64)
    if f.ndim != 2 or f.shape[1] < 4 + (joints_num - 1) * 3:
        raise ValueError(f"expected [frames, 263] HumanML3D features, got {f.shape}")
    L = f.shape[0]
    yaw = np.zeros(L)
    yaw[1:] = np.cumsum(f[:-1, 0])
    vel = np.zeros((L, 3))
    vel[1:, 0] = f[:-1, 1]
    vel[1:, 2] = f[:-1, 2]
    # the root orientation is the quaternion (cos a, 0, sin a, 0), a turn of 2a about +Y;
    # local -> world applies its inverse
    root = np.cumsum(_qrot_y(-2.0 * yaw, vel), axis=0)
    root[:, 1] = f[:, 3]
    local = f[:, 4:4 + (joints_num - 1) * 3].reshape(L, joints_num - 1, 3)
    world = _qrot_y(-2.0 * yaw[:, None], local)
    world[..., 0] += root[:, None, 0]
    world[..., 2] += root[:, None, 2]
    return np.concatenate([root[:, None], world], axis=1)


def save_stick_figure_gif(joints: np.ndarray, path: str, fps: int = 20, size: int = 320,
                          chain: Sequence[Sequence[int]] = T2M_KINEMATIC_CHAIN) -> str:
    """A front-view (X right, Y up) stick-figure animation of ``joints [L, J, 3]`` as a GIF."""
    from PIL import Image, ImageDraw

    j = np.asarray(joints, dtype=np.float64)
    if j.ndim != 3 or j.shape[-1] != 3:
        raise ValueError(f"joints must be [frames, joints, 3], got {j.shape}")
    xs, ys = j[..., 0], j[..., 1]
    lo = np.array([xs.min(), ys.min()])
    span = max(float(xs.max() - xs.min()), float(ys.max() - ys.min()), 1e-6)
    scale = (size - 20) / span
    colors = [(220, 50, 50), (50, 90, 220), (30, 30, 30), (220, 140, 30), (40, 160, 60)]
    frames = []
    for k in range(len(j)):
        im = Image.new("RGB", (size, size), "white")
        d = ImageDraw.Draw(im)
        p = [(10 + (x - lo[0]) * scale, size - 10 - (y - lo[1]) * scale) for x, y in j[k, :, :2]]
        for c, limb in enumerate(chain):
            pts = [p[i] for i in limb if i < len(p)]
            if len(pts) > 1:
                d.line(pts, fill=colors[c % len(colors)], width=3)
        frames.append(im)
    from syncsde.atomic import atomic_save_png

    atomic_save_png(frames[0], path, format="GIF", save_all=True, append_images=frames[1:],
                    duration=int(1000 / fps), loop=0)
    return path
