"""Framing and the short-time Fourier transform, by FFT or by an explicit DFT-matrix product.

Conventions follow librosa 0.11 (`center=True`, zero padding, periodic windows from
`scipy.signal.get_window`, bins at `rfftfreq(n_fft, 1 / sr)`), but arrays are time-major:
a signal is `(..., samples)` and a spectrogram `(..., frames, bins)`.
"""

import functools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import scipy.signal
from jax import lax

from tagjax.features import _validation

WindowSpec = str | tuple | float | np.ndarray | jax.Array | Callable[[int], np.ndarray]

_METHODS = ("fft", "dft")
# Framing by strided slices beats a gather while a frame is made of few hops.
_MAX_HOPS_PER_FRAME_FOR_SLICING = 8
# Frames per step of the CPU loop in `map_examples` (a 29 s clip at hop 256 has 1820).
_FRAMES_PER_STEP = 2048


# --- windows -------------------------------------------------------------------------------


def _window_key(window: WindowSpec) -> Any:
    """A hashable stand-in for `window`, so that windows can be static arguments of `jax.jit`."""
    if isinstance(window, np.ndarray | jax.Array | list):
        try:
            values = np.asarray(window, dtype=np.float64)
        except jax.errors.TracerArrayConversionError as e:
            raise TypeError("window must be a concrete array, not a traced value") from e
        if values.ndim != 1:
            raise ValueError(f"window must be one-dimensional, got shape {values.shape}")
        return ("array", tuple(values.tolist()))
    if isinstance(window, str | tuple | float | int) or callable(window):
        return window
    raise TypeError(f"window must be a name, a (name, parameter) tuple, an array or a callable, "
                    f"got {type(window).__name__}")


@functools.lru_cache(maxsize=128)
def _window_np(key: Any, n_fft: int, win_length: int) -> np.ndarray:
    if isinstance(key, tuple) and len(key) == 2 and key[0] == "array":
        values = np.asarray(key[1], dtype=np.float64)
        if values.shape != (win_length,):
            raise ValueError(f"window has {values.size} samples, expected win_length={win_length}")
    elif callable(key):
        values = np.asarray(key(win_length), dtype=np.float64)
        if values.shape != (win_length,):
            raise ValueError(f"window({win_length}) returned shape {values.shape}")
    else:
        try:
            # fftbins=True: periodic windows, as librosa uses for spectral analysis.
            values = scipy.signal.get_window(key, win_length, fftbins=True).astype(np.float64)
        except (ValueError, TypeError) as e:
            raise ValueError(f"unknown window {key!r}: {e}") from e
    # Centre a shorter window in the frame, as librosa's util.pad_center.
    left = (n_fft - win_length) // 2
    return np.pad(values, (left, n_fft - win_length - left))


def get_window(window: WindowSpec, n_fft: int, win_length: int | None = None) -> np.ndarray:
    """The analysis window, `win_length` samples centred in `n_fft` (float64 NumPy, cached).

    Args:
      window: a name or (name, parameter) tuple for `scipy.signal.get_window` ("hann",
        "hamming", "blackman", "boxcar", ("kaiser", 8.0), ...), taken periodic as in librosa;
        an array of `win_length` samples; or a callable mapping a length to such an array.
      n_fft: frame length in samples.
      win_length: window length, at most `n_fft`; defaults to `n_fft`.

    Returns:
      float64 array `(n_fft,)`.
    """
    n_fft, win_length = _window_lengths(n_fft, win_length)
    return _window_np(_window_key(window), n_fft, win_length).copy()


def _window_lengths(n_fft: Any, win_length: Any) -> tuple[int, int]:
    n_fft = _validation.positive_int(n_fft, "n_fft")
    win_length = n_fft if win_length is None else _validation.positive_int(win_length, "win_length")
    if win_length > n_fft:
        raise ValueError(f"win_length={win_length} must not exceed n_fft={n_fft}")
    return n_fft, win_length


# --- framing -------------------------------------------------------------------------------


def _check_framing(x: jax.Array, frame_length: Any, hop_length: Any, center: Any,
                   pad_mode: Any) -> tuple[int, int]:
    frame_length = _validation.positive_int(frame_length, "frame_length (n_fft)")
    hop_length = _validation.positive_int(hop_length, "hop_length")
    _validation.choice(center, "center", (True, False))
    _validation.pad_mode(pad_mode)
    n_samples = x.shape[-1]
    if n_samples == 0:
        raise ValueError(f"the signal is empty (shape {x.shape})")
    if not center and n_samples < frame_length:
        raise ValueError(f"the signal has {n_samples} samples, fewer than n_fft={frame_length} "
                         "(one frame) with center=False; pad it or use center=True")
    return frame_length, hop_length


