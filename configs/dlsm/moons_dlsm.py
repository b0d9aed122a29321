"""DLSM moons study, (d) DLSM: s + ∇ log p(y | x, t) with a classifier trained by
L_Total = L_DLSM + 0.125 L_CE (official toy total config, lr 1e-5)."""

from configs.default_dlsm_cifar10 import use_guidance
from configs.default_dlsm_moons import get_default_configs


def get_config():
    return use_guidance(get_default_configs(), "dlsm")
