"""Metrics for the exact-prior benchmark (design notes, section 4)."""
from syncsde.metrics.gaussian import fit_gaussian, frechet_distance, frechet_to_law, seam_statistic

__all__ = ["fit_gaussian", "frechet_distance", "frechet_to_law", "seam_statistic"]
