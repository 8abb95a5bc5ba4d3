"""frame, stft (fft and dft) and spectrogram against librosa 0.11, NumPy and each other."""

import functools

import jax
import jax.numpy as jnp
import jax.test_util
import librosa
import numpy as np
import pytest
import scipy.signal
import signals
from assertions import assert_close_to_peak

from tagjax import features as tjf

# The bounds: spectra within 1e-5 of the reference's peak magnitude (float32), the
# naive DFT within 1e-4 of the FFT's peak.
SPECTRUM_TOL = 1e-5
DFT_TOL = 1e-4
# Eager, jit and vmap run the same float32 operations, possibly fused or reordered: a few ulps.
TRANSFORM_TOL = 1e-6


def librosa_stft(x, **kwargs):
    """librosa.stft per example in float64, transposed to (..., frames, bins)."""
    x = np.asarray(x, np.float64)
    out = [librosa.stft(row, **kwargs).T for row in x.reshape(-1, x.shape[-1])]
    return np.stack(out).reshape(*x.shape[:-1], *out[0].shape)


def batch_of(shape, sr, seconds):
    """Examples of the shared test signals (and one random mix per extra slot) in `shape`."""
    makers = list(signals.ALL.values())
    n = int(np.prod(shape, dtype=int))
    rows = [makers[i % len(makers)](sr, seconds) for i in range(n)]
    return np.stack(rows).reshape(*shape, -1) if shape else rows[0]


# --- frame ---------------------------------------------------------------------------------


# (512, 256), (512, 128) and (256, 64) with center=True pad whole hops: their frames are cut
# from the signal's hops with the pads put around them (`spectral._centred_hops`); the others
# from the padded signal.
@pytest.mark.parametrize("frame_length,hop_length", [(512, 256), (512, 128), (256, 64),
                                                     (400, 160), (255, 64), (64, 100),
                                                     (2048, 128)])
@pytest.mark.parametrize("center,pad_mode,n_samples", [
    (False, "constant", 5600),
    *((True, mode, n) for mode in ("constant", "reflect", "edge", "symmetric", "linear_ramp")
      for n in (5600, 513, 300))])
