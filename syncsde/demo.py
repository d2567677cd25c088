"""The newcomer's main job: ``syncsde demo --out DIR``.

Runs on the built-in scenes model (``load_pipeline("scenes")``: a 32 px text-conditioned pixel
diffusion model shipped inside the package, trained on the procedural scenes of
:mod:`syncsde.scenes`), so it needs no download and no GPU. It writes, every picture labelled
and every PNG carrying its settings (model name included) in its metadata:

- ``wide.png``: a 32x256 panorama of one prompt per strategy (32x32 windows), under the
  generator's own wide scene of the same prompt (the true law of a panorama);
- ``ambiguous.png``: an image that reads as prompt A upright and as prompt B rotated by 180
  degrees, per strategy, both readings with the scene classifier's verdict;
- ``mask.png``: mask-based composition (a boat in a region of a sunset sea);
- ``edit.png``: edits of a generator image (sunset -> night, grass -> snow) with the attention
  mask each edit found;
- ``benchmark.png`` (+ ``benchmark.json``): the exact-score benchmark's Frechet distances per
  task and strategy (a quick run; ``benchmarks/exact.py`` gives the full table).

``run_demo(prior=True)`` also writes the exact-score prior pictures (``prior_wide.png``,
``prior_ambiguous.png``) of the Gaussian-field prior.
"""
from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from syncsde import ops
from syncsde.atomic import atomic_save_png, atomic_write_json, check_output_dir
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
    path = out / "prior_wide.png"
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
    path = out / "prior_ambiguous.png"
    atomic_save_png(_side_by_side(tiles, gap=16), path)
    return path


def benchmark_demo(out: Path, samples: int, steps: int, log: Callable) -> Path:
    from syncsde.benchmark import FAST_STRATEGIES, TASKS, plot_results, run_task

    schedule = SamplingSchedule.preset("sd", steps)
    results = {}
    for name, build in TASKS.items():
        results[name] = run_task(build(schedule), schedule, samples, 0, FAST_STRATEGIES, log)
    atomic_write_json(out / "benchmark.json", results)
    path = out / "benchmark.png"
    plot_results(results, path, f"exact-score benchmark ({samples} samples, {steps} steps; "
                                "lower is better)")
    return path


SCENE_WIDE_STRATEGIES = ["independent", "multidiffusion", "synctweedies", "syncsde", "collage"]
SCENE_AMBIGUOUS_STRATEGIES = ["independent", "noise_average", "syncsde", "poe"]
WIDE_PROMPT = "a sunset over the sea with mountains and a sun"
AMBIGUOUS_PROMPTS = ("a sunset over the sea with mountains", "a night over the snow")
MASK_PROMPTS = ("a sunset over the sea", "a sunset over the sea with a boat",
                "a sunset over the sea with a boat")
EDIT_SOURCE = "a sunset over the grass with hills and trees"
EDITS = (("sunset", "night"), ("grass", "snow"))
SCALE = 4  # pixels are shown 4x (nearest neighbour)


def _pil(t: torch.Tensor, scale: int = SCALE):
    """``[3, H, W]`` in [0, 1] -> an enlarged 8-bit array."""
    a = t.detach().float().cpu().clamp(0, 1)
    a = a.repeat_interleave(scale, -1).repeat_interleave(scale, -2)
    return (a.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)


def _save(img, path: Path, settings: dict) -> Path:
    """PNG with the settings (JSON) and the model name in its text chunks, written atomically."""
    import json

    from PIL.PngImagePlugin import PngInfo

    info = PngInfo()
    info.add_text("syncsde", json.dumps(settings, default=str, sort_keys=True))
    for k in ("model", "task", "prompt"):
        if k in settings:
            info.add_text(k, str(settings[k]))
    atomic_save_png(img, path, pnginfo=info)
    return path


def _verdict(classifier, img: torch.Tensor, prompt: str) -> str:
    from syncsde.scenes.classifier import predict_attributes, prompt_agreement
    from syncsde.scenes.vocab import parse_prompt

    pred = predict_attributes(classifier, img[None])[0]
    ok, n = prompt_agreement(pred, parse_prompt(prompt))
    return (f"classifier: {pred['time']}/{pred['ground']}/{pred['ridges']} ridges "
            f"({ok}/{n} as prompted)")


