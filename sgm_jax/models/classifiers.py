"""Noise-conditional classifiers f(x, cond) -> logits for DLSM (Chao et al., ICLR 2022), and the
toy score network they are paired with.

Every network has the call of the library's score networks, ``(x, cond, train=False)``, with
``cond`` ``[B]`` or a scalar: the conditioning input the experiment's ``model.condition`` chooses
(σ_t for the toy networks, log σ_t for the ResNet).

The toy networks never mix the examples of a batch and ignore ``train`` (no dropout).

The ResNet (:class:`ConditionalResNet`) is the released DLSM classifier and has its
BatchNorm: with ``train=True`` it normalises by the batch statistics and updates the running
averages (the mutable ``batch_stats`` collection), as the official ``model.train()`` mode in
which the classifier and the CAS network are trained; with ``train=False`` (the default) it
uses the running averages, as the official ``model.eval()`` mode of guided sampling, test
accuracy and CAS testing. Only the training mode mixes examples; every evaluation and
guidance use is per example, so there ∇ₓ log softmax(f)_y is exact per example (DESIGN §3.1).

**Names: PyTorch state-dict key → Flax variable.** The ResNet's submodules are named after the
official PyTorch attribute paths, so that a key of a released state dict maps mechanically:

1. drop the ``module.`` prefix (DataParallel) and every ``classifier.`` component (the
   ``Classifier`` wrapper's and ``resnet_cond``'s attribute);
2. join each ``name.<digit>`` into ``name_<digit>`` and the remaining dots into ``/``;
3. the leaf, in collection ``params`` unless said: ``weight`` → ``kernel`` of a convolution or
   Linear (Flax layout: HWIO for convolutions, [in, out] for Linear; PyTorch's are OIHW and
   [out, in], so the converter transposes) and → ``scale`` of a BatchNorm (the 1-D weights);
   ``bias`` and ``W`` keep their names; ``running_mean`` → ``mean`` and ``running_var`` →
   ``var`` in collection ``batch_stats``; ``num_batches_tracked`` is dropped (the momentum is
   fixed, so the count is unused).

The unconditional network (``conditional=False``, the CAS classifier) has the same names without
``condition_modules_*`` and ``dense_*``.

For example ``module.classifier.condition_modules.0.W`` → params ``condition_modules_0/W``;
``condition_modules.1.weight`` → ``condition_modules_1/kernel``;
``classifier.conv1.weight`` → ``conv1/kernel``; ``classifier.bn1.running_var`` → batch_stats
``bn1/var``; ``classifier.dense_3.bias`` → ``dense_3/bias``;
``classifier.layer2.0.conv1.weight`` → ``layer2_0/conv1/kernel``;
``classifier.layer2.0.shortcut.0.weight`` → ``layer2_0/shortcut_0/kernel`` (the 1×1 conv);
``classifier.layer2.0.shortcut.1.bias`` → ``layer2_0/shortcut_1/bias`` (its BatchNorm);
``classifier.linear.weight`` → ``linear/kernel``.
"""

from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp

from sgm_jax._validation import check_choice, check_positive_int
from sgm_jax.models import layerspp
from sgm_jax.models.convolution import Conv
from sgm_jax.models.layers import broadcast_time
from sgm_jax.models.mlp import _torch_dense
from sgm_jax.models.registry import register_model

Array = jax.Array

RESNET_BLOCKS: dict[int, tuple[int, int, int, int]] = {18: (2, 2, 2, 2), 34: (3, 4, 6, 3)}
RESNET_STAGE_MULT = (1, 2, 4, 8)
RESNET_STAGE_STRIDES = (1, 2, 2, 2)

# PyTorch's default Conv2d initialisation (kaiming_uniform with a = √5): U(±1/√fan_in).
_TORCH_CONV_INIT = nn.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform")


class _ToyTrunk(nn.Module):
    """The dlsm-toy feature trunk (official ``models/simple_*_fn.py``), features ``[B, 5 nf]``.

    x-branch on the flattened x: Linear(D, 16nf) → ReLU → Linear(16nf, 8nf) → ReLU →
    Linear(8nf, 4nf); σ-branch on the raw conditioning scalar: Linear(1, 4nf) → ReLU →
    Linear(4nf, 2nf) → ReLU → Linear(2nf, nf); the output is the concatenation
    [x-features, σ-features]. PyTorch's default ``nn.Linear`` initialisation.
    """

    nf: int

    @nn.compact
    def __call__(self, x: Array, cond: Array) -> Array:
        batch = x.shape[0]
        h = x.reshape(batch, -1)
        s = broadcast_time(cond, batch).astype(h.dtype)[:, None]
        h = _relu_mlp(h, (16 * self.nf, 8 * self.nf, 4 * self.nf), "x_linear")
        s = _relu_mlp(s, (4 * self.nf, 2 * self.nf, self.nf), "sigma_linear")
        return jnp.concatenate([h, s], axis=-1)


