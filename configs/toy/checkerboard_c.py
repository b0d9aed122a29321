"""QCSGM Table 1, checkerboard: C-SGM, the constrained score s = −∇ₓ‖x − act(f(x, σ))‖²/(2σ)
with the official output activation act = elu (official CSBM config, 4000 iterations)."""

from configs.default_toy import get_default_configs


def get_config():
    config = get_default_configs()
    config.data.dataset = "checkerboard"
    config.model.parameterisation = "c"
    config.model.output_activation = "elu"
    config.training.n_iters = 4000
    return config
