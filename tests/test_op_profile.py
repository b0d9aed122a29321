"""benchmarks.op_profile on a small compiled program: every entry instruction gets a group, a
convolution and GroupNorm land in their groups, and the profile's groups add up to its total."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from benchmarks.op_profile import GROUPS, hlo_groups, profile_program
from sgm_jax.models.layerspp import group_norm


class _Block(nn.Module):
    @nn.compact
    def __call__(self, x):
        return nn.swish(group_norm(nn.Conv(8, (3, 3))(x)))


def test_groups_and_profile_of_a_conv_block():
    block = _Block()
    x = jnp.ones((2, 8, 8, 4))
    params = block.init(jax.random.key(0), x)
    loss = jax.jit(jax.grad(lambda p: jnp.sum(block.apply(p, x) ** 2)))
    compiled = loss.lower(params).compile()
    groups = hlo_groups(compiled.as_text())
    assert groups and set(groups.values()) <= set(GROUPS)
    assert "convolution" in groups.values() and "normalisation" in groups.values()
    profile = profile_program(lambda: compiled(params), compiled.as_text(), steps=1)
    assert set(profile["groups"]) == set(GROUPS) and profile["wall_s"] > 0
    assert abs(sum(profile["groups"].values()) - profile["total_s"]) < 1e-12
    assert profile["groups"]["convolution"] > 0
