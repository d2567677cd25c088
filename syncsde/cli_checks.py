"""Argument types and early checks for the command line: every bad value is one clear line before
any model loads (argparse reports a bad type as ``error: argument --steps: ...``)."""
from __future__ import annotations

import argparse
import math
import os

__all__ = ["positive_int", "non_negative_int", "finite_float", "non_negative_float",
           "check_device", "check_input_file"]


def _int(text: str) -> int:
    try:
        return int(text, 10)
    except (TypeError, ValueError):
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None


def positive_int(text: str) -> int:
    v = _int(text)
    if v < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {v}")
    return v


def non_negative_int(text: str) -> int:
    v = _int(text)
    if v < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {v}")
    return v


def finite_float(text: str) -> float:
    try:
        v = float(text)
    except (TypeError, ValueError):
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(v):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {text!r}")
    return v


def non_negative_float(text: str) -> float:
    v = finite_float(text)
    if v < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {v}")
    return v


def check_device(name: str | None) -> str:
    """The device to run on: ``name`` checked to exist here, or cuda when available, else cpu."""
    import torch

    if not name:
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        dev = torch.device(name)
    except (RuntimeError, ValueError):
        raise ValueError(f"--device {name!r}: not a device name (e.g. cpu, cuda, cuda:1, mps)") from None
    if dev.type == "cpu":
        return name
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"--device {name!r}: CUDA is not available on this machine")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ValueError(f"--device {name!r}: only {torch.cuda.device_count()} CUDA device(s)")
        return name
    if dev.type == "mps":
        if not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
            raise ValueError(f"--device {name!r}: MPS is not available on this machine")
        return name
    raise ValueError(f"--device {name!r}: unsupported device type {dev.type!r} (cpu, cuda, mps)")


def check_input_file(path: str | None, option: str, image: bool = False) -> None:
    """Refuses a missing, unreadable or (with ``image``) non-image input file up front."""
    if path is None:
        return
    if not os.path.exists(path):
        raise ValueError(f"{option} {path!r}: no such file")
    if os.path.isdir(path):
        raise ValueError(f"{option} {path!r}: is a folder, not a file")
    if not os.access(path, os.R_OK):
        raise ValueError(f"{option} {path!r}: not readable (permission denied)")
    if image:
        from PIL import Image, UnidentifiedImageError

        try:
            with Image.open(path) as img:
                img.verify()
        except (UnidentifiedImageError, OSError, SyntaxError) as e:
            raise ValueError(f"{option} {path!r}: not a readable image ({e})") from None
