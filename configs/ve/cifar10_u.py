"""QCSGM on cifar10: U-NCSN++ (score_sde's NCSN++ deep continuous, plain DSM); see configs/default_qcsgm.py."""

from configs.default_qcsgm import get_qcsgm_config


def get_config():
    return get_qcsgm_config("cifar10", "u")
