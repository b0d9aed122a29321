"""Noise-conditional classifiers f(x, cond) -> logits for DLSM (Chao et al., ICLR 2022), and the
toy score network they are paired with.

Every network has the call of the library's score networks, ``(x, cond, train=False)``, with
``cond`` ``[B]`` or a scalar: the conditioning input the experiment's ``model.condition`` chooses
(σ_t for the toy networks, log σ_t for the ResNet). Nothing mixes examples of a batch (no batch
statistics: GroupNorm acts on one example), so per-example gradients ∇_x log softmax(f)_y are
exact (DESIGN §3.1). There is no dropout; ``train`` is accepted and unused.
"""

from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp

from sgm_jax._validation import check_choice, check_positive_int
from sgm_jax.models import layerspp
from sgm_jax.models.layers import broadcast_time, gaussian_fourier_embedding
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
    return nn.Conv(
        features, (kernel, kernel), strides=(stride, stride), padding=((pad, pad), (pad, pad)),
        use_bias=False, kernel_init=_TORCH_CONV_INIT, name=name,
    )


class _BasicBlock(nn.Module):
    """kuangliu's CIFAR ``BasicBlock`` with GroupNorm: relu(GN(conv3(relu(GN(conv3_s(x))))) + sc),
    the shortcut sc = GN(conv1_s(x)) when the stride or width changes, else x."""

    features: int
    stride: int

    @nn.compact
    def __call__(self, x: Array) -> Array:
        h = _conv(self.features, 3, self.stride, "conv1")(x)
        h = nn.relu(layerspp.group_norm(h))
        h = layerspp.group_norm(_conv(self.features, 3, 1, "conv2")(h))
        shortcut = x
        if self.stride != 1 or x.shape[-1] != self.features:
            shortcut = layerspp.group_norm(_conv(self.features, 1, self.stride, "shortcut")(x))
        return nn.relu(h + shortcut)


@register_model("resnet_cond")
class ConditionalResNet(nn.Module):
    """The DLSM CIFAR classifier (official ``models/resnet_cond.py``, official_code_facts §2b):
    ResNet-18 / ResNet-34 for 32×32 images, conditioned on the noise level.

    Body (kuangliu's pytorch-cifar ResNet, as the official one): a 3×3 stride-1 stem conv with
    ``width`` channels → GN → ReLU; four stages of ``BasicBlock``s with ``width``·(1, 2, 4, 8)
    channels and strides (1, 2, 2, 2), ``depth`` 18: (2, 2, 2, 2) blocks, 34: (3, 4, 6, 3);
    bias-free convolutions with PyTorch's padding, a 1×1 conv shortcut where the shape changes;
    global average pooling → Linear → ``num_classes`` logits. ``width`` = 64 is the official
    network (the field lets tests and CPU demos use a narrow one).

    Conditioning (``conditional=True``): 2·``nf`` Gaussian Fourier features of ``cond``
    (scale ``fourier_scale``) → Dense(``temb_dim``) → swish → Dense(``temb_dim``) = temb; after
    stage k, Dense_k(swish(temb)) (one value per channel) is added at every pixel. The official
    defaults are nf = 32, scale 16, temb_dim = 4 nf = 128. With ``conditional=False`` there is no
    embedding and ``cond`` is ignored: the plain classifier of the CAS metric.

    Differences from the official network:

    * GroupNorm instead of BatchNorm, so examples never interact (DESIGN §3.1) and train and
      evaluation compute the same function. Groups: min(C // 4, 32) with eps 1e-6 — the rule of
      NCSN++ (``layerspp.group_norm``), which gives groups of 4 channels in narrow layers and 32
      groups (as GroupNorm's authors recommend) from 128 channels on; with ``width`` = 64 the
      stages have 16, 32, 32, 32 groups. GN's scale and bias replace BN's, so the parameter
      count is the official one (11,173,962 for ResNet-18, 10 classes, unconditional).
    * ``cond`` is the embedded scalar itself (the caller passes log σ_t, ``model.condition =
      "log_sigma"``; the official network takes σ and applies the log inside), and the Fourier
      frequencies are a fixed constant (``gaussian_fourier_embedding``), not a stored parameter
      (the conditional ResNet-18 has 11,322,634 parameters; the official one also stores the 32
      frequencies: 11,322,666).
    * Average pooling is over the whole final map (the official ``avg_pool2d(out, 4)`` on the
      4×4 map of a 32×32 input is the same), so other image sizes also work.

    Initialisation: convolutions, the per-stage Dense_k and the output Linear as PyTorch's
    defaults, the two embedding Dense layers as score_sde's ``default_init`` with zero bias, as
    the official code.

    Call: ``x`` ``[B, H, W, C]`` (channels last), ``cond`` ``[B]`` or a scalar. Returns logits
    ``[B, num_classes]``.
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
        for mult in RESNET_STAGE_MULT:
            channels = self.width * mult
            groups = min(channels // 4, 32)
            if groups < 1 or channels % groups:
                raise ValueError(
                    f"width={self.width} gives a stage of {channels} channels that "
                    f"min(C // 4, 32) = {groups} GroupNorm groups do not divide; use a multiple "
                    "of 4 below 32 or a multiple of 32 (e.g. 8, 16, 32, 64)"
                )
        super().__post_init__()

    def _embed(self, cond: Array, batch: int, dtype: jnp.dtype) -> Array:
        cond = broadcast_time(cond, batch)
        temb = gaussian_fourier_embedding(cond, self.nf, self.fourier_scale)
        dense = dict(kernel_init=layerspp.default_init(), bias_init=nn.initializers.zeros)
        temb = nn.Dense(self.temb_dim, name="temb_dense_0", **dense)(temb.astype(dtype))
        return nn.Dense(self.temb_dim, name="temb_dense_1", **dense)(nn.swish(temb))

    @nn.compact
    def __call__(self, x: Array, cond: Array, train: bool = False) -> Array:
        del train  # no dropout
        if x.ndim != 4:
            raise ValueError(f"x has shape {x.shape}; expected [B, H, W, C] (channels last)")
        temb = self._embed(cond, x.shape[0], x.dtype) if self.conditional else None

        h = nn.relu(layerspp.group_norm(_conv(self.width, 3, 1, "stem")(x)))
        blocks = RESNET_BLOCKS[self.depth]
        for stage, (mult, stride, count) in enumerate(
            zip(RESNET_STAGE_MULT, RESNET_STAGE_STRIDES, blocks)
        ):
            features = self.width * mult
            for i in range(count):
                name = f"stage{stage}_block{i}"
                h = _BasicBlock(features, stride if i == 0 else 1, name=name)(h)
            if temb is not None:
                bias = _torch_dense(features, self.temb_dim, f"temb_proj_{stage}")(nn.swish(temb))
                h = h + bias[:, None, None, :]
        h = jnp.mean(h, axis=(1, 2))
        return _torch_dense(self.num_classes, h.shape[-1], "linear")(h)
