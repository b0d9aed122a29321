"""The LCSS CIFAR-10 study: DDPM++ (sub-VP) trained with DSM; see configs/default_lcss_cifar10.py."""

from configs.default_lcss_cifar10 import get_lcss_config


def get_config():
    return get_lcss_config("ddpmpp", "dsm")
