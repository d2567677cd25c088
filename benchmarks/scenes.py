"""The scenes benchmark: every synchronization strategy on the learned scenes model, scored against
the procedural generator's known law (docs/benchmarks.md, "Scenes benchmark").

    python benchmarks/scenes.py --json docs/scenes_benchmark.json --plot docs/scenes_benchmark.png
    python benchmarks/scenes.py --quick            # 2 samples per cell (a smoke run)

Per task and strategy (seconds per sample beside every row):

- wide (32x256 panoramas, 32x32 windows, stride 16): KID (scene-classifier features, biased
  V-statistic) of random 32x32 crops against crops of the generator's own wide scenes of
  the same prompt; suns per panorama (a colour-blob detector run on both, so its bias cancels)
  against the generator's count (Poisson law: 0.7 per 32 columns); horizon spread (std over
  columns of the per-column horizon row estimate); HSV hue-histogram intersection between the
  non-overlapping 32-column crops (SyncVC's colour consistency; 1 = identical colours);
  and against the model's own window law (plain 32x32 samples of the prompt at the same
  guidance, row ``model windows``): ``kid_windows`` of the same crops and ``crop_suns``, suns
  per 32x32 crop (the strategy's error with the model's own error taken out);
- ambiguous (identity + rot180): the classifier's accuracy on the attributes of both readings;
- edit (sunset -> night, grass -> snow on generator images): the target attribute read by the
  classifier, and the mean absolute change outside the edit mask (background preservation);
- mask (a boat on the sea, a house on the grass, in a box): the object flag read on the answer,
  whether it is inside the box (the flag is off once the box shows the background trajectory),
  and the attributes of the combined prompt.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from syncsde.atomic import atomic_savefig, atomic_write_json  # noqa: E402

WIDE_STRATEGIES = ["independent", "multidiffusion", "synctweedies", "syncsde", "collage"]
AMBIGUOUS_STRATEGIES = ["independent", "noise_average", "syncsde"]
EDIT_STRATEGIES = ["independent", "syncsde"]
MASK_STRATEGIES = ["multidiffusion", "syncsde", "inpaint"]
# (background prompt, object prompt = combined prompt, object flag, mask rows, mask columns)
MASK_CASES = [("a sunset over the sea", "a sunset over the sea with a boat", "boats", (19, 29), (9, 23)),
              ("a day over the grass", "a day over the grass with a house", "houses", (14, 28), (8, 24))]
WIDE_PROMPT = "a sunset over the sea with mountains and a sun"
AMBIGUOUS_PAIRS = [("a sunset over the sea with mountains", "a night over the snow"),
                   ("a day over the grass", "a night over the sea")]
EDIT_SOURCE = "a sunset over the grass with hills and trees"
EDITS = [("sunset", "night", "time"), ("grass", "snow", "ground")]
# attention-mask threshold of the edit task: the authors' 0.3 (SD 1.4) covers the whole 32x32
# image on the scenes model, whose cross-attention lives at 8x8 and 4x4; 0.5 gives the ground
# for "grass" (docs/benchmarks.md) and 0.7 an empty mask
EDIT_TAU = 0.5
# classifier-free guidance of every task (--guidance-scale); 1 samples the model's own law,
# which is what the generator's statistics describe
GUIDANCE_SCALE = 3.0


def count_suns(img: np.ndarray) -> int:
    """Sunset suns: connected blobs (>= 6 px) of saturated orange, ``img [H, W, 3]`` in [0, 1]."""
    from scipy import ndimage

    r, g, b = img[..., 0], img[..., 1], img[..., 2]
    m = (r > 0.85) & (g > 0.25) & (g < 0.7) & (b < 0.4)
    lab, n = ndimage.label(m)
    return int(sum(1 for i in range(1, n + 1) if (lab == i).sum() >= 6))


def horizon_spread(img: np.ndarray) -> float:
    """Std over columns of the row with the largest colour jump in the lower two thirds."""
    H = img.shape[0]
    d = np.abs(np.diff(img, axis=0)).sum(-1)[H // 3:]
    return float(np.std(np.argmax(d, axis=0)))


def hue_intersection(img: np.ndarray, w: int = 32, bins: int = 16) -> float:
    """Mean histogram intersection of HSV hue (saturation-weighted) between non-overlapping
    ``w``-column crops."""
    import matplotlib.colors as mc

    hsv = mc.rgb_to_hsv(np.clip(img, 0, 1))
    hists = []
    for x in range(0, img.shape[1] - w + 1, w):
        c = hsv[:, x:x + w]
        h, _ = np.histogram(c[..., 0], bins=bins, range=(0, 1), weights=c[..., 1] + 1e-6)
        hists.append(h / h.sum())
    vals = [np.minimum(hists[i], hists[j]).sum() for i in range(len(hists))
            for j in range(i + 1, len(hists))]
    return float(np.mean(vals))


def parse_strategy(spec: str):
    """``name`` or ``name:key=value,key=value`` (numbers and True / False parsed) -> (label,
    strategy object)."""
    from syncsde.strategies import make_strategy

    name, _, rest = spec.partition(":")
    opts = {}
    for kv in filter(None, rest.split(",")):
        k, eq, v = kv.partition("=")
        if not eq:
            raise SystemExit(f"bad strategy option {kv!r} in {spec!r}; expected key=value")
        if v in ("True", "False"):
            opts[k] = v == "True"
            continue
        try:
            opts[k] = int(v)
        except ValueError:
            try:
                opts[k] = float(v)
            except ValueError:
                opts[k] = v
    return spec, (make_strategy(name, **opts) if opts else name)


def random_crops(imgs: list[np.ndarray], per: int, rng) -> torch.Tensor:
    out = []
    for im in imgs:
        for x in rng.integers(0, im.shape[1] - 32 + 1, per):
            out.append(im[:, x:x + 32])
    return torch.from_numpy(np.stack(out)).permute(0, 3, 1, 2).float()


WIDE_STRIDE = 16
WIDE_PICTURES: dict[str, list[np.ndarray]] = {}  # label -> the first panoramas (for --pictures)
WIDE_PER_SAMPLE: dict[str, dict[str, list[float]]] = {}  # label -> figure -> value per seed


def wide(pipe, clf, n, steps, log):
    from syncsde.pipelines import wide_image
    from syncsde.scenes.evaluate import mmd2_biased, sample_images
    from syncsde.scenes.generator import render, scene_rng
    from syncsde.scenes.vocab import parse_prompt

    ps = parse_prompt(WIDE_PROMPT)
    gen = [render(ps.sample_spec(scene_rng(100, i)), 32, 256, scene_rng(101, i)).image
           for i in range(max(n, 8))]
    rng = np.random.default_rng(0)
    f_gen = clf.features(random_crops(gen, 8, rng)).detach().numpy()
    f_gen2 = clf.features(random_crops(gen, 8, rng)).detach().numpy()

    def stats(label, imgs):
        """Mean and standard error of each per-panorama figure; the values themselves are kept
        (per seed, so strategies can be compared pairwise) in WIDE_PER_SAMPLE."""
        out = {}
        for key, fn in (("suns", count_suns), ("horizon_spread", horizon_spread),
                        ("hue_intersection", hue_intersection)):
            v = np.array([float(fn(i)) for i in imgs])
            WIDE_PER_SAMPLE.setdefault(label, {})[key] = v.tolist()
            out[key] = float(v.mean())
            if len(v) > 1:
                out[key + "_se"] = float(v.std(ddof=1) / np.sqrt(len(v)))
        return out

    res = {"generator": dict(stats("generator", gen), kid=mmd2_biased(f_gen2, f_gen),
                             seconds_per_sample=0.0)}
    # the model's own window law: plain 32x32 samples of the prompt at the same guidance, two
    # sets (the second gives the KID floor). A synchronization whose every window had exactly
    # the model's law would reach that floor: these figures separate the strategy's error from
    # the model's (docs/benchmarks.md, "Window-law reference")
    m = 8 * len(gen)
    wins = [sample_images(pipe, [WIDE_PROMPT] * m, seed=k, steps=steps,
                          guidance_scale=GUIDANCE_SCALE) for k in (7, 8)]
    f_win, f_win2 = (clf.features(w).detach().numpy() for w in wins)

    def crop_suns(crops: torch.Tensor) -> float:
        return float(np.mean([count_suns(c) for c in crops.permute(0, 2, 3, 1).numpy()]))

    gen_crops = random_crops(gen, 8, np.random.default_rng(0))   # the crops of f_gen
    res["generator"].update(kid_windows=mmd2_biased(f_gen, f_win),
                            crop_suns=crop_suns(gen_crops))
    res["model windows"] = {"kid": mmd2_biased(f_win, f_gen), "kid_windows": mmd2_biased(f_win2, f_win),
                            "crop_suns": crop_suns(wins[0]), "seconds_per_sample": 0.0}
    WIDE_PICTURES["generator"] = gen[:3]
    for name, strategy in map(parse_strategy, WIDE_STRATEGIES):
        t0 = time.perf_counter()
        imgs = []
        for s in range(n):
            r = wide_image(pipe, WIDE_PROMPT, height=32, width=256, stride=WIDE_STRIDE,
                           strategy=strategy, num_inference_steps=steps,
                           guidance_scale=GUIDANCE_SCALE, seed=s, progress=False)
            imgs.append(r.tensors[0].permute(1, 2, 0).numpy())
        dt = (time.perf_counter() - t0) / n
        # crop positions from their own seeded stream: a strategy's KID does not depend on
        # which strategies ran before it
        crop_rng = np.random.default_rng(1)
        crops = random_crops(imgs, max(1, 8 * len(gen) // n), crop_rng)
        f = clf.features(crops).detach().numpy()
        res[name] = dict(stats(name, imgs), kid=mmd2_biased(f, f_gen), seconds_per_sample=dt,
                         kid_windows=mmd2_biased(f, f_win), crop_suns=crop_suns(crops))
        # the generator's count is the truth: too few suns (averaged away) is as wrong as too many
        res[name]["suns_error"] = abs(res[name]["suns"] - res["generator"]["suns"])
        WIDE_PICTURES[name] = imgs[:3]
        log(f"  wide {name:16s} {res[name]}")
    return res


def ambiguous(pipe, clf, n, steps, log):
    from syncsde.pipelines import ambiguous_image
    from syncsde.scenes.classifier import predict_attributes, prompt_agreement
    from syncsde.scenes.vocab import parse_prompt

    res = {}
    for name, strategy in map(parse_strategy, AMBIGUOUS_STRATEGIES):
        t0 = time.perf_counter()
        ok = tot = 0
        for s in range(n):
            pa, pb = AMBIGUOUS_PAIRS[s % len(AMBIGUOUS_PAIRS)]
            r = ambiguous_image(pipe, pa, pb, view="rot180", strategy=strategy,
                                num_inference_steps=steps, guidance_scale=GUIDANCE_SCALE, seed=s,
                                progress=False)
            preds = predict_attributes(clf, r.tensors[:2])
            for pr, p in zip(preds, (pa, pb)):
                a, b = prompt_agreement(pr, parse_prompt(p))
                ok, tot = ok + a, tot + b
        res[name] = {"accuracy_both_readings": ok / tot,
                     "seconds_per_sample": (time.perf_counter() - t0) / n}
        log(f"  ambiguous {name:12s} {res[name]}")
    return res


def edit(pipe, clf, n, steps, log):
    from syncsde.pipelines import edit_image, replace_word
    from syncsde.scenes.classifier import predict_attributes
    from syncsde.scenes.generator import render, scene_rng
    from syncsde.scenes.vocab import parse_prompt

    res = {}
    for name, strategy in map(parse_strategy, EDIT_STRATEGIES):
        t0 = time.perf_counter()
        hit = []
        keep = []
        for s in range(n):
            src = render(parse_prompt(EDIT_SOURCE).sample_spec(scene_rng(200, s)), 32, 32,
                         scene_rng(201, s)).image
            for sw, tw, attr in EDITS:
                r = edit_image(pipe, src, EDIT_SOURCE, source_word=sw, target_word=tw,
                               strategy=strategy, num_inference_steps=steps, guidance_scale=GUIDANCE_SCALE,
                               seed=s, progress=False, tau=EDIT_TAU)
                want = getattr(parse_prompt(replace_word(EDIT_SOURCE, sw, tw)), attr)
                hit.append(predict_attributes(clf, r.tensors[:1])[0][attr] == want)
                out = (1 - r.extras["mask"]).bool()
                diff = (r.tensors[0] - torch.from_numpy(src).permute(2, 0, 1)).abs().mean(0)
                keep.append(float(diff[out].mean()) if out.any() else float("nan"))
        res[name] = {"target_attribute_accuracy": float(np.mean(hit)),
                     "change_outside_mask": float(np.nanmean(keep)),
                     "seconds_per_sample": (time.perf_counter() - t0) / (n * len(EDITS))}
        log(f"  edit {name:12s} {res[name]}")
    return res


def mask(pipe, clf, n, steps, log):
    """Mask composition: the object flag read by the classifier on the answer, the attributes
    of the combined prompt, and whether the object is *inside* the mask (the flag read on the
    answer with the mask region replaced by the background trajectory must be off)."""
    from syncsde.pipelines import mask_generation
    from syncsde.scenes.classifier import predict_attributes, prompt_agreement
    from syncsde.scenes.vocab import parse_prompt

    res = {}
    for name, strategy in map(parse_strategy, MASK_STRATEGIES):
        t0 = time.perf_counter()
        has, inside, ok, tot = [], [], 0, 0
        for s in range(n):
            bg, obj, flag, (r0, r1), (c0, c1) = MASK_CASES[s % len(MASK_CASES)]
            m = np.zeros((32, 32), np.float32)
            m[r0:r1, c0:c1] = 1
            r = mask_generation(pipe, m, bg, obj, obj, height=32, width=32, strategy=strategy,
                                num_inference_steps=steps, guidance_scale=GUIDANCE_SCALE, seed=s,
                                progress=False, decode_all=True)
            answer, background = r.tensors[0], r.tensors[1]
            outside_only = answer.clone()
            mm = torch.from_numpy(m).bool()
            outside_only[:, mm] = background[:, mm]
            pa, po = predict_attributes(clf, torch.stack([answer, outside_only]))
            has.append(pa[f"has_{flag}"])
            inside.append(pa[f"has_{flag}"] and not po[f"has_{flag}"])
            a, b = prompt_agreement(pa, parse_prompt(obj))
            ok, tot = ok + a, tot + b
        res[name] = {"object_present": float(np.mean(has)), "object_inside_mask": float(np.mean(inside)),
                     "attribute_accuracy": ok / tot,
                     "seconds_per_sample": (time.perf_counter() - t0) / n}
        log(f"  mask {name:12s} {res[name]}")
    return res


def sun_rates(pipe, n: int, steps: int, widths=(16, 32), scales=(1.0, 3.0)) -> dict:
    """Suns per image of the generator and of the model's plain samples of the wide prompt,
    ``32 x w`` for each width: how well the model knows the law of the narrow inputs (window
    overlaps) that the region graph subtracts. ``{width: {"generator": m, "cfg 1.0": [m, se], ...}}``."""
    from syncsde.scenes.generator import render, scene_rng
    from syncsde.scenes.vocab import parse_prompt

    ps = parse_prompt(WIDE_PROMPT)
    out = {}
    for w in widths:
        gen = [render(ps.sample_spec(scene_rng(600, i)), 32, w, scene_rng(601, i)).image
               for i in range(n)]
        row = {"generator": float(np.mean([count_suns(g) for g in gen]))}
        for cfg in scales:
            imgs = pipe([WIDE_PROMPT] * n, num_inference_steps=steps, guidance_scale=cfg,
                        generator=torch.Generator().manual_seed(7), height=32, width=w)
            v = np.array([count_suns(i) for i in imgs.permute(0, 2, 3, 1).numpy()], float)
            row[f"cfg {cfg}"] = [float(v.mean()), float(v.std(ddof=1) / np.sqrt(n)) if n > 1 else 0.0]
        out[int(w)] = row
    return out


def print_table(results: dict) -> None:
    for task, rows in results.items():
        cols = sorted({k for r in rows.values() for k in r})
        print(f"\n{task}\n| strategy | " + " | ".join(cols) + " |")
        print("|---|" + "---|" * len(cols))
        for name, r in rows.items():
            print(f"| {name} | " + " | ".join(f"{r[c]:.3f}" if c in r else "-" for c in cols) + " |")


def wide_table(doc: dict, baseline: str = "multidiffusion") -> str:
    """The wide rows of a saved run as markdown: each per-panorama figure with its standard
    error, and its paired difference (same seeds) from ``baseline`` with the difference's
    standard error, so that a gap can be read against its noise."""
    rows, per = doc["results"]["wide"], doc.get("wide_per_sample", {})
    figs = ("suns", "horizon_spread", "hue_intersection")
    head = ("| strategy | crop KID | KID vs model windows | suns / panorama | suns per crop | "
            "horizon spread | hue intersection | s / sample |")
    lines = [head, "|---|" + "---|" * 7]
    for name, r in rows.items():
        cells = [f"{r['kid']:.1f}" if "kid" in r else "-",
                 f"{r['kid_windows']:.1f}" if "kid_windows" in r else "-"]
        for key in figs[:1] + ("crop_suns",) + figs[1:]:
            if key not in r:
                cells.append("-")
                continue
            cell = f"{r[key]:.2f}" if key != "hue_intersection" else f"{r[key]:.3f}"
            if key + "_se" in r:
                cell += f" ± {r[key + '_se']:.2f}" if key != "hue_intersection" else \
                    f" ± {r[key + '_se']:.3f}"
            if key in figs and name not in (baseline, "generator") and baseline in per \
                    and name in per and len(per[name][key]) == len(per[baseline][key]) > 1:
                d = np.array(per[name][key]) - np.array(per[baseline][key])
                cell += f" ({d.mean():+.3f} ± {d.std(ddof=1) / np.sqrt(len(d)):.3f})"
            cells.append(cell)
        cells.append(f"{r['seconds_per_sample']:.1f}" if r.get("seconds_per_sample") else "-")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot(results: dict, path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [("wide", "kid", "wide: crop KID (lower better)"),
              ("wide", "suns", "wide: suns per panorama (generator = truth)"),
              ("wide", "hue_intersection", "wide: hue intersection"),
              ("ambiguous", "accuracy_both_readings", "ambiguous: accuracy, both readings"),
              ("edit", "target_attribute_accuracy", "edit: target attribute accuracy")]
    panels = [p for p in panels if p[0] in results]
    fig, axes = plt.subplots(1, len(panels), figsize=(3.3 * len(panels), 3.4))
    for ax, (task, key, title) in zip(np.atleast_1d(axes), panels):
        names = list(results[task])
        vals = [results[task][n].get(key, np.nan) for n in names]
        ax.bar(range(len(names)), vals,
               color=["#999999" if n in ("generator", "model windows") else "#3b75af"
                      for n in names])
        ax.set_xticks(range(len(names)), names, rotation=60, ha="right", fontsize=7)
        ax.set_title(title, fontsize=8)
    fig.tight_layout()
    atomic_savefig(fig, path, dpi=110)
    plt.close(fig)


def save_pictures(pictures: dict[str, list[np.ndarray]], path: str) -> None:
    """The first panoramas of every wide row (seeds 0, 1, 2), one labelled row per image."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [(name, img) for name, imgs in pictures.items() for img in imgs]
    # the labels sit left of the images: room for the longest one (about 0.055 in per char)
    label_in = 0.2 + 0.055 * max(len(name) for name, _ in rows)
    fig, axes = plt.subplots(len(rows), 1, figsize=(6.5 + label_in, 0.62 * len(rows) + 0.3),
                             squeeze=False)
    for ax, (name, img) in zip(axes[:, 0], rows):
        ax.imshow(np.clip(img, 0, 1), interpolation="nearest")
        ax.set_xticks([]), ax.set_yticks([])
        ax.set_ylabel(name, rotation=0, ha="right", va="center", fontsize=7)
    fig.subplots_adjust(left=label_in / (6.5 + label_in), right=0.99, top=0.99, bottom=0.01,
                        hspace=0.08)
    atomic_savefig(fig, path, dpi=110)
    plt.close(fig)


