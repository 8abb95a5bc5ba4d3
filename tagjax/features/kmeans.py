"""k-means clustering of feature frames: k-means++ seeding, Lloyd iterations, mini-batches.

Follows scikit-learn's `KMeans` and `MiniBatchKMeans` (greedy k-means++ with `2 + log(k)`
local trials, the same tolerance and stopping rules, empty-cluster relocation and low-count
reassignment), so results are comparable at equal settings. Lloyd's iterations skip, by
Yinyang's (or Hamerly's) bounds, the frames that provably keep their cluster; the centroids are
Lloyd's.

Distances use `|x|^2 - 2 x.c + |c|^2` with the frames taken in blocks of `chunk_size`, so no
`(n_frames, k)` matrix larger than one `(chunk_size, k)` block is ever built. The data are
centred first (the expansion cancels badly when `|x|` is large compared with the distances).

For a data set larger than memory (MagnaTagATune's ~20 M training frames), the training code
should run `kmeans_fit` on a random subsample of frames that fits (200,000 frames x 90 take
under a minute on a 2-core CPU for k = 1024, and a few hundred thousand frames estimate 1024
centroids well); streaming every frame through `minibatch_kmeans_init` and
`minibatch_kmeans_update` is the alternative when even one pass to draw a subsample is too
costly, at a few percent more inertia.
"""

import functools
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from tagjax.features.pca import check_finite, validate_frames

# Frames per distance block: a (k, chunk) block of about 2**19 float32 (2 MiB) was fastest on a
# 2-core AVX-512 CPU (benchmarks/kmeans.py --chunk-sweep: 512 frames for k = 1024, 1024-2048
# for k = 256); smaller blocks pay the loop overhead, larger ones fall out of cache.
_BLOCK_ELEMENTS = 2**19
_MIN_CHUNK_SIZE = 256


class KMeans(NamedTuple):
    """A fitted k-means model: plain arrays, so it jits, vmaps and saves like any pytree.

    Attributes:
      centroids: `(k, dim)` cluster centres.
      inertia: `()` sum over the fitted frames of the squared distance to the nearest centroid.
      n_iter: `()` int32 number of Lloyd iterations (or mini-batch steps) run.
    """

    centroids: jax.Array
    inertia: jax.Array
    n_iter: jax.Array


class MiniBatchKMeansState(NamedTuple):
    """The running state of mini-batch k-means, updated one batch of frames at a time.

    Has `centroids` like `KMeans`, so `kmeans_assign`, `kmeans_inertia` and `bag_of_frames`
    accept it directly; `KMeans(state.centroids, kmeans_inertia(state, X), state.n_steps)`
    makes a `KMeans` with the inertia on frames `X` (e.g. a held-out sample).

    Attributes:
      centroids: `(k, dim)` cluster centres.
      counts: `(k,)` number of frames each centre has absorbed; its inverse is the centre's
        step size.
      frames_since_reassign: `()` int32 frames seen since low-count centres were last reseeded.
      n_steps: `()` int32 number of batches seen.
    """

    centroids: jax.Array
    counts: jax.Array
    frames_since_reassign: jax.Array
    n_steps: jax.Array


