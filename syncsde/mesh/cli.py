"""``syncsde texture MESH "prompt"``: the mesh-texturing subcommand.

Registered by the main CLI with ``add_texture_command(subparsers)``; the handler returns the
list of written files (textured OBJ/MTL/PNG, GLB, turntable PNG strip and GIF, settings JSON).
"""
from __future__ import annotations

import argparse

from syncsde.cli_checks import check_device, check_input_file, finite_float, positive_int

__all__ = ["add_texture_command"]


def _run_texture(args) -> list[str]:
    from syncsde.atomic import check_output_dir
    from syncsde.cli_models import _load
    from syncsde.mesh.io import load_mesh
    from syncsde.mesh.pipeline import texture_mesh

    check_device(args.device)
    check_output_dir(args.out)
    check_input_file(args.mesh, "MESH")
    mesh = load_mesh(args.mesh, atlas=args.atlas)  # mesh errors before any model loads
    pipe = _load(args, args.model)
    res = texture_mesh(pipe, mesh, args.prompt, out=args.out, strategy=args.strategy,
                       inv_lambda=args.inv_lambda, num_inference_steps=args.steps,
                       guidance_scale=args.guidance, negative_prompt=args.negative_prompt,
                       view_size=args.view_size, latent_texture_size=args.latent_texture,
                       rgb_texture_size=args.texture, eta=args.eta, seed=args.seed,
                       progress=not args.no_progress)
    files = res.extras["files"]
    out = [files[k] for k in ("obj", "mtl", "png", "glb", "turntable_png", "turntable_gif",
                              "settings")]
    for f in out:
        print(f)
    return out


def add_texture_command(subparsers) -> argparse.ArgumentParser:
    from syncsde.mesh.pipeline import DEFAULT_NEGATIVE
    from syncsde.models import DEFAULT_DEPTH_CONTROLNET
    from syncsde.tasks.texture import TEXTURE_STRATEGIES

    p = subparsers.add_parser(
        "texture", help="texture a mesh (OBJ/PLY/GLB) with SD 1.5 + depth ControlNet",
        description="Mesh texturing (authors: SD 1.5 + depth ControlNet v1.1, 10 views, 768 px, "
                    "30 steps, CFG 15.5, SyncSDE 5 t/1000 while t > 200).")
    p.add_argument("mesh", help="mesh file (OBJ, PLY, GLB, GLTF)")
    p.add_argument("prompt")
    g = p.add_argument_group("model")
    g.add_argument("--model", default=DEFAULT_DEPTH_CONTROLNET,
                   help=f"ControlNet id/folder (its SD 1.5 base is loaded too) or an SD+ControlNet "
                        f"pipeline folder (default {DEFAULT_DEPTH_CONTROLNET})")
    g.add_argument("--device", default=None)
    g.add_argument("--dtype", choices=("auto", "fp16", "fp32", "bf16"), default="auto")
    g.add_argument("--variant", default=None)
    g.add_argument("--cpu-offload", action="store_true")
    g.add_argument("--local-files-only", action="store_true")
    s = p.add_argument_group("sampling")
    s.add_argument("--strategy", choices=sorted(TEXTURE_STRATEGIES), default="syncsde")
    s.add_argument("--inv-lambda", type=finite_float, default=5.0)
    s.add_argument("--steps", type=positive_int, default=30)
    s.add_argument("--guidance", type=finite_float, default=15.5)
    s.add_argument("--eta", type=finite_float, default=1.0, help="1: DDPM-like (authors), 0: DDIM")
    s.add_argument("--negative-prompt", default=DEFAULT_NEGATIVE)
    s.add_argument("--view-size", type=positive_int, default=768, help="view size in pixels")
    s.add_argument("--latent-texture", type=positive_int, default=512)
    s.add_argument("--texture", type=positive_int, default=1024, help="RGB texture size")
    s.add_argument("--atlas", choices=("auto", "xatlas", "per_triangle"), default="auto",
                   help="UV atlas for meshes without (usable) UVs")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--out", default="outputs")
    s.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=_run_texture)
    return p
