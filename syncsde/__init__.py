"""syncsde: diffusion synchronization with a C core on DLPack tensors."""
import os as _os

# Idle OpenMP threads that spin between regions starve the other runtime's threads (ours and
# torch/MKL share 2 cores): a loop alternating a C kernel and a torch matmul ran 7x slower with
# the default policy (benchmarks/pipeline.py measures the sampler). Passive waiting is the
# default unless the user chose a policy; it only takes effect if syncsde is imported before
# the OpenMP runtime starts (import syncsde before torch, or set OMP_WAIT_POLICY yourself).
_os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from syncsde import ops  # noqa: E402
from syncsde.ops import get_num_threads, set_num_threads  # noqa: E402

__version__ = "0.1.0"

__all__ = ["ops", "set_num_threads", "get_num_threads", "__version__"]


def __getattr__(name):  # SyncPipeline without importing diffusers at package import
    if name in ("SyncPipeline", "SyncPipelineOutput"):
        from syncsde import sync_pipeline

        return getattr(sync_pipeline, name)
    raise AttributeError(f"module 'syncsde' has no attribute {name!r}")
