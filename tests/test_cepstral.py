"""dct against scipy.fft.dct and mfcc against librosa.feature.mfcc (0.11)."""

import functools

import jax
import jax.numpy as jnp
import librosa
import numpy as np
import pytest
import scipy.fft
import signals
from assertions import UNIT_ROUNDOFF, assert_close_to_peak, assert_within, gamma

from tagjax import features as tjf

DCT_TOL = 1e-5  # of the reference's peak magnitude, float32
MFCC_TOL = 1e-4  # of the reference's peak magnitude (the bound)


@pytest.mark.parametrize("shape,axis", [((1,), -1), ((13,), 0), ((7, 96), -1), ((40, 7), 0),
                                        ((2, 3, 128), -1), ((2, 65, 3), 1), ((4, 5, 6), -3)])
@pytest.mark.parametrize("norm", ["ortho", None])
def test_dct_matches_scipy(shape, axis, norm):
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    expected = scipy.fft.dct(x.astype(np.float64), type=2, axis=axis, norm=norm)
    actual = tjf.dct(x, axis=axis, norm=norm)
    assert actual.dtype == jnp.float32
    assert_close_to_peak(actual, expected, DCT_TOL)
    assert_close_to_peak(jax.jit(tjf.dct, static_argnames=("axis", "norm"))(x, axis, norm),
                         expected, DCT_TOL)


def test_orthonormal_dct_preserves_energy():
    x = np.random.default_rng(1).standard_normal((5, 96)).astype(np.float32)
    np.testing.assert_allclose(np.sum(np.asarray(tjf.dct(x)) ** 2, -1), np.sum(x**2, -1),
                               rtol=1e-5)


MFCC_CASES = [
    # (sr, n_fft, hop_length, n_mels, n_mfcc, norm, lifter, htk, fmax, center)
    (16000, 512, 256, 96, 20, "ortho", 0.0, False, None, True),
    (16000, 512, 256, 96, 90, "ortho", 0.0, False, None, True),
    (16000, 512, 256, 128, 13, "ortho", 22.0, True, None, True),
    (22050, 2048, 512, 128, 40, None, 0.0, False, 8000.0, True),
    (22050, 1023, 300, 64, 64, "ortho", 0.0, False, None, False),
    (8000, 256, 80, 40, 13, None, 2.5, True, 3800.0, True),
]


@pytest.mark.parametrize("signal", sorted(signals.ALL))
@pytest.mark.parametrize("sr,n_fft,hop_length,n_mels,n_mfcc,norm,lifter,htk,fmax,center",
                         MFCC_CASES)
def test_mfcc_matches_librosa(signal, sr, n_fft, hop_length, n_mels, n_mfcc, norm, lifter, htk,
                              fmax, center):
    x = signals.ALL[signal](sr, 1.0)
    expected = librosa.feature.mfcc(y=x.astype(np.float64), sr=sr, n_mfcc=n_mfcc, norm=norm,
                                    lifter=lifter, n_fft=n_fft, hop_length=hop_length,
                                    n_mels=n_mels, htk=htk, fmax=fmax, center=center).T
    actual = tjf.mfcc(x, sr, n_mfcc, n_mels, n_fft, hop_length, norm=norm, lifter=lifter,
                      htk=htk, fmax=fmax, center=center)
    assert_close_to_peak(actual, expected, MFCC_TOL)


@pytest.mark.parametrize("top_db", [80.0, None])
def test_mfcc_from_db_matches_librosa_given_a_log_mel(top_db):
    x = signals.music_like(16000, 1.0)
    log_mel = np.asarray(tjf.power_to_db(tjf.melspectrogram(x), top_db=top_db))
    expected = librosa.feature.mfcc(S=log_mel.T, n_mfcc=30, lifter=10.0).T
    assert_close_to_peak(tjf.mfcc_from_db(log_mel, 30, lifter=10.0), expected, DCT_TOL)


def test_mfcc_top_db_is_per_example_in_a_batch():
    loud = signals.music_like(16000, 1.0)
    batch = np.stack([loud, loud * 1e-4, signals.noise(16000, 1.0)])
    actual = np.asarray(tjf.mfcc(batch, n_mfcc=20))
    for example, x in zip(actual, batch, strict=True):
        expected = librosa.feature.mfcc(y=x.astype(np.float64), sr=16000, n_mfcc=20, n_fft=512,
                                        hop_length=256, n_mels=96).T
        assert_close_to_peak(example, expected, MFCC_TOL)


def test_mfcc_same_eagerly_under_jit_and_vmap():
    x = jnp.asarray(np.stack([signals.ALL[name](16000, 1.0) for name in sorted(signals.ALL)]))
    n_bins, n_mels, n_mfcc = 257, 128, 40
    f = functools.partial(tjf.mfcc, sr=16000, n_mfcc=n_mfcc, n_mels=n_mels)
    eager = np.asarray(f(x))
    # Each form computes the same float32 sums, but XLA may add their terms in another order
    # (the c0 of a silent frame, 128 equal dB values, moved by 1.8e-6 of the peak between the
    # batch and a row when XLA:CPU used other dot kernels). From the same FFT: a band's power
    # sums n_bins + 2 positive products (re^2 + im^2 under the filter), so two orders differ by
    # 2 gamma of it, 10 log10(e) times that in dB, plus the log's own rounding (a few ulps of
    # the dB value, top_db's peak included); the DCT sums n_mels products dB x basis, so two
    # orders differ by 2 gamma_{n_mels} sum |dB| |basis|, and the dB differences add through
    # |basis|.
    log_mel = np.asarray(tjf.power_to_db(tjf.melspectrogram(x, 16000, 512, 256, n_mels)),
                         np.float64)
    basis = np.abs(scipy.fft.dct(np.eye(n_mels), norm="ortho")[:, :n_mfcc])
    db_error = (10 * np.log10(np.e) * 2 * gamma(n_bins + 2)
                + 8 * UNIT_ROUNDOFF * np.abs(log_mel).max())
    bound = 2 * gamma(n_mels) * (np.abs(log_mel) @ basis) + db_error * basis.sum(axis=0)
    for other in [jax.jit(f)(x), jax.vmap(f)(x), np.stack([f(row) for row in x])]:
        assert_within(other, eager, bound)


def test_bad_input_raises_clear_errors():
    x = jnp.zeros(4000)
    with pytest.raises(TypeError, match="real floating-point"):
        jax.jit(tjf.mfcc)(np.zeros(4000, np.int16))
    with pytest.raises(ValueError, match="n_mfcc=100 exceeds the 96 mel bands"):
        tjf.mfcc(x, n_mfcc=100)
    with pytest.raises(ValueError, match="lifter"):
        tjf.mfcc(x, lifter=-1.0)
    with pytest.raises(ValueError, match="norm"):
        tjf.mfcc(x, norm="forward")
    with pytest.raises(ValueError, match="axis=2 is out of range"):
        tjf.dct(jnp.zeros((3, 4)), axis=2)
    with pytest.raises(TypeError, match="real floating-point"):
        tjf.dct(jnp.zeros((3, 4), jnp.complex64))
    with pytest.raises(ValueError, match="n_mels=600 exceeds"):
        tjf.mfcc(x, n_mels=600, n_mfcc=20)
