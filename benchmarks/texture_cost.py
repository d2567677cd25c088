"""Cost of the mesh-texturing geometry at the authors' sizes on this machine: rasterization,
building the sparse maps, and one sampler step's coupling (SyncSDE's 9 bakes + renders, the
texture-space average), next to the model call of that step.

    python benchmarks/texture_cost.py            # geometry + coupling only
    python benchmarks/texture_cost.py --unet     # also one SD 1.5-sized UNet call (random
                                                 # weights, CPU, fp32) to put the share in context

The mesh is an icosphere with 20480 faces (per-triangle atlas); 10 views (the authors' cameras),
latents 4x96x96 with a 512^2 latent texture, RGB 768^2 views with a 1024^2 texture.
"""
from __future__ import annotations

import argparse
import time

import syncsde  # noqa: F401
import torch


def timed(fn, repeat=3):
    fn()
    t = time.perf_counter()
    for _ in range(repeat):
        fn()
    return (time.perf_counter() - t) / repeat


def main(argv=None):
    import trimesh

    from syncsde import ops
    from syncsde.mesh import TextureEarlierViews, TextureViews, default_cameras, mesh_from_arrays
    from syncsde.mesh.camera import rasterize_view

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--unet", action="store_true")
    ap.add_argument("--latent-texture", type=int, default=512)
    args = ap.parse_args(argv)
    s = trimesh.creation.icosphere(5)
    mesh = mesh_from_arrays(s.vertices, s.faces, atlas="per_triangle")
    cams = default_cameras()
    print(f"threads {ops.get_num_threads()}, mesh {mesh.num_faces} faces, {len(cams)} views")
    rows = []
    corners = [c.to_pixels(mesh.vertices[mesh.faces], 768, 768) for c in cams]
    t_r = timed(lambda: [ops.rasterize(c, 768, 768, True) for c in corners])
    rows.append(("rasterize 10 views at 768^2 (C kernel)", t_r))
    rows.append(("rasterize_view 10 views at 768^2 (+ UV, cos, points)",
                 timed(lambda: [rasterize_view(mesh, c, 768, 768) for c in cams], 1)))
    t0 = time.perf_counter()
    V = TextureViews(mesh, cams, 96, args.latent_texture, 4)
    rows.append((f"build latent maps (96^2 views, {args.latent_texture}^2 texture)",
                 time.perf_counter() - t0))
    t0 = time.perf_counter()
    TextureViews(mesh, cams, 768, 1024, 3, cos_power=6.0, background=False)
    rows.append(("build RGB maps (768^2 views, 1024^2 texture)", time.perf_counter() - t0))
    y = torch.randn(10, 4, 96, 96)
    corr = TextureEarlierViews()
    corr.masks(V, y)
    t_sync = timed(lambda: corr.references(y, V))
    rows.append(("one step: SyncSDE references (9 bakes + 9 renders)", t_sync))
    t_avg = timed(lambda: V.forward(V.average(y)))
    rows.append(("one step: texture-space average + render (SyncMVD/SyncTweedies)", t_avg))
    unet = None
    if args.unet:
        from diffusers import UNet2DConditionModel

        torch.manual_seed(0)
        net = UNet2DConditionModel(sample_size=96, cross_attention_dim=768).eval()  # SD 1.5 shape
        x = torch.randn(1, 4, 96, 96)
        emb = torch.randn(1, 77, 768)
        with torch.no_grad():
            t1 = timed(lambda: net(x, 500, emb), 1)
        unet = 20 * t1  # 10 views x 2 CFG halves; the ControlNet adds about half a UNet more
        rows.append(("SD 1.5 UNet, 1 latent 4x96x96 (fp32 CPU)", t1))
        rows.append(("  x 20 (10 views x CFG) = one step's UNet calls, ControlNet excluded", unet))
    print("| what | seconds |")
    print("|---|---|")
    for name, t in rows:
        print(f"| {name} | {t:.3f} |")
    if unet:
        print(f"\nSyncSDE coupling per step = {100 * t_sync / (t_sync + unet):.2f}% of (coupling + "
              f"UNet calls); texture average = {100 * t_avg / (t_avg + unet):.2f}%")
    return rows


if __name__ == "__main__":
    main()
