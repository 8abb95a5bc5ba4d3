"""Small building blocks shared by the convolutional front ends."""

import functools
import itertools
import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax import lax


def _pool_windows(x, window, fill):
    """`(batch, time, freq, channels)` -> `(batch, time', pool_t, freq', pool_f, channels)`,
    padded at the end with `fill` (per channel) to whole windows."""
    batch, time, freq, channels = x.shape
    pool_t, pool_f = window
    out_t, out_f = -(-time // pool_t), -(-freq // pool_f)
    if (out_t * pool_t, out_f * pool_f) != (time, freq):
        edge = jnp.broadcast_to(fill, (batch, out_t * pool_t, out_f * pool_f, channels))
        x = edge.at[:, :time, :freq].set(x)
    return x.reshape(batch, out_t, pool_t, out_f, pool_f, channels)


# Windows of up to this many pixels count the ties of the max pool's gradient one pixel at a time
# (`_signed_block_max_pool_bwd`); XLA's compile time grows with the number of slices.
_MAX_SLICED_WINDOW = 16


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def signed_block_max_pool(x, sign, window):
    """`sign * block_max_pool(sign * x, window)` for a per-channel `sign` of +1 or -1 (the max
    or the min of each window), without a full-resolution copy of `sign * x`.

    The gradient goes to the pixels of a window equal to its result, shared equally among ties
    (as autodiff of `jnp.max` shares it), computed from `x` and the pooled values alone: one
    pass counts the ties, one writes the gradient. Autodiff of the reshape-and-max takes four
    full-resolution passes and keeps `sign * x` for them. `sign` is taken as a constant (its
    gradient is zero).

    Args:
      x: `(batch, time, freq, channels)`.
      sign: `(channels,)`, +1 or -1.
      window: `(time, freq)` pool sizes.

    Returns:
      `(batch, ceil(time / window[0]), ceil(freq / window[1]), channels)`.
    """
    windows = _pool_windows(x, window, -sign * jnp.inf)
    return jnp.where(sign > 0, windows.max(axis=(2, 4)), windows.min(axis=(2, 4)))


def _signed_block_max_pool_fwd(x, sign, window):
    pooled = signed_block_max_pool(x, sign, window)
    return pooled, (x, sign, pooled)


def _signed_block_max_pool_bwd(window, residuals, grad):
    x, sign, pooled = residuals
    # x == pooled exactly where sign * x == sign * pooled: the sign drops out. Padding holds
    # -sign * inf, which equals no window's result.
    windows = _pool_windows(x, window, -sign * jnp.inf)
    chosen = windows == pooled[:, :, None, :, None, :]
    if window[0] * window[1] <= _MAX_SLICED_WINDOW:
        # The ties counted as a sum of one comparison per window pixel, one fused pass over x.
        # As a reduction, XLA's CPU backend hands the sum to YNNPACK and first writes the
        # comparisons out at full resolution as floats, on one core (cnn_lstm's step: 166 ->
        # 154 ms).
        ties = sum((windows[:, :, i, :, j, :] == pooled).astype(grad.dtype)
                   for i in range(window[0]) for j in range(window[1]))
    else:
        ties = jnp.sum(chosen, axis=(2, 4), dtype=grad.dtype)
    share = (grad / ties)[:, :, None, :, None, :]
    x_grad = jnp.where(chosen, share, 0).reshape(x.shape[0], -1, windows.shape[3] * window[1],
                                                 x.shape[3])
    return x_grad[:, :x.shape[1], :x.shape[2]], jnp.zeros_like(sign)


signed_block_max_pool.defvjp(_signed_block_max_pool_fwd, _signed_block_max_pool_bwd)


def block_max_pool(x, window):
    """Max over non-overlapping windows (stride = window), rounding the output size up.

    The same values as `flax.linen.max_pool(x, window, strides=window, padding="SAME")` for
    windows that divide the input, and at the edge the max over what is left (padding with
    -inf). Written as a reshape and a max rather than a `reduce_window`, whose gradient
    (`select_and_scatter_add`) takes XLA's CPU backend several times longer to compile and run,
    with the gradient of `signed_block_max_pool`.

    Args:
      x: `(batch, time, freq, channels)`.
      window: `(time, freq)` pool sizes.

    Returns:
      `(batch, ceil(time / window[0]), ceil(freq / window[1]), channels)`.
    """
    return signed_block_max_pool(x, jnp.ones(x.shape[-1:], x.dtype), window)


def _unfold(x, window, padding):
    """Every window of a one-channel image: `(batch, time, freq, 1)` ->
    `(window_t * window_f, batch, time', freq')`, each shifted copy one contiguous block,
    time-major within a window (the order of a `(window_t, window_f, 1, features)` kernel
    reshaped to `(window_t * window_f, features)`). `padding`: `((lo, hi), (lo, hi))` in time
    and frequency.
    """
    x = jnp.pad(x[..., 0], ((0, 0), *padding))
    window_t, window_f = window
    time, freq = x.shape[1] - window_t + 1, x.shape[2] - window_f + 1
    return jnp.stack([x[:, i:i + time, j:j + freq]
                      for i in range(window_t) for j in range(window_f)])


def _fold(windows, window, padding, shape):
    """The transpose of `_unfold`: `(window_t * window_f, batch, time', freq')` -> the
    `(batch, time, freq, 1)` image of `shape` whose every pixel sums what its windows hold."""
    window_t, window_f = window
    (pad_t, _), (pad_f, _) = padding
    _, time_out, freq_out = windows.shape[1:]
    padded_t, padded_f = time_out + window_t - 1, freq_out + window_f - 1
    image = sum(jnp.pad(windows[i * window_f + j],
                        ((0, 0), (i, padded_t - time_out - i), (j, padded_f - freq_out - j)))
                for i in range(window_t) for j in range(window_f))
    return image[:, pad_t:pad_t + shape[1], pad_f:pad_f + shape[2], None]


def _conv(x, kernel, padding, precision):
    return lax.conv_general_dilated(x, kernel, (1, 1), padding, precision=precision,
                                    dimension_numbers=("NHWC", "HWIO", "NHWC"))


# Up to this many taps, the input's gradient is folded back from the windows as one fused sum
# of shifted copies; XLA takes minutes to compile that sum for musicnn's hundreds of taps (7 x 38:
# 336 s against 169 s for its whole fine-tuning step), so longer windows take the transpose of
# the unfolding from autodiff instead (1.4x slower to run there), unfolded in two levels.
_MAX_FOLDED_TAPS = 16


def _two_level_shifts(window: int) -> tuple[int, int]:
    """`(step, groups)` with `step * groups >= window`: shifts by `0 .. step - 1`, then by
    multiples of `step`, reach every offset of a window in `step + groups` slices; the fewest
    padded taps, then the fewest slices. Windows of up to 16 taps are cut in one level."""
    if window <= _MAX_FOLDED_TAPS:
        return window, 1
    smallest = math.isqrt(window - 1) + 1  # ceil(sqrt(window))
    return min(((step, -(-window // step)) for step in range(smallest, 2 * smallest + 1)),
               key=lambda split: (split[0] * split[1], split[0] + split[1]))


def _shifted_copies(x, window, axis):
    """`(..., length, ...)` -> `(..., length - window + 1, ..., taps)`: `x` shifted by
    `0, 1, .., taps - 1` along `axis`, stacked last, `taps = step * groups` of
    `_two_level_shifts(window)` (the copies past `window - 1` read zeros).

    Two levels of slices instead of one per offset: with hundreds of slices and their
    transposes, XLA took 161 s to compile musicnn's fine-tuning step (tiny config), 22 s this
    way (10 s with XLA's own, slower-running, convolution gradients)."""
    step, groups = _two_level_shifts(window)
    out = x.shape[axis] - window + 1
    padding = [(0, 0)] * x.ndim
    padding[axis] = (0, step * groups - window)
    x = jnp.pad(x, padding)
    fine_length = out + (groups - 1) * step
    fine = jnp.stack([lax.slice_in_dim(x, b, b + fine_length, axis=axis) for b in range(step)],
                     axis=-1)
    coarse = jnp.stack([lax.slice_in_dim(fine, a * step, a * step + out, axis=axis)
                        for a in range(groups)], axis=-2)
    return coarse.reshape(*coarse.shape[:-2], step * groups)


def _unfolded_gradient(x, kernel, padding, precision, grad):
    """The gradient of `_conv` for a one-channel `x` as matrix products with the unfolded
    windows: `(taps, n) @ (n, features)` for the kernel and `(taps, features) @ (features, n)`
    for the input, `n` the output pixels and `taps = kernel_t * kernel_f`."""
    window_t, window_f, _, features = kernel.shape
    taps = window_t * window_f
    if taps > _MAX_FOLDED_TAPS:
        # Windows of `taps_t x taps_f` (a few zero taps more than the kernel's) in two levels
        # of slices per axis; autodiff gives the input's gradient.
        taps_t, taps_f = (math.prod(_two_level_shifts(w)) for w in (window_t, window_f))
        padded = jnp.pad(kernel, ((0, taps_t - window_t), (0, taps_f - window_f), (0, 0), (0, 0)))

        def unfolded_conv(x, flat_kernel):
            image = jnp.pad(x[..., 0], ((0, 0), *padding))
            windows = _shifted_copies(_shifted_copies(image, window_t, 1), window_f, 2)
            windows = windows.reshape(*windows.shape[:3], taps_t * taps_f)
            return jnp.einsum("btfw,wc->btfc", windows, flat_kernel, precision=precision)

        x_grad, kernel_grad = jax.vjp(unfolded_conv, x,
                                      padded.reshape(taps_t * taps_f, features))[1](grad)
        kernel_grad = kernel_grad.reshape(taps_t, taps_f, 1, features)[:window_t, :window_f]
        return x_grad, kernel_grad
    flat_kernel = kernel.reshape(taps, features)
    flat_grad = grad.reshape(-1, features)
    windows = _unfold(x, (window_t, window_f), padding)
    kernel_grad = jnp.dot(windows.reshape(taps, -1), flat_grad, precision=precision)
    window_grad = lax.dot_general(flat_kernel, flat_grad, (((1,), (1,)), ((), ())),
                                  precision=precision).reshape(windows.shape)
    return (_fold(window_grad, (window_t, window_f), padding, x.shape),
            kernel_grad.reshape(kernel.shape))


def _shifted_sum_conv(x, kernel, padding):
    """`_conv` of a one-channel image as the sum over taps of each shifted copy of the image
    times the tap's kernel row, in tap order: one fused elementwise pass."""
    window_t, window_f, _, features = kernel.shape
    windows = _unfold(x, (window_t, window_f), padding)
    flat_kernel = kernel.reshape(window_t * window_f, features)
    y = windows[0][..., None] * flat_kernel[0]
    for tap in range(1, window_t * window_f):
        y = y + windows[tap][..., None] * flat_kernel[tap]
    return y


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def single_channel_conv(x, kernel, padding, precision=None):
    """A stride-1 convolution of a one-channel image: `(batch, time, freq, 1)` with
    `(window_t, window_f, 1, features)` -> `(batch, time', freq', features)`, with explicit
    `padding` `((lo, hi), (lo, hi))`.

    The forward pass is XLA's convolution (`flax.linen.Conv`'s values exactly), except on the
    CPU for kernels of up to 16 taps: there it is the sum of the shifted images times the
    kernel's taps (`_shifted_sum_conv`, equal up to float32 summation order). XLA's CPU
    convolution (YNNPACK's) runs a one-channel input on one core at a fraction of the memory
    bandwidth: Choi's 3 x 3 first layer at the log-mel's full resolution took 29 ms of
    cnn_lstm's step, the sum 4. On the CPU the gradient is computed as matrix products on the
    unfolded windows: XLA's CPU backward convolutions are slow for one input channel and long
    kernels (musicnn's 7 x 38 and 128 x 1 filters: 3-6x the time of this, and 10-30x their own
    forward pass), which made fine-tuning musicnn take minutes a step, and for the 3 x 3 first
    layer of Choi's CNN (3-5x). Elsewhere the gradient is XLA's own.
    """
    return _single_channel_conv_fwd(x, kernel, padding, precision)[0]


def _single_channel_conv_fwd(x, kernel, padding, precision):
    if kernel.shape[0] * kernel.shape[1] > _MAX_FOLDED_TAPS:
        y = _conv(x, kernel, padding, precision)
    else:
        y = lax.platform_dependent(
            x, kernel, cpu=lambda x, k: _shifted_sum_conv(x, k, padding),
            default=lambda x, k: _conv(x, k, padding, precision))
    return y, (x, kernel)


def _single_channel_conv_bwd(padding, precision, residuals, grad):
    x, kernel = residuals

    def xla_gradient():
        return tuple(jax.vjp(lambda x, k: _conv(x, k, padding, precision), x, kernel)[1](grad))

    return lax.platform_dependent(
        cpu=lambda: _unfolded_gradient(x, kernel, padding, precision, grad),
        default=xla_gradient)


single_channel_conv.defvjp(_single_channel_conv_fwd, _single_channel_conv_bwd)


class SingleChannelConv(nn.Module):
    """`flax.linen.Conv` (same parameters, initialisers and values) for a one-channel input
    `(batch, time, freq, 1)`, with `single_channel_conv`'s faster gradient on the CPU.

    Attributes:
      features: output channels.
      kernel_size: `(window_t, window_f)`.
      padding: "SAME", "VALID" or `((lo, hi), (lo, hi))`, as `flax.linen.Conv` takes it.
      precision: of the convolution and of the gradient's products.
      use_bias: whether to add a bias (as `flax.linen.Conv`'s `use_bias`).
    """

    features: int
    kernel_size: tuple[int, int]
    padding: str | tuple = "SAME"
    precision: str | None = None
    use_bias: bool = True

    @nn.compact
    def __call__(self, x):
        if x.ndim != 4 or x.shape[-1] != 1:
            raise ValueError(f"expected (batch, time, freq, 1), got {x.shape}")
        kernel = self.param("kernel", nn.initializers.lecun_normal(),
                            (*self.kernel_size, 1, self.features))
        padding = self.padding
        if isinstance(padding, str):
            padding = lax.padtype_to_pads(x.shape[1:3], self.kernel_size, (1, 1), padding)
        padding = tuple((int(lo), int(hi)) for lo, hi in padding)
        y = single_channel_conv(x, kernel, padding, self.precision)
        if self.use_bias:
            y = y + self.param("bias", nn.initializers.zeros_init(), (self.features,))
        return y


def _batch_statistics(x):
    """Each channel's mean and variance over all other axes, as `flax.linen.BatchNorm` takes them
    (`E[x^2] - E[x]^2`, clipped at 0)."""
    axes = tuple(range(x.ndim - 1))
    mean = jnp.mean(x, axes)
    return mean, jnp.maximum(0.0, jnp.mean(lax.square(x), axes) - lax.square(mean))


@functools.partial(jax.custom_vjp, nondiff_argnums=(3,))
def batch_normalized(x, scale, bias, epsilon):
    """`x (..., channels)` normalised with its own statistics, as `flax.linen.BatchNorm` in
    training: `(y, mean, var)`, the same values, with the textbook gradient: the two channel sums
    of the output's gradient (`dy`, `dy * x_hat`), then one pass for the input's.

    Autodiff through the statistics gives XLA a longer chain of passes; at the short-chunk
    ResNet's first resolution (16 x 116 x 64 x 128) a batch norm and ReLU forward and back took
    34.8 against 19.1 ms on a 2-core EPYC (family 25).
    """
    return _batch_normalized_fwd(x, scale, bias, epsilon)[0]


def _batch_normalized_fwd(x, scale, bias, epsilon):
    mean, var = _batch_statistics(x)
    inverse_std = lax.rsqrt(var + epsilon)
    # BatchNorm's order of operations, so that the values are its values.
    y = (x - mean) * (inverse_std * scale) + bias
    return (y, mean, var), (x, mean, inverse_std, scale)


def _batch_normalized_bwd(epsilon, residuals, cotangents):
    x, mean, inverse_std, scale = residuals
    grad, mean_grad, var_grad = cotangents
    axes = tuple(range(x.ndim - 1))
    count = x.size // x.shape[-1]
    centred = x - mean
    x_hat = centred * inverse_std
    bias_grad = grad.sum(axes)
    scale_grad = (grad * x_hat).sum(axes)
    x_grad = (scale * inverse_std / count) * (count * grad - bias_grad - x_hat * scale_grad)
    # The statistics' own cotangents (zero when they only feed the running averages).
    x_grad = x_grad + (mean_grad + 2.0 * var_grad * centred) / count
    return x_grad, scale_grad, bias_grad


batch_normalized.defvjp(_batch_normalized_fwd, _batch_normalized_bwd)


def _batch_norm_variables(module: nn.Module, channels: int) -> tuple:
    """`flax.linen.BatchNorm`'s variables, declared in `module`: `((running_mean, running_var),
    (scale, bias))`, the first two `batch_stats` variables, the others parameters, each
    `(channels,)` float32 with BatchNorm's initialisers."""
    features = (channels,)
    running = (module.variable("batch_stats", "mean", jnp.zeros, features, jnp.float32),
               module.variable("batch_stats", "var", jnp.ones, features, jnp.float32))
    return running, (module.param("scale", nn.initializers.ones, features, jnp.float32),
                     module.param("bias", nn.initializers.zeros, features, jnp.float32))


def _update_running_averages(module: nn.Module, running: tuple, mean, var,
                             momentum: float) -> None:
    """BatchNorm's running averages moved towards a batch's `mean` and `var`, except while
    `module` is initialised."""
    if module.is_initializing():
        return
    running_mean, running_var = running
    running_mean.value = momentum * running_mean.value + (1 - momentum) * mean
    running_var.value = momentum * running_var.value + (1 - momentum) * var


class BatchNorm(nn.Module):
    """`flax.linen.BatchNorm` over the last axis (the same variables, initialisers, running
    averages and values) whose training-mode gradient is `batch_normalized`'s.

    Attributes:
      use_running_average, momentum, epsilon: as `flax.linen.BatchNorm`'s.
    """

    use_running_average: bool = False
    momentum: float = 0.99
    epsilon: float = 1e-5

    @nn.compact
    def __call__(self, x):
        running, (scale, bias) = _batch_norm_variables(self, x.shape[-1])
        x = x.astype(jnp.promote_types(x.dtype, jnp.float32))
        if self.use_running_average:
            mean, var = (variable.value for variable in running)
            return (x - mean) * (lax.rsqrt(var + self.epsilon) * scale) + bias
        y, mean, var = batch_normalized(x, scale, bias, self.epsilon)
        _update_running_averages(self, running, mean, var, self.momentum)
        return y


class MaxPooledBatchNorm(nn.Module):
    """`block_max_pool(flax.linen.BatchNorm()(x), window)`, with the same variables and values,
    normalising after pooling: `(batch, time, freq, channels)` ->
    `(batch, ceil(time / window[0]), ceil(freq / window[1]), channels)`.

    The statistics are those of the whole `x`; then each channel's normalisation is an
    increasing map (or a decreasing one, for a negative scale), so it commutes with the max
    (or the min) of a window, in floating point too. Normalising the pooled values alone saves
    the full-resolution passes of the normalisation, and of an increasing activation applied
    after this, forward and backward: most of the time of a first layer at the log-mel's
    resolution. Only the last axis is a feature axis (`BatchNorm`'s default).

    Attributes:
      window: `(time, freq)` pool sizes (= strides).
      use_running_average, momentum, epsilon: as `flax.linen.BatchNorm`'s.
    """

    window: tuple[int, int]
    use_running_average: bool = False
    momentum: float = 0.99
    epsilon: float = 1e-5

    @nn.compact
    def __call__(self, x):
        running, (scale, bias) = _batch_norm_variables(self, x.shape[-1])
        if self.use_running_average:
            mean, var = (variable.value for variable in running)
        else:
            mean, var = _batch_statistics(x.astype(jnp.promote_types(x.dtype, jnp.float32)))
            _update_running_averages(self, running, mean, var, self.momentum)
        # BatchNorm's order of operations, so that the values are its values.
        multiplier = lax.rsqrt(var + self.epsilon) * scale
        # A negative multiplier turns the max into the min: -max(-x), exactly, in float too.
        sign = lax.stop_gradient(jnp.where(multiplier < 0, -1.0, 1.0)).astype(x.dtype)
        pooled = signed_block_max_pool(x, sign, self.window)
        return ((pooled - mean) * multiplier + bias).astype(jnp.result_type(x, scale))


def _conv_strided(x, kernel, strides, padding):
    return lax.conv_general_dilated(x, kernel, strides, padding,
                                    dimension_numbers=("NHWC", "HWIO", "NHWC"))


# Convolutions whose output maps have at most this many pixels (time' x freq') are one matrix
# product of their patches on the CPU (`patch_product_conv`). XLA's CPU convolutions of such
# maps, and its input gradients of strided ones (lhs-dilated), take a slow generic path: in the
# short-chunk ResNet's last two blocks (4 x 2 and 2 x 1 maps, 256-512 channels, batch 16) 20-77
# ms each, where the products take 2-6 ms. At 8 x 4 they gain 1.2-18x, at 15 x 8 they lose in
# the forward pass (23.3 against 26.6 ms, stride 1).
_SMALL_MAP_PIXELS = 32


def _output_map(shape, window, strides, padding) -> tuple[int, int]:
    """`(time', freq')`, the output map of a convolution of a `shape` `(batch, time, freq,
    channels)` input."""
    (pad_t, pad_t_hi), (pad_f, pad_f_hi) = padding
    return ((shape[1] + pad_t + pad_t_hi - window[0]) // strides[0] + 1,
            (shape[2] + pad_f + pad_f_hi - window[1]) // strides[1] + 1)


def _patches(x, window, strides, padding):
    """The input pixels under every output pixel: `(batch, time, freq, channels)` ->
    `(batch x time' x freq', window_t x window_f x channels)`, in the order of a `(window_t,
    window_f, channels, features)` kernel reshaped to `(window_t x window_f x channels,
    features)`."""
    (window_t, window_f), (stride_t, stride_f) = window, strides
    time_out, freq_out = _output_map(x.shape, window, strides, padding)
    padded = jnp.pad(x, ((0, 0), *padding, (0, 0)))
    taps = [padded[:, i:i + stride_t * (time_out - 1) + 1:stride_t,
                   j:j + stride_f * (freq_out - 1) + 1:stride_f]
            for i in range(window_t) for j in range(window_f)]
    return jnp.stack(taps, axis=3).reshape(-1, window_t * window_f * x.shape[-1])


def _unpatch(patches, window, strides, padding, shape):
    """The transpose of `_patches`: every output pixel's `(window_t x window_f x channels)`
    row added back onto the input pixels it read -> `(batch, time, freq, channels)` of
    `shape`."""
    batch, time, freq, channels = shape
    (window_t, window_f), (stride_t, stride_f) = window, strides
    (pad_t, pad_t_hi), (pad_f, pad_f_hi) = padding
    padded_t, padded_f = time + pad_t + pad_t_hi, freq + pad_f + pad_f_hi
    time_out, freq_out = _output_map(shape, window, strides, padding)
    taps = patches.reshape(batch, time_out, freq_out, window_t * window_f, channels)
    zero = jnp.zeros((), patches.dtype)
    image = sum(lax.pad(taps[:, :, :, i * window_f + j], zero,
                        ((0, 0, 0),
                         (i, padded_t - i - stride_t * (time_out - 1) - 1, stride_t - 1),
                         (j, padded_f - j - stride_f * (freq_out - 1) - 1, stride_f - 1),
                         (0, 0, 0)))
                for i in range(window_t) for j in range(window_f))
    return image[:, pad_t:pad_t + time, pad_f:pad_f + freq]


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def patch_product_conv(x, kernel, strides, padding):
    """`_conv_strided` as one `(pixels, window_t x window_f x channels_in) @ (window_t x
    window_f x channels_in, channels_out)` product of the patches (im2col), and its gradients
    as products too, for small maps and one-channel inputs, where XLA's CPU convolutions are
    slow (`_by_patch_products`).
    Shapes as `conv`'s; equal to XLA's convolution up to float32 summation order.
    """
    return _patch_product_conv_fwd(x, kernel, strides, padding)[0]


def _patch_product_conv_fwd(x, kernel, strides, padding):
    patches = _patches(x, kernel.shape[:2], strides, padding)
    y = patches @ kernel.reshape(patches.shape[-1], -1)
    time_out, freq_out = _output_map(x.shape, kernel.shape[:2], strides, padding)
    return y.reshape(x.shape[0], time_out, freq_out, -1), (patches, kernel, x)


def _patch_product_conv_bwd(strides, padding, residuals, grad):
    patches, kernel, x = residuals
    flat_grad = grad.reshape(-1, grad.shape[-1])
    flat_kernel = kernel.reshape(patches.shape[-1], -1)
    x_grad = _unpatch(flat_grad @ flat_kernel.T, kernel.shape[:2], strides, padding, x.shape)
    return x_grad, (patches.T @ flat_grad).reshape(kernel.shape)


patch_product_conv.defvjp(_patch_product_conv_fwd, _patch_product_conv_bwd)


def _fusion_fence(x):
    """`x`, written to a buffer of its own that its readers read: XLA cannot fuse the operations
    that compute `x` into them.

    `x` passes through a conditional whose predicate, `not v > v` for an element `v` of `x`,
    holds for every float, NaN included, but which XLA does not fold: the other branch is never
    taken. (`lax.optimization_barrier` is removed before XLA's fusion passes run.)
    """
    if x.size == 0:
        return x
    v = x.reshape(-1)[0]
    return lax.cond(jnp.logical_not(v > v), lambda x: x, lambda x: -x, x)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def fenced_gradient_conv(x, kernel, strides, padding):
    """`_conv_strided` and XLA's gradients of it, the kernel gradient reading the input through
    `_fusion_fence`. Shapes as `conv`'s; the same values.

    XLA's kernel gradient (a backward-filter convolution) reads the input transposed to
    `(channels, time, freq, batch)`. Left to itself, XLA's CPU backend recomputes the input
    (the previous layer's batch norm, residual sum and ReLU) inside that transpose, in a loop
    that is 11x slower than the transpose of a stored input (short-chunk ResNet's block 0
    output, batch 16: 125 against 11 ms, 193 ms in the whole step). The stored copy costs one
    pass over the input. Training steps on a 2-core EPYC (family 25), in one process,
    alternated: `short_res` 1673 -> 1524 ms; `cnn_lstm`, `fcn` and `crnn` within 1%.
    """
    return _conv_strided(x, kernel, strides, padding)


def _fenced_gradient_conv_fwd(x, kernel, strides, padding):
    return _conv_strided(x, kernel, strides, padding), (x, kernel)


def _fenced_gradient_conv_bwd(strides, padding, residuals, grad):
    x, kernel = residuals
    x_grad, = jax.vjp(lambda x: _conv_strided(x, kernel, strides, padding), x)[1](grad)
    fenced = _fusion_fence(x)
    kernel_grad, = jax.vjp(lambda k: _conv_strided(fenced, k, strides, padding), kernel)[1](grad)
    return x_grad, kernel_grad


fenced_gradient_conv.defvjp(_fenced_gradient_conv_fwd, _fenced_gradient_conv_bwd)


# Winograd's minimal filtering F(2 x 2, 3 x 3) (Lavin and Gray, "Fast Algorithms for
# Convolutional Neural Networks", CVPR 2016): a 2 x 2 output tile of a 3 x 3 convolution from its
# 4 x 4 input tile d as A^T [(G g G^T) * (B^T d B)] A, 16 multiplications per channel pair
# instead of 36. Rows of B^T, G and A^T:
_WINOGRAD_INPUT = ((1, 0, -1, 0), (0, 1, 1, 0), (0, -1, 1, 0), (0, 1, 0, -1))
_WINOGRAD_KERNEL = ((1, 0, 0), (0.5, 0.5, 0.5), (0.5, -0.5, 0.5), (0, 0, 1))
_WINOGRAD_OUTPUT = ((1, 1, 1, 0), (0, 1, -1, -1))


def _combination(coefficients, terms):
    """`sum(c * t for c, t in zip(coefficients, terms))`, skipping zeros, with 1 and -1 as
    additions and subtractions (XLA does not drop multiplications by one)."""
    total = None
    for c, term in zip(coefficients, terms, strict=True):
        if c == 0:
            continue
        scaled = term if c == 1 else -term if c == -1 else c * term
        total = scaled if total is None else total + scaled
    return total


def _tile_count(x_shape) -> tuple[int, int]:
    """`(tiles_t, tiles_f)`: 2 x 2 output tiles covering a `(batch, time, freq, channels)` map."""
    return -(-x_shape[1] // 2), -(-x_shape[2] // 2)


def _tile_transform(x, matrix):
    """M d M^T for every s x s tile d, at stride 2, of `x` padded by (s - 2) / 2 pixels before
    (and after, to whole tiles), for the rows `matrix` of M (s entries each): `(batch, time,
    freq, channels)` -> `len(matrix)` x `len(matrix)` lists of `(batch x tiles_t x tiles_f,
    channels)`. B^T (4 x 4 tiles, overlapping) transforms the input, A (2 x 2 tiles, the
    columns of A^T) the output's gradient."""
    batch, time, freq, channels = x.shape
    tiles_t, tiles_f = _tile_count(x.shape)
    size = len(matrix[0])
    before = (size - 2) // 2
    padded = jnp.pad(x, ((0, 0), (before, 2 * tiles_t + size - 2 - before - time),
                         (before, 2 * tiles_f + size - 2 - before - freq), (0, 0)))
    # Tile (i, j) starts at padded pixel (2i, 2j); with rows and columns split into even and
    # odd, its pixel (r, c) over all tiles is a contiguous slice.
    halves = padded.reshape(batch, tiles_t + size // 2 - 1, 2, tiles_f + size // 2 - 1, 2,
                            channels)
    pixel = [[halves[:, r // 2:r // 2 + tiles_t, r % 2, c // 2:c // 2 + tiles_f, c % 2]
              for c in range(size)] for r in range(size)]
    rows = [[_combination(m_row, [pixel[r][c] for r in range(size)]) for c in range(size)]
            for m_row in matrix]
    return [[_combination(m_row, rows[a]).reshape(-1, channels) for m_row in matrix]
            for a in range(len(matrix))]


def _winograd_kernel_tiles(kernel):
    """G g G^T: `(3, 3, channels_in, channels_out)` -> `(4, 4, channels_in, channels_out)`."""
    transform = np.asarray(_WINOGRAD_KERNEL, kernel.dtype)
    return jnp.einsum("ai,ijck,bj->abck", transform, kernel, transform,
                      precision=lax.Precision.HIGHEST)


def _winograd_output(products, shape):
    """A^T m A for every tile of 4 x 4 lists `products` of `(batch x tiles_t x tiles_f,
    channels)`, the tiles put in place: -> `(batch, time, freq, channels)` of `shape`'s map."""
    batch, time, freq = shape[:3]
    tiles_t, tiles_f = _tile_count(shape)
    m = [[p.reshape(batch, tiles_t, tiles_f, -1) for p in row] for row in products]
    rows = [[_combination(a_row, [m[a][b] for a in range(4)]) for b in range(4)]
            for a_row in _WINOGRAD_OUTPUT]
    tiles = jnp.stack([jnp.stack([_combination(a_row, rows[r]) for a_row in _WINOGRAD_OUTPUT],
                                 axis=3) for r in range(2)], axis=2)
    return tiles.reshape(batch, 2 * tiles_t, 2 * tiles_f, -1)[:, :time, :freq]


def _winograd_conv3x3(x, kernel):
    """`_conv_strided(x, kernel, (1, 1), ((1, 1), (1, 1)))` for a 3 x 3 `kernel` by F(2 x 2,
    3 x 3): the transformed input tiles times the transformed kernel, one `(tiles, channels_in)
    @ (channels_in, channels_out)` product for each of the 16 tile positions, then the output
    transform. The input is read through `_fusion_fence`: fused into the transforms, which
    read every pixel several times, the layer before (batch norm, ReLU) would be recomputed.
    The products do 4/9 of a direct convolution's multiply-adds."""
    tiles = _tile_transform(_fusion_fence(x), _WINOGRAD_INPUT)
    kernel_tiles = _winograd_kernel_tiles(kernel)
    return _winograd_output([[tiles[a][b] @ kernel_tiles[a, b] for b in range(4)]
                             for a in range(4)], x.shape)


def _winograd_kernel_gradient(x, grad):
    """The gradient of `_winograd_conv3x3(x, kernel)`'s `kernel` for an output gradient `grad`:
    for each tile position, the transformed input tiles' product with the transposed output
    transform of `grad` over all tiles, then G^T (.) G."""
    tiles = _tile_transform(_fusion_fence(x), _WINOGRAD_INPUT)
    grad_tiles = _tile_transform(grad, tuple(zip(*_WINOGRAD_OUTPUT, strict=True)))
    products = jnp.stack([jnp.stack([tiles[a][b].T @ grad_tiles[a][b] for b in range(4)])
                          for a in range(4)])
    transform = np.asarray(_WINOGRAD_KERNEL, products.dtype)
    return jnp.einsum("ai,abck,bj->ijck", transform, products, transform,
                      precision=lax.Precision.HIGHEST)


@jax.custom_vjp
def winograd_conv(x, kernel):
    """A 3 x 3 convolution at stride 1 padded by one pixel on every side (PyTorch's
    `padding=1`, "SAME"), `(batch, time, freq, channels_in)` with `(3, 3, channels_in,
    channels_out)` -> `(batch, time, freq, channels_out)`, by Winograd's F(2 x 2, 3 x 3), and
    its gradients: the input's the same convolution of the output gradient with the kernel
    turned half a turn and its channels swapped, the kernel's from the same transforms. Equal to
    `_conv_strided` to float32 rounding of the transforms and products (bounded in
    `test_winograd_conv_is_xla_conv_to_float32_rounding`).
    """
    return _winograd_conv3x3(x, kernel)


def _winograd_conv_fwd(x, kernel):
    return _winograd_conv3x3(x, kernel), (x, kernel)


def _winograd_conv_bwd(residuals, grad):
    x, kernel = residuals
    return (_winograd_conv3x3(grad, kernel[::-1, ::-1].swapaxes(2, 3)),
            _winograd_kernel_gradient(x, grad))


winograd_conv.defvjp(_winograd_conv_fwd, _winograd_conv_bwd)

_PAD_ONE = ((1, 1), (1, 1))
# 3 x 3 convolutions at stride 1, padded by one, go by `winograd_conv` on the CPU when both
# channel counts are at least `_MIN_WINOGRAD_CHANNELS` and the map has over
# `_MIN_WINOGRAD_PIXELS` pixels: there the products' 4/9 of the work outweighs the transforms'
# passes over memory. The input and kernel gradients together, batch 16, on a 2-core EPYC
# (family 25), XLA's against Winograd's: 116 x 64 x 128 -> 128 370 against 285 ms (the
# forward pass 180 against 136), 58 x 32 x 128 -> 128 95 against 72, 29 x 16 x 256 -> 256 88
# against 60, 47 x 24 x 128 -> 128 60 against 51; about even at 15 x 8 x 256; slower with 32 or
# 64 channels on either side (94 x 48 x 32 -> 128 78 against 104, 94 x 48 x 64 -> 128 130
# against 137) and on small maps (24 x 4 x 128: 5.6 against 6.2).
_MIN_WINOGRAD_CHANNELS = 128
_MIN_WINOGRAD_PIXELS = 128


def _by_winograd(x_shape, kernel_shape, strides, padding) -> bool:
    """Whether `conv` computes a convolution by `winograd_conv` on the CPU."""
    return (tuple(kernel_shape[:2]) == (3, 3) and tuple(strides) == (1, 1)
            and tuple(map(tuple, padding)) == _PAD_ONE
            and min(kernel_shape[2:]) >= _MIN_WINOGRAD_CHANNELS
            and x_shape[1] * x_shape[2] > _MIN_WINOGRAD_PIXELS)


def _by_patch_products(x_shape, window, strides, padding) -> bool:
    """Whether `conv` computes a convolution as products of its patches on the CPU: output maps
    of up to `_SMALL_MAP_PIXELS` pixels, and one-channel inputs with windows of up to
    `_MAX_FOLDED_TAPS` taps. The patches of one channel are a few copies of a small image; the
    short-chunk ResNet's first block (1 -> 128 channels, 3 x 3, stride 2, 231 x 128 in, batch
    16), XLA's against the products: training step 1611 -> 1554 ms on a 2-core EPYC (family
    25), in one process, alternated."""
    time_out, freq_out = _output_map(x_shape, window, strides, padding)
    return (time_out * freq_out <= _SMALL_MAP_PIXELS
            or (x_shape[-1] == 1 and window[0] * window[1] <= _MAX_FOLDED_TAPS))


def conv(x, kernel, strides, padding):
    """XLA's convolution `(batch, time, freq, channels_in)` with `(window_t, window_f,
    channels_in, channels_out)`, explicit `padding` `((lo, hi), (lo, hi))` and `strides`, and its
    gradients: on the CPU, output maps of up to `_SMALL_MAP_PIXELS` pixels and one-channel
    inputs by `patch_product_conv` (equal up to float32 summation order, see
    `_by_patch_products`), 3 x 3 convolutions at stride 1 between many channels on large maps
    by `winograd_conv` (equal to float32 rounding, see `_by_winograd`), the others by
    `fenced_gradient_conv` (XLA's own, the kernel gradient reading a stored input).

    Compiled as tagjax compiles its models (`tagjax.xla_options`), XLA's own kernel gradient is
    the fastest measured: against one matrix product per kernel tap (tagjax's before), training
    steps on a 2-core EPYC (family 25), in one process, alternated: `cnn_lstm` 71.4 -> 62.0 ms,
    `fcn` 285.0 -> 252.6, `short_res` 1761 -> 1693. Under jaxlib's default options the tap
    products were 2x faster at 128 channels on the short-chunk ResNet's first maps (116 x 64),
    slower or even elsewhere."""
    window = kernel.shape[:2]
    if _by_patch_products(x.shape, window, strides, padding):
        cpu_conv = functools.partial(patch_product_conv, strides=strides, padding=padding)
    elif _by_winograd(x.shape, kernel.shape, strides, padding):
        cpu_conv = winograd_conv
    else:
        cpu_conv = functools.partial(fenced_gradient_conv, strides=strides, padding=padding)
    return lax.platform_dependent(
        x, kernel, cpu=cpu_conv,
        default=lambda x, k: _conv_strided(x, k, strides, padding))


# Convolutions of one input with more channels than this take their kernels side by side, in
# one pass (`forked_conv`). The short-chunk ResNet's strided conv1 and shortcut convolutions
# (forward and both gradients, batch 16) measured 198.9 against 287.6 ms at 128 channels on a
# 116 x 64 map, 44.2 against 51.3 at 256 on 29 x 16; with one input channel (its first block),
# 98.6 against 59.5, slower. No width between was measured: the limit is where jaxlib's default
# options hand convolutions to YNNPACK (over 16 input channels), under which these were timed.
_MAX_UNFORKED_CHANNELS = 16


def forked_conv(x, kernels, strides, padding):
    """`conv` of one input `(batch, time, freq, channels_in)` with each of `kernels` (one window,
    `(window_t, window_f, channels_in, features_i)` each): one convolution with the kernels
    side by side for inputs of over `_MAX_UNFORKED_CHANNELS` channels, which reads the input,
    and writes its gradient, once. Equal to separate convolutions up to float32 summation order.

    Returns:
      a tuple of `(batch, time', freq', features_i)`, one per kernel.
    """
    if x.shape[-1] <= _MAX_UNFORKED_CHANNELS:
        return tuple(conv(x, kernel, strides, padding) for kernel in kernels)
    y = conv(x, jnp.concatenate(kernels, axis=-1), strides, padding)
    ends = list(itertools.accumulate(kernel.shape[-1] for kernel in kernels))
    return tuple(y[..., start:end] for start, end in zip([0, *ends[:-1]], ends, strict=True))


class ConvKernel(nn.Module):
    """A bias-free `Conv`'s parameter alone (`kernel`, the same shape and initialiser), for
    convolutions computed together by `forked_conv`.

    Attributes:
      features: output channels.
      kernel_size: `(window_t, window_f)`.
    """

    features: int
    kernel_size: tuple[int, int]

    @nn.compact
    def __call__(self, channels_in: int):
        """-> `(window_t, window_f, channels_in, features)`."""
        return self.param("kernel", nn.initializers.lecun_normal(),
                          (*self.kernel_size, channels_in, self.features))


class Conv(nn.Module):
    """`flax.linen.Conv` (same parameters, initialisers and values up to float32 summation order)
    for `(batch, time, freq, channels)` inputs, computed by `conv`: on the CPU, small maps and
    one-channel inputs as products of their patches, the others by XLA.

    Attributes:
      features: output channels.
      kernel_size: `(window_t, window_f)`.
      strides: `(stride_t, stride_f)`.
      padding: "SAME", "VALID" or `((lo, hi), (lo, hi))`, as `flax.linen.Conv` takes it.
      use_bias: whether to add a bias.
    """

    features: int
    kernel_size: tuple[int, int]
    strides: tuple[int, int] | int = 1
    padding: str | tuple = "SAME"
    use_bias: bool = True

    @nn.compact
    def __call__(self, x):
        kernel = self.param("kernel", nn.initializers.lecun_normal(),
                            (*self.kernel_size, x.shape[-1], self.features))
        strides = ((self.strides,) * 2 if isinstance(self.strides, int)
                   else tuple(self.strides))
        padding = self.padding
        if isinstance(padding, str):
            padding = lax.padtype_to_pads(x.shape[1:3], self.kernel_size, strides, padding)
        padding = tuple((int(lo), int(hi)) for lo, hi in padding)
        y = conv(x, kernel, strides, padding)
        if self.use_bias:
            y = y + self.param("bias", nn.initializers.zeros_init(), (self.features,))
        return y
