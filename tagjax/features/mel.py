"""Mel scales, mel filterbanks and the mel spectrogram (librosa 0.11 conventions, time-major)."""

import functools
import itertools
import warnings
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from tagjax.features import _normalize, _validation, decibels, spectral

# Slaney's auditory-toolbox scale: linear below 1 kHz, logarithmic above.
_SLANEY_HZ_PER_MEL = 200.0 / 3
_SLANEY_MIN_LOG_HZ = 1000.0
_SLANEY_MIN_LOG_MEL = _SLANEY_MIN_LOG_HZ / _SLANEY_HZ_PER_MEL
_SLANEY_LOG_STEP = np.log(6.4) / 27.0


def _namespace(x):
    return jnp if isinstance(x, jax.Array) else np


def hz_to_mel(frequencies, htk: bool = False):
    """Hertz to mels, on the Slaney scale (librosa's default) or the HTK scale.

    Args:
      frequencies: a number or array (NumPy or JAX) of frequencies in Hz.
      htk: use `2595 log10(1 + f / 700)` instead of the Slaney scale.

    Returns:
      mels, an array of the same shape (NumPy float64 for NumPy input).
    """
    xp = _namespace(frequencies)
    f = xp.asarray(frequencies, dtype=None if xp is jnp else np.float64)
    if htk:
        # log1p: float32 keeps its relative accuracy at low frequencies.
        return (2595.0 / np.log(10.0)) * xp.log1p(f / 700.0)
    linear = f / _SLANEY_HZ_PER_MEL
    # The maximum keeps the unused branch finite (and its gradient defined) below 1 kHz.
    log = _SLANEY_MIN_LOG_MEL + xp.log(
        xp.maximum(f, _SLANEY_MIN_LOG_HZ) / _SLANEY_MIN_LOG_HZ) / _SLANEY_LOG_STEP
    return xp.where(f >= _SLANEY_MIN_LOG_HZ, log, linear)


def mel_to_hz(mels, htk: bool = False):
    """Mels to Hertz, the inverse of `hz_to_mel` (including the log part above 1 kHz)."""
    xp = _namespace(mels)
    m = xp.asarray(mels, dtype=None if xp is jnp else np.float64)
    if htk:
        return 700.0 * xp.expm1(m * (np.log(10.0) / 2595.0))
    linear = _SLANEY_HZ_PER_MEL * m
    log = _SLANEY_MIN_LOG_HZ * xp.exp(
        _SLANEY_LOG_STEP * (xp.maximum(m, _SLANEY_MIN_LOG_MEL) - _SLANEY_MIN_LOG_MEL))
    return xp.where(m >= _SLANEY_MIN_LOG_MEL, log, linear)


def fft_frequencies(sr: float, n_fft: int) -> np.ndarray:
    """Centre frequencies of the STFT bins, `rfftfreq(n_fft, 1 / sr)`: float64 `(n_fft//2 + 1,)`."""
    return np.fft.rfftfreq(n_fft, 1.0 / sr)


def mel_frequencies(n_mels: int, fmin: float = 0.0, fmax: float = 8000.0,
                    htk: bool = False) -> np.ndarray:
    """`n_mels` frequencies (Hz) evenly spaced in mels from `fmin` to `fmax`, float64."""
    mels = np.linspace(hz_to_mel(float(fmin), htk), hz_to_mel(float(fmax), htk), n_mels)
    return mel_to_hz(mels, htk)


@functools.lru_cache(maxsize=64)
def _mel_filterbank_np(sr: float, n_fft: int, n_mels: int, fmin: float, fmax: float, htk: bool,
                       norm: str | float | None) -> np.ndarray:
    """`(n_bins, n_mels)` float64 triangles, as `librosa.filters.mel` (transposed)."""
    bin_hz = fft_frequencies(sr, n_fft)
    edges_hz = mel_frequencies(n_mels + 2, fmin, fmax, htk)
    widths = np.diff(edges_hz)
    offsets = edges_hz[:, None] - bin_hz[None, :]  # (n_mels + 2, n_bins)
    rising = -offsets[:-2] / widths[:-1, None]
    falling = offsets[2:] / widths[1:, None]
    weights = np.maximum(0.0, np.minimum(rising, falling))  # (n_mels, n_bins)
    if norm == "slaney":
        # Constant energy per channel: each triangle has unit area in Hz / 2.
        weights *= (2.0 / (edges_hz[2:] - edges_hz[:-2]))[:, None]
    else:
        weights = _normalize.normalize_np(weights, norm, axis=-1)
    if not np.all((edges_hz[:-2] == 0) | (weights.max(axis=1) > 0)):
        warnings.warn(f"mel filterbank (sr={sr}, n_fft={n_fft}, n_mels={n_mels}, fmin={fmin}, "
                      f"fmax={fmax}) has empty filters: some mel bands will always be zero; "
                      "use fewer mels or a larger n_fft", UserWarning, stacklevel=4)
    weights.setflags(write=False)
    return np.ascontiguousarray(weights.T)


