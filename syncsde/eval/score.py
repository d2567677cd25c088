"""Scoring a finished task: metrics per strategy -> CSV, Markdown table and plots.

Conventions (docs/evaluation.md):

- FID / KID: one random ``height x window`` crop per wide image (position drawn from the item's
  seed), as SyncDiffusion and SyncSDE score panoramas, against the reference set; with
  ``fid_scope = "pooled"`` (default) over all prompts together (KID std over subsets), with
  ``"per_prompt"`` per prompt against that prompt's references, then mean and std over prompts
  (SyncDiffusion's Table S2 reports mean +- std). KID x 1e3.
- CLIP-S: mean over the non-overlapping ``height x height`` crops of each image, then over
  images; raw cosine and x100 (clipped at 0), labelled; with the scenes stand-in also the
  classifier's prompt agreement rate.
- Intra-LPIPS, Intra-Style-L (sum over pairs = SyncDiffusion's code, and mean over pairs), HSV
  histogram intersection / chi-square distance, seam jump at the task's window seams.
- ``s / image``: mean generation seconds from the manifest (per process, as generated).
"""
from __future__ import annotations

import csv
import io
import math
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from syncsde.eval.config import REFERENCE, EvalConfig
from syncsde.eval.generate import load_png

__all__ = ["score_task", "write_tables", "COLUMNS", "load_reference_folder"]

COLUMNS = {
    "kid": ["KID x1e3", "KID x1e3 std"],
    "fid": ["FID", "FID std"],
    "clip": ["CLIP-S (cos)", "CLIP-S x100", "prompt agreement"],
    "intra_lpips": ["Intra-LPIPS"],
    "intra_style": ["Intra-Style-L (sum over pairs)", "Intra-Style-L (mean over pairs)"],
    "hsv": ["HSV intersection", "HSV chi2 distance"],
    "seam_jump": ["seam jump", "seam jump ratio"],
    "lpips": ["LPIPS to source"],
    "bg_lpips": ["BG-LPIPS"],
}
_IMAGE_EXT = {".png", ".jpg", ".jpeg", ".webp", ".bmp"}


def load_reference_folder(folder: str, height: int, width: int) -> torch.Tensor:
    files = sorted(p for p in Path(folder).iterdir() if p.suffix.lower() in _IMAGE_EXT)
    if len(files) < 2:
        raise ValueError(f"reference folder {folder!r} has fewer than 2 images")
    out = []
    for p in files:
        x = load_png(p).unsqueeze(0)
        if x.shape[-2:] != (height, width):
            x = F.interpolate(x, size=(height, width), mode="bilinear", antialias=True,
                              align_corners=False).clamp(0, 1)
        out.append(x[0])
    return torch.stack(out)


def _scored_images(task: dict, imgs: list, es: list) -> tuple[list, list, np.ndarray]:
    """The images KID / FID / CLIP-S compare, with the prompt each is compared with and the
    index of the prompt entry it comes from:

    - ``wide``: one random ``height x window`` crop per image (position from the item's seed), as
      SyncDiffusion and SyncSDE score panoramas;
    - ``mask``: the whole image, against the combined prompt (SyncSDE Table 1);
    - ``ambiguous``: the image against prompt a and its view against prompt b (Visual Anagrams,
      SyncSDE Table 4); images first, then views, so entry ``i`` and ``i + n`` are one image.
    """
    kind, win = task["kind"], task["window"]
    parts = task.get("prompt_parts")
    out, prompts, of = [], [], []
    if kind == "ambiguous":
        from syncsde.views import PixelMap

        pmap = PixelMap.parse(task["view"])
        for reading in (0, 1):
            for img, e in zip(imgs, es):
                out.append(img if reading == 0 else pmap.apply(img.contiguous()))
                prompts.append(parts[e["prompt_index"]][reading])
                of.append(e["prompt_index"])
    else:
        for img, e in zip(imgs, es):
            if kind == "edit":   # the edit against the target prompt (source word swapped)
                from syncsde.eval.generate import edit_target_prompt

                out.append(img)
                prompts.append(edit_target_prompt(parts[e["prompt_index"]]))
            elif kind == "mask":
                out.append(img)
                prompts.append(parts[e["prompt_index"]][2])
            else:
                x0 = int(np.random.default_rng(e["seed"]).integers(0, img.shape[-1] - win + 1))
                out.append(img[:, :, x0:x0 + win])
                prompts.append(e["prompt"])
            of.append(e["prompt_index"])
    return out, prompts, np.array(of)


