"""QCSGM on svhn: C-NCSN++ (the official energy h = −½‖f‖²/σ_t, s = ∇ₓh); see configs/default_qcsgm.py."""

from configs.default_qcsgm import get_qcsgm_config


def get_config():
    return get_qcsgm_config("svhn", "c")
