"""Command-line subcommands for the real-model tasks: ``wide``, ``mask``, ``edit``, ``ambiguous``,
``motion``.

``add_model_commands(subparsers)`` registers them on an ``argparse`` subparsers object; each
subcommand sets ``func`` to its handler, which takes the parsed namespace and returns the list
of files it wrote. Images are PNGs with the run's settings in their metadata (text chunk
``syncsde`` holds JSON; ``prompt`` and ``strategy`` are also separate chunks); motion writes the
263-d features as ``.npy``, a JSON of the settings and, when joints can be recovered (HumanML3D
features with ``--mean``/``--std``), a stick-figure GIF.
"""
from __future__ import annotations

import argparse
import importlib
import json
import os
from pathlib import Path
from typing import Any

from syncsde.atomic import atomic_save_npy, atomic_save_png, atomic_write_json, check_output_dir
from syncsde.cli_checks import (check_device, check_input_file, finite_float, non_negative_int,
                                positive_int)

__all__ = ["add_model_commands", "save_png", "MODEL_COMMANDS"]

MODEL_COMMANDS = ("wide", "mask", "edit", "ambiguous", "motion")


def _strategy_choices() -> list[str]:
    from syncsde.strategies import STRATEGIES

    return sorted(STRATEGIES)


def save_png(image, path: str | os.PathLike, settings: dict) -> str:
    """Saves a PIL image with ``settings`` (JSON) in its PNG text chunks."""
    from PIL.PngImagePlugin import PngInfo

    info = PngInfo()
    info.add_text("syncsde", json.dumps(settings, default=str, sort_keys=True))
    for k in ("prompt", "prompt_a", "prompt_b", "target_prompt", "strategy", "seed", "model"):
        if k in settings and settings[k] is not None:
            info.add_text(k, str(settings[k]))
    return atomic_save_png(image, str(path), pnginfo=info)


# ---- shared options -----------------------------------------------------------------------
def _common(p: argparse.ArgumentParser, steps: int, guidance: float, inv_lambda: float,
            model: str | None) -> None:
    g = p.add_argument_group("model")
    if model is not None:
        g.add_argument("--model", default=model, help=f"hub id or local folder (default {model})")
    g.add_argument("--device", default=None, help="cuda, cpu, ... (default: cuda if available)")
    g.add_argument("--dtype", choices=("auto", "fp16", "fp32", "bf16"), default="auto",
                   help="model dtype (auto: fp16 on CUDA, fp32 elsewhere)")
    g.add_argument("--variant", default=None, help="weight variant, e.g. fp16")
    g.add_argument("--cpu-offload", action="store_true", help="enable_model_cpu_offload (CUDA)")
    g.add_argument("--local-files-only", action="store_true",
                   help="never contact the hub (also implied by HF_HUB_OFFLINE=1)")
    g.add_argument("--authors-compat", action="store_true",
                   help="every choice of the SyncSDE authors' code (uncapped pull, their "
                        "inversion, IF stage-II order); see docs/models.md")
    s = p.add_argument_group("sampling")
    s.add_argument("--strategy", choices=_strategy_choices(), default=None,
                   help="default: the task's (syncsde.task_defaults; syncsde with --authors-compat)")
    s.add_argument("--inv-lambda", type=finite_float, default=inv_lambda, help=f"SyncSDE 1/lambda (default {inv_lambda})")
    s.add_argument("--steps", type=positive_int, default=None,
                   help=f"sampling steps (default {steps}; 25 for --model scenes)")
    s.add_argument("--guidance", type=finite_float, default=None,
                   help=f"CFG scale (default {guidance}; 3 for --model scenes)")
    p.set_defaults(task_steps=steps, task_guidance=guidance)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--out", default="outputs", help="output folder")
    s.add_argument("--no-progress", action="store_true")


def _device(args):
    return check_device(args.device)


