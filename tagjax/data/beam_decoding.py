"""Decoding a data set's audio files in an Apache Beam pipeline instead of a `DecodePool`.

TFDS builds a split with Beam when the builder's `_generate_examples` returns a Beam
`PTransform` (its `beam_datasets` guide); the same builder then runs on a cluster runner
(Dataflow, Flink, Spark). `DecodeToExamples` is that transform: it spreads the
`(key, path, labels)` jobs over the workers (a reshuffle, so each worker decodes its share),
decodes each with `decode_pool.decode_file` (the same function `DecodePool` runs, so both paths
store the same samples) and yields TFDS's `(key, example)` pairs, which TFDS's Beam writer
shuffles and writes into shards on the workers.

On the DirectRunner that writer is the slow part (2.3x slower than decoding for TFDS's local
writer, `benchmarks/prepare_throughput.py`): every example crosses the runner's controller (over
gRPC, with `multi_processing`) on its way into and out of each of its three stages, and the
controller holds the whole split in memory. There `DirectRunnerDecoding` takes `DecodePool`'s
place instead: one pipeline over all the splits' files, whose worker processes decode each with
the same `decode_file` and leave its samples in a file, which this process reads, in order, as
they appear, and TFDS's local writer writes the split, as it does after `DecodePool`.
`uses_tfds_beam_writer` says which of the two a build with given options takes.

Under TFDS's Beam writer, files that cannot be used and tracks scaled down by their peak are
not lost with the worker that found them: each worker writes their records as JSON lines under
`report_prefix` (next to the data set being written, a path every worker can write), which
`read_reports` collects once the pipeline has finished, so the builder lists them in its
metadata as the local path does.

Importing this module imports `apache_beam` (the `beam` extra: `pip install "tagjax[beam]"`).
"""

import io
import json
import logging
import os
import shlex
import shutil
import threading
import time
import uuid
from collections.abc import Iterator, Sequence

import apache_beam as beam
import numpy as np
from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import (
    DebugOptions,
    DirectOptions,
    PipelineOptions,
    StandardOptions,
)

from tagjax.data import decode_pool, schema

SKIPPED = "skipped"
RESCALED = "rescaled"

# `--experiments=tfds_beam_writer`: TFDS's Beam writer on the DirectRunner too, as on a cluster.
TFDS_BEAM_WRITER = "tfds_beam_writer"
_DIRECT_RUNNERS = (None, "DirectRunner", "direct")

_logger = logging.getLogger(__name__)


class _Decode(beam.DoFn):
    """`(key, path, labels)` -> `(key, example)`; files skipped or rescaled are written to
    `<report_prefix>-<unique>.jsonl` at the end of each bundle.

    Writing them from the DoFn keeps the pipeline as small as TFDS's own (Beam spends most of a
    small build turning transforms into its graph). A retried bundle may write its records
    twice; `read_reports` keeps one of each.
    """

    def __init__(self, report_prefix: str, min_samples: int, excerpt_seconds: float | None):
        self._report_prefix = report_prefix
        self._min_samples = min_samples
        self._excerpt_seconds = excerpt_seconds
        self._records = []

    def start_bundle(self):
        self._records = []

    def process(self, job):
        key, path, labels = job
        result = decode_pool.decode_file(
            path, schema.SAMPLE_RATE, self._min_samples, self._excerpt_seconds
        )
        if isinstance(result, str):
            record = decode_pool.Skipped(key, path, result)
            self._records.append({"kind": SKIPPED, **record.to_json()})
            return
        samples, peak = result
        if peak > 1.0:
            record = decode_pool.Rescaled(key, path, peak)
            self._records.append({"kind": RESCALED, **record.to_json()})
        yield key, {"audio": samples, "labels": labels, "id": key}

    def finish_bundle(self):
        if not self._records:
            return
        path = f"{self._report_prefix}-{uuid.uuid4().hex}.jsonl"
        with FileSystems.create(path) as file:
            file.write("".join(json.dumps(record) + "\n" for record in self._records).encode())
        self._records = []


class DecodeToExamples(beam.PTransform):
    """Decodes `(key, path, labels)` jobs into TFDS `(key, example)` pairs on the workers.

    Args:
      jobs: `(key, path, labels)` with `labels` a `(num_tags,)` uint8 multi-hot.
      report_prefix: where the records of the files skipped or rescaled are written (a path
        every worker can write; see `read_reports`).
      min_samples: files with fewer samples (after resampling) are skipped as too short.
      excerpt_seconds: decode only this many seconds from the middle of each file.
    """

    def __init__(self, jobs, report_prefix: str, *, min_samples: int = 0,
                 excerpt_seconds: float | None = None):
        super().__init__()
        self._jobs = [(key, str(path), labels) for key, path, labels in jobs]
        self._decode = _Decode(report_prefix, min_samples, excerpt_seconds)

    def expand(self, pipeline):
        return (
            pipeline
            | "Jobs" >> beam.Create(self._jobs)
            # Create's elements would stay in one bundle on one worker; spread them.
            | "Spread" >> beam.Reshuffle()
            | "Decode" >> beam.ParDo(self._decode)
        )


