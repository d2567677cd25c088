"""Gradient-based synchronization on the shared engine: SyncDiffusion (perceptual gradient steps
on MultiDiffusion) and SyncVC (variational controls on SyncSDE), their pluggable distances, and
differentiable model calls. Both strategies are registered in
:data:`syncsde.strategies.STRATEGIES` as ``"syncdiffusion"`` and ``"syncvc"``."""
import syncsde.strategies  # noqa: F401  (first: it registers the strategies below)
from syncsde.guidance.distances import (
                                        FeatureDistance,
                                        GramDistance,
                                        LPIPSDistance,
                                        PixelDistance,
                                        gradient_features,
                                        resolve_distance,
)
from syncsde.guidance.model import CallCounter, differentiable_eps
from syncsde.guidance.syncdiffusion import SyncDiffusion
from syncsde.guidance.syncvc import SyncVC

__all__ = [
                                        "CallCounter",
                                        "FeatureDistance",
                                        "GramDistance",
                                        "LPIPSDistance",
                                        "PixelDistance",
                                        "SyncDiffusion",
                                        "SyncVC",
                                        "differentiable_eps",
                                        "gradient_features",
                                        "resolve_distance",
]
