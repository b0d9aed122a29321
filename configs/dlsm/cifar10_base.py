"""DLSM on CIFAR-10 (poster Table 1), "Base": s + ∇ log p(y | x, t) with a ResNet-18 classifier
trained by cross-entropy alone (official ``loss_type='ce'``, for which the official code has
no config); see configs/default_dlsm_cifar10.py for the mapping to the official settings."""

from configs.default_dlsm_cifar10 import get_default_configs


def get_config():
    config = get_default_configs("cifar10")
    config.classifier.training.objective = "ce"
    config.guidance.method = "base"
    config.guidance.scale = 1.0
    return config
