"""DLSM moons study, (b) scaling: s + α ∇ log p(y | x, t), α = 10 (the scale of the official
CIFAR README; the toy code has none), with the cross-entropy classifier of moons_base."""

from configs.default_dlsm_cifar10 import use_guidance
from configs.default_dlsm_moons import get_default_configs


def get_config():
    return use_guidance(get_default_configs(), "scaling")
