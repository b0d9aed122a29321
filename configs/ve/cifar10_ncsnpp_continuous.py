"""score_sde's NCSN++ cont. (VE) on CIFAR-10: ``ve/cifar10_ncsnpp_continuous.py`` (FID 2.38 in its
README), the defaults of ``configs/default_cifar10.py``."""

from configs.default_cifar10 import get_default_configs


def get_config():
    return get_default_configs()