def _model_defaults(args) -> None:
    """Steps and guidance follow the model when not given: the task's (the authors') defaults,
    or the built-in scenes model's own (syncsde.scenes.model.DEFAULTS)."""
    scenes = getattr(args, "model", None) == "scenes"
    if scenes:
        from syncsde.scenes.model import DEFAULTS
    if args.steps is None:
        args.steps = DEFAULTS["num_inference_steps"] if scenes else args.task_steps
    if args.guidance is None:
        args.guidance = DEFAULTS["guidance_scale"] if scenes else args.task_guidance


def _check_early(args, images: tuple[str, ...] = (), files: tuple[str, ...] = ()) -> None:
    """Everything that can be checked before a model loads: the device, the output folder and
    the input files (``images`` must be readable images)."""
    check_device(getattr(args, "device", None))
    check_output_dir(args.out)
    _model_defaults(args)
    for opt in images:
        check_input_file(getattr(args, opt), "--" + opt.replace("_", "-"), image=True)
    for opt in files:
        check_input_file(getattr(args, opt), "--" + opt.replace("_", "-"))


def _dtype(args, device):
    import torch

    if args.dtype == "fp16":
        return torch.float16
    if args.dtype == "bf16":
        return torch.bfloat16
    if args.dtype == "fp32":
        return torch.float32
    return torch.float16 if str(device).startswith("cuda") else torch.float32


def _load(args, model: str, **kw):
    from syncsde.models import load_pipeline

    dev = _device(args)
    return load_pipeline(model, torch_dtype=_dtype(args, dev), device=dev, variant=args.variant,
                         local_files_only=True if args.local_files_only else None,
                         cpu_offload=args.cpu_offload, **kw)


def _strategy_label(args, task: str) -> str:
    """The strategy's name for file names: the one given, else the task's default."""
    if args.strategy is not None:
        return args.strategy
    from syncsde.task_defaults import TASK_DEFAULTS

    if getattr(args, "authors_compat", False):
        return "syncsde"
    return TASK_DEFAULTS.get(task, ("syncsde", {}))[0]


def _stem(args, task: str, default_of: str | None = None) -> Path:
    """``task_strategy_seedN`` in the output folder; the strategy is the given one, else the
    default of ``default_of`` (the task itself unless said)."""
    out = check_output_dir(args.out)
    return out / f"{task}_{_strategy_label(args, default_of or task)}_seed{args.seed}"


def _save_result(res, stem: Path, names: list[str]) -> list[str]:
    files = []
    for img, name in zip(res.images, names):
        files.append(save_png(img, f"{stem}{name}.png", res.settings))
    return files


def _vae_tiling_options(p) -> None:
    """``--vae-tiling`` / ``--vae-tile`` / ``--vae-tile-overlap`` of the canvas tasks."""
    p.add_argument("--vae-tiling", choices=("auto", "on", "off"), default=None,
                   help="decode the canvas in blended tiles: auto (when it is larger than the "
                        "model's size), on, off (default: the VAE's own decode)")
    p.add_argument("--vae-tile", type=positive_int, default=None,
                   help="tile size in latent pixels (default: the model's sample size)")
    p.add_argument("--vae-tile-overlap", type=non_negative_int, default=None,
                   help="tile overlap in latent pixels (default: a quarter of the tile)")


def _vae_tiling(args) -> dict:
    mode = {"auto": "auto", "on": True, "off": False, None: None}[args.vae_tiling]
    return dict(vae_tiling=mode, vae_tile=args.vae_tile, vae_tile_overlap=args.vae_tile_overlap)


# ---- handlers -----------------------------------------------------------------------------
def _run_wide(args) -> list[str]:
    from syncsde.pipelines import wide_image

    _check_early(args)
    pipe = _load(args, args.model)
    res = wide_image(pipe, args.prompt, height=args.height, width=args.width,
                     negative_prompt=args.negative_prompt, window=args.window, stride=args.stride,
                     circular=args.circular, strategy=args.strategy, inv_lambda=args.inv_lambda,
                     num_inference_steps=args.steps, guidance_scale=args.guidance, seed=args.seed,
                     progress=not args.no_progress, max_batch=args.max_batch, init=args.init,
                     decode_windows=args.decode_windows, authors_compat=args.authors_compat,
                     **_vae_tiling(args))
    # a wrapped canvas takes the 360 panorama's default strategy (wide_image)
    stem = _stem(args, "wide", "panorama360" if args.circular else "wide")
    files = _save_result(res, stem, [""])
    for i, img in enumerate(res.extras.get("window_images", [])):
        files.append(save_png(img, f"{stem}_window{i:02d}.png", {**res.settings, "window_index": i}))
    return files


