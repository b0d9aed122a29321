"""``lax.conv_general_dilated`` whose input gradient XLA:CPU runs on its fast convolution kernels
inside loops too.

JAX differentiates a convolution with respect to its input by a convolution of the cotangent
with the spatially reversed kernel, its input and output features exchanged by the dimension
numbers rather than in memory (for an ``HWIO`` kernel the gradient's kernel reads as ``HWOI``).
XLA:CPU runs only canonical convolutions (kernel ``[spatial..., in, out]``) on its Eigen / XNNPACK
kernels, and its canonicalisation pass, which transposes such a kernel in memory, visits only a
program's entry computation: the input-gradient convolutions inside a ``while`` body or a ``cond``
branch (a sampler's loop with a gradient of the score model, DPS, guidance, energy-gradient
models, several train steps per dispatch) fall to XLA's naive loop emitter, 10–20× slower
(jax-ml/jax#12868). :func:`conv_general_dilated` is ``lax.conv_general_dilated`` with one change:
its transpose with respect to the input exchanges the kernel's two feature axes in memory first,
so the gradient's convolution is canonical wherever it runs. The values are those of
``lax.conv_general_dilated`` (forward, JVP, VJP, second order, ``vmap``); on accelerators the
exchange is one copy of the kernel per gradient.

Grouped convolutions (``feature_group_count`` or ``batch_group_count`` > 1) keep JAX's own
transpose: their kernel's output axis holds the groups, so exchanging the axes would not give the
same convolution.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax
from jax.extend.core import Primitive
from jax.interpreters import ad, batching, mlir

Array = jax.Array

conv_p = Primitive("sgm_jax_conv_general_dilated")


def conv_general_dilated(lhs: Array, rhs: Array, window_strides: Sequence[int],
                         padding: str | Sequence[tuple[int, int]],
                         lhs_dilation: Sequence[int] | None = None,
                         rhs_dilation: Sequence[int] | None = None,
                         dimension_numbers=None, feature_group_count: int = 1,
                         batch_group_count: int = 1, precision=None,
                         preferred_element_type=None) -> Array:
    """``lax.conv_general_dilated`` with the same arguments and values, differentiated into
    canonical convolutions (module docstring)."""
    spatial = lhs.ndim - 2
    dimension_numbers = lax.conv_dimension_numbers(lhs.shape, rhs.shape, dimension_numbers)
    if isinstance(padding, str):
        in_shape = [lhs.shape[d] for d in dimension_numbers.lhs_spec[2:]]
        window = [rhs.shape[d] for d in dimension_numbers.rhs_spec[2:]]
        dilated_in = [(n - 1) * d + 1 for n, d in zip(in_shape, lhs_dilation or (1,) * spatial)]
        dilated_window = [(k - 1) * d + 1
                          for k, d in zip(window, rhs_dilation or (1,) * spatial)]
        padding = lax.padtype_to_pads(dilated_in, dilated_window, window_strides, padding)
    return conv_p.bind(
        lhs, rhs, window_strides=tuple(window_strides),
        padding=tuple(tuple(p) for p in padding),
        lhs_dilation=tuple(lhs_dilation or (1,) * spatial),
        rhs_dilation=tuple(rhs_dilation or (1,) * spatial),
        dimension_numbers=dimension_numbers, feature_group_count=feature_group_count,
        batch_group_count=batch_group_count, precision=precision,
        preferred_element_type=preferred_element_type)


def _lax_conv(lhs: Array, rhs: Array, **params) -> Array:
    return lax.conv_general_dilated(lhs, rhs, **params)


def _abstract_eval(lhs, rhs, **params):
    out = jax.eval_shape(functools.partial(_lax_conv, **params), lhs, rhs)
    return jax.core.ShapedArray(out.shape, out.dtype)


def _jvp(primals, tangents, **params):
    lhs, rhs = primals
    lhs_dot, rhs_dot = tangents
    out = conv_p.bind(lhs, rhs, **params)
    terms = []
    if type(lhs_dot) is not ad.Zero:
        terms.append(conv_p.bind(lhs_dot, rhs, **params))
    if type(rhs_dot) is not ad.Zero:
        terms.append(_lax_conv(lhs, rhs_dot, **params))  # JAX's own transpose: the kernel gradient
    return out, functools.reduce(jnp.add, terms)


def _exchanged_features(rhs: Array, params: dict) -> tuple[Array, dict]:
    """The kernel with its output and input feature axes exchanged in memory, and the dimension
    numbers that read it as the same convolution. An optimisation barrier keeps XLA from folding
    the transpose back into the dimension numbers."""
    lhs_spec, rhs_spec, out_spec = params["dimension_numbers"]
    out_axis, in_axis = rhs_spec[0], rhs_spec[1]
    exchanged = lax.optimization_barrier(jnp.swapaxes(rhs, out_axis, in_axis))
    numbers = lax.ConvDimensionNumbers(lhs_spec, (in_axis, out_axis, *rhs_spec[2:]), out_spec)
    return exchanged, {**params, "dimension_numbers": numbers}


def _transpose(cotangent, lhs, rhs, **params):
    cotangent = ad.instantiate_zeros(cotangent)
    if ad.is_undefined_primal(rhs):  # linear in the kernel (not produced by _jvp): JAX's rule
        (rhs_bar,) = jax.linear_transpose(lambda r: _lax_conv(lhs, r, **params), rhs.aval)(
            cotangent)
        return [None, rhs_bar]
    kernel, kernel_params = rhs, params
    if params["feature_group_count"] == 1 and params["batch_group_count"] == 1:
        kernel, kernel_params = _exchanged_features(rhs, params)
    (lhs_bar,) = jax.linear_transpose(lambda x: _lax_conv(x, kernel, **kernel_params), lhs.aval)(
        cotangent)
    return [lhs_bar, None]


def _merge_into_batch(x: Array, mapped: int, batch: int) -> Array:
    """Fold the vmapped axis ``mapped`` of ``x`` into its batch axis ``batch`` (of the unmapped
    array), mapped-major."""
    x = jnp.moveaxis(x, mapped, 0)
    x = jnp.moveaxis(x, batch + 1, 1)
    x = x.reshape((x.shape[0] * x.shape[1], *x.shape[2:]))
    return jnp.moveaxis(x, 0, batch)


def _batch(args, dims, **params):
    lhs, rhs = args
    lhs_dim, rhs_dim = dims
    if rhs_dim is not None or params["batch_group_count"] != 1:
        return jax.vmap(functools.partial(_lax_conv, **params), in_axes=dims)(lhs, rhs), 0
    lhs_spec, _, out_spec = params["dimension_numbers"]
    size = lhs.shape[lhs_dim]
    out = conv_p.bind(_merge_into_batch(lhs, lhs_dim, lhs_spec[0]), rhs, **params)
    out = jnp.moveaxis(out, out_spec[0], 0)
    out = out.reshape((size, out.shape[0] // size, *out.shape[1:]))
    return jnp.moveaxis(out, 1, out_spec[0] + 1), 0


conv_p.def_impl(_lax_conv)
conv_p.def_abstract_eval(_abstract_eval)
ad.primitive_jvps[conv_p] = _jvp
ad.primitive_transposes[conv_p] = _transpose
batching.primitive_batchers[conv_p] = _batch
mlir.register_lowering(conv_p, mlir.lower_fun(_lax_conv, multiple_results=False))


#: ``flax.linen.Conv`` computed by :func:`conv_general_dilated` (same fields and parameters).
Conv = functools.partial(nn.Conv, conv_general_dilated=conv_general_dilated)
