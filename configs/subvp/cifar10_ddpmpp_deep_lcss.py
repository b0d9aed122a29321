"""The LCSS CIFAR-10 study: DDPM++ deep (sub-VP) trained with LCSS; see configs/default_lcss_cifar10.py."""

from configs.default_lcss_cifar10 import get_lcss_config


def get_config():
    return get_lcss_config("ddpmpp_deep", "lcss")
