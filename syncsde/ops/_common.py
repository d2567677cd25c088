"""Shared plumbing of the op wrappers: threads, output allocation, device staging.

The C core reads host memory through DLPack. Wrappers here:
- allocate outputs when none is given (contiguous, same dtype/device as the first input);
- refuse outputs that require grad (raw writes do not bump autograd's version counter);
- detach torch inputs (DLPack refuses tensors that require grad);
- stage tensors on a non-CPU device through host memory and copy the result back
  (until the core has CUDA kernels; `benchmarks/ops.py --device cuda` measures the cost).
"""
from __future__ import annotations

import math
import os
import sys
from typing import Any, Callable, Sequence

import numpy as np

from syncsde import _C

Tensor = Any  # torch.Tensor or numpy.ndarray (anything with __dlpack__)


def _default_threads() -> int:
    env = os.environ.get("SYNCSDE_NUM_THREADS")
    if env:
        try:
            n = int(env)
        except ValueError as e:
            raise ValueError(f"SYNCSDE_NUM_THREADS must be an integer >= 1, got {env!r}") from e
        if n < 1:
            raise ValueError(f"SYNCSDE_NUM_THREADS must be an integer >= 1, got {env!r}")
        return n
    torch = sys.modules.get("torch")
    if torch is not None:
        return max(1, torch.get_num_threads())
    return max(1, os.cpu_count() or 1)


def set_num_threads(n: int | None = None) -> None:
    """Set the OpenMP team size of every C kernel.

    With ``n=None`` it follows ``SYNCSDE_NUM_THREADS`` if set, else ``torch.get_num_threads()``
    (when torch is imported), else the CPU count. The sampler calls this with ``None`` at the
    start of each run so that a change of ``torch.set_num_threads`` is followed.
    """
    _C.set_num_threads(_default_threads() if n is None else int(n))


def get_num_threads() -> int:
    """The OpenMP team size used by the C kernels."""
    return _C.get_num_threads()


set_num_threads()


def is_torch(x: Any) -> bool:
    t = sys.modules.get("torch")
    return t is not None and isinstance(x, t.Tensor)


def _torch():
    import torch

    return torch


def as_input(x: Any, name: str) -> Any:
    """Returns something the binding can borrow: a detached CPU tensor or an ndarray."""
    if is_torch(x):
        if x.requires_grad:
            x = x.detach()
        if x.device.type != "cpu":
            x = x.cpu()
        if x.is_conj():
            x = x.resolve_conj()
        return x
    if isinstance(x, np.ndarray) or hasattr(x, "__dlpack__"):
        return x
    raise TypeError(f"argument '{name}' must be a torch.Tensor or numpy.ndarray, got {type(x).__name__}")


def check_output(out: Any, name: str = "out") -> None:
    if is_torch(out) and out.requires_grad:
        raise ValueError(
            f"argument '{name}' requires grad; syncsde writes outputs in place behind autograd's "
            "back: pass a tensor that does not require grad (run under torch.no_grad())"
        )


def empty_like(x: Any, shape: Sequence[int] | None = None, dtype: Any = None) -> Any:
    """A fresh contiguous tensor of x's kind (torch or numpy), device and dtype."""
    if is_torch(x):
        torch = _torch()
        return torch.empty(tuple(x.shape) if shape is None else tuple(shape),
                           dtype=x.dtype if dtype is None else dtype, device=x.device)
    if not isinstance(x, np.ndarray):
        raise TypeError(f"expected a torch.Tensor or numpy.ndarray, got {type(x).__name__}")
    return np.empty(x.shape if shape is None else tuple(shape), dtype=x.dtype if dtype is None else dtype)


def zeros_like(x: Any, shape: Sequence[int] | None = None, dtype: Any = None) -> Any:
    out = empty_like(x, shape, dtype)
    out[...] = 0
    return out


def device_of(x: Any) -> str:
    return x.device.type if is_torch(x) else "cpu"


def call_with_output(kernel: Callable[..., Any], out: Any, inputs: Sequence[Any],
                     input_names: Sequence[str], *scalars: Any) -> Any:
    """Runs ``kernel(out, *inputs, *scalars)`` on host memory and returns ``out``.

    A non-CPU ``out`` is computed in a host buffer and copied back; ``None`` inputs pass through.
    """
    check_output(out)
    host_inputs = [None if x is None else as_input(x, n) for x, n in zip(inputs, input_names)]
    if device_of(out) == "cpu":
        kernel(out, *host_inputs, *scalars)
        return out
    torch = _torch()
    host_out = out.detach().to("cpu", memory_format=torch.contiguous_format)
    kernel(host_out, *host_inputs, *scalars)
    with torch.no_grad():
        out.copy_(host_out)
    return out


def check_abar(value: float, name: str) -> float:
    v = float(value)
    if not (0.0 < v <= 1.0) or math.isnan(v):
        raise ValueError(f"{name} must be in (0, 1], got {value!r}")
    return v