def check_mel_args(sr: Any, n_fft: Any, n_mels: Any, fmin: Any, fmax: Any, htk: Any,
                   norm: Any) -> dict:
    """Validates filterbank arguments; returns them normalised (hashable, `fmax` filled in)."""
    sr = _validation.positive_float(sr, "sr")
    n_fft = _validation.positive_int(n_fft, "n_fft")
    n_mels = _validation.positive_int(n_mels, "n_mels")
    n_bins = n_fft // 2 + 1
    if n_mels > n_bins:
        raise ValueError(f"n_mels={n_mels} exceeds the {n_bins} FFT bins of n_fft={n_fft}")
    fmin, fmax = _validation.frequency_range(sr, fmin, fmax)
    _validation.choice(htk, "htk", (True, False))
    if not (isinstance(norm, str) and norm == "slaney"):
        norm = _validation.norm_order(norm, "norm (use None, 'slaney' or a positive number)")
    return dict(sr=sr, n_fft=n_fft, n_mels=n_mels, fmin=fmin, fmax=fmax, htk=bool(htk),
                norm=norm)


def mel_filterbank(sr: float, n_fft: int, n_mels: int = 96, fmin: float = 0.0,
                   fmax: float | None = None, htk: bool = False,
                   norm: str | float | None = "slaney", dtype: Any = jnp.float32) -> jax.Array:
    """Triangular mel filters, built in float64 once per configuration and cast to `dtype`.

    Args:
      sr: sample rate in Hz.
      n_fft: FFT size; the filters weight its `n_fft // 2 + 1` bins at `rfftfreq(n_fft, 1 / sr)`.
      n_mels: number of filters, at most the number of bins.
      fmin: lowest edge in Hz.
      fmax: highest edge in Hz, at most `sr / 2` (default).
      htk: HTK mel scale instead of Slaney's (linear below 1 kHz, log above).
      norm: "slaney" (each filter divided by half its width in Hz, librosa's default), None
        (peak 1), or p > 0 (unit p-norm per filter).
      dtype: dtype of the result.

    Returns:
      `(n_fft // 2 + 1, n_mels)`, the transpose of `librosa.filters.mel`, so that
      `spectrogram @ mel_filterbank(...)` maps `(..., frames, bins)` to `(..., frames, n_mels)`.
    """
    return jnp.asarray(_mel_filterbank_np(**check_mel_args(sr, n_fft, n_mels, fmin, fmax, htk,
                                                            norm)), dtype)


# Cost of one more band of bins in `_band_plan`, in multiply-adds per frame per mel band. Each
# band is a separate XLA:CPU kernel that squares its slice of the complex spectrum (scalar
# code), a small matmul and a pass over the (frames, n_mels) output. Measured on 16 x 29 s at
# n_fft 512, 96 mels (2-core AMD EPYC): 3 bands beat the 8 that an overhead of 4 chose by 1.08x
# end to end, the power-and-mel stage alone by 1.5x; 2 to 4 bands are within noise.
_BAND_OVERHEAD_PER_MEL = 32


@functools.lru_cache(maxsize=64)
def _band_plan(sr: float, n_fft: int, n_mels: int, fmin: float, fmax: float, htk: bool,
               norm: str | float | None) -> tuple[tuple[int, int, int, int], ...]:
    """Splits the bins into contiguous bands, each multiplied only by the mels it feeds.

    A triangle covers a few bins, so every band of bins reaches only a short run of mel bands;
    the number of bands minimises the multiply-adds plus a per-band overhead.

    Returns:
      `((bin_start, bin_stop, mel_start, mel_stop), ...)` for `_mel_filterbank_np(...)`.
    """
    weights = _mel_filterbank_np(sr, n_fft, n_mels, fmin, fmax, htk, norm)
    n_bins = weights.shape[0]
    best = None
    for n_bands in (1, 2, 3, 4, 8, 16, 32):
        if n_bands > n_bins:
            break
        edges = np.linspace(0, n_bins, n_bands + 1).round().astype(int)
        plan, cost = [], 0
        for lo, hi in itertools.pairwise(edges):
            used = np.flatnonzero(weights[lo:hi].any(axis=0))
            if used.size:
                plan.append((int(lo), int(hi), int(used[0]), int(used[-1]) + 1))
                cost += (hi - lo) * (used[-1] + 1 - used[0]) + _BAND_OVERHEAD_PER_MEL * n_mels
        if best is None or cost < best[0]:
            best = (cost, tuple(plan))
    return best[1]


def mel_project(power_spectrum: jax.Array, filterbank: np.ndarray,
                bands: tuple[tuple[int, int, int, int], ...] | None = None) -> jax.Array:
    """`(..., frames, bins) @ (bins, n_mels)` at full float32 precision.

    With `bands` (from `_band_plan`), a CPU skips the zeros of the triangular filters: for 96
    mels of a 512-point FFT, about a quarter of a dense product's multiply-adds. Accelerators
    get one dense matmul.
    """
    weights = jnp.asarray(filterbank, power_spectrum.dtype)
    if bands is None or jax.default_backend() != "cpu":
        return jnp.matmul(power_spectrum, weights, precision=lax.Precision.HIGHEST)
    n_mels = filterbank.shape[1]
    total = None
    for lo, hi, mel_lo, mel_hi in bands:
        part = jnp.matmul(power_spectrum[..., lo:hi], weights[lo:hi, mel_lo:mel_hi],
                          precision=lax.Precision.HIGHEST)
        # Pads and sums fuse into one pass over the output.
        part = jnp.pad(part, [(0, 0)] * (part.ndim - 1) + [(mel_lo, n_mels - mel_hi)])
        total = part if total is None else total + part
    return total


