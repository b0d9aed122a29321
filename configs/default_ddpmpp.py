"""score_sde's DDPM++ cont. on CIFAR-10 (``vp/cifar10_ddpmpp_continuous.py``), shared by the VP
and sub-VP configs: the NCSN++ network class with DDPM residual-block placement fields, positional
embedding of 999·t, no FIR, no progressive growing, β ∈ [0.1, 20] (the VP / sub-VP SDE's
parameters in place of the VE σ range), centred data, EMA 0.9999, the noise-prediction
score s = −f/σ_t, the loss averaged over pixels (score_sde's ``reduce_mean``), Euler–Maruyama
predictor without corrector, sampling from t = 1e-3."""

from configs.default_cifar10 import get_default_configs


def get_ddpmpp_config(sde: str = "vpsde"):
    config = get_default_configs()
    config.data.centered = True
    config.model.parameterisation = "noise_prediction"
    config.model.condition = "999t"
    config.model.fir = False
    config.model.progressive_input = "none"
    config.model.embedding_type = "positional"
    config.sde.name = sde
    del config.sde["sigma_min"], config.sde["sigma_max"]  # the VE SDE's
    config.sde.beta_min = 0.1
    config.sde.beta_max = 20.0
    config.training.reduce_mean = True
    config.optim.ema_rate = 0.9999
    config.sampling.predictor = "euler_maruyama"
    config.sampling.corrector = "none"
    config.sampling.eps = 1e-3
    return config
