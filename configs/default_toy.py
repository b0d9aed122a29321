"""Shared defaults of the 2-D toy experiments: the official QCSGM toy training settings
(Adam 7.5e-4, β1 0.9, eps 1e-8, batch 5000, VE SDE with σ ∈ [0.1, 3], the official network
conditioned on σ; ``shared/reference/official_code_facts.md`` §1b).

Scale note: this library's DSM is ½‖σ_t s + z‖² (DESIGN §3.2, score_sde), the official toy DSM
‖σ s + z‖² has no ½. Adam is invariant to that factor of 2 except through gradient clipping, so
``optim.grad_clip = 0.5`` here is the official clip 1.0, and the official QC weight λ = 0.1 is
``training.qc_weight = 0.05`` (see ``configs/toy/*_qc.py``).
"""

import ml_collections

from configs.default_sampling import add_sampling_fields


def get_default_configs() -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict()
    config.seed = 42
    config.keep_freed_host_memory = True  # sgm_jax.host_memory; main.py applies it
    config.xla_cpu_ynn_elementwise = False  # sgm_jax.xla_cpu; main.py applies it

    config.data = data = ml_collections.ConfigDict()
    data.dataset = "checkerboard"  # a key of sgm_jax.data.TOY_DATASETS
    data.num_points = 50000  # the fixed training set, drawn once from the seed

    config.model = model = ml_collections.ConfigDict()
    model.name = "official_toy"  # sgm_jax.models.available_models()
    model.parameterisation = "u"  # sgm_jax.models.PARAMETERISATIONS (QCSGM Eq. 12)
    model.condition = "sigma"  # the network sees "t", σ_t ("sigma", as the official toy net), ...
    # Every other field of `model` is a constructor field of the network
    # (sgm_jax.models.model_fields(name)).
    model.output_activation = "identity"

    config.sde = sde = ml_collections.ConfigDict()
    sde.name = "vesde"  # "vpsde" and "subvpsde" take beta_min / beta_max instead of σ
    sde.sigma_min = 0.1
    sde.sigma_max = 3.0
    sde.num_scales = 1000

    config.training = training = ml_collections.ConfigDict()
    training.objective = "dsm"  # "dsm", "lcss", "ssm", "fd_ssm", "ism", "esm"
    training.perturbation = "marginal"  # x̃ = c_t x0 + σ_t z; "diffusion": σ_t = g(t) (LCSS §4)
    training.weighting = "sigma2"  # λ(t) = σ_t² or "likelihood" (g(t)²)
    training.reduce_mean = False  # True: the per-example objective averaged over the event
    training.eps = 1e-5
    training.projection = "rademacher"  # probes of SSM / FD-SSM / QC: "rademacher", "gaussian"
    training.num_projections = 1  # SSM probes per example
    training.fd_eps = 0.01  # FD-SSM step ε
    training.qc_weight = 0.0
    training.qc_estimator = "exact"  # "exact" (full 2x2 Jacobian, official "lqc") or "hutchinson"
    training.qc_num_vectors = 1
    training.qc_fraction = 1.0  # the QC term on this fraction of each device's examples
    training.qc_every = 1  # lazy regularisation: the QC term (weight × k) every k-th step
    training.compute_dtype = "float32"  # the toy networks compute in float32 only
    training.remat = "none"  # activation checkpointing (U-Nets only)
    training.batch_size = 5000
    training.n_iters = 2000
    training.n_jitted_steps = 1  # steps per compiled dispatch (lax.scan)
    training.log_freq = 100
    training.eval_freq = 0  # eval_loss of the EMA parameters on a test batch; 0 = never
    training.snapshot_freq = 1000  # checkpoint every snapshot_freq steps (and at the end)
    training.keep_checkpoints = 3  # the latest ones kept ...
    training.keep_every = 0  # ... plus those at multiples of keep_every (0 = none)
    training.snapshot_sampling = False  # samples figure at every checkpoint
    training.snapshot_num_samples = 5000
    training.init_from = ""  # a fresh run starts from this run's checkpoint (two-stage training)
    training.init_step = -1  # its step; -1 = the latest
    training.evaluate_after = True  # --mode=train ends with the evaluation (seconds for a toy)

    config.optim = optim = ml_collections.ConfigDict()
    optim.lr = 7.5e-4
    optim.beta1 = 0.9
    optim.beta2 = 0.999
    optim.eps = 1e-8
    optim.weight_decay = 0.0
    optim.warmup = 0
    optim.grad_clip = 0.5  # = the official clip 1.0 for the official (un-halved) DSM; 0 disables
    optim.ema_rate = 0.0  # no averaging: the official toy code keeps no EMA (and 0.999 over 2000 steps
    # would leave 0.999^2000 ≈ 14 % of the random initialisation in the average)
    optim.ema_warmup = "none"  # sgm_jax.ema.EMA_WARMUPS

    config.sampling = sampling = ml_collections.ConfigDict()
    sampling.method = "ode"  # a sampler of sgm_jax.sampling.get_sampler
    sampling.rtol = 1e-3
    sampling.atol = 1e-5
    sampling.eps = 1e-5
    sampling.num_samples = 5000  # --mode=sample
    sampling.predictor = "reverse_diffusion"
    sampling.corrector = "langevin"
    sampling.snr = 0.16
    sampling.n_steps = 1
    add_sampling_fields(sampling)

    config.eval = evaluation = ml_collections.ConfigDict()
    evaluation.num_points = 5000
    evaluation.num_samples = 5000  # samples of the evaluation (NFE, P / R / D / C against data)
    evaluation.num_levels = 10
    evaluation.nll_num_points = 5000
    evaluation.prdc_k = 3
    evaluation.checkpoint = -1  # the checkpoint step to evaluate; -1 = the latest
    return config
