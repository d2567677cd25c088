"""Region prompts on a canvas of any size: K regions (masks or boxes), each with a prompt and a
weight, plus a background prompt; windows of the model's size where the canvas is larger.

Layers and views. Layer 0 is the background prompt, layers 1..K the region prompts, and (for
SyncSDE) layer K+1 the combined trajectory, which is the answer. Every layer is seen through
the same grid of windows, so view ``i = l * n_windows + w`` is window ``w`` of layer ``l`` with
layer ``l``'s prompt. A canvas of the model's size has one window: then K = 1 is exactly the
three-trajectory mask task (:func:`~syncsde.tasks.masked_problem`) and K = 0 plain generation.

SyncSDE (Explicit sources, generalizing the mask task). With region masks ``B_k`` in [0, 1]
and weights ``w_k``, the canvas weight maps of the combined layer are

    A_0 = clamp(1 - sum_k B_k, 0, 1),   A_k = w_k B_k / sum_j w_j B_j * min(1, sum_j B_j),

(a partition of unity: a pixel in several regions is shared by their weights). Region layer
``k`` is pulled to the background outside its region (weight ``1 - B_k``); the combined layer
to the background on ``A_0`` and to region layer ``k`` on ``A_k``; both inside the same window.
Within every layer, window ``w`` is also pulled to the on-top composite of the earlier windows
of that layer on their overlap (the wide-image rule, ``EarlierViews``). Per pixel the reference
is the weight-normalised mean of all sources and the mask their summed weight capped at 1 (a
pixel never gets more than one full pull; the cap only binds where a window overlap meets a
region pull).

MultiDiffusion's region rule. The canvas at each step is the weighted average of all views,
``X = sum_i f_i^T(W_i x_i) / sum_i f_i^T(W_i)``, with ``W`` = ``A_0`` cropped for background
windows and ``w_k B_k`` cropped for region windows (MultiDiffusion's region-based code: the
background mask is ``1 - sum of region masks``, clamped at 0). Options:
``feather`` blurs the region masks with a Gaussian of that many latent pixels;
``gaussian=True`` multiplies every window's weights by Mixture of Diffusers' Gaussian over the
window, ``exp(-((x - c)/w)^2 / (2 var))`` per axis (var 0.01, c the window centre);
bootstrapping (:class:`RegionBootstrap`, MultiDiffusion paper section 4.2) replaces every region
view outside its region by a constant random colour noised to the current level during the
first steps, so a region's prompt is drawn inside its region.
"""
from __future__ import annotations

import math
import os
import tomllib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
import torch.nn.functional as F

from syncsde.correlation import Correlation, mask_shape
from syncsde.sampler import Problem
from syncsde.strategies import Strategy, SyncSDE
from syncsde.views import WindowViews, _int_tuple, window_offsets

__all__ = ["Region", "regions_problem", "RegionCorrelation", "RegionBootstrap", "Layout",
           "LayoutRegion", "load_layout", "parse_layout", "region_weights", "regions_image",
           "gaussian_window"]


# ---- the problem --------------------------------------------------------------------------
@dataclass
class Region:
    """One region of a :func:`regions_problem`: a mask ``[H, W]`` in [0, 1] at canvas (latent)
    resolution, its condition (prompt), and its weight (> 0)."""

    mask: torch.Tensor
    cond: Any
    weight: float = 1.0


def _check_region_mask(m: Any, H: int, W: int, k: int) -> torch.Tensor:
    t = torch.as_tensor(m, dtype=torch.float32)
    while t.dim() > 2 and t.shape[0] == 1:
        t = t[0]
    if tuple(t.shape) != (H, W):
        raise ValueError(f"regions[{k}].mask has shape {tuple(torch.as_tensor(m).shape)}; expected "
                         f"({H}, {W}) (the canvas size)")
    if not torch.isfinite(t).all() or (t < 0).any() or (t > 1).any():
        raise ValueError(f"regions[{k}].mask values must lie in [0, 1]")
    if not (t > 0).any():
        raise ValueError(f"regions[{k}].mask selects no pixel")
    return t


