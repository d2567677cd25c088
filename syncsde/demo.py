"""The newcomer's main job: ``syncsde demo --out DIR``.

Runs on the built-in exact-score prior (a 3-channel stationary Gaussian field whose noisy
score is known in closed form), so it needs no download and no GPU and finishes in well under
a minute on a laptop CPU. It writes:

- ``wide.png``: one wide canvas per strategy, stacked (13 windows of 32x32 every 8 columns, the
  authors' 13-patch geometry at a smaller scale), the same seed and inputs for every strategy;
- ``ambiguous.png``: an image that reads as prompt A upright and as prompt B rotated, per
  strategy, shown in both views;
- ``benchmark.png`` (+ ``benchmark.json``): the exact-score benchmark's Frechet distances per
  task and strategy (a quick run; ``benchmarks/exact.py`` gives the full table).
"""
from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from syncsde import ops
from syncsde.atomic import atomic_save_png, atomic_write_json
from syncsde.priors import FieldDenoiser, GaussianPrior, PriorDenoiser
from syncsde.sampler import SamplingSchedule, sample
from syncsde.tasks import ambiguous_problem, wide_problem

WIDE_STRATEGIES = ["independent", "multidiffusion", "synctweedies", "syncsde", "collage"]
AMBIGUOUS_STRATEGIES = [("independent", {}), ("noise_average", {}), ("syncsde", {}),
                        ("syncsde", {"inv_lambda": 2.0})]


def to_rgb(x: torch.Tensor, scale: int = 4) -> np.ndarray:
    """A 3-channel field ``[3, H, W]`` as an 8-bit image (values squashed through a sigmoid)."""
    img = torch.sigmoid(1.5 * x.float()).clamp(0, 1)
    img = img.repeat_interleave(scale, -1).repeat_interleave(scale, -2)
    return (img.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)


def _label(img: np.ndarray, text: str):
    from PIL import Image, ImageDraw

    pad = 18
    canvas = Image.new("RGB", (img.shape[1], img.shape[0] + pad), "white")
    canvas.paste(Image.fromarray(img), (0, pad))
    ImageDraw.Draw(canvas).text((4, 3), text, fill="black")
    return canvas


def _stack(images, gap: int = 6):
    from PIL import Image

    w = max(i.width for i in images)
    h = sum(i.height for i in images) + gap * (len(images) - 1)
    out = Image.new("RGB", (w, h), "white")
    y = 0
    for im in images:
        out.paste(im, (0, y))
        y += im.height + gap
    return out


def _side_by_side(images, gap: int = 6):
    from PIL import Image

    w = sum(i.width for i in images) + gap * (len(images) - 1)
    h = max(i.height for i in images)
    out = Image.new("RGB", (w, h), "white")
    x = 0
    for im in images:
        out.paste(im, (x, 0))
        x += im.width + gap
    return out


def wide_demo(out: Path, steps: int, seed: int, progress: bool, log: Callable) -> Path:
    schedule = SamplingSchedule.preset("sd", steps)
    # a "landscape" prior: sky-to-ground colour gradient plus a smooth random texture
    rows = torch.linspace(-1, 1, 32).reshape(1, 32, 1)
    sky_to_ground = torch.stack([-0.6 * rows[0], 0.9 * rows[0], -1.4 * rows[0]])
    den = FieldDenoiser({"landscape": {"kernel": "matern", "nu": 2.5, "lengthscale": 6.0,
                                       "variance": 0.3, "mean": sky_to_ground}},
                        schedule.abar, channels=3)
    prob = wide_problem((3, 32, 128), window=32, stride=8, cond="landscape")
    rows = []
    for name in WIDE_STRATEGIES:
        t0 = time.perf_counter()
        r = sample(prob, den, name, schedule, seed=seed, progress=progress)
        log(f"  wide / {name}: {time.perf_counter() - t0:.1f}s")
        rows.append(_label(to_rgb(r.canvas), f"{name}  ({prob.views.num_views} windows 32x32, stride 8)"))
    path = out / "wide.png"
    atomic_save_png(_stack(rows), path)
    return path


def ambiguous_demo(out: Path, steps: int, seed: int, progress: bool, log: Callable) -> Path:
    schedule = SamplingSchedule.preset("sd", steps)
    S = 24
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, S), torch.linspace(-1, 1, S), indexing="ij")
    stripes = torch.stack([torch.cos(3 * math.pi * yy), -torch.cos(3 * math.pi * yy), 0 * yy])
    ring = torch.stack([0 * yy, torch.cos(4 * math.pi * (xx**2 + yy**2).sqrt()),
                        -torch.cos(4 * math.pi * (xx**2 + yy**2).sqrt())])
    a = GaussianPrior.field("se", (S, S), channels=3, lengthscale=2.0, variance=0.3,
                            mean=1.5 * stripes)
    b = GaussianPrior.field("se", (S, S), channels=3, lengthscale=2.0, variance=0.3,
                            mean=1.5 * ring)
    den = PriorDenoiser({"stripes": a, "rings": b}, schedule.abar)
    prob = ambiguous_problem((3, S, S), "rot90_cw", "stripes", "rings")
    tiles = []
    for name, opts in AMBIGUOUS_STRATEGIES:
        t0 = time.perf_counter()
        r = sample(prob, den, name, schedule, seed=seed, progress=progress, **opts)
        if opts:
            name = f"{name} (1/lambda={opts['inv_lambda']})"
        log(f"  ambiguous / {name}: {time.perf_counter() - t0:.1f}s")
        img = r.canvas
        v1 = _label(to_rgb(img, 5), "view 1: stripes")
        v2 = _label(to_rgb(ops.dihedral(img, "rot90_cw"), 5), "view 2 (rot90): rings")
        tiles.append(_stack([_label(np.full((4, v1.width * 2 + 6, 3), 255, np.uint8), name),
                             _side_by_side([v1, v2])], gap=0))
    path = out / "ambiguous.png"
    atomic_save_png(_side_by_side(tiles, gap=16), path)
    return path


def benchmark_demo(out: Path, samples: int, steps: int, log: Callable) -> Path:
    from syncsde.benchmark import STRATEGIES, TASKS, plot_results, run_task

    schedule = SamplingSchedule.preset("sd", steps)
    results = {}
    for name, build in TASKS.items():
        results[name] = run_task(build(schedule), schedule, samples, 0, STRATEGIES, log)
    atomic_write_json(out / "benchmark.json", results)
    path = out / "benchmark.png"
    plot_results(results, path, f"exact-score benchmark ({samples} samples, {steps} steps; "
                                "lower is better)")
    return path


def run_demo(out: str | Path = "out", steps: int = 25, seed: int = 0, samples: int = 1000,
             progress: bool = True, benchmark: bool = True) -> list[Path]:
    """Runs the demo and returns the written files."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)

    def log(msg):
        if progress:
            print(msg, flush=True)

    t0 = time.perf_counter()
    log(f"syncsde demo -> {out}/ (exact-score prior, {steps} DDIM steps, seed {seed})")
    paths = [wide_demo(out, steps, seed, progress, log), ambiguous_demo(out, steps, seed, progress, log)]
    if benchmark:
        log("exact-score benchmark (quick):")
        paths.append(benchmark_demo(out, samples, min(steps, 20), log))
    log(f"done in {time.perf_counter() - t0:.0f}s: " + ", ".join(str(p) for p in paths))
    return paths
