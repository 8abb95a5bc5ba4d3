"""Decoding the audio files of a data set build in worker processes, skipping what fails.

A data set build decodes thousands of files; one that is missing, corrupt or too short must be
reported and skipped, never the end of the build. `DecodePool.decode` decodes them with
`load_audio` (resampled to the schema's sample rate, mono) in a pool of processes, in the order
given, with a progress bar, and yields either the int16 samples or a `Skipped` record that says
why. One pool serves all the splits of a build.

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
import tqdm

from tagjax.data import schema, tfds_compat
from tagjax.data.audio import AudioDecodeError, load_audio

# Files in flight per worker: enough to keep every worker busy, few enough to bound memory.
_IN_FLIGHT_PER_WORKER = 4


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


def decode_file(
    path: str, sample_rate: int = schema.SAMPLE_RATE, min_samples: int = 0
) -> np.ndarray | str:
    """Decodes one file to mono int16 at `sample_rate`.

    Args:
      path: the audio file.
      sample_rate: the rate to resample to, in Hz.
      min_samples: files with fewer samples (after resampling) are rejected.

    Returns:
      `(samples,)` int16, or a string saying why the file cannot be used.
    """
    try:
        samples = load_audio(path, sr=sample_rate, mono=True)
    except AudioDecodeError as error:
        return error.reason
    except Exception as error:  # a decoder bug on one file must not end a build
        return f"unexpected {type(error).__name__} while decoding: {error}"
    if len(samples) < max(min_samples, 1):
        return (
            f"too short: {len(samples) / sample_rate:.3f} s of audio, "
            f"at least {min_samples / sample_rate:.3f} s required"
        )
    return schema.audio_to_int16(samples)


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
        description: str = "decoding",
    ) -> Iterator[tuple[str, np.ndarray | Skipped]]:
        """Decodes `(key, path)` jobs, yielding results in the order of `jobs`.

        Args:
          jobs: `(key, path)` pairs.
          sample_rate: the rate to resample to, in Hz.
          min_samples: files with fewer samples are skipped as too short.
          description: the progress bar's label.

        Yields:
          `(key, samples)` with `(samples,)` int16, or `(key, Skipped)` for a file left out.
        """
        progress = tqdm.tqdm(total=len(jobs), desc=description, unit="file")
        try:
            results = self._ordered_map(
                [os.fspath(path) for _, path in jobs], sample_rate, min_samples
            )
            for (key, path), result in zip(jobs, results, strict=True):
                progress.update(1)
                if isinstance(result, str):
                    result = Skipped(key, os.fspath(path), result)
                yield key, result
        finally:
            progress.close()

    def _ordered_map(
        self, paths: list[str], sample_rate: int, min_samples: int
    ) -> Iterator[np.ndarray | str]:
        """`decode_file` over `paths`, in order, with a bounded number in flight."""
        if self.num_workers == 0 or len(paths) <= 1:
            for path in paths:
                yield decode_file(path, sample_rate, min_samples)
            return
        if self._executor is None:
            self._executor = concurrent.futures.ProcessPoolExecutor(
                self.num_workers, mp_context=multiprocessing.get_context("spawn")
            )
        in_flight = collections.deque()
        for path in paths:
            in_flight.append(self._executor.submit(decode_file, path, sample_rate, min_samples))
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


class PooledDecoding:
    """Mixin for a TFDS builder whose splits decode audio files: one `DecodePool` per build.

    The builder calls `_init_decoding(decode_workers)` in its `__init__` and decodes with
    `self._decode(jobs, ...)`, which uses the build's pool, or a pool of its own outside a build.
    """

    def _init_decoding(self, decode_workers: int | None) -> None:
        self._decode_workers = decode_workers
        self._pool = None
        # TFDS pickles a builder as its constructor arguments.
        self._original_state.update(decode_workers=decode_workers)

    def download_and_prepare(self, **kwargs):
        # One pool of decoding processes for all the splits; splits past 1 GB without TensorFlow.
        with tfds_compat.local_shuffle_files(), DecodePool(self._decode_workers) as pool:
            self._pool = pool
            try:
                super().download_and_prepare(**kwargs)
            finally:
                self._pool = None

    def _decode(self, jobs, **kwargs):
        """`DecodePool.decode` in the build's pool (or a pool of its own outside a build)."""
        if self._pool is not None:
            yield from self._pool.decode(jobs, **kwargs)
            return
        with DecodePool(self._decode_workers) as pool:
            yield from pool.decode(jobs, **kwargs)
