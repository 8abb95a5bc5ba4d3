"""Decoding audio files to float32 samples: soundfile (libsndfile) to decode, soxr to resample.

libsndfile reads wav, flac, ogg/vorbis, opus and mp3 (and the other formats it knows). Every way
a file can fail to decode is reported as one exception type, `AudioDecodeError`, whose message
names the file and the cause, so a data set builder can catch it, skip the file and say why.
`load_audio` decodes a whole file at once; `stream_audio` decodes it block by block, to the same
samples, in memory bounded by the block whatever the file's length.
"""

import contextlib
import errno
import numbers
import os
import re
import stat
from collections.abc import Iterator

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
# The highest sample rate audio is published at (768 kHz PCM); a rate above it is a mistake
# (1e12 Hz would ask the resampler for terabytes).
MAX_SAMPLE_RATE = 768_000
# Frames `stream_audio` decodes at a time: 1.5 s of 44.1 kHz audio, 512 KiB of float32 stereo;
# long enough that the per-block overhead is negligible (see `stream_audio`).
STREAM_BLOCK_FRAMES = 1 << 16
# libsndfile's public code for a format it does not know (SF_ERR_UNRECOGNISED_FORMAT), and what
# its mp3 reader says instead of it of a `.mp3` that holds no MPEG frames.
_UNRECOGNISED_FORMAT_CODE = 1
_MP3_READER_NOT_MPEG = "File does not exist or is not a regular file"


class AudioDecodeError(RuntimeError):
    """An audio file could not be decoded: missing, unreadable, empty, not audio, truncated or
    corrupt.

    Attributes:
      path: the file, as given.
      reason: what went wrong, in words.
    """

    def __init__(self, path, reason: str):
        self.path = os.fspath(path)
        self.reason = reason
        super().__init__(f"cannot decode audio file {self.path!r}: {reason}")


