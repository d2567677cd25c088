"""syncsde: diffusion synchronization with a C core on DLPack tensors."""
from syncsde import ops
from syncsde.ops import get_num_threads, set_num_threads

__version__ = "0.1.0"

__all__ = ["ops", "set_num_threads", "get_num_threads", "__version__"]
