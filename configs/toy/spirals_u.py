"""QCSGM Table 1, spirals: U-SGM, the unconstrained score s = (x − f(x, σ))/σ trained with DSM
(official 2d_examples USBM config: official network, 2000 iterations)."""

from configs.default_toy import get_default_configs


def get_config():
    config = get_default_configs()
    config.data.dataset = "spirals"
    config.model.parameterisation = "u"
    config.training.n_iters = 2000
    return config
