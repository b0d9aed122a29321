"""score_sde's DDPM cont. (VP) on CIFAR-10: ``vp/ddpm/cifar10_continuous.py`` (FID (ODE) 3.69,
3.21 bits/dim in its README)."""

from configs.default_ddpm import get_ddpm_config


def get_config():
    return get_ddpm_config("vpsde")
