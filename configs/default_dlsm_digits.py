"""Shared defaults of the DLSM demonstration on the offline digits (8×8 grey, 10 classes), on 2
CPU cores: ``configs/dlsm/digits_{base,scaling,dlsm}.py``.

Score half: identical to ``configs/ve/digits_u.py`` (``configs/default_digits.py``), so that
``classifier.score_workdir`` can name an existing digits U run (the classifier then trains
against its latest EMA checkpoint, and stage 1 is skipped).

Classifier and guidance: the official CIFAR settings of ``configs/default_dlsm_cifar10.py``
(Fourier features of log σ_t, t ~ U(1e-5, 1), the DLSM term as the mean over pixels of
½(g + s + z/σ)², L_Total = L_DLSM + 1.0 · L_CE, clipping 1, no EMA, α = 10 for "scaling") on a
CPU scale: a ResNet-18 of width 16 (channels 16 / 32 / 64 / 128) with 16 Fourier frequencies and
a 64-wide embedding, batch 32 (the score model's), 2,000 steps at Adam 1e-3 with 100 warm-up
steps (the official 60,000 steps of 150 at 2e-4 do not fit a CPU demonstration).

Evaluation (``sgm_jax.evaluate.conditional_images``): 64 samples per class from the score half's PC
sampler (N = 100), one batch per class; no Inception network offline, so FID / IS / KID / PRDC
(k = 3) and the class-wise PRDC are measured in the library's digits feature space against the
test split (as ``experiments/digits_demo.py``); CAS with the classifier's ResNet without noise
conditioning, 1,000 steps of 64 at Adam 1e-3, tested on the 359 test digits.
"""

import ml_collections

from configs.default_dlsm_cifar10 import add_dlsm_sections
from configs.default_digits import get_digits_config


def get_default_configs() -> ml_collections.ConfigDict:
    config = add_dlsm_sections(get_digits_config(), num_classes=10, depth=18, warmup=100,
                               samples_per_class=64)
    model = config.classifier.model
    model.width = 16
    model.nf = 16
    model.temb_dim = 64
    training = config.classifier.training
    training.batch_size = 32
    training.n_iters = 2000
    training.n_jitted_steps = 1
    training.log_freq = 100
    training.eval_freq = 500
    training.snapshot_freq = 1000
    training.keep_every = 0
    config.classifier.optim.lr = 1e-3
    evaluation = config.eval
    evaluation.cas_steps = 1000
    evaluation.cas_batch_size = 64
    evaluation.cas_lr = 1e-3
    return config
