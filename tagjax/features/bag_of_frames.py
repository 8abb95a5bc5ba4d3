"""Bag-of-frames: a clip summarised by how often its frames fall near each k-means centroid.

The temporal summary `f = T(X)` of the slides: each frame of `X` is assigned to the nearest of
the K centroids and the assignments are counted, giving a histogram that sums to 1. The soft
form weights each frame's assignment by a softmax over negative squared distances, which is
differentiable in the frames (and in the centroids), so it can sit inside a trained model.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from tagjax.features.kmeans import (
    KMeans,
    MiniBatchKMeansState,
    check_model_input,
    nearest_centroids,
    resolve_chunk_size,
)


@functools.partial(jax.jit, static_argnames="chunk_size")
def _hard_histogram(centroids, X, chunk_size):
    k = centroids.shape[0]
    *batch_shape, n_frames, dim = X.shape
    n_clips = int(np.prod(batch_shape))
    labels, _ = nearest_centroids(X.reshape(-1, dim), centroids, chunk_size)
    # One segment per (clip, centroid) pair; no (frames, k) one-hot is built.
    clip = jnp.repeat(jnp.arange(n_clips, dtype=jnp.int32), n_frames)
    counts = jax.ops.segment_sum(jnp.ones_like(labels, X.dtype), clip * k + labels, n_clips * k)
    return counts.reshape(*batch_shape, k) / n_frames


@jax.jit
def _soft_histogram(centroids, X, temperature):
    # Softmax over centroids is unchanged by the frame's own |x|^2, so only |c|^2 - 2 x.c is
    # needed; centring on the centroids keeps that difference accurate.
    shift = jnp.mean(centroids, axis=0)
    centroids = centroids - shift
    scores = jnp.sum(centroids * centroids, axis=1) - 2 * jnp.einsum(
        "...d,kd->...k", X - shift, centroids, precision=lax.Precision.HIGHEST
    )
    return jnp.mean(jax.nn.softmax(-scores / temperature, axis=-1), axis=-2)


def bag_of_frames(
    km: KMeans | MiniBatchKMeansState,
    X,
    soft: bool = False,
    temperature: float = 1.0,
    chunk_size: int | None = None,
) -> jax.Array:
    """Normalised histogram of the frames' nearest centroids.

    Jitted; also works inside a caller's `jit`, `vmap` and `grad`. When `X` is concrete it is
    checked on the host for NaN and infinite values first.

    Args:
      km: a fitted `KMeans` (or a `MiniBatchKMeansState`) with `(k, dim)` centroids.
      X: `(..., n_frames, dim)` frames of one clip or of a batch of clips.
      soft: if false, each frame counts 1 for its nearest centroid (piecewise constant, so the
        gradient is zero). If true, each frame spreads its weight over the centroids as
        `softmax(-|x - c|^2 / temperature)`, which is differentiable; as `temperature -> 0` it
        tends to the hard histogram. Memory is `(..., n_frames, k)` for the soft form, one
        block of `chunk_size` frames for the hard one.
      temperature: softness, in units of squared distance (a fraction of the typical squared
        distance between neighbouring centroids is a sensible scale).
      chunk_size: frames per distance block (hard form).

    Returns:
      `(..., k)` histogram; each sums to 1 over `k`.
    """
    check_model_input(km, X)
    if np.ndim(X) < 2 or np.shape(X)[-2] == 0:
        raise ValueError(f"X must be (..., n_frames, dim) with n_frames >= 1, got {np.shape(X)}.")
    X = jnp.asarray(X, km.centroids.dtype)
    if soft:
        if not isinstance(temperature, jax.core.Tracer) and not temperature > 0:
            raise ValueError(f"temperature must be positive, got {temperature}.")
        return _soft_histogram(km.centroids, X, temperature)
    return _hard_histogram(km.centroids, X, resolve_chunk_size(chunk_size, km.centroids.shape[0]))