def scenes_wide_demo(pipe, out: Path, steps: int, seed: int, progress: bool, log) -> Path:
    from syncsde.pipelines import wide_image
    from syncsde.scenes.generator import render, scene_rng
    from syncsde.scenes.vocab import parse_prompt

    W, stride = 256, 16
    truth = render(parse_prompt(WIDE_PROMPT).sample_spec(scene_rng(seed, 0)), 32, W,
                   scene_rng(seed, 1))
    rows = [_label(_pil(torch.from_numpy(truth.image).permute(2, 0, 1)),
                   f"generator's own 32x{W} scene (the true law): {WIDE_PROMPT!r}, "
                   f"{truth.visible('sun')} suns")]
    settings = {}
    for name in SCENE_WIDE_STRATEGIES:
        t0 = time.perf_counter()
        r = wide_image(pipe, WIDE_PROMPT, height=32, width=W, stride=stride, strategy=name,
                       num_inference_steps=steps, guidance_scale=_guidance(), seed=seed,
                       progress=progress)
        dt = time.perf_counter() - t0
        log(f"  wide / {name}: {dt:.1f}s")
        settings[name] = r.settings
        rows.append(_label(_pil(r.tensors[0]), f"{name}  ({r.settings['num_views']} windows 32x32, "
                                               f"stride {stride}, {steps} steps, {dt:.1f}s)"))
    return _save(_stack(rows), out / "wide.png",
                 {"task": "wide", "model": "scenes", "prompt": WIDE_PROMPT, "runs": settings})


def scenes_ambiguous_demo(pipe, classifier, out: Path, steps: int, seed: int, progress: bool,
                          log) -> Path:
    from syncsde.pipelines import ambiguous_image

    pa, pb = AMBIGUOUS_PROMPTS
    tiles, settings = [], {}
    for name in SCENE_AMBIGUOUS_STRATEGIES:
        t0 = time.perf_counter()
        r = ambiguous_image(pipe, pa, pb, view="rot180", strategy=name, num_inference_steps=steps,
                            guidance_scale=_guidance(), seed=seed, progress=progress)
        log(f"  ambiguous / {name}: {time.perf_counter() - t0:.1f}s")
        settings[name] = r.settings
        img_a, img_b = r.tensors[0], r.tensors[1]
        blank = np.full((2, 280, 3), 255, np.uint8)
        va = _stack([_label(_pil(img_a, 6), "upright (prompt A)"),
                     _label(blank, _verdict(classifier, img_a, pa))], 0)
        vb = _stack([_label(_pil(img_b, 6), "rotated 180 (prompt B)"),
                     _label(blank, _verdict(classifier, img_b, pb))], 0)
        tiles.append(_stack([_label(blank, name), _side_by_side([va, vb])], gap=0))
    head = _label(np.full((2, tiles[0].width, 3), 255, np.uint8), f"A = {pa!r}")
    head = _stack([head, _label(np.full((2, tiles[0].width, 3), 255, np.uint8), f"B = {pb!r}")], 0)
    return _save(_stack([head] + tiles, gap=12), out / "ambiguous.png",
                 {"task": "ambiguous", "model": "scenes", "prompt_a": pa, "prompt_b": pb,
                  "view": "rot180", "runs": settings})


def scenes_mask_demo(pipe, out: Path, steps: int, seed: int, progress: bool, log) -> Path:
    from syncsde.pipelines import mask_generation

    mask = np.zeros((32, 32), np.float32)
    mask[19:29, 9:23] = 1  # where the boat goes
    bg, obj, comb = MASK_PROMPTS
    rows, settings = [], {}
    for name in ("multidiffusion", "syncsde", "inpaint"):
        t0 = time.perf_counter()
        r = mask_generation(pipe, mask, bg, obj, comb, height=32, width=32, strategy=name,
                            num_inference_steps=steps, guidance_scale=_guidance(), seed=seed,
                            progress=progress, decode_all=True)
        log(f"  mask / {name}: {time.perf_counter() - t0:.1f}s")
        settings[name] = r.settings
        comb_img, bg_img, obj_img = r.tensors
        outline = comb_img.clone()
        m = torch.from_numpy(mask).bool()
        eroded = -torch.nn.functional.max_pool2d(-m[None, None].float(), 3, 1, 1)[0, 0] > 0.5
        edge = m & ~eroded
        outline[:, edge] = torch.tensor([1.0, 1.0, 0.0])[:, None]
        rows.append(_side_by_side([_label(_pil(bg_img), f"{name}: background"),
                                   _label(_pil(obj_img), "object trajectory"),
                                   _label(_pil(comb_img), "combined (answer)"),
                                   _label(_pil(outline), "mask outline")]))
    head = _label(np.full((2, rows[0].width, 3), 255, np.uint8),
                  f"mask composition: {comb!r} in the yellow region over {bg!r}")
    return _save(_stack([head] + rows), out / "mask.png",
                 {"task": "mask", "model": "scenes", "prompt": comb, "runs": settings})


