"""Chroma (pitch-class energy) from the STFT, as `librosa.feature.chroma_stft` at a given tuning."""

import functools
import numbers
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from tagjax.features import _normalize, _validation, spectral


@functools.lru_cache(maxsize=64)
def _chroma_filterbank_np(sr: float, n_fft: int, n_chroma: int, tuning: float, ctroct: float,
                          octwidth: float | None, norm: float | None, base_c: bool) -> np.ndarray:
    """`(n_bins, n_chroma)` float64, as `librosa.filters.chroma` (transposed)."""
    # Octaves above A0 (A440 / 16) of each bin, in chroma steps; the DC bin has no pitch, so it
    # is put 1.5 octaves below bin 1 (as Ellis's chromagram code does).
    a440 = 440.0 * 2.0 ** (tuning / n_chroma)
    bin_hz = np.arange(1, n_fft) * (sr / n_fft)
    pitch = n_chroma * np.log2(bin_hz / (a440 / 16))
    pitch = np.concatenate(([pitch[0] - 1.5 * n_chroma], pitch))
    widths = np.concatenate((np.maximum(pitch[1:] - pitch[:-1], 1.0), [1.0]))
    # Distance of each bin to each chroma, wrapped into [-n_chroma / 2, n_chroma / 2).
    half = np.round(n_chroma / 2)
    distance = pitch[None, :] - np.arange(n_chroma)[:, None]
    distance = np.remainder(distance + half + 10 * n_chroma, n_chroma) - half
    weights = np.exp(-0.5 * (2 * distance / widths[None, :]) ** 2)
    weights = _normalize.normalize_np(weights, norm, axis=0)
    if octwidth is not None:
        # Gaussian weighting in octaves around `ctroct`, de-emphasising very low and high bins.
        weights *= np.exp(-0.5 * ((pitch / n_chroma - ctroct) / octwidth) ** 2)[None, :]
    if base_c:
        weights = np.roll(weights, -3 * (n_chroma // 12), axis=0)
    weights = np.ascontiguousarray(weights[:, : n_fft // 2 + 1].T)
    weights.setflags(write=False)
    return weights


def _check_chroma_filter_args(sr, n_fft, n_chroma, tuning, ctroct, octwidth, norm,
                              base_c) -> dict:
    sr = _validation.positive_float(sr, "sr")
    n_fft = _validation.positive_int(n_fft, "n_fft")
    n_chroma = _validation.positive_int(n_chroma, "n_chroma")
    if isinstance(tuning, bool) or not isinstance(tuning, numbers.Real) or not np.isfinite(
            tuning):
        raise ValueError(f"tuning must be a finite number of chroma bins, got {tuning!r} "
                         "(automatic tuning estimation is not implemented)")
    if isinstance(ctroct, bool) or not isinstance(ctroct, numbers.Real):
        raise ValueError(f"ctroct must be a number of octaves, got {ctroct!r}")
    if octwidth is not None:
        octwidth = _validation.positive_float(octwidth, "octwidth")
    norm = _validation.norm_order(norm, "norm")
    _validation.choice(base_c, "base_c", (True, False))
    return dict(sr=sr, n_fft=n_fft, n_chroma=n_chroma, tuning=float(tuning),
                ctroct=float(ctroct), octwidth=octwidth, norm=norm, base_c=bool(base_c))


def chroma_filterbank(sr: float, n_fft: int, n_chroma: int = 12, tuning: float = 0.0,
                      ctroct: float = 5.0, octwidth: float | None = 2.0,
                      norm: float | None = 2.0, base_c: bool = True,
                      dtype: Any = jnp.float32) -> jax.Array:
    """Chroma filters: Gaussian bumps mapping STFT bins to pitch classes (librosa's design).

    Args:
      sr: sample rate in Hz.
      n_fft: FFT size.
      n_chroma: pitch classes per octave.
      tuning: deviation from A440 in fractions of a chroma bin.
      ctroct, octwidth: centre (in octaves above A0) and width of a Gaussian weighting of the
        bins; `octwidth=None` weights all octaves equally.
      norm: norm of each bin's column across chroma (librosa: 2).
      base_c: start at C (True) or at A.
      dtype: dtype of the result.

    Returns:
      `(n_fft // 2 + 1, n_chroma)`, the transpose of `librosa.filters.chroma`.
    """
    args = _check_chroma_filter_args(sr, n_fft, n_chroma, tuning, ctroct, octwidth, norm, base_c)
    return jnp.asarray(_chroma_filterbank_np(**args), dtype)


@functools.partial(jax.jit, static_argnames=("stft_args", "filter_args", "power", "norm"))
def _chroma(x, *, stft_args, filter_args, power, norm):
    stft_args = dict(stft_args)
    filterbank = _chroma_filterbank_np(**dict(filter_args))

    def example_chroma(signal):
        power_spectrum = spectral.power_spectrogram(signal, power=power, **stft_args)
        weights = jnp.asarray(filterbank, power_spectrum.dtype)
        raw = jnp.matmul(power_spectrum, weights, precision=lax.Precision.HIGHEST)
        return _normalize.normalize(raw, norm, axis=-1)

    n_frames = spectral.num_frames(x.shape[-1], stft_args["n_fft"], stft_args["hop_length"],
                                   stft_args["center"])
    return spectral.map_examples(example_chroma, x, n_frames)


def chroma(x: jax.Array, sr: float = 16000, n_fft: int = 512, hop_length: int = 256, *,
           tuning: float = 0.0, n_chroma: int = 12, norm: float | None = np.inf,
           power: float = 2.0, window: spectral.WindowSpec = "hann", center: bool = True,
           pad_mode: str = "constant", win_length: int | None = None, ctroct: float = 5.0,
           octwidth: float | None = 2.0, base_c: bool = True) -> jax.Array:
    """Chromagram from the power spectrogram, as `librosa.feature.chroma_stft(tuning=...)`.

    Args:
      x: real signal `(..., samples)`.
      sr: sample rate in Hz.
      n_fft, hop_length, window, center, pad_mode, win_length: as in `stft`.
      tuning: deviation from A440 in fractions of a chroma bin (default 0; librosa estimates it
        when given None, which is not implemented here).
      n_chroma, ctroct, octwidth, base_c: as in `chroma_filterbank` (filter norm 2, as librosa).
      norm: per-frame normalisation across chroma: `np.inf` (peak 1, librosa's default), p > 0,
        or None; frames with a norm below the dtype's `tiny` are left unscaled.
      power: exponent of the STFT magnitude (librosa: 2).

    Returns:
      `(..., n_frames, n_chroma)`, the transpose of librosa's layout.
    """
    power = _validation.positive_float(power, "power")
    norm = _validation.norm_order(norm, "norm")
    filter_args = _check_chroma_filter_args(sr, n_fft, n_chroma, tuning, ctroct, octwidth, 2.0,
                                            base_c)
    x, stft_args = spectral.check_stft_args(x, n_fft, hop_length, window, center, pad_mode,
                                            win_length=win_length)
    return _chroma(x, stft_args=tuple(stft_args.items()), filter_args=tuple(filter_args.items()),
                   power=power, norm=norm)