def read_reports(report_prefix: str) -> tuple[list[decode_pool.Skipped],
                                                list[decode_pool.Rescaled]]:
    """The records `DecodeToExamples` wrote under `report_prefix`, one per file, sorted by key;
    their files are removed (they are not part of the data set)."""
    match = FileSystems.match([f"{report_prefix}-*.jsonl"])[0]
    paths = [metadata.path for metadata in match.metadata_list]
    records = {}  # (kind, key) -> record: a retried bundle's records are written twice
    for path in paths:
        with FileSystems.open(path) as file:
            for line in file.read().decode().splitlines():
                record = json.loads(line)
                records[record.pop("kind"), record["key"]] = record
    if paths:
        FileSystems.delete(paths)
    skipped = [decode_pool.Skipped(**records[k]) for k in sorted(records) if k[0] == SKIPPED]
    rescaled = [decode_pool.Rescaled(**records[k]) for k in sorted(records) if k[0] == RESCALED]
    return skipped, rescaled


def uses_tfds_beam_writer(options: PipelineOptions) -> bool:
    """Whether a build with `options` writes its splits with TFDS's Beam writer on the workers
    (`DecodeToExamples`): on every runner but the DirectRunner, and on the DirectRunner given
    `--experiments=tfds_beam_writer` (a rehearsal of a cluster's pipeline). Otherwise the
    DirectRunner decodes (`DirectRunnerDecoding`) and TFDS's local writer writes."""
    runner = options.view_as(StandardOptions).runner
    experiments = options.view_as(DebugOptions).experiments or []
    return runner not in _DIRECT_RUNNERS or TFDS_BEAM_WRITER in experiments


class _DecodeShare(beam.DoFn):
    """`(share, jobs)` -> for each job `(index, path, sample_rate, min_samples, excerpt_seconds)`,
    in the order of `index`: `<workdir>/<index>.npy`, the `(samples,)` int16 of `decode_file`,
    and `<workdir>/<index>.json` for a file it skipped (`{"reason": ...}`) or scaled down
    (`{"peak": ...}`, written before the samples).

    Each file is written under a temporary name and renamed, so a retried bundle rewrites whole
    files and the reader never sees half of one.
    """

    def __init__(self, workdir: str):
        self._workdir = workdir

    def process(self, share_jobs):
        _, jobs = share_jobs
        for index, path, sample_rate, min_samples, excerpt_seconds in sorted(jobs):
            result = decode_pool.decode_file(path, sample_rate, min_samples, excerpt_seconds)
            stem = os.path.join(self._workdir, f"{index:09d}")
            if isinstance(result, str):
                _write_whole(stem + ".json", json.dumps({"reason": result}).encode())
                continue
            samples, peak = result
            if peak > 1.0:
                _write_whole(stem + ".json", json.dumps({"peak": peak}).encode())
            buffer = io.BytesIO()
            np.save(buffer, samples)
            _write_whole(stem + ".npy", buffer.getvalue())


def _write_whole(path: str, data: bytes) -> None:
    partial = f"{path}.{uuid.uuid4().hex}.partial"
    with open(partial, "wb") as file:
        file.write(data)
    os.replace(partial, path)


def _direct_workers(options: PipelineOptions) -> int:
    """How many workers the DirectRunner runs with `options`."""
    direct = options.view_as(DirectOptions)
    if direct.direct_running_mode not in ("multi_processing", "multi_threading"):
        return 1
    if direct.direct_num_workers == 0:
        return os.cpu_count() or 1
    return max(direct.direct_num_workers or 1, 1)


