"""The LCSS checkerboard study (Osada et al., NeurIPS 2024, §5.1 and App. B).

The six configs ``configs/toy/checkerboard_{dsm,ssm,fd_ssm,lcss,esm,ism}.py`` share everything but
the objective: an unconstrained score s = (x − f(x, t))/σ_t from an MLP with two hidden layers of
300 units (App. B), batch 10k, lr 1e-3, 200 epochs of the 50k-point checkerboard (1000 steps), no
QC term, over the toy VE SDE σ ∈ [0.1, 3]. App. B trains an energy network with the toy_gradlogp
code instead; this study keeps the model fixed and unconstrained so that only the objective varies.
"""

from configs.default_toy import get_default_configs


def get_lcss_checkerboard_config(objective: str):
    config = get_default_configs()
    config.data.dataset = "checkerboard"
    config.model.name = "toy_mlp"
    config.model.parameterisation = "u"
    config.model.condition = "t"
    config.model.kwargs = {"hidden": (300, 300), "embedding_size": 8, "fourier_scale": 1.0}
    config.training.objective = objective
    config.training.qc_weight = 0.0
    config.training.batch_size = 10000
    config.training.n_iters = 1000
    config.training.log_freq = 50
    config.training.snapshot_freq = 500
    config.optim.lr = 1e-3
    return config
