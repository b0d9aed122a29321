"""score_sde's NCSN++ cont. deep (VE) on CIFAR-10: ``ve/cifar10_ncsnpp_deep_continuous.py``
(8 residual blocks per resolution, 950,000 steps; FID 2.20, IS 9.89 in its README)."""

from configs.default_cifar10 import get_default_configs


def get_config():
    config = get_default_configs()
    config.model.num_res_blocks = 8
    config.training.n_iters = 950000
    return config
