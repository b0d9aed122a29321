"""The train step's memory and precision options: ``training.compute_dtype`` (bfloat16
activations and convolutions, float32 parameters, optimiser state, EMA and loss),
``training.remat`` (activation checkpointing of the residual blocks) and the donation of the
train state.

Every network here is the digits configs' NCSN++ at a tiny width (``_config``) on one CPU
device; the 200-step digits runs are ``slow``.
"""

import os
import sys

import jax
import jax.extend
import jax.numpy as jnp
import numpy as np
import optax
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from configs.toy.checkerboard_u import get_config as checkerboard_config  # noqa: E402
from configs.ve.digits_qc import get_config as digits_qc_config  # noqa: E402
from configs.ve.digits_u import get_config as digits_u_config  # noqa: E402
from sgm_jax import parallel, train  # noqa: E402
from sgm_jax.checkpoints import init_state  # noqa: E402
from sgm_jax.experiment import build_experiment  # noqa: E402
from sgm_jax.models.convolution import conv_p  # noqa: E402
from sgm_jax.models.layerspp import REMAT_POLICIES  # noqa: E402

#: bfloat16 keeps 8 significant bits (7 stored and the implicit one): rounding a value to
#: bfloat16 changes it by at most the unit roundoff u = 2^-8 relative (float32: 2^-24).
BF16_UNIT_ROUNDOFF = 2.0**-8
#: float32's unit roundoff: what separates two orderings of the same float32 arithmetic.
F32_UNIT_ROUNDOFF = 2.0**-24
CONFIGS = {"u": digits_u_config, "qc": digits_qc_config}
CONVOLUTIONS = ("conv_general_dilated", conv_p.name)  # lax's and the networks' own


def _config(name="u", **training):
    """The digits config at a tiny width (nf 8, one resolution with attention), batch 4, every
    layer initialised at full scale (``init_scale`` 1: the default near-zero last layers would
    make the output, and every gradient but theirs, vanish), with ``training`` overrides."""
    config = CONFIGS[name]()
    config.model.nf = 8
    config.model.ch_mult = (1,)
    config.model.attn_resolutions = (16,)
    config.model.init_scale = 1.0
    config.training.batch_size = 4
    config.training.update(training)
    return config


def _build(config):
    return build_experiment(config, num_devices=1)


def _mesh():
    return parallel.data_mesh(jax.devices()[:1])


def _loss_and_grad(experiment, params, batch):
    """The training loss of ``params`` on ``batch`` (dropout on) and its gradient, with fixed
    keys, as the train step computes them."""
    key = jax.random.PRNGKey(3)

    def loss(p):
        return experiment.batch_loss(p, batch, key, dropout_key=jax.random.fold_in(key, 1))[0]

    return jax.jit(jax.value_and_grad(loss))(params)


def _sequential_layers(experiment, params, batch) -> int:
    """L: the convolutions and dense layers of one forward pass of the network, every one of
    them (skips, embeddings) counted, so at least the number of layers along any path."""
    x, cond = batch["x"], jnp.ones((batch["x"].shape[0],))
    jaxpr = jax.make_jaxpr(lambda p: experiment.network.apply(p, x, cond))(params)
    names = []

    def walk(jaxpr):
        for eqn in jaxpr.eqns:
            names.append(eqn.primitive.name)
            for sub in jax.extend.core.jaxprs_in_params(eqn.params):
                walk(sub)

    walk(jaxpr.jaxpr)
    return sum(name in (*CONVOLUTIONS, "dot_general") for name in names)


@pytest.mark.parametrize("name", ["u", pytest.param("qc", marks=pytest.mark.slow)])
def test_bfloat16_loss_and_gradient_match_float32(name):
    """A bfloat16 step's loss and gradient against the float32 step's, same parameters, batch
    and keys.

    The bound: each of the L layers (convolutions and dense layers, :func:`_sequential_layers`)
    rounds its inputs and output to bfloat16, a relative perturbation of at most u = 2^-8 each;
    the GroupNorm after every convolution restores unit scale, so a perturbation is carried to
    the output with a gain of order one, and to first order the output's relative error is at
    most L·u. The loss is a float32 reduction of the output (relative error ≤ L·u up to the
    cancellation in s + z/σ, which the U and QC losses at these weights do not have: both are
    of the size of ‖z‖²); its gradient runs the L layers backwards as well, 2L roundings in all:
    relative error ≤ 2L·u (in the global norm). Measured for U (L = 39): 1.1e-3 for the loss and
    2.0e-2 for the gradient, against bounds of 0.15 and 0.30.
    """
    f32 = _build(_config(name))
    bf16 = _build(_config(name, compute_dtype="bfloat16"))
    params = f32.init_params(jax.random.PRNGKey(0))
    batch = {"x": jnp.asarray(f32.data.train_batch(0)["x"])}
    loss32, grad32 = _loss_and_grad(f32, params, batch)
    loss16, grad16 = _loss_and_grad(bf16, params, batch)
    assert loss16.dtype == jnp.float32
    layers = _sequential_layers(f32, params, batch)
    loss_error = abs(float(loss16) - float(loss32)) / abs(float(loss32))
    grad_error = float(optax.tree.norm(jax.tree.map(jnp.subtract, grad16, grad32))
                       / optax.tree.norm(grad32))
    assert loss_error <= layers * BF16_UNIT_ROUNDOFF, (loss_error, layers)
    assert grad_error <= 2 * layers * BF16_UNIT_ROUNDOFF, (grad_error, layers)
    # ... and the rounding happened: the two steps are not the same computation
    assert grad_error > 2 * layers * F32_UNIT_ROUNDOFF


