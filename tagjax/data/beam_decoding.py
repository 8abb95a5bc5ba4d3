"""Decoding a data set's audio files in an Apache Beam pipeline instead of a `DecodePool`.

TFDS builds a split with Beam when the builder's `_generate_examples` returns a Beam
`PTransform` (its `beam_datasets` guide); the same builder then runs on the DirectRunner on this
machine or on a cluster runner (Dataflow, Flink, Spark). `DecodeToExamples` is that transform:
it spreads the `(key, path, labels)` jobs over the workers (a reshuffle, so each worker decodes
its share), decodes each with `decode_pool.decode_file` (the same function `DecodePool` runs, so
both paths store the same samples) and yields TFDS's `(key, example)` pairs.

Files that cannot be used and tracks scaled down by their peak are not lost with the worker
that found them: each worker writes their records as JSON lines under `report_prefix` (next to
the data set being written, a path every worker can write), which `read_reports` collects once
the pipeline has finished, so the builder lists them in its metadata as the local path does.

Importing this module imports `apache_beam` (the `beam` extra: `pip install "tagjax[beam]"`).
"""

import json
import shlex
import uuid

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import DirectOptions, PipelineOptions, StandardOptions

from tagjax.data import decode_pool, schema

SKIPPED = "skipped"
RESCALED = "rescaled"


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
    if runner in (None, "DirectRunner", "direct") and not any(
        flag.startswith("--direct_num_workers") for flag in flags
    ):
        direct.direct_num_workers = max(int(local_workers), 1)
        direct.direct_running_mode = "multi_processing"
    return options
