"""Evaluation configs (TOML) -> a checked, normalized plan of work items.

A config names the model, the sampling settings, the strategies (with options), and the tasks;
each task has prompts (or a prompt file), the strategies it runs, samples per prompt, a reference
set and the metrics. See ``docs/evaluation.md`` for every key and ``configs/scenes_small.toml``.

Every image to make is an :class:`Item`. Its seed depends only on (config seed, task, prompt,
strategy, index), never on sharding or order; its ``item_hash`` fingerprints everything that
determines its pixels (model, task settings, strategy and options, prompt, seed), so a resumed or
changed run reuses exactly the images that are still right.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: the same parser as the tomli package
    import tomli as tomllib

__all__ = ["EvalConfigError", "Item", "EvalConfig", "load_config", "TASK_KINDS", "METRICS",
           "REFERENCE", "sample_seed", "KIND_METRICS", "reference_prompts", "mask_image"]

TASK_KINDS = ("wide", "mask", "ambiguous", "edit")
METRICS = ("kid", "fid", "clip", "intra_lpips", "intra_style", "hsv", "seam_jump", "lpips",
           "bg_lpips")
# what a task kind can be scored with: coherence metrics need a wide canvas of crops
KIND_METRICS = {"wide": METRICS[:7], "mask": ("kid", "fid", "clip"),
                "ambiguous": ("kid", "fid", "clip"), "edit": ("clip", "lpips", "bg_lpips")}
# the parts of one prompt entry of each kind (a string for wide, a table or a list otherwise)
PROMPT_PARTS = {"wide": ("prompt",), "mask": ("background", "object", "combined"),
                "ambiguous": ("a", "b"), "edit": ("source", "source_word", "target_word")}
REFERENCE = "reference"  # the strategy name of reference-set items
_TOP_KEYS = {"name", "model", "seed", "num_inference_steps", "guidance_scale", "samples_per_prompt",
             "feature_net", "lpips_net", "style_net", "lpips_heads", "kid_subsets", "kid_subset_size", "strategies", "tasks", "threads"}
_TASK_KEYS = {"name", "kind", "prompts", "prompt_file", "strategies", "samples_per_prompt",
              "height", "width", "window", "stride", "reference", "metrics",
              "num_inference_steps", "guidance_scale", "fid_scope", "mask", "view", "sources",
              "tau"}
_REF_KEYS = {"source", "per_prompt", "folder", "height", "width"}


class EvalConfigError(ValueError):
    """A config that cannot be run (the message names the key)."""


def _hash(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()


def sample_seed(base_seed: int, task: str, prompt: str, strategy: str, index: int) -> int:
    """A 31-bit seed from (config seed, task, prompt, strategy, index) only."""
    h = hashlib.sha256(json.dumps([int(base_seed), task, prompt, strategy, int(index)]).encode())
    return int.from_bytes(h.digest()[:4], "little") & 0x7FFFFFFF


@dataclass(frozen=True)
class Item:
    task: str
    strategy: str           # a strategy label of the config, or REFERENCE
    prompt_index: int
    prompt: str
    index: int
    seed: int
    item_hash: str
    file: str               # relative to the output folder

    @property
    def key(self) -> tuple:
        return (self.task, self.strategy, self.prompt_index, self.index)


@dataclass
class EvalConfig:
    raw: dict               # the normalized config (what the hash covers)
    path: str
    tasks: list[dict] = field(default_factory=list)

    @property
    def config_hash(self) -> str:
        return _hash(self.generation_part())

    def generation_part(self) -> dict:
        """Everything that decides pixels (metrics and feature nets left out)."""
        r = {k: v for k, v in self.raw.items()
             if k not in ("feature_net", "lpips_net", "style_net", "lpips_heads", "kid_subsets",
                          "kid_subset_size", "threads")}
        r["tasks"] = [{k: v for k, v in t.items() if k not in ("metrics", "fid_scope")}
                      for t in self.raw["tasks"]]
        return r

    def items(self) -> list[Item]:
        out: list[Item] = []
        for t in self.tasks:
            for label in t["strategies"] + ([REFERENCE] if t["reference"]["source"] != "folder" else []):
                n = t["reference"]["per_prompt"] if label == REFERENCE else t["samples_per_prompt"]
                # references are drawn per prompt the images are compared with (for mask: the
                # combined prompt; for ambiguous: each reading)
                for pi, prompt in enumerate(t["ref_prompts"] if label == REFERENCE else t["prompts"]):
                    for i in range(n):
                        seed = sample_seed(self.raw["seed"], t["name"], prompt, label, i)
                        fp = {"model": self.raw["model"],
                              "weights": self.raw.get("model_fingerprint"),
                              "task": _task_settings(t, label),
                              "strategy": None if label == REFERENCE else self.raw["strategies"][label],
                              "prompt": prompt, "seed": seed}
                        out.append(Item(t["name"], label, pi, prompt, i, seed, _hash(fp)[:32],
                                        f"images/{t['name']}/{label}/p{pi:03d}_{i:04d}.png"))
        return sorted(out, key=lambda it: it.key)


def model_fingerprint(name: str) -> str | None:
    """What identifies the model's weights, so that new weights under the same name are a
    different config: the scenes model or a local folder: SHA-256 over every file's path, size
    and bytes (first and last MiB for files over 4 MiB); a hub id: the cached snapshot's commit;
    None when it cannot be resolved offline (the name alone is then what counts)."""
    folder = None
    if name == "scenes":
        from syncsde.scenes.model import PIPELINE_DIR

        folder = PIPELINE_DIR
    elif Path(os.path.expanduser(name)).is_dir():
        folder = Path(os.path.expanduser(name))
    if folder is not None:
        h = hashlib.sha256()
        for f in sorted(p for p in folder.rglob("*") if p.is_file() and not p.name.startswith(".")):
            size = f.stat().st_size
            h.update(f"{f.relative_to(folder)}|{size}|".encode())
            with open(f, "rb") as fh:
                if size <= 4 << 20:
                    h.update(fh.read())
                else:
                    h.update(fh.read(1 << 20))
                    fh.seek(-(1 << 20), os.SEEK_END)
                    h.update(fh.read())
        return "sha256:" + h.hexdigest()[:32]
    try:
        from huggingface_hub import snapshot_download

        path = snapshot_download(name, local_files_only=True)
        return "snapshot:" + Path(path).name
    except Exception:  # offline and not cached, or not a hub id: the name stands for itself
        return None


def _task_settings(t: dict, label: str) -> dict:
    keys = ("kind", "height", "width", "window", "stride", "num_inference_steps", "guidance_scale")
    s = {k: t[k] for k in keys}
    for k in ("mask", "view", "sources", "tau"):   # only the kinds that have them (older configs hash the same)
        if t.get(k) is not None:
            s[k] = t[k]
    if label == REFERENCE:
        s = {"reference": t["reference"], "num_inference_steps": t["num_inference_steps"],
             "guidance_scale": t["guidance_scale"]}
    return s


def _need(d: dict, key: str, types, where: str):
    if key not in d:
        raise EvalConfigError(f"{where}: missing key {key!r}")
    v = d[key]
    if not isinstance(v, types):
        raise EvalConfigError(f"{where}.{key}: expected {getattr(types, '__name__', types)}, got {v!r}")
    return v


def _int(d: dict, key: str, default: Any, where: str, low: int = 1) -> int:
    v = d.get(key, default)
    if isinstance(v, bool) or not isinstance(v, int) or v < low:
        raise EvalConfigError(f"{where}.{key}: expected an integer >= {low}, got {v!r}")
    return v


def _unknown(d: dict, allowed: set, where: str) -> None:
    extra = sorted(set(d) - allowed)
    if extra:
        raise EvalConfigError(f"{where}: unknown key(s) {extra}; allowed: {sorted(allowed)}")


SEP = " | "   # joins the parts of a mask / ambiguous prompt entry (and splits prompt-file lines)


def _prompt_parts(kind: str, entries: list, where: str) -> list[tuple[str, ...]]:
    """Each prompt entry as its parts: a string (wide), or for ``mask`` a table
    ``{background, object, combined}`` / a 3-list / a string ``"bg | obj | combined"``, for
    ``ambiguous`` a table ``{a, b}`` / a 2-list / ``"a | b"``."""
    names = PROMPT_PARTS[kind]
    if not entries:
        raise EvalConfigError(f"{where}: expected a non-empty list")
    out = []
    for i, e in enumerate(entries):
        if isinstance(e, str):
            q = tuple(x.strip() for x in e.split(SEP.strip())) if len(names) > 1 else (e.strip(),)
        elif isinstance(e, list) and len(names) > 1:
            q = tuple(e)
        elif isinstance(e, dict) and len(names) > 1:
            _unknown(e, set(names), f"{where}[{i}]")
            q = tuple(e.get(n) for n in names)
        else:
            q = (e,)
        if len(q) != len(names) or not all(isinstance(x, str) and x.strip() for x in q):
            want = "a non-empty string" if len(names) == 1 else \
                f"{len(names)} non-empty strings ({', '.join(names)})"
            raise EvalConfigError(f"{where}[{i}]: a {kind!r} prompt is {want}, got {e!r}")
        out.append(tuple(x.strip() for x in q))
    return out


def reference_prompts(kind: str, parts: list[tuple[str, ...]]) -> list[str]:
    """The prompts reference images are drawn for: the wide prompt, the mask task's combined
    prompt, both readings of an ambiguous pair (each once, in order of appearance)."""
    pick = {"wide": lambda q: [q[0]], "mask": lambda q: [q[2]], "ambiguous": lambda q: list(q),
            "edit": lambda q: []}[kind]   # an edit is scored against its own source
    return list(dict.fromkeys(p for q in parts for p in pick(q)))


def _mask_spec(t: dict, kind: str, n_prompts: int, base: Path, where: str):
    """``mask``: a box ``[top, left, bottom, right]`` in fractions of the image, or an image
    file (white = object; relative to the config's folder), or a list of those, one per prompt.
    Returns a list with one spec per prompt (a box list or an absolute path string)."""
    if kind != "mask":
        if "mask" in t:
            raise EvalConfigError(f"{where}.mask: only a 'mask' task takes a mask")
        return None
    if "mask" not in t:
        raise EvalConfigError(f"{where}.mask: required (a box [top, left, bottom, right] in "
                              "fractions of the image, or a mask image file)")
    m = t["mask"]
    one = isinstance(m, str) or (isinstance(m, list) and len(m) == 4
                                 and all(isinstance(v, (int, float)) for v in m))
    specs = [m] * n_prompts if one else m
    if not isinstance(specs, list) or len(specs) != n_prompts:
        raise EvalConfigError(f"{where}.mask: one mask for all prompts or a list of {n_prompts}")
    out = []
    for i, spec in enumerate(specs):
        w = f"{where}.mask" + ("" if one else f"[{i}]")
        if isinstance(spec, str):
            fp = Path(os.path.expanduser(spec))
            fp = fp if fp.is_absolute() else base / fp
            if not fp.is_file():
                raise EvalConfigError(f"{w}: {str(fp)!r} not found")
            out.append(str(fp))
            continue
        if not (isinstance(spec, list) and len(spec) == 4
                and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in spec)):
            raise EvalConfigError(f"{w}: expected [top, left, bottom, right] or a file, got {spec!r}")
        top, left, bottom, right = (float(v) for v in spec)
        if not (0 <= top < bottom <= 1 and 0 <= left < right <= 1):
            raise EvalConfigError(f"{w}: need 0 <= top < bottom <= 1 and 0 <= left < right <= 1, "
                                  f"got {spec!r}")
        out.append([top, left, bottom, right])
    return out


def _sources_spec(t: dict, kind: str, model: str, base: Path, where: str):
    """The source images of an ``edit`` task: ``{ source = "generator", place = [kind, x, y,
    size] }`` (scenes only: the source prompt's scene with one compact object placed at
    fractions of the image; its pixels are the object mask), or ``{ folder = "PATH",
    masks = "PATH" }`` (image files in name order; optional masks with the same names, white
    = object). Folder files are fingerprinted (SHA-256) so new images are a new config."""
    if kind != "edit":
        if "sources" in t:
            raise EvalConfigError(f"{where}.sources: only an 'edit' task takes sources")
        return None
    w = f"{where}.sources"
    src = t.get("sources", {"source": "generator"})
    if not isinstance(src, dict):
        raise EvalConfigError(f"{w}: expected a table")
    _unknown(src, {"source", "place", "folder", "masks"}, w)
    kind_src = src.get("source", "folder" if "folder" in src else "generator")
    if kind_src == "generator":
        if model != "scenes":
            raise EvalConfigError(f"{w}.source: 'generator' sources need model = 'scenes'; give "
                                  "folder = PATH for other models")
        if "folder" in src or "masks" in src:
            raise EvalConfigError(f"{w}: folder / masks go with source = 'folder'")
        place = src.get("place")
        if place is not None:
            ok = (isinstance(place, list) and len(place) == 4 and place[0] in ("balloon", "boat", "house")
                  and all(isinstance(v, (int, float)) and not isinstance(v, bool) and 0 <= v <= 1
                          for v in place[1:]) and place[3] > 0)
            if not ok:
                raise EvalConfigError(f"{w}.place: expected [kind, x, y, size] with kind balloon, "
                                      f"boat or house and x, y, size fractions in (0, 1], got {place!r}")
        return {"source": "generator", "place": place, "has_masks": place is not None}
    if kind_src != "folder":
        raise EvalConfigError(f"{w}.source: expected 'generator' or 'folder', got {kind_src!r}")

    def folder_of(key):
        fp = Path(os.path.expanduser(str(src[key])))
        fp = fp if fp.is_absolute() else base / fp
        if not fp.is_dir():
            raise EvalConfigError(f"{w}.{key}: {str(fp)!r} is not a folder")
        return fp

    if "folder" not in src:
        raise EvalConfigError(f"{w}.folder: required with source = 'folder'")
    folder = folder_of("folder")
    exts = {".png", ".jpg", ".jpeg", ".webp", ".bmp"}
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in exts and p.is_file())
    if not files:
        raise EvalConfigError(f"{w}.folder: no image files in {str(folder)!r}")
    out = {"source": "folder", "folder": str(folder), "has_masks": "masks" in src,
           "files": [[p.name, hashlib.sha256(p.read_bytes()).hexdigest()[:32]] for p in files]}
    if "masks" in src:
        mf = folder_of("masks")
        missing = [p.name for p in files if not (mf / p.name).is_file()]
        if missing:
            raise EvalConfigError(f"{w}.masks: no mask for {missing[:3]} in {str(mf)!r} (same "
                                  "file names as the images)")
        out["masks"] = str(mf)
        out["mask_files"] = [hashlib.sha256((mf / p.name).read_bytes()).hexdigest()[:32] for p in files]
    return out


def _view_spec(t: dict, kind: str, where: str):
    from syncsde.tasks.ambiguous import AMBIGUOUS_VIEWS

    if kind != "ambiguous":
        if "view" in t:
            raise EvalConfigError(f"{where}.view: only an 'ambiguous' task takes a view")
        return None
    v = t.get("view", "rot90_cw")
    if v not in AMBIGUOUS_VIEWS:
        raise EvalConfigError(f"{where}.view: expected one of {AMBIGUOUS_VIEWS}, got {v!r}")
    return v


def load_config(path: str | os.PathLike) -> EvalConfig:
    """Reads and checks a TOML config; raises :class:`EvalConfigError` naming the bad key."""
    p = Path(path)
    try:
        raw = tomllib.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise EvalConfigError(f"config {str(path)!r} not found") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise EvalConfigError(f"config {str(path)!r} is not valid TOML: {e}") from None
    return config_from_dict(raw, str(p))


def config_from_dict(raw: dict, path: str = "<config>") -> EvalConfig:
    from syncsde.strategies import STRATEGIES

    where = "config"
    _unknown(raw, _TOP_KEYS, where)
    cfg: dict[str, Any] = {
        "name": str(raw.get("name", Path(path).stem)),
        "model": str(raw.get("model", "scenes")),
        "seed": _int(raw, "seed", 0, where, 0),
        "num_inference_steps": _int(raw, "num_inference_steps", 25, where),
        "guidance_scale": float(raw.get("guidance_scale", 3.0)),
        "samples_per_prompt": _int(raw, "samples_per_prompt", 4, where),
        "feature_net": raw.get("feature_net", "scenes"),
        "lpips_net": raw.get("lpips_net", raw.get("feature_net", "scenes")),
        "style_net": raw.get("style_net", raw.get("feature_net", "scenes")),
        "lpips_heads": raw.get("lpips_heads"),
        "kid_subsets": _int(raw, "kid_subsets", 100, where),
        "kid_subset_size": _int(raw, "kid_subset_size", 1000, where, 2),
        "threads": _int(raw, "threads", 0, where, 0),
    }
    strategies = raw.get("strategies")
    if not isinstance(strategies, dict) or not strategies:
        raise EvalConfigError(f"{where}: [strategies.LABEL] tables are required (name = one of "
                              f"{sorted(STRATEGIES)}, options = {{...}})")
    cfg["strategies"] = {}
    for label, s in strategies.items():
        w = f"strategies.{label}"
        if label == REFERENCE:
            raise EvalConfigError(f"{w}: the label {REFERENCE!r} is reserved for reference sets")
        if not isinstance(s, dict):
            raise EvalConfigError(f"{w}: expected a table, got {s!r}")
        _unknown(s, {"name", "options"}, w)
        name = s.get("name", label)
        if name not in STRATEGIES:
            raise EvalConfigError(f"{w}.name: unknown strategy {name!r}; expected one of {sorted(STRATEGIES)}")
        opts = s.get("options", {})
        if not isinstance(opts, dict):
            raise EvalConfigError(f"{w}.options: expected a table, got {opts!r}")
        cfg["strategies"][label] = {"name": name, "options": opts}
    tasks = raw.get("tasks")
    if not isinstance(tasks, list) or not tasks:
        raise EvalConfigError(f"{where}: at least one [[tasks]] table is required")
    cfg["tasks"] = []
    names = set()
    base = Path(path).parent
    for k, t in enumerate(tasks):
        w = f"tasks[{k}]"
        if not isinstance(t, dict):
            raise EvalConfigError(f"{w}: expected a table")
        _unknown(t, _TASK_KEYS, w)
        kind = t.get("kind", "wide")
        if kind not in TASK_KINDS:
            raise EvalConfigError(f"{w}.kind: expected one of {TASK_KINDS}, got {kind!r}")
        name = str(t.get("name", kind))
        if name in names or "/" in name or not name:
            raise EvalConfigError(f"{w}.name: {name!r} is empty, repeated or has a '/'")
        names.add(name)
        if "prompts" in t and "prompt_file" in t:
            raise EvalConfigError(f"{w}: give prompts or prompt_file, not both")
        if "prompt_file" in t:
            pf = Path(os.path.expanduser(str(t["prompt_file"])))
            pf = pf if pf.is_absolute() else base / pf
            if not pf.is_file():
                raise EvalConfigError(f"{w}.prompt_file: {str(pf)!r} not found")
            prompts = [ln.strip() for ln in pf.read_text(encoding="utf-8").splitlines() if ln.strip()]
        else:
            prompts = _need(t, "prompts", list, w)
        parts = _prompt_parts(kind, prompts, f"{w}.prompts")
        prompts = [SEP.join(q) for q in parts]   # one display string per entry (seeds, manifest)
        if kind == "edit":
            for i, q in enumerate(parts):
                if not re.search(rf"\b{re.escape(q[1])}\b", q[0], re.IGNORECASE):
                    raise EvalConfigError(f"{w}.prompts[{i}]: the source word {q[1]!r} is not a "
                                          f"word of the source prompt {q[0]!r}")
        if len(set(prompts)) != len(prompts):
            raise EvalConfigError(f"{w}.prompts: repeated prompts")
        strat = t.get("strategies", list(cfg["strategies"]))
        if not isinstance(strat, list) or not strat:
            raise EvalConfigError(f"{w}.strategies: expected a non-empty list of strategy labels")
        for s in strat:
            if s not in cfg["strategies"]:
                raise EvalConfigError(f"{w}.strategies: {s!r} is not a [strategies.*] label "
                                      f"({sorted(cfg['strategies'])})")
        height = _int(t, "height", 32, w)
        if kind == "wide":
            width = _int(t, "width", 4 * height, w)
            window = _int(t, "window", height, w)
            stride = _int(t, "stride", max(1, window // 4), w)
        else:   # one canvas the model's size: no windows
            for k in ("window", "stride"):
                if k in t:
                    raise EvalConfigError(f"{w}.{k}: a {kind!r} task has no windows")
            width = _int(t, "width", height, w)
            window, stride = width, width
        if kind == "ambiguous" and width != height:
            raise EvalConfigError(f"{w}.width: ambiguous images are square ({width} != {height})")
        mask = _mask_spec(t, kind, len(prompts), base, w)
        view = _view_spec(t, kind, w)
        if window > width:
            raise EvalConfigError(f"{w}.window: {window} is wider than the image ({width})")
        sources = _sources_spec(t, kind, cfg["model"], base, w)
        if sources is not None and sources.get("files"):
            n_files = len(sources["files"])
            if t.get("samples_per_prompt", n_files) > n_files:
                raise EvalConfigError(f"{w}.samples_per_prompt: {t['samples_per_prompt']} > the "
                                      f"{n_files} images of {sources['folder']!r}")
            t = dict(t, samples_per_prompt=t.get("samples_per_prompt", n_files))
        tau = t.get("tau", 0.3 if kind == "edit" else None)
        if kind != "edit" and "tau" in t:
            raise EvalConfigError(f"{w}.tau: only an 'edit' task takes tau")
        if kind == "edit" and (isinstance(tau, bool) or not isinstance(tau, (int, float))
                               or not 0 < tau < 1):
            raise EvalConfigError(f"{w}.tau: expected a number in (0, 1), got {tau!r}")
        if kind == "edit" and "reference" in t:
            raise EvalConfigError(f"{w}.reference: an edit is scored against its source image "
                                  "(no reference set)")
        ref = t.get("reference", {"source": "model"})
        if not isinstance(ref, dict):
            raise EvalConfigError(f"{w}.reference: expected a table")
        _unknown(ref, _REF_KEYS, f"{w}.reference")
        src = ref.get("source", "model")
        if src not in ("model", "generator", "folder"):
            raise EvalConfigError(f"{w}.reference.source: expected 'model', 'generator' or "
                                  f"'folder', got {src!r}")
        r = {"source": src, "per_prompt": _int(ref, "per_prompt", 8, f"{w}.reference"),
             "height": _int(ref, "height", height, f"{w}.reference"),
             "width": _int(ref, "width", window if kind == "wide" else width, f"{w}.reference")}
        if src == "folder":
            folder = ref.get("folder")
            if not isinstance(folder, str):
                raise EvalConfigError(f"{w}.reference.folder: required with source = 'folder'")
            fp = Path(os.path.expanduser(folder))
            fp = fp if fp.is_absolute() else base / fp
            if not fp.is_dir():
                raise EvalConfigError(f"{w}.reference.folder: {str(fp)!r} is not a folder")
            r["folder"] = str(fp)
        if src == "generator" and cfg["model"] != "scenes":
            raise EvalConfigError(f"{w}.reference.source: 'generator' is the scenes model's ground "
                                  "truth; it needs model = 'scenes'")
        allowed = KIND_METRICS[kind]
        metrics = t.get("metrics", list(allowed))
        if not isinstance(metrics, list) or not all(m in allowed for m in metrics):
            raise EvalConfigError(f"{w}.metrics: a {kind!r} task takes a list of {allowed}, "
                                  f"got {metrics!r}")
        if "bg_lpips" in metrics and sources is not None and not sources.get("has_masks"):
            raise EvalConfigError(f"{w}.metrics: bg_lpips needs object masks (sources.masks, or "
                                  "sources.place with the generator)")
        if width < 2 * height and any(m in ("intra_lpips", "intra_style", "hsv") for m in metrics):
            raise EvalConfigError(f"{w}.metrics: intra_lpips, intra_style and hsv need at least "
                                  f"two crops (width >= 2 height)")
        scope = t.get("fid_scope", "pooled")
        if scope not in ("pooled", "per_prompt"):
            raise EvalConfigError(f"{w}.fid_scope: expected 'pooled' or 'per_prompt', got {scope!r}")
        if scope == "per_prompt" and src == "folder":
            raise EvalConfigError(f"{w}.fid_scope: 'per_prompt' needs generated references "
                                  "(a folder has no prompts)")
        cfg["tasks"].append({
            "name": name, "kind": kind, "prompts": prompts, "strategies": strat,
            "prompt_parts": parts, "ref_prompts": reference_prompts(kind, parts),
            "mask": mask, "view": view, "sources": sources, "tau": tau,
            "samples_per_prompt": _int(t, "samples_per_prompt", cfg["samples_per_prompt"], w),
            "height": height, "width": width, "window": window, "stride": stride,
            "num_inference_steps": _int(t, "num_inference_steps", cfg["num_inference_steps"], w),
            "guidance_scale": float(t.get("guidance_scale", cfg["guidance_scale"])),
            "reference": r, "metrics": metrics, "fid_scope": scope})
    cfg["model_fingerprint"] = model_fingerprint(cfg["model"])
    return EvalConfig(cfg, path, cfg["tasks"])


def mask_image(spec, height: int, width: int):
    """A mask spec of :func:`_mask_spec` -> what :func:`syncsde.pipelines.load_mask` reads: the
    file path, or a ``[height, width]`` float array with 1 inside the box (rows
    ``round(top H) .. round(bottom H)``, columns likewise)."""
    if isinstance(spec, str):
        return spec
    import numpy as np

    top, left, bottom, right = spec
    m = np.zeros((height, width), np.float32)
    r0, r1 = int(round(top * height)), max(int(round(bottom * height)), int(round(top * height)) + 1)
    c0, c1 = int(round(left * width)), max(int(round(right * width)), int(round(left * width)) + 1)
    m[r0:r1, c0:c1] = 1.0
    return m