def gaussian_blur(m: torch.Tensor, sigma: float) -> torch.Tensor:
    """``m [H, W]`` blurred by a separable Gaussian of ``sigma`` pixels (edges replicated)."""
    if sigma <= 0:
        return m
    r = max(1, int(math.ceil(3 * sigma)))
    x = torch.arange(-r, r + 1, dtype=torch.float32)
    k = torch.exp(-0.5 * (x / sigma) ** 2)
    k = k / k.sum()
    t = m[None, None]
    t = F.conv2d(F.pad(t, (r, r, 0, 0), mode="replicate"), k.view(1, 1, 1, -1))
    t = F.conv2d(F.pad(t, (0, 0, r, r), mode="replicate"), k.view(1, 1, -1, 1))
    return t[0, 0].clamp(0, 1)


def gaussian_window(h: int, w: int, var: float = 0.01) -> torch.Tensor:
    """Mixture of Diffusers' tile weights ``[h, w]``: per axis
    ``exp(-((x - (n-1)/2) / n)^2 / (2 var)) / sqrt(2 pi var)``, multiplied."""
    def axis(n):
        x = torch.arange(n, dtype=torch.float64)
        return torch.exp(-((x - (n - 1) / 2) / n) ** 2 / (2 * var)) / math.sqrt(2 * math.pi * var)
    return (axis(h)[:, None] * axis(w)[None, :]).float()


def region_weights(masks: Sequence[torch.Tensor], weights: Sequence[float]) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """``(A_0, [A_1..A_K])``: the combined layer's partition of unity (module docstring)."""
    if not masks:
        raise ValueError("region_weights needs at least one region")
    B = torch.stack(list(masks))
    wB = B * torch.tensor([float(w) for w in weights]).view(-1, 1, 1)
    total = B.sum(0)
    a0 = (1 - total).clamp(0, 1)
    share = torch.where(wB.sum(0) > 0, wB / wB.sum(0).clamp_min(1e-30), torch.zeros_like(wB))
    return a0, list(share * total.clamp(max=1))


class RegionCorrelation(Correlation):
    """SyncSDE's correlation of a region problem: per layer, Explicit sources in the same window
    (canvas weight maps, cropped) plus the pull of every window to the earlier windows of its
    layer on their overlap. Reference = weight-normalised mean, mask = summed weight capped at 1.
    """

    sequential = True

    def __init__(self, layers: int, windows: int,
                 sources: dict[int, Sequence[tuple[int, torch.Tensor]]], chain: bool = True):
        for l, src in sources.items():
            if not 0 < l < layers:
                raise ValueError(f"layer {l} out of range (1..{layers - 1})")
            for j, _ in src:
                if not 0 <= j < l:
                    raise ValueError(f"layer {l} may only be pulled to earlier layers, got {j}")
        self.layers, self.windows = int(layers), int(windows)
        self.sources = sources
        self.chain = bool(chain)

    def _crops(self, views: WindowViews, like: torch.Tensor):
        """``{(l, j): [n_windows, 1, h, w]}`` weight crops of the canvas maps."""
        nw = self.windows
        sub = WindowViews((1, *views.canvas_shape[1:]), views.size, views.offsets[:nw], views.circular)
        out = {}
        for l, src in self.sources.items():
            for j, a in src:
                a = torch.as_tensor(a, dtype=like.dtype, device=like.device)
                out[l, j] = sub.forward(a.reshape(1, *a.shape[-2:]).contiguous())
        return out

    def _walk(self, y: torch.Tensor, views: WindowViews, put) -> None:
        nw = self.windows
        for l in range(self.layers):
            canvas = views.canvas_zeros(y)
            for w in range(1, nw):
                views.paste_one_on_top(l * nw + w - 1, y[l * nw + w - 1], canvas)
                put(l * nw + w, views.forward_one(l * nw + w, canvas))

    def _overlaps(self, views, like):
        n = views.num_views
        o = torch.zeros((n, 1, *views.view_shape[1:]), dtype=like.dtype, device=like.device)
        if self.chain and self.windows > 1:
            ones = torch.ones((n, *views.view_shape), dtype=like.dtype, device=like.device)

            def put(i, seen):
                o[i, 0] = (seen[0] > 0).to(like.dtype)
            self._walk(ones, views, put)
        return o

    def masks(self, views, like):
        nw = self.windows
        m = self._overlaps(views, like)
        for (l, _), a in self._crops(views, like).items():
            m[l * nw:(l + 1) * nw] += a
        return m.clamp(max=1)

    def references(self, y, views):
        nw = self.windows
        shape = mask_shape(y)
        num = torch.zeros_like(y)
        den = torch.zeros(shape, dtype=y.dtype, device=y.device)
        for (l, j), a in self._crops(views, y).items():
            a = a.reshape((nw,) + shape[1:])
            num[l * nw:(l + 1) * nw] += a * y[j * nw:(j + 1) * nw]
            den[l * nw:(l + 1) * nw] += a
        if self.chain and nw > 1:
            o = self._overlaps(views, y).reshape(shape)

            def put(i, seen):
                num[i] += o[i] * seen
                den[i] += o[i]
            self._walk(y, views, put)
        return torch.where(den > 0, num / den.clamp_min(1e-30), y)