def _relu_mlp(h: Array, widths: tuple[int, ...], prefix: str) -> Array:
    """Linear layers of ``widths`` with ReLU between them (none after the last), named
    ``{prefix}_{i}``; called inside a compact module, which owns the layers."""
    for i, width in enumerate(widths):
        if i:
            h = nn.relu(h)
        h = _torch_dense(width, h.shape[-1], f"{prefix}_{i}")(h)
    return h


@register_model("dlsm_toy_classifier")
class ToyClassifier(nn.Module):
    """The dlsm-toy noise-conditional classifier (official_code_facts §2a), layer for layer.

    Trunk (``nf`` = 16, the official ``config.model.nf``): x-branch D → 256 → ReLU → 128 → ReLU →
    64, σ-branch 1 → 64 → ReLU → 32 → ReLU → 16, concatenated (80) → Linear → ``num_classes``
    logits. PyTorch's default ``nn.Linear`` initialisation, as the official code. For D = 2 and
    two classes it has 44,818 parameters.

    Call: ``x`` ``[B, *event]`` (flattened to D), ``cond`` ``[B]`` or a scalar: the raw σ_t
    (the official networks take σ itself, not t or log σ). Returns logits ``[B, num_classes]``.
    """

    num_classes: int = 2
    nf: int = 16

    def __post_init__(self) -> None:
        check_positive_int("num_classes", self.num_classes)
        check_positive_int("nf", self.nf)
        super().__post_init__()

    @nn.compact
    def __call__(self, x: Array, cond: Array, train: bool = False) -> Array:
        del train  # no dropout
        h = _ToyTrunk(self.nf, name="trunk")(x, cond)
        return _torch_dense(self.num_classes, h.shape[-1], "out_linear")(h)


@register_model("dlsm_toy_score")
class ToyScoreNet(nn.Module):
    """The dlsm-toy noise-conditional score model (official_code_facts §2a): the trunk of
    :class:`ToyClassifier` with an output Linear(5nf, D).

    The official model uses the output as the score itself (the ``"direct"`` parameterisation);
    the library's moons configs divide it by σ_t (``"scale_by_sigma"``), since the direct output
    never learns the 1/σ-sized scores of σ ≲ 1 (docs/results/dlsm_moons.md). For D = 2 it has
    44,818 parameters.

    Call: ``x`` ``[B, *event]``, ``cond`` ``[B]`` or a scalar: the raw σ_t. Returns the score
    ``[B, *event]``.
    """

    nf: int = 16

    def __post_init__(self) -> None:
        check_positive_int("nf", self.nf)
        super().__post_init__()

    @nn.compact
    def __call__(self, x: Array, cond: Array, train: bool = False) -> Array:
        del train  # no dropout
        h = _ToyTrunk(self.nf, name="trunk")(x, cond)
        dim = math.prod(x.shape[1:])
        return _torch_dense(dim, h.shape[-1], "out_linear")(h).reshape(x.shape)


def _conv(features: int, kernel: int, stride: int, name: str) -> nn.Conv:
    """A bias-free k×k convolution with PyTorch's padding k // 2 and PyTorch's default init."""
    pad = kernel // 2
    return Conv(
        features, (kernel, kernel), strides=(stride, stride), padding=((pad, pad), (pad, pad)),
        use_bias=False, kernel_init=_TORCH_CONV_INIT, name=name,
    )


def batch_moments(x: Array) -> tuple[Array, Array]:
    """Mean and biased variance of ``x`` per channel (last axis) over all other axes, two-pass."""
    axes = tuple(range(x.ndim - 1))
    mean = jnp.mean(x, axis=axes)
    return mean, jnp.mean(jnp.square(x - mean), axis=axes)


