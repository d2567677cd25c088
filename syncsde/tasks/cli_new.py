"""CLI subcommands of the tasks built through the extension API:

    syncsde tileable --prompt "moss on stones" [--model scenes] ...     # PNG + 3x3 tiled PNG
    syncsde panorama360 --prompt "a sunset over the sea" [--cube] ...   # equirectangular PNG (2:1)
    syncsde hybrid --far "a sunset with a sun" --near "trees" ...       # PNG + its far reading
    syncsde bench-new --samples 4000 --steps 20                         # exact-score table

Registered by the main CLI with ``add_new_task_commands(subparsers)``; every handler checks its
arguments and output folder before a model loads and returns the list of files it wrote
(PNG metadata hold the settings, as for the other tasks).
"""
from __future__ import annotations

import argparse

from syncsde.cli_checks import check_device, finite_float, positive_int

__all__ = ["add_new_task_commands", "NEW_TASK_COMMANDS"]

NEW_TASK_COMMANDS = ("tileable", "panorama360", "hybrid", "bench-new")
DEFAULT_MODEL = "stabilityai/stable-diffusion-2-base"


def _common(p: argparse.ArgumentParser, steps: int = 50, guidance: float = 7.5) -> None:
    from syncsde.strategies import STRATEGIES

    g = p.add_argument_group("model")
    g.add_argument("--model", default=DEFAULT_MODEL,
                   help=f"hub id, local folder, or 'scenes' (built-in, no download; default {DEFAULT_MODEL})")
    g.add_argument("--device", default=None, help="cuda, cpu, ... (default: cuda if available)")
    g.add_argument("--local-files-only", action="store_true", help="never contact the hub")
    s = p.add_argument_group("sampling")
    s.add_argument("--strategy", choices=sorted(k for k in STRATEGIES if k != "collage"),
                   default=None, help="default: the task's (syncsde.task_defaults; syncsde for hybrid)")
    s.add_argument("--inv-lambda", type=finite_float, default=5.0, help="SyncSDE 1/lambda (default 5)")
    s.add_argument("--steps", type=positive_int, default=steps, help=f"DDIM steps (default {steps})")
    s.add_argument("--guidance", type=finite_float, default=guidance, help=f"CFG scale (default {guidance})")
    s.add_argument("--negative-prompt", default=None)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--max-batch", type=positive_int, default=None, help="views per model call")
    s.add_argument("--out", default="outputs", help="output folder")
    s.add_argument("--no-progress", action="store_true")


def _label(args, task: str) -> str:
    """The strategy's name for file names: the one given, else the task's default."""
    from syncsde.task_defaults import TASK_DEFAULTS

    return args.strategy or TASK_DEFAULTS.get(task, ("syncsde", {}))[0]


def _prepare(args):
    """Checks the device and the output folder, then loads the model."""
    from syncsde.atomic import check_output_dir
    from syncsde.models import load_pipeline

    dev = check_device(args.device)
    out = check_output_dir(args.out)
    pipe = load_pipeline(args.model, device=dev,
                         local_files_only=True if args.local_files_only else None)
    return pipe, out


def _kw(args) -> dict:
    return dict(strategy=args.strategy, inv_lambda=args.inv_lambda, num_inference_steps=args.steps,
                guidance_scale=args.guidance, seed=args.seed, progress=not args.no_progress,
                max_batch=args.max_batch)


def _save(res, stem, extra: dict) -> list[str]:
    from syncsde.cli_models import save_png
    from syncsde.denoisers.diffusers_models import to_pil

    files = [save_png(res.images[0], f"{stem}.png", res.settings)]
    for suffix, img in extra.items():
        if img is not None:
            img = img if hasattr(img, "save") else to_pil(img)[0]
            files.append(save_png(img, f"{stem}_{suffix}.png", res.settings))
    for f in files:
        print(f)
    return files


