"""DLSM on the offline digits, "Base": s + ∇ log p(y | x, t) with a cross-entropy classifier;
see configs/default_dlsm_digits.py (and configs/default_dlsm_cifar10.py for the official
settings it scales down)."""

from configs.default_dlsm_digits import get_default_configs


def get_config():
    config = get_default_configs()
    config.classifier.training.objective = "ce"
    config.guidance.method = "base"
    config.guidance.scale = 1.0
    return config
