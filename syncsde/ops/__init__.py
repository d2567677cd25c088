"""Typed wrappers over the C core (`syncsde._C`). Every op accepts torch tensors and numpy
arrays (anything with ``__dlpack__``), writes into ``out`` in place (allocated when omitted),
and raises TypeError/ValueError naming the argument on bad input."""
from syncsde.ops._common import get_num_threads, set_num_threads
from syncsde.ops.pixelmaps import (
    DIHEDRAL_OPS,
    csr_apply,
    csr_coverage,
    dihedral,
    dihedral_inverse,
    dihedral_shape,
    dihedral_swaps_axes,
    permute_pixels,
    skew,
    skew_shifts,
)
from syncsde.ops.raster import Fragments, nearest_seed, rasterize
from syncsde.ops.composite import UNCOVERED_POLICIES, normalize_accumulated, window_average
from syncsde.ops.steps import (
    DDIMCoefficients,
    cfg_combine,
    ddim_coefficients,
    ddim_step,
    eps_from_v,
    eps_from_x0,
    lincomb,
    syncsde_step,
    replace_where,
    masked_move,
    tweedie,
)
from syncsde.ops.windows import (
    crop_windows,
    paste_windows_add,
    paste_windows_on_top,
    window_coverage,
)

__all__ = [
    "get_num_threads", "set_num_threads",
    "DDIMCoefficients", "ddim_coefficients", "lincomb", "tweedie", "eps_from_x0", "eps_from_v",
    "cfg_combine", "ddim_step", "syncsde_step", "replace_where", "masked_move",
    "crop_windows", "paste_windows_add", "paste_windows_on_top", "window_coverage",
    "normalize_accumulated", "window_average", "UNCOVERED_POLICIES",
    "DIHEDRAL_OPS", "dihedral", "dihedral_inverse", "dihedral_shape", "dihedral_swaps_axes",
    "skew", "skew_shifts", "permute_pixels", "csr_apply", "csr_coverage",
    "Fragments", "rasterize", "nearest_seed",
]
