"""The offline image demonstration: scikit-learn's bundled digits (1,797 8×8 grey images,
upsampled to 16×16; ``sgm_jax.data``) with a small NCSN++ on the VE SDE, trained and evaluated on
2 CPU cores through the same code as the CIFAR-10 configs.

Changes from ``configs/default_cifar10.py``: 16×16×1 images, no flips (digits are not mirror
symmetric), σ_max = 10 (score_sde's "technique 1": about the largest distance between two
training images, 8.4 here), a narrower network (nf 32, two levels of resolution, attention at
8×8), batch 64 with one step per dispatch, 500 warm-up steps, and an evaluation that fits a CPU:
1,024 samples from the probability-flow ODE (a few hundred NFE instead of the PC sampler's
2,000), one bits/dim pass, Asym on 20 noise levels, and no Inception metrics (the FID network
needs 299×299 RGB images and its weights file, which are not available offline;
``experiments/digits_demo.py`` measures sample quality in a digits classifier's feature space).
"""

from configs.default_cifar10 import get_default_configs


def get_digits_config():
    config = get_default_configs()
    config.data.dataset = "digits"
    config.data.image_size = 16
    config.data.num_channels = 1
    config.data.random_flip = False
    config.model.nf = 32
    config.model.ch_mult = (1, 2, 2)
    config.model.num_res_blocks = 1
    config.model.attn_resolutions = (8,)
    config.sde.sigma_max = 10.0
    config.training.batch_size = 64
    config.training.n_iters = 6000
    config.training.n_jitted_steps = 1
    config.training.log_freq = 100
    config.training.eval_freq = 500
    config.training.snapshot_freq = 1000
    config.training.keep_checkpoints = 2
    config.training.keep_every = 0
    config.training.snapshot_num_samples = 64
    config.optim.warmup = 500
    config.sampling.method = "ode"
    config.eval.batch_size = 256
    config.eval.num_samples = 1024
    config.eval.enable_fid = False
    config.eval.bpd_repeats = 1
    config.eval.asym_num_levels = 20
    return config
