"""score_sde's DDPM++ cont. (sub-VP) on CIFAR-10: ``subvp/cifar10_ddpmpp_continuous.py`` (FID
2.61, IS 9.56, FID (ODE) 3.16, 3.02 bits/dim in its README)."""

from configs.default_ddpmpp import get_ddpmpp_config


def get_config():
    return get_ddpmpp_config("subvpsde")
