"""Shared defaults of the CIFAR-10 experiments: score_sde's CIFAR-10 configuration
(``configs/default_cifar10_configs.py`` with ``ve/cifar10_ncsnpp_continuous.py``, the NCSN++
continuous VE model; ``shared/reference/score_sde_facts.md``), in this library's schema.

Names follow score_sde where it has them (``model.nf``, ``training.n_jitted_steps``,
``data.centered``, ``sampling.snr``, ...). The differences of schema, each documented in docs/methods.md:
the SDE has its own group (score_sde's ``training.sde`` and ``model.sigma_min/sigma_max/
num_scales/beta_min/beta_max`` are ``sde.name``, ``sde.sigma_min``, ...); ``model.scale_by_sigma``
is the parameterisation "scale_by_sigma" (VE) or "noise_prediction" (VP / sub-VP);
``model.ema_rate`` is ``optim.ema_rate``; score_sde's ``snapshot_freq_for_preemption`` (10,000,
keep 1) and ``snapshot_freq`` (50,000, keep all) are ``training.snapshot_freq`` with
``keep_checkpoints`` 1 and ``keep_every``; ``n_iters`` is a multiple of ``n_jitted_steps``
(score_sde's 1,300,001 counts its last step inclusively).
"""

import ml_collections

from configs.default_sampling import add_sampling_fields


def get_default_configs() -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict()
    config.seed = 42
    config.keep_freed_host_memory = True  # sgm_jax.host_memory; main.py applies it
    config.xla_cpu_ynn_elementwise = True  # sgm_jax.xla_cpu; main.py applies it

    config.data = data = ml_collections.ConfigDict()
    data.dataset = "cifar10"  # sgm_jax.data.IMAGE_DATASETS
    data.image_size = 32
    data.num_channels = 3
    data.random_flip = True
    data.uniform_dequantization = False
    data.centered = False  # inputs in [0, 1]; the network maps them to [-1, 1] itself
    data.data_dir = ""  # tfds data_dir; "" = tfds's default (honours TFDS_DATA_DIR)

    config.model = model = ml_collections.ConfigDict()
    model.name = "ncsnpp"
    model.parameterisation = "scale_by_sigma"  # score_sde's scale_by_sigma = True
    model.condition = "log_sigma"  # Gaussian Fourier features of log σ_t
    model.nf = 128
    model.ch_mult = (1, 2, 2, 2)
    model.num_res_blocks = 4
    model.attn_resolutions = (16,)
    model.dropout = 0.1
    model.resamp_with_conv = True
    model.conditional = True
    model.fir = True
    model.fir_kernel = (1, 3, 3, 1)
    model.skip_rescale = True
    model.resblock_type = "biggan"
    model.progressive = "none"
    model.progressive_input = "residual"
    model.progressive_combine = "sum"
    model.attention_type = "ddpm"
    model.init_scale = 0.0
    model.embedding_type = "fourier"
    model.fourier_scale = 16.0
    model.conv_size = 3
    model.nonlinearity = "swish"

    config.sde = sde = ml_collections.ConfigDict()
    sde.name = "vesde"
    sde.sigma_min = 0.01
    sde.sigma_max = 50.0
    sde.num_scales = 1000

    config.training = training = ml_collections.ConfigDict()
    training.objective = "dsm"
    training.perturbation = "marginal"
    training.weighting = "sigma2"  # score_sde's likelihood_weighting = False
    training.reduce_mean = False  # True: the per-example objective averaged over pixels, not summed
    training.eps = 1e-5
    training.projection = "rademacher"
    training.num_projections = 1
    training.fd_eps = 0.01
    training.qc_weight = 0.0
    training.qc_estimator = "hutchinson"
    training.qc_num_vectors = 1
    training.qc_fraction = 1.0
    training.qc_every = 1
    # the train step's activations and convolutions: "float32" or "bfloat16" (parameters,
    # optimiser state, EMA and the loss stay float32)
    training.compute_dtype = "float32"
    # jax.checkpoint policy of the residual blocks: "none", "nothing_saveable", "conv_saveable"
    training.remat = "none"
    training.batch_size = 128
    training.n_iters = 1300000
    training.n_jitted_steps = 5
    training.log_freq = 50
    training.eval_freq = 100
    training.snapshot_freq = 10000
    training.keep_checkpoints = 1
    training.keep_every = 50000
    training.snapshot_sampling = True
    training.snapshot_num_samples = 64
    training.init_from = ""
    training.init_step = -1
    # --mode=train only trains (score_sde keeps train and eval apart: an evaluation at scale is
    # its own job); True runs --mode=eval when training ends
    training.evaluate_after = False

    config.optim = optim = ml_collections.ConfigDict()
    optim.lr = 2e-4
    optim.beta1 = 0.9
    optim.beta2 = 0.999
    optim.eps = 1e-8
    optim.weight_decay = 0.0
    optim.warmup = 5000
    optim.grad_clip = 1.0
    optim.ema_rate = 0.999
    optim.ema_warmup = "none"  # constant rate, as score_sde (sgm_jax.ema.EMA_WARMUPS)

    config.sampling = sampling = ml_collections.ConfigDict()
    sampling.method = "pc"
    sampling.predictor = "reverse_diffusion"
    sampling.corrector = "langevin"
    sampling.snr = 0.16
    sampling.n_steps = 1  # score_sde's n_steps_each
    sampling.rtol = 1e-5
    sampling.atol = 1e-5
    sampling.eps = 1e-5  # score_sde's sampling_eps for VE (1e-3 for VP / sub-VP)
    sampling.num_samples = 64  # --mode=sample (and the sample grid of --mode=eval)
    add_sampling_fields(sampling)

    config.eval = evaluation = ml_collections.ConfigDict()
    evaluation.checkpoint = -1  # -1 = the latest
    evaluation.batch_size = 1024  # global batch of sampling, likelihood and features
    evaluation.num_samples = 50000
    evaluation.enable_sampling = True  # samples, NFE and (with enable_fid) FID / IS / KID / PRDC
    evaluation.enable_fid = True
    evaluation.inception_weights = ""  # the converted FID Inception .npz (BUILD.md, "Converting weights")
    evaluation.stats_dir = ""  # cache of training-set Inception statistics; "" = ~/.cache/sgm_jax/stats
    # an .npz of reference pool features ("pool_3" [N, 2048]: score_sde's assets/stats files,
    # QCSBM's dataset_stat.npz) instead of the training split's; "" = the training split
    evaluation.reference_features = ""
    evaluation.prdc_k = 3
    evaluation.kid_subset_size = 1000
    evaluation.kid_num_subsets = 100
    evaluation.is_splits = 10
    evaluation.enable_bpd = True
    evaluation.bpd_repeats = 5  # passes over the test split (score_sde: 5 for "test")
    evaluation.bpd_num_examples = 0  # 0 = the whole test split
    evaluation.bpd_rtol = 1e-5
    evaluation.bpd_atol = 1e-5
    evaluation.bpd_eps = 1e-5
    evaluation.enable_asym = True  # Asym / NAsym over t (QCSGM Table 5, Eqs. A10-A11)
    evaluation.asym_num_levels = 100
    evaluation.asym_num_vectors = 1
    evaluation.asym_num_examples = 0  # 0 = the whole test split
    return config
