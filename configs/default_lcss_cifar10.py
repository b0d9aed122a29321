"""The LCSS CIFAR-10 study (Osada et al., NeurIPS 2024, §4 and Table 3): DSM and LCSS on NCSN++ /
NCSN++ deep with the VE SDE and DDPM++ / DDPM++ deep with the sub-VP SDE, score_sde's
hyperparameters otherwise ("the hyperparameters are kept as in the official code").

* ``dsm``: score_sde's objective, x̃ = c_t x₀ + σ_t z with σ_t the marginal std, λ(t) = σ_t².
* ``lcss``: LCSS Eq. 19 with one sample, and the paper's time-conditional setting: "We set
  σ_t = g(t) in each SDE" with λ(t) = g(t)² (§3.3–§4), i.e. ``training.perturbation =
  "diffusion"``, ``training.weighting = "likelihood"``. With the marginal std instead, LCSS and DSM
  would have identical gradients (see ``sgm_jax.losses.lcss_loss``).
"""

from configs.default_cifar10 import get_default_configs
from configs.default_ddpmpp import get_ddpmpp_config

NETWORKS = ("ncsnpp", "ncsnpp_deep", "ddpmpp", "ddpmpp_deep")
OBJECTIVES = ("dsm", "lcss")


def get_lcss_config(network: str, objective: str):
    if network.startswith("ncsnpp"):
        config = get_default_configs()
    else:
        config = get_ddpmpp_config("subvpsde")
    if network.endswith("_deep"):
        config.model.num_res_blocks = 8
        config.training.n_iters = 950000
    if objective == "lcss":
        config.training.objective = "lcss"
        config.training.perturbation = "diffusion"
        config.training.weighting = "likelihood"
    elif objective != "dsm":
        raise ValueError(f"objective must be one of {OBJECTIVES}; got {objective!r}.")
    return config
