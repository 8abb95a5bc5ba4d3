"""Mel scales, filterbanks, melspectrogram and the dB conversions against librosa 0.11."""

import functools
import itertools

import jax
import jax.numpy as jnp
import jax.test_util
import librosa
import numpy as np
import pytest
import signals
from assertions import assert_close_to_peak

from tagjax import features as tjf

SPECTRUM_TOL = 1e-5  # of the reference's peak magnitude, float32 (the bound)
DB_TOL = 1e-3  # dB (the bound)
TRANSFORM_TOL = 1e-6  # eager vs jit vs vmap: the same float32 operations, a few ulps apart


def librosa_per_example(fn, x, **kwargs):
    """Applies a librosa function to each example of `x` in float64, transposing its output."""
    x = np.asarray(x, np.float64)
    out = [fn(y=row, **kwargs).T for row in x.reshape(-1, x.shape[-1])]
    return np.stack(out).reshape(*x.shape[:-1], *out[0].shape)


def batch_of(shape, sr, seconds):
    makers = list(signals.ALL.values())
    rows = [makers[i % len(makers)](sr, seconds) for i in range(int(np.prod(shape, dtype=int)))]
    return np.stack(rows).reshape(*shape, -1) if shape else rows[0]


# --- scales --------------------------------------------------------------------------------


@pytest.mark.parametrize("htk", [False, True])
def test_mel_scale_matches_librosa_both_ways(htk):
    hz = np.concatenate([np.linspace(0, 2000, 201), np.geomspace(20, 22050, 50)])
    mels = librosa.hz_to_mel(hz, htk=htk)
    np.testing.assert_allclose(tjf.hz_to_mel(hz, htk), mels, rtol=1e-12)
    np.testing.assert_allclose(tjf.mel_to_hz(mels, htk), librosa.mel_to_hz(mels, htk=htk),
                               rtol=1e-12)
    np.testing.assert_allclose(tjf.mel_to_hz(tjf.hz_to_mel(hz, htk), htk), hz, rtol=1e-12,
                               atol=1e-9)
    # The same functions on JAX arrays (float32), differentiable everywhere.
    np.testing.assert_allclose(tjf.hz_to_mel(jnp.asarray(hz, jnp.float32), htk), mels,
                               rtol=1e-6)
    assert np.all(np.isfinite(jax.vmap(jax.grad(lambda f: tjf.hz_to_mel(f, htk)))(
        jnp.asarray(hz, jnp.float32))))


def test_slaney_scale_has_its_log_part_above_1khz():
    # Closed form: 15 mels at 1 kHz, then 27 mels per factor 6.4 in frequency.
    np.testing.assert_allclose(tjf.hz_to_mel(np.array([1000.0, 6400.0])), [15.0, 42.0])
    np.testing.assert_allclose(tjf.mel_to_hz(np.array([15.0, 42.0])), [1000.0, 6400.0])


@pytest.mark.parametrize("sr,n_fft", [(16000, 512), (22050, 511), (8000, 255), (44100, 4096)])
def test_fft_frequencies_are_rfftfreq_as_librosa(sr, n_fft):
    np.testing.assert_array_equal(tjf.fft_frequencies(sr, n_fft),
                                  librosa.fft_frequencies(sr=sr, n_fft=n_fft))


@pytest.mark.parametrize("htk", [False, True])
def test_mel_frequencies_match_librosa(htk):
    np.testing.assert_allclose(tjf.mel_frequencies(98, 30.0, 7600.0, htk),
                               librosa.mel_frequencies(98, fmin=30.0, fmax=7600.0, htk=htk),
                               rtol=1e-12)


# --- filterbank ----------------------------------------------------------------------------


FILTERBANK_CASES = list(itertools.product(
    [(8000, 256, 40), (16000, 512, 96), (16000, 512, 128), (22050, 511, 64),
     (22050, 2048, 128), (44100, 4096, 128), (16000, 1024, 257)],  # (sr, n_fft, n_mels)
    [(0.0, None), (40.0, None), (0.0, 3000.0), (300.0, 4000.0)],  # (fmin, fmax)
    [False, True],  # htk
    ["slaney", None, 1.0, 2.0],  # norm
))


