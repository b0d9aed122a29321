"""DLSM on CIFAR-100 (poster Table 1), "Ours": s + ∇ log p(y | x, t) with a ResNet-34 classifier
(100 classes, warm-up 1,000, 600 samples per class) trained by L_Total = L_DLSM + 1.0 · L_CE
(official ``loss_type='total'``, ``coef`` 1, ``weighting_dlsm`` = ``weighting_ce`` = 0); see
configs/default_dlsm_cifar10.py for the mapping to the official settings."""

from configs.default_dlsm_cifar10 import get_default_configs, use_guidance


def get_config():
    return use_guidance(get_default_configs("cifar100"), "dlsm")
