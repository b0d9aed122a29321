"""The LCSS CIFAR-10 study: NCSN++ deep (VE) trained with LCSS; see configs/default_lcss_cifar10.py."""

from configs.default_lcss_cifar10 import get_lcss_config


def get_config():
    return get_lcss_config("ncsnpp_deep", "lcss")
