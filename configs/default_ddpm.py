"""score_sde's DDPM cont. on CIFAR-10 (``vp/ddpm/cifar10_continuous.py`` and
``subvp/cifar10_ddpm_continuous.py``): Ho et al.'s U-Net (``model.name = "ddpm"``: nf 128, two
residual blocks per resolution, attention at 16×16, dropout 0.1), trained in continuous time with
the settings of DDPM++ cont. (``configs/default_ddpmpp.py``: positional embedding of 999·t,
centred data, EMA 0.9999, the noise-prediction score s = −f/σ_t, the loss averaged over pixels,
Euler–Maruyama predictor without corrector)."""

import ml_collections

from configs.default_ddpmpp import get_ddpmpp_config


def get_ddpm_config(sde: str = "vpsde") -> ml_collections.ConfigDict:
    config = get_ddpmpp_config(sde)
    config.model = model = ml_collections.ConfigDict()
    model.name = "ddpm"
    model.parameterisation = "noise_prediction"
    model.condition = "999t"
    model.nf = 128
    model.ch_mult = (1, 2, 2, 2)
    model.num_res_blocks = 2
    model.attn_resolutions = (16,)
    model.dropout = 0.1
    model.resamp_with_conv = True
    model.conditional = True
    model.nonlinearity = "swish"
    return config
