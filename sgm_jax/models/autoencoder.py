"""One-layer autoencoder score model (QCSGM §6 and A.6.1).

s(x; θ) = R h(Wᵀx + b) + c with W, R ∈ R^{D×H}, b ∈ R^H, c ∈ R^D and an element-wise h.
Its Jacobian is J = R diag(h′(Wᵀx + b)) Wᵀ. QCSGM §6 (after Im et al., 2016) relates its
conservativeness to W Rᵀ = R Wᵀ, which is necessary; for a non-linear h it is not sufficient
(W = I, R = [[1, 1], [1, 1]] gives W Rᵀ = R Wᵀ yet an asymmetric J wherever h′ differs between
units). Tying R = W makes J symmetric, hence the field conservative.
(The paper writes b ∈ R^D; Wᵀx ∈ R^H forces b ∈ R^H.)
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from sgm_jax.models.layers import get_activation
from sgm_jax.models.registry import register_model

Array = jax.Array


@register_model("autoencoder")
class OneLayerAutoencoder(nn.Module):
    """s(x) = R h(Wᵀx + b) + c (QCSGM §6); the network output *is* the score ("direct").

    Fields: ``hidden`` = H, ``tied`` (R = W, no ``R`` parameter: the CSGM of §6),
    ``activation`` = h by name (``layers.ACTIVATIONS``; default sigmoid, the classical choice
    of Vincent 2011 / Kamyshanska & Memisevic 2013; the paper does not name one).

    Not time-conditional, as in the paper (trained at one noise level): ``t`` is accepted for
    the common (x, t) signature and ignored. ``x`` ``[B, *event]`` is flattened to D features;
    the result has the shape of ``x``. Parameters: ``W`` [D, H], ``R`` [D, H] (untied only),
    ``b`` [H], ``c`` [D].
    """

    hidden: int = 32
    tied: bool = False
    activation: str = "sigmoid"

    def __post_init__(self) -> None:
        get_activation(self.activation)
        if not (isinstance(self.hidden, int) and self.hidden > 0):
            raise ValueError(f"hidden={self.hidden!r} must be a positive integer")
        super().__post_init__()

    @nn.compact
    def __call__(self, x: Array, t: Array | None = None, train: bool = False) -> Array:
        del t, train  # not time-conditional (QCSGM §6), no dropout
        flat = x.reshape(x.shape[0], -1)
        dim = flat.shape[-1]
        w = self.param("W", nn.initializers.lecun_normal(), (dim, self.hidden))
        if self.tied:
            r = w
        else:
            init_r = nn.initializers.lecun_normal(in_axis=-1, out_axis=-2)
            r = self.param("R", init_r, (dim, self.hidden))
        b = self.param("b", nn.initializers.zeros, (self.hidden,))
        c = self.param("c", nn.initializers.zeros, (dim,))
        h = get_activation(self.activation)(flat @ w + b)
        return (h @ r.T + c).reshape(x.shape)


def autoencoder_weights(params: Any) -> tuple[Array, Array]:
    """(W, R) of a ``OneLayerAutoencoder`` from its variables or its ``params`` dict.

    For a tied model R is W itself. Useful for the QCSGM Fig. 3 / A3 curves
    ‖W Rᵀ − R Wᵀ‖_F and ‖W − R‖_F.
    """
    p = params["params"] if "params" in params else params
    w = jnp.asarray(p["W"])
    return w, jnp.asarray(p["R"]) if "R" in p else w
