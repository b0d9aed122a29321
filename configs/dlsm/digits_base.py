"""DLSM on the offline digits, "Base": s + ∇ log p(y | x, t) with a cross-entropy classifier;
see configs/default_dlsm_digits.py (and configs/default_dlsm_cifar10.py for the official
settings it scales down)."""

from configs.default_dlsm_cifar10 import use_guidance
from configs.default_dlsm_digits import get_default_configs


def get_config():
    return use_guidance(get_default_configs(), "base")
