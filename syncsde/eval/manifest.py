"""The manifest: one JSON line per finished image, and what counts as finished.

Each process appends to its own log ``manifest/rank{R}.jsonl`` (one line per image, flushed and
fsynced after the image itself was written atomically). At the end rank 0 merges every log into
``manifest.jsonl`` (written atomically, sorted by item) and removes the logs.

A line is **valid** for a run when it parses, has every field, its ``item_hash`` is the current
item's (same model, settings, strategy, prompt and seed), its file exists and the file's SHA-256
is the recorded one. Anything else (a torn last line after SIGKILL, garbage, a truncated or
edited PNG, an image of another config) is ignored and the image is made again.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Iterable

from syncsde.atomic import atomic_write_text

__all__ = ["FIELDS", "sha256_file", "read_entries", "valid_entries", "append_entry",
           "write_merged", "log_path", "remove_logs", "MANIFEST", "LOG_DIR"]

FIELDS = ("config_hash", "item_hash", "task", "prompt", "prompt_index", "strategy", "index",
          "seed", "file", "sha256", "seconds")
MANIFEST = "manifest.jsonl"
LOG_DIR = "manifest"


def sha256_file(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def log_path(out: Path, rank: int) -> Path:
    return out / LOG_DIR / f"rank{int(rank)}.jsonl"


def _parse_lines(path: Path) -> Iterable[dict]:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return
    for line in data.split(b"\n"):
        if not line.strip():
            continue
        try:
            e = json.loads(line)
        except (ValueError, UnicodeDecodeError):
            continue
        if isinstance(e, dict) and all(k in e for k in FIELDS):
            yield e


def read_entries(out: Path) -> list[dict]:
    """Every well-formed line of ``manifest.jsonl`` and of all logs (any number of ranks)."""
    entries = list(_parse_lines(out / MANIFEST))
    logs = sorted((out / LOG_DIR).glob("rank*.jsonl")) if (out / LOG_DIR).is_dir() else []
    for p in logs:
        entries.extend(_parse_lines(p))
    return entries


def valid_entries(out: Path, items_by_key: dict, check_files: bool = True) -> dict:
    """``{item key: entry}`` of the valid entries for the current items (the last one wins)."""
    found: dict = {}
    sha_cache: dict[str, str | None] = {}
    for e in read_entries(out):
        try:
            key = (e["task"], e["strategy"], int(e["prompt_index"]), int(e["index"]))
        except (TypeError, ValueError):
            continue
        it = items_by_key.get(key)
        if it is None or e["item_hash"] != it.item_hash or e["file"] != it.file:
            continue
        if check_files:
            if it.file not in sha_cache:
                p = out / it.file
                sha_cache[it.file] = sha256_file(p) if p.is_file() else None
            if sha_cache[it.file] != e["sha256"]:
                continue
        found[key] = e
    return found


def append_entry(out: Path, rank: int, entry: dict) -> None:
    """Appends one line to this rank's log and fsyncs it (a kill leaves at most a torn last
    line, which :func:`read_entries` skips)."""
    p = log_path(out, rank)
    p.parent.mkdir(parents=True, exist_ok=True)
    line = json.dumps({k: entry[k] for k in FIELDS}, sort_keys=True) + "\n"
    with open(p, "ab") as f:
        # a previous torn line has no newline: start ours on a fresh line
        if f.tell() > 0:
            with open(p, "rb") as r:
                r.seek(-1, os.SEEK_END)
                if r.read(1) != b"\n":
                    f.write(b"\n")
        f.write(line.encode())
        f.flush()
        os.fsync(f.fileno())


def write_merged(out: Path, entries: dict) -> Path:
    """``manifest.jsonl`` with one line per item, sorted by item key, written atomically."""
    lines = [json.dumps({k: entries[key][k] for k in FIELDS}, sort_keys=True)
             for key in sorted(entries)]
    atomic_write_text(out / MANIFEST, "".join(ln + "\n" for ln in lines))
    return out / MANIFEST


def remove_logs(out: Path) -> None:
    d = out / LOG_DIR
    if d.is_dir():
        for p in d.glob("rank*.jsonl"):
            p.unlink(missing_ok=True)
        try:
            d.rmdir()
        except OSError:
            pass
