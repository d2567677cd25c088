"""``syncsde eval``: generate (sharded, resumable), merge, score.

1. Every process reads the config and compares it with ``OUT/eval_config.json``: a different
   config is refused unless ``force`` (reuse the images whose items are unchanged); ``new``
   deletes the previous images, manifest and results first. Rank 0 then writes the config.
2. Items (sorted by task, strategy, prompt, index) are dealt round-robin over the processes
   (``accelerate launch`` sets them; one process otherwise). Each process makes its items that
   have no valid manifest entry: image written atomically, then a fsynced log line.
3. After a barrier rank 0 merges the logs into ``manifest.jsonl``, removes stray files, scores
   every task and writes ``results/{task}.csv|.md`` and the plots.
"""
from __future__ import annotations

import json
import shutil
import time
from datetime import timedelta
from pathlib import Path
from typing import Any, Callable

from syncsde.eval.config import REFERENCE, EvalConfigError, load_config
from syncsde.eval.manifest import (MANIFEST, LOG_DIR, append_entry, remove_logs, sha256_file,
                                   valid_entries, write_merged)

__all__ = ["run_eval", "Distributed", "shard"]

CONFIG_FILE = "eval_config.json"


class Distributed:
    """Rank, world size, device and a barrier from accelerate's ``PartialState`` when it is
    installed (single process otherwise). Without CUDA the processes talk over gloo (launch
    them with ``accelerate launch --multi_gpu --num_processes N``: accelerate's ``--cpu`` flag
    runs a single process); with CUDA process ``r`` generates on ``cuda:<local rank>``."""

    def __init__(self, use_accelerate: bool = True):
        import torch

        self.state = None
        cuda = torch.cuda.is_available()
        if use_accelerate:
            try:
                from accelerate import PartialState
            except ImportError:
                PartialState = None
            if PartialState is not None:
                kw = {"timeout": timedelta(hours=72)} if _launched() else {}
                self.state = PartialState(cpu=not cuda, **kw)
        self.rank = self.state.process_index if self.state else 0
        self.world = self.state.num_processes if self.state else 1
        local = self.state.local_process_index if self.state else 0
        self.device = f"cuda:{local}" if cuda else None

    def barrier(self) -> None:
        if self.state is not None and self.world > 1:
            self.state.wait_for_everyone()


def _launched() -> bool:
    import os

    return int(os.environ.get("WORLD_SIZE", "1")) > 1 or int(os.environ.get("LOCAL_RANK", "-1")) >= 0


def cfg_task_source(cfg, task: str) -> str:
    return next(t["reference"]["source"] for t in cfg.tasks if t["name"] == task)


def shard(items: list, rank: int, world: int) -> list:
    """Item ``i`` of the sorted list goes to process ``i % world``."""
    return [it for i, it in enumerate(items) if i % world == rank]


def _clean_temp_files(out: Path) -> None:
    img = out / "images"
    if img.is_dir():
        for p in img.rglob(".*.tmp*"):
            p.unlink(missing_ok=True)


def _check_config(cfg, out: Path, force: bool, new: bool, rank: int) -> None:
    from syncsde.checkpoint import run_differences

    saved = out / CONFIG_FILE
    if new:  # start over whatever the folder holds
        if rank == 0:
            for name in ("images", LOG_DIR, "results"):
                shutil.rmtree(out / name, ignore_errors=True)
            (out / MANIFEST).unlink(missing_ok=True)
        return
    if not saved.exists():
        return
    try:
        prev = json.loads(saved.read_text(encoding="utf-8"))
        prev_hash, prev_cfg = prev["config_hash"], prev["generation"]
    except (ValueError, KeyError, TypeError, UnicodeDecodeError):
        prev_hash, prev_cfg = None, {}
    if prev_hash == cfg.config_hash:
        return
    if force:
        return
    cur = cfg.generation_part()
    diffs = run_differences(prev_cfg, cur) if prev_cfg else ["eval_config.json is unreadable"]
    diffs = [d.replace("checkpoint ", "previous ") for d in diffs]
    raise EvalConfigError(
        f"{str(out)!r} holds results of another config ({'; '.join(diffs[:6])}); pass --force to "
        "keep the images whose items did not change, or --new to delete them and start over")


def _feature_nets(cfg) -> dict:
    """The networks named by ``feature_net`` (FID/KID, and the scenes CLIP stand-in),
    ``lpips_net`` / ``style_net`` (default: ``feature_net``) and ``lpips_heads`` (a file)."""
    from syncsde.metrics.clip_score import ScenesPromptEmbedder
    from syncsde.metrics.features import load_feature_net
    from syncsde.metrics.perceptual import load_lpips_heads

    raw = cfg.raw
    feats = load_feature_net(raw["feature_net"])
    same = lambda key: raw[key] == raw["feature_net"]  # noqa: E731
    nets = {"features": feats,
            "lpips": feats if same("lpips_net") else load_feature_net(raw["lpips_net"]),
            "style": feats if same("style_net") else load_feature_net(raw["style_net"]),
            "clip": ScenesPromptEmbedder(feats if hasattr(feats, "attribute_probabilities") else None)}
    if raw["lpips_heads"]:
        nets["lpips_heads"] = load_lpips_heads(raw["lpips_heads"])
    return nets


