"""DLSM on CIFAR-10 (poster Table 1), "Scaling": s + α ∇ log p(y | x, t) with α = 10 (the
official README's ``--scale``) and the cross-entropy ResNet-18 classifier of cifar10_base; see
configs/default_dlsm_cifar10.py for the mapping to the official settings."""

from configs.default_dlsm_cifar10 import get_default_configs, use_guidance


def get_config():
    return use_guidance(get_default_configs("cifar10"), "scaling")
