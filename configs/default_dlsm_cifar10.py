"""Shared defaults of the DLSM CIFAR-10 / CIFAR-100 experiments (DLSM poster Table 1), with the
settings of the official code (chen-hao-chao/dlsm; ``shared/reference/official_code_facts.md``
§2b) in this library's schema. ``configs/dlsm/cifar{10,100}_{base,scaling,dlsm}.py`` choose the
classifier's objective and the guidance.

Score model (stage 1, ``configs/score/cifar10_score_configs.py``): score_sde's NCSN++ cont. deep
(VE, σ ∈ [0.01, 50], 8 residual blocks; ``configs/ve/cifar10_ncsnpp_deep_continuous.py``): DSM
with λ = σ² summed over pixels (``reduce_mean`` False), batch 128, Adam 2e-4, warm-up 5,000,
clipping 1, EMA 0.999, 950,000 steps (official 950,001, its last step counted inclusively) and
t ~ U(1e-3, 1) (``training.eps``: DLSM's ``get_sde_loss_fn`` defaults eps to 1e-3, score_sde's
to 1e-5). CIFAR-100 trains the same model on CIFAR-100.

Classifier (stage 2, ``configs/classifier/cifar{10,100}_classifier_resnet{18,34}_cond_configs``):

* ``resnet_cond`` ResNet-18 (CIFAR-10) / ResNet-34 (CIFAR-100), width 64, on log σ_t with 32
  Gaussian Fourier frequencies of scale 16 and a 128-wide embedding (official ``nf`` 32,
  ``fourier_scale`` 16): the released network with its BatchNorm, batch statistics while
  training and running statistics for guidance and evaluation (``sgm_jax.models.classifiers``);
* batch 150, 60,000 steps, Adam 2e-4 (β 0.9 / 0.999, eps 1e-8), warm-up 0 (CIFAR-10) / 1,000
  (CIFAR-100), clipping 1, test accuracy every 500 steps, a checkpoint every 5,000; no EMA
  (``ema_rate`` 0: the official code saves the raw weights);
* loss with t ~ U(1e-5, 1) (the official ``sampling_eps`` of the VE SDE), the official
  ``weighting_dlsm`` = ``weighting_ce`` = 0 with means over every element: the DLSM term is the
  mean over pixels of ½(g + s + z/σ)², i.e. ``dlsm_weighting`` "one" with ``reduce_mean`` True,
  the cross-entropy unweighted, and L_Total = L_DLSM + 1.0 · L_CE (official ``coef``);
  ``objective`` "total" is the official default ``loss_type``; the CE-only "base" classifier has
  no official config (``loss_type='ce'``).

Guidance: the posterior score s + α ∇ log p(y | x, t) in both predictor and corrector of the PC
sampler (reverse diffusion + Langevin, snr 0.16, one corrector step, N = 1,000, eps 1e-5, last
step denoised): α = 1 for "base" and "dlsm", 10 for "scaling" (the official README's
``--scale``).

Evaluation (``sgm_jax.evaluate.conditional_images``): 5,100 samples per class on CIFAR-10 (51,000),
600 on CIFAR-100 (60,000), drawn in batches of at most ``eval.batch_size``; FID / IS / KID and
PRDC (k = 3) on Inception pool_3 against the 50,000 training images, class-wise PRDC against the
training images of each class, CAS. The official CAS network is torchvision's ResNet-50 trained
for 400,001 steps of 150 (Adam 2e-4) with the test accuracy printed every 200 steps; here the
classifier's ResNet without its noise conditioning is trained for 20,000 steps of 150 (about 59
epochs of the 51,000 samples) at the same learning rate, and the accuracy of the final
parameters is reported.

The classifier trains without flips (``classifier.random_flip``, the official classifier config),
the score model with them (``data.random_flip``). The classifier batch of 150 needs a device
count that divides 150 (1, 2, 3, 5, 6, ...).
The image-evaluation fields of the score half other than the Inception ones (``enable_fid``,
``inception_weights``, ``stats_dir``, ``prdc_k``, KID, IS) are not used by a DLSM run.
"""

import ml_collections

from configs.ve.cifar10_ncsnpp_deep_continuous import get_config as ncsnpp_deep_continuous
from sgm_jax.metrics.feature_classifier import FEATURE_STEPS