def run_eval(config: str, out: str, force: bool = False, new: bool = False, progress: bool = True,
             nets: dict | None = None, dist: Distributed | None = None,
             after_item: Callable[[int], None] | None = None) -> dict:
    """Runs (or resumes) an evaluation; returns ``{task: rows}`` on rank 0, ``{}`` elsewhere."""
    import torch
    from tqdm.auto import tqdm

    from syncsde.atomic import atomic_save_png, atomic_write_json, check_output_dir
    from syncsde.eval.generate import ItemMaker, to_png_image

    if force and new:
        raise ValueError("--force and --new exclude each other")
    cfg = load_config(config)
    dist = dist or Distributed()
    out_dir = check_output_dir(out)
    if cfg.raw["threads"]:
        torch.set_num_threads(cfg.raw["threads"])
    _check_config(cfg, out_dir, force, new, dist.rank)
    if dist.rank == 0:
        _clean_temp_files(out_dir)
        atomic_write_json(out_dir / CONFIG_FILE, {"config_hash": cfg.config_hash,
                                                  "generation": cfg.generation_part(),
                                                  "config": cfg.raw})
    dist.barrier()

    items = cfg.items()
    by_key = {it.key: it for it in items}
    mine = shard(items, dist.rank, dist.world)
    done = valid_entries(out_dir, {it.key: it for it in mine})
    todo = [it for it in mine if it.key not in done]
    maker = ItemMaker(cfg, getattr(dist, "device", None))
    if any(it.strategy != REFERENCE or cfg_task_source(cfg, it.task) == "model" for it in todo):
        maker.pipe  # load the model before the clock starts: seconds are per image
    bar = tqdm(todo, desc=f"generate [{dist.rank}/{dist.world}]", unit="img", disable=not progress,
               position=dist.rank, dynamic_ncols=True)
    for k, it in enumerate(bar):
        bar.set_postfix_str(f"{it.task}/{it.strategy}", refresh=False)
        t0 = time.perf_counter()
        img = maker.make(it)
        seconds = time.perf_counter() - t0
        path = out_dir / it.file
        atomic_save_png(to_png_image(img), path)
        append_entry(out_dir, dist.rank, {
            "config_hash": cfg.config_hash, "item_hash": it.item_hash, "task": it.task,
            "prompt": it.prompt, "prompt_index": it.prompt_index, "strategy": it.strategy,
            "index": it.index, "seed": it.seed, "file": it.file, "sha256": sha256_file(path),
            "seconds": round(seconds, 4)})
        if after_item is not None:
            after_item(k)
    if progress or dist.world > 1:
        import sys

        print(f"syncsde eval: process {dist.rank} of {dist.world}: {len(todo)} images made, "
              f"{len(mine) - len(todo)} reused", file=sys.stderr, flush=True)
    dist.barrier()
    if dist.rank != 0:
        return {}

    entries = valid_entries(out_dir, by_key)
    missing = [k for k in by_key if k not in entries]
    if missing:
        raise RuntimeError(f"{len(missing)} items have no valid image after generation, e.g. {missing[0]}")
    write_merged(out_dir, entries)
    remove_logs(out_dir)
    keep = {out_dir / e["file"] for e in entries.values()}
    for p in (out_dir / "images").rglob("*"):
        if p.is_file() and p not in keep:
            p.unlink()
    nets = nets or _feature_nets(cfg)
    results = {}
    from syncsde.eval.score import score_task, write_tables

    for task in cfg.tasks:
        rows = score_task(cfg, task, out_dir, entries, nets)
        if task["kind"] == "mask":
            same = len({str(m) for m in task["mask"]}) == 1
            shape = f"(mask {task['mask'][0] if same else 'per prompt'})"
        elif task["kind"] == "ambiguous":
            shape = f"(view {task['view']})"
        elif task["kind"] == "edit":
            shape = f"(sources: {task['sources']['source']}, tau {task['tau']})"
        else:
            shape = f"(window {task['window']}, stride {task['stride']})"
        header = (f"**{cfg.raw['name']} / {task['name']}**: {task['kind']} "
                  f"{task['height']}x{task['width']} {shape}, {len(task['prompts'])} prompts x "
                  f"{task['samples_per_prompt']} samples, {task['num_inference_steps']} steps, "
                  f"CFG {task['guidance_scale']}, model {cfg.raw['model']}; features: "
                  f"{getattr(nets['features'], 'name', type(nets['features']).__name__)}; "
                  f"reference: {'the source images' if task['kind'] == 'edit' else task['reference']['source']}")
        write_tables(task, rows, out_dir / "results", header)
        results[task["name"]] = rows
    return results
