"""Pictures of the three extension-API tasks on the built-in scenes model (no download).

    python tools/new_task_pictures.py --out docs/new_tasks --steps 15

Writes, per task and strategy, the PNG (tileable: also tiled 3x3; hybrid: also its far
reading) and ``scenes_stats.json`` with each picture's seam / coherence statistic:
tileable: wrap jump over interior jump (columns, rows); panorama360: the 180-degree meridian's
jump over interior jumps and the view mismatch; hybrid: the far reading's agreement with the far
prompt and the windows' with the near prompt (the scenes classifier's prompt agreement).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from syncsde.atomic import atomic_save_png, atomic_write_json
from syncsde.denoisers.diffusers_models import to_pil
from syncsde.metrics import ScenesFeatureNet, prompt_agreement_rate, seam_statistic
from syncsde.models import load_pipeline
from syncsde.tasks import hybrid_image, panorama_image, tileable_image
from syncsde.benchmark_tasks import view_mismatch
from syncsde.tasks.tileable import wrap_seam_statistic


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="docs/new_tasks")
    ap.add_argument("--steps", type=int, default=15)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--strategies", default="syncsde,multidiffusion")
    ap.add_argument("--tasks", default="tileable,panorama360,hybrid")
    args = ap.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    pipe = load_pipeline("scenes")
    kw = dict(num_inference_steps=args.steps, guidance_scale=3.0, seed=args.seed, progress=True)
    stats = {}
    if (out / "scenes_stats.json").exists():  # keep earlier runs' entries
        stats = json.loads((out / "scenes_stats.json").read_text())
    tasks = set(args.tasks.split(","))
    embedder = ScenesFeatureNet()
    for strat in args.strategies.split(","):
        if "tileable" in tasks:
            run_tileable(pipe, strat, kw, out, stats)
        if "panorama360" in tasks:
            run_panorama(pipe, strat, kw, out, stats)
        if "hybrid" in tasks:
            run_hybrid(pipe, strat, kw, out, stats, embedder)
    atomic_write_json(out / "scenes_stats.json", stats, indent=1)
    return 0


def run_tileable(pipe, strat, kw, out, stats):
    # the scenes model has sky above ground, so the loop is horizontal (one row of windows)
    r = tileable_image(pipe, "a sunny day over grass with trees", 32, 96, window=32,
                       stride=(32, 16), strategy=strat, **kw)
    atomic_save_png(r.images[0], str(out / f"tileable_{strat}.png"))
    atomic_save_png(r.extras["tiled_image"], str(out / f"tileable_{strat}_tiled3x3.png"))
    stats[f"tileable/{strat}"] = wrap_seam_statistic(r.tensors.double(), 16)
    print(stats[f"tileable/{strat}"], flush=True)


def run_panorama(pipe, strat, kw, out, stats):
    r = panorama_image(pipe, "a sunset over the sea with mountains", 32, strategy=strat, **kw)
    atomic_save_png(r.images[0], str(out / f"panorama360_{strat}.png"))
    x = r.tensors.double()
    stats[f"panorama360/{strat}"] = {
        "meridian_seam": seam_statistic(torch.cat([x, x[..., :1]], -1), [x.shape[-1]]),
        "view_mismatch": view_mismatch(r.extras["problem"].views, r.result.views, r.result.canvas)}
    print(stats[f"panorama360/{strat}"], flush=True)


def run_hybrid(pipe, strat, kw, out, stats, embedder):
    far_p, near_p = "a night with a moon over snow", "a sunny day over the desert"
    r = hybrid_image(pipe, far_p, near_p, strategy=strat, **kw)
    atomic_save_png(r.images[0], str(out / f"hybrid_{strat}.png"))
    atomic_save_png(to_pil(r.extras["far"])[0], str(out / f"hybrid_{strat}_far.png"))
    crops = torch.cat([r.tensors[..., t:t + 32, l:l + 32] for t in (0, 16, 32) for l in (0, 16, 32)])
    s = {"far_agreement": prompt_agreement_rate(r.extras["far"], [far_p], embedder),
         "near_agreement": prompt_agreement_rate(crops, [near_p] * len(crops), embedder),
         "whole_as_far": prompt_agreement_rate(r.tensors, [far_p], embedder)}
    stats[f"hybrid/{strat}"] = s
    print(s, flush=True)


if __name__ == "__main__":
    sys.exit(main())