def regions_problem(canvas_shape: Sequence[int], regions: Sequence[Region], background: Any,
                    *, combined: Any = None, negative: Any = None,
                    window: Sequence[int] | int | None = None,
                    stride: Sequence[int] | int | None = None, combined_layer: bool | None = None,
                    feather: float = 0.0, gaussian: bool = False, gaussian_var: float = 0.01,
                    init: str = "canvas") -> Problem:
    """Problem for a canvas ``(C, H, W)`` with ``regions`` (:class:`Region`), a ``background``
    condition, windows ``window`` every ``stride`` (default: one window = the canvas; stride
    window/2), and the combined layer's condition ``combined`` (default: the background's).

    ``combined_layer`` (default: when there is a region) adds the combined trajectory SyncSDE
    answers with; canonical strategies (MultiDiffusion...) give it weight 0, so leave it out for
    them (the one-call :func:`regions_image` does). ``init="canvas"`` starts every view from
    one canvas noise map (all layers alike), ``"independent"`` draws every view's noise on its
    own (the authors' mask task)."""
    C, H, W = _int_tuple(canvas_shape, 3, "canvas_shape")
    win = (H, W) if window is None else _int_tuple((window, window) if isinstance(window, int)
                                                   else window, 2, "window")
    h, w = min(win[0], H), min(win[1], W)
    if stride is None:
        st = (max(1, h // 2), max(1, w // 2))
    else:
        st = _int_tuple((stride, stride) if isinstance(stride, int) else stride, 2, "stride")
    if min(st) < 1:
        raise ValueError(f"stride must be >= 1, got {st}")
    if not (isinstance(feather, (int, float)) and math.isfinite(feather) and feather >= 0):
        raise ValueError(f"feather must be a finite number >= 0, got {feather!r}")
    if not (isinstance(gaussian_var, (int, float)) and gaussian_var > 0):
        raise ValueError(f"gaussian_var must be > 0, got {gaussian_var!r}")
    regions = list(regions)
    masks, ws, conds = [], [], []
    for k, r in enumerate(regions):
        if not isinstance(r, Region):
            raise TypeError(f"regions[{k}] must be a Region, got {type(r).__name__}")
        wt = r.weight
        if isinstance(wt, bool) or not isinstance(wt, (int, float)) or not (math.isfinite(wt) and wt > 0):
            raise ValueError(f"regions[{k}].weight must be a finite number > 0, got {wt!r}")
        masks.append(gaussian_blur(_check_region_mask(r.mask, H, W, k), float(feather)))
        ws.append(float(wt))
        conds.append(r.cond)
    K = len(regions)
    if combined_layer is None:
        combined_layer = K > 0
    tops, lefts = window_offsets(H, h, st[0]), window_offsets(W, w, st[1])
    grid = [(t, l) for t in tops for l in lefts]
    nw = len(grid)
    layer_conds = [background] + conds + ([background if combined is None else combined]
                                          if combined_layer else [])
    L = len(layer_conds)
    views = WindowViews((C, H, W), (h, w), torch.tensor(grid * L, dtype=torch.int64))
    # canonical weights: MultiDiffusion's region rule (combined layer 0)
    a_bg = (1 - torch.stack(masks).sum(0)).clamp(0, 1) if K else torch.ones(H, W)
    canvas_w = [a_bg] + [wk * m for wk, m in zip(ws, masks)] + ([torch.zeros(H, W)] if combined_layer else [])
    sub = WindowViews((1, H, W), (h, w), torch.tensor(grid, dtype=torch.int64))
    g = gaussian_window(h, w, gaussian_var) if gaussian else None
    wv = []
    for a in canvas_w:
        c = sub.forward(a[None].contiguous())  # [nw, 1, h, w]
        wv.append(c * g if g is not None else c)
    weights = torch.cat(wv)
    # SyncSDE: Explicit sources per layer (same window) + the earlier-window chain
    sources: dict[int, list] = {k: [(0, 1 - masks[k - 1])] for k in range(1, K + 1)}
    if combined_layer and K:
        a0, shares = region_weights(masks, ws)
        sources[K + 1] = [(0, a0)] + [(k + 1, s) for k, s in enumerate(shares)]
    elif combined_layer:
        sources[1] = [(0, torch.ones(H, W))]
    corr = RegionCorrelation(L, nw, sources, chain=True)
    cond = [c for c in layer_conds for _ in range(nw)]
    neg = None if negative is None else [negative] * len(cond)
    p = Problem(views, cond, neg, correlation=corr, weights=weights, init=init)
    p.region_info = dict(layers=L, windows=nw, regions=K, combined_layer=bool(combined_layer),
                         window=(h, w), stride=tuple(st), masks=masks)
    return p


# ---- bootstrapping (MultiDiffusion paper, section 4.2) --------------------------------------
class RegionBootstrap(Strategy):
    """Wraps a canonical strategy (canvas init: MultiDiffusion, SyncTweedies...). For the first
    ``steps`` model calls after the first, every region view's pixels outside its region are
    replaced by a constant colour noised to the current level,
    ``z = sqrt(abar) c + sqrt(1 - abar) n`` (``c`` one of ``backgrounds`` drawn at random per view
    and step, ``n`` fresh noise), so the model draws the region's prompt inside the region. Only
    the model input changes: the canonical average weighs region views by their masks, so the
    replaced pixels never reach the canvas. (The first model call sees the initial noise, where
    the colour's share ``sqrt(abar_T)`` is ~0.07 for Stable Diffusion.)"""

    def __init__(self, inner: Strategy, view_masks: torch.Tensor, region_views: Sequence[int],
                 backgrounds: torch.Tensor, steps: int, seed: int = 0):
        if inner.init != "canvas":
            raise ValueError(f"bootstrapping needs a canonical strategy (multidiffusion, "
                             f"synctweedies, ...); {inner.name!r} keeps its own trajectories")
        self.inner = inner
        self.name = inner.name
        self.init = inner.init
        self.output_rule = inner.output_rule
        self.any_solver = inner.any_solver
        self.view_masks = view_masks
        self.region_views = [int(i) for i in region_views]
        self.backgrounds = backgrounds
        self.steps = int(steps)
        self.seed = int(seed)

    def prepare(self, run):
        self.inner.prepare(run)
        self._gen = torch.Generator().manual_seed(self.seed + 7919)
        m = self.view_masks.to(dtype=run.dtype, device=run.device)
        self._m = m.reshape((m.shape[0],) + (1,) * (run.batch_dims + 1) + tuple(m.shape[-2:]))

    def step(self, run, y, eps, info, noise):
        y = self.inner.step(run, y, eps, info, noise)
        if info.index + 1 < self.steps and self.region_views and info.abar_s < 1.0:
            for i in self.region_views:
                k = int(torch.randint(len(self.backgrounds), (1,), generator=self._gen))
                n = torch.randn(y[i].shape, generator=self._gen, dtype=torch.float32).to(y)
                c = self.backgrounds[k].to(y)
                z = math.sqrt(info.abar_s) * c + math.sqrt(1 - info.abar_s) * n
                y[i] = self._m[i] * y[i] + (1 - self._m[i]) * z
        return y

    def __repr__(self):
        return f"RegionBootstrap({self.inner!r}, steps={self.steps}, seed={self.seed})"


# ---- layout files -------------------------------------------------------------------------
@dataclass
class LayoutRegion:
    prompt: str
    box: tuple[int, int, int, int] | None = None  # left, top, right, bottom in pixels
    mask: str | None = None                       # path to a PNG (white = region)
    weight: float = 1.0


@dataclass
class Layout:
    """A region layout (pixels): canvas ``width`` x ``height``, a ``background`` prompt, the
    ``regions``, and options. See docs/models/regions.md for the file format."""

    width: int
    height: int
    background: str
    regions: list[LayoutRegion] = field(default_factory=list)
    prompt: str | None = None        # the combined trajectory's prompt (default: background)
    negative: str | None = None
    window: int | None = None        # pixels (default: the model's size)
    stride: int | None = None        # pixels (default: window / 2)
    feather: float = 0.0             # latent pixels
    gaussian: bool = False
    bootstrap: float = 0.0           # fraction of the steps
    control: str | None = None       # a control image path (ControlNet models)
    base_dir: str = "."


_LAYOUT_KEYS = {"width", "height", "background", "regions", "prompt", "negative", "window",
                "stride", "feather", "gaussian", "bootstrap", "control"}
_REGION_KEYS = {"prompt", "box", "mask", "weight"}


def _field_int(d, key, where, required=False, minimum=1):
    if key not in d or d[key] is None:
        if required:
            raise ValueError(f"layout: missing field '{where}{key}'")
        return None
    v = d[key]
    if isinstance(v, bool) or not isinstance(v, int) or v < minimum:
        raise ValueError(f"layout field '{where}{key}' must be an integer >= {minimum}, got {v!r}")
    return v


def _field_num(d, key, where, default, lo=0.0, hi=None, strict=False):
    v = d.get(key, default)
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or \
            (v <= lo if strict else v < lo) or (hi is not None and v > hi):
        rng = f"> {lo}" if strict else f">= {lo}"
        rng += f" and <= {hi}" if hi is not None else ""
        raise ValueError(f"layout field '{where}{key}' must be a finite number {rng}, got {v!r}")
    return float(v)


def _field_str(d, key, where, required=False):
    v = d.get(key)
    if v is None:
        if required:
            raise ValueError(f"layout: missing field '{where}{key}'")
        return None
    if not isinstance(v, str) or (required and not v.strip()):
        raise ValueError(f"layout field '{where}{key}' must be a non-empty string, got {v!r}")
    return v


def parse_layout(data: Any, base_dir: str | os.PathLike = ".") -> Layout:
    """A :class:`Layout` from a dict (as read from JSON / TOML); every error names the field."""
    if not isinstance(data, dict):
        raise ValueError(f"layout must be a table / object, got {type(data).__name__}")
    unknown = sorted(set(data) - _LAYOUT_KEYS)
    if unknown:
        raise ValueError(f"layout: unknown field(s) {unknown}; expected some of {sorted(_LAYOUT_KEYS)}")
    width = _field_int(data, "width", "", required=True)
    height = _field_int(data, "height", "", required=True)
    bg = _field_str(data, "background", "", required=True)
    regs = data.get("regions", [])
    if not isinstance(regs, list):
        raise ValueError(f"layout field 'regions' must be a list, got {type(regs).__name__}")
    out = []
    for k, r in enumerate(regs):
        where = f"regions[{k}]."
        if not isinstance(r, dict):
            raise ValueError(f"layout field 'regions[{k}]' must be a table / object, got {r!r}")
        unknown = sorted(set(r) - _REGION_KEYS)
        if unknown:
            raise ValueError(f"layout: unknown field(s) {unknown} in regions[{k}]; expected some "
                             f"of {sorted(_REGION_KEYS)}")
        prompt = _field_str(r, "prompt", where, required=True)
        weight = _field_num(r, "weight", where, 1.0, 0.0, strict=True)
        box, mask = r.get("box"), r.get("mask")
        if (box is None) == (mask is None):
            raise ValueError(f"layout field '{where[:-1]}' needs exactly one of 'box' or 'mask'")
        if box is not None:
            if not isinstance(box, list) or len(box) != 4 or \
                    any(isinstance(v, bool) or not isinstance(v, int) for v in box):
                raise ValueError(f"layout field '{where}box' must be 4 integers [left, top, right, "
                                 f"bottom] in pixels, got {box!r}")
            x0, y0, x1, y1 = box
            if not (0 <= x0 < x1 <= width and 0 <= y0 < y1 <= height):
                raise ValueError(f"layout field '{where}box' {box} must satisfy 0 <= left < right <= "
                                 f"{width} and 0 <= top < bottom <= {height}")
            box = (x0, y0, x1, y1)
        else:
            mask = _field_str(r, "mask", where, required=True)
        out.append(LayoutRegion(prompt, box, mask, weight))
    window = _field_int(data, "window", "")
    stride = _field_int(data, "stride", "")
    gaussian = data.get("gaussian", False)
    if not isinstance(gaussian, bool):
        raise ValueError(f"layout field 'gaussian' must be true or false, got {gaussian!r}")
    return Layout(width, height, bg, out, _field_str(data, "prompt", ""),
                  _field_str(data, "negative", ""), window, stride,
                  _field_num(data, "feather", "", 0.0), gaussian,
                  _field_num(data, "bootstrap", "", 0.0, 0.0, 1.0), _field_str(data, "control", ""),
                  str(base_dir))


def load_layout(path: str | os.PathLike) -> Layout:
    """A layout from a ``.json`` or ``.toml`` file (mask / control paths relative to it)."""
    p = Path(path)
    if not p.is_file():
        raise ValueError(f"layout {str(p)!r}: no such file")
    text = p.read_text(encoding="utf-8")
    try:
        if p.suffix.lower() == ".toml":
            data = tomllib.loads(text)
        elif p.suffix.lower() == ".json":
            data = json.loads(text)
        else:
            raise ValueError(f"layout {str(p)!r}: expected a .json or .toml file")
    except (json.JSONDecodeError, tomllib.TOMLDecodeError) as e:
        raise ValueError(f"layout {str(p)!r}: not valid {p.suffix[1:].upper()} ({e})") from None
    return parse_layout(data, p.parent)


def _latent_masks(layout: Layout, f: int) -> list[torch.Tensor]:
    """Region masks at latent resolution: boxes area-averaged (soft where a box edge is not
    on the VAE grid), mask files binarized and nearest-resized (:func:`load_mask`)."""
    from syncsde.pipelines import load_mask

    h, w = layout.height // f, layout.width // f
    out = []
    for k, r in enumerate(layout.regions):
        if r.box is not None:
            x0, y0, x1, y1 = r.box
            m = torch.zeros(layout.height, layout.width)
            m[y0:y1, x0:x1] = 1
            m = F.avg_pool2d(m[None, None], f)[0, 0] if f > 1 else m
            if not (m > 0).any():
                raise ValueError(f"layout field 'regions[{k}].box' is empty")
        else:
            path = Path(r.mask)
            if not path.is_absolute():
                path = Path(layout.base_dir) / path
            try:
                m = load_mask(path, (h, w))
            except ValueError as e:
                raise ValueError(f"layout field 'regions[{k}].mask': {e}") from None
        out.append(m)
    return out


# ---- one call -----------------------------------------------------------------------------
def regions_image(model, layout: Layout | dict | str | os.PathLike, *,
                  strategy: str | Strategy = "syncsde", inv_lambda: float = 5.0,
                  num_inference_steps: int = 50, guidance_scale: float = 7.5, seed: int = 0,
                  progress: bool = True, max_batch: int | None = None, control_image: Any = None,
                  controlnet_scale: float | None = None, init: str = "canvas",
                  scheduler: Any = "pipeline", strategy_options: dict | None = None,
                  callback: Callable | None = None):
    """A region-prompt image from a layout (a :class:`Layout`, a dict, or a JSON / TOML path) on
    any SD-like model (Stable Diffusion, SD + ControlNet, the scenes model).

    ``strategy="syncsde"`` runs the layered SyncSDE problem (answer: the combined layer);
    canonical strategies run MultiDiffusion's region rule without the combined layer.
    ``control_image`` (or the layout's ``control``) needs a ControlNet model: it is resized to
    the canvas and cropped per window. Returns a :class:`syncsde.pipelines.PipelineResult`
    (``extras["masks"]``: the latent region masks)."""
    from syncsde.denoisers.diffusers_models import ControlNetDenoiser, load_image, pil_to_tensor, to_pil
    from syncsde.pipelines import PipelineResult, make_task_strategy, sampling_schedule
    from syncsde.sampler import sample
    from syncsde.tasks.control_windows import with_window_control, with_window_crop_conditions
    from syncsde.tasks.runner import resolve_denoiser

    if not isinstance(layout, Layout):
        layout = parse_layout(layout) if isinstance(layout, dict) else load_layout(layout)
    den = resolve_denoiser(model)
    if not hasattr(den, "vae_scale_factor") or getattr(den, "unet", None) is None:
        raise TypeError("regions_image needs an SD-like model (a pipeline, a model id, or its denoiser)")
    f = int(den.vae_scale_factor)
    if layout.width % f or layout.height % f:
        raise ValueError(f"layout width and height must be multiples of {f} (the VAE factor), got "
                         f"{layout.width}x{layout.height}")
    h, w = layout.height // f, layout.width // f
    native = int(den.sample_size)
    win = native if layout.window is None else layout.window // f
    if win < 1:
        raise ValueError(f"layout field 'window' must be at least {f} px")
    st = None if layout.stride is None else max(1, layout.stride // f)
    strat = make_task_strategy(strategy, inv_lambda, strategy_options)
    if strat.name == "collage":
        raise ValueError("collage composes one prompt over a chain of windows; it has no region rule")
    correlated = isinstance(strat, SyncSDE)
    masks = _latent_masks(layout, f)
    regions = [Region(m, r.prompt, r.weight) for m, r in zip(masks, layout.regions)]
    C = den.unet.config.in_channels
    problem = regions_problem((C, h, w), regions, layout.background, combined=layout.prompt,
                              negative=layout.negative, window=(min(win, h), min(win, w)), stride=st,
                              combined_layer=correlated and bool(regions), feather=layout.feather,
                              gaussian=layout.gaussian, init=init)
    info = problem.region_info
    with_window_crop_conditions(den, problem, f)  # SDXL: each window's crop in add_time_ids
    if control_image is None and layout.control is not None:
        path = Path(layout.control)
        control_image = path if path.is_absolute() else Path(layout.base_dir) / path
    if control_image is not None:
        if not isinstance(den, ControlNetDenoiser):
            raise ValueError("a control image needs a ControlNet model (e.g. --model with kind "
                             "sd-controlnet)")
        ctrl = control_image
        if not isinstance(ctrl, torch.Tensor):
            ctrl = pil_to_tensor(load_image(ctrl, (layout.width, layout.height)))
        elif tuple(ctrl.shape[-2:]) != (layout.height, layout.width):
            ctrl = F.interpolate(ctrl.float().reshape(1, -1, *ctrl.shape[-2:]),
                                 (layout.height, layout.width), mode="bilinear",
                                 align_corners=False)[0]
        with_window_control(problem, ctrl, f, controlnet_scale)
    if layout.bootstrap > 0:
        nw = info["windows"]
        region_views = list(range(nw, (1 + len(regions)) * nw))
        gen = torch.Generator().manual_seed(int(seed) + 104729)
        colours = torch.rand((8, 3, 1, 1), generator=gen).expand(8, 3, info["window"][0] * f,
                                                                  info["window"][1] * f)
        bgs = den.encode(colours.contiguous(), sample=False).float().cpu()
        view_masks = torch.cat([problem.weights[:nw].new_ones(nw, 1, *info["window"])] +
                               [WindowViews((1, h, w), info["window"], problem.views.offsets[:nw]
                                            ).forward(m[None].contiguous()) for m in info["masks"]])
        strat = RegionBootstrap(strat, view_masks, region_views, bgs,
                                int(round(layout.bootstrap * num_inference_steps)), seed)
    sched = sampling_schedule(den, num_inference_steps, scheduler)
    cfg = float(guidance_scale) if guidance_scale > 1 else 1.0
    res = sample(problem, den, strat, schedule=sched, guidance_scale=cfg, seed=seed,
                 device=getattr(den, "device", "cpu"), progress=progress, max_batch=max_batch,
                 callback=callback)
    latents = res.canvas
    tensors = den.decode(latents[None]) if getattr(den, "vae", None) is not None else None
    images = to_pil(tensors) if tensors is not None else []
    settings = dict(task="regions", model=str(getattr(getattr(den.unet, "config", None), "_name_or_path", "")
                                              or type(den.unet).__name__),
                    width=layout.width, height=layout.height, background=layout.background,
                    prompt=layout.prompt, negative=layout.negative,
                    regions=[dict(prompt=r.prompt, box=r.box, mask=r.mask, weight=r.weight)
                             for r in layout.regions],
                    window=info["window"][1] * f, stride=info["stride"][1] * f,
                    feather=layout.feather, gaussian=layout.gaussian, bootstrap=layout.bootstrap,
                    strategy=res.strategy, inv_lambda=inv_lambda,
                    num_inference_steps=num_inference_steps, guidance_scale=guidance_scale,
                    seed=seed, init=init, control=control_image is not None,
                    num_views=problem.views.num_views, windows=info["windows"],
                    layers=info["layers"])
    return PipelineResult(images, tensors, latents, res, settings,
                          {"masks": masks, "problem": problem})
