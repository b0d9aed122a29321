"""Evaluation metrics."""

from sgm_jax.metrics.cas import cas
from sgm_jax.metrics.classwise import classwise_prdc
from sgm_jax.metrics.conservativeness import asym, nasym
from sgm_jax.metrics.feature_metrics import feature_statistics, fid, frechet_distance, inception_score, kid
from sgm_jax.metrics.inception import inception_weights_hash, load_inception
from sgm_jax.metrics.prdc import knn_radii, prdc
from sgm_jax.metrics.score_error import average_over_levels, score_error

__all__ = ["asym", "nasym", "prdc", "knn_radii", "score_error", "average_over_levels",
           "frechet_distance", "fid", "feature_statistics", "inception_score", "kid",
           "load_inception", "inception_weights_hash", "classwise_prdc", "cas"]
