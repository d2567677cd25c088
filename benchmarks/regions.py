"""Region prompts and tiled upscaling on the built-in scenes model (docs/models/regions.md,
docs/models/upscale.md). Rerunnable; every number in those pages comes from here.

    python benchmarks/regions.py regions --seeds 4 --steps 20      # -> docs/models/regions_*
    python benchmarks/regions.py upscale --images 16 --steps 20    # -> docs/models/upscale_*
    python benchmarks/regions.py all --quick                       # smoke run (1 seed / 2 images)

regions: 32x96 canvases (three 32x32 panels; windows 32 every 16): a left region prompt on
[0, 32), a right region prompt on [64, 96) and the background prompt in between. Per strategy:
the scenes classifier's accuracy on each panel's crop against that panel's prompt (time,
ground, ridge count and every named object), the seam jump across the region borders (columns
32 and 64) and across every window border, as the ratio to the mean jump at all other columns
(1 = no seam), and seconds and views (model inputs) per step per image.

upscale: procedural 32x32 scenes (the generator's own images), x2 to 64x64 with their prompt,
strength 0.5. Content kept: LPIPS-style distance (scenes-classifier feature maps) between the
result downsampled to 32x32 and the input, and the classifier's attribute agreement with the
input's true attributes on the downsampled result; detail: KID x1000 (scenes features) of the
four 32x32 crops of each result against the four crops of 64 generator scenes rendered at 64x64
(the same zoom); seconds per image. Bicubic resizing
is the no-diffusion baseline.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from syncsde.atomic import atomic_write_json  # noqa: E402

LAYOUTS = [  # (left region, background = middle, right region)
    ("a day over grass", "a sunset over the desert", "a night over the sea with a moon"),
    ("a night over snow", "a day over the sea", "a sunset over grass with trees"),
    ("a sunset over the sea with boats", "a night over grass", "a day over snow"),
    ("a day over the desert", "a night over snow with a moon", "a sunset over the sea"),
]

REGION_STRATEGIES = [  # (label, strategy, layout options)
    ("syncsde", "syncsde", {}),
    ("syncsde + feather 2", "syncsde", {"feather": 2.0}),
    ("multidiffusion", "multidiffusion", {}),
    ("multidiffusion + gaussian + feather 2", "multidiffusion", {"gaussian": True, "feather": 2.0}),
    ("multidiffusion + bootstrap 20%", "multidiffusion", {"bootstrap": 0.2}),
    ("independent windows", "independent", {}),
]


def _layout(left: str, bg: str, right: str, **opts) -> dict:
    return {"width": 96, "height": 32, "background": bg, "window": 32, "stride": 16,
            "regions": [{"prompt": left, "box": [0, 0, 32, 32]},
                        {"prompt": right, "box": [64, 0, 96, 32]}], **opts}


def _agreement(pred: dict, prompt: str) -> tuple[int, int]:
    """(agreeing, fixed) over time, ground, ridge count (prompt_agreement) and named objects."""
    from syncsde.scenes.classifier import prompt_agreement
    from syncsde.scenes.vocab import parse_prompt

    spec = parse_prompt(prompt)
    ok, n = prompt_agreement(pred, spec)
    for o in spec.objects:
        n += 1
        ok += int(pred[f"has_{o}"])
    return ok, n


def run_regions(args) -> dict:
    from syncsde.metrics.coherence import seam_jump
    from syncsde.models import load_pipeline
    from syncsde.scenes.classifier import load_classifier, predict_attributes
    from syncsde.tasks.regions import regions_image
    from syncsde.tasks.runner import resolve_denoiser

    den = resolve_denoiser(load_pipeline(args.model))
    clf = load_classifier()
    seeds = range(1 if args.quick else args.seeds)
    rows, examples = [], {}
    for label, strategy, opts in REGION_STRATEGIES[:args.rows]:
        acc = {"left": [0, 0], "middle": [0, 0], "right": [0, 0]}
        images, secs, calls = [], [], []
        for li, (left, bg, right) in enumerate(LAYOUTS[:args.layouts]):
            for seed in seeds:
                t0 = time.perf_counter()
                res = regions_image(den, _layout(left, bg, right, **opts), strategy=strategy,
                                    num_inference_steps=args.steps, guidance_scale=args.guidance,
                                    seed=seed, progress=False)
                secs.append(time.perf_counter() - t0)
                calls.append(res.settings["num_views"])
                img = res.tensors[0]
                images.append(img)
                if seed == 0:
                    examples.setdefault(li, []).append((label, img))
                crops = torch.stack([img[:, :, 0:32], img[:, :, 32:64], img[:, :, 64:96]])
                preds = predict_attributes(clf, crops)
                for name, pred, prompt in zip(("left", "middle", "right"), preds, (left, bg, right)):
                    ok, n = _agreement(pred, prompt)
                    acc[name][0] += ok
                    acc[name][1] += n
        region_seams = seam_jump(images, [32, 64])
        window_seams = seam_jump(images, [16, 32, 48, 64, 80])
        row = {"label": label, "strategy": strategy, "options": opts, "images": len(images),
               **{f"acc_{k}": v[0] / v[1] for k, v in acc.items()},
               "acc_mean": sum(v[0] for v in acc.values()) / sum(v[1] for v in acc.values()),
               "region_seam_ratio": region_seams["ratio"], "region_seam_jump": region_seams["jump"],
               "window_seam_ratio": window_seams["ratio"],
               "seconds_per_image": float(np.mean(secs)), "views_per_step": float(np.mean(calls))}
        rows.append(row)
        print(f"{label:40s} acc L/M/R {row['acc_left']:.2f}/{row['acc_middle']:.2f}/"
              f"{row['acc_right']:.2f} mean {row['acc_mean']:.3f}  region seam {row['region_seam_ratio']:.2f}"
              f"  window seam {row['window_seam_ratio']:.2f}  {row['seconds_per_image']:.2f} s", flush=True)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for li, ex in examples.items():
        _grid(ex, out / f"regions_layout{li}.png", LAYOUTS[li])
    result = {"model": args.model, "steps": args.steps, "guidance": args.guidance,
              "seeds": len(list(seeds)), "layouts": LAYOUTS[:args.layouts], "canvas": [32, 96], "window": 32,
              "stride": 16, "rows": rows}
    atomic_write_json(out / "regions_benchmark.json", result)
    print("\n| strategy | acc left | acc middle (bg) | acc right | acc mean | region-border seam | "
          "window seam | s / image | views per step |\n|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['label']} | {r['acc_left']:.3f} | {r['acc_middle']:.3f} | {r['acc_right']:.3f} | "
              f"{r['acc_mean']:.3f} | {r['region_seam_ratio']:.2f} | {r['window_seam_ratio']:.2f} | "
              f"{r['seconds_per_image']:.2f} | {r['views_per_step']:.0f} |")
    return result


def _grid(examples, path: Path, captions=None, scale: int = 4) -> None:
    """Rows of images (label, [3, H, W]) upscaled ``scale``x nearest, labelled, into one PNG."""
    from PIL import Image, ImageDraw

    from syncsde.atomic import atomic_save_png
    from syncsde.denoisers.diffusers_models import to_pil

    ims = [to_pil(img)[0] for _, img in examples]
    W = max(i.width for i in ims) * scale
    H = ims[0].height * scale
    pad = 14
    top = pad if captions else 0
    canvas = Image.new("RGB", (W, top + len(ims) * (H + pad)), "white")
    d = ImageDraw.Draw(canvas)
    if captions:
        d.text((2, 1), " | ".join(captions), fill="black")
    for k, ((label, _), im) in enumerate(zip(examples, ims)):
        y = top + k * (H + pad)
        d.text((2, y + 1), label, fill="black")
        canvas.paste(im.resize((im.width * scale, im.height * scale), Image.NEAREST), (0, y + pad))
    atomic_save_png(canvas, str(path))


UPSCALE_METHODS = [  # (label, strategy, start)
    ("syncsde, SDEdit noise", "syncsde", "noise"),
    ("multidiffusion, SDEdit noise", "multidiffusion", "noise"),
    ("independent windows, SDEdit noise", "independent", "noise"),
    ("syncsde, DDIM inversion", "syncsde", "inversion"),
    ("multidiffusion, DDIM inversion", "multidiffusion", "inversion"),
]


def run_upscale(args) -> dict:
    import torch.nn.functional as F

    from syncsde.metrics.features import ScenesFeatureNet
    from syncsde.metrics.fid_kid import KID_SCALE, kid
    from syncsde.metrics.perceptual import lpips
    from syncsde.models import load_pipeline
    from syncsde.scenes.classifier import load_classifier, predict_attributes, prompt_agreement
    from syncsde.scenes.generator import random_spec, render, render_batch, scene_rng
    from syncsde.scenes.vocab import prompt_for
    from syncsde.tasks.runner import resolve_denoiser
    from syncsde.tasks.upscale import upscale_image

    den = resolve_denoiser(load_pipeline(args.model))
    clf = load_classifier()
    net = ScenesFeatureNet(clf)
    n = min(2, args.images) if args.quick else args.images
    specs = [random_spec(scene_rng(1234, i)) for i in range(n)]
    scenes = [render(s, 32, 32, scene_rng(4321, i)) for i, s in enumerate(specs)]
    inputs = torch.stack([torch.from_numpy(np.asarray(s.image, np.float32)).permute(2, 0, 1)
                          for s in scenes])
    if inputs.max() > 1.5:
        inputs = inputs / 255.0
    ref_specs = [random_spec(scene_rng(99, i)) for i in range(64)]
    ref_imgs, _ = render_batch(ref_specs, 64, 64, seed=99)  # the scenes at the output size
    ref = torch.from_numpy(np.asarray(ref_imgs, np.float32)).permute(0, 3, 1, 2)
    if ref.max() > 1.5:
        ref = ref / 255.0
    ref = torch.cat([ref[..., :32, :32], ref[..., :32, 32:], ref[..., 32:, :32], ref[..., 32:, 32:]])
    ref_feats = net.features(ref).numpy()

    def score(label, outs, secs):
        outs = torch.stack(outs)
        small = F.interpolate(outs, size=(32, 32), mode="bilinear", antialias=True,
                              align_corners=False).clamp(0, 1)
        dist = lpips(small, inputs, net).mean().item()
        ok = tot = 0
        for pred, spec in zip(predict_attributes(clf, small), specs):
            a, b = prompt_agreement(pred, spec)
            ok, tot = ok + a, tot + b
        crops = torch.cat([outs[..., :32, :32], outs[..., :32, 32:], outs[..., 32:, :32],
                           outs[..., 32:, 32:]])
        k, _ = kid(net.features(crops).numpy(), ref_feats, subsets=50,
                   subset_size=min(len(crops), 100), seed=0)
        row = {"label": label, "feature_distance": dist, "attribute_agreement": ok / max(tot, 1),
               "crop_kid_x1000": k * KID_SCALE, "seconds_per_image": float(np.mean(secs))}
        print(f"{label:38s} dist {dist:.4f}  agree {row['attribute_agreement']:.3f}  "
              f"KID x1e3 {row['crop_kid_x1000']:.2f}  {row['seconds_per_image']:.2f} s", flush=True)
        return row

    rows, examples = [], {i: [] for i in range(min(n, 3))}
    t0 = time.perf_counter()
    bic = [F.interpolate(x[None], scale_factor=2, mode="bicubic", align_corners=False)[0].clamp(0, 1)
           for x in inputs]
    rows.append(score("bicubic (no diffusion)", bic, [(time.perf_counter() - t0) / n]))
    for i in examples:
        examples[i] += [("input (nearest x2)", F.interpolate(inputs[i][None], scale_factor=2)[0]),
                        ("bicubic", bic[i])]
    for label, strategy, start in UPSCALE_METHODS[:args.rows]:
        outs, secs = [], []
        for i in range(n):
            t = time.perf_counter()
            res = upscale_image(den, inputs[i], 2, prompt_for(specs[i]), strength=args.strength,
                                start=start, strategy=strategy, num_inference_steps=args.steps,
                                guidance_scale=args.guidance, seed=i, progress=False)
            secs.append(time.perf_counter() - t)
            outs.append(res.tensors[0])
            if i in examples:
                examples[i].append((label, res.tensors[0]))
        rows.append(score(label, outs, secs))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for i, ex in examples.items():
        _grid_row(ex, out / f"upscale_example{i}.png", prompt_for(specs[i]))
    result = {"model": args.model, "steps": args.steps, "strength": args.strength,
              "guidance": args.guidance, "images": n, "input": [32, 32], "scale": 2,
              "window": 32, "stride": 16, "reference_scenes": len(ref), "rows": rows}
    atomic_write_json(out / "upscale_benchmark.json", result)
    print("\n| method | feature distance to input (lower = kept) | attribute agreement | "
          "crop KID x1000 | s / image |\n|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['label']} | {r['feature_distance']:.4f} | {r['attribute_agreement']:.3f} | "
              f"{r['crop_kid_x1000']:.2f} | {r['seconds_per_image']:.2f} |")
    return result


def _grid_row(examples, path: Path, caption: str, scale: int = 3) -> None:
    from PIL import Image, ImageDraw

    from syncsde.atomic import atomic_save_png
    from syncsde.denoisers.diffusers_models import to_pil

    ims = [to_pil(img)[0].resize((64 * scale, 64 * scale), Image.NEAREST) for _, img in examples]
    w, pad = 64 * scale + 4, 28
    canvas = Image.new("RGB", (w * len(ims), 64 * scale + 2 * pad), "white")
    d = ImageDraw.Draw(canvas)
    d.text((2, 1), caption, fill="black")
    for k, ((label, _), im) in enumerate(zip(examples, ims)):
        d.text((k * w + 2, pad - 13), label[:34], fill="black")
        canvas.paste(im, (k * w, pad))
    atomic_save_png(canvas, str(path))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("what", choices=("regions", "upscale", "all"))
    ap.add_argument("--model", default="scenes")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--guidance", type=float, default=3.0, help="CFG (the scenes model: 3)")
    ap.add_argument("--seeds", type=int, default=4, help="seeds per region layout")
    ap.add_argument("--images", type=int, default=16, help="upscaled images")
    ap.add_argument("--layouts", type=int, default=len(LAYOUTS), help="region layouts (first N)")
    ap.add_argument("--rows", type=int, default=None, help="only the first N strategies / methods")
    ap.add_argument("--strength", type=float, default=0.5)
    ap.add_argument("--out", default=str(ROOT / "docs" / "models"))
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args(argv)
    torch.manual_seed(0)
    if args.what in ("regions", "all"):
        run_regions(args)
    if args.what in ("upscale", "all"):
        run_upscale(args)
    return 0


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    sys.exit(main())
