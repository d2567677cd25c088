"""Tasks: each builds a :class:`~syncsde.sampler.Problem` (views, conditions, correlation model,
weights, initial state) and names its output; the sampler and strategies are shared.

- :func:`wide_problem`: panoramas of any size (windows, optional 360-degree wrap).
- :func:`ambiguous_problem`: an image that reads as prompt A and, transformed, as prompt B.
- :func:`masked_problem`: background / object / combined prompts with a region mask.
- :func:`edit_problem`: real-image editing from an inverted trajectory and an object mask.
- :func:`sequence_problem`: long 1-D sequences in time (motion) from short windows.
"""
from syncsde.tasks.ambiguous import AMBIGUOUS_VIEWS, ambiguous_problem
from syncsde.tasks.masked import edit_problem, masked_problem
from syncsde.tasks.sequence import sequence_problem
from syncsde.tasks.wide import wide_problem
from syncsde.tasks.texture import texture_problem  # noqa: E402 (needs syncsde.mesh)

__all__ = ["wide_problem", "ambiguous_problem", "AMBIGUOUS_VIEWS", "masked_problem",
           "edit_problem", "sequence_problem", "texture_problem"]

# tasks built only through the extension API (docs/extending.md)
from syncsde.tasks.sparse_views import CoveredEarlierViews, SparseViews  # noqa: E402
from syncsde.tasks.tileable import tileable_image, tileable_problem  # noqa: E402
from syncsde.tasks.panorama360 import panorama_image, panorama_problem  # noqa: E402
from syncsde.tasks.hybrid import hybrid_image, hybrid_problem  # noqa: E402

__all__ += ["SparseViews", "CoveredEarlierViews", "tileable_problem", "tileable_image",
            "panorama_problem", "panorama_image", "hybrid_problem", "hybrid_image"]

# conditioned generation at any size: region prompts, tiled img2img / upscaling
from syncsde.tasks.regions import regions_image, regions_problem  # noqa: E402
from syncsde.tasks.upscale import upscale_image  # noqa: E402

__all__ += ["regions_problem", "regions_image", "upscale_image"]
