"""DLSM on the offline digits, "Scaling": s + α ∇ log p(y | x, t), α = 10, with the
cross-entropy classifier of digits_base; see configs/default_dlsm_digits.py."""

from configs.default_dlsm_digits import get_default_configs


def get_config():
    config = get_default_configs()
    config.classifier.training.objective = "ce"
    config.guidance.method = "scaling"
    config.guidance.scale = 10.0
    return config