class DirectRunnerDecoding:
    """Decodes a build's audio files in Beam's DirectRunner, for TFDS's local writer: the
    Beam counterpart of `DecodePool` on one machine (see the module's docstring for why).

    `decode` takes `DecodePool.decode`'s arguments and yields the same results in the same
    order, but takes its jobs at once: the first result read starts one pipeline over the jobs
    of every `decode` call made so far (a build's splits, so its workers start once). Each
    worker decodes an equal share of them, every n-th job in order, and leaves each file's
    samples under `workdir`, where they are read, in order, as they appear, and removed: TFDS
    writes while the workers decode, as with the pool. Use as a context manager: on exit the
    pipeline is waited for (unless an error ends the build) and `workdir` removed.

    Args:
      options: the pipeline's options (a DirectRunner's, e.g. from `pipeline_options`).
      workdir: a folder to create for the decoded samples (on a disk with room for them).
    """

    _POLL_SECONDS = 0.02

    def __init__(self, options: PipelineOptions, workdir: str | os.PathLike):
        self._options = options
        self._workdir = os.fspath(workdir)
        self._pending = []  # jobs handed over whose pipeline has not started
        self._started = 0  # jobs [0, _started) are in a pipeline that has started
        self._pipeline = None  # the thread running the latest pipeline
        self._error = None  # what ended it, if it failed

    def __enter__(self) -> "DirectRunnerDecoding":
        return self

    def __exit__(self, exc_type, *exc_info) -> None:
        # After a failure (or Ctrl-C) the pipeline is not waited for: it fails without its
        # folder, and its worker processes end with this one.
        if self._pipeline is not None and exc_type is None:
            self._pipeline.join()
        shutil.rmtree(self._workdir, ignore_errors=True)

    def decode(
        self,
        jobs: Sequence[tuple[str, str | os.PathLike]],
        *,
        sample_rate: int = schema.SAMPLE_RATE,
        min_samples: int = 0,
        excerpt_seconds: float | None = None,
        description: str = "decoding",
        rescaled: list[decode_pool.Rescaled] | None = None,
    ) -> Iterator[tuple[str, np.ndarray | decode_pool.Skipped]]:
        """`DecodePool.decode` (see there) in the DirectRunner's workers; the jobs are taken now,
        decoded once the first result is read."""
        first = self._started + len(self._pending)
        self._pending.extend(
            (first + i, os.fspath(path), sample_rate, min_samples, excerpt_seconds)
            for i, (_, path) in enumerate(jobs)
        )
        return self._results(first, list(jobs), description, rescaled)

    def _results(self, first, jobs, description, rescaled):
        if first >= self._started:
            self._start()
        for index, (key, path) in enumerate(jobs, start=first):
            record, samples = self._wait_for(index, path)
            if "reason" in record:
                yield key, decode_pool.Skipped(key, os.fspath(path), record["reason"])
                continue
            if "peak" in record:
                rescaled_record = decode_pool.Rescaled(key, os.fspath(path), record["peak"])
                if rescaled is None:
                    decode_pool._log_rescaled(description, rescaled_record, _logger)
                else:
                    rescaled.append(rescaled_record)
            yield key, samples

    def _wait_for(self, index: int, path) -> tuple[dict, np.ndarray | None]:
        """What the workers wrote of job `index` (removed once read): its record (`{}`, a
        reason it was skipped or its peak) and its samples (`None` if skipped)."""
        stem = os.path.join(self._workdir, f"{index:09d}")
        while True:
            finished = not self._pipeline.is_alive()  # before looking: nothing is written after
            # The samples before the record: a record of their peak is written before them.
            has_samples = os.path.exists(stem + ".npy")
            record = {}
            if os.path.exists(stem + ".json"):
                with open(stem + ".json") as file:
                    record = json.load(file)
            if "reason" in record or has_samples:
                samples = None if "reason" in record else np.load(stem + ".npy")
                for suffix in (".json", ".npy"):
                    if os.path.exists(stem + suffix):
                        os.remove(stem + suffix)
                return record, samples
            if finished:
                if self._error is not None:
                    raise RuntimeError(f"the Beam pipeline decoding the files failed: "
                                       f"{self._error}") from self._error
                raise RuntimeError(f"the Beam pipeline finished without decoding {path!r}")
            time.sleep(self._POLL_SECONDS)

    def _start(self) -> None:
        """Starts a pipeline that decodes the pending jobs (after the one running, if any)."""
        if self._pipeline is not None:
            self._pipeline.join()
        jobs, self._pending = self._pending, []
        self._started += len(jobs)
        os.makedirs(self._workdir, exist_ok=True)
        shares = _direct_workers(self._options)
        _logger.info("decoding %d file(s) in Beam's DirectRunner, %d worker(s)", len(jobs),
                     shares)

        def run():
            try:
                with beam.Pipeline(options=self._options) as pipeline:
                    _ = (
                        pipeline
                        | "Jobs" >> beam.Create([(job[0] % shares, job) for job in jobs])
                        # One share a worker (the DirectRunner spreads the groups over them),
                        # each decoded in order, so the results appear in about the jobs' order.
                        | "Share" >> beam.GroupByKey()
                        | "Decode" >> beam.ParDo(_DecodeShare(self._workdir))
                    )
            except Exception as error:  # raised where the results are read
                self._error = error

        self._pipeline = threading.Thread(target=run, name="beam-decoding", daemon=True)
        self._pipeline.start()


def pipeline_options(flags: str | list[str], local_workers: int) -> PipelineOptions:
    """Beam's options from command-line `flags` ("--runner=DataflowRunner --project=P ..."), or
    from TFDS's comma-separated form of them ("runner=DataflowRunner,project=P").

    On the DirectRunner (no `--runner`, or `--runner=DirectRunner`) without
    `--direct_num_workers`, the pipeline runs in `local_workers` processes
    (`--direct_running_mode=multi_processing`), as `DecodePool` would.
    """
    if isinstance(flags, str):
        # Beam's flags, or TFDS's `--beam_pipeline_options` form "runner=X,project=Y".
        tfds_form = flags.strip() and not flags.lstrip().startswith("-")
        flags = [f"--{flag.strip()}" for flag in flags.split(",")] if tfds_form else (
            shlex.split(flags))
    flags = list(flags)
    options = PipelineOptions(flags)
    runner = options.view_as(StandardOptions).runner
    direct = options.view_as(DirectOptions)
    if runner in _DIRECT_RUNNERS and not any(
        flag.startswith("--direct_num_workers") for flag in flags
    ):
        direct.direct_num_workers = max(int(local_workers), 1)
        direct.direct_running_mode = "multi_processing"
    return options