def _three_prompts(args) -> tuple[str, str, str]:
    if args.prompts:
        lines = [ln.strip() for ln in Path(args.prompts).read_text().splitlines() if ln.strip()]
        if len(lines) < 3:
            raise ValueError(f"--prompts {args.prompts!r} needs 3 lines: background, object, combined")
        return lines[0], lines[1], lines[2]
    if not (args.background and args.object and args.combined):
        raise ValueError("pass --background, --object and --combined (or --prompts FILE)")
    return args.background, args.object, args.combined


def _run_mask(args) -> list[str]:
    from syncsde.pipelines import mask_generation

    _check_early(args, images=("mask",), files=("prompts",))
    bg, obj, comb = _three_prompts(args)
    pipe = _load(args, args.model)
    res = mask_generation(pipe, args.mask, bg, obj, comb, negative_prompt=args.negative_prompt,
                          height=args.height, width=args.width, strategy=args.strategy,
                          inv_lambda=args.inv_lambda, num_inference_steps=args.steps,
                          guidance_scale=args.guidance, seed=args.seed,
                          progress=not args.no_progress, decode_all=args.decode_all,
                          authors_compat=args.authors_compat, **_vae_tiling(args))
    return _save_result(res, _stem(args, "mask"), ["", "_background", "_object"])


def _mask_png(mask, path, settings):
    from PIL import Image

    a = (mask.float().clamp(0, 1).numpy() * 255).round().astype("uint8")
    return save_png(Image.fromarray(a), path, settings)


IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")


def _edit_kwargs(args, pipe, captioner) -> dict:
    return dict(source_word=args.source_word, target_word=args.target_word,
                target_prompt=args.target_prompt, strategy=args.strategy,
                inv_lambda=args.inv_lambda, num_inference_steps=args.steps,
                guidance_scale=args.guidance, tau=args.tau, mask=args.mask, seed=args.seed,
                progress=not args.no_progress, decode_reconstruction=args.save_reconstruction,
                inversion=args.inversion, captioner=captioner,
                authors_compat=args.authors_compat)


def _edit_one(args, pipe, captioner, image: str, stem: Path, xt_cache: str | None) -> list[str]:
    from syncsde.pipelines import edit_image

    res = edit_image(pipe, image, args.source_prompt, xt_cache=xt_cache,
                     **_edit_kwargs(args, pipe, captioner))
    files = _save_result(res, stem, ["", "_reconstruction"])
    files.append(_mask_png(res.extras["mask"], f"{stem}_mask.png", res.settings))
    return files


def _run_edit(args) -> list[str]:
    folder = os.path.isdir(args.image)
    _check_early(args, images=() if folder else ("image",))
    _check_early(args, images=("mask",))
    images = _folder_images(args.image) if folder else [args.image]
    if args.source_prompt is None and args.captioner is None:
        raise ValueError("pass --source-prompt (a caption of the image) or --captioner (BLIP)")
    if args.target_prompt is None and (args.source_word is None or args.target_word is None):
        raise ValueError("pass --target-prompt, or --source-word and --target-word")
    pipe = _load(args, args.model)
    captioner = None
    if args.captioner:
        from syncsde.editing import Captioner

        captioner = Captioner.from_pretrained(
            args.captioner, local_files_only=True if args.local_files_only else None)
    if not folder:
        return _edit_one(args, pipe, captioner, args.image, _stem(args, "edit"), args.xt_cache)
    return _edit_folder(args, pipe, captioner, images)


def _folder_images(folder: str) -> list[str]:
    names = sorted(n for n in os.listdir(folder) if n.lower().endswith(IMAGE_SUFFIXES))
    if not names:
        raise ValueError(f"--image {folder!r}: the folder holds no image "
                         f"({', '.join(IMAGE_SUFFIXES)})")
    return [os.path.join(folder, n) for n in names]


