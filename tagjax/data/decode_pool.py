"""Decoding the audio files of a data set build in worker processes, skipping what fails.

A data set build decodes thousands of files; one that is missing, corrupt or too short must be
reported and skipped, never the end of the build. `DecodePool.decode` decodes them with
`load_audio` (resampled to the schema's sample rate, mono) in a pool of processes, in the order
given, with a progress bar, and yields either the int16 samples or a `Skipped` record that says
why. One pool serves all the splits of a build.

A decoded track that peaks beyond full scale (a float file with samples past +-1, or the
overshoot of an mp3 decoder or of resampling) is never clipped: the whole track is scaled down
by its peak so that it fits int16, keeping its shape and changing only its level, and a
`Rescaled` record says so (`report_rescaled` lists them in the builder's metadata).

The pool uses the "spawn" start method (forking a process that has started JAX or other threads
can deadlock; a script must then start the build under `if __name__ == "__main__":`) and keeps
a bounded number of files in flight, so a slow consumer (the TFDS writer) never makes the
decoded audio of the whole data set pile up in memory.
"""

import collections
import concurrent.futures
import dataclasses
import logging
import multiprocessing
import os
from collections.abc import Iterator, Sequence

import numpy as np
import soundfile
import tqdm

from tagjax.data import schema
from tagjax.data.audio import AudioDecodeError, load_audio

# Files in flight per worker: enough to keep every worker busy, few enough to bound memory.
_IN_FLIGHT_PER_WORKER = 4

_logger = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class Skipped:
    """A file left out of a data set, and why.

    Attributes:
      key: the example's key in the data set (a clip id or a relative path).
      path: the file.
      reason: what went wrong, in words.
    """

    key: str
    path: str
    reason: str

    def to_json(self) -> dict[str, str]:
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class Rescaled:
    """A file whose decoded samples peaked beyond full scale, scaled down by its peak to fit.

    Attributes:
      key: the example's key in the data set.
      path: the file.
      peak: the largest absolute sample as decoded and resampled (> 1; full scale is 1); the
        stored track is the decoded one divided by `peak`.
    """

    key: str
    path: str
    peak: float

    def to_json(self) -> dict[str, str | float]:
        return dataclasses.asdict(self)


def decode_file(
    path: str,
    sample_rate: int = schema.SAMPLE_RATE,
    min_samples: int = 0,
    excerpt_seconds: float | None = None,
) -> tuple[np.ndarray, float] | str:
    """Decodes one file to mono int16 at `sample_rate`, scaled down by its peak if it exceeds 1.

    Args:
      path: the audio file.
      sample_rate: the rate to resample to, in Hz.
      min_samples: files with fewer samples (after resampling) are rejected.
      excerpt_seconds: decode only this many seconds from the middle of the file (seeking, so
        the rest is not decoded); a shorter file is decoded whole. `None`: the whole file.

    Returns:
      `((samples,) int16, peak)`, where `peak` is the largest absolute sample as decoded (the
      int16 samples are the decoded ones divided by `peak` when it exceeds 1, so nothing is
      clipped), or a string saying why the file cannot be used.
    """
    try:
        offset = _middle_offset(path, excerpt_seconds) if excerpt_seconds else 0.0
        samples = load_audio(path, sr=sample_rate, mono=True, offset=offset,
                             duration=excerpt_seconds or None)
    except AudioDecodeError as error:
        return error.reason
    except Exception as error:  # a decoder bug on one file must not end a build
        return f"unexpected {type(error).__name__} while decoding: {error}"
    if len(samples) < max(min_samples, 1):
        return (
            f"too short: {len(samples) / sample_rate:.3f} s of audio, "
            f"at least {min_samples / sample_rate:.3f} s required"
        )
    peak = float(np.max(np.abs(samples)))
    if peak > 1.0:
        samples = samples / np.float32(peak)  # x / peak <= 1 exactly in floating point
    return schema.audio_to_int16(samples), peak


def _middle_offset(path: str, excerpt_seconds: float) -> float:
    """Where an excerpt of `excerpt_seconds` centred in the file starts, in seconds (0 for a file
    no longer than the excerpt, or one whose header cannot be read: `load_audio` says why)."""
    try:
        info = soundfile.info(path)
        frames, rate = info.frames, info.samplerate
    except Exception:  # load_audio reports what is wrong with the file in its own words
        return 0.0
    excerpt_frames = round(excerpt_seconds * rate)
    return max(frames - excerpt_frames, 0) // 2 / rate


