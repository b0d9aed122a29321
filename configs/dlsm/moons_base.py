"""DLSM moons study, (a) base: s + ∇ log p(y | x, t) with a cross-entropy classifier
(official toy CE lr 1e-5)."""

from configs.default_dlsm_cifar10 import use_guidance
from configs.default_dlsm_moons import get_default_configs


def get_config():
    return use_guidance(get_default_configs(), "base")