def checked_sample_rate(sr, name: str = "sr") -> int:
    """`sr` as an int, if it is a whole number of Hz in [1, `MAX_SAMPLE_RATE`].

    Raises:
      ValueError: `sr` is a bool, not a number, not whole (16000.5, NaN, inf) or out of range;
        the message names the argument `name`.
    """
    if (isinstance(sr, bool) or not isinstance(sr, numbers.Real)
            or not float(sr).is_integer() or not 1 <= sr <= MAX_SAMPLE_RATE):
        raise ValueError(f"{name} must be a whole number of Hz from 1 to {MAX_SAMPLE_RATE}, "
                         f"got {sr!r}")
    return int(sr)


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
      sr: the sample rate to return, a whole number of Hz up to `MAX_SAMPLE_RATE`; `None` keeps
        the file's own rate (`soundfile.info(path).samplerate`).
      mono: average the channels into one.
      offset: where to start reading, in seconds from the start of the file.
      duration: how many seconds to read; `None` reads to the end. A region that runs past the
        end of the file is cut at the end.

    Returns:
      `(samples,)` float32 if `mono`, else `(channels, samples)` (also for a one-channel file).

    Raises:
      AudioDecodeError: the file is missing (or a broken link or a link loop), unreadable, not a
        regular file, empty, not audio that libsndfile recognises, truncated or corrupt,
        contains no frames, holds non-finite samples, or `offset` lies at or past its end.
      ValueError: `sr`, `offset` or `duration` is out of range (the message names the file).
    """
    try:
        sr = None if sr is None else checked_sample_rate(sr)
        if not (isinstance(offset, numbers.Real) and 0.0 <= offset < np.inf):
            raise ValueError(f"offset must be a finite number of seconds >= 0, got {offset!r}")
        if duration is not None and not (isinstance(duration, numbers.Real)
                                         and 0.0 < duration < np.inf):
            raise ValueError(f"duration must be a finite number of seconds > 0 or None, got "
                             f"{duration!r}")
    except ValueError as error:
        raise ValueError(f"cannot load {os.fspath(path)!r}: {error}") from None

    native_sr, samples = _decode(path, offset, duration)
    if mono:
        samples = samples.mean(axis=1, dtype=np.float32)
    if sr is not None and sr != native_sr:
        samples = _resample(samples, native_sr, sr)
    return np.ascontiguousarray(samples if mono else samples.T)


def stream_audio(path: str | os.PathLike, sr: int | None = 16000, *,
                 block_frames: int = STREAM_BLOCK_FRAMES) -> Iterator[np.ndarray]:
    """Decodes an audio file block by block: `load_audio(path, sr)` (mono) in pieces.

    Each block of `block_frames` frames is decoded, mixed to mono and fed to a
    `soxr.ResampleStream` at `load_audio`'s quality before the next is read, so memory stays
    bounded by the block, whatever the file's length. soxr's output does not depend on how its
    input is split, and the downmix is per frame, so the blocks joined are `load_audio(path, sr)`
    sample for sample (the last block is padded or cut to its length, as `load_audio` is).

    Args:
      path: the file, as for `load_audio`.
      sr: the sample rate to return, as for `load_audio`.
      block_frames: frames decoded at a time, at the file's own rate.

    Yields:
      `(samples,)` float32 blocks of mono audio at `sr`, none empty.

    Raises:
      AudioDecodeError: as `load_audio`; a file that decodes short of its declared length is
        found at its end, after the blocks before were yielded.
      ValueError: `sr` or `block_frames` is out of range (the message names the file).
    """
    try:
        sr = None if sr is None else checked_sample_rate(sr)
        if (isinstance(block_frames, bool) or not isinstance(block_frames, numbers.Integral)
                or block_frames < 1):
            raise ValueError(f"block_frames must be a positive integer, got {block_frames!r}")
    except ValueError as error:
        raise ValueError(f"cannot load {os.fspath(path)!r}: {error}") from None
    return _stream(path, sr, int(block_frames))


def _stream(path, sr: int | None, block_frames: int) -> Iterator[np.ndarray]:
    with _open(path) as file:
        native_sr, declared, native_format = file.samplerate, file.frames, file.format
        resampler = None if sr is None or sr == native_sr else soxr.ResampleStream(
            native_sr, sr, 1, dtype="float32", quality="HQ")
        decoded = emitted = 0
        held = np.zeros(0, np.float32)  # resampled samples beyond the length decoded so far
        while True:
            frames = file.read(block_frames, dtype="float32", always_2d=True)
            last = len(frames) == 0
            if last:
                _check_decoded_length(path, native_format, declared, decoded)
            _check_finite(path, frames)
            decoded += len(frames)
            block = frames.mean(axis=1, dtype=np.float32)
            if resampler is not None:
                block = np.concatenate([held, resampler.resample_chunk(block, last=last)])
                # Never past `load_audio`'s length for what is decoded so far (soxr stays
                # behind it: this only guards the end), and padded to that length at the end.
                allowed = _resampled_length(decoded, native_sr, sr) - emitted
                block, held = block[:allowed], block[allowed:]
                if last:
                    block = np.pad(block, (0, allowed - len(block)))
            if len(block):
                emitted += len(block)
                yield block
            if last:
                return


def _resampled_length(frames: int, native_sr: int, sr: int) -> int:
    """librosa's length of `frames` resampled from `native_sr` to `sr`, with its float ratio."""
    return int(np.ceil(frames * (float(sr) / native_sr)))


def _resample(samples: np.ndarray, native_sr: int, sr: int) -> np.ndarray:
    """soxr HQ along the first (time) axis, to librosa's length `ceil(frames * sr / native_sr)`."""
    resampled = soxr.resample(samples, native_sr, sr, quality="HQ").astype(np.float32)
    length = _resampled_length(len(samples), native_sr, sr)
    if len(resampled) >= length:
        return resampled[:length]
    padding = [(0, length - len(resampled))] + [(0, 0)] * (resampled.ndim - 1)
    return np.pad(resampled, padding)


