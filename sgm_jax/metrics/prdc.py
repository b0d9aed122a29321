"""Precision, recall, density and coverage of generated samples (k-nearest-neighbour manifolds).

Let X = {x₁…x_N} be real and Y = {y₁…y_M} generated (fake) feature vectors, and let
NND_k(xᵢ) be the distance from xᵢ to its k-th nearest neighbour among the *other* real points
(xᵢ itself excluded), B(xᵢ, r) the ball of radius r around xᵢ. Then

* precision = 1/M Σⱼ 1[∃ i: yⱼ ∈ B(xᵢ, NND_k(xᵢ))]   (Kynkäänniemi et al., 2019)
* recall    = 1/N Σᵢ 1[∃ j: xᵢ ∈ B(yⱼ, NND_k(yⱼ))]   (fake radii taken among the fakes)
* density   = 1/(kM) Σⱼ Σᵢ 1[yⱼ ∈ B(xᵢ, NND_k(xᵢ))]  (Naeem et al., 2020)
* coverage  = 1/N Σᵢ 1[minⱼ ‖xᵢ − yⱼ‖ ≤ NND_k(xᵢ)]     (Naeem et al., 2020)

Precision, recall and coverage lie in [0, 1]; density lies in [0, N/k], is not bounded by 1, and
is close to 1 when X and Y are independent draws from one distribution.

**Open or closed balls.** By default the balls are open (‖y − x‖ < NND_k(x)), as in the reference
implementation of Naeem et al. (the ``prdc`` package, used by the QCSGM and DLSM evaluation
code), so numbers are comparable with published ones; ``closed_balls=True`` gives the ≤ of
Kynkäänniemi et al. (2019, Eq. 2). The two differ only for points exactly on a boundary, which
happens with duplicated points — e.g. a fake set that copies real points. Two *identical* sets
(no ties among distances) give precision = recall = coverage = 1 and density exactly 1 with open
balls (each point lies inside its own ball and those of the k − 1 points it is nearer than the
k-th neighbour to), (k + 1)/k with closed balls (the k-th neighbours on the boundaries count).
A point duplicated in the real set has radius 0 when k = 1, an empty open ball.

All pairwise distances are computed in square tiles of ``chunk_size × chunk_size`` points inside
``lax.scan`` loops, so memory is O(chunk_size² + (N + M)·k) — the N × M matrix is never formed —
and 50 000 × 50 000 2-D points or 10 000 × 2048 Inception features fit easily. Comparisons are
made between *squared* distances (the square root is monotone). For feature dimension
D ≤ 16 the tile is computed from explicit differences (no cancellation, which matters for 2-D
toy data where nearest-neighbour distances are ~1/√N of the spread); for larger D by the
expansion ‖a‖² + ‖b‖² − 2aᵀb with a HIGHEST-precision matmul, after both sets are centred on the
real mean (distances are translation invariant; centring reduces the cancellation error).
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp

from sgm_jax import _validation as val

Array = jax.Array

__all__ = ["prdc", "knn_radii"]

_DIRECT_MAX_DIM = 16  # up to this dimension, tiles use explicit differences
_TILE_ELEMENTS = 1 << 22  # elements of one distance tile (x D for explicit differences)


# --------------------------------------------------------------------------------------------
# Validation and tiling helpers.


def _as_features(name: str, features) -> Array:
    features = jnp.asarray(features)
    if features.ndim < 2:
        raise ValueError(
            f"{name} must have shape [num_points, *feature_shape] (at least 2 dimensions); "
            f"got shape {features.shape}.")
    if not jnp.issubdtype(features.dtype, jnp.floating):
        features = features.astype(jnp.result_type(float))
    return features.reshape(features.shape[0], -1)


def _check_finite(name: str, features: Array) -> None:
    ok = val.concrete_value(jnp.all(jnp.isfinite(features)))  # None under tracing
    if ok is not None and not bool(ok):
        raise ValueError(f"{name} must hold only finite values; it contains NaN or inf.")


def _check_k(nearest_k, num_points: int, name: str) -> None:
    val.check_positive_int("nearest_k", nearest_k)
    if nearest_k > num_points - 1:
        raise ValueError(
            f"nearest_k must be at most the number of {name} minus one ({num_points - 1}), since "
            f"each point's radius is the distance to its k-th nearest *other* point; "
            f"got nearest_k={nearest_k}.")


def _default_chunk(dim: int) -> int:
    per_pair = dim if dim <= _DIRECT_MAX_DIM else 1
    return max(1, math.isqrt(_TILE_ELEMENTS // per_pair))


def _tiles(features: Array, chunk: int) -> tuple[Array, Array]:
    """Pad to a multiple of ``chunk`` and reshape to [num_tiles, chunk, D]; validity mask."""
    n, d = features.shape
    num = -(-n // chunk)
    padded = jnp.pad(features, ((0, num * chunk - n), (0, 0)))
    valid = jnp.arange(num * chunk) < n
    return padded.reshape(num, chunk, d), valid.reshape(num, chunk)


def _sq_dists(a: Array, b: Array, direct: bool) -> Array:
    """Squared Euclidean distances [R, C] between rows of a [R, D] and b [C, D]."""
    if direct:  # one fused [R, C] expression, coordinate by coordinate (D is small and static)
        total = jnp.zeros((a.shape[0], b.shape[0]), a.dtype)
        for j in range(a.shape[1]):
            diff = a[:, j, None] - b[None, :, j]
            total = total + diff * diff
        return total
    cross = jnp.matmul(a, b.T, precision=jax.lax.Precision.HIGHEST)
    sq = jnp.sum(a * a, axis=1)[:, None] + jnp.sum(b * b, axis=1)[None, :] - 2.0 * cross
    return jnp.maximum(sq, 0.0)


# --------------------------------------------------------------------------------------------
# Tiled kernels (jitted; every size argument static).


@functools.partial(jax.jit, static_argnames=("k", "chunk", "direct"))
def _knn_sq_radii(points: Array, k: int, chunk: int, direct: bool) -> Array:
    """Squared distance of every point to its k-th nearest other point, [N]."""
    n = points.shape[0]
    tiles, valid = _tiles(points, chunk)
    offsets = jnp.arange(tiles.shape[0]) * chunk
    inf = jnp.asarray(jnp.inf, points.dtype)

    def one_row_tile(row):
        rows, row_start = row
        row_idx = row_start + jnp.arange(chunk)

        def scan_cols(best, col):
            cols, col_valid, col_start = col
            col_idx = col_start + jnp.arange(chunk)
            d = _sq_dists(rows, cols, direct)
            keep = col_valid[None, :] & (row_idx[:, None] != col_idx[None, :])
            d = jnp.where(keep, d, inf)
            merged = jnp.concatenate([best, d], axis=1)
            return -jax.lax.top_k(-merged, k)[0], None  # k smallest, ascending

        best0 = jnp.full((chunk, k), inf, points.dtype)
        best, _ = jax.lax.scan(scan_cols, best0, (tiles, valid, offsets))
        return best[:, k - 1]

    radii = jax.lax.map(one_row_tile, (tiles, offsets))
    return radii.reshape(-1)[:n]


@functools.partial(jax.jit, static_argnames=("chunk", "direct", "closed"))
def _cross_counts(real: Array, fake: Array, real_sq_radii: Array, fake_sq_radii: Array,
                  chunk: int, direct: bool, closed: bool):
    """One tiled pass over all (fake, real) pairs.

    Returns, per fake: the number of real balls containing it [M]; per real: whether some fake
    ball contains it [N] and its squared distance to the nearest fake [N].
    """
    n, m = real.shape[0], fake.shape[0]
    dtype = real.dtype
    inside = jnp.less_equal if closed else jnp.less
    inf = jnp.asarray(jnp.inf, dtype)
    r_tiles, r_valid = _tiles(real, chunk)
    f_tiles, f_valid = _tiles(fake, chunk)
    # Padded points get radius -inf: nothing lies in their balls.
    r_rad = jnp.pad(real_sq_radii, (0, r_valid.size - n),
                    constant_values=-jnp.inf).reshape(r_valid.shape)
    f_rad = jnp.pad(fake_sq_radii, (0, f_valid.size - m),
                    constant_values=-jnp.inf).reshape(f_valid.shape)

    def over_fake_tiles(carry, fake_tile):
        real_min, real_recalled = carry  # [num_real_tiles, chunk]
        fakes, fvalid, frad = fake_tile

        def over_real_tiles(count, real_tile):
            reals, rvalid, rrad = real_tile
            d = _sq_dists(fakes, reals, direct)  # [chunk_f, chunk_r]
            d = jnp.where(fvalid[:, None] & rvalid[None, :], d, inf)
            in_real_ball = inside(d, rrad[None, :])
            in_fake_ball = inside(d, frad[:, None])
            count = count + jnp.sum(in_real_ball, axis=1, dtype=jnp.int32)
            return count, (jnp.min(d, axis=0), jnp.any(in_fake_ball, axis=0))

        count0 = jnp.zeros((chunk,), jnp.int32)
        count, (tile_min, tile_recalled) = jax.lax.scan(
            over_real_tiles, count0, (r_tiles, r_valid, r_rad))
        carry = (jnp.minimum(real_min, tile_min), real_recalled | tile_recalled)
        return carry, count

    init = (jnp.full(r_valid.shape, inf, dtype), jnp.zeros(r_valid.shape, bool))
    (real_min, real_recalled), counts = jax.lax.scan(
        over_fake_tiles, init, (f_tiles, f_valid, f_rad))
    return counts.reshape(-1)[:m], real_recalled.reshape(-1)[:n], real_min.reshape(-1)[:n]


# --------------------------------------------------------------------------------------------
# Public API.


def knn_radii(features, nearest_k: int = 3, *, chunk_size: int | None = None) -> Array:
    """Distance from each point to its k-th nearest *other* point of the same set, shape [N].

    ``features`` has shape [N, *feature_shape] (flattened to [N, D]); ``nearest_k`` ≤ N − 1.
    Memory is O(chunk_size² · (D if D ≤ 16 else 1)); see the module docstring.
    """
    features = _as_features("features", features)
    _check_k(nearest_k, features.shape[0], "features")
    _check_finite("features", features)
    dim = features.shape[1]
    chunk = _resolve_chunk(chunk_size, dim, features.shape[0])
    return jnp.sqrt(_knn_sq_radii(features, int(nearest_k), chunk, dim <= _DIRECT_MAX_DIM))


def _resolve_chunk(chunk_size, dim: int, largest: int) -> int:
    if chunk_size is None:
        chunk_size = _default_chunk(dim)
    val.check_positive_int("chunk_size", chunk_size)
    return int(min(chunk_size, largest))


def prdc(real_features, fake_features, nearest_k: int = 3, *, chunk_size: int | None = None,
         closed_balls: bool = False) -> dict[str, Array]:
    """Precision, recall, density and coverage of ``fake_features`` against ``real_features``.

    Definitions (module docstring): precision and density from the real k-NN balls
    (Kynkäänniemi et al. 2019; Naeem et al. 2020), recall from the fake k-NN balls, coverage
    from each real point's nearest fake.

    Args:
      real_features: [N, *feature_shape] real samples or their features (e.g. 2-D toy points or
        2048-D Inception pool features); flattened to [N, D].
      fake_features: [M, *feature_shape] generated samples, the same feature shape.
      nearest_k: k of the k-NN radii; an integer with 1 ≤ k ≤ min(N, M) − 1. The QCSGM and DLSM
        evaluations use k = 3 (with 5000 or 50 000 samples).
      chunk_size: points per side of one distance tile; by default as many as keep a tile at
        about 4M elements (2048 for D > 16, 512 for D = 16, 1448 for D = 2). Results do not
        depend on it (up to float rounding in the matmul path for D > 16).
      closed_balls: count a point on a ball's boundary as inside (≤, Kynkäänniemi et al.)
        instead of outside (<, the default, as the ``prdc`` package); see the module docstring.
    Returns:
      ``{"precision", "recall", "density", "coverage"}``, each a 0-d array in the features'
      floating dtype (``float(...)`` for JSON).
    Raises:
      ValueError: on unbatched or mismatched feature shapes, non-finite values, a bad
        ``nearest_k`` or ``chunk_size``.

    Cost: three tiled passes (real–real, fake–fake, fake–real), O((N² + M² + NM) · D) work and no
    N × M buffer; under ``jit`` on an accelerator 50k × 50k 2-D points take seconds.
    """
    real = _as_features("real_features", real_features)
    fake = _as_features("fake_features", fake_features)
    if jnp.shape(real_features)[1:] != jnp.shape(fake_features)[1:]:
        raise ValueError(
            "real_features and fake_features must have the same feature shape; got "
            f"{jnp.shape(real_features)[1:]} and {jnp.shape(fake_features)[1:]}.")
    if not isinstance(closed_balls, bool):
        raise ValueError(f"closed_balls must be True or False; got {closed_balls!r}.")
    _check_k(nearest_k, real.shape[0], "real points (real_features.shape[0])")
    _check_k(nearest_k, fake.shape[0], "fake points (fake_features.shape[0])")
    _check_finite("real_features", real)
    _check_finite("fake_features", fake)
    dtype = jnp.result_type(real.dtype, fake.dtype)
    real, fake = real.astype(dtype), fake.astype(dtype)
    n, m, dim = real.shape[0], fake.shape[0], real.shape[1]
    k = int(nearest_k)
    chunk = _resolve_chunk(chunk_size, dim, max(n, m))
    direct = dim <= _DIRECT_MAX_DIM
    if not direct:  # translation invariance: centre both sets to limit cancellation
        centre = jnp.mean(real, axis=0)
        real, fake = real - centre, fake - centre

    real_rad = _knn_sq_radii(real, k, min(chunk, n), direct)
    fake_rad = _knn_sq_radii(fake, k, min(chunk, m), direct)
    counts, recalled, nearest_fake = _cross_counts(real, fake, real_rad, fake_rad, chunk, direct,
                                                   closed_balls)
    covered = nearest_fake <= real_rad if closed_balls else nearest_fake < real_rad
    return {
        "precision": jnp.mean(counts > 0, dtype=dtype),
        "recall": jnp.mean(recalled, dtype=dtype),
        "density": jnp.sum(counts, dtype=dtype) / jnp.asarray(k * m, dtype),
        "coverage": jnp.mean(covered, dtype=dtype),
    }

