"""Writes docs/config.md, the reference of every config field, from the configs and their readers.

    python docs/config_reference.py            # rewrite docs/config.md
    python docs/config_reference.py --check    # exit status 1 when docs/config.md is out of date

Every config under configs/ (``configs/<family>/<name>.py``) is built by its builder
(``build_classifier_experiment`` for a config with a ``classifier`` section, else
``build_experiment``; one device), and ``main.py``'s reads of ``keep_freed_host_memory`` and
``xla_cpu_ynn_elementwise`` (:func:`sgm_jax.host_memory.configured`,
:func:`sgm_jax.xla_cpu.configured`), inside :func:`sgm_jax.config_fields.recording`, which
gives every field the builder reads and what its reader allows. The defaults are the values of
the ``configs/default_*.py`` files in :data:`DEFAULTS`. The meanings are :data:`MEANINGS`, the one
hand-written part; a field of ``classifier.optim`` or ``classifier.training`` without an entry of
its own is described by its namesake in ``optim`` or ``training`` (:data:`SHARED`).
tests/test_config_reference.py checks that every field of every config is read by its builder,
that every field has a meaning and every meaning a field, and that docs/config.md is what this
script writes.
"""

from __future__ import annotations

import argparse
import dataclasses
import glob
import importlib
import importlib.util
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from sgm_jax import config_fields as cf  # noqa: E402
from sgm_jax.config_sections import NETWORK_FIELD  # noqa: E402

OUTPUT = os.path.join(ROOT, "docs", "config.md")

#: The sections of docs/config.md, in order (a field's section: its first name, or its first two
#: under ``classifier.``; "top level" for a field outside every section).
SECTIONS = ("top level", "data", "model", "sde", "training", "optim", "sampling", "eval",
            "classifier", "classifier.model", "classifier.training", "classifier.optim", "guidance")

#: The default files, in groups: a field shows the values of the first group that has it,
#: labelled. (label, module under configs/, function, arguments)
DEFAULTS = (
    (("toy", "default_toy", "get_default_configs", ()),
     ("image", "default_cifar10", "get_default_configs", ())),
    (("DLSM toy", "default_dlsm_moons", "get_default_configs", ()),
     ("DLSM image", "default_dlsm_cifar10", "get_default_configs", ("cifar10",))),
    (("VP / sub-VP", "default_ddpmpp", "get_ddpmpp_config", ("vpsde",)),),
    (("LCSS toy", "default_lcss_checkerboard", "get_lcss_checkerboard_config", ("dsm",)),),
)

#: Sections whose fields, without an entry of their own, mean what their namesake means.
SHARED = {"classifier.training.": "training.", "classifier.optim.": "optim."}

