"""DLSM on CIFAR-100 (poster Table 1), "Scaling": s + α ∇ log p(y | x, t) with α = 10 (the
official README's ``--scale``) and the cross-entropy ResNet-34 classifier (100 classes, warm-up
1,000, 600 samples per class) of cifar100_base; see configs/default_dlsm_cifar10.py for the
mapping to the official settings."""

from configs.default_dlsm_cifar10 import get_default_configs, use_guidance


def get_config():
    return use_guidance(get_default_configs("cifar100"), "scaling")
