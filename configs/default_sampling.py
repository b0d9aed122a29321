"""The fields of ``config.sampling`` that every default config shares: the fast samplers
(``sampling.method`` "ddim" and "heun") and the conditional tasks of ``--mode=sample``
(``sampling.task``: inpainting, colorization, diffusion posterior sampling). docs/config.md
describes each field; ``sgm_jax/sampling_builder.py`` validates them."""

import ml_collections


def add_sampling_fields(sampling: ml_collections.ConfigDict) -> None:
    """Add the shared fields with their defaults to a config's ``sampling`` section."""
    # DDIM (sampling.method = "ddim"): steps and η (0 deterministic, 1 ancestral)
    sampling.ddim_steps = 50
    sampling.eta = 0.0
    # Heun on EDM's noise levels (sampling.method = "heun"): N, ρ and the churn of Algorithm 2
    sampling.heun_steps = 18
    sampling.rho = 7.0
    sampling.s_churn = 0.0
    sampling.s_min = 0.0
    sampling.s_max = float("inf")
    sampling.s_noise = 1.0
    # --mode=sample: "generate" (unconditional samples from sampling.method), or a task on the
    # first sampling.num_samples test images: "inpaint" and "colorize" (the PC sampler's fields),
    # "dps" (diffusion posterior sampling of y = A(x) + n)
    sampling.task = "generate"
    sampling.mask = "centre_square"  # the region to draw: left_half, centre_square, random, file
    sampling.mask_fraction = 0.5  # "random": the fraction of pixels to draw
    sampling.mask_file = ""  # "file": a .npy / .png mask, 1 (bright) = known
    sampling.operator = "pool"  # dps: A = mask (sampling.mask), pool (k × k means), blur
    sampling.pool_factor = 2
    sampling.blur_sigma = 1.0  # pixels; 2⌈3σ⌉ + 1 taps
    sampling.noise_std = 0.05  # σ_y of the simulated measurements, in model space
    sampling.zeta = 1.0  # DPS step ζ (ζ_i = ζ / ‖y − A(x̂_0)‖)
    sampling.dps_steps = 1000
