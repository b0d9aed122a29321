"""The offline image demonstration: scikit-learn's bundled digits (1,797 8×8 grey images at their
own resolution; ``sgm_jax.data``) with a small NCSN++ on the VE SDE, trained and evaluated on
2 CPU cores through the same code as the CIFAR-10 configs.

Changes from ``configs/default_cifar10.py``, each measured in the ablation of
``docs/results/digits.md`` (``experiments/digits_ablation.py``):

* 8×8×1 images (the data's own size; the earlier 16×16 bilinear upsampling quadruples the cost
  of a step and adds no information), no flips (digits are not mirror symmetric);
* σ_max = 5 (score_sde's "technique 1": about the largest distance between two training
  images, 4.8 at 8×8 on the [0, 1] scale);
* a narrow network: nf 16, three resolutions (8, 4, 2), one residual block each, attention at
  4×4 (a step of nf 32 costs 2.5–3× one of nf 16: in the same training time, nf 16 with 8,000
  steps at 1e-3 drew more recognisable digits than nf 32 with 4,000 at 2e-4);
* Adam at 1e-3 (five times score_sde's 2e-4: the run is short) with 200 warm-up steps, batch 32
  with one step per dispatch, 12,000 steps (on the CPU the cost of a step grows linearly with
  the batch, 4× from 32 to 128, so the time goes to steps);
* the EMA (rate 0.999) with its warm-up ``optim.ema_warmup = "num_updates"``: with a constant
  rate, 0.999ⁿ of the random initialisation stays in the average (14 % after 2,000 steps) and
  the samples are noise;
* no sample grids during training (``training.snapshot_sampling`` off; ``--mode=sample`` draws
  the samples), which leaves the training time to the training steps;
* the PC sampler (reverse diffusion + Langevin, snr 0.16) with N = 200 noise scales (400 NFE
  instead of score_sde's 2,000; N = 100 gives fewer recognisable digits);
* glibc's ``malloc`` at its defaults (``keep_freed_host_memory`` False): with the other
  configs' setting (``sgm_jax.host_memory``) a train step took 43–54 ms instead of 27–34 ms and
  sampling 1.2× longer; and XLA:CPU's default YNNPACK fusions (``xla_cpu_ynn_elementwise``
  False, ``sgm_jax.xla_cpu``): with elementwise fusions in YNNPACK too a step took 32–37 ms
  instead of 28–29 ms (docs/benchmarks.md);
* an evaluation that fits a CPU: 512 samples, one bits/dim pass over 128 test images, Asym on
  20 noise levels, and no Inception metrics (the FID network needs 299×299 RGB images and its
  weights file, which are not available offline; ``experiments/digits_measure.py`` and
  ``experiments/digits_demo.py`` measure sample quality in a digits classifier's feature space).
"""

from configs.default_cifar10 import get_default_configs


def get_digits_config():
    config = get_default_configs()
    config.keep_freed_host_memory = False
    config.xla_cpu_ynn_elementwise = False
    config.data.dataset = "digits"
    config.data.image_size = 8
    config.data.num_channels = 1
    config.data.random_flip = False
    config.model.nf = 16
    config.model.ch_mult = (1, 2, 2)
    config.model.num_res_blocks = 1
    config.model.attn_resolutions = (4,)
    config.sde.sigma_max = 5.0
    config.training.batch_size = 32
    config.training.n_iters = 12000
    config.training.n_jitted_steps = 1
    config.training.log_freq = 100
    config.training.eval_freq = 500
    config.training.snapshot_freq = 1000
    config.training.keep_checkpoints = 2
    config.training.keep_every = 0
    config.training.snapshot_sampling = False
    config.optim.lr = 1e-3
    config.optim.warmup = 200
    config.optim.ema_warmup = "num_updates"
    config.sde.num_scales = 200
    config.eval.batch_size = 128
    config.eval.num_samples = 512
    config.eval.enable_fid = False
    config.eval.bpd_repeats = 1
    config.eval.bpd_num_examples = 128
    config.eval.asym_num_levels = 20
    return config
