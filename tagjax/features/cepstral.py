"""The type-II DCT and mel-frequency cepstral coefficients (MFCC), as librosa and SciPy."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from tagjax.features import _validation, decibels, mel, spectral

_DCT_NORMS = (None, "ortho")


@functools.lru_cache(maxsize=64)
def _dct_matrix_np(n: int, n_out: int, norm: str | None) -> np.ndarray:
    """`(n, n_out)` float64: the first `n_out` basis vectors of SciPy's DCT-II of length `n`."""
    # y[k] = 2 sum_m x[m] cos(pi k (2m + 1) / (2n)); the phase is reduced mod 4n in integers.
    phase = np.outer(2 * np.arange(n) + 1, np.arange(n_out)) % (4 * n)
    basis = 2.0 * np.cos(np.pi * phase / (2 * n))
    if norm == "ortho":
        basis[:, 0] *= np.sqrt(1.0 / (4 * n))
        basis[:, 1:] *= np.sqrt(1.0 / (2 * n))
    basis.setflags(write=False)
    return basis


def _dct_last_axis(x: jax.Array, n_out: int, norm: str | None) -> jax.Array:
    basis = jnp.asarray(_dct_matrix_np(x.shape[-1], n_out, norm), x.dtype)
    return jnp.matmul(x, basis, precision=lax.Precision.HIGHEST)


@functools.partial(jax.jit, static_argnames=("axis", "norm"))
def _dct(x, *, axis, norm):
    moved = jnp.moveaxis(x, axis, -1)
    return jnp.moveaxis(_dct_last_axis(moved, moved.shape[-1], norm), -1, axis)


def dct(x: jax.Array, axis: int = -1, norm: str | None = "ortho") -> jax.Array:
    """Type-II discrete cosine transform along one axis, as `scipy.fft.dct(x, type=2)`.

    A product with a cached float64-built basis at full precision (the sizes used on
    mel bands are small, and MFCC keeps only the first coefficients).

    Args:
      x: real array.
      axis: the transformed axis.
      norm: "ortho" (orthonormal, librosa's MFCC default) or None (SciPy's unnormalised
        `2 sum cos(.)`).

    Returns:
      An array shaped like `x`.
    """
    x = _validation.real_signal(x)
    _validation.choice(norm, "norm", _DCT_NORMS)
    if not -x.ndim <= axis < x.ndim:
        raise ValueError(f"axis={axis} is out of range for an array of shape {x.shape}")
    return _dct(x, axis=axis % x.ndim, norm=norm)


def _check_cepstral_args(n_mfcc, n_mels, norm, lifter) -> tuple[int, float]:
    n_mfcc = _validation.positive_int(n_mfcc, "n_mfcc")
    if n_mfcc > n_mels:
        raise ValueError(f"n_mfcc={n_mfcc} exceeds the {n_mels} mel bands it is computed from")
    _validation.choice(norm, "norm", _DCT_NORMS)
    lifter = _validation.non_negative_float(lifter, "lifter")
    return n_mfcc, lifter


def _cepstrum(log_mel, n_mfcc, norm, lifter):
    coefficients = _dct_last_axis(log_mel, n_mfcc, norm)
    if lifter > 0:
        # librosa's sinusoidal lifter, indexed from 1 for the first (c0) coefficient.
        weights = 1.0 + (lifter / 2) * np.sin(np.pi * np.arange(1, 1 + n_mfcc) / lifter)
        coefficients = coefficients * jnp.asarray(weights, coefficients.dtype)
    return coefficients


@functools.partial(jax.jit, static_argnames=("n_mfcc", "norm", "lifter"))
def _mfcc_from_db(log_mel, *, n_mfcc, norm, lifter):
    return _cepstrum(log_mel, n_mfcc, norm, lifter)


def mfcc_from_db(log_mel: jax.Array, n_mfcc: int = 20, norm: str | None = "ortho",
                 lifter: float = 0.0) -> jax.Array:
    """MFCC of a log-mel spectrogram (in dB), as `librosa.feature.mfcc(S=...)`.

    Args:
      log_mel: `(..., frames, n_mels)`, e.g. `power_to_db(melspectrogram(x))`.
      n_mfcc: number of coefficients kept, at most `n_mels`.
      norm: DCT normalisation, "ortho" or None.
      lifter: sinusoidal liftering `1 + (lifter / 2) sin(pi k / lifter)`, k = 1..n_mfcc; 0: none.

    Returns:
      `(..., frames, n_mfcc)`.
    """
    log_mel = _validation.real_signal(log_mel, "log_mel")
    n_mfcc, lifter = _check_cepstral_args(n_mfcc, log_mel.shape[-1], norm, lifter)
    return _mfcc_from_db(log_mel, n_mfcc=n_mfcc, norm=norm, lifter=lifter)


@functools.partial(jax.jit, static_argnames=("mel_static", "db_args", "n_mfcc", "norm", "lifter"))
def _mfcc(x, *, mel_static, db_args, n_mfcc, norm, lifter):
    log_mel = mel._melspectrogram(x, db_args=db_args, **dict(mel_static))
    return _cepstrum(log_mel, n_mfcc, norm, lifter)


def mfcc(x: jax.Array, sr: float = 16000, n_mfcc: int = 20, n_mels: int = 96,
         n_fft: int = 512, hop_length: int = 256, *, norm: str | None = "ortho",
         lifter: float = 0.0, power: float = 2.0, window: spectral.WindowSpec = "hann",
         center: bool = True, pad_mode: str = "constant", win_length: int | None = None,
         fmin: float = 0.0, fmax: float | None = None, htk: bool = False,
         mel_norm: str | float | None = "slaney", ref: float = 1.0, amin: float = 1e-10,
         top_db: float | None = 80.0) -> jax.Array:
    """Mel-frequency cepstral coefficients, as `librosa.feature.mfcc`.

    The DCT-II of `power_to_db(melspectrogram(x), ref, amin, top_db)` over the mel axis, the
    first `n_mfcc` coefficients kept; `top_db` is applied per example.

    Args:
      x: real signal `(..., samples)`.
      sr, n_mels, n_fft, hop_length, power, window, center, pad_mode, win_length, fmin, fmax,
        htk: as in `melspectrogram`; `mel_norm` is its filter `norm`.
      n_mfcc, norm, lifter: as in `mfcc_from_db` (`norm` is the DCT's).
      ref, amin, top_db: as in `power_to_db`, with a numeric `ref`.

    Returns:
      `(..., n_frames, n_mfcc)`, the transpose of librosa's layout.
    """
    x, mel_static = mel.check_melspectrogram_args(x, sr, n_fft, hop_length, n_mels, power,
                                                  window, center, pad_mode, win_length, fmin,
                                                  fmax, htk, mel_norm)
    n_mfcc, lifter = _check_cepstral_args(n_mfcc, n_mels, norm, lifter)
    ref = _validation.non_negative_float(ref, "ref")
    amin, top_db = decibels._check_db_args(amin, top_db)
    return _mfcc(x, mel_static=tuple(mel_static.items()), db_args=(ref, amin, top_db),
                 n_mfcc=n_mfcc, norm=norm, lifter=lifter)
