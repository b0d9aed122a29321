"""DLSM moons study, (a) base: s + ∇ log p(y | x, t) with a cross-entropy classifier
(official toy CE lr 1e-5)."""

from configs.default_dlsm_moons import get_default_configs


def get_config():
    config = get_default_configs()
    config.classifier.training.objective = "ce"
    config.classifier.optim.lr = 1e-5
    config.guidance.method = "base"
    config.guidance.scale = 1.0
    return config
