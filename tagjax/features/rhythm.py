"""Onset strength (spectral flux of the log-mel spectrogram) and the autocorrelation tempogram.

As `librosa.onset.onset_strength` and `librosa.feature.tempogram` in librosa 0.11, time-major.
"""

import functools
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from tagjax.features import _normalize, _validation, mel, spectral

# librosa's detrending filter: y[n] = x[n] - x[n-1] + 0.99 y[n-1].
_DETREND_POLE = 0.99


def _max_filter_bands(log_mel: jax.Array, size: int) -> jax.Array:
    """Maximum over `size` neighbouring mel bands, as `scipy.ndimage.maximum_filter1d`."""
    # ndimage's default "reflect" padding only repeats values already inside the window, so
    # padding with -inf gives the same maximum.
    padding = [(0, 0)] * (log_mel.ndim - 1) + [(size // 2, size - 1 - size // 2)]
    return lax.reduce_window(log_mel, -jnp.inf, lax.max, (1,) * (log_mel.ndim - 1) + (size,),
                             (1,) * log_mel.ndim, padding)


def _detrend(envelope: jax.Array) -> jax.Array:
    """`scipy.signal.lfilter([1, -1], [1, -0.99], envelope, axis=-1)` as a parallel scan."""
    previous = jnp.pad(envelope[..., :-1], [(0, 0)] * (envelope.ndim - 1) + [(1, 0)])
    drive = envelope - previous
    decay = jnp.full_like(drive, _DETREND_POLE)

    # y[n] = a[n] y[n-1] + b[n]: affine maps compose associatively.
    def compose(earlier, later):
        return later[0] * earlier[0], later[0] * earlier[1] + later[1]

    return lax.associative_scan(compose, (decay, drive), axis=-1)[1]


def _onset_from_db(log_mel, *, lag, max_size, detrend, center, n_fft, hop_length, aggregate):
    n_frames = log_mel.shape[-2]
    reference = log_mel if max_size == 1 else _max_filter_bands(log_mel, max_size)
    rise = log_mel[..., lag:, :] - reference[..., :-lag, :]
    # max(0, rise) as a select: XLA's CPU fusion of a maximum into the mean over bands returns
    # 0 for NaN, which turned NaN input into a clean-looking envelope of zeros.
    flux = jnp.where(rise < 0, 0.0, rise)
    envelope = aggregate(flux, axis=-1)
    # Undo the delay of the lag and, with centred frames, of the framing itself.
    delay = lag + (n_fft // (2 * hop_length) if center else 0)
    envelope = jnp.pad(envelope, [(0, 0)] * (envelope.ndim - 1) + [(delay, 0)])
    if detrend:
        envelope = _detrend(envelope)
    if center:
        envelope = envelope[..., :n_frames]
    return envelope


_ONSET_STATIC = ("mel_static", "lag", "max_size", "detrend", "center", "aggregate")


@functools.partial(jax.jit, static_argnames=_ONSET_STATIC)
def _onset_strength(x, *, mel_static, lag, max_size, detrend, center, aggregate):
    log_mel = mel._melspectrogram(x, db_args=(1.0, 1e-10, 80.0), **dict(mel_static))
    stft_args = dict(dict(mel_static)["stft_args"])
    return _onset_from_db(log_mel, lag=lag, max_size=max_size, detrend=detrend, center=center,
                          n_fft=stft_args["n_fft"], hop_length=stft_args["hop_length"],
                          aggregate=aggregate)


def _check_onset_args(x, sr, n_fft, hop_length, n_mels, lag, max_size, detrend, center,
                      aggregate, window, pad_mode, win_length, fmin, fmax, htk, norm, power):
    lag = _validation.positive_int(lag, "lag")
    max_size = _validation.positive_int(max_size, "max_size")
    _validation.choice(detrend, "detrend", (True, False))
    _validation.choice(center, "center", (True, False))
    if not callable(aggregate):
        raise TypeError(f"aggregate must be a callable such as jnp.mean, got {aggregate!r}")
    # librosa always centres the STFT here; `center` only shifts the envelope.
    x, mel_static = mel.check_melspectrogram_args(x, sr, n_fft, hop_length, n_mels, power, window,
                                                  True, pad_mode, win_length, fmin, fmax, htk,
                                                  norm)
    n_frames = spectral.num_frames(x.shape[-1], n_fft, hop_length, True)
    if lag >= n_frames:
        raise ValueError(f"lag={lag} must be smaller than the {n_frames} frames of the signal")
    return x, dict(mel_static=tuple(mel_static.items()), lag=lag, max_size=max_size,
                   detrend=detrend, center=center, aggregate=aggregate)


def onset_strength(x: jax.Array, sr: float = 16000, n_fft: int = 512, hop_length: int = 256, *,
                   n_mels: int = 96, lag: int = 1, max_size: int = 1, detrend: bool = False,
                   center: bool = True, aggregate: Callable = jnp.mean,
                   window: spectral.WindowSpec = "hann", pad_mode: str = "constant",
                   win_length: int | None = None, fmin: float = 0.0, fmax: float | None = None,
                   htk: bool = False, norm: str | float | None = "slaney",
                   power: float = 2.0) -> jax.Array:
    """Onset strength: positive spectral flux of the log-mel spectrogram, averaged over bands.

    `power_to_db(melspectrogram(x))` (ref 1, top_db 80 per example), then
    `max(0, S[t] - ref[t - lag])` averaged over mel bands, where `ref` is `S` maximum-filtered
    over `max_size` bands, as `librosa.onset.onset_strength`.

    Args:
      x: real signal `(..., samples)`.
      sr, n_fft, hop_length, n_mels, window, pad_mode, win_length, fmin, fmax, htk, norm, power:
        the mel spectrogram's (its STFT is always centred, as in librosa).
      lag: frames between the compared spectra.
      max_size: width in mel bands of the maximum filter on the reference (1: none).
      detrend: remove the DC component with librosa's `lfilter([1, -1], [1, -0.99])`.
      center: shift the envelope by `n_fft // (2 * hop_length)` frames to undo the framing delay.
      aggregate: reduction over bands, called as `aggregate(flux, axis=-1)` (`jnp.mean`,
        `jnp.median`, ...).

    Returns:
      `(..., n_frames)`.
    """
    x, static = _check_onset_args(x, sr, n_fft, hop_length, n_mels, lag, max_size, detrend,
                                  center, aggregate, window, pad_mode, win_length, fmin, fmax,
                                  htk, norm, power)
    return _onset_strength(x, **static)


def _autocorrelate(frames: jax.Array) -> jax.Array:
    """Autocorrelation of each row `(..., n)` at lags `0..n-1`, via a zero-padded FFT."""
    n = frames.shape[-1]
    spectrum = jnp.fft.rfft(frames, n=2 * n, axis=-1)
    power = lax.square(spectrum.real) + lax.square(spectrum.imag)
    return jnp.fft.irfft(power, n=2 * n, axis=-1)[..., :n]


def _tempogram_from_onset(envelope, *, win_length, center, window, norm):
    n_frames = envelope.shape[-1]
    if center:
        # Ramp down to zero on both sides, as librosa's np.pad(mode="linear_ramp").
        pad = [(0, 0)] * (envelope.ndim - 1) + [(win_length // 2, win_length // 2)]
        envelope = jnp.pad(envelope, pad, mode="linear_ramp", end_values=0)
    frames = spectral._frames(envelope, win_length, 1)
    if center:
        frames = frames[..., :n_frames, :]
    frames = frames * jnp.asarray(spectral._window_np(window, win_length, win_length),
                                  frames.dtype)
    return _normalize.normalize(_autocorrelate(frames), norm, axis=-1)


_TEMPOGRAM_STATIC = ("win_length", "center", "window", "norm")


@functools.partial(jax.jit, static_argnames=_TEMPOGRAM_STATIC)
def _tempogram_from_onset_jit(envelope, *, win_length, center, window, norm):
    return _tempogram_from_onset(envelope, win_length=win_length, center=center, window=window,
                                 norm=norm)


@functools.partial(jax.jit, static_argnames=("onset_static", *_TEMPOGRAM_STATIC))
def _tempogram(x, *, onset_static, win_length, center, window, norm):
    envelope = _onset_strength(x, **dict(onset_static))
    return _tempogram_from_onset(envelope, win_length=win_length, center=center, window=window,
                                 norm=norm)


def _check_tempogram_args(n_frames, win_length, center, window, norm):
    win_length = _validation.positive_int(win_length, "win_length")
    _validation.choice(center, "center", (True, False))
    norm = _validation.norm_order(norm, "norm")
    if not center and n_frames < win_length:
        raise ValueError(f"the onset envelope has {n_frames} frames, fewer than "
                         f"win_length={win_length}, with center=False")
    key = spectral._window_key(window)
    spectral._window_np(key, win_length, win_length)
    return dict(win_length=win_length, center=center, window=key, norm=norm)


def tempogram_from_onset(onset_envelope: jax.Array, win_length: int = 384, center: bool = True,
                         window: spectral.WindowSpec = "hann",
                         norm: float | None = np.inf) -> jax.Array:
    """Autocorrelation tempogram of an onset envelope, as `librosa.feature.tempogram`.

    Args:
      onset_envelope: `(..., n_frames)`, e.g. from `onset_strength`.
      win_length: frames per autocorrelation window (lags `0..win_length-1`).
      center: centre the windows on each frame, padding with a linear ramp to zero.
      window: window applied before autocorrelating (see `get_window`).
      norm: normalisation across lags per frame (`np.inf`: lag 0 becomes 1; None: none).

    Returns:
      `(..., n_frames, win_length)` (with `center=False`, `n_frames - win_length + 1` frames).
    """
    envelope = _validation.real_signal(onset_envelope, "onset_envelope")
    static = _check_tempogram_args(envelope.shape[-1], win_length, center, window, norm)
    return _tempogram_from_onset_jit(envelope, **static)


def tempogram(x: jax.Array, sr: float = 16000, hop_length: int = 256, win_length: int = 384, *,
              center: bool = True, window: spectral.WindowSpec = "hann",
              norm: float | None = np.inf, n_fft: int = 512, n_mels: int = 96) -> jax.Array:
    """Autocorrelation tempogram of a signal: `tempogram_from_onset(onset_strength(x))`.

    Args:
      x: real signal `(..., samples)`.
      sr, hop_length, n_fft, n_mels: for `onset_strength` (its other arguments at defaults).
      win_length, center, window, norm: as in `tempogram_from_onset`.

    Returns:
      `(..., n_frames, win_length)`; frame `t` is at `t * hop_length / sr` seconds and lag `k`
      is `k * hop_length / sr` seconds (`60 * sr / (hop_length * k)` BPM).
    """
    x, onset_static = _check_onset_args(x, sr, n_fft, hop_length, n_mels, 1, 1, False, True,
                                        jnp.mean, "hann", "constant", None, 0.0, None, False,
                                        "slaney", 2.0)
    n_frames = spectral.num_frames(x.shape[-1], n_fft, hop_length, True)
    static = _check_tempogram_args(n_frames, win_length, center, window, norm)
    return _tempogram(x, onset_static=tuple(onset_static.items()), **static)
