"""chroma, onset_strength and tempogram against librosa 0.11."""

import functools

import jax
import jax.numpy as jnp
import librosa
import numpy as np
import pytest
import signals
from assertions import assert_close_to_peak

from tagjax import features as tjf

SPECTRUM_TOL = 1e-5  # of the reference's peak magnitude, float32 (the bound)
DB_TOL = 1e-3  # dB: the onset envelope is a mean of differences of dB values
TRANSFORM_TOL = 1e-6  # eager vs jit vs vmap: the same float32 operations, a few ulps apart


# --- chroma --------------------------------------------------------------------------------


@pytest.mark.parametrize("sr,n_fft", [(16000, 512), (22050, 2048), (8000, 255), (44100, 4096)])
@pytest.mark.parametrize("n_chroma,tuning,octwidth,norm,base_c", [
    (12, 0.0, 2.0, 2.0, True), (12, -0.3, None, 2.0, True), (24, 0.1, 1.0, 1.0, False),
    (36, 0.0, 2.0, None, True), (12, 0.25, 3.0, np.inf, False)])
def test_chroma_filterbank_matches_librosa(sr, n_fft, n_chroma, tuning, octwidth, norm, base_c):
    expected = librosa.filters.chroma(sr=sr, n_fft=n_fft, n_chroma=n_chroma, tuning=tuning,
                                      octwidth=octwidth, norm=norm, base_c=base_c).T
    actual = tjf.chroma_filterbank(sr, n_fft, n_chroma, tuning, octwidth=octwidth, norm=norm,
                                   base_c=base_c)
    assert_close_to_peak(actual, expected, SPECTRUM_TOL)


CHROMA_CASES = [
    # (sr, n_fft, hop_length, tuning, n_chroma, norm, center, pad_mode)
    (16000, 512, 256, 0.0, 12, np.inf, True, "constant"),
    (22050, 2048, 512, 0.0, 12, np.inf, True, "reflect"),
    (22050, 4096, 1024, 0.2, 12, 2.0, True, "constant"),
    (8000, 1023, 200, -0.1, 24, np.inf, False, "constant"),
    (44100, 4096, 2048, 0.0, 12, None, True, "constant"),
]


@pytest.mark.parametrize("signal", sorted(signals.ALL))
@pytest.mark.parametrize("sr,n_fft,hop_length,tuning,n_chroma,norm,center,pad_mode",
                         CHROMA_CASES)
def test_chroma_matches_librosa_chroma_stft(signal, sr, n_fft, hop_length, tuning, n_chroma, norm,
                                            center, pad_mode):
    x = signals.ALL[signal](sr, 1.0)
    expected = librosa.feature.chroma_stft(
        y=x.astype(np.float64), sr=sr, n_fft=n_fft, hop_length=hop_length, tuning=tuning,
        n_chroma=n_chroma, norm=norm, center=center, pad_mode=pad_mode).T
    actual = tjf.chroma(x, sr, n_fft, hop_length, tuning=tuning, n_chroma=n_chroma, norm=norm,
                        center=center, pad_mode=pad_mode)
    assert_close_to_peak(actual, expected, SPECTRUM_TOL)


def test_chroma_finds_the_pitch_class_of_a_tone():
    # A harmonic tone at A3 (220 Hz): its chroma peaks at A (index 9 counting from C).
    x = signals.harmonic(22050, 1.0, f0=220.0)
    profile = np.asarray(tjf.chroma(x, 22050, 4096, 1024)).mean(axis=0)
    assert np.argmax(profile) == 9


def test_silent_frames_stay_zero_not_nan():
    x = np.concatenate([np.zeros(8000, np.float32), signals.harmonic(16000, 0.5)])
    actual = np.asarray(tjf.chroma(x))
    assert np.all(np.isfinite(actual)) and np.all(actual[5] == 0)
    expected = librosa.feature.chroma_stft(y=x.astype(np.float64), sr=16000, n_fft=512,
                                           hop_length=256, tuning=0.0).T
    assert_close_to_peak(actual, expected, SPECTRUM_TOL)


# --- onset strength ------------------------------------------------------------------------


ONSET_CASES = [
    # (sr, n_fft, hop_length, n_mels, lag, max_size, detrend, center, fmax)
    (16000, 512, 256, 96, 1, 1, False, True, None),
    (22050, 2048, 512, 128, 1, 1, False, True, None),
    (22050, 1024, 256, 128, 2, 3, True, False, None),
    (16000, 1024, 160, 64, 3, 4, False, True, 6000.0),
    (8000, 255, 80, 40, 1, 2, True, True, None),
]


@pytest.mark.parametrize("signal", sorted(signals.ALL))
@pytest.mark.parametrize("sr,n_fft,hop_length,n_mels,lag,max_size,detrend,center,fmax",
                         ONSET_CASES)
def test_onset_strength_matches_librosa(signal, sr, n_fft, hop_length, n_mels, lag, max_size,
                                        detrend, center, fmax):
    x = signals.ALL[signal](sr, 2.0)
    expected = librosa.onset.onset_strength(
        y=x.astype(np.float64), sr=sr, n_fft=n_fft, hop_length=hop_length, n_mels=n_mels, lag=lag,
        max_size=max_size, detrend=detrend, center=center, fmax=fmax)
    actual = tjf.onset_strength(x, sr, n_fft, hop_length, n_mels=n_mels, lag=lag,
                                max_size=max_size, detrend=detrend, center=center, fmax=fmax)
    np.testing.assert_allclose(actual, expected, rtol=0, atol=DB_TOL)


