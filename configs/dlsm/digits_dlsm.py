"""DLSM on the offline digits, "Ours": s + ∇ log p(y | x, t) with a classifier trained by
L_Total = L_DLSM + 1.0 · L_CE; see configs/default_dlsm_digits.py."""

from configs.default_dlsm_digits import get_default_configs


def get_config():
    config = get_default_configs()
    config.classifier.training.objective = "total"
    config.classifier.training.ce_weight = 1.0
    config.guidance.method = "dlsm"
    config.guidance.scale = 1.0
    return config