def resolve_chunk_size(chunk_size: int | None, k: int) -> int:
    """Frames per distance block: `chunk_size` if given, else about 2**19 block elements."""
    if chunk_size is None:
        return max(_MIN_CHUNK_SIZE, _BLOCK_ELEMENTS // k)
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be positive, got {chunk_size}.")
    return chunk_size


def _dot(a, b, contract=((1,), (1,))):
    # Full float32 products: on GPUs the default TF32 would misplace near-tied frames.
    return lax.dot_general(a, b, (contract, ((), ())), precision=lax.Precision.HIGHEST)


def _to_blocks(X: jax.Array, chunk_size: int) -> jax.Array:
    """Pads `(n, dim)` frames with zero rows into `(n_blocks, chunk_size, dim)` blocks."""
    n, dim = X.shape
    chunk_size = min(chunk_size, n)
    n_blocks = -(-n // chunk_size)
    padded = jnp.pad(X, ((0, n_blocks * chunk_size - n), (0, 0)))
    return padded.reshape(n_blocks, chunk_size, dim)


def _nearest_in_blocks(blocks: jax.Array, centroids: jax.Array):
    """Nearest centroid of each frame, one block at a time.

    Args:
      blocks: `(n_blocks, chunk_size, dim)` frames from `_to_blocks`.
      centroids: `(k, dim)`.

    Returns:
      `(n_blocks * chunk_size,)` int32 labels (the lowest index among ties, like `argmin`) and
      `min_c |c|^2 - 2 x.c`, i.e. the squared distance minus `|x|^2`, padding rows included.
    """
    k = centroids.shape[0]
    c_sq = jnp.sum(centroids * centroids, axis=1)
    minus_twice_centroids = -2 * centroids

    def nearest(block):
        # (k, chunk) layout: reducing over the major axis vectorises across frames, which on the
        # CPU measured 2.5x faster than argmin over the rows of a (chunk, k) block.
        scores = c_sq[:, None] + _dot(minus_twice_centroids, block)
        best = jnp.min(scores, axis=0)
        index = lax.broadcasted_iota(jnp.int32, scores.shape, 0)
        labels = jnp.min(jnp.where(scores <= best, index, k), axis=0)
        return labels, best

    labels, best = lax.map(nearest, blocks)
    return labels.reshape(-1), best.reshape(-1)


def _two_nearest(block: jax.Array, centroids: jax.Array):
    """Nearest and second-nearest centroid scores of one `(chunk, dim)` block of frames.

    Returns:
      `(chunk,)` int32 labels and the two smallest `|c|^2 - 2 x.c` (squared distances minus
      `|x|^2`) per frame.
    """
    k = centroids.shape[0]
    scores = jnp.sum(centroids * centroids, axis=1)[:, None] + _dot(-2 * centroids, block)
    best = jnp.min(scores, axis=0)
    index = lax.broadcasted_iota(jnp.int32, scores.shape, 0)
    labels = jnp.min(jnp.where(scores <= best, index, k), axis=0)
    second = jnp.min(jnp.where(index == labels, jnp.inf, scores), axis=0)
    return labels, best, second


def nearest_centroids(X: jax.Array, centroids: jax.Array, chunk_size: int):
    """Labels `(n,)` and squared distances `(n,)` of frames `(n, dim)` to the nearest centroid."""
    # Distances are translation invariant; centring on the centroids keeps |x|^2 small.
    shift = jnp.mean(centroids, axis=0)
    X = X - shift
    centroids = centroids - shift
    labels = _nearest_in_blocks(_to_blocks(X, chunk_size), centroids)[0][: X.shape[0]]
    # The distance itself by direct difference: the expansion's rounding would bias sums of it.
    return labels, jnp.sum((X - centroids[labels]) ** 2, axis=1)


def check_model_input(km, X, name: str = "X") -> None:
    """Raises `ValueError` unless `X` is `(..., dim)` finite frames matching `km.centroids`."""
    dim = km.centroids.shape[-1]
    if np.ndim(X) < 1 or np.shape(X)[-1] != dim:
        raise ValueError(
            f"{name} must be (..., dim) frames with dim = {dim} like the centroids, "
            f"got shape {np.shape(X)}."
        )
    check_finite(X, name)


@functools.partial(jax.jit, static_argnames="chunk_size")
def _assign(centroids, X, chunk_size):
    labels, distances = nearest_centroids(X.reshape(-1, X.shape[-1]), centroids, chunk_size)
    return labels.reshape(X.shape[:-1]), distances.reshape(X.shape[:-1])


def _assign_checked(km, X, chunk_size):
    check_model_input(km, X)
    if np.size(X) == 0:
        empty = jnp.zeros(np.shape(X)[:-1])
        return empty.astype(jnp.int32), empty
    chunk_size = resolve_chunk_size(chunk_size, km.centroids.shape[0])
    return _assign(km.centroids, jnp.asarray(X, km.centroids.dtype), chunk_size)


def kmeans_assign(km: KMeans | MiniBatchKMeansState, X, chunk_size: int | None = None):
    """Index of the nearest centroid of each frame.

    Args:
      km: a fitted `KMeans` (or a `MiniBatchKMeansState`).
      X: `(..., dim)` frames; checked for NaN and infinite values when concrete.
      chunk_size: frames per distance block (default: `max(256, 2**19 // k)`).

    Returns:
      `(...)` int32 labels in `[0, k)`; ties go to the lowest index.
    """
    return _assign_checked(km, X, chunk_size)[0]


def kmeans_inertia(km: KMeans | MiniBatchKMeansState, X, chunk_size: int | None = None):
    """Sum over frames of the squared distance to the nearest centroid.

    Args:
      km: a fitted `KMeans` (or a `MiniBatchKMeansState`).
      X: `(..., dim)` frames.
      chunk_size: frames per distance block.

    Returns:
      `()` inertia.
    """
    return jnp.sum(_assign_checked(km, X, chunk_size)[1])


@functools.partial(jax.jit, static_argnames=("k", "n_local_trials"))
def _kmeans_plusplus(key, X, k, n_local_trials):
    n = X.shape[0]
    X = X - jnp.mean(X, axis=0)
    x_sq = jnp.sum(X * X, axis=1)

    def distances_to(indices):
        """`(n, trials)` squared distances from every frame to the frames `indices`."""
        # (n, dim) x (dim, trials): XLA:CPU's YNNPACK matmul splits the n rows over the cores
        # and streams the frames once; measured 1.4x (fastest run) to 2.5x (median) faster than
        # (trials, dim) x (dim, n) on a transposed copy, per k-means++ step on 200,000 x 90.
        products = _dot(X, X[indices])
        return jnp.maximum(x_sq[:, None] + x_sq[indices][None, :] - 2 * products, 0)

    first_key, trials_key = jax.random.split(key)
    first = jax.random.randint(first_key, (1,), 0, n)
    uniforms = jax.random.uniform(trials_key, (k, n_local_trials))

    def add_centroid(c, carry):
        chosen, closest = carry
        # Candidates drawn with probability proportional to the squared distance (D^2 sampling).
        cumulative = jnp.cumsum(closest)
        candidates = jnp.searchsorted(cumulative, uniforms[c] * cumulative[-1])
        candidates = jnp.minimum(candidates, n - 1)
        candidate_closest = jnp.minimum(closest[:, None], distances_to(candidates))
        best = jnp.argmin(jnp.sum(candidate_closest, axis=0))
        return chosen.at[c].set(candidates[best]), candidate_closest[:, best]

    chosen = jnp.zeros((k,), jnp.int32).at[0].set(first[0])
    chosen, _ = lax.fori_loop(1, k, add_centroid, (chosen, distances_to(first)[:, 0]))
    return chosen


def _distinct_indices(key, n: int, size: int) -> jax.Array:
    """`size` distinct random indices in `[0, n)`."""
    # The order of n uniform draws is a random permutation (up to negligible ties); cheaper
    # to compile than jax.random.permutation's repeated sorts.
    return jnp.argsort(jax.random.uniform(key, (n,)))[:size]


def _check_k(k: int, n_frames: int) -> None:
    if not isinstance(k, int | np.integer) or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}.")
    if k > n_frames:
        raise ValueError(f"k = {k} clusters need at least {k} frames; X has only {n_frames}.")


def kmeans_plusplus(key, X, k: int, n_local_trials: int | None = None) -> jax.Array:
    """Seeds k centroids by greedy k-means++ (as scikit-learn's `kmeans_plusplus`).

    Each new centroid is the best, by resulting inertia, of `n_local_trials` frames drawn with
    probability proportional to their squared distance to the nearest centroid so far.

    Args:
      key: a JAX PRNG key.
      X: `(n_frames, dim)` frames; validated on the host (shape; NaN and infinite values when
        concrete).
      k: number of centroids, `1 <= k <= n_frames`.
      n_local_trials: candidates per centroid; default `2 + int(log(k))`.

    Returns:
      `(k, dim)` centroids, each one of the frames of `X`.
    """
    validate_frames(X)
    _check_k(k, np.shape(X)[0])
    n_local_trials = 2 + int(math.log(k)) if n_local_trials is None else n_local_trials
    X = jnp.asarray(X, jnp.result_type(float))
    return X[_kmeans_plusplus(key, X, k, n_local_trials)]


def _relocate_empty(X, labels, distances, sums, counts):
    """Moves each empty cluster onto one of the frames farthest from their centroids.

    As scikit-learn: the j-th empty cluster takes the j-th farthest frame, which leaves the
    cluster it was in.
    """
    k = counts.shape[0]
    empty = counts == 0
    _, farthest = lax.top_k(distances, k)
    donor = farthest[jnp.maximum(jnp.cumsum(empty) - 1, 0)]
    frame = X[donor]
    source = labels[donor]
    sums = sums.at[source].add(jnp.where(empty[:, None], -frame, 0))
    counts = counts.at[source].add(jnp.where(empty, -1, 0))
    return jnp.where(empty[:, None], frame, sums), jnp.where(empty, 1, counts)


# Relative rounding of a float32 squared distance computed as |x|^2 - 2 x.c + |c|^2, as a
# multiple of eps * (|x|^2 + |c|^2): Hamerly's bounds are widened by this much so that float32
# rounding never lets a frame skip a centroid that is nearer.
_EXPANSION_SLACK = 8 * float(np.finfo(np.float32).eps)
# Relative rounding of a directly computed distance |x - c| (and of the centroid shifts).
_DIRECT_SLACK = 1e-5


def _lloyd(frames, blocks, valid, x_sq, centroids, k, n_iter, tolerance):
    """Plain Lloyd: every frame against every centroid, every iteration."""

    def lloyd_step(state):
        i, centroids, previous_labels, _ = state
        labels, best = _nearest_in_blocks(blocks, centroids)
        labels = jnp.where(valid, labels, k)  # out of range: dropped by segment_sum
        distances = jnp.where(valid, x_sq + best, -jnp.inf)
        new_centroids = _update_centroids(frames, labels, lambda: distances, centroids)
        shift = jnp.sum((new_centroids - centroids) ** 2)
        converged = jnp.all(labels == previous_labels) | (shift <= tolerance)
        return i + 1, new_centroids, labels, converged

    def keep_going(state):
        i, _, _, converged = state
        return (i < n_iter) & ~converged

    no_labels = jnp.full(frames.shape[:1], -1, jnp.int32)
    initial = (jnp.int32(0), centroids, no_labels, jnp.bool_(False))
    n_done, centroids, _, _ = lax.while_loop(keep_going, lloyd_step, initial)
    labels = jnp.where(valid, _nearest_in_blocks(blocks, centroids)[0], k)
    inertia = jnp.sum(jnp.maximum(_own_squared_distances(frames, valid, centroids, labels), 0))
    return centroids, inertia, n_done


def _own_squared_distances(frames, valid, centroids, labels):
    """Squared distance of each frame to its labelled centroid (-inf for padding rows)."""
    own = centroids[jnp.minimum(labels, centroids.shape[0] - 1)]
    return jnp.where(valid, jnp.sum((frames - own) ** 2, axis=1), -jnp.inf)


def _update_centroids(frames, labels, own_distances, centroids):
    """Cluster means of the labelled frames, empty clusters relocated (as scikit-learn)."""
    k = centroids.shape[0]
    sums = jax.ops.segment_sum(frames, labels, k)
    counts = jax.ops.segment_sum(jnp.ones(frames.shape[:1], frames.dtype), labels, k)
    sums, counts = lax.cond(
        jnp.any(counts == 0),
        lambda: _relocate_empty(frames, labels, own_distances(), sums, counts),
        lambda: (sums, counts),
    )
    return jnp.where(counts[:, None] > 0, sums / counts[:, None], centroids)


def _slack(x_sq, centroids):
    """Per frame, how far float32 rounding can move a squared distance `|x|^2 - 2 x.c + |c|^2`."""
    return _EXPANSION_SLACK * (x_sq + jnp.max(jnp.sum(centroids * centroids, axis=1)))


def _half_gaps(centroids):
    """Half the distance from each centroid to the nearest other one (less float32's slack): a
    frame nearer its centroid than this keeps it."""
    k = centroids.shape[0]
    c_sq = jnp.sum(centroids * centroids, axis=1)
    separation = c_sq[:, None] + c_sq[None, :] - 2 * _dot(centroids, centroids)
    separation = separation - _EXPANSION_SLACK * 2 * jnp.max(c_sq)
    separation = jnp.where(jnp.eye(k, dtype=bool), jnp.inf, separation)
    return 0.5 * jnp.sqrt(jnp.maximum(jnp.min(separation, axis=1), 0))


def _over_rows(selected, block_size, update, carry):
    """`carry` after `update(block_rows, gathered_rows, carry)` on the `selected` rows, taken
    `block_size` at a time: `block_rows` holds their indices, padded past the last block with
    `len(selected)` (out of range, so `.at[...].set(..., mode="drop")` drops them), and
    `gathered_rows` the same indices clipped into range for gathering."""
    n_rows = selected.shape[0]
    rows = jnp.nonzero(selected, size=n_rows + block_size, fill_value=n_rows)[0]

    def step(b, carry):
        block_rows = lax.dynamic_slice_in_dim(rows, b * block_size, block_size)
        return update(block_rows, jnp.minimum(block_rows, n_rows - 1), carry)

    n_blocks = (jnp.sum(selected) + block_size - 1) // block_size
    return lax.fori_loop(0, n_blocks, step, carry)


def _reassign_rows(selected, block_size, nearest, labels, upper, lower):
    """`(labels, upper, lower)` with the `selected` rows' entries replaced by `nearest(rows)`
    -> `(labels, upper, lower)` of those rows, computed `block_size` rows at a time
    (`_over_rows`)."""

    def update(block_rows, gathered, carry):
        return tuple(array.at[block_rows].set(block, mode="drop")
                     for array, block in zip(carry, nearest(gathered), strict=True))

    return _over_rows(selected, block_size, update, (labels, upper, lower))


def _lloyd_with_bounds(frames, valid, centroids, labels, upper, lower, reassign, n_iter,
                       tolerance):
    """Lloyd's iterations from the labels of `centroids`, each reassigning the frames with
    `reassign(centroids, new_centroids, labels, upper, lower) -> (labels, upper, lower)`, which
    keeps the bounds; returns the centroids, their inertia and the iterations done."""

    def own_distances(centroids, labels):
        return _own_squared_distances(frames, valid, centroids, labels)

    def step(state):
        i, centroids, labels, upper, lower, previous_labels, _ = state
        new_centroids = _update_centroids(
            frames, labels, lambda: own_distances(centroids, labels), centroids
        )
        shift = jnp.sum((new_centroids - centroids) ** 2)
        converged = jnp.all(labels == previous_labels) | (shift <= tolerance)
        new_labels, upper, lower = reassign(centroids, new_centroids, labels, upper, lower)
        return i + 1, new_centroids, new_labels, upper, lower, labels, converged

    def keep_going(state):
        i, *_, converged = state
        return (i < n_iter) & ~converged

    no_labels = jnp.full(frames.shape[:1], -1, jnp.int32)
    initial = (jnp.int32(0), centroids, labels, upper, lower, no_labels, jnp.bool_(False))
    n_done, centroids, labels, *_ = lax.while_loop(keep_going, step, initial)
    # The labels are those of the final centroids: the inertia needs no further pass.
    inertia = jnp.sum(jnp.maximum(own_distances(centroids, labels), 0))
    return centroids, inertia, n_done


def _hamerly(frames, blocks, valid, x_sq, centroids, k, n_iter, tolerance):
    """Lloyd's iterations with Hamerly's bounds: the same centroids, fewer distances.

    Each frame keeps an upper bound on the distance to its centroid and a lower bound on the
    distance to every other one. After the centroids move, the bounds move by at most the
    shifts; a frame whose upper bound stays below both its lower bound and half the distance
    from its centroid to the nearest other centroid cannot change cluster and is skipped. Only
    the other frames, gathered into blocks, are compared with all k centroids.
    """
    chunk_size = blocks.shape[1]

    def bounds_from_scores(x_sq, best, second, slack):
        upper = jnp.sqrt(jnp.maximum(x_sq + best, 0) + slack)
        lower = jnp.sqrt(jnp.maximum(x_sq + second - slack, 0))
        return upper, lower

    labels, best, second = lax.map(lambda block: _two_nearest(block, centroids), blocks)
    labels = jnp.where(valid, labels.reshape(-1), k)
    upper, lower = bounds_from_scores(x_sq, best.reshape(-1), second.reshape(-1),
                                      _slack(x_sq, centroids))

    def reassign(centroids, new_centroids, labels, upper, lower):
        shifts = jnp.sqrt(jnp.sum((new_centroids - centroids) ** 2, axis=1)) * (1 + _DIRECT_SLACK)
        farthest = jnp.argmax(shifts)
        others = jnp.max(jnp.where(jnp.arange(k) == farthest, 0, shifts))
        own = jnp.minimum(labels, k - 1)
        upper = upper + shifts[own]
        lower = lower - jnp.where(own == farthest, others, shifts[farthest])
        bound = jnp.maximum(_half_gaps(new_centroids)[own], lower)
        candidate = valid & (upper > bound)
        # Tighten the upper bound to the exact distance before comparing with all centroids.
        exact = jnp.sqrt(jnp.maximum(
            _own_squared_distances(frames, valid, new_centroids, labels), 0))
        upper = jnp.where(candidate, exact * (1 + _DIRECT_SLACK), upper)
        frame_slack = _slack(x_sq, new_centroids)

        def nearest(gathered):
            block_labels, best, second = _two_nearest(frames[gathered], new_centroids)
            return block_labels, *bounds_from_scores(x_sq[gathered], best, second,
                                                     frame_slack[gathered])

        return _reassign_rows(candidate & (upper > bound), chunk_size, nearest,
                              labels, upper, lower)

    return _lloyd_with_bounds(frames, valid, centroids, labels, upper, lower, reassign, n_iter,
                              tolerance)


# Centroids per Yinyang group (Ding et al. suggest k / 10 groups): for k = 1024 on 200,000 MFCC
# frames groups of 16 ran 1.1-1.3x faster than groups of 4, 8, 32 or 64 (fewer groups pass the
# filter less often; more groups cost more to keep), and their bounds take n x k / 16 floats.
_YINYANG_GROUP_SIZE = 16
# Lloyd iterations on the initial centroids that group them.
_GROUPING_ITERATIONS = 5
# Frames per block when tightening upper bounds (90 products a frame: large blocks, few loops).
_TIGHTEN_BLOCK = 4096


def _group_order(centroids, n_groups, group_size):
    """Centroid indices in groups of nearby centroids, for Yinyang's bounds.

    The centroids are clustered into `n_groups` by a few Lloyd iterations seeded on the first
    ones (k-means++ seeds come well spread), then listed cluster by cluster and cut into blocks
    of `group_size`: nearby centroids share a block, so a block whose centroids all stay put
    keeps its bounds. Any grouping is correct; this one only makes the bounds tighter.

    Returns:
      `(n_groups * group_size,)` int32 indices into `centroids`; `k` marks the padding slots.
    """
    k = centroids.shape[0]
    c_sq = jnp.sum(centroids * centroids, axis=1)

    def group_of(centers):
        scores = jnp.sum(centers * centers, axis=1)[None, :] - 2 * _dot(centroids, centers)
        return jnp.argmin(scores, axis=1)

    def lloyd_step(_, centers):
        group = group_of(centers)
        sums = jax.ops.segment_sum(centroids, group, n_groups)
        counts = jax.ops.segment_sum(jnp.ones_like(c_sq), group, n_groups)
        return jnp.where(counts[:, None] > 0, sums / jnp.maximum(counts, 1)[:, None], centers)

    centers = lax.fori_loop(0, _GROUPING_ITERATIONS, lloyd_step, centroids[:n_groups])
    order = jnp.argsort(group_of(centers), stable=True).astype(jnp.int32)
    return jnp.concatenate([order, jnp.full((n_groups * group_size - k,), k, jnp.int32)])


def _yinyang(frames, blocks, valid, x_sq, centroids, k, n_iter, tolerance):
    """Lloyd's iterations with Yinyang's group bounds (Ding et al., 2015): Lloyd's centroids.

    The centroids are split once into groups of `_YINYANG_GROUP_SIZE` nearby ones. Each frame
    keeps an upper bound on the distance to its centroid and, per group, a lower bound on the
    distance to the group's other centroids. When the centroids move, a group's bound drops by
    the largest shift in that group only (Hamerly's single bound drops by the largest shift of
    all), so most bounds hold while a few clusters still move. A frame whose upper bound is at
    most every group bound, or half the distance from its centroid to the nearest other one,
    keeps its cluster. The other frames get their exact distance as upper bound and are tested
    again; only those that still fail, gathered into blocks, are compared with all k centroids.
    """
    chunk_size = blocks.shape[1]
    n_padded, dim = frames.shape
    group_size = min(_YINYANG_GROUP_SIZE, k)
    n_groups = -(-k // group_size)
    order = _group_order(centroids, n_groups, group_size)
    real = order < k

    def grouped(centroids):
        """The centroids in group order, and their squared norms (+inf at padding slots)."""
        padded = jnp.concatenate([centroids, jnp.zeros((1, dim), centroids.dtype)])[order]
        return padded, jnp.where(real, jnp.sum(padded * padded, axis=1), jnp.inf)

    def nearest_and_group_bounds(block, grouped_centroids, grouped_sq, x_sq, slack):
        """Labels, upper bounds `(chunk,)` and group lower bounds `(chunk, n_groups)`."""
        scores = grouped_sq[:, None] + _dot(-2 * grouped_centroids, block)
        best = jnp.min(scores, axis=0)
        # Ties go to the lowest centroid index, as in argmin over the centroids' own order.
        labels = jnp.min(jnp.where(scores <= best, order[:, None], k), axis=0)
        others = jnp.where(order[:, None] == labels, jnp.inf, scores)
        group_best = jnp.min(others.reshape(n_groups, group_size, -1), axis=1).T
        upper = jnp.sqrt(jnp.maximum(x_sq + best, 0) + slack)
        lower = jnp.sqrt(jnp.maximum(x_sq[:, None] + group_best - slack[:, None], 0))
        return labels, upper, lower

    initial_slack = _slack(x_sq, centroids)
    labels, upper, lower = lax.map(
        lambda args: nearest_and_group_bounds(args[0], *grouped(centroids), *args[1:]),
        (
            blocks,
            x_sq.reshape(-1, chunk_size),
            initial_slack.reshape(-1, chunk_size),
        ),
    )
    labels = jnp.where(valid, labels.reshape(-1), k)
    upper, lower = upper.reshape(-1), lower.reshape(n_padded, n_groups)

    def reassign(centroids, new_centroids, labels, upper, lower):
        shifts = jnp.sqrt(jnp.sum((new_centroids - centroids) ** 2, axis=1)) * (1 + _DIRECT_SLACK)
        drift = jnp.max(jnp.append(shifts, 0)[order].reshape(n_groups, group_size), axis=1)
        own = jnp.minimum(labels, k - 1)
        upper = upper + shifts[own]
        lower = lower - drift
        bound = jnp.maximum(_half_gaps(new_centroids)[own], jnp.min(lower, axis=1))
        candidate = valid & (upper > bound)

        # Tighten the candidates' upper bounds to their exact distances first: a third of them
        # then pass, for 90 products a frame instead of 90 k.
        def tighten(block_rows, gathered, upper):
            exact = jnp.sum((frames[gathered] - new_centroids[own[gathered]]) ** 2, axis=1)
            exact = jnp.sqrt(exact) * (1 + _DIRECT_SLACK)
            return upper.at[block_rows].set(exact, mode="drop")

        upper = _over_rows(candidate, _TIGHTEN_BLOCK, tighten, upper)
        grouped_centroids, grouped_sq = grouped(new_centroids)
        frame_slack = _slack(x_sq, new_centroids)

        def nearest(gathered):
            return nearest_and_group_bounds(frames[gathered], grouped_centroids, grouped_sq,
                                            x_sq[gathered], frame_slack[gathered])

        return _reassign_rows(candidate & (upper > bound), chunk_size, nearest,
                              labels, upper, lower)

    return _lloyd_with_bounds(frames, valid, centroids, labels, upper, lower, reassign, n_iter,
                              tolerance)


@functools.partial(
    jax.jit, static_argnames=("k", "init", "n_local_trials", "chunk_size", "algorithm")
)
def _kmeans_fit(
    key, X, initial_centroids, k, n_iter, tol, init, n_local_trials, chunk_size, algorithm
):
    n, dim = X.shape
    mean = jnp.mean(X, axis=0)
    # scikit-learn's tolerance: relative to the mean variance of the features.
    tolerance = tol * jnp.mean(jnp.var(X, axis=0))
    # The one centred copy of the frames, padded with zero rows to whole blocks; `frames` is
    # the same buffer seen flat, and padding rows are masked out of every sum below.
    blocks = _to_blocks(X - mean, chunk_size)
    frames = blocks.reshape(-1, dim)
    valid = jnp.arange(frames.shape[0]) < n
    if init == "k-means++":
        centroids = frames[_kmeans_plusplus(key, frames[:n], k, n_local_trials)]
    elif init == "random":
        centroids = frames[_distinct_indices(key, n, k)]
    else:
        centroids = initial_centroids - mean
    x_sq = jnp.sum(frames * frames, axis=1)
    iterate = {"yinyang": _yinyang, "hamerly": _hamerly, "lloyd": _lloyd}[algorithm]
    centroids, inertia, n_done = iterate(
        frames, blocks, valid, x_sq, centroids, k, n_iter, tolerance
    )
    return KMeans(centroids=centroids + mean, inertia=inertia, n_iter=jnp.asarray(n_done))


def _initial_centroids(init, k: int, dim: int):
    """Checks `init`; returns the initial centroid array (or None) and the static init name."""
    if isinstance(init, str):
        if init not in ("k-means++", "random"):
            raise ValueError(
                f"init must be 'k-means++', 'random' or a (k, dim) array, got {init!r}."
            )
        return None, init
    if np.shape(init) != (k, dim):
        raise ValueError(
            f"init centroids must have shape (k, dim) = {(k, dim)}, got {np.shape(init)}."
        )
    check_finite(init, "init")
    return jnp.asarray(init, jnp.result_type(float)), "array"


def kmeans_fit(
    key,
    X,
    k: int,
    n_iter: int = 300,
    tol: float = 1e-4,
    init="k-means++",
    n_local_trials: int | None = None,
    chunk_size: int | None = None,
    algorithm: str = "yinyang",
) -> KMeans:
    """Fits k-means by Lloyd's algorithm, as scikit-learn's `KMeans(n_init=1)`.

    Iterates inside `lax.while_loop` until the labels stop changing, the squared centroid shift
    (summed over centroids) is at most `tol` times the mean variance of the features, or
    `n_iter` iterations have run. A cluster left empty is moved onto the frame farthest from
    its centroid. `X` is validated on the host first (shapes; NaN and infinite values when
    concrete); the fit itself is jitted, and can be vmapped over keys for several restarts.

    Args:
      key: a JAX PRNG key (for the seeding).
      X: `(n_frames, dim)` frames.
      k: number of clusters, `1 <= k <= n_frames`.
      n_iter: maximum number of Lloyd iterations.
      tol: relative tolerance on the centroid shift.
      init: "k-means++" (greedy, see `kmeans_plusplus`), "random" (k distinct frames) or a
        `(k, dim)` array of initial centroids.
      n_local_trials: k-means++ candidates per centroid; default `2 + int(log(k))`.
      chunk_size: frames per distance block; default `max(256, 2**19 // k)`.
      algorithm: "yinyang" (Yinyang's group bounds skip the frames that cannot change
        cluster; the same iterations with fewer distances, at the cost of `n_frames x k / 16`
        floats of bounds), "hamerly" (one lower bound per frame; prunes less once some
        clusters have settled) or "lloyd" (every frame against every centroid each iteration;
        simpler, and may suit accelerators better).

    Returns:
      The fitted `KMeans`; its inertia is for the final centroids.
    """
    validate_frames(X)
    n, dim = np.shape(X)
    _check_k(k, n)
    if not isinstance(n_iter, jax.core.Tracer) and n_iter < 1:
        raise ValueError(f"n_iter must be at least 1, got {n_iter}.")
    if not isinstance(tol, jax.core.Tracer) and not tol >= 0:
        raise ValueError(f"tol must be non-negative, got {tol}.")
    if algorithm not in ("yinyang", "hamerly", "lloyd"):
        raise ValueError(f"algorithm must be 'hamerly' or 'lloyd' or 'yinyang', got {algorithm!r}.")
    initial_centroids, init_name = _initial_centroids(init, k, dim)
    n_local_trials = 2 + int(math.log(k)) if n_local_trials is None else n_local_trials
    X = jnp.asarray(X, jnp.result_type(float))
    return _kmeans_fit(
        key,
        X,
        initial_centroids,
        k,
        n_iter,
        tol,
        init_name,
        n_local_trials,
        resolve_chunk_size(chunk_size, k),
        algorithm,
    )


def minibatch_kmeans_init(key, X, k: int, init="k-means++") -> MiniBatchKMeansState:
    """Seeds mini-batch k-means on a sample of frames.

    Args:
      key: a JAX PRNG key.
      X: `(n_frames, dim)` frames to seed from (scikit-learn uses `3 * batch_size` random
        frames), validated on the host.
      k: number of clusters, `1 <= k <= n_frames`.
      init: "k-means++", "random" or a `(k, dim)` array of initial centroids.

    Returns:
      A `MiniBatchKMeansState` with all counts zero.
    """
    validate_frames(X)
    n, dim = np.shape(X)
    _check_k(k, n)
    initial_centroids, init_name = _initial_centroids(init, k, dim)
    if init_name == "k-means++":
        centroids = kmeans_plusplus(key, X, k)
    elif init_name == "random":
        centroids = jnp.asarray(X, jnp.result_type(float))[_distinct_indices(key, n, k)]
    else:
        centroids = initial_centroids
    return MiniBatchKMeansState(
        centroids=centroids,
        counts=jnp.zeros((k,), centroids.dtype),
        frames_since_reassign=jnp.zeros((), jnp.int32),
        n_steps=jnp.zeros((), jnp.int32),
    )


def _reassign_low_counts(key, X, centroids, counts, reassignment_ratio):
    """Reseeds centroids with few frames onto random frames of the batch (as scikit-learn)."""
    batch_size = X.shape[0]
    starved = counts < reassignment_ratio * jnp.max(counts)
    # At most half a batch of reseeds: keep only the lowest counts.
    rank = jnp.argsort(jnp.argsort(counts))
    starved &= rank < batch_size // 2
    replacement = _distinct_indices(key, batch_size, batch_size)
    frame = X[replacement[jnp.maximum(jnp.cumsum(starved) - 1, 0)]]
    # Give reseeded centroids the smallest kept count, so they are not reseeded at once again.
    floor = jnp.min(jnp.where(starved, jnp.inf, counts))
    return jnp.where(starved[:, None], frame, centroids), jnp.where(starved, floor, counts)


@functools.partial(jax.jit, static_argnames="chunk_size")
def _minibatch_step(key, state, X, reassignment_ratio, chunk_size):
    k = state.centroids.shape[0]
    labels, distances = nearest_centroids(X, state.centroids, chunk_size)
    batch_sums = jax.ops.segment_sum(X, labels, k)
    batch_counts = jax.ops.segment_sum(jnp.ones(X.shape[:1], X.dtype), labels, k)
    counts = state.counts + batch_counts
    # Each centroid becomes the mean of every frame it has absorbed so far.
    centroids = jnp.where(
        batch_counts[:, None] > 0,
        (state.centroids * state.counts[:, None] + batch_sums) / jnp.maximum(counts, 1)[:, None],
        state.centroids,
    )
    frames_since_reassign = state.frames_since_reassign + X.shape[0]
    reassign = (jnp.any(state.counts == 0) | (frames_since_reassign >= 10 * k)) & (
        reassignment_ratio > 0
    )
    centroids, counts = lax.cond(
        reassign,
        lambda: _reassign_low_counts(key, X, centroids, counts, reassignment_ratio),
        lambda: (centroids, counts),
    )
    new_state = MiniBatchKMeansState(
        centroids=centroids,
        counts=counts,
        frames_since_reassign=jnp.where(reassign, 0, frames_since_reassign),
        n_steps=state.n_steps + 1,
    )
    return new_state, jnp.sum(distances)


def minibatch_kmeans_update(
    key,
    state: MiniBatchKMeansState,
    X,
    reassignment_ratio: float = 0.01,
    chunk_size: int | None = None,
) -> tuple[MiniBatchKMeansState, jax.Array]:
    """One step of mini-batch k-means (as scikit-learn's `MiniBatchKMeans`) on a batch of frames.

    Each frame moves its nearest centroid to the running mean of all frames that centroid has
    absorbed. Every `10 * k` frames (and while some centroid has absorbed none), centroids with
    fewer than `reassignment_ratio` times the largest count are reseeded on random frames of
    the batch. Validates `X` on the host; the step is jitted, and can also be called inside a
    caller's `jit` or `lax.scan` (then without the NaN check).

    Args:
      key: a JAX PRNG key (for the reseeding).
      state: the state from `minibatch_kmeans_init` or the previous update.
      X: `(batch_size, dim)` frames.
      reassignment_ratio: count fraction below which a centroid is reseeded; 0 disables it.
      chunk_size: frames per distance block.

    Returns:
      The updated state and the batch's inertia before the update (its sum of squared
      distances to the nearest centroids).
    """
    validate_frames(X)
    dim = state.centroids.shape[1]
    if np.shape(X)[1] != dim:
        raise ValueError(f"X has {np.shape(X)[1]} features per frame; the centroids have {dim}.")
    X = jnp.asarray(X, state.centroids.dtype)
    chunk_size = resolve_chunk_size(chunk_size, state.centroids.shape[0])
    return _minibatch_step(key, state, X, reassignment_ratio, chunk_size)


@functools.partial(jax.jit, static_argnames=("k", "batch_size", "chunk_size"))
def _minibatch_kmeans_fit(
    key, X, k, batch_size, n_steps, max_no_improvement, reassignment_ratio, chunk_size
):
    n = X.shape[0]
    mean = jnp.mean(X, axis=0)
    X = X - mean
    init_key, steps_key = jax.random.split(key)
    sample_key, seed_key = jax.random.split(init_key)
    # As scikit-learn: seed on 3 * batch_size random frames (at least 3 * k).
    init_size = min(n, max(3 * batch_size, 3 * k))
    sample = X[_distinct_indices(sample_key, n, init_size)]
    state = MiniBatchKMeansState(
        centroids=sample[_kmeans_plusplus(seed_key, sample, k, 2 + int(math.log(k)))],
        counts=jnp.zeros((k,), X.dtype),
        frames_since_reassign=jnp.zeros((), jnp.int32),
        n_steps=jnp.zeros((), jnp.int32),
    )
    # scikit-learn's early stopping: an exponentially weighted average of the per-frame batch
    # inertia that has not improved for max_no_improvement steps.
    smoothing = min(1.0, 2.0 * batch_size / (n + 1))

    def step(carry):
        state, average, lowest, stale = carry
        batch_key, reassign_key = jax.random.split(jax.random.fold_in(steps_key, state.n_steps))
        batch = X[jax.random.randint(batch_key, (batch_size,), 0, n)]
        first = state.n_steps == 0
        state, inertia = _minibatch_step(reassign_key, state, batch, reassignment_ratio, chunk_size)
        inertia = inertia / batch_size
        # The first batch's inertia measures the seeding, not the updates; skipped as sklearn.
        average = jnp.where(
            first,
            jnp.nan,
            jnp.where(jnp.isnan(average), inertia, average * (1 - smoothing) + inertia * smoothing),
        )
        improved = average < lowest
        lowest = jnp.where(improved, average, lowest)
        stale = jnp.where(first | improved, 0, stale + 1)
        return state, average, lowest, stale

    def keep_going(carry):
        state, _, _, stale = carry
        return (state.n_steps < n_steps) & (stale < max_no_improvement)

    initial = (state, jnp.asarray(jnp.nan, X.dtype), jnp.asarray(jnp.inf, X.dtype), jnp.int32(0))
    state, _, _, _ = lax.while_loop(keep_going, step, initial)
    _, distances = nearest_centroids(X, state.centroids, chunk_size)
    return KMeans(
        centroids=state.centroids + mean, inertia=jnp.sum(distances), n_iter=state.n_steps
    )


def minibatch_kmeans_fit(
    key,
    X,
    k: int,
    batch_size: int = 1024,
    max_epochs: int = 100,
    max_no_improvement: int | None = 10,
    reassignment_ratio: float = 0.01,
    chunk_size: int | None = None,
) -> KMeans:
    """Fits mini-batch k-means on in-memory frames, as scikit-learn's `MiniBatchKMeans`.

    Seeds by k-means++ on `3 * batch_size` random frames, then takes batches drawn with
    replacement until `max_epochs * n_frames / batch_size` steps or until the smoothed batch
    inertia has not improved for `max_no_improvement` steps. For frames streamed from disk,
    use `minibatch_kmeans_init` and `minibatch_kmeans_update` directly.

    Args:
      key: a JAX PRNG key.
      X: `(n_frames, dim)` frames, validated on the host.
      k: number of clusters, `1 <= k <= n_frames`.
      batch_size: frames per step.
      max_epochs: maximum number of passes' worth of frames.
      max_no_improvement: steps without improvement before stopping; None never stops early.
      reassignment_ratio: see `minibatch_kmeans_update`.
      chunk_size: frames per distance block.

    Returns:
      The fitted `KMeans`, with the inertia over all of `X` and the number of steps taken.
    """
    validate_frames(X)
    n, _ = np.shape(X)
    _check_k(k, n)
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}.")
    n_steps = max(1, max_epochs * n // batch_size)
    X = jnp.asarray(X, jnp.result_type(float))
    return _minibatch_kmeans_fit(
        key,
        X,
        k,
        batch_size,
        n_steps,
        n_steps + 1 if max_no_improvement is None else max_no_improvement,
        reassignment_ratio,
        resolve_chunk_size(chunk_size, k),
    )
