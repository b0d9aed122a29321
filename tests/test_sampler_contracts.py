"""The contracts every sampler of sgm_jax.sampling keeps: a score model that returns NaN stops it
with a clear error, its NFE is what a counting wrapper sees, a new batch of inputs does not
compile it again, and a batch sharded over the eight forced CPU devices gives the samples of
one device."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from gaussian_oracle import Gaussian
from jax.sharding import NamedSharding, PartitionSpec

from sgm_jax import sampling
from sgm_jax.parallel import data_mesh
from sgm_jax.sampling import operators
from sgm_jax.sde import VESDE, VPSDE

VE, VP = VESDE(sigma_max=20.0, N=8), VPSDE(N=30)
SHAPE = (16, 4, 4, 3)
MASK = operators.inpainting_mask("centre_square", SHAPE[1:])
POOL = operators.average_pool_operator(2)


def _conditions():
    """(name, sde, {argument: value}, {argument: another value}) of every new sampler, the second
    dict holding another batch of its inputs (PC runs inside inpainting and colorization; its own
    NFE is tested in tests/test_sampling.py)."""
    x, x2 = (jax.random.uniform(jax.random.PRNGKey(k), SHAPE) for k in (1, 2))
    return [
        ("ddim", VP, {"x_T": x}, {"x_T": x2}),
        ("heun", VE, {"x_T": x}, {"x_T": x2}),
        ("inpaint", VE, {"x_known": x}, {"x_known": x2}),
        ("colorize", VE, {"gray": x[..., :1]}, {"gray": x2[..., :1]}),
        ("dps", VP, {"y": POOL(x)}, {"y": POOL(x2)}),
    ]


STATIC = {"ddim": dict(num_steps=5, eta=1.0),
          "heun": dict(num_steps=4, s_churn=1.0), "inpaint": dict(mask=MASK),
          "colorize": {}, "dps": dict(forward_op=POOL, noise_std=0.05, zeta=0.5, num_steps=5)}
NFE = {"ddim": 5, "heun": 7, "inpaint": 2 * VE.N, "colorize": 2 * VE.N, "dps": 5}


def _sampler(name, sde, score, data):
    """The jitted sampler with its per-batch data as arguments: ``run(data, key)``."""

    def run(data, key):
        bound = {k: v for k, v in data.items() if k != "x_T"}
        sample = sampling.get_sampler(name, sde=sde, **STATIC[name], **bound)
        return sample(score, SHAPE, key, data.get("x_T"))

    return jax.jit(run)


@pytest.mark.parametrize("case", _conditions(), ids=lambda c: c[0])
def test_nfe_is_counted_and_a_new_batch_compiles_nothing(case):
    """NFE = the run-time count of score calls; the second batch (other values, same shapes)
    neither traces nor compiles (JAX's monitoring events and the jitted function's cache)."""
    name, sde, first, second = case
    g = Gaussian(sde, SHAPE[1:], seed=0, isotropic=True)
    run = _sampler(name, sde, g.counted_score, first)
    out, nfe = run(first, jax.random.PRNGKey(0))
    assert out.shape == SHAPE and int(nfe) == g.calls == NFE[name]
    events = []
    jax.monitoring.register_event_duration_secs_listener(
        lambda event, duration, **kw: events.append(event))
    out2, _ = run(second, jax.random.PRNGKey(1))
    jax.block_until_ready(out2)
    compiles = [e for e in events if e in ("/jax/core/compile/backend_compile_duration",
                                           "/jax/core/compile/jaxpr_trace_duration")]
    assert compiles == [] and run._cache_size() == 1
    assert not np.allclose(out, out2)


#: One sampler per code path of the check (the fixed-grid loops, the PC chain, the guided one).
PATHS = ("heun", "inpaint", "dps")


@pytest.mark.parametrize("case", [c for c in _conditions() if c[0] in PATHS], ids=lambda c: c[0])
def test_nan_score_stops_with_a_clear_error(case):
    """Called outside jit, a sampler whose score model returns NaN raises FloatingPointError
    naming the sampler and the cause (every sampler returns through the same check)."""
    name, sde, first, _ = case
    bound = {k: v for k, v in first.items() if k != "x_T"}
    sample = sampling.get_sampler(name, sde=sde, **STATIC[name], **bound)
    nan_score = lambda x, t: jnp.full_like(x, jnp.nan)  # noqa: E731
    with pytest.raises(FloatingPointError, match=rf"the {name} sampler produced non-finite values "
                                                 r".*score model returned a non-finite value"):
        sample(nan_score, SHAPE, jax.random.PRNGKey(0), first.get("x_T"))


def test_a_score_of_the_wrong_shape_is_refused():
    with pytest.raises(ValueError, match=r"score_fn must return an array of the input's shape "
                                         r"\[B, \*event\] = \(16, 4, 4, 3\); got shape \(16, 4\)"):
        sampling.heun_sampler(VE, lambda x, t: x[:, 0, 0, :1].repeat(4, 1), SHAPE,
                              jax.random.PRNGKey(0))


@pytest.mark.parametrize("case", [c for c in _conditions() if c[0] in PATHS], ids=lambda c: c[0])
def test_sharded_batch_gives_the_samples_of_one_device(case):
    """The batch sharded over the 8 forced CPU devices (one SPMD program) gives the single-device
    samples to float32 rounding of reductions in another order (the Langevin corrector's
    batch-averaged step size, the guidance's per-example norms)."""
    name, sde, first, _ = case
    assert jax.device_count() == 8
    g = Gaussian(sde, SHAPE[1:], seed=0, isotropic=True)
    run = _sampler(name, sde, g.score, first)
    single = np.asarray(run(first, jax.random.PRNGKey(0))[0])
    sharding = NamedSharding(data_mesh(), PartitionSpec("data"))
    sharded_data = {k: jax.device_put(v, sharding) for k, v in first.items()}
    out, _ = run(sharded_data, jax.random.PRNGKey(0))
    assert out.sharding.is_equivalent_to(sharding, out.ndim) or len(out.sharding.device_set) == 8
    np.testing.assert_allclose(np.asarray(out), single, rtol=2e-5, atol=2e-5)
