"""Small building blocks shared by the convolutional front ends."""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax


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


def _unfold(x, window, padding):
    """Every window of a one-channel image, as features: `(batch, time, freq, 1)` ->
    `(batch, time', freq', window_t * window_f)`, time-major within a window (the order of a
    `(window_t, window_f, 1, features)` kernel reshaped to `(window_t * window_f, features)`).
    `padding`: `((lo, hi), (lo, hi))` in time and frequency."""
    x = jnp.pad(x[..., 0], ((0, 0), *padding))
    window_t, window_f = window
    time, freq = x.shape[1] - window_t + 1, x.shape[2] - window_f + 1
    return jnp.stack([x[:, i:i + time, j:j + freq]
                      for i in range(window_t) for j in range(window_f)], axis=-1)


def _conv(x, kernel, padding, precision):
    return lax.conv_general_dilated(x, kernel, (1, 1), padding, precision=precision,
                                    dimension_numbers=("NHWC", "HWIO", "NHWC"))


def _unfolded_conv(x, kernel, padding, precision):
    window_t, window_f, _, features = kernel.shape
    return jnp.einsum("btfw,wc->btfc", _unfold(x, (window_t, window_f), padding),
                      kernel.reshape(window_t * window_f, features), precision=precision)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def single_channel_conv(x, kernel, padding, precision=None):
    """A stride-1 convolution of a one-channel image: `(batch, time, freq, 1)` with
    `(window_t, window_f, 1, features)` -> `(batch, time', freq', features)`, with explicit
    `padding` `((lo, hi), (lo, hi))`.

    The forward pass is XLA's convolution (`flax.linen.Conv`'s values exactly). On the CPU the
    gradient is computed as matrix products on the unfolded windows instead: XLA's CPU
    backward convolutions are slow for one input channel and long kernels (musicnn's 7 x 38 and
    128 x 1 filters: 3-6x the time of this, and 10-30x their own forward pass), which made
    fine-tuning musicnn take minutes a step. Elsewhere the gradient is XLA's own.
    """
    return _conv(x, kernel, padding, precision)


def _single_channel_conv_fwd(x, kernel, padding, precision):
    return _conv(x, kernel, padding, precision), (x, kernel)


def _single_channel_conv_bwd(padding, precision, residuals, grad):
    x, kernel = residuals

    def gradient(conv):
        return tuple(jax.vjp(lambda x, k: conv(x, k, padding, precision), x, kernel)[1](grad))

    return lax.platform_dependent(cpu=lambda: gradient(_unfolded_conv),
                                  default=lambda: gradient(_conv))


single_channel_conv.defvjp(_single_channel_conv_fwd, _single_channel_conv_bwd)


class SingleChannelConv(nn.Module):
    """`flax.linen.Conv` (same parameters, initialisers and values) for a one-channel input
    `(batch, time, freq, 1)`, with `single_channel_conv`'s faster gradient on the CPU.

    Attributes:
      features: output channels.
      kernel_size: `(window_t, window_f)`.
      padding: "SAME", "VALID" or `((lo, hi), (lo, hi))`, as `flax.linen.Conv` takes it.
      precision: of the convolution and of the gradient's products.
    """

    features: int
    kernel_size: tuple[int, int]
    padding: str | tuple = "SAME"
    precision: str | None = None

    @nn.compact
    def __call__(self, x):
        if x.ndim != 4 or x.shape[-1] != 1:
            raise ValueError(f"expected (batch, time, freq, 1), got {x.shape}")
        kernel = self.param("kernel", nn.initializers.lecun_normal(),
                            (*self.kernel_size, 1, self.features))
        bias = self.param("bias", nn.initializers.zeros_init(), (self.features,))
        padding = self.padding
        if isinstance(padding, str):
            padding = lax.padtype_to_pads(x.shape[1:3], self.kernel_size, (1, 1), padding)
        padding = tuple((int(lo), int(hi)) for lo, hi in padding)
        return single_channel_conv(x, kernel, padding, self.precision) + bias
