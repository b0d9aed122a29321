"""score_sde's DDPM++ cont. deep (VP) on CIFAR-10: ``vp/cifar10_ddpmpp_deep_continuous.py``
(8 residual blocks per resolution, 950,000 steps; FID 2.41, IS 9.68, FID (ODE) 3.08, 3.13
bits/dim in its README)."""

from configs.default_ddpmpp import get_ddpmpp_config


def get_config():
    config = get_ddpmpp_config("vpsde")
    config.model.num_res_blocks = 8
    config.training.n_iters = 950000
    return config