def _edit_folder(args, pipe, captioner, images: list[str]) -> list[str]:
    """Edits every image of a folder. ``edit_manifest.json`` in --out records each image's
    status and files after each image (atomically), so an interrupted run resumes where it
    stopped; a manifest of other settings is refused. x_T is cached per image in --out/xt/."""
    import sys

    from syncsde.checkpoint import run_differences

    out = check_output_dir(args.out)
    manifest_path = out / "edit_manifest.json"
    settings = {k: getattr(args, k) for k in (
        "model", "strategy", "inv_lambda", "steps", "guidance", "seed", "source_prompt",
        "source_word", "target_word", "target_prompt", "tau", "mask", "inversion", "captioner",
        "authors_compat")}
    manifest = {"settings": settings, "images": {}}
    if manifest_path.exists():
        try:
            old = json.loads(manifest_path.read_text())
            old_settings, entries = old["settings"], dict(old["images"])
        except (ValueError, KeyError, TypeError):
            raise ValueError(f"{manifest_path}: not a syncsde edit manifest (damaged?)") from None
        diff = run_differences(old_settings, json.loads(json.dumps(settings)))
        if diff:
            raise ValueError(f"{manifest_path} belongs to another run: " + "; ".join(diff) +
                             " (use another --out)")
        manifest["images"] = entries
    files, failed = [], 0
    for image in images:
        name = os.path.basename(image)
        entry = manifest["images"].get(name, {})
        if entry.get("status") == "done" and all(os.path.exists(f) for f in entry.get("files", [])):
            continue
        stem = out / f"{Path(name).stem}_edit_{_strategy_label(args, 'edit')}_seed{args.seed}"
        xt = str(out / "xt" / f"{Path(name).stem}.safetensors")
        try:
            written = _edit_one(args, pipe, captioner, image, stem, xt)
            manifest["images"][name] = {"status": "done", "files": written}
            files += written
        except (ValueError, OSError) as e:  # one bad image does not stop the folder
            failed += 1
            manifest["images"][name] = {"status": "failed", "error": str(e)}
            print(f"syncsde edit: {name}: {e}", file=sys.stderr)
        atomic_write_json(manifest_path, manifest)
    if failed:
        raise ValueError(f"{failed} of {len(images)} images failed (see {manifest_path})")
    return files


def _run_ambiguous(args) -> list[str]:
    from syncsde.pipelines import ambiguous_image

    _check_early(args)
    stage1 = _load(args, args.model)
    # the scenes model is pixel space at its final size: there is no stage II
    stage2 = None if args.no_stage2 or args.model == "scenes" else _load(args, args.stage2)
    res = ambiguous_image(stage1, args.prompt_a, args.prompt_b, view=args.view, stage2=stage2,
                          negative_prompt=args.negative_prompt, strategy=args.strategy,
                          inv_lambda=args.inv_lambda, num_inference_steps=args.steps,
                          guidance_scale=args.guidance, noise_level=args.noise_level,
                          seed=args.seed, progress=not args.no_progress,
                          authors_compat=args.authors_compat)
    return _save_result(res, _stem(args, "ambiguous"), ["_prompt_a", "_prompt_b", "_view1_own"])


def _factory(spec: str):
    if ":" not in spec:
        raise ValueError("--model-factory must be 'module:function' (or module:Class)")
    mod, name = spec.split(":", 1)
    fn: Any = importlib.import_module(mod)
    for part in name.split("."):
        fn = getattr(fn, part)
    return fn


