"""Shared defaults of the DLSM inter-twinning moons study (DLSM poster Fig. 1; the official toy
code's settings, ``shared/reference/official_code_facts.md`` §2a).

Data: the 10,000 noise-free moons, centred and ×20 (two classes). Score model and classifier see
raw σ ∈ [1e-3, 10] (VE SDE). Batch 4,000 and 40,000 iterations for both (official 40,001),
Adam; the score model at lr 6.5e-4, the classifier at the lr of its objective (configs/dlsm/).

Mapping to the official settings:
* score model: the official network with s = f/σ_t (``scale_by_sigma``; the official network
  outputs the score directly, which fails for σ ≲ 1, docs/results/dlsm_moons.md) and the
  library's DSM ½‖s + z/σ‖² with λ = σ² (score_sde). The official toy DSM is σ⁴‖s + z/σ‖²/D
  (``weighting_dsm`` = 2, no ½, mean over the 2 dimensions): it weights small noise levels
  less; both are minimised by the same score.
* classifier: the official DLSM term ½σ⁴‖g + s + z/σ‖²/D is ``dlsm_weighting = "sigma4"`` with
  ``reduce_mean = True``; the cross-entropy is unweighted in both; L_Total = L_DLSM + 0.125 L_CE
  (official ``coef``).
Sampling: predictor-corrector, 1,000 steps, one Langevin corrector step (snr 0.16), from the VE
prior N(0, σ_max² I) (the official sampler starts from N(0, I), runs σ upwards and has a zero
predictor step; docs/methods.md).
"""

import ml_collections

from configs.default_dlsm_cifar10 import add_dlsm_sections
from configs.default_toy import get_default_configs as toy_defaults


def get_default_configs() -> ml_collections.ConfigDict:
    config = toy_defaults()
    config.seed = 1
    config.data.dataset = "moons"
    config.data.num_points = 10000

    config.model.name = "dlsm_toy_score"
    # s = f/σ_t (the official network's output is the score itself, "direct": it cannot produce the
    # 1/σ-sized scores of σ ≪ 1, and the sampler, which ends at σ_min, then cannot reach the data)
    config.model.parameterisation = "scale_by_sigma"
    config.model.condition = "sigma"
    del config.model["output_activation"]

    config.sde.sigma_min = 1e-3
    config.sde.sigma_max = 10.0
    config.sde.num_scales = 1000

    training = config.training
    training.qc_estimator = "hutchinson"
    training.batch_size = 4000
    training.n_iters = 40000
    training.log_freq = 1000
    training.snapshot_freq = 10000
    config.optim.lr = 6.5e-4
    config.optim.grad_clip = 0.0

    config.sampling.method = "pc"
    config.sampling.num_samples = 2000

    # the classifier, guidance and conditional-evaluation fields of the CIFAR settings, then
    # the official toy values
    add_dlsm_sections(config, num_classes=2, depth=18, warmup=0, samples_per_class=10000)
    config.classifier.model = ml_collections.ConfigDict(dict(
        name="dlsm_toy_classifier", condition="sigma", num_classes=2))
    ct = config.classifier.training
    ct.ce_weight = 0.125  # λ of L_Total = L_DLSM + λ L_CE (official coef)
    ct.dlsm_weighting = "sigma4"  # official weighting_dlsm = 2
    ct.batch_size = 4000
    ct.n_iters = 40000
    ct.n_jitted_steps = 1
    ct.log_freq = 1000
    ct.eval_freq = 0
    ct.snapshot_freq = 10000
    ct.keep_every = 0
    co = config.classifier.optim
    co.lr = 1e-5
    co.grad_clip = 0.0

    evaluation = config.eval
    evaluation.batch_size = 10000
    evaluation.prdc_k = 5
    evaluation.grid_size = 35  # the official 35 × 35 grid ...
    evaluation.grid_range = (-40.0, 40.0, -25.0, 25.0)  # ... over [−40, 40] × [−25, 25]
    evaluation.grid_sigma = 7.5  # the official oracle bandwidth
    evaluation.enable_cas = False
    evaluation.cas_steps = 1000
    evaluation.cas_batch_size = 256
    evaluation.cas_lr = 1e-3
    return config
