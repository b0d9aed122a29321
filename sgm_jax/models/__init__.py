"""Networks f(x, t), the model registry and the score parameterisations (QCSGM Eq. 12).

Importing this package registers the toy networks "toy_mlp", "official_toy", "autoencoder" and
"small_conv", the image networks "ncsnpp" (NCSN++ and DDPM++, score_sde's ``ncsnpp.py``) and
"ddpm" (score_sde's ``ddpm.py``), and DLSM's networks: the toy classifier and score model
"dlsm_toy_classifier" and "dlsm_toy_score", and the noise-conditional ResNet-18/34 classifier
"resnet_cond".
"""

from sgm_jax.models.autoencoder import OneLayerAutoencoder, autoencoder_weights
from sgm_jax.models.classifiers import ConditionalResNet, ToyClassifier, ToyScoreNet
from sgm_jax.models.ddpm import DDPM
from sgm_jax.models.layers import (
    ACTIVATIONS,
    Swish,
    gaussian_fourier_embedding,
    get_activation,
    sinusoidal_embedding,
)
from sgm_jax.models.mlp import OfficialToyNet, ToyMLP
from sgm_jax.models.ncsnpp import NCSNpp
from sgm_jax.models.parameterisation import (
    CONDITIONS,
    ENERGY_PARAMETERISATIONS,
    PARAMETERISATIONS,
    conditioning_fn,
    make_energy_fn,
    make_score_fn,
)
from sgm_jax.models.registry import (
    available_models,
    get_model,
    model_fields,
    param_count,
    register_model,
    split_variables,
)
from sgm_jax.models.small_conv import SmallConvScoreNet

__all__ = [
    "ACTIVATIONS",
    "CONDITIONS",
    "ConditionalResNet",
    "DDPM",
    "ENERGY_PARAMETERISATIONS",
    "NCSNpp",
    "PARAMETERISATIONS",
    "OfficialToyNet",
    "OneLayerAutoencoder",
    "SmallConvScoreNet",
    "Swish",
    "ToyClassifier",
    "ToyMLP",
    "ToyScoreNet",
    "autoencoder_weights",
    "available_models",
    "conditioning_fn",
    "gaussian_fourier_embedding",
    "get_activation",
    "get_model",
    "make_energy_fn",
    "make_score_fn",
    "model_fields",
    "param_count",
    "register_model",
    "sinusoidal_embedding",
    "split_variables",
]