class TorchBatchNorm(nn.Module):
    """PyTorch's ``nn.BatchNorm2d`` with its defaults (eps 1e-5, momentum 0.1, affine, running
    statistics), channels last: y = (x − μ) / √(v + ε) · scale + bias per channel.

    * ``train=True``: μ, v are the batch mean and biased variance over every axis but the last
      (:func:`batch_moments`), and the running averages (collection ``batch_stats``, which the
      caller makes mutable) are updated as PyTorch does: mean ← m·mean + (1 − m)·μ and
      var ← m·var + (1 − m)·v·n/(n − 1), n the number of values per channel (PyTorch keeps the
      *unbiased* variance; Flax's ``nn.BatchNorm`` would keep v, so its running variance would
      drift from the released networks'). The update carries no gradient (PyTorch updates its
      buffers outside autograd).
    * ``train=False``: μ, v are the running averages: an affine map per channel.

    ``momentum`` m is in Flax's convention (the weight of the old average: 0.9 is PyTorch's
    momentum 0.1). Variables as Flax's ``nn.BatchNorm``: params ``scale`` (init 1) and ``bias``
    (0), batch_stats ``mean`` (0) and ``var`` (1), float32.
    """

    momentum: float = 0.9
    epsilon: float = 1e-5

    @nn.compact
    def __call__(self, x: Array, train: bool = False) -> Array:
        channels = x.shape[-1]
        scale = self.param("scale", nn.initializers.ones, (channels,))
        bias = self.param("bias", nn.initializers.zeros, (channels,))
        running_mean = self.variable("batch_stats", "mean", jnp.zeros, (channels,), jnp.float32)
        running_var = self.variable("batch_stats", "var", jnp.ones, (channels,), jnp.float32)
        if train:
            mean, var = batch_moments(x)
            if not self.is_initializing():
                n = x.size // channels
                if n < 2:
                    raise ValueError(f"BatchNorm {'/'.join(self.path)} in training mode needs "
                                     "more than one value per channel (batch × height × width); "
                                     f"got input shape {x.shape}.")
                m = self.momentum
                stats = jax.lax.stop_gradient((mean, var * (n / (n - 1))))
                running_mean.value = m * running_mean.value + (1 - m) * stats[0]
                running_var.value = m * running_var.value + (1 - m) * stats[1]
        else:
            mean, var = running_mean.value, running_var.value
        return (x - mean) * jax.lax.rsqrt(var + self.epsilon) * scale + bias


class _BasicBlock(nn.Module):
    """kuangliu's CIFAR ``BasicBlock`` (official ``BasicBlock``):
    relu(bn2(conv2(relu(bn1(conv1(x))))) + shortcut), the shortcut shortcut_1(shortcut_0(x))
    (1×1 conv with the stride, BatchNorm) when the stride or width changes, else x."""

    features: int
    stride: int

    @nn.compact
    def __call__(self, x: Array, train: bool) -> Array:
        h = _conv(self.features, 3, self.stride, "conv1")(x)
        h = nn.relu(TorchBatchNorm(name="bn1")(h, train))
        h = TorchBatchNorm(name="bn2")(_conv(self.features, 3, 1, "conv2")(h), train)
        shortcut = x
        if self.stride != 1 or x.shape[-1] != self.features:
            shortcut = _conv(self.features, 1, self.stride, "shortcut_0")(x)
            shortcut = TorchBatchNorm(name="shortcut_1")(shortcut, train)
        return nn.relu(h + shortcut)


