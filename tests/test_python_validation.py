"""Python-level argument checks: integers are never truncated, bad values name the argument."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from syncsde.tasks import masked_problem, wide_problem
from syncsde.views import WindowViews, window_offsets


@pytest.mark.parametrize("kw, message", [
    (dict(window=2.5), "window"), (dict(window=True), "window"), (dict(stride=4.0), "stride"),
    (dict(stride=(1, 2.5)), "stride"), (dict(canvas_shape=(1, 4, 16.5)), "canvas_shape"),
    (dict(canvas_shape=(1, 4)), "canvas_shape"), (dict(window="8"), "window")])
def test_wide_problem_refuses_non_integers(kw, message):
    args = dict(canvas_shape=(1, 4, 16), window=(4, 8), stride=(1, 4), cond="a")
    args.update(kw)
    with pytest.raises((TypeError, ValueError), match=message):
        wide_problem(**args)


@pytest.mark.parametrize("offsets", [[[0, 2.5]], [[0, True]], np.array([[0.0, 1.0]]),
                                     torch.tensor([[0.0, 1.0]]), torch.tensor([[True, False]]),
                                     [[0, 1, 2]], torch.zeros((1, 2), dtype=torch.int64, device="meta")])
def test_window_offsets_must_be_integer_pairs(offsets):
    with pytest.raises((TypeError, ValueError), match="offsets"):
        WindowViews((1, 4, 16), (4, 8), offsets)


def test_window_views_accept_integer_forms_exactly():
    for offs in ([[0, 3], [0, 8]], np.array([[0, 3], [0, 8]], dtype=np.int32),
                 torch.tensor([[0, 3], [0, 8]], dtype=torch.int16)):
        v = WindowViews((1, 4, 16), (4, 8), offs)
        assert v.offsets.dtype == torch.int64 and v.offsets.tolist() == [[0, 3], [0, 8]]
    assert window_offsets(np.int64(16), 8, 4) == [0, 4, 8]
    with pytest.raises(TypeError, match="stride"):
        window_offsets(16, 8, 4.0)


def test_masked_problem_refuses_fractional_shape():
    with pytest.raises(TypeError, match="shape"):
        masked_problem((1, 4.5, 4), torch.ones(4, 4), "a", "b", "c")