def _edit_scores(cfg: EvalConfig, task: dict, imgs: list, es: list, nets: dict) -> dict:
    """LPIPS between each edit and its source, and BG-LPIPS outside the source's object mask
    (SyncSDE Table 2), means over images."""
    from syncsde.eval.config import Item
    from syncsde.eval.generate import edit_source
    from syncsde.metrics.perceptual import bg_lpips, lpips

    src, masks = [], []
    for e in es:
        it = Item(task["name"], e["strategy"], e["prompt_index"], e["prompt"], e["index"],
                  e["seed"], e["item_hash"], e["file"])
        s_img, m = edit_source(cfg, task, it)
        src.append(s_img)
        masks.append(m)
    edits, sources = torch.stack(imgs), torch.stack(src)
    out = {}
    if "lpips" in task["metrics"]:
        out["LPIPS to source"] = float(lpips(sources, edits, nets["lpips"], nets.get("lpips_heads")).mean())
    if "bg_lpips" in task["metrics"]:
        m = torch.stack(masks)[:, None]
        out["BG-LPIPS"] = float(bg_lpips(sources, edits, m, nets["lpips"], nets.get("lpips_heads")).mean())
    return out


def _batched(fn, x: torch.Tensor, batch: int = 256) -> torch.Tensor:
    return torch.cat([fn(x[i:i + batch]) for i in range(0, len(x), batch)])


def score_task(cfg: EvalConfig, task: dict, out: Path, entries: dict, nets: dict) -> list[dict]:
    """One row per strategy of ``task``. ``nets``: ``features`` (FID/KID), ``lpips``, ``style``
    (feature-map networks), ``clip`` (an embedder) and optionally ``lpips_heads``."""
    from syncsde.metrics import coherence
    from syncsde.metrics.clip_score import clip_score, prompt_agreement_rate
    from syncsde.metrics.fid_kid import KID_SCALE, fid, kid

    name, H, win = task["name"], task["height"], task["window"]
    metrics = task["metrics"]
    mine = {k: e for k, e in entries.items() if k[0] == name}

    def images_of(label: str) -> tuple[list[torch.Tensor], list[dict]]:
        es = [mine[k] for k in sorted(mine) if k[1] == label]
        return [load_png(out / e["file"]) for e in es], es

    need_ref = any(m in metrics for m in ("kid", "fid"))
    per_prompt = task.get("fid_scope", "pooled") == "per_prompt"
    ref_prompts = task.get("ref_prompts", task["prompts"])
    if need_ref:
        ref = task["reference"]
        if ref["source"] == "folder":
            ref_imgs, ref_prompt = load_reference_folder(ref["folder"], ref["height"], ref["width"]), None
        else:
            imgs_r, es_r = images_of(REFERENCE)
            ref_imgs = torch.stack(imgs_r)
            ref_prompt = np.array([ref_prompts[e["prompt_index"]] for e in es_r], dtype=object)
        ref_feats = _batched(nets["features"].features, ref_imgs).double().numpy()
    rows = []
    for label in task["strategies"]:
        imgs, es = images_of(label)
        row: dict[str, Any] = {"strategy": label, "n": len(imgs),
                               "s / image": float(np.mean([e["seconds"] for e in es]))}
        scored, scored_prompt, scored_of = _scored_images(task, imgs, es)
        if need_ref:
            feats = _batched(nets["features"].features, torch.stack(scored)).double().numpy()
            if per_prompt:   # SyncDiffusion's Table S2: per prompt, then mean +- std over prompts
                groups = []
                for p in range(len(task["prompts"])):
                    sel = scored_of == p
                    want = set(np.asarray(scored_prompt, dtype=object)[sel])
                    groups.append((feats[sel], ref_feats[np.isin(ref_prompt, list(want))]))
            else:            # the SyncSDE paper's tables: all prompts pooled
                groups = [(feats, ref_feats)]
            if "kid" in metrics:
                ks = [kid(a, b, cfg.raw["kid_subsets"], cfg.raw["kid_subset_size"],
                          seed=cfg.raw["seed"]) for a, b in groups]
                row["KID x1e3"] = float(np.mean([k[0] for k in ks])) * KID_SCALE
                # pooled: std over KID subsets; per prompt: std over prompts
                row["KID x1e3 std"] = (float(np.std([k[0] for k in ks])) if per_prompt
                                       else ks[0][1]) * KID_SCALE
            if "fid" in metrics:
                fs = [fid(a, b) for a, b in groups]
                row["FID"] = float(np.mean(fs))
                if per_prompt:
                    row["FID std"] = float(np.std(fs))
        if "clip" in metrics:
            emb = nets["clip"]
            if task["kind"] == "wide":   # mean over the image's non-overlapping crops
                clip_imgs = [coherence.crops(img, H) for img in imgs]
                clip_prompts = [[e["prompt"]] * len(c) for c, e in zip(clip_imgs, es)]
            else:                        # the image (and its view) against its prompt(s)
                clip_imgs = [torch.stack(scored[i::len(imgs)]) for i in range(len(imgs))]
                clip_prompts = [list(scored_prompt[i::len(imgs)]) for i in range(len(imgs))]
            cos = [clip_score(emb.embed_images(c), emb.embed_texts(q)).mean()
                   for c, q in zip(clip_imgs, clip_prompts)]
            cos_t = torch.stack(cos).double()
            row["CLIP-S (cos)"] = float(cos_t.mean())
            row["CLIP-S x100"] = float((100 * cos_t).clamp_min(0).mean())
            if hasattr(nets["features"], "attribute_probabilities"):
                row["prompt agreement"] = prompt_agreement_rate(
                    torch.cat(clip_imgs), [q for qs in clip_prompts for q in qs], nets["features"])
        if task["kind"] == "edit" and ("lpips" in metrics or "bg_lpips" in metrics):
            row.update(_edit_scores(cfg, task, imgs, es, nets))
        if "intra_lpips" in metrics:
            row["Intra-LPIPS"] = coherence.intra_lpips(imgs, nets["lpips"], H, nets.get("lpips_heads"))
        if "intra_style" in metrics:
            st = coherence.intra_style(imgs, nets["style"], H)
            row["Intra-Style-L (sum over pairs)"] = st["sum"]
            row["Intra-Style-L (mean over pairs)"] = st["mean"]
        if "hsv" in metrics:
            hs = coherence.hsv_coherence(imgs, H)
            row["HSV intersection"], row["HSV chi2 distance"] = hs["intersection"], hs["distance"]
        if "seam_jump" in metrics:
            sj = coherence.seam_jump(imgs, coherence.window_seams(task["width"], win, task["stride"]))
            row["seam jump"], row["seam jump ratio"] = sj["jump"], sj["ratio"]
        rows.append(row)
    return rows


