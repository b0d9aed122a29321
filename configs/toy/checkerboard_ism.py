"""LCSS checkerboard study with the objective "ism" (see configs/default_lcss_checkerboard.py)."""

from configs.default_lcss_checkerboard import get_lcss_checkerboard_config


def get_config():
    return get_lcss_checkerboard_config("ism")
