"""Shared test helper: interrupt a sampler run at one step, resume it from its checkpoint and
compare with the uninterrupted run."""
from __future__ import annotations

import pytest
import torch

from syncsde.sampler import sample


class _Stop(Exception):
    pass


def assert_resumes_bit_identically(checkpoint: str, stop_at: int, *args, **kwargs) -> None:
    """``sample(*args, **kwargs)`` interrupted after step ``stop_at`` and resumed from
    ``checkpoint`` equals the uninterrupted run exactly."""
    full = sample(*args, **kwargs).output

    def stop(index, t, y):
        if index == stop_at:
            raise _Stop

    with pytest.raises(_Stop):
        sample(*args, checkpoint=checkpoint, callback=stop, **kwargs)
    resumed = sample(*args, checkpoint=checkpoint, **kwargs).output
    torch.testing.assert_close(resumed, full, rtol=0, atol=0)
