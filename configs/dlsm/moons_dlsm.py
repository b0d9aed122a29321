"""DLSM moons study, (d) DLSM: s + ∇ log p(y | x, t) with a classifier trained by
L_Total = L_DLSM + 0.125 L_CE (official toy total config, lr 1e-5)."""

from configs.default_dlsm_moons import get_default_configs


def get_config():
    config = get_default_configs()
    config.classifier.training.objective = "total"
    config.classifier.optim.lr = 1e-5
    config.guidance.method = "dlsm"
    config.guidance.scale = 1.0
    return config