def test_bfloat16_runs_convolutions_in_bfloat16_and_norms_in_float32():
    """Every convolution of the bfloat16 network takes bfloat16 operands; the GroupNorm
    statistics (the means over pixels and channels) are float32 reductions; the output is
    float32."""
    experiment = _build(_config(compute_dtype="bfloat16"))
    params = experiment.init_params(jax.random.PRNGKey(0))
    x = jnp.zeros((2, *experiment.event_shape))
    network = experiment.train_network
    jaxpr = jax.make_jaxpr(lambda p: network.apply(p, x, jnp.ones((2,))))(params)
    convs = [e for e in jaxpr.jaxpr.eqns if e.primitive.name in CONVOLUTIONS]
    assert convs and all(v.aval.dtype == jnp.bfloat16 for e in convs for v in e.invars)
    means = [e for e in jaxpr.jaxpr.eqns if e.primitive.name == "reduce_sum"
             and e.invars[0].aval.ndim == 5]  # GroupNorm's [B, H, W, groups, C / groups]
    assert means and all(e.outvars[0].aval.dtype == jnp.float32 for e in means)
    assert jaxpr.out_avals[0].dtype == jnp.float32


@pytest.mark.slow
def test_bfloat16_step_keeps_the_state_float32():
    """After a bfloat16 train step the parameters, Adam's moments and the EMA are float32, as
    before, and the metrics (the loss and the QC term) are float32."""
    config = _config("qc", compute_dtype="bfloat16")
    config.optim.warmup = 0  # the warm-up's first learning rate is 0
    experiment = _build(config)
    state = init_state(experiment)
    update = jax.jit(train.make_update_fn(experiment))
    new, metrics = update(state, {"x": jnp.asarray(experiment.data.train_batch(0)["x"])})
    for tree in (new.params, new.opt_state, new.ema_params):
        floats = [leaf for leaf in jax.tree.leaves(tree) if jnp.issubdtype(leaf.dtype, jnp.floating)]
        assert floats and all(leaf.dtype == jnp.float32 for leaf in floats)
    assert metrics["loss"].dtype == metrics["qc"].dtype == jnp.float32
    assert not jax.tree.all(jax.tree.map(lambda a, b: bool(jnp.all(a == b)),
                                         new.params, state.params))


@pytest.mark.parametrize("name, remat", [
    *(("u", policy) for policy in REMAT_POLICIES if policy != "none"),
    pytest.param("qc", "nothing_saveable", marks=pytest.mark.slow)])
def test_remat_keeps_outputs_and_gradients(name, remat):
    """Checkpointing recomputes the residual blocks' forward pass in the backward pass: the
    same arithmetic, the same parameter tree, and the same loss and gradient (to float32
    rounding: XLA may fuse the recomputed operations differently, so the bound is a few
    roundings, 16 u, relative)."""
    plain = _build(_config(name))
    checkpointed = _build(_config(name, remat=remat))
    params = plain.init_params(jax.random.PRNGKey(0))
    assert (jax.tree.structure(checkpointed.init_params(jax.random.PRNGKey(0)))
            == jax.tree.structure(params))
    batch = {"x": jnp.asarray(plain.data.train_batch(0)["x"])}
    loss, grad = _loss_and_grad(plain, params, batch)
    loss_r, grad_r = _loss_and_grad(checkpointed, params, batch)
    tolerance = 16 * F32_UNIT_ROUNDOFF
    np.testing.assert_allclose(loss_r, loss, rtol=tolerance)
    assert float(optax.tree.norm(jax.tree.map(jnp.subtract, grad_r, grad))
                 / optax.tree.norm(grad)) <= tolerance


