"""sgm_jax: score-based generative models in JAX/Flax."""

__version__ = "0.1.0"