def scenes_edit_demo(pipe, classifier, out: Path, steps: int, seed: int, progress: bool,
                     log) -> Path:
    from syncsde.pipelines import edit_image, replace_word
    from syncsde.scenes.generator import render, scene_rng
    from syncsde.scenes.vocab import parse_prompt

    src = render(parse_prompt(EDIT_SOURCE).sample_spec(scene_rng(seed, 2)), 32, 32,
                 scene_rng(seed, 3))
    src_t = torch.from_numpy(src.image).permute(2, 0, 1)
    rows, settings = [], {}
    for sw, tw in EDITS:
        t0 = time.perf_counter()
        r = edit_image(pipe, src.image, EDIT_SOURCE, source_word=sw, target_word=tw,
                       num_inference_steps=steps, guidance_scale=_guidance(), seed=seed,
                       progress=progress)
        log(f"  edit / {sw} -> {tw}: {time.perf_counter() - t0:.1f}s")
        settings[f"{sw}->{tw}"] = r.settings
        target = replace_word(EDIT_SOURCE, sw, tw)
        cross = r.extras["cross_map"].clamp(0, 1)
        m = r.extras["mask"]
        rows.append(_side_by_side([
            _label(_pil(src_t), "generator image"),
            _label(_pil(cross[None].expand(3, -1, -1)), f"attention of {sw!r}"),
            _label(_pil(m[None].expand(3, -1, -1)), "edit mask"),
            _label(_pil(r.tensors[0]), f"{sw} -> {tw}"),
            _label(np.full((2, 360, 3), 255, np.uint8), _verdict(classifier, r.tensors[0], target))]))
    head = _label(np.full((2, rows[0].width, 3), 255, np.uint8), f"editing {EDIT_SOURCE!r}")
    return _save(_stack([head] + rows), out / "edit.png",
                 {"task": "edit", "model": "scenes", "prompt": EDIT_SOURCE, "runs": settings})


def _guidance() -> float:
    from syncsde.scenes.model import DEFAULTS

    return float(DEFAULTS["guidance_scale"])


def run_demo(out: str | Path = "out", steps: int = 25, seed: int = 0, samples: int = 1000,
             progress: bool = True, benchmark: bool = True, prior: bool = False,
             model: str = "scenes") -> list[Path]:
    """Runs the demo and returns the written files. The scenes pictures use
    ``min(steps, 20)`` DDIM steps (``steps`` for the prior pictures)."""
    out = check_output_dir(out)

    def log(msg):
        if progress:
            print(msg, flush=True)

    from syncsde.models import load_pipeline
    from syncsde.scenes.classifier import load_classifier

    t0 = time.perf_counter()
    sc_steps = min(int(steps), 20)
    log(f"syncsde demo -> {out}/ (scenes model, {sc_steps} DDIM steps, seed {seed})")
    pipe = load_pipeline(model, device="cpu")
    classifier = load_classifier()
    paths = [scenes_wide_demo(pipe, out, sc_steps, seed, False, log),
             scenes_ambiguous_demo(pipe, classifier, out, sc_steps, seed, False, log),
             scenes_mask_demo(pipe, out, sc_steps, seed, False, log),
             scenes_edit_demo(pipe, classifier, out, sc_steps, seed, False, log)]
    if prior:
        paths += [wide_demo(out, steps, seed, False, log), ambiguous_demo(out, steps, seed, False, log)]
    if benchmark:
        log("exact-score benchmark (quick):")
        paths.append(benchmark_demo(out, samples, min(steps, 20), log))
    log(f"done in {time.perf_counter() - t0:.0f}s: " + ", ".join(str(p) for p in paths))
    return paths
