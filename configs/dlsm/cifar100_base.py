"""DLSM on CIFAR-100 (poster Table 1), "Base": s + ∇ log p(y | x, t) with a ResNet-34 classifier
(100 classes, warm-up 1,000, 600 samples per class) trained by cross-entropy alone (official
``loss_type='ce'``, for which the official code has no config); see
configs/default_dlsm_cifar10.py for the mapping to the official settings."""

from configs.default_dlsm_cifar10 import get_default_configs, use_guidance


def get_config():
    return use_guidance(get_default_configs("cifar100"), "base")