def _run_motion(args) -> list[str]:
    import numpy as np
    import torch

    from syncsde.denoisers.mdm import MDMDenoiser, save_stick_figure_gif
    from syncsde.pipelines import long_motion

    _check_early(args, files=("checkpoint", "mean", "std"))
    if args.authors_compat:
        raise ValueError("--authors-compat: the SyncSDE authors released no motion code; the "
                         "motion task follows the paper (see docs/models/motion.md)")
    build = _factory(args.model_factory)
    dev = _device(args)
    if args.checkpoint:
        den = MDMDenoiser.from_checkpoint(build, args.checkpoint, device=dev,
                                          diffusion_steps=args.diffusion_steps)
    else:
        model = build()
        if isinstance(model, torch.nn.Module):
            model = model.eval().to(dev)
        den = model if isinstance(model, MDMDenoiser) else MDMDenoiser(
            model, device=dev, diffusion_steps=args.diffusion_steps)
    mean = np.load(args.mean) if args.mean else None
    std = np.load(args.std) if args.std else None
    max_pull = None if str(args.max_pull).lower() == "none" else float(args.max_pull)
    res = long_motion(den, args.prompt, args.length, window=args.window, overlap=args.overlap,
                      strategy=args.strategy, inv_lambda=args.inv_lambda,
                      num_inference_steps=args.steps, guidance_scale=args.guidance,
                      diffusion_steps=args.diffusion_steps, max_pull=max_pull, mean=mean,
                      std=std, seed=args.seed, progress=not args.no_progress)
    stem = _stem(args, "motion")
    files = [f"{stem}.npy", f"{stem}.json"]
    atomic_save_npy(files[0], res.extras["features"])
    atomic_write_json(files[1], json.loads(json.dumps(res.settings, default=str)), indent=1,
                      sort_keys=True)
    if "joints" in res.extras and not args.no_gif:
        files.append(save_stick_figure_gif(res.extras["joints"], f"{stem}.gif", fps=args.fps))
    return files


def _print_files(handler):
    def run(args):
        files = handler(args)
        for f in files:
            print(f)
        return files

    run.__name__ = handler.__name__
    return run


