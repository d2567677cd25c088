"""Sampler checkpoints: safetensors for the tensors, a JSON header for everything else.

A checkpoint file is a plain safetensors file. Its tensors are the lockstep state (``y``, the
canvas when the strategy keeps one, the generator's state as ``uint8``); its ``__metadata__``
holds one key, ``syncsde_checkpoint``, whose value is a JSON header:

- ``format``: :data:`FORMAT` (a name and a version number);
- ``step`` (steps done), ``num_steps``;
- ``run``: what identifies the run: timesteps, seed, eta, guidance, dtype, strategy name and
  all its options, batch, state shape, and a fingerprint of the problem (views, prompts,
  negatives, correlation, weights, initial states) — prompts that are strings are kept as text
  so a refusal can say which prompt differs;
- ``checksum``: SHA-256 over the header (without this field) and every tensor's name, dtype,
  shape and bytes.

Nothing is unpickled: loading reads the bytes once, checks the header and the checksum, and
builds tensors from raw buffers. Any damage (empty, truncated, garbage, a flipped bit) is one
:class:`CheckpointError` naming the file; a checkpoint of another run is refused with the list of
what differs.
"""
from __future__ import annotations

import dataclasses
import enum
import hashlib
import json
import math
import os
import struct
from typing import Any, Mapping

import torch

from syncsde.atomic import atomic_write_bytes

__all__ = ["CheckpointError", "FORMAT", "describe", "save_checkpoint", "load_checkpoint",
           "run_differences"]

FORMAT = {"name": "syncsde-sampler-checkpoint", "version": 1}
_META_KEY = "syncsde_checkpoint"
_MAX_HEADER = 64 << 20  # safetensors' own limit is 100 MB; our headers are a few kB


class CheckpointError(ValueError):
    """A checkpoint file that cannot be used: damaged, of another format, or of another run."""

    def __init__(self, path: str | os.PathLike, problem: str, what: str = "checkpoint"):
        super().__init__(f"{what} {os.fspath(path)!r}: {problem}")
        self.path = os.fspath(path)


# ---- describing a run -----------------------------------------------------------------------
def _tensor_digest(t: torch.Tensor) -> dict:
    t = t.detach().to("cpu").contiguous()
    h = hashlib.sha256(str(t.dtype).encode() + str(tuple(t.shape)).encode())
    if t.numel():
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return {"tensor": list(t.shape), "dtype": str(t.dtype).replace("torch.", ""),
            "sha256": h.hexdigest()[:24]}