#: The per-data-set settings of the official runs.
DATASETS = {
    "cifar10": dict(num_classes=10, depth=18, warmup=0, samples_per_class=5100),
    "cifar100": dict(num_classes=100, depth=34, warmup=1000, samples_per_class=600),
}


def add_dlsm_sections(config: ml_collections.ConfigDict, *, num_classes: int, depth: int,
                      warmup: int, samples_per_class: int) -> ml_collections.ConfigDict:
    """Adds the ``classifier``, ``guidance`` and conditional ``eval`` fields of the official
    CIFAR settings (module docstring) to the score-model config ``config``."""
    config.classifier = classifier = ml_collections.ConfigDict()
    classifier.score_workdir = ""  # "" = the run's own workdir (stage 1 trains it there)
    classifier.score_checkpoint = -1
    classifier.random_flip = False  # the official classifier: no flips (score model: data.random_flip)
    classifier.model = model = ml_collections.ConfigDict()
    model.name = "resnet_cond"
    model.condition = "log_sigma"
    model.num_classes = num_classes
    model.depth = depth
    model.width = 64
    model.nf = 32
    model.fourier_scale = 16.0
    model.temb_dim = 128
    model.conditional = True
    classifier.training = training = ml_collections.ConfigDict()
    training.objective = "total"  # "ce", "dlsm", "total"
    training.ce_weight = 1.0  # λ of L_Total = L_DLSM + λ L_CE (official coef)
    training.dlsm_weighting = "one"  # official weighting_dlsm = 0
    training.reduce_mean = True  # the official mean over pixels
    training.eps = 1e-5
    training.batch_size = 150
    training.n_iters = 60000
    training.n_jitted_steps = 5
    training.log_freq = 50
    training.eval_freq = 500
    training.snapshot_freq = 5000
    training.keep_checkpoints = 2
    training.keep_every = 20000
    training.snapshot_sampling = False
    training.snapshot_num_samples = 1
    training.init_from = ""
    training.init_step = -1
    # the score model's Adam fields, with the classifier's schedule, clipping and no EMA
    classifier.optim = optim = ml_collections.ConfigDict(config.optim.to_dict())
    optim.lr = 2e-4
    optim.warmup = warmup
    optim.grad_clip = 1.0
    optim.ema_rate = 0.0  # no EMA

    config.guidance = ml_collections.ConfigDict()
    config.guidance.method = "dlsm"  # "base", "scaling", "dlsm"
    config.guidance.scale = 1.0  # α of s + α ∇ log p(y | x, t)

    evaluation = config.eval
    evaluation.samples_per_class = samples_per_class
    evaluation.prdc_k = 3
    evaluation.enable_cas = True
    evaluation.cas_steps = 20000
    evaluation.cas_batch_size = 150
    evaluation.cas_lr = 2e-4
    # the offline feature space (no Inception): training steps of the digits classifier
    evaluation.feature_steps = FEATURE_STEPS
    # the score-field grid of the 2-D study (sgm_jax.evaluate.conditional_toy); unused by images
    evaluation.grid_size = 2
    evaluation.grid_range = (-1.0, 1.0, -1.0, 1.0)
    evaluation.grid_sigma = 1.0
    return config


#: The poster's guidance methods: the classifier's objective and the guidance scale α ("scaling":
#: the official README's ``--scale`` 10).
GUIDANCE = {"base": ("ce", 1.0), "scaling": ("ce", 10.0), "dlsm": ("total", 1.0)}


def use_guidance(config: ml_collections.ConfigDict, method: str) -> ml_collections.ConfigDict:
    """Sets ``config`` (with the sections of :func:`add_dlsm_sections`) to the guidance
    ``method`` of :data:`GUIDANCE`: its classifier objective, method and scale."""
    objective, scale = GUIDANCE[method]
    config.classifier.training.objective = objective
    config.guidance.method = method
    config.guidance.scale = scale
    return config


def get_default_configs(dataset: str = "cifar10") -> ml_collections.ConfigDict:
    """The DLSM run ("dlsm" guidance) on ``dataset`` ("cifar10" or "cifar100")."""
    if dataset not in DATASETS:
        raise ValueError(f"dataset must be one of {tuple(DATASETS)}; got {dataset!r}.")
    config = ncsnpp_deep_continuous()
    config.data.dataset = dataset
    config.training.eps = 1e-3  # DLSM's score-training eps
    return add_dlsm_sections(config, **DATASETS[dataset])
