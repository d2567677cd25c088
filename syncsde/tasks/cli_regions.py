"""CLI subcommands for conditioned generation at any size:

    syncsde regions LAYOUT.json|toml [--model M] [--out DIR] [--steps N] [--strategy S] [--seed]
    syncsde upscale IMAGE --scale 2 --prompt "..." [--model M] [--out DIR] [--steps N]
                    [--strength 0.5] [--start noise|inversion] [--mask M] [--strategy S]

Registered by the main CLI with ``add_region_commands(subparsers)``. The layout file, the
image and the output folder are checked before a model loads; PNG metadata hold the settings.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from syncsde.cli_checks import finite_float, positive_int


def _label(args, task: str) -> str:
    """The strategy's name for file names: the one given, else the task's (SyncSDE here)."""
    from syncsde.cli_models import _strategy_label

    return _strategy_label(args, task)

__all__ = ["add_region_commands", "REGION_COMMANDS"]

REGION_COMMANDS = ("regions", "upscale")


def _unit_float(text: str) -> float:
    v = finite_float(text)
    if not 0 < v <= 1:
        raise argparse.ArgumentTypeError(f"must be in (0, 1], got {v}")
    return v


def _run_regions(args) -> list[str]:
    from syncsde.tasks.cli_new import _kw, _prepare, _save
    from syncsde.tasks.regions import load_layout

    layout = load_layout(args.layout)  # a bad layout fails before the model loads
    if args.negative_prompt is not None:
        layout.negative = args.negative_prompt
    for name in ("feather", "bootstrap"):
        if getattr(args, name) is not None:
            setattr(layout, name, getattr(args, name))
    if args.gaussian:
        layout.gaussian = True
    if args.control is not None and not Path(args.control).is_file():
        raise ValueError(f"--control {args.control!r}: no such file")
    pipe, out = _prepare(args)
    from syncsde.tasks.regions import regions_image

    res = regions_image(pipe, layout, control_image=args.control,
                        controlnet_scale=args.controlnet_scale, **_kw(args))
    return _save(res, out / f"regions_{Path(args.layout).stem}_{_label(args, 'regions')}"
                            f"_seed{args.seed}", {})


def _run_upscale(args) -> list[str]:
    from syncsde.tasks.cli_new import _kw, _prepare, _save
    from syncsde.tasks.upscale import upscaled_size

    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(args.image) as im:
            size = im.size
    except FileNotFoundError:
        raise ValueError(f"image {args.image!r}: no such file") from None
    except (UnidentifiedImageError, OSError) as e:
        raise ValueError(f"image {args.image!r}: not a readable image ({e})") from None
    upscaled_size(size[0], size[1], args.scale)  # a bad --scale fails before the model loads
    for name in ("mask", "control"):
        v = getattr(args, name)
        if v is not None and not Path(v).is_file():
            raise ValueError(f"--{name} {v!r}: no such file")
    pipe, out = _prepare(args)
    from syncsde.tasks.upscale import upscale_image

    res = upscale_image(pipe, args.image, args.scale, args.prompt, args.negative_prompt,
                        strength=args.strength, start=args.start, window=args.window,
                        stride=args.stride, mask=args.mask, vae_tile=args.vae_tile,
                        control_image=args.control, controlnet_scale=args.controlnet_scale,
                        **_kw(args))
    return _save(res, out / f"upscale_{Path(args.image).stem}_x{args.scale:g}_"
                            f"{_label(args, 'upscale')}_seed{args.seed}", {})


def add_region_commands(subparsers) -> dict[str, argparse.ArgumentParser]:
    """Registers ``regions`` and ``upscale``; returns the parsers."""
    from syncsde.tasks.cli_new import _common

    ps = {}
    p = subparsers.add_parser("regions", help="region prompts on a canvas of any size",
                              description="K regions (boxes or masks) with their own prompts and "
                                          "weights, a background prompt; see docs/models/regions.md.")
    _common(p)
    p.add_argument("layout", help="layout file (.json or .toml)")
    p.add_argument("--feather", type=finite_float, default=None,
                   help="blur region masks by this many latent pixels (overrides the layout)")
    p.add_argument("--gaussian", action="store_true",
                   help="Mixture of Diffusers' Gaussian weights per window (canonical strategies)")
    p.add_argument("--bootstrap", type=_unit_float, default=None,
                   help="fraction of steps with bootstrapped region views (canonical strategies)")
    p.add_argument("--control", default=None, help="control image (ControlNet models), cropped per window")
    p.add_argument("--controlnet-scale", type=finite_float, default=None)
    p.set_defaults(func=_run_regions)
    ps["regions"] = p

    p = subparsers.add_parser("upscale", help="tiled img2img / upscaling over windows",
                              description="Resize IMAGE by --scale, encode (tiled VAE), noise to "
                                          "--strength or DDIM-invert, synchronize windows, decode.")
    _common(p)
    p.add_argument("image")
    p.add_argument("--scale", type=finite_float, default=2.0, help="output = scale x input size")
    p.add_argument("--prompt", required=True)
    p.add_argument("--strength", type=_unit_float, default=0.5)
    p.add_argument("--start", choices=("noise", "inversion"), default="noise")
    p.add_argument("--mask", default=None, help="PNG, white = regenerate (rest kept)")
    p.add_argument("--window", type=positive_int, default=None, help="pixels (default: model size)")
    p.add_argument("--stride", type=positive_int, default=None, help="pixels (default: window/2)")
    p.add_argument("--vae-tile", type=positive_int, default=None, help="VAE tile, latent pixels")
    p.add_argument("--control", default=None, help="control image (ControlNet models)")
    p.add_argument("--controlnet-scale", type=finite_float, default=None)
    p.set_defaults(func=_run_upscale)
    ps["upscale"] = p
    return ps
