"""Small building blocks shared by the convolutional front ends."""

import jax.numpy as jnp


def block_max_pool(x, window):
    """Max over non-overlapping windows (stride = window), rounding the output size up.

    The same values as `flax.linen.max_pool(x, window, strides=window, padding="SAME")` for
    windows that divide the input, and at the edge the max over what is left (padding with
    -inf). Written as a reshape and a max rather than a `reduce_window`, whose gradient
    (`select_and_scatter_add`) takes XLA's CPU backend several times longer to compile and run.

    Args:
      x: `(batch, time, freq, channels)`.
      window: `(time, freq)` pool sizes.

    Returns:
      `(batch, ceil(time / window[0]), ceil(freq / window[1]), channels)`.
    """
    batch, time, freq, channels = x.shape
    pool_t, pool_f = window
    out_t, out_f = -(-time // pool_t), -(-freq // pool_f)
    if (out_t * pool_t, out_f * pool_f) != (time, freq):
        padding = ((0, 0), (0, out_t * pool_t - time), (0, out_f * pool_f - freq), (0, 0))
        x = jnp.pad(x, padding, constant_values=-jnp.inf)
    return x.reshape(batch, out_t, pool_t, out_f, pool_f, channels).max(axis=(2, 4))
