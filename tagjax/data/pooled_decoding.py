"""The decoding of a TFDS builder whose splits are audio files: `PooledDecoding`, a mixin that
decodes them in the build's `DecodePool`, or in an Apache Beam pipeline
(`tagjax.data.beam_decoding`) when the build is given Beam options."""

import contextlib
import itertools
import logging
import os
from collections.abc import Sequence

import numpy as np

from tagjax.data import schema, tfds_compat
from tagjax.data.decode_pool import (
    DecodePool,
    Rescaled,
    Skipped,
    _log_rescaled,
    report_rescaled,
    report_skipped,
)


class PooledDecoding:
    """Mixin for a TFDS builder whose splits decode audio files: one `DecodePool` per build, or
    Apache Beam when the build is given Beam options.

    The builder calls `_init_decoding(decode_workers)` in its `__init__` and returns
    `self._examples(split, jobs, ...)` from `_generate_examples` (for every split before any is
    written, as TFDS does). A build whose `download_config` names a Beam runner or Beam options
    (TFDS's own switch, see `tagjax.data.beam_decoding`) decodes in Beam: on the DirectRunner in
    one pipeline (`DirectRunnerDecoding`) whose results TFDS's local writer writes, as after the
    pool; on a cluster runner in the transform that TFDS's Beam writer writes from
    (`DecodeToExamples`). Either way the split holds the same examples and the files left out
    are listed in `info.metadata["skipped"]`.
    """

    def _init_decoding(self, decode_workers: int | None) -> None:
        self._decode_workers = decode_workers
        self._beam_options = None  # while a Beam build runs: its options (None: a runner's own)
        self._beam = False  # whether a Beam build runs
        self._pool = None  # while a build runs: a DecodePool, or a DirectRunnerDecoding
        self._beam_reports = None  # [(split, report prefix)] while TFDS's Beam writer runs
        # TFDS pickles a builder as its constructor arguments.
        self._original_state.update(decode_workers=decode_workers)

    def download_and_prepare(self, *, download_config=None, **kwargs):
        self._beam = download_config is not None and (
            download_config.beam_runner is not None or download_config.beam_options is not None
        )
        if self._beam and download_config.beam_runner is None:
            self._beam_options = download_config.beam_options
        # Splits past 1 GB without TensorFlow.
        with tfds_compat.local_shuffle_files():
            try:
                super().download_and_prepare(download_config=download_config, **kwargs)
            finally:
                self._beam, self._beam_options = False, None

    def _download_and_prepare(self, dl_manager, download_config):
        # Here `self.data_dir` is TFDS's temporary folder for the build.
        with self._build_decoder() as pool:
            self._pool = pool
            self._beam_reports = [] if pool is None else None
            try:
                super()._download_and_prepare(dl_manager, download_config)
                # TFDS's Beam writer has run: list what its workers skipped or rescaled, as the
                # local path does, before TFDS writes the metadata.
                for split, prefix in self._beam_reports or ():
                    from tagjax.data import beam_decoding

                    skipped, rescaled = beam_decoding.read_reports(prefix)
                    self._report(split, skipped, rescaled)
            finally:
                self._pool, self._beam_reports = None, None

    def _build_decoder(self):
        """What decodes this build: a `DecodePool` (no Beam), a `DirectRunnerDecoding` (Beam's
        DirectRunner), or `None` (TFDS's Beam writer, on a cluster runner): a context manager."""
        if not self._beam:
            return DecodePool(self._decode_workers)
        from tagjax.data import beam_decoding

        if self._beam_options is None or beam_decoding.uses_tfds_beam_writer(self._beam_options):
            return contextlib.nullcontext()
        workdir = os.path.join(os.fspath(self.data_dir), "beam-decoded")
        return beam_decoding.DirectRunnerDecoding(self._beam_options, workdir)

    def _audio_info(self, tags: Sequence[str], what: str, *, metadata: dict | None = None,
                    **info):
        """The builder's `DatasetInfo`: `schema`'s features and metadata for `tags`, with
        `metadata["skipped"]` (filled as files are left out) and any other `metadata` entries;
        described as `what`, resampled; `info` (homepage, citation) as TFDS takes it."""
        entries = schema.metadata(list(tags))
        entries["skipped"] = []
        entries.update(metadata or {})
        return self.dataset_info_from_configs(
            description=f"{what}, resampled to {schema.SAMPLE_RATE} Hz mono int16.",
            features=schema.features(len(tags)),
            metadata=entries,
            supervised_keys=("audio", "labels"),
            **info,
        )

    def _report(self, split: str, skipped, rescaled) -> None:
        logger = logging.getLogger(type(self).__module__)
        report_skipped(self.info.metadata, split, skipped, logger)
        if "rescaled" in self.info.metadata:
            report_rescaled(self.info.metadata, split, rescaled, logger)
        else:
            for record in rescaled:
                _log_rescaled(split, record, logger)

    def _examples(
        self,
        split: str,
        jobs: Sequence[tuple[str, str | os.PathLike, np.ndarray]],
        *,
        min_samples: int = 0,
        excerpt_seconds: float | None = None,
        decoded: Sequence[tuple[str, np.ndarray | Skipped]] = (),
        rescaled: list[Rescaled] | None = None,
    ):
        """The split's `(key, example)` pairs: a generator, or a Beam `PTransform` for TFDS's
        Beam writer.

        Args:
          split: the split's name.
          jobs: `(key, path, labels)` of the split's files, in order; `labels` is the
            `(num_tags,)` uint8 multi-hot.
          min_samples, excerpt_seconds: see `decode_file`.
          decoded: results already decoded for the first `len(decoded)` jobs (the local path
            uses them; TFDS's Beam writer decodes every job).
          rescaled: a list of the `Rescaled` records of `decoded`, and that receives the others:
            they are then listed in `info.metadata["rescaled"]`; `None` logs them.
        """
        if self._beam_reports is not None:
            from tagjax.data import beam_decoding

            prefix = os.path.join(os.fspath(self.data_dir), f"beam-report-{split}")
            self._beam_reports.append((split, prefix))
            return beam_decoding.DecodeToExamples(
                jobs, prefix, min_samples=min_samples, excerpt_seconds=excerpt_seconds
            )
        rest = [(key, path) for key, path, _ in jobs[len(decoded) :]]
        # Handed to the decoder now: a DirectRunnerDecoding decodes all the splits at once.
        results = self._decode(rest, description=f"{self.name}/{split}", rescaled=rescaled,
                               min_samples=min_samples, excerpt_seconds=excerpt_seconds)
        return self._local_examples(split, jobs, itertools.chain(decoded, results), rescaled)

    def _local_examples(self, split, jobs, results, rescaled):
        labels = {key: key_labels for key, _, key_labels in jobs}
        skipped = []
        for key, result in results:
            if isinstance(result, Skipped):
                skipped.append(result)
                continue
            yield key, {"audio": result, "labels": labels[key], "id": key}
        logger = logging.getLogger(type(self).__module__)
        report_skipped(self.info.metadata, split, skipped, logger)
        if rescaled is not None:
            report_rescaled(self.info.metadata, split, rescaled, logger)

    def _decode(self, jobs, **kwargs):
        """`decode` of the build's pool (or of a pool of its own outside a build)."""
        if not jobs:
            return iter(())
        if self._pool is not None:
            return self._pool.decode(jobs, **kwargs)
        return self._decode_in_own_pool(jobs, **kwargs)

    def _decode_in_own_pool(self, jobs, **kwargs):
        with DecodePool(self._decode_workers) as pool:
            yield from pool.decode(jobs, **kwargs)
