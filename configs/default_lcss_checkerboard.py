"""The LCSS checkerboard study (Osada et al., NeurIPS 2024, §5.1 and App. B).

The configs ``configs/toy/checkerboard_{dsm,ssm,fd_ssm,lcss,esm,ism}.py`` share everything but
the objective: an unconstrained score s = (x − f(x, t))/σ_t from an MLP with two hidden layers of
300 units (App. B), batch 10k, lr 1e-3, 200 epochs of the 50k-point checkerboard (1000 steps), no
QC term, over the toy VE SDE σ ∈ [0.1, 3]. App. B trains an energy network with the toy_gradlogp
code instead; this study keeps the model fixed and unconstrained so that only the objective varies.

``perturbation="diffusion"`` (``configs/toy/checkerboard_lcss_diffusion.py``) is the paper's
time-conditional setting (§4: "We set σ_t = g(t) in each SDE", λ(t) = g(t)², §3.3): the training
points are perturbed with std g(t), the VE diffusion coefficient, instead of the marginal std σ_t,
and weighted by g(t)² (``training.weighting = "likelihood"``). With the marginal std, LCSS and DSM
have the same gradients (``sgm_jax.sde_loss``).
"""

from configs.default_toy import get_default_configs

PERTURBATIONS = ("marginal", "diffusion")


def get_lcss_checkerboard_config(objective: str, perturbation: str = "marginal"):
    if perturbation not in PERTURBATIONS:
        raise ValueError(f"perturbation must be one of {PERTURBATIONS}; got {perturbation!r}.")
    config = get_default_configs()
    config.data.dataset = "checkerboard"
    config.model.name = "toy_mlp"
    config.model.parameterisation = "u"
    config.model.condition = "t"
    del config.model.output_activation  # not a field of toy_mlp
    config.model.hidden = (300, 300)
    config.model.embedding_size = 8
    config.model.fourier_scale = 1.0
    config.training.objective = objective
    config.training.qc_weight = 0.0
    config.training.batch_size = 10000
    config.training.n_iters = 1000
    config.training.log_freq = 50
    config.training.snapshot_freq = 500
    config.optim.lr = 1e-3
    if perturbation == "diffusion":
        config.training.perturbation = "diffusion"
        config.training.weighting = "likelihood"
    return config