def _decode(path, offset: float, duration: float | None) -> tuple[int, np.ndarray]:
    """Reads `[offset, offset + duration)` s of `path` -> (native rate, `(frames, channels)`)."""
    with _open(path) as file:
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
        _check_decoded_length(path, file.format, start + wanted, start + len(samples))
        _check_finite(path, samples)
        return file.samplerate, samples


@contextlib.contextmanager
def _open(path) -> Iterator[soundfile.SoundFile]:
    """`path` opened with libsndfile once it is known to be a whole, readable audio file; what
    libsndfile raises, opening or reading it, is an `AudioDecodeError`."""
    _check_readable_file(path)
    try:
        with soundfile.SoundFile(path) as file:
            _check_data_chunk_complete(path, file)
            if file.format == "OGG":
                _check_ogg_stream_complete(path)
            if file.frames <= 0:
                raise AudioDecodeError(path, "the file contains no audio frames")
            yield file
    except AudioDecodeError:
        raise
    except (soundfile.SoundFileError, RuntimeError, EOFError) as error:
        raise AudioDecodeError(path, _libsndfile_reason(error)) from error


def _libsndfile_reason(error: Exception) -> str:
    """libsndfile's error in words; its "does not exist" for a file known to exist and to be
    readable (see `_MP3_READER_NOT_MPEG`) means that the format is not recognised."""
    # LibsndfileError carries the bare cause; its str() repeats the path.
    cause = getattr(error, "error_string", None) or str(error)
    if (getattr(error, "code", None) == _UNRECOGNISED_FORMAT_CODE
            or cause.startswith(_MP3_READER_NOT_MPEG)):
        return "not a decodable audio file: its format is not recognised by libsndfile"
    return f"libsndfile: {cause}"


def _check_readable_file(path) -> None:
    """Raises unless `path` is a non-empty regular file that this process may read, saying why:
    libsndfile's own messages call a link loop "no such file" and a denied read "System error"."""
    try:
        status = os.stat(path)
        if not stat.S_ISREG(status.st_mode):
            raise AudioDecodeError(path, "not a regular file: a directory"
                                   if stat.S_ISDIR(status.st_mode) else "not a regular file")
        if status.st_size == 0:
            raise AudioDecodeError(path, "the file is empty (0 bytes)")
        with open(path, "rb"):
            pass
    except OSError as error:
        raise AudioDecodeError(path, _os_reason(path, error)) from error


def _os_reason(path, error: OSError) -> str:
    if error.errno == errno.ELOOP:
        return "a symbolic link loop: the link leads back to itself"
    if error.errno == errno.ENOENT and os.path.islink(path):
        return f"a broken symbolic link: its target {os.readlink(path)!r} does not exist"
    if error.errno in (errno.ENOENT, errno.ENOTDIR):
        return "no such file"
    if error.errno in (errno.EACCES, errno.EPERM):
        return "permission denied: this user may not read the file"
    return f"cannot open the file: {error.strerror or error}"


def _check_decoded_length(path, native_format: str, declared: int, decoded: int) -> None:
    """Raises if fewer frames decoded than the header declares, beyond an estimate's slack.

    Compressed formats (mp3 with a length header, ogg) declare a length the decoder may not
    reach when the stream is cut short; the read then returns fewer frames than asked for.
    Their declared length is an estimate, though (an mp3's frame count in its Xing header, less
    the encoder's delay and padding; an Ogg stream's last granule position), which whole files
    miss by a fraction of a percent: what falls short by less than `_LENGTH_ESTIMATE_SLACK` of
    the declared length and ends cleanly (an Ogg stream with its end-of-stream page) is read as
    it decodes, like `soundfile.read` and `librosa.load` do.
    """
    if decoded < declared and not (
            native_format in _ESTIMATED_LENGTH_FORMATS
            and declared - decoded <= _LENGTH_ESTIMATE_SLACK * declared):
        raise AudioDecodeError(
            path,
            f"truncated or corrupt: the header declares {declared} frames but only {decoded} "
            f"could be decoded",
        )


def _check_finite(path, samples: np.ndarray) -> None:
    if not np.isfinite(samples).all():
        raise AudioDecodeError(path, "the audio contains NaN or infinite samples")


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
