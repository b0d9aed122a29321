"""QCSGM on cifar100: QC-NCSN++ (stage 2: λ = 1e-4, K = 1, from the U stage-1 checkpoint given by training.init_from); see configs/default_qcsgm.py."""

from configs.default_qcsgm import get_qcsgm_config


def get_config():
    return get_qcsgm_config("cifar100", "qc")