#: One line per field: what it means, its units, which paper or official setting it mirrors and
#: what its special values (0, -1, "") mean. The order here is the order of docs/config.md.
MEANINGS = {
    "seed": "The run's only source of randomness: `PRNGKey(seed)` splits into the keys of the toy "
            "training set / image augmentation, the epoch permutations, the initial parameters "
            "and the training draws; evaluation uses `PRNGKey(seed + 10000)`; a DLSM classifier "
            "folds the same keys with 1.",
    "keep_freed_host_memory": "Keep the host memory that compiled programs free in the process "
                              "for their next execution (`sgm_jax.host_memory`: glibc's "
                              "`malloc` on one arena, without `mmap` or trimming), which "
                              "`main.py` sets before JAX starts (its `--[no]keep_freed_host_"
                              "memory` overrides this field); False: glibc's defaults. True "
                              "where absent. Large networks fault their buffers in at every "
                              "step without it (NCSN++ deep, batch 4: 4.7 against 6.0 s/step "
                              "on 2 cores); the digits configs set False (their step 27–34 "
                              "against 43–54 ms with it; docs/benchmarks.md).",
    "xla_cpu_ynn_elementwise": "XLA:CPU runs the elementwise fusions of the run's programs "
                               "through YNNPACK as well as its dots, convolutions and "
                               "reductions (`sgm_jax.xla_cpu`: XLA's "
                               "`xla_cpu_experimental_ynn_fusion_type` with "
                               "`LIBRARY_FUSION_TYPE_ELTWISE` added), set by `main.py` before "
                               "JAX starts (its `--[no]xla_cpu_ynn_elementwise` overrides this "
                               "field); False where absent; accelerators ignore it. The NCSN++ "
                               "deep step took 0.93× the time with it on 2 cores, the small "
                               "digits and toy steps 1.2–1.3× (docs/benchmarks.md).",
    # data
    "data.dataset": "The data: a 2-D toy generator (`8gaussians`, `spirals`, `checkerboard`; "
                    "`moons` with 2 classes) or an image set (tfds names, prepared beforehand "
                    "with `tfds build`; `imagenet32` is `imagenet_resized/32x32`, `digits` "
                    "scikit-learn's bundled 8×8 digits, no download).",
    "data.num_points": "Toy data: the size of the fixed training set, drawn once from the seed; "
                       "`training.batch_size` may not exceed it.",
    "data.image_size": "Images: the side in pixels; larger images are resized as score_sde "
                       "(bilinear, antialiased); at most what the set gives (32; CelebA 140 "
                       "after its central crop; digits 16, upsampled from 8).",
    "data.num_channels": "Images: the channel count; must be the data set's (3, digits 1).",
    "data.random_flip": "Images: random horizontal flips of the training batches (score_sde); "
                        "the digits configs turn them off (digits are not mirror symmetric).",
    "data.uniform_dequantization": "Images: training pixels (n + u)/256 with u ~ U[0, 1) "
                                   "instead of n/255 (score_sde's option).",
    "data.centered": "Images in model space: [−1, 1] (True, score_sde's DDPM++ / VP) or [0, 1] "
                     "(False, its NCSN++ / VE, whose network maps them to [−1, 1] itself); also "
                     "sets the networks' `centered` field.",
    "data.data_dir": "The tfds data directory; \"\" = tfds's default (which honours "
                     "`TFDS_DATA_DIR`).",
    # model
    "model.name": "The score network, a registered Flax module "
                  "(`sgm_jax.models.available_models()`); every field of `model` other than "
                  "`name`, `parameterisation` and `condition` is one of its constructor fields.",
    "model.parameterisation": "How the output f becomes the score (QCSGM Eq. 12): `u` "
                              "s = (x − f)/σ_t; `c` / `c_norm` s = −∇ₓE with E = ‖x − f‖²/(2σ_t) "
                              "(C-SGM) / ‖f‖²/(2σ_t) (the official C-NCSN++); `scale_by_sigma` "
                              "s = f/σ_t (score_sde's VE); `noise_prediction` s = −f/σ_t (VP, "
                              "sub-VP); `direct` s = f.",
    "model.condition": "The network's time input: `t`, `sigma` (σ_t, the official toy networks), "
                       "`log_sigma` (log σ_t, NCSN++'s Fourier features) or `999t` (999·t, "
                       "DDPM++'s positional embedding).",
    "model.output_activation": "`official_toy`: the activation after its last layer, the "
                               "official `act__`: `identity` for U and QC, `elu` "
                               "(checkerboard, spirals) or `leaky_relu` (slope 0.1, 8gaussians) "
                               "for the C models.",
    "model.hidden": "`toy_mlp`: the widths of its Swish layers (LCSS checkerboard study: two "
                    "layers of 300, App. B).",
    "model.embedding_size": "`toy_mlp`: Gaussian Fourier frequencies of t (2× as many features, "
                            "concatenated to x).",
    "model.fourier_scale": "Std of the Gaussian Fourier frequencies of the time embedding "
                           "(NCSN++: 16 on log σ_t, score_sde; `toy_mlp`: 1, for t ∈ [0, 1]).",
    "model.nf": "Base channel count (score_sde's `nf`): level i has nf·ch_mult[i] channels and "
                "the time embedding 4·nf.",
    "model.ch_mult": "Channel multiplier per resolution level; one level per entry, halving the "
                     "side each time (the image side must be divisible by 2^(levels − 1)).",
    "model.num_res_blocks": "Residual blocks per level (NCSN++ / DDPM++ 4, their deep variants "
                            "8, DDPM 2).",
    "model.attn_resolutions": "Feature-map sides after whose residual blocks self-attention "
                              "runs (16: at 16×16).",
    "model.dropout": "Dropout rate in the residual blocks, training only (score_sde 0.1).",
    "model.resamp_with_conv": "Up- and down-sampling with a convolution (True) or by "
                              "interpolation / pooling alone.",
    "model.conditional": "Time-conditional network: the time embedding is added in every "
                         "residual block (False: no embedding at all).",
    "model.fir": "FIR up- and down-sampling with `fir_kernel` (NCSN++) instead of the plain "
                 "kind (DDPM++).",
    "model.fir_kernel": "The FIR resampling kernel (score_sde's (1, 3, 3, 1)); needs a non-zero "
                        "sum.",
    "model.skip_rescale": "Divide residual and skip sums by √2 (score_sde's NCSN++ / DDPM++).",
    "model.resblock_type": "`biggan` (resampling inside the residual block, NCSN++) or `ddpm` "
                           "(separate up/down-sampling layers, DDPM++).",
    "model.progressive": "Output image pyramid: `none`, `output_skip` or `residual`.",
    "model.progressive_input": "Input image pyramid: `none`, `input_skip` or `residual` "
                               "(NCSN++).",
    "model.progressive_combine": "How `input_skip` merges the input pyramid: `sum` or `cat`.",
    "model.attention_type": "Self-attention block: `ddpm` (the only one).",
    "model.init_scale": "Scale of the initial weights of each block's last convolution; 0 means "
                        "1e-10, nearly zero (score_sde).",
    "model.embedding_type": "Time embedding: `fourier` (2·nf Gaussian Fourier features, for "
                            "log σ_t) or `positional` (the nf-dim sinusoidal one, for 999·t).",
    "model.conv_size": "Kernel size of the 3×3 convolutions, odd (score_sde's configs set 3 and "
                       "its code always uses 3).",
    "model.nonlinearity": "The network's activation (`swish`, score_sde; a name of "
                          "`sgm_jax.models.layers.ACTIVATIONS`).",
    # sde
    "sde.name": "The forward SDE (Song et al. 2021): `vesde` (σ_t = σ_min(σ_max/σ_min)^t), "
                "`vpsde` (β(t) linear from β_min to β_max) or `subvpsde`; the section holds the "
                "named SDE's parameters only.",
    "sde.sigma_min": "VE: σ_min, the noise std at t = 0 (score_sde's CIFAR-10 0.01).",
    "sde.sigma_max": "VE: σ_max, the noise std at t = 1 and of the prior N(0, σ_max² I) "
                     "(score_sde's technique 1: about the largest distance between training "
                     "points; CIFAR-10 50).",
    "sde.beta_min": "VP / sub-VP: β(0) (score_sde 0.1).",
    "sde.beta_max": "VP / sub-VP: β(1) (score_sde 20).",
    "sde.num_scales": "N, the discretisation of the SDE: the steps of the PC and reverse-SDE "
                      "samplers (score_sde's `num_scales`, 1000 on CIFAR-10).",
    # training
    "training.objective": "The score-matching objective (`sgm_jax.losses` at the perturbation "
                          "std): `dsm`, `lcss` (LCSS Eq. 19), `ssm` (sliced, variance-reduced "
                          "form), `fd_ssm` (finite differences), `ism` (exact trace) or `esm` "
                          "(exact Parzen target, toy data only).",
    "training.perturbation": "Std of the training perturbation: `marginal` (σ_t of the SDE's "
                             "marginal, score_sde / QCSGM) or `diffusion` (g(t), the LCSS "
                             "paper's \"σ_t = g(t)\", §4).",
    "training.weighting": "λ(t): `sigma2` (the perturbation variance, score_sde's "
                          "`likelihood_weighting = False`) or `likelihood` (g(t)²).",
    "training.reduce_mean": "Divide the per-example objective by the event size D (score_sde's "
                            "`reduce_mean`: a mean over pixels); the QC term is not divided.",
    "training.eps": "Smallest training time: t ~ U(eps, 1) (score_sde 1e-5; DLSM's score "
                    "training 1e-3).",
    "training.projection": "Probe distribution of SSM, FD-SSM and the Hutchinson QC estimate: "
                           "`rademacher` or `gaussian`.",
    "training.num_projections": "SSM: probes per example, K.",
    "training.fd_eps": "FD-SSM: the step ε of the central difference s(x + εv) − s(x − εv) "
                       "(LCSS paper §2.3).",
    "training.qc_weight": "λ of the quasi-conservative term λ·σ²·QC (QCSGM Eq. A5); 0 = none. "
                          "QCSGM's image λ = 1e-4 maps unchanged; its toy λ = 0.1 is 0.05 here "
                          "(this library's DSM has the ½).",
    "training.qc_estimator": "The QC term: `hutchinson` (vᵀJJᵀv − vᵀJJv with `qc_num_vectors` "
                             "probes) or `exact` (the full Jacobian, small D only; the official "
                             "2-D `lqc`).",
    "training.qc_fraction": "The QC term on the first ⌈qc_fraction·B⌉ of each device's B rows "
                            "only (unbiased: the rows come in random order); 1 = every row.",
    "training.qc_every": "Lazy regularisation: the QC term, weight × k, on every k-th step only; "
                         "1 = every step; a multiple of `n_jitted_steps`.",
    "training.qc_num_vectors": "Hutchinson probes per example of the QC term (QCSGM: 1).",
    "training.batch_size": "The global batch over every device and process; a multiple of the "
                           "device count.",
    "training.n_iters": "Training steps in all; a multiple of `n_jitted_steps` (score_sde's "
                        "1,300,001 counts its last step inclusively: 1,300,000 here).",
    "training.n_jitted_steps": "Steps per compiled dispatch (`lax.scan` over a stacked batch); "
                               "`n_iters` and the frequencies are multiples of it.",
    "training.compute_dtype": "The dtype of the train step's activations and convolutions "
                             "(U-Nets: `ncsnpp`, `ddpm`): `bfloat16` is mixed precision, with "
                             "the parameters, Adam's moments, the EMA, GroupNorm's statistics, "
                             "attention's softmax, the loss and the QC term in float32. A "
                             "training field, not a `model` one: it changes how the step "
                             "computes, not the network, so checkpoints, evaluation and "
                             "sampling (float32) are the same for either value.",
    "training.remat": "The `jax.checkpoint` policy of the residual blocks in the train step "
                      "(U-Nets): `none` stores their activations for the backward pass; "
                      "`conv_saveable` keeps only the convolutions' outputs and recomputes "
                      "normalisation, activations and resampling; `nothing_saveable` recomputes "
                      "each block from its input. Less memory for more time (docs/benchmarks.md, "
                      "\"Memory\"); outputs and gradients unchanged.",
    "training.log_freq": "Log the training scalars (console and TensorBoard) every `log_freq` "
                         "steps.",
    "training.eval_freq": "Log `eval_loss`, the loss of the EMA parameters on a test batch, "
                          "every `eval_freq` steps; 0 = never.",
    "training.snapshot_freq": "Write a checkpoint every `snapshot_freq` steps and at the end "
                              "(score_sde's `snapshot_freq_for_preemption`).",
    "training.keep_checkpoints": "How many of the latest checkpoints are kept.",
    "training.keep_every": "Also keep every checkpoint at a multiple of `keep_every` (score_sde's "
                           "`snapshot_freq`); 0 = none; a multiple of `snapshot_freq`.",
    "training.snapshot_sampling": "Write a grid of samples of the EMA model at every checkpoint "
                                  "(`WORKDIR/samples/step_<step>.png`).",
    "training.snapshot_num_samples": "Samples in that grid.",
    "training.init_from": "Two-stage training (QCSGM): a run without checkpoints of its own "
                          "starts from the whole state (parameters, EMA, Adam, step) of this "
                          "workdir or checkpoint folder; \"\" = from scratch.",
    "training.init_step": "The step of `init_from`'s checkpoint to start from; −1 = its latest.",
    "training.evaluate_after": "`--mode=train` ends with `--mode=eval` (the toy configs; image "
                               "configs keep them apart, as score_sde; a DLSM run evaluates its "
                               "classifier).",
    # optim
    "optim.lr": "Adam's learning rate (after the warm-up).",
    "optim.beta1": "Adam's β₁.",
    "optim.beta2": "Adam's β₂.",
    "optim.eps": "Adam's ε.",
    "optim.weight_decay": "Decoupled weight decay (AdamW) when > 0; 0 = plain Adam (the official "
                          "runs).",
    "optim.warmup": "Linear warm-up of the learning rate, lr·min(step/warmup, 1) (score_sde); "
                    "0 = none.",
    "optim.grad_clip": "Clip the gradient to this global norm; 0 = no clipping (toy: 0.5 is the "
                       "official 1.0 for this library's halved DSM).",
    "optim.ema_rate": "Decay of the parameters' EMA, which evaluation and sampling use (score_sde "
                      "0.999 VE, 0.9999 VP); 0 = no averaging (the official toy and DLSM "
                      "classifier codes).",
    "optim.ema_warmup": "The EMA decay schedule: `none` (the rate from the first step, "
                        "score_sde's JAX code) or `num_updates` (min(rate, (1 + n)/(10 + n)), "
                        "score_sde_pytorch).",
    # sampling
    "sampling.method": "The sampler of `--mode=eval` and `--mode=sample`: `ode` (probability-flow "
                       "ODE, diffrax Dopri5), `pc` (predictor–corrector, `sde.num_scales` steps), "
                       "`reverse_sde` (Euler–Maruyama on the reverse SDE, `sde.num_scales` steps), "
                       "`ddim` (DDIM on the SDE's kernel, `ddim_steps`, `eta`) or `heun` (Heun's "
                       "second-order sampler on EDM's noise levels, `heun_steps`, NFE 2N − 1).",
    "sampling.predictor": "PC predictor: `reverse_diffusion`, `euler_maruyama`, `ancestral` "
                          "(score_sde's SMLD / DDPM ancestral step; VE and VP only) or `none`.",
    "sampling.corrector": "PC corrector: `langevin` (score_sde's, step size from `snr`), `ald` "
                          "(annealed Langevin dynamics) or `none`.",
    "sampling.snr": "Signal-to-noise ratio of the corrector's step (score_sde 0.16).",
    "sampling.n_steps": "Corrector steps per noise level (score_sde's `n_steps_each`).",
    "sampling.rtol": "Relative tolerance of the ODE sampler (and of the toy NLL's ODE).",
    "sampling.atol": "Absolute tolerance of the ODE sampler (and of the toy NLL's ODE).",
    "sampling.eps": "The time the samplers run down to from 1, ending denoised (score_sde's "
                    "`sampling_eps`: 1e-5 VE, 1e-3 VP / sub-VP); the toy NLL's ODE starts there.",
    "sampling.num_samples": "Samples `--mode=sample` draws (and the sample grid of an image "
                            "`--mode=eval`).",
    "sampling.ddim_steps": "`ddim`: the number of steps N (NFE N), uniform in t from 1 to "
                           "`sampling.eps`, then a last step to the clean level.",
    "sampling.eta": "`ddim`: η of DDIM Eq. 16; 0 deterministic (the probability-flow ODE's "
                    "DDIM step), 1 the ancestral step.",
    "sampling.heun_steps": "`heun`: the number of noise levels N of Karras et al. 2022 Eq. 5 "
                           "(NFE 2N − 1; EDM uses 18 on CIFAR-10).",
    "sampling.rho": "`heun`: ρ of the noise levels σ_i = (σ_max^{1/ρ} + i/(N−1)(σ_min^{1/ρ} − "
                    "σ_max^{1/ρ}))^ρ (EDM 7).",
    "sampling.s_churn": "`heun`: EDM Algorithm 2's S_churn, the total noise added back over the "
                        "steps; 0 = the deterministic Algorithm 1.",
    "sampling.s_min": "`heun`: churn only at levels σ ≥ S_min.",
    "sampling.s_max": "`heun`: churn only at levels σ ≤ S_max; at least `s_min`, inf allowed.",
    "sampling.s_noise": "`heun`: S_noise, the std of the churn noise relative to its level (EDM "
                        "1.007 on ImageNet, 1 here).",
    "sampling.task": "What `--mode=sample` does: `generate` (unconditional samples of "
                     "`sampling.method`), or complete the first `sampling.num_samples` test "
                     "images: `inpaint` (PC imputation of `sampling.mask`), `colorize` (PC in "
                     "score_sde's decoupled colour space; RGB data) or `dps` (diffusion posterior "
                     "sampling of y = A(x) + n, A = `sampling.operator`). Images only.",
    "sampling.mask": "The region to draw (inpainting; `dps` with `operator = mask`): "
                     "`left_half`, `centre_square` (the ⌊H/2⌋ × ⌊W/2⌋ centre), `random` "
                     "(`mask_fraction` of the pixels, drawn with `fold_in(PRNGKey(seed), 1)`) or "
                     "`file` (`mask_file`).",
    "sampling.mask_fraction": "`mask = random`: the fraction of the pixels drawn.",
    "sampling.mask_file": "`mask = file`: a `.npy` or `.png` mask of the images' size, 1 "
                          "(bright) = known; \"\" = none.",
    "sampling.operator": "`dps`: the forward operator A: `mask` (`sampling.mask`), `pool` "
                         "(k × k average pooling, super-resolution by k = `pool_factor`) or `blur` "
                         "(Gaussian blur of std `blur_sigma`, border replicated).",
    "sampling.pool_factor": "`operator = pool`: k; must divide the image size.",
    "sampling.blur_sigma": "`operator = blur`: the blur's std in pixels (2⌈3σ⌉ + 1 taps).",
    "sampling.noise_std": "`dps`: σ_y, the std of the simulated measurement noise n, in model "
                          "space.",
    "sampling.zeta": "`dps`: ζ′ of Chung et al. 2023 (ζ_i = ζ′ / ‖y − A(x̂₀)‖, the norm floored at "
                     "σ_y √M).",
    "sampling.dps_steps": "`dps`: the number of ancestral steps (NFE, each with one "
                          "back-propagation through the score model).",
    # eval
    "eval.checkpoint": "The step of the checkpoint to evaluate or sample (a DLSM run: the "
                       "classifier's); −1 = the latest.",
    "eval.num_samples": "Samples the evaluation draws: toy, for the NFE and P/R/D/C against as "
                        "many training points; images, for FID and the rest (score_sde "
                        "50,000).",
    "eval.prdc_k": "k of the k-nearest-neighbour precision / recall / density / coverage (and of "
                   "DLSM's class-wise ones).",
    "eval.num_points": "Toy: the training points at which Asym, NAsym and the score error are "
                       "measured.",
    "eval.num_levels": "Toy: the L times t_l = l/L (l = 1 … L) of those metrics.",
    "eval.nll_num_points": "Toy: the training points whose NLL (nats) the probability-flow ODE "
                           "gives.",
    "eval.batch_size": "The global batch of the evaluation's sampling, likelihood and features "
                       "(DLSM: the most samples of one class per batch).",
    "eval.enable_sampling": "Images: draw `eval.num_samples` samples (NFE; with `enable_fid` the "
                            "Inception metrics).",
    "eval.enable_fid": "Images: FID / IS / KID / PRDC on the FID Inception network (needs "
                       "`inception_weights`); DLSM without it: a digits classifier's features.",
    "eval.inception_weights": "The converted FID Inception weights (`.npz`, from "
                              "`python -m sgm_jax.metrics.convert_inception`).",
    "eval.stats_dir": "Cache of the training split's Inception statistics; \"\" = "
                      "`~/.cache/sgm_jax/stats`.",
    "eval.reference_features": "An `.npz` of reference pool_3 features (score_sde's "
                               "`assets/stats`, QCSBM's `dataset_stat.npz`) instead of the "
                               "training split's; \"\" = the training split; unconditional only.",
    "eval.kid_subset_size": "KID: the size of each subset (1000, torch-fidelity / clean-fid).",
    "eval.kid_num_subsets": "KID: the number of subsets (100).",
    "eval.is_splits": "Inception Score: the number of splits (10, the standard).",
    "eval.enable_bpd": "Images: bits/dim on the test split (probability-flow ODE, Hutchinson "
                       "divergence with one Rademacher probe).",
    "eval.bpd_repeats": "Passes over the test split, each dequantised afresh (score_sde 5).",
    "eval.bpd_num_examples": "Test examples per pass; 0 = the whole test split.",
    "eval.bpd_rtol": "Relative tolerance of the bits/dim ODE (Dopri5).",
    "eval.bpd_atol": "Absolute tolerance of the bits/dim ODE (Dopri5).",
    "eval.bpd_eps": "The time the bits/dim ODE starts at (integrated to 1).",
    "eval.enable_asym": "Images: Asym / NAsym over t on test images (QCSGM Table 5, Eqs. "
                        "A10–A11).",
    "eval.asym_num_levels": "L, the times t_l = l/L·(1 − 1e-5) + 1e-5, l = 0 … L − 1 (the "
                            "official 100).",
    "eval.asym_num_vectors": "Rademacher probes per example of the Hutchinson Asym / NAsym.",
    "eval.asym_num_examples": "Test images for Asym / NAsym; 0 = the whole test split.",
    "eval.samples_per_class": "DLSM: samples per class (the official 5,100 on CIFAR-10, 600 on "
                              "CIFAR-100, 10,000 on the moons).",
    "eval.grid_size": "2-D DLSM: the n × n grid of the score errors (official 35).",
    "eval.grid_range": "2-D DLSM: the grid's (x_min, x_max, y_min, y_max) (official (−40, 40, "
                       "−25, 25)).",
    "eval.grid_sigma": "2-D DLSM: the noise level σ of the score errors, the time with σ_t = σ "
                       "(official 7.5).",
    "eval.enable_cas": "Image DLSM: the classification accuracy score, a ResNet trained on the "
                       "samples and tested on the real test split.",
    "eval.cas_steps": "CAS: training steps (official: 400,000 of a ResNet-50).",
    "eval.cas_batch_size": "CAS: training batch (official 150).",
    "eval.cas_lr": "CAS: Adam's learning rate (official 2e-4).",
    "eval.feature_steps": "Conditional images without Inception: training steps of the digits "
                          "feature classifier whose space the metrics use (2,000).",
    # classifier
    "classifier.score_workdir": "The run whose score model the classifier trains against (its "
                                "EMA parameters, frozen); \"\" = this run's workdir, where stage "
                                "1 trains it.",
    "classifier.score_checkpoint": "The step of that score checkpoint; −1 = the latest.",
    "classifier.random_flip": "Images: the classifier's own `data.random_flip` (the official "
                              "classifier trains without flips).",
    "classifier.model.name": "The classifier, a registered Flax module: `resnet_cond` (the "
                             "released DLSM CIFAR ResNet) or `dlsm_toy_classifier` (the official "
                             "toy network).",
    "classifier.model.condition": "The classifier's time input, as `model.condition` (official: "
                                  "σ_t for the toy, log σ_t for CIFAR).",
    "classifier.model.num_classes": "Logits; must be the data set's number of classes.",
    "classifier.model.depth": "ResNet depth: 18 or 34 (the official CIFAR-10 / CIFAR-100 "
                              "classifiers).",
    "classifier.model.width": "Channels of the first ResNet stage (stages width·(1, 2, 4, 8)); "
                              "64 is the released network.",
    "classifier.model.nf": "Gaussian Fourier frequencies of the noise input (2·nf features; "
                           "official 32).",
    "classifier.model.fourier_scale": "Std of those frequencies (official 16).",
    "classifier.model.temb_dim": "Width of the noise embedding (official 4·nf = 128).",
    "classifier.model.conditional": "Noise-conditional; False is the plain ResNet (that of "
                                    "the CAS metric).",
    "classifier.training.objective": "`ce` (cross-entropy, DLSM Eq. 4), `dlsm` (L_DLSM, Eq. 6) or "
                                     "`total` (L_DLSM + ce_weight·L_CE, Eq. 7, the official "
                                     "default).",
    "classifier.training.ce_weight": "λ of L_Total = L_DLSM + λ·L_CE (official `coef`: 0.125 "
                                     "toy, 1 CIFAR).",
    "classifier.training.dlsm_weighting": "λ(t) of the DLSM term: `sigma2` (σ_t², as the score "
                                          "model's DSM), `sigma4` (official toy "
                                          "`weighting_dlsm` 2) or `one` (official CIFAR, 0).",
    "classifier.training.reduce_mean": "Divide the DLSM term by D (the official means over "
                                       "elements).",
    "classifier.training.eps": "The classifier's t ~ U(eps, 1) (official 1e-5).",
    "classifier.training.snapshot_sampling": "Must be False: a classifier run draws no samples "
                                             "while training.",
    "classifier.training.snapshot_num_samples": "Unused: `snapshot_sampling` is False.",
    "classifier.training.init_from": "Must be \"\": a classifier run starts from its own "
                                     "checkpoints.",
    "classifier.training.init_step": "Unused: `init_from` is \"\".",
    "classifier.optim.ema_rate": "Decay of the classifier's parameter EMA; 0 = none (the DLSM "
                                 "configs: the official code saves the raw weights); the "
                                 "BatchNorm statistics are never averaged.",
    # guidance
    "guidance.method": "`base` (α = 1, a `ce` classifier), `scaling` (α > 1, a `ce` classifier) "
                       "or `dlsm` (α = 1, a `dlsm` or `total` classifier).",
    "guidance.scale": "α of the posterior score s(x, t) + α∇ₓ log p(y | x, t); 1 except for "
                      "`scaling` (10, the official README's `--scale`).",
}

