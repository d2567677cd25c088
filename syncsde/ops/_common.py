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
import operator
import os
import re
import sys
from typing import Any, Callable, Sequence

import numpy as np

from syncsde import _C

Tensor = Any  # torch.Tensor or numpy.ndarray (anything with __dlpack__)


def _default_threads() -> int:
    env = os.environ.get("SYNCSDE_NUM_THREADS")
    if env:
        cap = _C.max_num_threads()
        try:
            n = int(env)
        except ValueError as e:
            raise ValueError(f"SYNCSDE_NUM_THREADS must be an integer in [1, {cap}], got {env!r}") from e
        if not 1 <= n <= cap:
            raise ValueError(f"SYNCSDE_NUM_THREADS must be an integer in [1, {cap}], got {env!r}")
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
    if n is None:
        _C.set_num_threads(min(_default_threads(), _C.max_num_threads()))
        return
    _C.set_num_threads(as_int(n, "num_threads"))


def get_num_threads() -> int:
    """The OpenMP team size used by the C kernels."""
    return _C.get_num_threads()


set_num_threads()


def as_int(v: Any, name: str) -> int:
    """An integer argument: ints and numpy integers pass; bools, floats (even 2.0) and
    strings are refused rather than truncated."""
    if isinstance(v, (bool, np.bool_)):
        raise TypeError(f"argument '{name}' must be an int, got a bool ({v!r})")
    try:
        return operator.index(v)
    except TypeError:
        raise TypeError(f"argument '{name}' must be an int, got {type(v).__name__} ({v!r})") from None


def check_device(x: Any, name: str) -> None:
    """Refuses tensors whose memory cannot be read: the meta device (shapes only) and any
    device torch cannot copy to the host."""
    if is_torch(x) and x.device.type == "meta":
        raise ValueError(f"argument '{name}' is on the meta device (a tensor without data); "
                         "syncsde kernels need real memory: create it on 'cpu' or 'cuda'")


def _to_host(x: Any, name: str) -> Any:
    check_device(x, name)
    try:
        return x.cpu()
    except (RuntimeError, NotImplementedError) as e:
        raise ValueError(f"argument '{name}' is on device {x.device}, which cannot be copied to "
                         f"the host: {e}") from e


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
            x = _to_host(x, name)
        if x.is_conj():
            x = x.resolve_conj()
        if x.is_neg():  # a lazy negation (z.conj().imag): DLPack would export it un-negated
            x = x.resolve_neg()
        return x
    if isinstance(x, np.ndarray):
        # the kernels load whole items: an unaligned array (np.frombuffer at an odd offset)
        # is copied to aligned memory
        return x if x.flags.aligned else x.copy()
    if hasattr(x, "__dlpack__"):
        return x
    raise TypeError(f"argument '{name}' must be a torch.Tensor or numpy.ndarray, got {type(x).__name__}")


def check_output(out: Any, name: str = "out") -> None:
    check_device(out, name)
    if is_torch(out) and out.is_neg():
        raise ValueError(
            f"argument '{name}' has the negative bit set (a lazy negation view such as "
            "z.conj().imag); writes through it would land un-negated: pass a materialized "
            "tensor")
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


def rename_args(kernel: Callable[..., Any], args: Sequence[Any],
                names: dict[str, str] | None) -> Any:
    """``kernel(*args)``; errors that name the binding's arguments (``'y'``) are re-raised
    naming the caller's (``'eps'``) through ``names`` = {binding name: user name}."""
    if not names:
        return kernel(*args)
    try:
        return kernel(*args)
    except (TypeError, ValueError, IndexError) as e:
        pattern = re.compile("'(" + "|".join(re.escape(k) for k in names) + ")'")
        msg = pattern.sub(lambda m: f"'{names[m.group(1)]}'", str(e))
        if msg == str(e):
            raise
        raise type(e)(msg).with_traceback(e.__traceback__) from None


def call_with_output(kernel: Callable[..., Any], out: Any, inputs: Sequence[Any],
                     input_names: Sequence[str], *scalars: Any,
                     binding_names: Sequence[str] | None = None) -> Any:
    """Runs ``kernel(out, *inputs, *scalars)`` on host memory and returns ``out``.

    A non-CPU ``out`` is computed in a host buffer and copied back; ``None`` inputs pass through.
    ``binding_names`` are the kernel's own names of the inputs, when they differ from
    ``input_names`` (error messages are rewritten to the latter).
    """
    for x, n in zip(inputs, input_names):
        check_device(x, n)
    check_output(out)
    host_inputs = [None if x is None else as_input(x, n) for x, n in zip(inputs, input_names)]
    names = None
    if binding_names is not None:
        names = {b: u for b, u in zip(binding_names, input_names) if b != u}
    if device_of(out) == "cpu":
        rename_args(kernel, (out, *host_inputs, *scalars), names)
        return out
    torch = _torch()
    host_out = out.detach().to("cpu", memory_format=torch.contiguous_format)
    rename_args(kernel, (host_out, *host_inputs, *scalars), names)
    with torch.no_grad():
        out.copy_(host_out)
    return out


def check_abar(value: float, name: str) -> float:
    v = float(value)
    if not (0.0 < v <= 1.0) or math.isnan(v):
        raise ValueError(f"{name} must be in (0, 1], got {value!r}")
    return v
