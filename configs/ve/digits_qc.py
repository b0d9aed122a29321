"""Digits (offline CPU demonstration), QC: the U model with the QC regulariser (λ = 1e-4, one
Rademacher probe, as QCSGM's CIFAR-10 runs) from the first step; see configs/default_digits.py."""

from configs.default_digits import get_digits_config


def get_config():
    config = get_digits_config()
    config.training.qc_weight = 1e-4
    return config
