"""DLSM on the offline digits, "Scaling": s + α ∇ log p(y | x, t), α = 10, with the
cross-entropy classifier of digits_base; see configs/default_dlsm_digits.py."""

from configs.default_dlsm_cifar10 import use_guidance
from configs.default_dlsm_digits import get_default_configs


def get_config():
    return use_guidance(get_default_configs(), "scaling")