#: A line under a section's heading.
SECTION_NOTES = {
    "model": "Every field but `name`, `parameterisation` and `condition` is a constructor field "
             "of the network `name` (`sgm_jax.models.model_fields(name)`), which checks its value; "
             "the networks that have a `centered` field get `data.centered`.",
    "sde": "Each SDE takes its own parameters: `sigma_min` / `sigma_max` (VE) or `beta_min` / "
           "`beta_max` (VP, sub-VP); another SDE's parameter in the section is refused.",
    "eval": "The toy evaluation uses `checkpoint`, `num_points`, `num_levels`, "
            "`nll_num_points`, `num_samples` and `prdc_k`; the image evaluation `checkpoint`, "
            "`batch_size`, `num_samples`, `prdc_k` and the Inception, KID, IS, bits/dim and Asym "
            "fields; a DLSM run evaluates its classifier with `checkpoint`, `batch_size`, "
            "`samples_per_class` and `prdc_k`, plus the `grid_*` fields (2-D data) or the "
            "`cas_*` fields and the Inception, KID and IS fields (images). The builder checks "
            "every field, used or not.",
    "classifier": "A config with a `classifier` section is a DLSM run (`sgm_jax.dlsm`): stage 1 "
                  "trains the score model, stage 2 this classifier against it.",
}


