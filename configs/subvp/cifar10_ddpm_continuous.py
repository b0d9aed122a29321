"""score_sde's DDPM cont. (sub-VP) on CIFAR-10: ``subvp/cifar10_ddpm_continuous.py`` (FID (ODE)
3.56, 3.05 bits/dim in its README)."""

from configs.default_ddpm import get_ddpm_config


def get_config():
    return get_ddpm_config("subvpsde")
