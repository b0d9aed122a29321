"""``lax.conv_general_dilated`` whose gradients XLA:CPU runs on its fast convolution kernels
inside loops too.

JAX differentiates a convolution by two more convolutions whose operands it reinterprets through
the dimension numbers instead of moving them in memory: the input gradient reads the reversed
kernel with its input and output features exchanged (an ``HWIO`` kernel read as ``HWOI``), the
kernel gradient reads the input with examples and features exchanged and the cotangent as its
kernel. XLA:CPU runs only canonical convolutions (input ``[batch, spatial..., features]``, kernel
``[spatial..., in, out]``) on its Eigen / XNNPACK kernels, and its canonicalisation pass, which
transposes the operands in memory, visits only a program's entry computation: gradient
convolutions inside a ``while`` body or a ``cond`` branch (a sampler's loop with a gradient of
the score model — DPS, guidance, energy-gradient models — or several train steps in one rolled
``lax.scan``) fall to XLA's naive loop emitter, 18–32× slower (jax-ml/jax#12868).

:func:`conv_general_dilated` is ``lax.conv_general_dilated`` (same arguments and values, forward,
JVP, VJP, higher orders and ``vmap``) whose transposes, on a CPU, move the operands in memory
themselves and call canonical convolutions; an optimisation barrier keeps XLA from folding the
moves back into the dimension numbers. ``lax.platform_dependent`` chooses at lowering, so
accelerators compile JAX's own gradients. Grouped convolutions (``feature_group_count`` or
``batch_group_count`` > 1) keep JAX's gradients everywhere.
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
        padding = lax.padtype_to_pads(_dilated(in_shape, lhs_dilation or (1,) * spatial),
                                      _dilated(window, rhs_dilation or (1,) * spatial),
                                      window_strides, padding)
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
        terms.append(conv_p.bind(lhs, rhs_dot, **params))
    return out, functools.reduce(jnp.add, terms)


def _dilated(sizes, dilation) -> list[int]:
    """The extents of ``sizes`` with ``dilation`` − 1 zeros between neighbours."""
    return [(n - 1) * d + 1 if n else 0 for n, d in zip(sizes, dilation)]


# The gradient rules take (cotangent, the known operand, the aval of the unknown one, params).


def _jax_input_gradient(cotangent, rhs, lhs, params):
    (lhs_bar,) = jax.linear_transpose(lambda x: _lax_conv(x, rhs, **params), lhs)(cotangent)
    return lhs_bar


def _jax_kernel_gradient(cotangent, lhs, rhs, params):
    (rhs_bar,) = jax.linear_transpose(lambda r: _lax_conv(lhs, r, **params), rhs)(cotangent)
    return rhs_bar


def _canonical_input_gradient(cotangent, rhs, lhs, params):
    """JAX's input gradient of a kernel whose output and input feature axes are exchanged in
    memory (the dimension numbers read it as the same convolution): its own convolution then
    reads the kernel as ``[spatial..., in, out]``. An optimisation barrier keeps XLA from folding
    the exchange back into the dimension numbers."""
    lhs_spec, rhs_spec, out_spec = params["dimension_numbers"]
    out_axis, in_axis = rhs_spec[0], rhs_spec[1]
    exchanged = lax.optimization_barrier(jnp.swapaxes(rhs, out_axis, in_axis))
    numbers = lax.ConvDimensionNumbers(lhs_spec, (in_axis, out_axis, *rhs_spec[2:]), out_spec)
    return _jax_input_gradient(cotangent, exchanged, lhs, {**params, "dimension_numbers": numbers})


def _canonical_kernel_gradient(cotangent, lhs, rhs, params):
    """The kernel gradient as one canonical convolution: the input's features as its batch and
    the input's examples as its features (``[C_in, spatial..., B]``), the cotangent as its kernel
    (``[spatial..., B, C_out]``), strides and kernel dilation exchanged as in JAX's rule; the
    result ``[C_in, spatial..., C_out]`` is laid out as the kernel."""
    lhs_spec, rhs_spec, out_spec = params["dimension_numbers"]
    n = len(lhs_spec) - 2
    lhs_t = jnp.transpose(lhs, (lhs_spec[1], *lhs_spec[2:], lhs_spec[0]))
    cotangent_t = jnp.transpose(cotangent, (*out_spec[2:], out_spec[0], out_spec[1]))
    lhs_t, cotangent_t = lax.optimization_barrier((lhs_t, cotangent_t))
    in_size, window = lhs_t.shape[1:-1], [rhs.shape[d] for d in rhs_spec[2:]]
    dilated_in = _dilated(in_size, params["lhs_dilation"])
    dilated_window = _dilated(window, params["rhs_dilation"])
    dilated_out = _dilated(cotangent_t.shape[:-2], params["window_strides"])
    padding = [(lo, o - i + k - lo - 1) for (lo, _), o, i, k
               in zip(params["padding"], dilated_out, dilated_in, dilated_window)]
    canonical = lax.ConvDimensionNumbers((0, n + 1, *range(1, n + 1)),
                                         (n + 1, n, *range(n)), (0, n + 1, *range(1, n + 1)))
    grad = lax.conv_general_dilated(
        lhs_t, cotangent_t, window_strides=params["rhs_dilation"], padding=padding,
        lhs_dilation=params["lhs_dilation"], rhs_dilation=params["window_strides"],
        dimension_numbers=canonical, precision=params["precision"],
        preferred_element_type=params["preferred_element_type"])
    order = [0] * (n + 2)  # grad's axes (in, spatial..., out) -> the kernel's layout
    order[rhs_spec[1]], order[rhs_spec[0]] = 0, n + 1
    for k, axis in enumerate(rhs_spec[2:]):
        order[axis] = k + 1
    return jnp.transpose(grad, order).astype(rhs.dtype)


def _transpose(cotangent, lhs, rhs, **params):
    """Both gradients by JAX's rules, except on a CPU for ungrouped convolutions, where they are
    computed as canonical convolutions (module docstring); ``lax.platform_dependent`` picks at
    lowering, so accelerators compile JAX's own."""
    cotangent = ad.instantiate_zeros(cotangent)
    if ad.is_undefined_primal(lhs):
        known, aval, rules = rhs, lhs.aval, (_jax_input_gradient, _canonical_input_gradient)
    else:
        known, aval, rules = lhs, rhs.aval, (_jax_kernel_gradient, _canonical_kernel_gradient)
    jax_rule, canonical = (lambda c, k, rule=rule: rule(c, k, aval, params) for rule in rules)
    if params["feature_group_count"] != 1 or params["batch_group_count"] != 1:
        bar = jax_rule(cotangent, known)
    else:
        bar = lax.platform_dependent(cotangent, known, cpu=canonical, default=jax_rule)
    return [bar, None] if ad.is_undefined_primal(lhs) else [None, bar]


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
