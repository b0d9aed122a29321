"""sgm_jax.models.convolution: the values and derivatives of ``lax.conv_general_dilated``, and a
canonical input-gradient convolution inside compiled loops.

The comparisons run in float64 (``jax.enable_x64``), where both sides compute the
same sums: they agree to float64 rounding of a sum of at most 3·3·8 = 72 products of O(1) terms,
bounded by 1e-12 here.
"""

from __future__ import annotations

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from sgm_jax.models.convolution import conv_general_dilated

TOL = 1e-12
NUMBERS = ("NHWC", "HWIO", "NHWC")
#: The convolutions of the library's networks: 'SAME' 3×3, strided 'VALID' (FIR downsampling),
#: input-dilated (FIR upsampling), 1×1, explicit padding (the ResNet classifiers), and grouped.
CASES = {
    "same": dict(window_strides=(1, 1), padding="SAME"),
    "strided_valid": dict(window_strides=(2, 2), padding="VALID"),
    "lhs_dilated": dict(window_strides=(1, 1), padding=((2, 2), (2, 2)), lhs_dilation=(2, 2)),
    "one_by_one": dict(window_strides=(1, 1), padding="SAME", kernel=1),
    "explicit_stride_2": dict(window_strides=(2, 2), padding=((1, 1), (1, 1))),
    "grouped": dict(window_strides=(1, 1), padding="SAME", feature_group_count=2),
}


def _operands(case: dict, key=0):
    case = dict(case)
    size = case.pop("kernel", 3)
    groups = case.get("feature_group_count", 1)
    k1, k2, k3 = jax.random.split(jax.random.PRNGKey(key), 3)
    x = jax.random.normal(k1, (2, 6, 6, 8), jnp.float64)
    w = jax.random.normal(k2, (size, size, 8 // groups, 4), jnp.float64)
    return x, w, k3, case


def _pair(case: dict):
    def ours(x, w):
        return conv_general_dilated(x, w, dimension_numbers=NUMBERS, **case)

    def theirs(x, w):
        return lax.conv_general_dilated(x, w, dimension_numbers=NUMBERS, **case)

    return ours, theirs


def _close(a, b) -> None:
    for u, v in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)):
        np.testing.assert_allclose(np.asarray(u), np.asarray(v), rtol=0, atol=TOL)


@pytest.mark.parametrize("name", sorted(CASES))
def test_values_and_first_derivatives_are_lax(name):
    with jax.enable_x64(True):
        x, w, key, case = _operands(CASES[name])
        ours, theirs = _pair(case)
        _close(ours(x, w), theirs(x, w))
        out = theirs(x, w)
        v = jax.random.normal(key, out.shape, out.dtype)
        _close(jax.vjp(ours, x, w)[1](v), jax.vjp(theirs, x, w)[1](v))
        dx, dw = jax.random.normal(key, x.shape, x.dtype), jax.random.normal(key, w.shape, w.dtype)
        _close(jax.jvp(ours, (x, w), (dx, dw)), jax.jvp(theirs, (x, w), (dx, dw)))
        _close(jax.jit(jax.grad(lambda x: jnp.sum(jnp.tanh(ours(x, w)))))(x),
               jax.grad(lambda x: jnp.sum(jnp.tanh(theirs(x, w))))(x))


@pytest.mark.parametrize("name", ["same", "strided_valid", "lhs_dilated"])
def test_second_order_and_vmap_are_lax(name):
    """QC's training differentiates a JVP of the score with respect to the parameters; exact
    Jacobians and Hutchinson probes vmap the input (and per-example kernels vmap both)."""
    with jax.enable_x64(True):
        x, w, key, case = _operands(CASES[name])
        ours, theirs = _pair(case)
        dx = jax.random.normal(key, x.shape, x.dtype)

        def qc_like(conv):
            def loss(w):
                out, tangent = jax.jvp(lambda z: jnp.tanh(conv(z, w)), (x,), (dx,))
                return jnp.sum(tangent**2) + jnp.sum(out)
            return jax.grad(loss)(w)

        _close(qc_like(ours), qc_like(theirs))

        def through_input_gradient(conv):  # DLSM's classifier loss: a gradient of an x-gradient
            def loss(w):
                out, pullback = jax.vjp(lambda z: jnp.tanh(conv(z, w)), x)
                return jnp.sum(pullback(out)[0] ** 2)
            return jax.grad(loss)(w)

        def through_kernel_gradient(conv):  # second order in the kernel
            kernel_grad = jax.grad(lambda w, z: jnp.sum(jnp.tanh(conv(z, w))))
            return jax.grad(lambda w: jnp.sum(kernel_grad(w, x) ** 2), argnums=0)(w)

        _close(through_input_gradient(ours), through_input_gradient(theirs))
        _close(through_kernel_gradient(ours), through_kernel_gradient(theirs))
        _close(jax.jacfwd(lambda z: ours(z, w))(x[:1]), jax.jacfwd(lambda z: theirs(z, w))(x[:1]))
        _close(jax.jacrev(lambda z: ours(z, w))(x[:1]), jax.jacrev(lambda z: theirs(z, w))(x[:1]))
        xs = jnp.stack([x, 2 * x, -x])
        ws = jnp.stack([w, 0.5 * w, -w])
        _close(jax.vmap(ours, (2, None))(jnp.moveaxis(xs, 0, 2), w),
               jax.vmap(theirs, (0, None))(xs, w))
        _close(jax.vmap(ours)(xs, ws), jax.vmap(theirs)(xs, ws))
        _close(jax.vmap(jax.grad(lambda z, w: jnp.sum(ours(z, w) ** 2)), (0, None))(xs, w),
               jax.vmap(jax.grad(lambda z, w: jnp.sum(theirs(z, w) ** 2)), (0, None))(xs, w))


def _loop_conv_labels(conv, wrt: int) -> list[str]:
    """The kernel dimension labels of the convolutions of a compiled loop whose body takes the
    gradient of a 3×3 convolution with respect to its input (``wrt`` 0: a sampler's step with a
    gradient of the score) or its kernel (1: a train step in a rolled scan)."""
    x = jnp.ones((4, 8, 8, 16))
    w = jnp.ones((3, 3, 16, 16)) * 0.01

    def body(_, carry):
        def f(z, k):
            return jnp.sum(jnp.tanh(conv(z, k, (1, 1), "SAME", dimension_numbers=NUMBERS)))
        grad = jax.grad(f, argnums=wrt)(*carry)
        return (carry[0] - grad, carry[1]) if wrt == 0 else (carry[0], carry[1] - grad)

    text = jax.jit(lambda x, w: lax.fori_loop(0, 3, body, (x, w))).lower(x, w).compile().as_text()
    return re.findall(r"dim_labels=(\w+)", text)


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="XLA:CPU's canonicalisation only")
@pytest.mark.parametrize("wrt", [0, 1], ids=["input_gradient", "kernel_gradient"])
def test_gradients_in_a_loop_are_canonical_convolutions(wrt):
    """XLA:CPU canonicalises convolutions only in a program's entry computation: JAX's own
    gradients stay non-canonical inside the loop body (the naive emitter), these are
    ``b01f_01io->b01f`` (Eigen / XNNPACK)."""
    assert set(_loop_conv_labels(lax.conv_general_dilated, wrt)) != {"b01f_01io"}
    labels = _loop_conv_labels(conv_general_dilated, wrt)
    assert labels and set(labels) == {"b01f_01io"}, labels