@register_model("resnet_cond")
class ConditionalResNet(nn.Module):
    """The DLSM CIFAR classifier (official ``models/resnet_cond.py``, official_code_facts §2b):
    ResNet-18 / ResNet-34 for 32×32 images, conditioned on the noise level; given the same
    weights it computes the official network's function in both modes.

    Body (kuangliu's pytorch-cifar ResNet, as the official ``ResNet_cond``): ``conv1`` (3×3,
    stride 1, ``width`` channels) → ``bn1`` → ReLU; four stages ``layer1`` … ``layer4`` of
    ``BasicBlock``s with ``width``·(1, 2, 4, 8) channels and strides (1, 2, 2, 2), ``depth`` 18:
    (2, 2, 2, 2) blocks, 34: (3, 4, 6, 3); bias-free convolutions with PyTorch's padding,
    BatchNorm (:class:`TorchBatchNorm`) after each, a 1×1 conv + BatchNorm shortcut where the
    shape changes; average pooling → ``linear`` → ``num_classes`` logits. ``width`` = 64 is the
    official network (the field lets tests and CPU demos use a narrow one).

    Conditioning (``conditional=True``, official ``condition_modules``): ``nf`` Gaussian
    Fourier frequencies ``W`` ~ N(0, ``fourier_scale``²) (``condition_modules_0``, a parameter
    used through ``stop_gradient``: stored and counted, never trained, as the official
    ``requires_grad=False`` parameter) give 2·``nf`` features of ``cond`` → Dense(``temb_dim``)
    (``condition_modules_1``) → swish → Dense(``temb_dim``) (``condition_modules_2``) = temb;
    after stage k, ``dense_k``(swish(temb)) (one value per channel) is added at every pixel. The
    official settings are nf = 32, scale 16, temb_dim = 4 nf = 128. With ``conditional=False``
    there is no embedding and ``cond`` is ignored: the plain ResNet of the CAS metric.

    ``train``: batch statistics and running-average updates (the caller passes
    ``mutable=["batch_stats"]``) or running statistics (module docstring). Variable names: the
    module docstring's mapping from the official state dict.

    Parameter counts (``params``, W included; as ``sum(p.numel() for p in model.parameters())``
    of the official network, 32×32×3 inputs, width 64): ResNet-18 with 10 classes 11,322,666
    conditional (nf 32, temb 128) and 11,173,962 unconditional (kuangliu's ResNet-18); ResNet-34
    with 100 classes 21,476,996 conditional and 21,328,292 unconditional. The running
    statistics add two values per BatchNorm channel (``batch_stats``, not parameters).

    Differences from the official network:

    * ``cond`` is the embedded scalar itself: the caller passes log σ_t
      (``model.condition = "log_sigma"``), where the official network takes σ and applies the
      log inside; the function of σ is the same.
    * Average pooling is over the whole final map (the official ``avg_pool2d(out, 4)`` on the
      4×4 map of a 32×32 input is the same), so other image sizes also work.
    * Batch statistics are over the whole (global) batch; the official ``DataParallel`` on
      several GPUs normalises each GPU's share on its own (on one GPU the two agree).

    Initialisation as the official code: convolutions, ``dense_k`` and ``linear`` as PyTorch's
    defaults, ``condition_modules_1`` / ``_2`` as score_sde's ``default_init`` with zero bias,
    BatchNorm scale 1 and bias 0 with running mean 0 and variance 1.

    Call: ``x`` ``[B, H, W, C]`` (channels last), ``cond`` ``[B]`` or a scalar, ``train``.
    Returns logits ``[B, num_classes]``.
    """

    num_classes: int = 10
    depth: int = 18
    nf: int = 32
    fourier_scale: float = 16.0
    temb_dim: int = 128
    width: int = 64
    conditional: bool = True

    def __post_init__(self) -> None:
        check_positive_int("num_classes", self.num_classes)
        check_choice("depth", self.depth, tuple(RESNET_BLOCKS))
        check_positive_int("nf", self.nf)
        check_positive_int("temb_dim", self.temb_dim)
        if not self.fourier_scale > 0:
            raise ValueError(f"fourier_scale must be > 0; got {self.fourier_scale!r}.")
        check_positive_int("width", self.width)
        super().__post_init__()

    def _embed(self, cond: Array, batch: int, dtype: jnp.dtype) -> Array:
        cond = broadcast_time(cond, batch).astype(dtype)
        temb = layerspp.GaussianFourierProjection(self.nf, self.fourier_scale,
                                                  name="condition_modules_0")(cond)
        dense = dict(kernel_init=layerspp.default_init(), bias_init=nn.initializers.zeros)
        temb = nn.Dense(self.temb_dim, name="condition_modules_1", **dense)(temb)
        return nn.Dense(self.temb_dim, name="condition_modules_2", **dense)(nn.swish(temb))

    @nn.compact
    def __call__(self, x: Array, cond: Array, train: bool = False) -> Array:
        if x.ndim != 4:
            raise ValueError(f"x has shape {x.shape}; expected [B, H, W, C] (channels last)")
        temb = self._embed(cond, x.shape[0], x.dtype) if self.conditional else None

        h = nn.relu(TorchBatchNorm(name="bn1")(_conv(self.width, 3, 1, "conv1")(x), train))
        blocks = RESNET_BLOCKS[self.depth]
        for stage, (mult, stride, count) in enumerate(
            zip(RESNET_STAGE_MULT, RESNET_STAGE_STRIDES, blocks), start=1
        ):
            features = self.width * mult
            for i in range(count):
                block = _BasicBlock(features, stride if i == 0 else 1, name=f"layer{stage}_{i}")
                h = block(h, train)
            if temb is not None:
                bias = _torch_dense(features, self.temb_dim, f"dense_{stage}")(nn.swish(temb))
                h = h + bias[:, None, None, :]
        h = jnp.mean(h, axis=(1, 2))
        return _torch_dense(self.num_classes, h.shape[-1], "linear")(h)