@functools.partial(jax.jit, static_argnames=("stft_args", "mel_args", "power", "db_args"))
def _melspectrogram(x, *, stft_args, mel_args, power, db_args=None):
    """The mel spectrogram; in dB with `db_args = (ref, amin, top_db)` (`ref` a number), taken
    in the loop over examples, while each one's mel spectrogram is still in cache."""
    stft_args = dict(stft_args)
    filterbank = _mel_filterbank_np(**dict(mel_args))
    bands = _band_plan(**dict(mel_args))

    def example_melspectrogram(signal):
        mel = mel_project(spectral.power_spectrogram(signal, power=power, **stft_args),
                          filterbank, bands)
        return mel if db_args is None else decibels._power_to_db(mel, *db_args)

    n_frames = spectral.num_frames(x.shape[-1], stft_args["n_fft"], stft_args["hop_length"],
                                   stft_args["center"])
    return spectral.map_examples(example_melspectrogram, x, n_frames)


def check_melspectrogram_args(x, sr, n_fft, hop_length, n_mels, power, window, center, pad_mode,
                              win_length, fmin, fmax, htk, norm, method="fft"):
    """Validates `melspectrogram` arguments; returns `(x, static_kwargs)`."""
    power = _validation.positive_float(power, "power")
    mel_args = check_mel_args(sr, n_fft, n_mels, fmin, fmax, htk, norm)
    x, stft_args = spectral.check_stft_args(x, n_fft, hop_length, window, center, pad_mode,
                                            method, win_length)
    return x, dict(stft_args=tuple(stft_args.items()), mel_args=tuple(mel_args.items()),
                   power=power)


def melspectrogram(x: jax.Array, sr: float = 16000, n_fft: int = 512, hop_length: int = 256,
                   n_mels: int = 96, power: float = 2.0, *,
                   window: spectral.WindowSpec = "hann", center: bool = True,
                   pad_mode: str = "constant", win_length: int | None = None, fmin: float = 0.0,
                   fmax: float | None = None, htk: bool = False,
                   norm: str | float | None = "slaney") -> jax.Array:
    """Mel spectrogram: `|stft(x)| ** power @ mel_filterbank(...)`.

    Args:
      x: real signal `(..., samples)`.
      sr: sample rate in Hz.
      n_fft, hop_length, window, center, pad_mode, win_length: as in `stft`.
      n_mels, fmin, fmax, htk, norm: as in `mel_filterbank`.
      power: exponent of the magnitude (2.0: power, 1.0: magnitude).

    Returns:
      `(..., n_frames, n_mels)`, the transpose of `librosa.feature.melspectrogram`.
    """
    x, static = check_melspectrogram_args(x, sr, n_fft, hop_length, n_mels, power, window,
                                          center, pad_mode, win_length, fmin, fmax, htk, norm)
    return _melspectrogram(x, **static)


def log_melspectrogram(x: jax.Array, sr: float = 16000, n_fft: int = 512, hop_length: int = 256,
                       n_mels: int = 96, *, ref: float = 1.0, amin: float = 1e-10,
                       top_db: float | None = 80.0, window: spectral.WindowSpec = "hann",
                       center: bool = True, pad_mode: str = "constant",
                       win_length: int | None = None, fmin: float = 0.0,
                       fmax: float | None = None, htk: bool = False,
                       norm: str | float | None = "slaney") -> jax.Array:
    """`power_to_db(melspectrogram(x, ...), ref, amin, top_db)` (to float32 rounding), with the
    decibels taken example by example while each mel spectrogram is in a CPU's cache.

    Args:
      x: real signal `(..., samples)`.
      sr, n_fft, hop_length, n_mels, window, center, pad_mode, win_length, fmin, fmax, htk,
        norm: as in `melspectrogram` (power 2).
      ref, amin, top_db: as in `power_to_db`, with a numeric `ref`.

    Returns:
      `(..., n_frames, n_mels)` in dB.
    """
    if isinstance(ref, bool) or not isinstance(ref, int | float):
        raise TypeError(f"ref must be a number here, got {type(ref).__name__}; for a computed "
                        "reference use power_to_db(melspectrogram(x), ref=...)")
    amin, top_db = decibels._check_db_args(amin, top_db)
    x, static = check_melspectrogram_args(x, sr, n_fft, hop_length, n_mels, 2.0, window,
                                          center, pad_mode, win_length, fmin, fmax, htk, norm)
    return _melspectrogram(x, db_args=(abs(float(ref)), amin, top_db), **static)
