"""score_sde's DDPM++ cont. (VP) on CIFAR-10: ``vp/cifar10_ddpmpp_continuous.py``."""

from configs.default_ddpmpp import get_ddpmpp_config


def get_config():
    return get_ddpmpp_config("vpsde")
