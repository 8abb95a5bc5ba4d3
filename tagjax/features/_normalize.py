"""Vector normalisation along one axis, as librosa's `util.normalize` with its defaults."""

import jax
import jax.numpy as jnp
import numpy as np


def normalize(x: jax.Array, norm: float | None, axis: int = -1) -> jax.Array:
    """Divides `x` by its `norm` along `axis`, leaving vectors with a norm below `tiny` as is.

    Args:
      x: real array.
      norm: None (no-op), `np.inf` (max of magnitudes), `-np.inf` (min) or p > 0 (p-norm).
      axis: the axis holding the vectors.

    Returns:
      An array shaped like `x`.
    """
    if norm is None:
        return x
    magnitude = jnp.abs(x)
    if norm == np.inf:
        length = jnp.max(magnitude, axis=axis, keepdims=True)
    elif norm == -np.inf:
        length = jnp.min(magnitude, axis=axis, keepdims=True)
    else:
        length = jnp.sum(magnitude**norm, axis=axis, keepdims=True) ** (1.0 / norm)
    # librosa's threshold: the smallest normal number of the dtype (silence stays zero, not NaN).
    length = jnp.where(length < jnp.finfo(x.dtype).tiny, 1.0, length)
    return x / length


def normalize_np(x: np.ndarray, norm: float | None, axis: int) -> np.ndarray:
    """The NumPy float64 twin of `normalize`, for building filterbanks."""
    if norm is None:
        return x
    magnitude = np.abs(x)
    if norm == np.inf:
        length = magnitude.max(axis=axis, keepdims=True)
    elif norm == -np.inf:
        length = magnitude.min(axis=axis, keepdims=True)
    else:
        length = np.sum(magnitude**norm, axis=axis, keepdims=True) ** (1.0 / norm)
    length = np.where(length < np.finfo(x.dtype).tiny, 1.0, length)
    return x / length
