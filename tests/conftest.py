"""Shared helpers for the tests: random layouts of one logical array, dtype tolerances."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import strategies as st

FLOAT_DTYPES = ["float32", "float64", "float16", "bfloat16"]

TORCH_DTYPES = {
    "float32": torch.float32,
    "float64": torch.float64,
    "float16": torch.float16,
    "bfloat16": torch.bfloat16,
}

# Tolerances against a float64 reference computed from the rounded inputs.
TOL = {
    "float32": dict(rtol=1e-5, atol=1e-5),
    "float64": dict(rtol=1e-12, atol=1e-12),
    "float16": dict(rtol=2e-3, atol=2e-3),
    "bfloat16": dict(rtol=1.6e-2, atol=1.6e-2),
}


def to_numpy64(x) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().to(torch.float64).cpu().numpy()
    return np.asarray(x, dtype=np.float64)


def make_array(data64: np.ndarray, dtype: str, kind: str, layout: int):
    """The same logical values as a torch tensor or numpy array with a layout picked by
    `layout`: 0 contiguous, 1 transposed storage, 2 sliced (every other element of a bigger
    buffer), 3 negative steps (numpy) / flipped copy (torch has no negative strides)."""
    if kind == "numpy" and dtype == "bfloat16":
        kind = "torch"  # numpy has no bfloat16
    t = torch.from_numpy(np.ascontiguousarray(data64)).to(TORCH_DTYPES[dtype])
    nd = t.ndim
    if layout == 1 and nd >= 2:
        t = t.transpose(0, nd - 1).contiguous().transpose(0, nd - 1)
    elif layout == 2 and nd >= 1:
        big = torch.zeros(*t.shape[:-1], 2 * t.shape[-1], dtype=t.dtype)
        big[..., ::2] = t
        t = big[..., ::2]
    if kind == "torch":
        return t
    a = t.numpy()
    if layout == 3 and nd >= 1:
        b = np.ascontiguousarray(a[..., ::-1])
        a = b[..., ::-1]
    return a


def rounded64(x) -> np.ndarray:
    """float64 values of x after rounding to its dtype (the reference's input)."""
    return to_numpy64(x)


@st.composite
def shapes(draw, min_dims=1, max_dims=4, max_side=9):
    nd = draw(st.integers(min_dims, max_dims))
    return tuple(draw(st.integers(1, max_side)) for _ in range(nd))


@pytest.fixture
def rng():
    return np.random.default_rng(0)
