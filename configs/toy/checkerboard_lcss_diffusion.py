"""LCSS checkerboard study with the objective "lcss" in the LCSS paper's time-conditional setting:
perturbation std σ = g(t) and weight λ(t) = g(t)² (see configs/default_lcss_checkerboard.py)."""

from configs.default_lcss_checkerboard import get_lcss_checkerboard_config


def get_config():
    return get_lcss_checkerboard_config("lcss", perturbation="diffusion")