def _run_tileable(args) -> list[str]:
    from syncsde.tasks.tileable import tileable_image

    pipe, out = _prepare(args)
    res = tileable_image(pipe, args.prompt, args.height, args.width, args.negative_prompt,
                         window=args.window, stride=args.stride, **_kw(args))
    return _save(res, out / f"tileable_{_label(args, 'tileable')}_seed{args.seed}",
                 {"tiled3x3": res.extras.get("tiled_image")})


def _run_panorama(args) -> list[str]:
    from syncsde.tasks.panorama360 import panorama_image

    pipe, out = _prepare(args)
    res = panorama_image(pipe, args.prompt, args.height, args.negative_prompt,
                         view_size=args.view_size, cube=args.cube, **_kw(args))
    return _save(res, out / f"panorama360_{_label(args, 'panorama360')}_seed{args.seed}", {})


def _run_hybrid(args) -> list[str]:
    from syncsde.tasks.hybrid import hybrid_image

    pipe, out = _prepare(args)
    res = hybrid_image(pipe, args.far, args.near, args.negative_prompt, factor=args.factor,
                       size=args.size, stride=args.stride, **_kw(args))
    far = res.extras["far"] if res.tensors is not None else None
    return _save(res, out / f"hybrid_{_label(args, 'hybrid')}_seed{args.seed}", {"far": far})


def _run_bench(args) -> list[str]:
    from syncsde.benchmark_tasks import main

    argv = ["--samples", str(args.samples), "--steps", str(args.steps), "--seed", str(args.seed),
            "--cases", args.cases]
    if args.json:
        argv += ["--json", args.json]
    main(argv)
    return [args.json] if args.json else []


def add_new_task_commands(subparsers) -> dict[str, argparse.ArgumentParser]:
    """Registers ``tileable``, ``panorama360``, ``hybrid`` and ``bench-new``; returns the parsers."""
    ps = {}
    p = subparsers.add_parser("tileable", help="seamless tileable image (torus canvas)",
                              description="A canvas that wraps in both axes; also saves it tiled 3x3.")
    _common(p)
    p.add_argument("--prompt", required=True)
    p.add_argument("--height", type=positive_int, default=512)
    p.add_argument("--width", type=positive_int, default=512)
    p.add_argument("--window", type=positive_int, default=None, help="pixels (default: model size)")
    p.add_argument("--stride", type=positive_int, default=None, help="pixels (default: window/4)")
    p.set_defaults(func=_run_tileable)
    ps["tileable"] = p

    p = subparsers.add_parser("panorama360", help="360-degree equirectangular panorama",
                              description="Perspective views (8 round + up + down, or --cube) of an "
                                          "equirectangular canvas, bilinear CSR maps.")
    _common(p)
    p.add_argument("--prompt", required=True)
    p.add_argument("--height", type=positive_int, default=512, help="pixels; the width is twice it")
    p.add_argument("--view-size", type=positive_int, default=None, help="pixels (default: model size)")
    p.add_argument("--cube", action="store_true", help="the six cube faces instead of 10 views")
    p.set_defaults(func=_run_panorama)
    ps["panorama360"] = p

    p = subparsers.add_parser("hybrid", help="image that reads as one prompt from afar, another up close",
                              description="Far view = the canvas downsampled by --factor; near views = "
                                          "native-size windows.")
    _common(p)
    p.add_argument("--far", required=True, help="prompt of the downsampled (far) reading")
    p.add_argument("--near", required=True, help="prompt of the native-size (near) crops")
    p.add_argument("--factor", type=positive_int, default=2)
    p.add_argument("--size", type=positive_int, default=None, help="view size in pixels (default: model size)")
    p.add_argument("--stride", type=positive_int, default=None, help="window stride in pixels (default size/2)")
    p.set_defaults(func=_run_hybrid)
    ps["hybrid"] = p

    p = subparsers.add_parser("bench-new", help="exact-score benchmark of tileable / panorama360 / hybrid")
    p.add_argument("--samples", type=positive_int, default=4000)
    p.add_argument("--steps", type=positive_int, default=20)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--cases", default="tileable,panorama360,hybrid")
    p.add_argument("--json", default=None)
    p.set_defaults(func=_run_bench)
    ps["bench-new"] = p
    return ps