# ---- registration -------------------------------------------------------------------------
def add_model_commands(subparsers) -> dict[str, argparse.ArgumentParser]:
    """Registers ``wide``, ``mask``, ``edit``, ``ambiguous`` and ``motion`` on ``subparsers``
    (from ``parser.add_subparsers()``); returns the new parsers by name. Each sets
    ``func(args) -> list of written files``."""
    parsers = {}
    p = subparsers.add_parser("wide", help="wide image / panorama from SD windows",
                              description="Wide image (authors: SD2-base, 512x2048, window 512, stride 128).")
    _common(p, 50, 7.5, 5.0, "stabilityai/stable-diffusion-2-base")
    p.add_argument("--prompt", required=True)
    p.add_argument("--negative-prompt", default=None)
    p.add_argument("--height", type=positive_int, default=None,
                   help="pixels (default: the model's native size)")
    p.add_argument("--width", type=positive_int, default=None,
                   help="pixels (default: 4x the model's native size)")
    p.add_argument("--window", type=positive_int, default=None, help="window in pixels (default: model size)")
    p.add_argument("--stride", type=positive_int, default=None, help="stride in pixels (default: window/4)")
    p.add_argument("--circular", action="store_true", help="360-degree wrap")
    p.add_argument("--init", choices=("canvas", "independent"), default="canvas",
                   help="initial noise: cropped from one canvas map (authors' README) or "
                        "independent per window (their script's default)")
    p.add_argument("--decode-windows", action="store_true",
                   help="also save every window's own image")
    p.add_argument("--max-batch", type=positive_int, default=None, help="views per model call")
    _vae_tiling_options(p)
    p.set_defaults(func=_print_files(_run_wide))
    parsers["wide"] = p

    p = subparsers.add_parser("mask", help="mask-based generation (background / object / combined)",
                              description="Mask-based T2I (authors: SD2-base, 512x512, CFG 7.5).")
    _common(p, 50, 7.5, 5.0, "stabilityai/stable-diffusion-2-base")
    p.add_argument("--mask", required=True, help="PNG (white = object)")
    p.add_argument("--prompts", default=None, help="file with 3 lines: background, object, combined")
    p.add_argument("--background", default=None)
    p.add_argument("--object", default=None)
    p.add_argument("--combined", default=None)
    p.add_argument("--negative-prompt", default=None)
    p.add_argument("--height", type=positive_int, default=None,
                   help="pixels (default: the model's native size)")
    p.add_argument("--width", type=positive_int, default=None,
                   help="pixels (default: the model's native size)")
    p.add_argument("--decode-all", action="store_true", help="also save the background and object")
    _vae_tiling_options(p)
    p.set_defaults(func=_print_files(_run_mask))
    parsers["mask"] = p

    p = subparsers.add_parser("edit", help="text-driven real-image editing",
                              description="Editing (authors: SD 1.4, CFG 5, tau 0.3).")
    _common(p, 50, 5.0, 5.0, "CompVis/stable-diffusion-v1-4")
    p.add_argument("--image", required=True, help="an image, or a folder of images "
                                                 "(resumable, with edit_manifest.json)")
    p.add_argument("--source-prompt", default=None, help="a caption of the image")
    p.add_argument("--captioner", default=None,
                   help="BLIP id or folder to caption images without --source-prompt "
                        "(authors: Salesforce/blip-image-captioning-base)")
    p.add_argument("--inversion", choices=("ddim", "authors"), default=None,
                   help="DDIM inversion scheme (default ddim; authors with --authors-compat)")
    p.add_argument("--xt-cache", default=None, help="file caching the inverted x_T")
    p.add_argument("--source-word", default=None, help="the word of the caption to edit")
    p.add_argument("--target-word", default=None)
    p.add_argument("--target-prompt", default=None, help="default: caption with the word replaced")
    p.add_argument("--tau", type=finite_float, default=0.3, help="mask threshold")
    p.add_argument("--mask", default=None, help="use this mask PNG instead of attention")
    p.add_argument("--save-reconstruction", action="store_true")
    p.set_defaults(func=_print_files(_run_edit))
    parsers["edit"] = p

    from syncsde.tasks import AMBIGUOUS_VIEWS

    p = subparsers.add_parser("ambiguous", help="ambiguous image (visual anagram) with DeepFloyd IF",
                              description="Ambiguous images (authors: IF-I-M + IF-II-M, 30 steps, CFG 10).")
    _common(p, 30, 10.0, 5.0, "DeepFloyd/IF-I-M-v1.0")
    p.add_argument("--stage2", default="DeepFloyd/IF-II-M-v1.0")
    p.add_argument("--no-stage2", action="store_true", help="stop at 64 px")
    p.add_argument("--prompt-a", required=True, help="what the image shows upright")
    p.add_argument("--prompt-b", required=True, help="what it shows through --view")
    p.add_argument("--view", default="rot90_cw", choices=AMBIGUOUS_VIEWS)
    p.add_argument("--negative-prompt", default=None)
    p.add_argument("--noise-level", type=non_negative_int, default=250)
    p.set_defaults(func=_print_files(_run_ambiguous))
    parsers["ambiguous"] = p

    p = subparsers.add_parser("motion", help="long motion from an MDM-format model",
                              description="Long-horizon motion (windows 120, overlap 30, inv_lambda 3).")
    _common(p, 50, 2.5, 3.0, None)
    p.add_argument("--model-factory", required=True,
                   help="module:function building the MDM model (or an MDMDenoiser)")
    p.add_argument("--checkpoint", default=None, help="model .pt (state dict)")
    p.add_argument("--prompt", default=None)
    p.add_argument("--length", type=positive_int, default=600, help="frames (20 fps for HumanML3D)")
    p.add_argument("--window", type=positive_int, default=120)
    p.add_argument("--overlap", type=non_negative_int, default=30)
    p.add_argument("--diffusion-steps", type=positive_int, default=1000, help="the model's T (1000 or 50)")
    p.add_argument("--max-pull", default="1.0", help="first-step guard cap ('none' = off)")
    p.add_argument("--mean", default=None, help="Mean.npy for de-normalization")
    p.add_argument("--std", default=None, help="Std.npy for de-normalization")
    p.add_argument("--fps", type=positive_int, default=20)
    p.add_argument("--no-gif", action="store_true")
    p.set_defaults(func=_print_files(_run_motion))
    parsers["motion"] = p
    return parsers
