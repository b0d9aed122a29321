"""DLSM on the offline digits, "Ours": s + ∇ log p(y | x, t) with a classifier trained by
L_Total = L_DLSM + 1.0 · L_CE; see configs/default_dlsm_digits.py."""

from configs.default_dlsm_cifar10 import use_guidance
from configs.default_dlsm_digits import get_default_configs


def get_config():
    return use_guidance(get_default_configs(), "dlsm")
