"""DLSM moons study, (b) scaling: s + α ∇ log p(y | x, t), α = 10 (the scale of the official
CIFAR README; the toy code has none), with the cross-entropy classifier of moons_base."""

from configs.default_dlsm_moons import get_default_configs


def get_config():
    config = get_default_configs()
    config.classifier.training.objective = "ce"
    config.classifier.optim.lr = 1e-5
    config.guidance.method = "scaling"
    config.guidance.scale = 10.0
    return config