@pytest.mark.filterwarnings("ignore:.*[Ee]mpty filters")
@pytest.mark.parametrize("size,band,htk,norm", FILTERBANK_CASES)
def test_mel_filterbank_matches_librosa(size, band, htk, norm):
    (sr, n_fft, n_mels), (fmin, fmax) = size, band
    expected = librosa.filters.mel(sr=sr, n_fft=n_fft, n_mels=n_mels, fmin=fmin, fmax=fmax,
                                   htk=htk, norm=norm).T
    actual = tjf.mel_filterbank(sr, n_fft, n_mels, fmin, fmax, htk, norm)
    assert actual.dtype == jnp.float32 and actual.shape == (n_fft // 2 + 1, n_mels)
    # Both are float64 designs rounded to float32; librosa rounds once more before its norm.
    assert_close_to_peak(actual, expected, SPECTRUM_TOL)


def test_mel_filterbank_warns_about_empty_filters_as_librosa():
    with pytest.warns(UserWarning, match="Empty filters"):
        librosa.filters.mel(sr=16000, n_fft=256, n_mels=128)
    with pytest.warns(UserWarning, match="empty filters"):
        tjf.mel_filterbank(16000, 256, 128)


# --- melspectrogram ------------------------------------------------------------------------


MEL_CASES = [
    # (sr, n_fft, hop_length, n_mels, fmin, fmax, htk, center, pad_mode, power)
    (16000, 512, 256, 96, 0.0, None, False, True, "constant", 2.0),
    (16000, 512, 160, 128, 0.0, None, True, True, "constant", 2.0),
    (22050, 2048, 512, 128, 0.0, None, False, True, "reflect", 2.0),
    (22050, 1023, 256, 80, 50.0, 8000.0, False, False, "constant", 2.0),
    (8000, 255, 80, 40, 100.0, 3500.0, True, True, "reflect", 1.0),
    (44100, 4096, 1024, 128, 20.0, 16000.0, False, True, "constant", 2.0),
    (12000, 512, 256, 96, 0.0, None, False, False, "constant", 1.0),
]


@pytest.mark.parametrize("signal", sorted(signals.ALL))
@pytest.mark.parametrize("sr,n_fft,hop_length,n_mels,fmin,fmax,htk,center,pad_mode,power",
                         MEL_CASES)
def test_melspectrogram_matches_librosa(signal, sr, n_fft, hop_length, n_mels, fmin, fmax, htk,
                                        center, pad_mode, power):
    x = signals.ALL[signal](sr, 1.0)
    expected = librosa_per_example(
        librosa.feature.melspectrogram, x, sr=sr, n_fft=n_fft, hop_length=hop_length,
        n_mels=n_mels, fmin=fmin, fmax=fmax, htk=htk, center=center, pad_mode=pad_mode,
        power=power)
    actual = tjf.melspectrogram(x, sr, n_fft, hop_length, n_mels, power, fmin=fmin, fmax=fmax,
                                htk=htk, center=center, pad_mode=pad_mode)
    assert_close_to_peak(actual, expected, SPECTRUM_TOL)


@pytest.mark.parametrize("shape", [(16,), (2, 3)])
def test_melspectrogram_batch_axes_match_librosa_per_example(shape):
    x = batch_of(shape, 16000, 1.0)
    expected = librosa_per_example(librosa.feature.melspectrogram, x, sr=16000, n_fft=512,
                                   hop_length=256, n_mels=96)
    actual = np.asarray(tjf.melspectrogram(x))
    for index in np.ndindex(*shape):
        assert_close_to_peak(actual[index], expected[index], SPECTRUM_TOL)


def test_long_batches_looped_on_cpu_match_librosa_per_example():
    # 4 clips of 563 frames: `map_examples` runs them 3 at a time on a CPU (and 1 left over).
    x = batch_of((4,), 16000, 9.0)
    expected = librosa_per_example(librosa.feature.melspectrogram, x, sr=16000, n_fft=512,
                                   hop_length=256, n_mels=96)
    actual = np.asarray(tjf.melspectrogram(x))
    for example in range(4):
        assert_close_to_peak(actual[example], expected[example], SPECTRUM_TOL)


def test_melspectrogram_same_eagerly_under_jit_and_vmap():
    x = jnp.asarray(batch_of((4,), 16000, 1.0))
    f = functools.partial(tjf.melspectrogram, sr=16000, n_fft=400, hop_length=160, n_mels=64)
    eager = np.asarray(f(x))
    for other in [jax.jit(f)(x), jax.vmap(f)(x), np.stack([f(row) for row in x])]:
        assert_close_to_peak(other, eager, TRANSFORM_TOL)


# --- decibels ------------------------------------------------------------------------------


@pytest.mark.parametrize("ref", [1.0, 0.01, "max"])
@pytest.mark.parametrize("amin,top_db", [(1e-10, 80.0), (1e-5, 40.0), (1e-10, None),
                                         (1e-10, 0.0)])
def test_power_to_db_matches_librosa_on_the_same_spectrogram(ref, amin, top_db):
    S = np.asarray(tjf.melspectrogram(signals.music_like(16000, 1.0)))
    expected = librosa.power_to_db(S.T, ref=np.max if ref == "max" else ref, amin=amin,
                                   top_db=top_db).T
    actual = tjf.power_to_db(S, ref=jnp.max if ref == "max" else ref, amin=amin, top_db=top_db)
    np.testing.assert_allclose(actual, expected, rtol=0, atol=DB_TOL)


@pytest.mark.filterwarnings("ignore:amplitude_to_db was called on complex input")
@pytest.mark.parametrize("ref", [1.0, "max"])
def test_amplitude_to_db_matches_librosa_on_complex_and_magnitude_input(ref):
    D = np.asarray(tjf.stft(signals.harmonic(22050, 1.0), 1024, 256))
    for S in [D, np.abs(D)]:
        expected = librosa.amplitude_to_db(S.T, ref=np.max if ref == "max" else ref).T
        actual = tjf.amplitude_to_db(S, ref=jnp.max if ref == "max" else ref)
        np.testing.assert_allclose(actual, expected, rtol=0, atol=DB_TOL)


def test_top_db_peak_is_per_example_never_across_the_batch():
    loud = np.asarray(tjf.melspectrogram(signals.music_like(16000, 1.0)))
    quiet = loud * 1e-6
    batch = tjf.power_to_db(np.stack([loud, quiet]), ref=jnp.max)
    for example, S in zip(batch, [loud, quiet], strict=True):
        np.testing.assert_allclose(example, librosa.power_to_db(S.T, ref=np.max).T, atol=DB_TOL)
    # The quiet example alone and next to a loud one: the same values.
    np.testing.assert_array_equal(batch[1], tjf.power_to_db(quiet, ref=jnp.max))
    np.testing.assert_array_equal(jax.vmap(tjf.power_to_db)(jnp.stack([loud, quiet])),
                                  tjf.power_to_db(np.stack([loud, quiet])))


@pytest.mark.parametrize("sr,n_fft,hop_length,n_mels", [(16000, 512, 256, 96),
                                                        (22050, 2048, 512, 128)])
def test_log_mel_end_to_end_within_a_thousandth_of_a_db(sr, n_fft, hop_length, n_mels):
    # float32 FFTs err by ~1e-7 of the frame's peak, about 1e-3 dB on a band 70-80 dB down (the
    # worst seen here is 7.6e-4 dB, on the chirp); librosa windows in float64 and errs less.
    for signal in sorted(signals.ALL):
        x = signals.ALL[signal](sr, 1.0)
        expected = librosa.power_to_db(librosa.feature.melspectrogram(
            y=x.astype(np.float64), sr=sr, n_fft=n_fft, hop_length=hop_length,
            n_mels=n_mels)).T
        actual = np.asarray(tjf.power_to_db(tjf.melspectrogram(x, sr, n_fft, hop_length,
                                                               n_mels)))
        np.testing.assert_allclose(actual, expected, rtol=0, atol=DB_TOL)
        _assert_same_decibels(tjf.log_melspectrogram(x, sr, n_fft, hop_length, n_mels), actual)


def _assert_same_decibels(fused, composed):
    # The same operations clip by clip; XLA may compile 10 log10(.) and the floor into other
    # instruction sequences, each rounding a value of at most max |dB| a few times in float32.
    eps = np.finfo(np.float32).eps
    np.testing.assert_allclose(fused, composed, rtol=4 * eps,
                               atol=4 * eps * np.abs(composed).max())


def test_log_melspectrogram_takes_the_top_db_floor_per_example_in_its_loop():
    # 150 clips of 32 frames (more than the 64 a step of the CPU loop takes, so the decibels are
    # taken inside it, with a remainder), each floored at 80 dB below its own peak, as
    # power_to_db on the whole batch does.
    rng = np.random.default_rng(0)
    x = (rng.standard_normal((150, 4000)) * np.logspace(-4, 0, 150)[:, None]).astype(np.float32)
    x[3, :2000] = 0.0  # digital silence: floored
    expected = tjf.power_to_db(tjf.melspectrogram(x, 8000, 256, 128, 40), ref=1.0, top_db=80.0)
    _assert_same_decibels(tjf.log_melspectrogram(x, 8000, 256, 128, 40), expected)
    _assert_same_decibels(
        tjf.log_melspectrogram(x, 8000, 256, 128, 40, ref=2.0, amin=1e-6, top_db=None),
        tjf.power_to_db(tjf.melspectrogram(x, 8000, 256, 128, 40), ref=2.0, amin=1e-6,
                        top_db=None))
    with pytest.raises(TypeError, match="ref must be a number"):
        tjf.log_melspectrogram(x, ref=jnp.max)


def test_log_mel_gradient_is_finite_and_matches_finite_differences():
    x = jnp.asarray(signals.music_like(8000, 0.25))
    n_frames = tjf.num_frames(x.size, 256, 128)
    weights = np.random.default_rng(0).standard_normal((n_frames, 40))

    def loss(signal):
        log_mel = tjf.power_to_db(tjf.melspectrogram(signal, 8000, 256, 128, 40), top_db=None)
        return jnp.sum(jnp.asarray(weights, signal.dtype) * log_mel)

    gradient = jax.grad(loss)(x)
    assert gradient.dtype == jnp.float32 and np.all(np.isfinite(gradient))
    # check_grads steps along an unnormalised Gaussian tangent (norm ~ sqrt(samples)) and the
    # log has large third derivatives in quiet bands: a small central-difference step keeps the
    # O(step^2) truncation below its float64 tolerance (rounding stays ~1e-10 at this step).
    with jax.enable_x64(True):
        jax.test_util.check_grads(loss, (x.astype(jnp.float64),), order=1, modes=("rev",),
                                  eps=1e-6)


def test_gradient_through_the_cpu_loop_equals_per_example_gradients():
    # 10 clips of 251 frames: `map_examples` takes them 8 at a time, then the 2 left over.
    x = jnp.asarray(batch_of((10,), 8000, 1.0))
    f = functools.partial(tjf.melspectrogram, sr=8000, n_fft=64, hop_length=32, n_mels=20)

    def loss(signals_):
        return jnp.sum(tjf.power_to_db(f(signals_), top_db=None))

    batched = np.asarray(jax.grad(loss)(x))
    for example in range(10):
        assert_close_to_peak(batched[example], jax.grad(loss)(x[example]), TRANSFORM_TOL)


class _CompileCounter:
    def __init__(self):
        self.count = 0
        jax.monitoring.register_event_duration_secs_listener(self._on_event)

    def _on_event(self, name, duration, **kwargs):
        if name == "/jax/core/compile/backend_compile_duration":
            self.count += 1


COMPILES = _CompileCounter()


def test_second_call_with_same_shapes_does_not_compile():
    x, other = jnp.asarray(signals.noise(16000, 0.5)), jnp.asarray(signals.chirp(16000, 0.5))
    tjf.power_to_db(tjf.melspectrogram(x))
    before = COMPILES.count
    tjf.power_to_db(tjf.melspectrogram(other))
    assert COMPILES.count == before


# --- bad input -----------------------------------------------------------------------------


def test_bad_input_raises_clear_errors_at_trace_time():
    x = jnp.zeros(4000)
    for samples in [np.zeros(4000, np.int32), np.zeros(4000, np.complex64)]:
        with pytest.raises(TypeError, match="real floating-point"):
            jax.jit(tjf.melspectrogram)(samples)
    with pytest.raises(ValueError, match="n_mels=300 exceeds the 257 FFT bins"):
        jax.jit(lambda s: tjf.melspectrogram(s, n_mels=300))(x)
    with pytest.raises(ValueError, match="n_mels=300 exceeds"):
        tjf.mel_filterbank(16000, 512, 300)
    with pytest.raises(ValueError, match=r"fmax=9000.0 must not exceed .* 8000.0"):
        tjf.melspectrogram(x, fmax=9000.0)
    with pytest.raises(ValueError, match=r"fmin=5000.0 must be below fmax=4000.0"):
        tjf.mel_filterbank(16000, 512, fmin=5000.0, fmax=4000.0)
    with pytest.raises(ValueError, match="fmin"):
        tjf.mel_filterbank(16000, 512, fmin=-1.0)
    with pytest.raises(ValueError, match="norm"):
        tjf.mel_filterbank(16000, 512, norm="area")
    with pytest.raises(ValueError, match="sr"):
        tjf.melspectrogram(x, sr=0)
    with pytest.raises(ValueError, match="hop_length"):
        tjf.melspectrogram(x, hop_length=0)
    with pytest.raises(ValueError, match="fewer than n_fft=512"):
        tjf.melspectrogram(jnp.zeros(500), center=False)
    with pytest.raises(TypeError, match="real floating-point"):
        tjf.power_to_db(jnp.ones((3, 4), jnp.complex64))
    with pytest.raises(ValueError, match="top_db"):
        tjf.power_to_db(jnp.ones((3, 4)), top_db=-1.0)
    with pytest.raises(ValueError, match="amin"):
        tjf.amplitude_to_db(jnp.ones((3, 4)), amin=0.0)