class DecodePool:
    """Worker processes that decode audio files, started on first use, shared by a build's splits.

    Use as a context manager (or call `close`); with `num_workers=0` files decode in this
    process and nothing is started.

    Args:
      num_workers: worker processes; `None` uses every core, 0 decodes in this process.
    """

    def __init__(self, num_workers: int | None = None):
        num_workers = (os.cpu_count() or 1) if num_workers is None else int(num_workers)
        if num_workers < 0:
            raise ValueError(f"num_workers must be >= 0, got {num_workers}")
        self.num_workers = num_workers
        self._executor = None

    def __enter__(self) -> "DecodePool":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def close(self) -> None:
        """Stops the workers, if any were started."""
        if self._executor is not None:
            self._executor.shutdown(cancel_futures=True)
            self._executor = None

    def decode(
        self,
        jobs: Sequence[tuple[str, str]],
        *,
        sample_rate: int = schema.SAMPLE_RATE,
        min_samples: int = 0,
        excerpt_seconds: float | None = None,
        description: str = "decoding",
        rescaled: list[Rescaled] | None = None,
        progress: bool = True,
    ) -> Iterator[tuple[str, np.ndarray | Skipped]]:
        """Decodes `(key, path)` jobs, yielding results in the order of `jobs`.

        Args:
          jobs: `(key, path)` pairs.
          sample_rate: the rate to resample to, in Hz.
          min_samples: files with fewer samples are skipped as too short.
          excerpt_seconds: decode only this many seconds from the middle of each file (see
            `decode_file`); `None`: whole files.
          description: the progress bar's label.
          rescaled: a list that receives a `Rescaled` record for each file scaled down by its
            peak; `None` logs them instead.
          progress: show a progress bar.

        Yields:
          `(key, samples)` with `(samples,)` int16, or `(key, Skipped)` for a file left out.
        """
        bar = tqdm.tqdm(total=len(jobs), desc=description, unit="file", disable=not progress)
        try:
            results = self._ordered_map(
                [os.fspath(path) for _, path in jobs], sample_rate, min_samples, excerpt_seconds
            )
            for (key, path), result in zip(jobs, results, strict=True):
                bar.update(1)
                if isinstance(result, str):
                    yield key, Skipped(key, os.fspath(path), result)
                    continue
                samples, peak = result
                if peak > 1.0:
                    record = Rescaled(key, os.fspath(path), peak)
                    if rescaled is None:
                        _log_rescaled(description, record, _logger)
                    else:
                        rescaled.append(record)
                yield key, samples
        finally:
            bar.close()

    def _ordered_map(
        self, paths: list[str], sample_rate: int, min_samples: int, excerpt_seconds: float | None
    ) -> Iterator[tuple[np.ndarray, float] | str]:
        """`decode_file` over `paths`, in order, with a bounded number in flight."""
        args = (sample_rate, min_samples, excerpt_seconds)
        if self.num_workers == 0 or len(paths) <= 1:
            for path in paths:
                yield decode_file(path, *args)
            return
        if self._executor is None:
            self._executor = concurrent.futures.ProcessPoolExecutor(
                self.num_workers, mp_context=multiprocessing.get_context("spawn")
            )
        in_flight = collections.deque()
        for path in paths:
            in_flight.append(self._executor.submit(decode_file, path, *args))
            if len(in_flight) >= self.num_workers * _IN_FLIGHT_PER_WORKER:
                yield in_flight.popleft().result()
        while in_flight:
            yield in_flight.popleft().result()


def report_skipped(
    metadata: dict, split: str, skipped: Sequence[Skipped], logger: logging.Logger
) -> None:
    """Logs the files left out of `split` and lists them under `metadata["skipped"]`.

    The builder's metadata is written next to the data set (`metadata.json`), so the list of
    what was dropped, and why, stays with the prepared data.
    """
    for record in skipped:
        logger.warning("%s: skipped %s (%s): %s", split, record.key, record.path, record.reason)
    if skipped:
        logger.warning(
            "%s: %d file(s) skipped, listed in info.metadata['skipped']", split, len(skipped)
        )
    metadata.setdefault("skipped", []).extend(
        {"split": split, **record.to_json()} for record in skipped
    )


def skipped_files_record(info) -> dict:
    """What `report_skipped` listed for a built data set (TFDS `DatasetInfo` `info`), as the
    commands' reports give it: `skipped_files`, the skipped files' records `{"split", "key",
    "path", "reason"}`, every split's, and `skipped_files_listed_in`, the `metadata.json`
    holding them."""
    return {"skipped_files": list((info.metadata or {}).get("skipped", [])),
            "skipped_files_listed_in": os.path.join(info.data_dir, "metadata.json")}


def report_rescaled(
    metadata: dict, split: str, rescaled: Sequence[Rescaled], logger: logging.Logger
) -> None:
    """Logs the files of `split` scaled down by their peak, listing them in `metadata["rescaled"]`.

    They stay in the data set; the list says which tracks are quieter than their files.
    """
    for record in rescaled:
        _log_rescaled(split, record, logger)
    metadata.setdefault("rescaled", []).extend(
        {"split": split, **record.to_json()} for record in rescaled
    )


def _log_rescaled(where: str, record: Rescaled, logger: logging.Logger) -> None:
    logger.warning(
        "%s: %s (%s) peaks at %.4g, beyond full scale: scaled down by %.2f dB to fit int16 "
        "instead of clipping",
        where,
        record.key,
        record.path,
        record.peak,
        20 * np.log10(record.peak),
    )

