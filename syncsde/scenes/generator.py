"""Procedural landscapes whose law is stationary along the width.

A scene is drawn from attributes (:class:`SceneSpec`): time of day (sky gradient, stars at
night), ground (grass / sea with reflections / desert / snow), 0-2 ridge layers and the rates of
Poisson processes along x (sun or moon, trees, houses, balloons, boats). Given the spec, every
random quantity is either constant across the width (horizon row, colours) or a stationary
process in x:

- ridge profiles are sums of cosines with uniform random phases (a stationary Gaussian-like
  process; wavelengths in units of the image height);
- objects are homogeneous Poisson processes: centres on ``[-margin, W + margin]`` with rate
  ``rate / H`` per pixel column, so any window of a wide scene has the same law as a scene
  rendered at the window's width;
- stars and pixel noise are iid per pixel.

Hence ``render(spec, H, W)`` cropped to any ``w`` columns has the law of ``render(spec, H, w)``:
the true distribution of a panorama is known (tested in ``tests/test_scenes.py``).

Each rendering comes with labels (what is visible) and per-column truth (horizon row, ridge
heights, object positions): :class:`Scene`.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Sequence

import numpy as np

__all__ = ["TIMES", "GROUNDS", "OBJECTS", "OBJECT_RATES", "SceneSpec", "SceneObject", "Scene",
           "render", "render_batch", "random_spec", "scene_rng", "LABEL_NAMES", "labels_vector"]

TIMES = ("day", "sunset", "night")
GROUNDS = ("grass", "sea", "desert", "snow")
OBJECTS = ("celestial", "trees", "houses", "balloons", "boats")  # celestial = sun (day, sunset) / moon
# Poisson rates per image height of width (expected objects in an H x H window, centres inside).
OBJECT_RATES = {"celestial": 0.7, "trees": 3.0, "houses": 1.2, "balloons": 0.8, "boats": 0.9}
# objects that need land / water under them
LAND_ONLY = ("trees", "houses")
WATER_ONLY = ("boats",)

# classifier labels: one-hot groups then binary presence flags
LABEL_NAMES = ([f"time={t}" for t in TIMES] + [f"ground={g}" for g in GROUNDS]
               + [f"ridges={k}" for k in range(3)] + [f"has_{o}" for o in OBJECTS])

_SKY = {  # (top colour, horizon colour) in RGB [0, 1]
    "day": ((0.20, 0.45, 0.85), (0.65, 0.82, 0.97)),
    "sunset": ((0.25, 0.15, 0.45), (0.98, 0.55, 0.20)),
    "night": ((0.01, 0.02, 0.08), (0.08, 0.12, 0.28)),
}
_GROUND = {  # (near-horizon colour, bottom colour)
    "grass": ((0.35, 0.62, 0.25), (0.15, 0.40, 0.10)),
    "sea": ((0.15, 0.35, 0.60), (0.05, 0.18, 0.40)),
    "desert": ((0.90, 0.78, 0.50), (0.80, 0.60, 0.30)),
    "snow": ((0.92, 0.94, 0.98), (0.78, 0.84, 0.92)),
}
_LIGHT = {"day": 1.0, "sunset": 0.75, "night": 0.3}
_RIDGE = (((0.45, 0.50, 0.62), 0.22, 0.10), ((0.28, 0.32, 0.30), 0.10, 0.07))  # colour, base, amp


@dataclass(frozen=True)
class SceneSpec:
    """The attributes of a scene law (what a prompt fixes)."""

    time: str = "day"
    ground: str = "grass"
    ridges: int = 0
    objects: tuple[str, ...] = ()

    def __post_init__(self):
        if self.time not in TIMES:
            raise ValueError(f"time must be one of {TIMES}, got {self.time!r}")
        if self.ground not in GROUNDS:
            raise ValueError(f"ground must be one of {GROUNDS}, got {self.ground!r}")
        if self.ridges not in (0, 1, 2):
            raise ValueError(f"ridges must be 0, 1 or 2, got {self.ridges!r}")
        objs = tuple(sorted(set(self.objects), key=OBJECTS.index)) if all(
            o in OBJECTS for o in self.objects) else None
        if objs is None:
            bad = [o for o in self.objects if o not in OBJECTS]
            raise ValueError(f"unknown objects {bad}; expected some of {OBJECTS}")
        object.__setattr__(self, "objects", objs)
        if self.ground == "sea" and any(o in LAND_ONLY for o in objs):
            raise ValueError("trees and houses need land: they cannot stand on the sea")
        if self.ground != "sea" and any(o in WATER_ONLY for o in objs):
            raise ValueError("boats need water: use the sea as the ground")

    def rate(self, kind: str) -> float:
        return OBJECT_RATES[kind] if kind in self.objects else 0.0

    def to_dict(self) -> dict:
        return {"time": self.time, "ground": self.ground, "ridges": self.ridges,
                "objects": list(self.objects)}


@dataclass
class SceneObject:
    kind: str          # sun, moon, tree, house, balloon, boat
    x: float           # centre column (pixels, may lie outside the image)
    y: float           # base row (trees, houses, boats) or centre row (sun, moon, balloon)
    size: float        # pixels
    visible_pixels: int = 0
    # the pixels the object covers when drawn (before later objects occlude it); trees,
    # houses, boats and balloons only (what the editing evaluation's background mask needs)
    mask: np.ndarray | None = field(default=None, repr=False, compare=False)


@dataclass
class Scene:
    """One rendering: ``image [H, W, 3]`` float32 in [0, 1] plus its truth."""

    image: np.ndarray
    spec: SceneSpec
    horizon: float                      # row of the horizon (constant along x)
    ridge_tops: np.ndarray              # [2, W] top row of each ridge layer (NaN: no layer)
    objects: list[SceneObject] = field(default_factory=list)

    def visible(self, kind: str, min_pixels: int = 4) -> int:
        """How many objects of ``kind`` show at least ``min_pixels`` pixels."""
        return sum(1 for o in self.objects if o.kind == kind and o.visible_pixels >= min_pixels)

    def labels(self) -> dict:
        cel = "moon" if self.spec.time == "night" else "sun"
        return {"time": self.spec.time, "ground": self.spec.ground, "ridges": self.spec.ridges,
                "has_celestial": self.visible(cel) > 0, "has_trees": self.visible("tree") > 0,
                "has_houses": self.visible("house") > 0,
                "has_balloons": self.visible("balloon") > 0, "has_boats": self.visible("boat") > 0}

    def truth(self) -> dict:
        """Per-column truth as plain JSON-able values."""
        return {"horizon": float(self.horizon),
                "ridge_tops": [[None if np.isnan(v) else float(v) for v in row] for row in self.ridge_tops],
                "objects": [{k: v for k, v in asdict(o).items() if k != "mask"} for o in self.objects], "spec": self.spec.to_dict()}


def labels_vector(labels: dict) -> np.ndarray:
    """The classifier target ``[len(LABEL_NAMES)]`` (one-hot groups, then 0/1 flags)."""
    v = np.zeros(len(LABEL_NAMES), np.float32)
    v[TIMES.index(labels["time"])] = 1
    v[3 + GROUNDS.index(labels["ground"])] = 1
    v[7 + int(labels["ridges"])] = 1
    for i, o in enumerate(OBJECTS):
        v[10 + i] = float(labels[f"has_{o}"])
    return v


def scene_rng(seed: int, index: int = 0) -> np.random.Generator:
    """The generator of scene ``index`` in the stream ``seed`` (independent of batch sizes)."""
    return np.random.default_rng(np.random.SeedSequence([int(seed), int(index)]))


def random_spec(rng: np.random.Generator) -> SceneSpec:
    """A spec from the training prior: time, ground uniform; ridges uniform on 0..2; each
    allowed object kind present with probability 1/2 (1/3 for balloons and boats)."""
    time = TIMES[rng.integers(3)]
    ground = GROUNDS[rng.integers(4)]
    ridges = int(rng.integers(3))
    objs = []
    for o in OBJECTS:
        if (ground == "sea" and o in LAND_ONLY) or (ground != "sea" and o in WATER_ONLY):
            continue
        p = 0.5 if o in ("celestial", "trees", "houses") else (0.5 if o == "boats" else 0.33)
        if rng.random() < p:
            objs.append(o)
    return SceneSpec(time, ground, ridges, tuple(objs))


# ---- drawing helpers ------------------------------------------------------------------------
def _lerp(a, b, t):
    a = np.asarray(a, np.float32)
    b = np.asarray(b, np.float32)
    return a + (b - a) * np.asarray(t, np.float32)[..., None]


def _poisson_centres(rng, rate_per_px: float, W: int, margin: float) -> np.ndarray:
    """Homogeneous Poisson points on [-margin, W + margin)."""
    length = W + 2 * margin
    n = rng.poisson(rate_per_px * length) if rate_per_px > 0 else 0
    return np.sort(rng.uniform(-margin, W - 0 + margin, n)) if n else np.zeros(0)


def _paint(img, mask, colour, alpha=1.0):
    """img[mask] = alpha * colour + (1 - alpha) * img (mask bool or float in [0, 1])."""
    m = (np.asarray(mask, np.float32) * np.asarray(alpha, np.float32))[..., None]
    img *= 1 - m
    img += m * np.asarray(colour, np.float32)


class _Canvas:
    def __init__(self, H: int, W: int):
        self.H, self.W = H, W
        self.yy, self.xx = np.mgrid[0:H, 0:W].astype(np.float32) + 0.5


def _disc(cv: _Canvas, cx, cy, r):
    d2 = (cv.xx - cx) ** 2 + (cv.yy - cy) ** 2
    return np.clip(r + 0.5 - np.sqrt(d2), 0, 1)  # anti-aliased edge


def _triangle(cv: _Canvas, cx, base_y, half_w, height):
    """Isosceles triangle with apex up: base row ``base_y``, apex ``base_y - height``."""
    t = (base_y - cv.yy) / max(height, 1e-6)  # 0 at base, 1 at apex
    inside = (t >= 0) & (t <= 1) & (np.abs(cv.xx - cx) <= half_w * (1 - t))
    return inside


def _rect(cv: _Canvas, x0, x1, y0, y1):
    return (cv.xx >= x0) & (cv.xx < x1) & (cv.yy >= y0) & (cv.yy < y1)


# ---- rendering --------------------------------------------------------------------------------
def render(spec: SceneSpec, height: int = 32, width: int = 32, rng: np.random.Generator | int = 0,
           place: Sequence[tuple] = ()) -> Scene:
    """Renders one scene of ``spec`` at ``height x width``.

    ``rng``: a NumPy generator or a seed. ``place``: extra compact objects at given spots,
    ``(kind, x, y, size)`` with kind ``balloon``, ``boat`` or ``house`` and ``x, y, size`` in
    pixels (``y`` the centre row for a balloon, the base row for boat and house); the mask task
    uses them to put an object in a region.
    """
    if not isinstance(spec, SceneSpec):
        raise TypeError(f"spec must be a SceneSpec, got {type(spec).__name__}")
    H, W = int(height), int(width)
    if H < 8 or W < 1:
        raise ValueError(f"height must be >= 8 and width >= 1, got {height}x{width}")
    if not isinstance(rng, np.random.Generator):
        rng = scene_rng(int(rng))
    cv = _Canvas(H, W)
    rows = cv.yy[:, 0]
    light = _LIGHT[spec.time]
    # horizon and colours: constant along x
    horizon = float(H * rng.uniform(0.55, 0.68))
    jitter = rng.normal(0, 0.03, 3).astype(np.float32)
    top, bottom = _SKY[spec.time]
    sky_row = _lerp(np.add(top, jitter), bottom, np.clip(rows / horizon, 0, 1) ** 1.3)
    img = np.broadcast_to(sky_row[:, None, :], (H, W, 3)).copy()
    sky = cv.yy < horizon
    if spec.time == "night":  # stars: iid per sky pixel
        stars = (rng.random((H, W)) < 0.03) & sky
        _paint(img, stars, (0.9, 0.9, 0.8), rng.uniform(0.4, 1.0, (H, W)).astype(np.float32))
    objects: list[SceneObject] = []
    # sun / moon (Poisson along x)
    cel_kind = "moon" if spec.time == "night" else "sun"
    r_cel = 0.085 * H
    for cx in _poisson_centres(rng, spec.rate("celestial") / H, W, r_cel):
        lo, hi = (0.55, 0.85) if spec.time == "sunset" else (0.2, 0.55)
        cy = float(horizon * rng.uniform(lo, hi))
        m = _disc(cv, cx, cy, r_cel)
        colour = {"day": (1.0, 0.95, 0.55), "sunset": (1.0, 0.45, 0.15),
                  "night": (0.92, 0.92, 0.82)}[spec.time]
        if spec.time != "night":  # a soft glow
            glow = np.exp(-((cv.xx - cx) ** 2 + (cv.yy - cy) ** 2) / (2 * (2.2 * r_cel) ** 2))
            _paint(img, glow * sky, colour, 0.35)
        _paint(img, m, colour)
        objects.append(SceneObject(cel_kind, float(cx), cy, r_cel, int((m > 0.5).sum())))
    # balloons in the sky (drawn behind ridges: they are far away)
    for cx in _poisson_centres(rng, spec.rate("balloons") / H, W, 0.08 * H):
        cy = float(horizon * rng.uniform(0.25, 0.6))
        objects.append(_balloon(cv, img, rng, cx, cy, 0.07 * H * rng.uniform(0.85, 1.15), light))
    # ridges: sums of cosines with uniform phases (stationary in x)
    ridge_tops = np.full((2, W), np.nan, np.float32)
    xs = np.arange(W, dtype=np.float32) + 0.5
    layers = [] if spec.ridges == 0 else ([0] if spec.ridges == 1 else [0, 1])
    for k in layers:
        colour, base, amp = _RIDGE[k]
        prof = np.zeros(W, np.float32)
        for o, wl in enumerate((1.7, 0.9, 0.45, 0.22)):
            lam = wl * H * rng.uniform(0.85, 1.15)
            prof += (0.55 ** o) * np.cos(2 * np.pi * xs / lam + rng.uniform(0, 2 * np.pi))
        top_row = horizon - H * base - H * amp * prof / 1.4
        ridge_tops[k] = top_row
        mask = (cv.yy >= top_row[None, :]) & (cv.yy < horizon + 0.5)
        base_col = np.asarray(colour, np.float32) * (0.35 + 0.65 * light)
        if spec.time == "sunset":
            base_col = base_col * np.array([1.1, 0.85, 0.9], np.float32)
        shade = np.clip((cv.yy - top_row[None, :]) / (H * 0.25), 0, 1)
        haze = np.asarray(_SKY[spec.time][1], np.float32)
        col = _lerp(base_col, haze * 0.9 + base_col * 0.1, 0.35 * (1 - k) * (1 - shade))
        if spec.ground == "snow" and k == 0:  # snowy caps
            cap = (cv.yy - top_row[None, :]) < H * 0.03
            col = np.where(cap[..., None], np.float32(0.9 * (0.4 + 0.6 * light)), col)
        img = np.where(mask[..., None], col, img)
    # ground
    g = cv.yy >= horizon
    near, far_c = _GROUND[spec.ground]
    depth = np.clip((rows - horizon) / max(H - horizon, 1), 0, 1)
    ground_row = _lerp(near, far_c, depth) * (0.25 + 0.75 * light)
    if spec.time == "sunset":
        ground_row = ground_row * np.array([1.15, 0.9, 0.85], np.float32)
    gcol = np.broadcast_to(ground_row[:, None, :], (H, W, 3)).copy()
    tex = rng.normal(0, 1, (H, W)).astype(np.float32)
    if spec.ground == "sea":
        # reflections: the sky mirrored about the horizon, rippled by horizontal waves
        mirror = np.clip(2 * horizon - cv.yy, 0, H - 1).astype(int)
        refl = sky_row[mirror[:, 0]][:, None, :]
        waves = 0.5 + 0.5 * np.sin(cv.yy * 2.6 + rng.uniform(0, 2 * np.pi))
        gcol = gcol * 0.6 + refl * 0.4 * (0.7 + 0.3 * waves[..., None])
        for o in [o for o in objects if o.kind in ("sun", "moon")]:  # light streak under the sun / moon
            streak = np.exp(-((cv.xx - o.x) ** 2) / (2 * (0.6 * r_cel) ** 2)) * waves
            c = (1.0, 0.8, 0.4) if o.kind == "sun" else (0.9, 0.9, 0.8)
            _paint(gcol, streak * 0.6, c)
        gcol += 0.02 * tex[..., None]
    elif spec.ground == "grass":
        gcol *= (1 + 0.08 * tex)[..., None]
    elif spec.ground == "desert":
        dunes = np.sin(cv.xx * 0.25 / H * 32 + cv.yy * 0.9 + rng.uniform(0, 2 * np.pi))
        gcol *= (1 + 0.05 * dunes + 0.03 * tex)[..., None]
    else:  # snow
        gcol += 0.03 * tex[..., None]
    img = np.where(g[..., None], gcol, img)
    # things standing on the ground, far (small base row) first
    items = []
    for cx in _poisson_centres(rng, spec.rate("trees") / H, W, 0.1 * H):
        items.append(("tree", cx, horizon + (H - horizon) * rng.uniform(0.05, 0.6),
                      0.22 * H * rng.uniform(0.8, 1.2)))
    for cx in _poisson_centres(rng, spec.rate("houses") / H, W, 0.12 * H):
        items.append(("house", cx, horizon + (H - horizon) * rng.uniform(0.1, 0.6),
                      0.16 * H * rng.uniform(0.85, 1.15)))
    for cx in _poisson_centres(rng, spec.rate("boats") / H, W, 0.12 * H):
        items.append(("boat", cx, horizon + (H - horizon) * rng.uniform(0.15, 0.7),
                      0.17 * H * rng.uniform(0.85, 1.15)))
    for kind, x, y, size in place:
        if kind not in ("balloon", "boat", "house"):
            raise ValueError(f"place: kind must be 'balloon', 'boat' or 'house', got {kind!r}")
        if kind == "balloon":
            objects.append(_balloon(cv, img, rng, float(x), float(y), float(size) / 2, light))
        else:
            items.append((kind, float(x), float(y), float(size)))
    for kind, x, y, size in sorted(items, key=lambda it: it[2]):
        draw = {"tree": _tree, "house": _house, "boat": _boat}[kind]
        objects.append(draw(cv, img, rng, float(x), float(y), float(size), light, spec.time))
    img += rng.normal(0, 0.012, img.shape).astype(np.float32)  # sensor noise, iid
    np.clip(img, 0, 1, out=img)
    return Scene(img.astype(np.float32), spec, horizon, ridge_tops, objects)


def _balloon(cv, img, rng, cx, cy, r, light):
    palette = ((0.9, 0.15, 0.15), (0.95, 0.75, 0.1), (0.2, 0.6, 0.9), (0.6, 0.2, 0.8))
    colour = np.asarray(palette[rng.integers(len(palette))], np.float32) * (0.3 + 0.7 * light)
    env = _disc(cv, cx, cy, r)
    basket = _rect(cv, cx - 0.35 * r, cx + 0.35 * r, cy + 1.3 * r, cy + 1.8 * r)
    _paint(img, env, colour)
    _paint(img, basket, (0.35 * light + 0.05, 0.22 * light + 0.03, 0.1 * light))
    return SceneObject("balloon", cx, cy, 2 * r, int((env > 0.5).sum() + basket.sum()),
                       (env > 0.5) | basket)


def _tree(cv, img, rng, cx, base, h, light, time):
    trunk = _rect(cv, cx - 0.06 * h, cx + 0.06 * h, base - 0.25 * h, base)
    crown = _triangle(cv, cx, base - 0.2 * h, 0.32 * h, 0.8 * h)
    g = rng.uniform(0.8, 1.2)
    _paint(img, trunk, np.array((0.35, 0.22, 0.1), np.float32) * (0.3 + 0.7 * light))
    _paint(img, crown, np.array((0.08, 0.35 * g, 0.12), np.float32) * (0.3 + 0.7 * light))
    return SceneObject("tree", cx, base, h, int((trunk | crown).sum()), trunk | crown)


def _house(cv, img, rng, cx, base, w, light, time):
    palette = ((0.85, 0.8, 0.7), (0.75, 0.4, 0.3), (0.9, 0.9, 0.9), (0.6, 0.55, 0.45))
    wall_c = np.asarray(palette[rng.integers(len(palette))], np.float32) * (0.3 + 0.7 * light)
    hw, bh = w / 2, 0.7 * w
    wall = _rect(cv, cx - hw, cx + hw, base - bh, base)
    roof = _triangle(cv, cx, base - bh, hw * 1.2, 0.45 * w)
    win = _rect(cv, cx - 0.15 * w, cx + 0.15 * w, base - 0.5 * bh, base - 0.2 * bh)
    _paint(img, wall, wall_c)
    _paint(img, roof, np.array((0.55, 0.12, 0.1), np.float32) * (0.3 + 0.7 * light))
    win_c = (1.0, 0.85, 0.3) if time == "night" else (0.2, 0.25, 0.35)
    _paint(img, win, win_c)
    return SceneObject("house", cx, base, w, int((wall | roof).sum()), wall | roof)


def _boat(cv, img, rng, cx, base, w, light, time):
    hw = w / 2
    t = (cv.yy - (base - 0.25 * w)) / (0.25 * w)  # 0 at deck, 1 at keel
    hull = (t >= 0) & (t <= 1) & (np.abs(cv.xx - cx) <= hw * (1 - 0.4 * t))
    sail = _triangle(cv, cx + 0.05 * w, base - 0.25 * w, 0.3 * w, 0.8 * w) & (cv.xx >= cx - 0.02 * w)
    _paint(img, hull, np.array((0.4, 0.22, 0.1), np.float32) * (0.3 + 0.7 * light))
    _paint(img, sail, np.array((0.97, 0.95, 0.9), np.float32) * (0.35 + 0.65 * light))
    return SceneObject("boat", cx, base, w, int((hull | sail).sum()), hull | sail)


def render_batch(specs: Sequence[SceneSpec], height: int = 32, width: int = 32, seed: int = 0,
                 start: int = 0) -> tuple[np.ndarray, list[Scene]]:
    """Scenes ``start .. start + n - 1`` of the stream ``seed``: images ``[n, H, W, 3]``."""
    scenes = [render(s, height, width, scene_rng(seed, start + i)) for i, s in enumerate(specs)]
    return np.stack([s.image for s in scenes]), scenes