def test_onset_strength_median_aggregate_matches_librosa():
    x = signals.music_like(22050, 2.0)
    expected = librosa.onset.onset_strength(y=x.astype(np.float64), sr=22050, n_fft=2048,
                                            hop_length=512, aggregate=np.median)
    actual = tjf.onset_strength(x, 22050, 2048, 512, n_mels=128, aggregate=jnp.median)
    np.testing.assert_allclose(actual, expected, rtol=0, atol=DB_TOL)


def test_onset_strength_peaks_on_the_clicks():
    sr, hop = 16000, 256
    envelope = np.asarray(tjf.onset_strength(signals.clicks(sr, 4.0, bpm=120.0), sr,
                                             hop_length=hop))
    peaks = np.flatnonzero(envelope > 0.5 * envelope.max())
    click_frames = np.arange(0, 4.0 * sr, sr * 0.5) / hop
    assert all(np.min(np.abs(peaks - f)) <= 1 for f in click_frames[1:])


# --- tempogram -----------------------------------------------------------------------------


@pytest.mark.parametrize("signal", sorted(signals.ALL))
@pytest.mark.parametrize("win_length,center,window,norm", [
    (384, True, "hann", np.inf), (100, True, "hann", np.inf), (64, False, "hamming", np.inf),
    (101, True, "boxcar", None), (50, True, "hann", 2.0)])
def test_tempogram_from_onset_matches_librosa(signal, win_length, center, window, norm):
    envelope = librosa.onset.onset_strength(y=signals.ALL[signal](22050, 4.0), sr=22050)
    expected = librosa.feature.tempogram(onset_envelope=envelope, win_length=win_length,
                                         center=center, window=window, norm=norm).T
    actual = tjf.tempogram_from_onset(envelope, win_length, center, window, norm)
    assert_close_to_peak(actual, expected, SPECTRUM_TOL)


@pytest.mark.parametrize("signal", sorted(signals.ALL))
@pytest.mark.parametrize("sr,hop_length,win_length", [(16000, 256, 384), (22050, 512, 200)])
def test_tempogram_of_a_signal_matches_librosa(signal, sr, hop_length, win_length):
    x = signals.ALL[signal](sr, 4.0)
    # librosa's tempogram computes the onset envelope with its own melspectrogram defaults.
    expected = librosa.feature.tempogram(y=x.astype(np.float64), sr=sr, hop_length=hop_length,
                                         win_length=win_length).T
    actual = tjf.tempogram(x, sr, hop_length, win_length, n_fft=2048, n_mels=128)
    assert_close_to_peak(actual, expected, SPECTRUM_TOL)


def test_tempogram_peaks_at_the_beat_period():
    sr, hop = 16000, 256
    beat_lag = sr * 0.5 / hop  # 120 BPM
    gram = np.asarray(tjf.tempogram(signals.clicks(sr, 8.0, bpm=120.0), sr, hop, 200))
    mean = gram[len(gram) // 4 : -len(gram) // 4].mean(axis=0)
    assert abs(np.argmax(mean[10:]) + 10 - beat_lag) <= 1


# --- batches and transformations -------------------------------------------------------------


@pytest.mark.parametrize("name", ["chroma", "onset_strength", "tempogram"])
def test_batch_eager_jit_and_vmap_agree_with_per_example_calls(name):
    f = functools.partial(getattr(tjf, name), sr=16000)
    x = jnp.asarray(np.stack([signals.ALL[s](16000, 3.0) for s in sorted(signals.ALL)])
                    .reshape(5, 1, -1))
    eager = np.asarray(f(x))
    for other in [jax.jit(f)(x), jax.vmap(f)(x), np.stack([f(row) for row in x])]:
        assert_close_to_peak(other, eager, TRANSFORM_TOL)


def test_bad_input_raises_clear_errors():
    x = jnp.zeros(16000)
    with pytest.raises(TypeError, match="real floating-point"):
        tjf.chroma(np.zeros(16000, np.int16))
    with pytest.raises(TypeError, match="real floating-point"):
        jax.jit(tjf.tempogram)(np.zeros(16000, np.complex64))
    with pytest.raises(ValueError, match="tuning"):
        tjf.chroma(x, tuning=None)
    with pytest.raises(ValueError, match="lag"):
        tjf.onset_strength(x, lag=0)
    with pytest.raises(ValueError, match="max_size"):
        tjf.onset_strength(x, max_size=0)
    with pytest.raises(TypeError, match="aggregate"):
        tjf.onset_strength(x, aggregate="mean")
    with pytest.raises(ValueError, match="win_length"):
        tjf.tempogram(x, win_length=0)
    with pytest.raises(ValueError, match="fewer than win_length=384"):
        tjf.tempogram_from_onset(jnp.zeros(100), center=False)
    with pytest.raises(ValueError, match="hop_length"):
        tjf.tempogram(x, hop_length=-1)
    with pytest.raises(ValueError, match="fmax"):
        tjf.onset_strength(x, fmax=10000.0)
