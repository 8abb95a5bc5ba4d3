"""Decoding audio files to float32 samples: soundfile (libsndfile) to decode, soxr to resample.

libsndfile reads wav, flac, ogg/vorbis, opus and mp3 (and the other formats it knows). Every way
a file can fail to decode is reported as one exception type, `AudioDecodeError`, whose message
names the file and the cause, so a data set builder can catch it, skip the file and say why.
"""

import os
import re

import numpy as np
import soundfile
import soxr

# Sizes that streaming writers put in a WAV header before they know the real length; a data
# chunk that declares one of them and ends early is not truncated.
_PLACEHOLDER_CHUNK_SIZES = (0, 0x7FFFFFFF, 0xFFFFFFFF)
# An Ogg page is at most 27 + 255 + 255 * 255 bytes, so the last page header lies this close to
# the end of any file that was cut short inside its last page.
_OGG_TAIL_BYTES = 2 * 65536
_OGG_END_OF_STREAM = 0x04
# libsndfile logs `data : <declared bytes> (should be <bytes present>)` when a RIFF-family file
# ends before its data chunk does; it then quietly reads the frames that are there.
_SHORT_DATA_CHUNK = re.compile(r"^data\s*:\s*(\d+)\s*\(should be (\d+)\)", re.MULTILINE)
# Formats whose declared length is an estimate, and how far short of it a whole file may decode
# (seen on real files: 0.09% and 0.19% for mp3s shipped by Debian packages, 0.06% for an Ogg
# Vorbis soundtrack); a file cut short by a download or a copy loses far more.
_ESTIMATED_LENGTH_FORMATS = ("MP3", "OGG")
_LENGTH_ESTIMATE_SLACK = 0.01


class AudioDecodeError(RuntimeError):
    """An audio file could not be decoded: missing, empty, not audio, truncated or corrupt.

    Attributes:
      path: the file, as given.
      reason: what went wrong, in words.
    """

    def __init__(self, path, reason: str):
        self.path = os.fspath(path)
        self.reason = reason
        super().__init__(f"cannot decode audio file {self.path!r}: {reason}")


def load_audio(
    path: str | os.PathLike,
    sr: int | None = 16000,
    mono: bool = True,
    offset: float = 0.0,
    duration: float | None = None,
) -> np.ndarray:
    """Decodes an audio file to float32 samples in [-1, 1], resampled to `sr`.

    Multichannel audio is downmixed by averaging the channels (as librosa does); resampling uses
    soxr's high-quality setting, librosa's default, so `librosa.load` gives the same samples.
    Silence and clips shorter than one STFT frame are valid audio and are returned as they are.

    Args:
      path: the file: wav, flac, ogg/vorbis, opus, mp3 or any other format libsndfile reads.
      sr: the sample rate to return, in Hz; `None` keeps the file's own rate
        (`soundfile.info(path).samplerate`).
      mono: average the channels into one.
      offset: where to start reading, in seconds from the start of the file.
      duration: how many seconds to read; `None` reads to the end. A region that runs past the
        end of the file is cut at the end.

    Returns:
      `(samples,)` float32 if `mono`, else `(channels, samples)` (also for a one-channel file).

    Raises:
      AudioDecodeError: the file is missing, is not a regular file, is empty, is not audio that
        libsndfile recognises, is truncated or corrupt, contains no frames, holds non-finite
        samples, or `offset` lies at or past its end.
      ValueError: `sr`, `offset` or `duration` is out of range.
    """
    if sr is not None and (int(sr) != sr or sr <= 0):
        raise ValueError(f"sr must be a positive integer number of Hz or None, got {sr!r}")
    if not offset >= 0.0:
        raise ValueError(f"offset must be >= 0 seconds, got {offset!r}")
    if duration is not None and not duration > 0.0:
        raise ValueError(f"duration must be > 0 seconds or None, got {duration!r}")

    native_sr, samples = _decode(path, offset, duration)
    if mono:
        samples = samples.mean(axis=1, dtype=np.float32)
    if sr is not None and sr != native_sr:
        samples = _resample(samples, native_sr, int(sr))
    return np.ascontiguousarray(samples if mono else samples.T)


def _resample(samples: np.ndarray, native_sr: int, sr: int) -> np.ndarray:
    """soxr HQ along the first (time) axis, to librosa's length `ceil(frames * sr / native_sr)`."""
    resampled = soxr.resample(samples, native_sr, sr, quality="HQ").astype(np.float32)
    length = int(np.ceil(len(samples) * sr / native_sr))
    if len(resampled) >= length:
        return resampled[:length]
    padding = [(0, length - len(resampled))] + [(0, 0)] * (resampled.ndim - 1)
    return np.pad(resampled, padding)


