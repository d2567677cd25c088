"""Metrics: the exact-prior benchmark (design notes, section 4) and the image metrics of the
papers over pluggable feature networks (docs/evaluation.md)."""
from syncsde.metrics.gaussian import fit_gaussian, frechet_distance, frechet_to_law, seam_statistic
from syncsde.metrics.fid_kid import KID_SCALE, fid, kid
from syncsde.metrics.features import (ScenesFeatureNet, VGGFeatureNet, WeightsNotFoundError,
                                      load_feature_net)
from syncsde.metrics.perceptual import bg_lpips, lpips, style_loss
from syncsde.metrics.clip_score import (ScenesPromptEmbedder, clip_score, clip_score_x100,
                                        prompt_agreement_rate)
from syncsde.metrics.coherence import (crops, hsv_coherence, intra_lpips, intra_style, seam_jump,
                                       window_seams)

__all__ = ["fit_gaussian", "frechet_distance", "frechet_to_law", "seam_statistic",
           "KID_SCALE", "fid", "kid", "ScenesFeatureNet", "VGGFeatureNet", "WeightsNotFoundError",
           "load_feature_net", "bg_lpips", "lpips", "style_loss", "ScenesPromptEmbedder",
           "clip_score", "clip_score_x100", "prompt_agreement_rate", "crops", "hsv_coherence",
           "intra_lpips", "intra_style", "seam_jump", "window_seams"]
