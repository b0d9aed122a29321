"""Digits (offline CPU demonstration), U: NCSN++ with s = f/σ_t, plain DSM; see
configs/default_digits.py."""

from configs.default_digits import get_digits_config


def get_config():
    return get_digits_config()