def _memory(experiment, donate=True):
    """XLA's memory analysis of the experiment's compiled train step on one device, and the
    bytes its backward pass keeps from the forward pass (``benchmarks/memory.py``)."""
    from benchmarks.memory import analyse

    return analyse(experiment, _mesh(), donate)


def test_remat_and_bfloat16_shrink_what_the_backward_pass_keeps():
    """At batch 64: checkpointing keeps fewer forward values for the backward pass
    (nothing_saveable fewest), and bfloat16 activations fewer bytes of them. (XLA:CPU's own
    buffer assignment does not show the saving: benchmarks/memory.py.)"""
    from benchmarks.memory import residual_mib
    from benchmarks.timing import abstract_step_arguments

    def residuals(dtype, remat):
        experiment = _build(_config(batch_size=64, compute_dtype=dtype, remat=remat))
        return residual_mib(experiment, abstract_step_arguments(experiment))

    residuals = {(dtype, remat): residuals(dtype, remat) for dtype in ("float32", "bfloat16")
                 for remat in ("none", "conv_saveable", "nothing_saveable")}
    for dtype in ("float32", "bfloat16"):
        assert (residuals[dtype, "nothing_saveable"] < residuals[dtype, "conv_saveable"]
                < residuals[dtype, "none"])
    assert residuals["bfloat16", "none"] < residuals["float32", "none"]


@pytest.mark.slow
def test_donation_writes_the_state_in_place():
    """The compiled train step's outputs alias the whole donated state; compiled without
    donation they alias nothing and the step needs the state's bytes more."""
    experiment = _build(_config())
    state = jax.eval_shape(lambda: init_state(experiment))
    state_mib = sum(leaf.size * leaf.dtype.itemsize for leaf in jax.tree.leaves(state)) / 2**20
    donated, kept = _memory(experiment), _memory(experiment, donate=False)
    assert donated["aliased"] >= state_mib * (1 - 1e-6) and kept["aliased"] == 0
    assert kept["footprint"] > donated["footprint"]


def test_compute_dtype_and_remat_are_validated():
    with pytest.raises(ValueError, match=r"training.compute_dtype must be one of "
                                         r"\('float32', 'bfloat16'\); got 'float16'"):
        _build(_config(compute_dtype="float16"))
    with pytest.raises(ValueError, match=r"training.remat must be one of .*got 'dots'"):
        _build(_config(remat="dots"))
    toy = checkerboard_config()
    toy.training.compute_dtype = "bfloat16"
    with pytest.raises(ValueError, match=r"training.compute_dtype='bfloat16' needs a network "
                                         r"with a 'dtype' field \(ddpm, ncsnpp\)"):
        _build(toy)
    config = _config()
    config.model.dtype = "bfloat16"
    with pytest.raises(ValueError, match="model.dtype is not allowed: the network's dtype "
                                         "field is set from training.compute_dtype"):
        _build(config)


def test_defaults_leave_the_network_unchanged():
    """float32 and "none" build the train step on the very network evaluation uses."""
    experiment = _build(_config())
    assert experiment.train_network is experiment.network
    assert experiment.network.dtype is None and experiment.network.remat == "none"


def _digits_losses(compute_dtype, steps):
    """The per-step training losses of ``steps`` steps of the digits U config (its network,
    batch 32, warm-up and learning rate) in ``compute_dtype``, through the library's train
    step, from the same initial state and on the same batches."""
    config = digits_u_config()
    config.training.compute_dtype = compute_dtype
    experiment = build_experiment(config, num_devices=1)
    mesh = _mesh()
    step = train.TrainStep(experiment, mesh, 1)
    state = jax.device_put(init_state(experiment), parallel.replicated_sharding(mesh))
    losses = []
    for k in range(steps):
        batch = parallel.shard_batch(experiment.data.train_batch(k), mesh)
        state, metrics = step(k, state, batch)
        losses.append(float(metrics["loss"]))
    return np.asarray(losses)


@pytest.mark.slow
def test_bfloat16_digits_run_ends_at_the_float32_loss():
    """200 steps of the digits U config in bfloat16 and in float32, same initial state,
    batches and keys: over the last 50 steps the bfloat16 run's mean loss is within two
    standard errors of the float32 run's mean (its own step-to-step noise, from the random
    times and perturbations of each step): bfloat16 training is indistinguishable from float32
    training at the resolution this run has."""
    window = 50
    loss32 = _digits_losses("float32", 200)[-window:]
    loss16 = _digits_losses("bfloat16", 200)[-window:]
    standard_error = loss32.std(ddof=1) / np.sqrt(window)
    assert abs(loss16.mean() - loss32.mean()) <= 2 * standard_error, (
        loss16.mean(), loss32.mean(), standard_error)
