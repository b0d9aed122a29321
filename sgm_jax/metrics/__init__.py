"""Evaluation metrics."""

from sgm_jax.metrics.conservativeness import asym, nasym
from sgm_jax.metrics.prdc import knn_radii, prdc
from sgm_jax.metrics.score_error import average_over_levels, score_error

__all__ = ["asym", "nasym", "prdc", "knn_radii", "score_error", "average_over_levels"]