def _columns(task: dict, rows: Sequence[dict]) -> list[str]:
    cols = ["strategy", "n"]
    for m in task["metrics"]:
        cols += [c for c in COLUMNS[m] if any(c in r for r in rows)]
    return cols + ["s / image"]


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        if math.isnan(v):
            return "nan"
        return f"{v:.4g}" if abs(v) >= 1e-3 or v == 0 else f"{v:.3e}"
    return str(v)


def write_tables(task: dict, rows: Sequence[dict], folder: Path, header: str) -> dict:
    """``{task}.csv`` (full precision), ``{task}.md`` (4 significant digits) and two plots."""
    from syncsde.atomic import atomic_write_text

    cols = _columns(task, rows)
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=cols, lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({c: (repr(r[c]) if isinstance(r.get(c), float) else r.get(c, "")) for c in cols})
    name = task["name"]
    paths = {"csv": atomic_write_text(folder / f"{name}.csv", buf.getvalue())}
    md = [header, "", "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    md += ["| " + " | ".join(_fmt(r.get(c, "")) for c in cols) + " |" for r in rows]
    paths["md"] = atomic_write_text(folder / f"{name}.md", "\n".join(md) + "\n")
    paths.update(_plots(task, rows, cols, folder))
    return paths


def _plots(task: dict, rows: Sequence[dict], cols: list[str], folder: Path) -> dict:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from syncsde.atomic import atomic_savefig

    metric_cols = [c for c in cols if c not in ("strategy", "n") and not c.endswith("std")]
    labels = [r["strategy"] for r in rows]
    n = len(metric_cols)
    ncol = min(4, n)
    nrow = math.ceil(n / ncol)
    fig, axes = plt.subplots(nrow, ncol, figsize=(3.2 * ncol, 2.6 * nrow), squeeze=False)
    for ax, c in zip(axes.flat, metric_cols):
        ax.bar(labels, [float(r.get(c, float("nan"))) for r in rows],
               yerr=[float(r.get("KID x1e3 std", 0)) for r in rows] if c == "KID x1e3" else None,
               color="tab:blue")
        ax.set_title(c, fontsize=9)
        ax.tick_params(axis="x", labelrotation=30, labelsize=8)
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    fig.suptitle(f"{task['name']}: metric vs strategy", fontsize=10)
    fig.tight_layout()
    out = {"metrics_plot": atomic_savefig(fig, folder / f"{task['name']}_metrics.png", dpi=110)}
    plt.close(fig)
    q = next((c for c in ("KID x1e3", "FID", "CLIP-S (cos)", "Intra-LPIPS") if c in cols), None)
    if q is not None:
        fig, ax = plt.subplots(figsize=(4.5, 3.4))
        for r in rows:
            ax.scatter(r["s / image"], r[q])
            ax.annotate(r["strategy"], (r["s / image"], r[q]), fontsize=8)
        ax.set_xlabel("seconds per image")
        ax.set_ylabel(q)
        ax.set_title(f"{task['name']}: quality vs time", fontsize=10)
        fig.tight_layout()
        out["time_plot"] = atomic_savefig(fig, folder / f"{task['name']}_quality_vs_time.png", dpi=110)
        plt.close(fig)
    return out
