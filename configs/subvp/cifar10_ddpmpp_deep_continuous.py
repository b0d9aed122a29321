"""score_sde's DDPM++ cont. deep (sub-VP) on CIFAR-10: ``subvp/cifar10_ddpmpp_deep_continuous.py``
(8 residual blocks per resolution, 950,000 steps)."""

from configs.default_ddpmpp import get_ddpmpp_config


def get_config():
    config = get_ddpmpp_config("subvpsde")
    config.model.num_res_blocks = 8
    config.training.n_iters = 950000
    return config
