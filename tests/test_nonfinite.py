"""Non-finite samples in `tj.features`: refused on concrete input, as librosa refuses them, and
carried to the output under `jit` (never replaced by clean-looking zeros)."""

import functools

import jax
import librosa
import numpy as np
import pytest
import signals

from tagjax import features as tjf

SR = 16000
BAD_SAMPLE = 2000
# The centred frames (n_fft 512, hop 256) that hold sample 2000: frame t spans
# [256 t - 256, 256 t + 256).
BAD_FRAMES = [7, 8]
# onset_strength's envelope at frame j is the flux S[j - 1] - S[j - 2] (lag 1, and the centred
# framing's delay of n_fft // (2 hop) = 1 frame), so the bad spectra reach frames 8 to 10.
BAD_ENVELOPE_FRAMES = [8, 9, 10]

SIGNAL_FUNCTIONS = {
    # name: (tagjax, librosa with the same defaults, output frames the bad sample reaches)
    "stft": (tjf.stft, lambda y: librosa.stft(y, n_fft=512, hop_length=256), BAD_FRAMES),
    "spectrogram": (tjf.spectrogram,
                    lambda y: librosa.stft(y, n_fft=512, hop_length=256), BAD_FRAMES),
    "melspectrogram": (tjf.melspectrogram, functools.partial(
        librosa.feature.melspectrogram, sr=SR, n_fft=512, hop_length=256, n_mels=96),
        BAD_FRAMES),
    "mfcc": (tjf.mfcc, functools.partial(librosa.feature.mfcc, sr=SR, n_fft=512,
                                         hop_length=256, n_mels=96), BAD_FRAMES),
    "chroma": (tjf.chroma, functools.partial(librosa.feature.chroma_stft, sr=SR, n_fft=512,
                                             hop_length=256, tuning=0.0), BAD_FRAMES),
    "onset_strength": (tjf.onset_strength, functools.partial(
        librosa.onset.onset_strength, sr=SR, n_fft=512, hop_length=256, n_mels=96),
        BAD_ENVELOPE_FRAMES),
    "tempogram": (tjf.tempogram, functools.partial(
        librosa.feature.tempogram, sr=SR, hop_length=256, win_length=384),
        BAD_ENVELOPE_FRAMES),
}


def _signal_with(value: float) -> np.ndarray:
    x = signals.music_like(SR, 0.25)  # 4000 samples, 17 frames
    x[BAD_SAMPLE] = value
    return x


def _call_librosa(function, x):
    try:
        function(y=x)
    except TypeError:  # librosa.stft takes the signal positionally
        function(x)


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("name", sorted(SIGNAL_FUNCTIONS))
def test_concrete_non_finite_input_raises_as_in_librosa(name, value):
    ours, theirs, _ = SIGNAL_FUNCTIONS[name]
    x = _signal_with(value)
    with pytest.raises(librosa.util.exceptions.ParameterError, match="not finite everywhere"):
        _call_librosa(theirs, x)
    with pytest.raises(ValueError, match=r"x is not finite everywhere: 1 of 4000 values .*"
                                         r"\(the first at index \(2000,\)\)"):
        ours(x)
    with pytest.raises(ValueError, match=r"1 of 8000 values .*index \(1, 2000\)"):
        ours(jax.numpy.stack([_signal_with(0.0), x]))  # a jax.Array, batched


def test_concrete_non_finite_spectra_and_envelopes_raise():
    x = _signal_with(np.nan)
    spectrum = np.abs(np.asarray(tjf.stft(_signal_with(0.0)))) ** 2
    spectrum[3, 4] = np.nan
    for call in (lambda: tjf.power_to_db(spectrum), lambda: tjf.amplitude_to_db(spectrum),
                 lambda: tjf.mfcc_from_db(spectrum), lambda: tjf.dct(spectrum),
                 lambda: tjf.tempogram_from_onset(spectrum[:, 4]),
                 lambda: tjf.frame(x, 512, 256)):
        with pytest.raises(ValueError, match=r"not finite everywhere: 1 of"):
            call()


@pytest.mark.parametrize("name", sorted(SIGNAL_FUNCTIONS))
def test_non_finite_input_reaches_the_output_under_jit(name):
    ours, _, bad_frames = SIGNAL_FUNCTIONS[name]
    # One compilation for the three examples: clean, with a NaN, with an infinity.
    batch = np.stack([_signal_with(0.0), _signal_with(np.nan), _signal_with(np.inf)])
    out = np.asarray(jax.jit(ours)(batch))
    assert np.isfinite(out[0]).all()
    # Every value the bad sample feeds is NaN or infinite, never a number (onset_strength and
    # tempogram gave zeros there on the CPU, and a clean-looking tempogram).
    assert not np.isfinite(out[1:, bad_frames]).any()


def test_non_finite_input_reaches_the_output_under_vmap():
    batch = np.stack([_signal_with(0.0), _signal_with(np.nan)])
    out = np.asarray(jax.vmap(tjf.stft)(batch))
    assert np.isfinite(out[0]).all()
    assert not np.isfinite(out[1, BAD_FRAMES]).any()