def main(argv=None) -> int:
    global WIDE_STRIDE, EDIT_TAU, GUIDANCE_SCALE
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=8, help="samples per cell")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--quick", action="store_true", help="2 samples per cell, 10 steps")
    ap.add_argument("--tasks", default="wide,ambiguous,edit,mask")
    ap.add_argument("--json", default=None)
    ap.add_argument("--plot", default=None)
    ap.add_argument("--guidance", action="store_true",
                    help="also the gradient-based strategies (syncdiffusion, syncvc) on wide and "
                         "ambiguous")
    ap.add_argument("--composition", action="store_true",
                    help="also the issue-13 strategies: regiongraph on wide, poe (its defaults) on "
                         "ambiguous")
    ap.add_argument("--strategies", default=None,
                    help="replace the strategy lists: task=spec;spec;... separated by '/', a spec "
                         "being name or name:key=value,... (e.g. "
                         "'wide=multidiffusion;regiongraph:corrector_steps=1')")
    ap.add_argument("--pictures", default=None,
                    help="PNG of the first three panoramas of every wide row")
    ap.add_argument("--edit-tau", type=float, default=EDIT_TAU,
                    help=f"attention-mask threshold of the edit task (default {EDIT_TAU})")
    ap.add_argument("--model", default="scenes",
                    help="pipeline folder to measure (default: the shipped scenes model)")
    ap.add_argument("--stride", type=int, default=16,
                    help="window stride of the wide task (pixels; windows are 32 wide)")
    ap.add_argument("--table-from", default=None,
                    help="instead: print the wide table of a saved --json run, with standard "
                         "errors and paired differences from --baseline (no sampling)")
    ap.add_argument("--baseline", default="multidiffusion", help="row of the paired differences")
    ap.add_argument("--sun-rates", action="store_true",
                    help="instead: suns per 32x16 and 32x32 image of the generator and of the "
                         "model's plain samples at CFG 1 and 3 (--n images each)")
    ap.add_argument("--guidance-scale", type=float, default=GUIDANCE_SCALE,
                    help=f"classifier-free guidance of every task (default {GUIDANCE_SCALE})")
    a = ap.parse_args(argv)
    if a.table_from:
        try:
            doc = json.loads(Path(a.table_from).read_text())
        except (OSError, ValueError) as e:
            raise SystemExit(f"cannot read {a.table_from}: {e}") from None
        if not isinstance(doc, dict) or "wide" not in doc.get("results", {}):
            raise SystemExit(f"{a.table_from} has no wide rows")
        print(f"n = {doc['n']}, guidance {doc.get('guidance_scale', 3.0)}, stride "
              f"{doc.get('stride', 16)}; in brackets: paired difference from {a.baseline}\n")
        print(wide_table(doc, a.baseline))
        return 0
    WIDE_STRIDE, EDIT_TAU, GUIDANCE_SCALE = a.stride, a.edit_tau, a.guidance_scale
    if not GUIDANCE_SCALE >= 1.0:
        raise SystemExit(f"--guidance-scale must be >= 1, got {GUIDANCE_SCALE}")
    if not 0 < EDIT_TAU < 1:
        raise SystemExit(f"--edit-tau must be in (0, 1), got {EDIT_TAU}")
    if a.strategies:
        lists = {"wide": WIDE_STRATEGIES, "ambiguous": AMBIGUOUS_STRATEGIES,
                 "edit": EDIT_STRATEGIES, "mask": MASK_STRATEGIES}
        for part in a.strategies.split("/"):
            task, eq, specs = part.partition("=")
            if task not in lists or not eq:
                raise SystemExit(f"bad --strategies part {part!r}; expected task=spec;spec")
            lists[task][:] = [x for x in specs.split(";") if x]
    if a.composition:
        WIDE_STRATEGIES.append("regiongraph")
        AMBIGUOUS_STRATEGIES.append("poe")
    if a.guidance:
        for names in (WIDE_STRATEGIES, AMBIGUOUS_STRATEGIES):
            names += [g for g in ("syncdiffusion", "syncvc") if g not in names]
    n, steps = (2, 10) if a.quick else (a.n, a.steps)
    from syncsde.models import load_pipeline
    from syncsde.scenes.classifier import load_classifier

    if a.sun_rates:
        with torch.no_grad():
            rates = sun_rates(load_pipeline(a.model), n, steps)
        print(json.dumps(rates, indent=1))
        if a.json:
            atomic_write_json(a.json, {"n": n, "steps": steps, "sun_rates": rates})
        return 0
    pipe, clf = load_pipeline(a.model), load_classifier()
    fns = {"wide": wide, "ambiguous": ambiguous, "edit": edit, "mask": mask}
    results = {}
    for t in a.tasks.split(","):
        if t not in fns:
            print(f"unknown task {t!r}; expected some of {list(fns)}", file=sys.stderr)
            return 2
        with torch.no_grad():
            results[t] = fns[t](pipe, clf, n, steps, lambda s: print(s, flush=True))
    print_table(results)
    if a.json:
        atomic_write_json(a.json, {"n": n, "steps": steps, "stride": WIDE_STRIDE,
                                   "edit_tau": EDIT_TAU, "guidance_scale": GUIDANCE_SCALE,
                                   "results": results, "wide_per_sample": WIDE_PER_SAMPLE})
    if a.plot:
        plot(results, a.plot)
    if a.pictures and WIDE_PICTURES:
        save_pictures(WIDE_PICTURES, a.pictures)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