def test_frame_matches_librosa_util_frame(frame_length, hop_length, center, pad_mode, n_samples):
    x = signals.noise(8000, 0.7)[:n_samples]
    padded = np.pad(x, frame_length // 2, mode=pad_mode) if center else x
    expected = librosa.util.frame(padded, frame_length=frame_length, hop_length=hop_length).T
    actual = tjf.frame(x, frame_length, hop_length, center=center, pad_mode=pad_mode)
    if pad_mode == "linear_ramp":
        # The ramp's values are computed, here and in NumPy, each with two float32 roundings
        # (a product, a sum) of at most half an ulp of the edge sample's magnitude: the two
        # sides may differ by two ulps.
        atol = 2 * np.finfo(np.float32).eps * np.abs(x).max()
        np.testing.assert_allclose(actual, expected, rtol=0, atol=atol)
    else:
        np.testing.assert_array_equal(actual, expected)
    assert actual.shape[0] == tjf.num_frames(x.size, frame_length, hop_length, center)


@pytest.mark.parametrize("pad_mode", ["constant", "reflect", "symmetric", "edge"])
def test_centred_frame_gradient_counts_every_read_of_a_sample(pad_mode):
    # The gradient of the frames' sum counts, for each sample, the frame entries holding it,
    # pads included: frame NumPy's padded sample indices (-1 for constant padding's zeros).
    n, frame_length, hop_length = 1500, 512, 128
    x = jnp.asarray(signals.noise(8000, 0.2)[:n])
    if pad_mode == "constant":
        index = np.pad(np.arange(n), frame_length // 2, constant_values=-1)
    else:
        index = np.pad(np.arange(n), frame_length // 2, mode=pad_mode)
    read = librosa.util.frame(index, frame_length=frame_length, hop_length=hop_length)
    expected = np.bincount(read[read >= 0], minlength=n)
    counts = jax.grad(lambda s: tjf.frame(s, frame_length, hop_length, pad_mode=pad_mode).sum())(x)
    np.testing.assert_array_equal(counts, expected)


def test_frame_batch_axes_and_gradient():
    x = jnp.asarray(batch_of((2, 3), 8000, 0.2))
    frames = tjf.frame(x, 128, 32)
    for i in range(2):
        for j in range(3):
            np.testing.assert_array_equal(frames[i, j], tjf.frame(x[i, j], 128, 32))
    # Each sample appears in frame_length / hop_length frames: the gradient of a sum counts them.
    counts = jax.grad(lambda s: tjf.frame(s, 128, 32, center=False).sum())(x[0, 0])
    expected = np.zeros(x.shape[-1])
    for start in range(0, x.shape[-1] - 128 + 1, 32):
        expected[start : start + 128] += 1
    np.testing.assert_array_equal(counts, expected)


# --- stft against librosa ------------------------------------------------------------------


STFT_CASES = [
    # (sr, seconds, n_fft, hop_length, window, center, pad_mode)
    (16000, 1.0, 512, 256, "hann", True, "constant"),
    (16000, 1.0, 512, 128, "hann", False, "constant"),
    (22050, 1.0, 2048, 512, "hann", True, "reflect"),
    (22050, 0.5, 1024, 300, "hamming", True, "constant"),
    (8000, 1.0, 511, 160, "hann", True, "reflect"),
    (8000, 1.0, 255, 64, "blackman", False, "constant"),
    (44100, 0.5, 4096, 1024, "boxcar", True, "constant"),
    (16000, 0.5, 400, 160, ("kaiser", 8.0), True, "edge"),
    (16000, 0.3, 64, 16, "hann", True, "constant"),
]


@pytest.mark.parametrize("signal", sorted(signals.ALL))
@pytest.mark.parametrize("sr,seconds,n_fft,hop_length,window,center,pad_mode", STFT_CASES)
def test_stft_matches_librosa(signal, sr, seconds, n_fft, hop_length, window, center, pad_mode):
    x = signals.ALL[signal](sr, seconds)
    expected = librosa_stft(x, n_fft=n_fft, hop_length=hop_length, window=window, center=center,
                            pad_mode=pad_mode)
    actual = tjf.stft(x, n_fft, hop_length, window, center, pad_mode)
    assert actual.dtype == jnp.complex64
    assert_close_to_peak(actual, expected, SPECTRUM_TOL)


@pytest.mark.parametrize("shape", [(3,), (2, 2)])
@pytest.mark.parametrize("method", ["fft", "dft"])
def test_stft_batch_axes_match_librosa_per_example(shape, method):
    x = batch_of(shape, 16000, 0.5)
    expected = librosa_stft(x, n_fft=512, hop_length=256)
    actual = np.asarray(tjf.stft(x, method=method))
    for index in np.ndindex(*shape):
        assert_close_to_peak(actual[index], expected[index],
                             SPECTRUM_TOL if method == "fft" else DFT_TOL)


@pytest.mark.parametrize("n_fft,win_length,window", [(512, 400, "hann"), (511, 300, "hamming"),
                                                     (1024, 1023, "blackman")])
def test_stft_win_length_matches_librosa(n_fft, win_length, window):
    x = signals.music_like(16000, 1.0)
    expected = librosa_stft(x, n_fft=n_fft, hop_length=160, win_length=win_length, window=window)
    actual = tjf.stft(x, n_fft, 160, window, win_length=win_length)
    assert_close_to_peak(actual, expected, SPECTRUM_TOL)


def test_window_forms_agree_with_scipy():
    for name in ["hann", "hamming", "blackman", "boxcar", ("kaiser", 8.0)]:
        np.testing.assert_array_equal(tjf.get_window(name, 400),
                                      scipy.signal.get_window(name, 400, fftbins=True))
    array = scipy.signal.get_window("hann", 300)
    padded = tjf.get_window(array, 512, win_length=300)
    np.testing.assert_array_equal(padded, librosa.util.pad_center(array, size=512))
    x = signals.chirp(16000, 0.5)
    by_name = tjf.stft(x, 512, 128, "hann", win_length=300)
    np.testing.assert_array_equal(tjf.stft(x, 512, 128, array, win_length=300), by_name)
    np.testing.assert_array_equal(
        tjf.stft(x, 512, 128, lambda n: scipy.signal.get_window("hann", n), win_length=300),
        by_name)


@pytest.mark.parametrize("power", [1.0, 2.0, 3.0])
def test_spectrogram_is_magnitude_to_the_power(power):
    x = signals.harmonic(22050, 0.5)
    expected = np.abs(librosa_stft(x, n_fft=1024, hop_length=256)) ** power
    assert_close_to_peak(tjf.spectrogram(x, 1024, 256, power), expected, SPECTRUM_TOL)


# --- naive DFT -----------------------------------------------------------------------------


@pytest.mark.parametrize("n_fft", [64, 400, 511, 1024, 2048])
def test_dft_method_equals_fft_method(n_fft):
    x = np.stack([signals.music_like(16000, 0.5), signals.noise(16000, 0.5, seed=3)])
    fft = np.asarray(tjf.stft(x, n_fft, n_fft // 4, method="fft"))
    dft = np.asarray(tjf.stft(x, n_fft, n_fft // 4, method="dft"))
    for example in range(2):
        assert_close_to_peak(dft[example], fft[example], DFT_TOL)


# --- transformations -----------------------------------------------------------------------


@pytest.mark.parametrize("method", ["fft", "dft"])
def test_stft_same_eagerly_under_jit_and_vmap(method):
    x = jnp.asarray(batch_of((4,), 16000, 0.5))
    f = functools.partial(tjf.stft, n_fft=400, hop_length=160, method=method)
    eager = np.asarray(f(x))
    for other in [jax.jit(f)(x), jax.vmap(f)(x), np.stack([f(row) for row in x])]:
        assert_close_to_peak(other, eager, TRANSFORM_TOL)


def test_spectrogram_gradient_matches_finite_differences():
    x = jnp.asarray(signals.music_like(8000, 0.1))
    weights = jnp.asarray(np.random.default_rng(0).standard_normal((7, 129)), jnp.float32)

    def loss(signal):
        return jnp.sum(weights * tjf.spectrogram(signal, 256, 128, power=2.0))

    with jax.enable_x64(True):
        jax.test_util.check_grads(loss, (x.astype(jnp.float64),), order=1, modes=("rev",))
    assert np.all(np.isfinite(jax.grad(loss)(x)))


class _CompileCounter:
    def __init__(self):
        self.count = 0
        jax.monitoring.register_event_duration_secs_listener(self._on_event)

    def _on_event(self, name, duration, **kwargs):
        if name == "/jax/core/compile/backend_compile_duration":
            self.count += 1


COMPILES = _CompileCounter()


def test_second_call_with_same_shapes_does_not_compile():
    x, other = jnp.asarray(signals.noise(16000, 0.25)), jnp.asarray(signals.chirp(16000, 0.25))
    for method in ["fft", "dft"]:
        tjf.stft(x, 256, 64, method=method)
        before = COMPILES.count
        tjf.stft(other, 256, 64, method=method)
        assert COMPILES.count == before
    jitted = jax.jit(lambda s: tjf.stft(s, 256, 64))
    jitted(x)
    before = COMPILES.count
    jitted(other)
    assert COMPILES.count == before


# --- bad input -----------------------------------------------------------------------------


@pytest.mark.parametrize("fn", [tjf.stft, tjf.spectrogram, functools.partial(tjf.frame,
                                                                              frame_length=512,
                                                                              hop_length=128)])
@pytest.mark.parametrize("samples", [np.arange(4000, dtype=np.int16),
                                     np.ones(4000, np.complex64), np.ones(4000, bool)])
def test_non_real_float_samples_raise_type_error(fn, samples):
    with pytest.raises(TypeError, match="real floating-point"):
        fn(samples)
    with pytest.raises(TypeError, match="real floating-point"):
        jax.jit(fn)(samples)


def test_bad_arguments_raise_value_error_naming_them():
    x = jnp.zeros(1000)
    with pytest.raises(ValueError, match="fewer than n_fft=2048"):
        tjf.stft(x, 2048, 512, center=False)
    with pytest.raises(ValueError, match="fewer than n_fft=2048"):
        jax.jit(lambda s: tjf.stft(s, 2048, 512, center=False))(x)
    for hop in [0, -256, 1.5]:
        with pytest.raises(ValueError, match="hop_length"):
            tjf.stft(x, 512, hop)
    with pytest.raises(ValueError, match="n_fft"):
        tjf.stft(x, 0)
    with pytest.raises(ValueError, match="win_length"):
        tjf.stft(x, 512, win_length=1024)
    with pytest.raises(ValueError, match="method"):
        tjf.stft(x, method="naive")
    with pytest.raises(ValueError, match="pad_mode"):
        tjf.stft(x, pad_mode="wrap")
    with pytest.raises(ValueError, match="window"):
        tjf.stft(x, window="no-such-window")
    with pytest.raises(ValueError, match="window has 100 samples"):
        tjf.stft(x, window=np.ones(100))
    with pytest.raises(ValueError, match="power"):
        tjf.spectrogram(x, power=-1.0)
    with pytest.raises(ValueError, match="empty"):
        tjf.stft(jnp.zeros(0))
