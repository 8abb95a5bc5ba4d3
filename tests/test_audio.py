"""`tj.data.load_audio` against files written with soundfile, closed-form sines and librosa.load."""

import errno
import os

import librosa
import numpy as np
import pytest
import signals
import soundfile

from tagjax.data import AudioDecodeError, load_audio, stream_audio
from tagjax.data import audio as audio_module

# (extension, soundfile format, subtype, native rate). Opus only codes 8/12/16/24/48 kHz.
FORMATS = [
    ("wav", "WAV", "PCM_16", 44100),
    ("wav", "WAV", "FLOAT", 44100),
    ("flac", "FLAC", "PCM_16", 44100),
    ("ogg", "OGG", "VORBIS", 44100),
    ("opus", "OGG", "OPUS", 48000),
    ("mp3", "MP3", "MPEG_LAYER_III", 44100),
]
LOSSLESS = {"PCM_16", "FLOAT"}


def _sine(sr: int, seconds: float, freq: float, amplitude: float) -> np.ndarray:
    t = np.arange(round(sr * seconds)) / sr
    return (amplitude * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def _write(tmp_path, name: str, samples: np.ndarray, sr: int, fmt="WAV", subtype="PCM_16"):
    path = os.fspath(tmp_path / name)
    soundfile.write(path, samples, sr, format=fmt, subtype=subtype)
    return path


@pytest.mark.parametrize("ext,fmt,subtype,native_sr", FORMATS)
def test_formats_decode_resample_and_match_librosa(tmp_path, ext, fmt, subtype, native_sr):
    freq, amplitude = 1000.0, 0.5
    path = _write(tmp_path, f"sine.{ext}", _sine(native_sr, 1.0, freq, amplitude), native_sr,
                  fmt, subtype)

    y = load_audio(path, sr=16000)

    assert y.dtype == np.float32 and y.ndim == 1
    # Codecs add or drop up to a few frames of priming; the length is one second of 16 kHz.
    assert abs(len(y) - 16000) <= 0.02 * 16000
    # Closed form: all the energy sits at 1 kHz, and the RMS of a sine is amplitude / sqrt(2).
    middle = y[2000:-2000]
    spectrum = np.abs(np.fft.rfft(middle * np.hanning(len(middle))))
    peak_hz = np.argmax(spectrum) * 16000 / len(middle)
    assert abs(peak_hz - freq) <= 16000 / len(middle)
    rms = np.sqrt(np.mean(middle.astype(np.float64) ** 2))
    # 16-bit quantisation costs ~1e-5; lossy codecs at their default quality keep the level
    # within a few percent.
    level_tolerance = 1e-3 if subtype in LOSSLESS else 0.05
    np.testing.assert_allclose(rms, amplitude / np.sqrt(2), rtol=level_tolerance)
    # librosa.load decodes with the same libsndfile and resamples with soxr at the same quality.
    reference, reference_sr = librosa.load(path, sr=16000, mono=True)
    assert reference_sr == 16000
    np.testing.assert_allclose(y, reference, rtol=0, atol=1e-6)


def test_resampled_file_is_the_closed_form_sine(tmp_path):
    # soxr's HQ mode keeps ~20 bits in the passband, so away from the edges a float32 sine
    # resampled 44.1 kHz -> 16 kHz equals the same sine sampled at 16 kHz to ~1e-5.
    freq, amplitude = 440.0, 0.25
    path = _write(tmp_path, "sine.wav", _sine(44100, 2.0, freq, amplitude), 44100, "WAV", "FLOAT")
    y = load_audio(path, sr=16000)
    expected = _sine(16000, 2.0, freq, amplitude)
    np.testing.assert_allclose(y[800:-800], expected[800:-800], rtol=0, atol=5e-5)


@pytest.mark.parametrize("target_sr", [8000, 16000, 22050, 44100, None])
def test_sample_rates_match_librosa(tmp_path, target_sr):
    music = signals.music_like(44100, 1.5)
    path = _write(tmp_path, "music.wav", music, 44100, "WAV", "FLOAT")
    y = load_audio(path, sr=target_sr)
    reference, _ = librosa.load(path, sr=target_sr)
    assert y.shape == reference.shape
    np.testing.assert_allclose(y, reference, rtol=0, atol=1e-6)
    if target_sr is None:
        np.testing.assert_array_equal(y, music)


def test_downmix_is_the_channel_mean_and_multichannel_is_channels_first(tmp_path):
    left, right = signals.chirp(16000, 1.0), signals.noise(16000, 1.0)
    path = _write(tmp_path, "stereo.wav", np.stack([left, right], axis=1), 16000, "WAV", "FLOAT")

    mono = load_audio(path, sr=16000)
    np.testing.assert_allclose(mono, (left + right) / 2, rtol=0, atol=1e-7)
    np.testing.assert_allclose(mono, librosa.load(path, sr=16000, mono=True)[0], atol=1e-7)

    both = load_audio(path, sr=16000, mono=False)
    assert both.shape == (2, 16000)
    np.testing.assert_array_equal(both, np.stack([left, right]))
    np.testing.assert_allclose(both, librosa.load(path, sr=16000, mono=False)[0], atol=1e-7)

    one_channel = _write(tmp_path, "mono.wav", left, 16000, "WAV", "FLOAT")
    assert load_audio(one_channel, mono=False).shape == (1, 16000)


@pytest.mark.parametrize("offset,duration", [(0.0, None), (0.25, None), (0.3, 0.5), (1.2, 5.0)])
def test_offset_and_duration_match_librosa(tmp_path, offset, duration):
    path = _write(tmp_path, "music.wav", signals.music_like(22050, 1.5), 22050, "WAV", "FLOAT")
    y = load_audio(path, sr=16000, offset=offset, duration=duration)
    reference, _ = librosa.load(path, sr=16000, offset=offset, duration=duration)
    assert y.shape == reference.shape
    np.testing.assert_allclose(y, reference, rtol=0, atol=1e-6)


def test_int16_pcm_scales_to_unit_range(tmp_path):
    pcm = np.array([0, 1, -1, 16384, -16384, 32767, -32768], np.int16)
    path = _write(tmp_path, "pcm.wav", pcm, 16000, "WAV", "PCM_16")
    np.testing.assert_array_equal(load_audio(path, sr=None), pcm / np.float32(32768))


def test_silence_and_very_short_clips_are_valid(tmp_path):
    silence = load_audio(_write(tmp_path, "silence.flac", np.zeros(16000), 16000, "FLAC"))
    np.testing.assert_array_equal(silence, np.zeros(16000, np.float32))
    short = signals.noise(16000, 1.0)[:3]
    np.testing.assert_allclose(
        load_audio(_write(tmp_path, "short.wav", short, 16000, "WAV", "FLOAT")), short
    )
    one_frame = load_audio(_write(tmp_path, "one.wav", short[:1], 44100, "WAV", "FLOAT"))
    assert one_frame.dtype == np.float32 and one_frame.ndim == 1


def _complete_file(tmp_path, ext, fmt, subtype):
    sr = 48000 if subtype == "OPUS" else 44100
    return _write(tmp_path, f"good.{ext}", signals.music_like(sr, 2.0), sr, fmt, subtype)


def _expect_decode_error(path, *words):
    with pytest.raises(AudioDecodeError) as raised:
        load_audio(path)
    message = str(raised.value)
    assert os.fspath(path) in message
    assert raised.value.path == os.fspath(path)
    for word in words:
        assert word in message.lower()
    return message


def test_missing_file_and_directory(tmp_path):
    _expect_decode_error(os.fspath(tmp_path / "nowhere.wav"), "no such file")
    _expect_decode_error(os.fspath(tmp_path), "not a regular file")


def test_zero_length_file(tmp_path):
    path = tmp_path / "empty.mp3"
    path.write_bytes(b"")
    _expect_decode_error(os.fspath(path), "empty")


def test_header_only_wav_has_no_frames(tmp_path):
    path = _write(tmp_path, "noframes.wav", np.zeros(0, np.float32), 16000)
    _expect_decode_error(path, "no audio frames")


@pytest.mark.parametrize("ext", ["wav", "mp3", "ogg", "flac"])
@pytest.mark.parametrize("content", [b"this is not audio\n" * 100, bytes(range(256)) * 64])
def test_file_that_is_not_audio(tmp_path, content, ext):
    # libsndfile's mp3 reader calls such a `.mp3` "File does not exist or is not a regular file".
    path = tmp_path / f"notes.{ext}"
    path.write_bytes(content)
    message = _expect_decode_error(os.fspath(path), "not a decodable audio file", "not recognised")
    assert "does not exist" not in message


def test_unreadable_file(tmp_path, monkeypatch):
    path = _write(tmp_path, "private.wav", signals.noise(16000, 0.1), 16000)
    os.chmod(path, 0)
    if os.geteuid() == 0:
        # Root reads any file: make opening it fail as it does for any other user.
        def denied(file, *args, **kwargs):
            raise PermissionError(errno.EACCES, "Permission denied", file)

        monkeypatch.setattr(audio_module, "open", denied, raising=False)
    message = _expect_decode_error(path, "permission denied")
    assert "system error" not in message.lower()


def test_symbolic_link_loop_and_broken_link(tmp_path):
    os.symlink(tmp_path / "b.wav", tmp_path / "a.wav")
    os.symlink(tmp_path / "a.wav", tmp_path / "b.wav")
    _expect_decode_error(os.fspath(tmp_path / "a.wav"), "symbolic link loop")
    os.symlink(tmp_path / "gone.wav", tmp_path / "broken.wav")
    _expect_decode_error(os.fspath(tmp_path / "broken.wav"), "broken symbolic link", "gone.wav")


@pytest.mark.parametrize(
    "ext,fmt,subtype,keep",
    [
        ("wav", "WAV", "PCM_16", 0.5),  # cut inside the data chunk
        ("wav", "WAV", "PCM_16", 0.0002),  # cut inside the header
        ("flac", "FLAC", "PCM_16", 0.5),
        ("ogg", "OGG", "VORBIS", 0.5),
        ("ogg", "OGG", "VORBIS", 0.99),  # cut inside the last page
        ("opus", "OGG", "OPUS", 0.7),
        ("mp3", "MP3", "MPEG_LAYER_III", 0.5),
    ],
)
def test_truncated_file(tmp_path, ext, fmt, subtype, keep):
    with open(_complete_file(tmp_path, ext, fmt, subtype), "rb") as file:
        data = file.read()
    path = tmp_path / f"truncated.{ext}"
    path.write_bytes(data[: max(int(len(data) * keep), 16)])
    _expect_decode_error(os.fspath(path))


@pytest.mark.parametrize("extra_frames,whole", [(1, True), (40, False)])
def test_mp3_whose_header_overstates_its_length(tmp_path, extra_frames, whole):
    # An mp3's Xing header counts its MPEG frames, and libsndfile takes the length from it;
    # real files decode a fraction of a percent short of it (0.19% for one that librosa and
    # soundfile read without complaint). One frame too many in a 5 s file (0.5% of it) is such
    # a whole file, read as it decodes; 40 frames (20%) is a file cut short.
    sr = 44100
    path = _write(tmp_path, "overstated.mp3", signals.music_like(sr, 5.0), sr, "MP3",
                  "MPEG_LAYER_III")
    data = bytearray((tmp_path / "overstated.mp3").read_bytes())
    tag = max(data.find(b"Xing"), data.find(b"Info"))
    assert tag > 0 and int.from_bytes(data[tag + 4:tag + 8], "big") & 1  # a frame count
    frames = int.from_bytes(data[tag + 8:tag + 12], "big")
    data[tag + 8:tag + 12] = (frames + extra_frames).to_bytes(4, "big")
    (tmp_path / "overstated.mp3").write_bytes(bytes(data))
    if not whole:
        _expect_decode_error(path, "truncated")
        return
    decoded, _ = soundfile.read(path, dtype="float32")
    assert soundfile.info(path).frames > len(decoded)
    np.testing.assert_array_equal(load_audio(path, sr=None), decoded)
    np.testing.assert_array_equal(load_audio(path, sr=None), librosa.load(path, sr=None)[0])


def _ogg_crc(data: bytes) -> int:
    """The Ogg page checksum: CRC-32, polynomial 0x04C11DB7, unreflected, initial value 0."""
    crc = 0
    for byte in data:
        crc ^= byte << 24
        for _ in range(8):
            crc = (crc << 1) ^ 0x04C11DB7 if crc & 0x80000000 else crc << 1
        crc &= 0xFFFFFFFF
    return crc


@pytest.mark.parametrize("extra_frames,whole", [(1000, True), (22050, False)])
def test_ogg_whose_last_granule_overstates_its_length(tmp_path, extra_frames, whole):
    # libsndfile takes an Ogg Vorbis file's length from its last page's granule position; a real
    # soundtrack declared 0.06% more frames than it decodes. 1000 frames more in a 5 s file
    # (0.45%) is such a whole file, read as soundfile and librosa read it; 22050 (10%) is not.
    sr = 44100
    path = _write(tmp_path, "overstated.ogg", signals.music_like(sr, 5.0), sr, "OGG", "VORBIS")
    data = bytearray((tmp_path / "overstated.ogg").read_bytes())
    last = data.rfind(b"OggS")
    assert _ogg_crc(data[last:last + 22] + bytes(4) + data[last + 26:]) == int.from_bytes(
        data[last + 22:last + 26], "little")
    granule = int.from_bytes(data[last + 6:last + 14], "little")
    assert granule == soundfile.info(path).frames
    data[last + 6:last + 14] = (granule + extra_frames).to_bytes(8, "little")
    data[last + 22:last + 26] = _ogg_crc(data[last:last + 22] + bytes(4)
                                         + data[last + 26:]).to_bytes(4, "little")
    (tmp_path / "overstated.ogg").write_bytes(bytes(data))
    assert soundfile.info(path).frames == granule + extra_frames
    if not whole:
        _expect_decode_error(path, "truncated")
        with pytest.raises(AudioDecodeError, match="truncated"):
            list(stream_audio(path, sr=16000))
        return
    decoded, _ = soundfile.read(path, dtype="float32")
    assert len(decoded) < granule + extra_frames
    np.testing.assert_array_equal(load_audio(path, sr=None), decoded)
    np.testing.assert_array_equal(load_audio(path, sr=None), librosa.load(path, sr=None)[0])
    np.testing.assert_allclose(load_audio(path, sr=16000), librosa.load(path, sr=16000)[0],
                               rtol=0, atol=1e-6)
    np.testing.assert_array_equal(np.concatenate(list(stream_audio(path, sr=16000))),
                                  load_audio(path, sr=16000))


def test_streamed_wav_with_placeholder_length_is_read_to_its_end(tmp_path):
    # Streaming writers that cannot seek back leave 0xFFFFFFFF as the RIFF and data sizes.
    samples = signals.noise(16000, 0.25)
    with open(_write(tmp_path, "whole.wav", samples, 16000, "WAV", "FLOAT"), "rb") as file:
        data = bytearray(file.read())
    data_chunk = data.find(b"data")
    data[4:8] = data[data_chunk + 4 : data_chunk + 8] = b"\xff\xff\xff\xff"
    path = tmp_path / "streamed.wav"
    path.write_bytes(bytes(data))
    np.testing.assert_array_equal(load_audio(path, sr=16000), samples)


def test_corrupt_flac_stream(tmp_path):
    with open(_complete_file(tmp_path, "flac", "FLAC", "PCM_16"), "rb") as file:
        data = bytearray(file.read())
    rng = np.random.default_rng(0)
    start = len(data) // 3
    data[start : start + 2048] = rng.integers(0, 256, 2048, dtype=np.uint8).tobytes()
    path = tmp_path / "corrupt.flac"
    path.write_bytes(bytes(data))
    _expect_decode_error(os.fspath(path))


def test_non_finite_samples(tmp_path):
    samples = signals.noise(16000, 0.1)
    samples[100] = np.nan
    path = _write(tmp_path, "nan.wav", samples, 16000, "WAV", "FLOAT")
    _expect_decode_error(path, "nan")


def test_offset_past_the_end(tmp_path):
    path = _write(tmp_path, "one_second.wav", signals.noise(16000, 1.0), 16000)
    with pytest.raises(AudioDecodeError, match="past the end"):
        load_audio(path, offset=1.0)


@pytest.mark.parametrize(
    "kwargs",
    [{"sr": 0}, {"sr": -16000}, {"sr": 16000.5}, {"sr": True}, {"sr": False}, {"sr": "16000"},
     {"sr": float("nan")}, {"sr": float("inf")}, {"sr": 10**12}, {"sr": 1e12},
     {"offset": -1.0}, {"offset": float("inf")}, {"offset": float("nan")},
     {"duration": 0.0}, {"duration": float("inf")}, {"duration": float("nan")}],
)
def test_bad_arguments(tmp_path, kwargs):
    path = _write(tmp_path, "noise.wav", signals.noise(16000, 0.5), 16000)
    name = next(iter(kwargs))
    with pytest.raises(ValueError, match=name) as raised:
        load_audio(path, **kwargs)
    assert path in str(raised.value)
    if name == "sr":
        with pytest.raises(ValueError, match=name):
            stream_audio(path, **kwargs)


def test_whole_number_rates_of_any_type_are_accepted(tmp_path):
    path = _write(tmp_path, "noise.wav", signals.noise(16000, 0.5), 16000, "WAV", "FLOAT")
    expected = load_audio(path, sr=8000)
    np.testing.assert_array_equal(load_audio(path, sr=8000.0), expected)
    np.testing.assert_array_equal(load_audio(path, sr=np.int64(8000)), expected)
    assert len(load_audio(path, sr=audio_module.MAX_SAMPLE_RATE)) == 0.5 * 768000


@pytest.mark.parametrize(
    "ext,fmt,subtype,native_sr",
    [("wav", "WAV", "FLOAT", 22050), ("flac", "FLAC", "PCM_16", 44100),
     ("ogg", "OGG", "VORBIS", 44100), ("mp3", "MP3", "MPEG_LAYER_III", 44100)],
)
@pytest.mark.parametrize("sr", [16000, None])
def test_stream_audio_joins_to_load_audio(tmp_path, ext, fmt, subtype, native_sr, sr):
    # soxr's output does not depend on how its input is split and the downmix is per frame, so
    # the blocks, however small, join to load_audio's samples exactly.
    stereo = np.stack([signals.music_like(native_sr, 2.3), signals.noise(native_sr, 2.3)], axis=1)
    path = _write(tmp_path, f"stereo.{ext}", stereo, native_sr, fmt, subtype)
    whole = load_audio(path, sr=sr)
    for block_frames in (997, 1 << 16):
        blocks = list(stream_audio(path, sr=sr, block_frames=block_frames))
        assert all(b.dtype == np.float32 and b.ndim == 1 and len(b) for b in blocks)
        np.testing.assert_array_equal(np.concatenate(blocks), whole)


@pytest.mark.parametrize(
    "ext,fmt,subtype", [("flac", "FLAC", "PCM_16"), ("ogg", "OGG", "VORBIS"),
                        ("mp3", "MP3", "MPEG_LAYER_III")])
def test_stream_audio_refuses_a_file_cut_in_half(tmp_path, ext, fmt, subtype):
    _complete_file(tmp_path, ext, fmt, subtype)
    data = (tmp_path / f"good.{ext}").read_bytes()
    path = tmp_path / f"half.{ext}"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(AudioDecodeError) as raised:
        list(stream_audio(path, sr=16000, block_frames=4096))
    assert raised.value.path == os.fspath(path)


def test_stream_audio_names_missing_and_nan_files(tmp_path):
    with pytest.raises(AudioDecodeError, match="no such file"):
        list(stream_audio(tmp_path / "missing.wav"))
    samples = signals.noise(16000, 1.0)
    samples[12000] = np.inf
    path = _write(tmp_path, "inf.wav", samples, 16000, "WAV", "FLOAT")
    with pytest.raises(AudioDecodeError, match="NaN or infinite"):
        list(stream_audio(path, block_frames=4000))


def test_pathlike_and_str_paths_agree(tmp_path):
    path = _write(tmp_path, "noise.flac", signals.noise(16000, 0.5), 16000, "FLAC")
    np.testing.assert_array_equal(load_audio(path), load_audio(tmp_path / "noise.flac"))
