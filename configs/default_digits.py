"""The offline image demonstration: scikit-learn's bundled digits (1,797 8×8 grey images,
upsampled to 16×16; ``sgm_jax.data``) with a small NCSN++ on the VE SDE, trained and evaluated on
2 CPU cores through the same code as the CIFAR-10 configs.

Changes from ``configs/default_cifar10.py``: 16×16×1 images, no flips (digits are not mirror
symmetric), σ_max = 10 (score_sde's "technique 1": about the largest distance between two
training images, 8.4 here), a narrower network (nf 16, three resolutions, one residual block
each, attention at 8×8), batch 32 with one step per dispatch, 2,000 steps with 200 warm-up steps,
and an evaluation that fits a CPU:
512 samples from the PC sampler with N = 100 noise scales (200 NFE instead of score_sde's
2,000; at this training length the probability-flow ODE gives poor samples, because the
network still underestimates the score's size by 20–40 % and the deterministic ODE does not
correct it, where the Langevin corrector does), one bits/dim pass over 128 test images, Asym on 20 noise levels, and no Inception metrics (the FID network
needs 299×299 RGB images and its weights file, which are not available offline;
``experiments/digits_demo.py`` measures sample quality in a digits classifier's feature space).
"""

from configs.default_cifar10 import get_default_configs


def get_digits_config():
    config = get_default_configs()
    config.data.dataset = "digits"
    config.data.image_size = 8
    config.data.num_channels = 1
    config.data.random_flip = False
    config.model.nf = 32
    config.model.ch_mult = (1, 2, 2)
    config.model.num_res_blocks = 1
    config.model.attn_resolutions = (4,)
    config.sde.sigma_max = 5.0
    config.training.batch_size = 32
    config.training.n_iters = 4000
    config.training.n_jitted_steps = 1
    config.training.log_freq = 100
    config.training.eval_freq = 500
    config.training.snapshot_freq = 1000
    config.training.keep_checkpoints = 2
    config.training.keep_every = 0
    config.training.snapshot_num_samples = 64
    config.optim.warmup = 200
    config.optim.ema_warmup = "num_updates"
    config.sde.num_scales = 100
    config.eval.batch_size = 128
    config.eval.num_samples = 512
    config.eval.enable_fid = False
    config.eval.bpd_repeats = 1
    config.eval.bpd_num_examples = 128
    config.eval.asym_num_levels = 20
    return config