@dataclasses.dataclass
class Survey:
    """What building every config under configs/ showed: ``allowed`` (field → the texts its
    readers recorded), ``unread`` (config file → its fields that the builder did not read) and
    ``defaults`` (per group of :data:`DEFAULTS`, (label, field → value) per file)."""

    allowed: dict[str, set[str | None]]
    unread: dict[str, list[str]]
    defaults: list[list[tuple[str, dict]]]


def config_files() -> list[str]:
    """Every experiment config, relative to the repository root (``configs/<family>/<name>.py``)."""
    return sorted(os.path.relpath(p, ROOT)
                  for p in glob.glob(os.path.join(ROOT, "configs", "*", "*.py")))


def load_config(path: str):
    """``get_config()`` of the config file ``path`` (relative to the repository root)."""
    spec = importlib.util.spec_from_file_location("config_under_reference",
                                                  os.path.join(ROOT, path))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config()


def leaves(config, prefix: str = "") -> dict:
    """``{dotted path: value}`` of every field (not section) of ``config``."""
    out = {}
    for key, value in config.items():
        if hasattr(value, "items"):
            out.update(leaves(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def read_fields(config) -> dict[str, str | None]:
    """Builds ``config`` as ``main.py`` does (one device) and returns what the builder read:
    ``{field: allowed-values text}``."""
    from sgm_jax import host_memory, xla_cpu
    from sgm_jax.classifier_experiment import build_classifier_experiment
    from sgm_jax.experiment import build_experiment

    with cf.recording() as allowed:
        host_memory.configured(config)
        xla_cpu.configured(config)
        if cf.has(config, "classifier"):
            build_classifier_experiment(config, num_devices=1)
        else:
            build_experiment(config, num_devices=1)
    return allowed


def default_configs() -> list[list[tuple[str, dict]]]:
    groups = []
    for group in DEFAULTS:
        groups.append([])
        for label, module, function, arguments in group:
            config = getattr(importlib.import_module(f"configs.{module}"), function)(*arguments)
            groups[-1].append((label, leaves(config)))
    return groups


def survey() -> Survey:
    allowed: dict[str, set] = {}
    unread = {}
    for path in config_files():
        config = load_config(path)
        read = read_fields(config)
        missing = sorted(set(leaves(config)) - set(read))
        if missing:
            unread[path] = missing
        for field, text in read.items():
            allowed.setdefault(field, set()).add(text)
    return Survey(allowed, unread, default_configs())


def meaning(field: str) -> str | None:
    """The field's meaning: its entry of :data:`MEANINGS`, or its namesake's (:data:`SHARED`)."""
    if field in MEANINGS:
        return MEANINGS[field]
    for prefix, base in SHARED.items():
        if field.startswith(prefix) and base + field[len(prefix):] in MEANINGS:
            return f"As `{base + field[len(prefix):]}`, for the classifier."
    return None


def section(field: str) -> str:
    parts = field.split(".")
    if len(parts) == 1:
        return "top level"
    return ".".join(parts[:2]) if parts[0] == "classifier" and len(parts) > 2 else parts[0]


def _order(field: str) -> int:
    keys = list(MEANINGS)
    if field in MEANINGS:
        return keys.index(field)
    for prefix, base in SHARED.items():
        if field.startswith(prefix) and base + field[len(prefix):] in MEANINGS:
            return keys.index(base + field[len(prefix):])
    return len(keys)


def format_value(value) -> str:
    if isinstance(value, str):
        return f'"{value}"'
    if isinstance(value, float):
        text = repr(value)
        if "e" in text:
            mantissa, exponent = text.split("e")
            text = f"{mantissa}e{int(exponent)}"
        return text
    if isinstance(value, tuple):
        inner = ", ".join(format_value(v) for v in value)
        return f"({inner},)" if len(value) == 1 else f"({inner})"
    if isinstance(value, list):
        return "[" + ", ".join(format_value(v) for v in value) + "]"
    return repr(value)


def default_text(field: str, groups: list[list[tuple[str, dict]]]) -> str:
    """The values of the first group of default files that has ``field``, each after the labels
    of the files that have it; the value alone when every file of the field's own group (the
    DLSM files for ``classifier.*`` and ``guidance.*``, else the toy and image files) has it."""
    home = 1 if field.split(".")[0] in ("classifier", "guidance") else 0
    for index, group in enumerate(groups):
        found = {}
        for label, values in group:
            if field in values:
                found.setdefault(format_value(values[field]), []).append(label)
        if not found:
            continue
        if index == home and len(found) == 1 and len(next(iter(found.values()))) == len(group):
            return f"`{next(iter(found))}`"
        return "<br>".join(f"{', '.join(labels)} `{text}`" for text, labels in found.items())
    return "—"


def allowed_text(texts: set[str | None]) -> str:
    """The readers' texts of one field over every config: the networks a constructor field
    belongs to joined into one "a field of …", the other texts joined by "; "."""
    known = {t for t in texts if t is not None}
    networks = sorted(t[len(NETWORK_FIELD):] for t in known if t.startswith(NETWORK_FIELD))
    others = sorted(t for t in known if not t.startswith(NETWORK_FIELD))
    if networks:
        others.append(NETWORK_FIELD + ", ".join(f"`{n}`" for n in networks))
    return "; ".join(others) or "any value (not checked)"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def render(data: Survey) -> str:
    """docs/config.md for ``data``; ``ValueError`` for a field without a meaning or outside
    :data:`SECTIONS`."""
    fields = sorted(data.allowed, key=lambda f: (SECTIONS.index(section(f))
                                                 if section(f) in SECTIONS else len(SECTIONS),
                                                 _order(f), f))
    lost = [f for f in fields if section(f) not in SECTIONS]
    if lost:
        raise ValueError(f"fields outside the sections {SECTIONS}: {lost}")
    undescribed = [f for f in fields if meaning(f) is None]
    if undescribed:
        raise ValueError(f"fields without a meaning in docs/config_reference.py: {undescribed}")
    lines = [
        "# Config reference",
        "",
        "<!-- Generated by docs/config_reference.py from configs/ and the config readers; do "
        "not edit: run `python docs/config_reference.py`. -->",
        "",
        f"Every field of every config under `configs/` ({len(fields)} fields). A config is "
        "read in one place, the experiment builder (`sgm_jax.experiment.build_experiment`, and "
        "`sgm_jax.classifier_experiment.build_classifier_experiment` for a config with a "
        "`classifier` section; `main.py` reads `keep_freed_host_memory` and "
        "`xla_cpu_ynn_elementwise` before it starts JAX), which checks every field as it "
        "reads it: a value outside *allowed* is a `ValueError` naming the field, the value and "
        "what is allowed. Any field can be overridden from the command line, "
        "`--config.training.n_iters=1000`.",
        "",
        "*Default* is the value in the shared defaults below: the toy and the image defaults, "
        "labelled where they differ or only one has the field, and the DLSM defaults for "
        "`classifier.*` and `guidance.*`; a field that none of these has shows the first "
        "other file below that has it. The experiment configs under `configs/` change some "
        "defaults (their files say which and why).",
        "",
        "| label | defaults |",
        "|---|---|",
    ]
    for group in DEFAULTS:
        for label, module, function, arguments in group:
            call = f"{function}({', '.join(format_value(a) for a in arguments)})"
            lines.append(f"| {label} | `configs/{module}.py`, `{call}` |")
    lines.append("")
    for name in SECTIONS:
        members = [f for f in fields if section(f) == name]
        if not members:
            continue
        lines += [f"## {name}", ""]
        if name in SECTION_NOTES:
            lines += [SECTION_NOTES[name], ""]
        lines += ["| field | default | allowed | meaning |", "|---|---|---|---|"]
        for field in members:
            lines.append("| " + " | ".join(_cell(c) for c in (
                f"`{field}`", default_text(field, data.defaults),
                allowed_text(data.allowed[field]), meaning(field))) + " |")
        lines.append("")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true",
                        help="exit with status 1 when docs/config.md differs from the output")
    args = parser.parse_args(argv)
    data = survey()
    for path, fields in data.unread.items():
        print(f"warning: {path}: fields its builder does not read: {fields}", file=sys.stderr)
    text = render(data)
    if args.check:
        with open(OUTPUT, encoding="utf-8") as f:
            same = f.read() == text
        print("docs/config.md is up to date" if same else
              "docs/config.md is out of date: run python docs/config_reference.py")
        return 0 if same else 1
    with open(OUTPUT, "w", encoding="utf-8") as f:
        f.write(text)
    print(f"wrote {os.path.relpath(OUTPUT)} ({len(data.allowed)} fields)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