def describe(obj: Any, _depth: int = 0, _seen: set | None = None) -> Any:
    """A JSON-able description of ``obj`` that changes whenever the object's content does:
    numbers and strings as themselves, tensors and arrays as shape + dtype + content hash,
    dataclasses, mappings, sequences and plain objects field by field (classes named)."""
    if obj is None or isinstance(obj, (bool, int, str)):
        return obj
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else repr(obj)
    if isinstance(obj, enum.Enum):
        return f"{type(obj).__name__}.{obj.name}"
    if isinstance(obj, (torch.dtype, torch.device)):
        return str(obj)
    if isinstance(obj, torch.Tensor):
        return _tensor_digest(obj)
    if type(obj).__module__ == "numpy" and hasattr(obj, "dtype"):
        return _tensor_digest(torch.from_numpy(__import__("numpy").ascontiguousarray(obj)))
    if _depth > 12:
        return f"<{type(obj).__name__}: too deep>"
    seen = set() if _seen is None else _seen
    if id(obj) in seen:
        return f"<{type(obj).__name__}: cycle>"
    seen = seen | {id(obj)}
    rec = lambda v: describe(v, _depth + 1, seen)  # noqa: E731
    if isinstance(obj, Mapping):
        return {str(k): rec(v) for k, v in sorted(obj.items(), key=lambda kv: str(kv[0]))}
    if isinstance(obj, (list, tuple)):
        return [rec(v) for v in obj]
    if isinstance(obj, (set, frozenset)):
        return sorted((rec(v) for v in obj), key=lambda d: json.dumps(d, sort_keys=True))
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        fields = {f.name: rec(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
        return {"class": type(obj).__name__, **fields}
    if callable(obj) and not hasattr(obj, "__dict__"):
        return f"<callable {getattr(obj, '__qualname__', type(obj).__name__)}>"
    state = getattr(obj, "__dict__", None)
    if state is not None:
        # private attributes are caches (e.g. what a strategy's prepare() stores), not identity
        public = {k: v for k, v in state.items() if not k.startswith("_")}
        return {"class": type(obj).__name__, **{k: rec(v) for k, v in sorted(public.items())}}
    return f"<{type(obj).__name__}>"


def run_differences(saved: Mapping[str, Any], current: Mapping[str, Any]) -> list[str]:
    """Human-readable lines for every key whose description differs."""
    out = []
    for key in sorted(set(saved) | set(current)):
        a, b = saved.get(key, "<absent>"), current.get(key, "<absent>")
        if json.dumps(a, sort_keys=True) != json.dumps(b, sort_keys=True):
            sa, sb = json.dumps(a, sort_keys=True), json.dumps(b, sort_keys=True)
            if len(sa) > 120 or len(sb) > 120:
                out.append(f"{key} differs")
            else:
                out.append(f"{key}: checkpoint {sa}, this run {sb}")
    return out


# ---- the file ---------------------------------------------------------------------------------
_DTYPES = {"F64": torch.float64, "F32": torch.float32, "F16": torch.float16,
           "BF16": torch.bfloat16, "I64": torch.int64, "I32": torch.int32, "U8": torch.uint8,
           "BOOL": torch.bool}
_CODES = {v: k for k, v in _DTYPES.items()}


def _checksum(header: Mapping[str, Any], tensors: Mapping[str, torch.Tensor]) -> str:
    h = hashlib.sha256(json.dumps(header, sort_keys=True).encode())
    for name in sorted(tensors):
        t = tensors[name].detach().to("cpu").contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        if t.numel():
            h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def save_checkpoint(path: str | os.PathLike, step: int, num_steps: int, run: Mapping[str, Any],
                    tensors: Mapping[str, torch.Tensor]) -> None:
    """Writes a checkpoint atomically (temp file + fsync + rename)."""
    from safetensors.torch import save

    cpu = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
    header = {"format": FORMAT, "step": int(step), "num_steps": int(num_steps), "run": run}
    header["checksum"] = _checksum(header, cpu)
    data = save(cpu, metadata={_META_KEY: json.dumps(header, sort_keys=True)})
    atomic_write_bytes(path, data)


def _parse(path: str, data: bytes) -> tuple[dict, dict[str, torch.Tensor]]:
    """Reads a safetensors byte string by its specification (8-byte little-endian header length,
    JSON header, raw little-endian buffers), checking every offset against the file size."""
    if len(data) == 0:
        raise CheckpointError(path, "the file is empty")
    if len(data) < 8:
        raise CheckpointError(path, f"truncated ({len(data)} bytes)")
    (n,) = struct.unpack("<Q", data[:8])
    if n > _MAX_HEADER or 8 + n > len(data):
        raise CheckpointError(path, "not a safetensors checkpoint or truncated (bad header length)")
    try:
        meta = json.loads(data[8:8 + n].decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise CheckpointError(path, "damaged header (not JSON)") from None
    if not isinstance(meta, dict):
        raise CheckpointError(path, "damaged header (not a JSON object)")
    extra = meta.pop("__metadata__", None)
    if not isinstance(extra, dict) or not isinstance(extra.get(_META_KEY), str):
        raise CheckpointError(path, "not a syncsde sampler checkpoint (no syncsde_checkpoint "
                                    "metadata)")
    try:
        header = json.loads(extra[_META_KEY])
    except json.JSONDecodeError:
        raise CheckpointError(path, "damaged syncsde header (not JSON)") from None
    if not isinstance(header, dict):
        raise CheckpointError(path, "damaged syncsde header")
    body = memoryview(data)[8 + n:]
    tensors = {}
    for name, info in meta.items():
        try:
            dtype = _DTYPES[info["dtype"]]
            shape = [int(s) for s in info["shape"]]
            start, stop = (int(o) for o in info["data_offsets"])
        except (KeyError, TypeError, ValueError):
            raise CheckpointError(path, f"damaged entry for tensor {name!r}") from None
        itemsize = torch.empty((), dtype=dtype).element_size()
        if any(s < 0 for s in shape) or not 0 <= start <= stop <= len(body) or \
                (stop - start) != math.prod(shape) * itemsize:
            raise CheckpointError(path, f"tensor {name!r} does not fit the file (truncated?)")
        buf = bytearray(body[start:stop])
        t = torch.frombuffer(buf, dtype=torch.uint8) if buf else torch.empty(0, dtype=torch.uint8)
        tensors[name] = t.view(dtype).reshape(shape) if buf else torch.empty(shape, dtype=dtype)
    return header, tensors


def load_checkpoint(path: str | os.PathLike, run: Mapping[str, Any], num_steps: int,
                    what: str = "checkpoint") -> tuple[int, dict[str, torch.Tensor]]:
    """Reads and verifies a checkpoint written by :func:`save_checkpoint` for the run described
    by ``run``; returns ``(step, tensors)``. Raises :class:`CheckpointError` for any file that is
    damaged, of another format or version, of another run, or whose step is out of range
    (``what`` names the kind of file in the message)."""
    path = os.fspath(path)
    try:
        return _load_checked(path, run, num_steps)
    except CheckpointError as e:
        if what == "checkpoint":
            raise
        raise CheckpointError(path, str(e).split(": ", 1)[1], what) from None


def _load_checked(path: str, run: Mapping[str, Any],
                  num_steps: int) -> tuple[int, dict[str, torch.Tensor]]:
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise CheckpointError(path, f"cannot be read ({e.strerror})") from None
    header, tensors = _parse(path, data)
    if header.get("format") != FORMAT:
        raise CheckpointError(path, f"format {header.get('format')!r} is not {FORMAT}")
    expected = header.pop("checksum", None)
    if expected != _checksum(header, tensors):
        raise CheckpointError(path, "checksum mismatch: the file is damaged")
    step = header.get("step")
    if not isinstance(step, int) or isinstance(step, bool) or not 0 <= step <= num_steps \
            or header.get("num_steps") != num_steps:
        raise CheckpointError(path, f"step {step!r} is out of range for a run of {num_steps} "
                                    "steps")
    saved = header.get("run")
    if not isinstance(saved, dict):
        raise CheckpointError(path, "damaged syncsde header (no run description)")
    diff = run_differences(saved, json.loads(json.dumps(run)))
    if diff:
        raise CheckpointError(path, "belongs to another run: " + "; ".join(diff))
    return step, tensors