def _decode(path, offset: float, duration: float | None) -> tuple[int, np.ndarray]:
    """Reads `[offset, offset + duration)` s of `path` -> (native rate, `(frames, channels)`)."""
    if not os.path.exists(path):
        raise AudioDecodeError(path, "no such file")
    if not os.path.isfile(path):
        raise AudioDecodeError(path, "not a regular file")
    if os.path.getsize(path) == 0:
        raise AudioDecodeError(path, "the file is empty (0 bytes)")
    try:
        with soundfile.SoundFile(path) as file:
            _check_data_chunk_complete(path, file)
            if file.format == "OGG":
                _check_ogg_stream_complete(path)
            if file.frames <= 0:
                raise AudioDecodeError(path, "the file contains no audio frames")
            start = round(offset * file.samplerate)
            if start >= file.frames:
                raise AudioDecodeError(
                    path,
                    f"offset {offset} s is at or past the end of the audio "
                    f"({file.frames / file.samplerate:.3f} s)",
                )
            available = file.frames - start
            wanted = available if duration is None else min(
                max(round(duration * file.samplerate), 1), available
            )
            if start:
                file.seek(start)
            samples = file.read(wanted, dtype="float32", always_2d=True)
            native_sr, native_format = file.samplerate, file.format
    except AudioDecodeError:
        raise
    except (soundfile.SoundFileError, RuntimeError, EOFError) as error:
        # LibsndfileError carries the bare cause; its str() repeats the path.
        cause = getattr(error, "error_string", None) or str(error)
        raise AudioDecodeError(path, f"libsndfile: {cause}") from error
    # Compressed formats (mp3 with a length header, ogg) declare a length the decoder may not
    # reach when the stream is cut short; the read then returns fewer frames than asked for.
    # Their declared length is an estimate, though (an mp3's frame count in its Xing header,
    # less the encoder's delay and padding; an Ogg stream's last granule position), which whole
    # files miss by a fraction of a percent: what falls short by less than `_LENGTH_ESTIMATE_SLACK`
    # of the declared length and ends cleanly (an Ogg stream with its end-of-stream page) is read
    # as it decodes, like `soundfile.read` and `librosa.load` do.
    if len(samples) < wanted and not (
            native_format in _ESTIMATED_LENGTH_FORMATS
            and wanted - len(samples) <= _LENGTH_ESTIMATE_SLACK * (start + wanted)):
        raise AudioDecodeError(
            path,
            f"truncated or corrupt: the header declares {start + wanted} frames but only "
            f"{start + len(samples)} could be decoded",
        )
    if not np.isfinite(samples).all():
        raise AudioDecodeError(path, "the audio contains NaN or infinite samples")
    return native_sr, samples


def _check_data_chunk_complete(path, file: soundfile.SoundFile) -> None:
    """Raises if a RIFF-family file's data chunk ends before the size its header declares."""
    match = _SHORT_DATA_CHUNK.search(file.extra_info)
    if match is None:
        return
    declared, present = int(match.group(1)), int(match.group(2))
    if declared not in _PLACEHOLDER_CHUNK_SIZES and present < declared:
        raise AudioDecodeError(
            path,
            f"truncated: the data chunk declares {declared} bytes but the file holds {present}",
        )


def _check_ogg_stream_complete(path) -> None:
    """Raises unless an Ogg file's last page is whole and ends the stream (its EOS flag).

    libsndfile finds an Ogg file's length from the last page it can read, so a file cut at a page
    boundary reads as a shorter, valid stream; the missing end-of-stream page is what tells.
    """
    with open(path, "rb") as file:
        file.seek(max(os.path.getsize(path) - _OGG_TAIL_BYTES, 0))
        tail = file.read()
    start = tail.rfind(b"OggS")
    if start < 0 or start + 27 > len(tail):
        raise AudioDecodeError(path, "truncated or corrupt: no whole Ogg page at the end")
    n_segments = tail[start + 26]
    body_start = start + 27 + n_segments
    page_end = body_start + sum(tail[start + 27 : body_start])
    if body_start > len(tail) or page_end > len(tail):
        raise AudioDecodeError(path, "truncated: the last Ogg page is cut short")
    if not tail[start + 5] & _OGG_END_OF_STREAM:
        raise AudioDecodeError(path, "truncated: the Ogg stream has no end-of-stream page")