def num_frames(n_samples: int, frame_length: int, hop_length: int, center: bool = True) -> int:
    """Number of frames that `frame` and `stft` return for a signal of `n_samples`."""
    padded = n_samples + 2 * (frame_length // 2) if center else n_samples
    return 1 + (padded - frame_length) // hop_length


def _pad_for_centering(x: jax.Array, frame_length: int, center: bool, pad_mode: str) -> jax.Array:
    if not center:
        return x
    pad = [(0, 0)] * (x.ndim - 1) + [(frame_length // 2, frame_length // 2)]
    return jnp.pad(x, pad, mode=pad_mode)


def _frames(x: jax.Array, frame_length: int, hop_length: int) -> jax.Array:
    """Frames of an already padded signal: `(..., samples)` -> `(..., n_frames, frame_length)`."""
    n_frames = 1 + (x.shape[-1] - frame_length) // hop_length
    batch = x.shape[:-1]
    hops_per_frame, remainder = divmod(frame_length, hop_length)
    if remainder == 0 and hops_per_frame <= _MAX_HOPS_PER_FRAME_FOR_SLICING:
        # A frame is `hops_per_frame` consecutive rows of the signal cut into hops.
        n_hops = n_frames - 1 + hops_per_frame
        hops = x[..., : n_hops * hop_length].reshape(*batch, n_hops, hop_length)
        parts = [hops[..., i : i + n_frames, :] for i in range(hops_per_frame)]
        return jnp.stack(parts, axis=-2).reshape(*batch, n_frames, frame_length)
    index = hop_length * np.arange(n_frames)[:, None] + np.arange(frame_length)[None, :]
    return x[..., index]


def _centred_hops(x: jax.Array, frame_length: int, hop_length: int, n_rows: int,
                  pad_mode: str) -> jax.Array:
    """The first `n_rows` hops of the centring-padded signal, `(..., samples)` -> `(..., n_rows,
    hop_length)`, assembled hop by hop: the pad before, the signal's whole hops, then its last
    part hop and the pad after. For `frame_length // 2` a whole number of hops and a signal
    longer than `frame_length`.

    The same values as `_pad_for_centering` then cutting into hops, without the padded copy of
    the whole signal: the log-mel of 16 clips of 29 s at n_fft 512, hop 256 took 22.4 against
    24.3 ms on a 2-core EPYC (family 25; in one process, alternated), its loop over clips then
    reading each clip once.
    """
    pad = frame_length // 2
    n_samples = x.shape[-1]
    batch, no_pad = x.shape[:-1], [(0, 0)] * (x.ndim - 1)
    # Padding the first (last) pad + 1 samples gives what padding the whole signal puts before
    # (after) it in every pad mode: reflect reads pad + 1 samples from the edge, the others fewer.
    edge = pad + 1
    head = jnp.pad(x[..., :edge], [*no_pad, (pad, 0)], mode=pad_mode)[..., :pad]
    tail = jnp.pad(x[..., n_samples - edge :], [*no_pad, (0, pad)], mode=pad_mode)[..., edge:]
    whole = n_samples // hop_length
    last = jnp.concatenate([x[..., whole * hop_length :], tail], axis=-1)
    last = jnp.pad(last, [*no_pad, (0, -last.shape[-1] % hop_length)])
    hops = jnp.concatenate([head.reshape(*batch, -1, hop_length),
                            x[..., : whole * hop_length].reshape(*batch, whole, hop_length),
                            last.reshape(*batch, -1, hop_length)], axis=-2)
    return hops[..., :n_rows, :]


def _framed(x: jax.Array, frame_length: int, hop_length: int, center: bool,
            pad_mode: str) -> jax.Array:
    """Frames of a signal, padded first if `center`: `(..., samples)` -> `(..., n_frames,
    frame_length)`."""
    hops_per_frame, remainder = divmod(frame_length, hop_length)
    if (center and remainder == 0 and hops_per_frame <= _MAX_HOPS_PER_FRAME_FOR_SLICING
            and (frame_length // 2) % hop_length == 0 and x.shape[-1] > frame_length):
        n_frames = num_frames(x.shape[-1], frame_length, hop_length, center)
        hops = _centred_hops(x, frame_length, hop_length, n_frames - 1 + hops_per_frame,
                             pad_mode)
        return jnp.concatenate([hops[..., i : i + n_frames, :] for i in range(hops_per_frame)],
                               axis=-1)
    return _frames(_pad_for_centering(x, frame_length, center, pad_mode), frame_length,
                   hop_length)


@functools.partial(jax.jit, static_argnames=("frame_length", "hop_length", "center", "pad_mode"))
def _frame(x, *, frame_length, hop_length, center, pad_mode):
    return _framed(x, frame_length, hop_length, center, pad_mode)


def frame(x: jax.Array, frame_length: int, hop_length: int, center: bool = True,
          pad_mode: str = "constant") -> jax.Array:
    """Cuts a signal into overlapping frames.

    Args:
      x: real signal `(..., samples)`.
      frame_length: samples per frame.
      hop_length: samples between the starts of consecutive frames.
      center: pad `frame_length // 2` samples on both sides so frame `t` is centred on sample
        `t * hop_length` (as `librosa.stft`; `librosa.util.frame` itself does not pad).
      pad_mode: `jnp.pad` mode for the centring pad: "constant" (zeros, librosa 0.11's
        default), "edge", "reflect", "symmetric" or "linear_ramp".

    Returns:
      `(..., n_frames, frame_length)`, `n_frames = 1 + (padded_samples - frame_length) // hop`.
    """
    x = _validation.real_signal(x)
    frame_length, hop_length = _check_framing(x, frame_length, hop_length, center, pad_mode)
    return _frame(x, frame_length=frame_length, hop_length=hop_length, center=center,
                  pad_mode=pad_mode)


# --- STFT ----------------------------------------------------------------------------------


@functools.lru_cache(maxsize=32)
def _dft_matrix_np(n_fft: int) -> np.ndarray:
    """`(n_fft, 2 * n_bins)` float64: the cosine then the negated sine part of the real DFT."""
    n_bins = n_fft // 2 + 1
    # Reduce k * n modulo n_fft in integers so large sizes keep full float64 accuracy.
    phase = np.outer(np.arange(n_fft), np.arange(n_bins)) % n_fft
    angle = 2 * np.pi * phase / n_fft
    return np.concatenate([np.cos(angle), -np.sin(angle)], axis=1)


@functools.lru_cache(maxsize=4)
def _dft_basis(n_fft: int, dtype: Any) -> jax.Array:
    # A device array passed to the jitted STFT as an argument: embedded as a constant, a large
    # basis (268 MB at n_fft 8192) would take XLA tens of seconds to compile.
    return jnp.asarray(_dft_matrix_np(n_fft), dtype)


def _spectrum(frames: jax.Array, n_fft: int, method: str,
              basis: jax.Array | None = None) -> jax.Array:
    """rFFT of windowed frames `(..., n_fft)` -> complex `(..., n_fft // 2 + 1)`."""
    if method == "fft":
        return jnp.fft.rfft(frames, axis=-1)
    n_bins = n_fft // 2 + 1
    if basis is None:
        basis = jnp.asarray(_dft_matrix_np(n_fft), frames.dtype)
    # HIGHEST: GPUs otherwise round float32 matmuls to TF32 and miss the FFT by ~1e-3.
    parts = jnp.matmul(frames, basis, precision=lax.Precision.HIGHEST)
    return lax.complex(parts[..., :n_bins], parts[..., n_bins:])


def _windowed_frames(x, n_fft, hop_length, window, win_length, center, pad_mode):
    frames = _framed(x, n_fft, hop_length, center, pad_mode)
    return frames * jnp.asarray(_window_np(window, n_fft, win_length), x.dtype)


_STFT_STATIC = ("n_fft", "hop_length", "window", "win_length", "center", "pad_mode", "method")


@functools.partial(jax.jit, static_argnames=_STFT_STATIC)
def _stft(x, basis, *, n_fft, hop_length, window, win_length, center, pad_mode, method):
    frames = _windowed_frames(x, n_fft, hop_length, window, win_length, center, pad_mode)
    return _spectrum(frames, n_fft, method, basis)


def _power(spectrum: jax.Array, power: float) -> jax.Array:
    """`|spectrum| ** power`, with a zero gradient at zero instead of NaN."""
    squared = lax.square(spectrum.real) + lax.square(spectrum.imag)
    if power == 2.0:
        return squared
    positive = squared > 0
    safe = jnp.where(positive, squared, 1.0)
    return jnp.where(positive, safe ** (power / 2), 0.0)


def power_spectrogram(x, basis=None, *, n_fft, hop_length, window, win_length, center,
                      pad_mode, method, power):
    """`|stft(x)| ** power` from already validated (static) arguments; see `check_stft_args`."""
    frames = _windowed_frames(x, n_fft, hop_length, window, win_length, center, pad_mode)
    return _power(_spectrum(frames, n_fft, method, basis), power)


def map_examples(fn: Callable[[jax.Array], jax.Array], x: jax.Array,
                 frames_per_example: int) -> jax.Array:
    """`fn(x)` for a signal `x (..., samples)`; on CPU, a few examples at a time.

    The STFT's intermediates (frames, complex spectrum) are several times the size of the
    signal. On a CPU a whole batch of them does not fit in cache and, once over the allocator's
    mmap threshold, is paged in afresh on every call; a loop over groups of about
    `_FRAMES_PER_STEP` frames keeps them small (about 2x faster on a batch of 16 clips of 29 s
    at 16 kHz). Accelerators get the whole batch at once.
    """
    batch = x.shape[:-1]
    n_examples = int(np.prod(batch, dtype=int))
    examples_per_step = max(1, _FRAMES_PER_STEP // max(frames_per_example, 1))
    if jax.default_backend() != "cpu" or n_examples <= examples_per_step:
        return fn(x)
    flat = x.reshape(n_examples, x.shape[-1])
    out = lax.map(fn, flat, batch_size=examples_per_step if examples_per_step > 1 else None)
    return out.reshape(*batch, *out.shape[1:])


@functools.partial(jax.jit, static_argnames=(*_STFT_STATIC, "power"))
def _spectrogram(x, basis, **static):
    n_frames = num_frames(x.shape[-1], static["n_fft"], static["hop_length"], static["center"])
    return map_examples(functools.partial(power_spectrogram, basis=basis, **static), x,
                        n_frames)


def check_stft_args(x: Any, n_fft: Any, hop_length: Any, window: WindowSpec, center: Any,
                    pad_mode: Any, method: Any = "fft", win_length: Any = None) -> tuple:
    """Validates STFT arguments; returns `(x, static_kwargs)` for the private implementations."""
    x = _validation.real_signal(x)
    n_fft, win_length = _window_lengths(n_fft, win_length)
    _, hop_length = _check_framing(x, n_fft, hop_length, center, pad_mode)
    _validation.choice(method, "method", _METHODS)
    key = _window_key(window)
    _window_np(key, n_fft, win_length)  # raises here for a bad window, not inside jit
    return x, dict(n_fft=n_fft, hop_length=hop_length, window=key, win_length=win_length,
                   center=center, pad_mode=pad_mode, method=method)


def stft(x: jax.Array, n_fft: int = 512, hop_length: int = 256, window: WindowSpec = "hann",
         center: bool = True, pad_mode: str = "constant", method: str = "fft", *,
         win_length: int | None = None) -> jax.Array:
    """Short-time Fourier transform, time-major.

    Args:
      x: real signal `(..., samples)`, float32 (or float64 with x64 enabled).
      n_fft: frame length and FFT size; odd sizes are allowed.
      hop_length: samples between frames.
      window: see `get_window`; periodic Hann by default.
      center: centre frames on `t * hop_length` by padding `n_fft // 2` on both sides.
      pad_mode: padding for `center`, see `frame`.
      method: "fft" (`jnp.fft.rfft`) or "dft", the same spectrum as an explicit O(n_fft^2)
        product with a DFT matrix (for benchmarks and as a cross-check).
      win_length: window length centred in the frame, at most `n_fft` (default `n_fft`).

    Returns:
      complex `(..., n_frames, n_fft // 2 + 1)`, bins at `fft_frequencies(sr, n_fft)`; the
      transpose of `librosa.stft`.
    """
    x, static = check_stft_args(x, n_fft, hop_length, window, center, pad_mode, method,
                                win_length)
    return _stft(x, _dft_basis(static["n_fft"], x.dtype) if method == "dft" else None, **static)


def spectrogram(x: jax.Array, n_fft: int = 512, hop_length: int = 256, power: float = 2.0,
                window: WindowSpec = "hann", center: bool = True, pad_mode: str = "constant",
                method: str = "fft", *, win_length: int | None = None) -> jax.Array:
    """Magnitude spectrogram `|stft(x)| ** power`.

    Args:
      x: real signal `(..., samples)`.
      n_fft, hop_length, window, center, pad_mode, method, win_length: as in `stft`.
      power: exponent of the magnitude: 2.0 for power (default), 1.0 for magnitude.

    Returns:
      `(..., n_frames, n_fft // 2 + 1)`, real.
    """
    power = _validation.positive_float(power, "power")
    x, static = check_stft_args(x, n_fft, hop_length, window, center, pad_mode, method,
                                win_length)
    basis = _dft_basis(static["n_fft"], x.dtype) if method == "dft" else None
    return _spectrogram(x, basis, power=power, **static)
