"""Tagging your own audio files: `Tagger` and `python -m tagjax.tag`.

    python -m tagjax.tag PATH... [--model NAME | --workdir RUN] [--top 5] [--json | --csv]
        [--taggram] [--batch-size N] [--hop SECONDS] [--workers N] [--plot OUT.png]
    python -m tagjax.tag --list-models

    tagger = tj.Tagger.pretrained("musicnn-mtt")      # or tj.Tagger.from_workdir("runs/cnn_lstm")
    probabilities = tagger.tag(["song.mp3", "other.flac"])    # (2, num_tags)
    embeddings = tagger.embed(["song.mp3", "other.flac"])     # (2, dim)

Each track is tiled with chunks of the model's input length (a run's `crop_seconds`; the
pretrained models' 3 s patches), the last one padded with zeros; chunks of many tracks share
fixed-shape batches (the last batch padded), so the model compiles once. A track's prediction
is the mean of its chunks' predictions, each chunk weighted by the fraction of it that is real
audio (a 0.2 s tail padded to a 3 s chunk counts for 0.2 s, not for a whole chunk). Files
decode and resample in a pool of threads (libsndfile and soxr release the GIL), block by block
(`tj.data.stream_audio`), a bounded number of tracks and of chunks per track ahead of the model,
so decoding overlaps inference and memory stays bounded by the batch for any number and any
length of files. `Tagger.predict` runs in three stages: the chunk stream (decoding and cutting,
`tagjax.chunking`), the batcher (chunks into model calls) and the reassembler (each track's
chunk outputs into its `tagjax.results.TrackResult`). A training run is loaded through
`tagjax.rundir`, never through the training module.

An array is one track when it is 1-D, `(samples,)`; several tracks are a list of 1-D arrays. A
2-D array is refused: `soundfile.read` gives `(frames, channels)`, `librosa.load(mono=False)`
gives `(channels, frames)`, and a batch is `(tracks, samples)`, so its shape cannot say which it
is (mix channels to mono first: `samples.mean(axis=1)` for soundfile's layout).
"""

import argparse
import collections
import concurrent.futures
import dataclasses
import errno
import functools
import hashlib
import os
import queue
import sys
import threading
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence

import numpy as np

from tagjax import rundir
from tagjax.chunking import stream_chunks, weighted_mean
from tagjax.results import TrackFailure as TrackFailure
from tagjax.results import TrackResult as TrackResult
from tagjax.results import format_csv as format_csv
from tagjax.results import format_json as format_json
from tagjax.results import format_table as format_table
from tagjax.results import top_tags as top_tags

AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".opus", ".mp3")
# Tracks being decoded ahead of the model, per decoding thread: enough to keep the threads busy
# while the model runs, few enough that a long list of files never piles up in memory.
_TRACKS_AHEAD_PER_WORKER = 2
# How long a decoding thread waits at a full queue before it looks whether tagging has stopped.
_QUEUE_POLL_SECONDS = 0.1


# ----------------------------------------------------------------------------------------------
# Finding files


def find_audio_files(paths: Iterable[str | os.PathLike], *,
                     on_skipped: Callable[[str, str], None] | None = None) -> list[str]:
    """The files that `paths` name: directories searched recursively for audio files
    (`AUDIO_EXTENSIONS`, any case), in sorted order, leaving out hidden files and folders (such
    as macOS's `._song.mp3` resource forks); other paths kept as given, so a missing or
    unreadable file is reported when it fails to decode.

    Symbolic links to folders are followed, each folder searched once; a link back into a
    folder being searched (a loop) is skipped and reported, as is a folder that cannot be read.

    Args:
      paths: files and folders.
      on_skipped: called with `(path, reason)` for each folder or link that cannot be searched
        ("permission denied", ...); None: a `UserWarning` each.
    """
    if on_skipped is None:
        def on_skipped(path, reason):
            warnings.warn(f"skipped {path}: {reason}", stacklevel=3)
    files = []
    for path in map(os.fspath, paths):
        if os.path.isdir(path):
            _search_folder(path, files, on_skipped)
        else:
            files.append(path)
    return files


def _search_folder(top: str, files: list[str], on_skipped) -> None:
    """Appends the audio files under `top` to `files`, depth first, each folder's files before
    its subfolders (as `os.walk`)."""
    searched = set()  # (device, inode) of the folders already searched
    stack = [(top, ())]  # (folder, the (device, inode) of the folders that lead to it)
    while stack:
        folder, ancestors = stack.pop()
        try:
            info = os.stat(folder)
            with os.scandir(folder) as listing:
                entries = sorted(listing, key=lambda entry: entry.name)
        except OSError as error:
            on_skipped(folder, os_error_reason(error))
            continue
        key = (info.st_dev, info.st_ino)
        if key in ancestors:
            on_skipped(folder, f"a symbolic link loop (it leads back to "
                               f"{os.path.realpath(folder)})")
            continue
        if key in searched:  # another link to a folder already searched: its files are listed
            continue
        searched.add(key)
        subfolders = []
        for entry in entries:
            if entry.name.startswith("."):
                continue
            try:
                is_folder = entry.is_dir()
            except OSError as error:  # a link that loops on itself
                on_skipped(entry.path, os_error_reason(error))
                continue
            if is_folder:
                subfolders.append(entry.path)
            elif entry.name.lower().endswith(AUDIO_EXTENSIONS):
                files.append(entry.path)
        stack.extend((subfolder, (*ancestors, key)) for subfolder in reversed(subfolders))


def os_error_reason(error: OSError) -> str:
    """An `OSError` in words: "permission denied", "a symbolic link loop", ..."""
    if isinstance(error, PermissionError):
        return "permission denied"
    if error.errno == errno.ELOOP:
        return "a symbolic link loop"
    return (error.strerror or str(error)).lower()


# ----------------------------------------------------------------------------------------------
# The tagger


def _probabilities_and_embedding(module, audio):
    """`(batch, samples)` -> tag probabilities `(batch, L)` and embeddings `(batch, D)`, sharing
    the front end and summary."""
    import jax

    clip = module.clip_vector(audio, train=False)
    return jax.nn.sigmoid(module.head(clip, train=False)), module.head.embed(clip, train=False)


@functools.cache
def compiled_forward(model):
    """`forward(variables, audio (B, samples)) -> (probabilities (B, L), embeddings (B, D))`,
    jitted once per model: equal models (the same run restored twice) share the compilations."""
    from tagjax import xla_options

    return xla_options.jit(functools.partial(model.apply, method=_probabilities_and_embedding))


def default_batch_size() -> int:
    """Chunks per model call: 32 on a GPU or TPU; 4 on CPU, where XLA ran the training
    configs' models fastest at 1 to 8 chunks per call and 1.5-2x slower at 16 or 32 (see
    benchmarks/tag_throughput.py)."""
    import jax

    return 4 if jax.default_backend() == "cpu" else 32


def model_fingerprint(run_config_json: str, variables) -> str:
    """A hex digest that identifies a trained model: its config and every variable's bytes.

    Two restores of the same checkpoint give the same fingerprint; another run, or the same run
    after its best checkpoint moved on, gives another.
    """
    import jax

    digest = hashlib.sha256(run_config_json.encode())
    leaves, _ = jax.tree_util.tree_flatten_with_path(variables)
    for path, leaf in sorted(leaves, key=lambda item: jax.tree_util.keystr(item[0])):
        array = np.asarray(leaf)
        digest.update(f"{jax.tree_util.keystr(path)}:{array.dtype}:{array.shape}".encode())
        digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()[:16]


class Tagger:
    """A trained tagger applied to whole tracks: files or arrays of any length.

    Args:
      model: an unbound `tj.models.TaggingModel`.
      variables: its variables.
      tags: the tag names, one per model output.
      sample_rate: the rate the model was trained at, in Hz.
      chunk_seconds: the model's chunk length (the run's `crop_seconds`), context included.
      hop_seconds: seconds between chunk starts; None for chunks that tile the track without
        overlap (`chunk_seconds` less the lead).
      lead_samples: samples of context the model reads before the stretch a chunk describes
        (see `tagjax.chunking.chunk_track`); 0 for models trained on centred crops.
      batch_size: chunks per model call, shared by the tracks; every call has this shape, so
        it compiles once. None for `default_batch_size()`.
      workers: decoding threads; None for `min(4, cpu count)`.
      block_frames: frames a decoding thread decodes at a time, at the file's own rate; None
        for `tj.data.audio.STREAM_BLOCK_FRAMES` (1.5 s of 44.1 kHz audio).
      workdir: the training run this model comes from, if any (kept in indexes).
      model_name: the pretrained model's name (`Tagger.pretrained`), if it is one.
      model_id: an identifier of the trained model; None for the fingerprint of the model's
        definition and variables (see `model_fingerprint`).

    Attributes:
      chunk_samples, hop_samples, lead_samples: the chunk length, hop and lead in samples.
      embedding_dim: the length of an embedding.
      block_frames: frames decoded at a time.
    """

    def __init__(self, model, variables, *, tags: Sequence[str], sample_rate: int,
                 chunk_seconds: float, hop_seconds: float | None = None,
                 lead_samples: int = 0, batch_size: int | None = None,
                 workers: int | None = None, block_frames: int | None = None,
                 workdir: str | None = None, model_name: str | None = None,
                 model_id: str | None = None):
        import jax

        from tagjax.data.audio import STREAM_BLOCK_FRAMES

        if not chunk_seconds > 0 or not (hop_seconds is None or hop_seconds > 0):
            raise ValueError(f"chunk_seconds and hop_seconds must be > 0, got {chunk_seconds} "
                             f"and {hop_seconds}")
        chunk_samples = round(chunk_seconds * sample_rate)
        if not 0 <= lead_samples < chunk_samples:
            raise ValueError(f"lead_samples must be in [0, {chunk_samples}), got {lead_samples}")
        if hop_seconds is None:
            hop_seconds = (chunk_samples - lead_samples) / sample_rate
        batch_size = default_batch_size() if batch_size is None else batch_size
        if int(batch_size) != batch_size or batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
        workers = min(4, os.cpu_count() or 1) if workers is None else int(workers)
        if workers < 1:
            raise ValueError(f"workers must be >= 1, got {workers}")
        block_frames = STREAM_BLOCK_FRAMES if block_frames is None else block_frames
        if int(block_frames) != block_frames or block_frames < 1:
            raise ValueError(f"block_frames must be a positive integer, got {block_frames!r}")
        self.model = model
        self.variables = jax.device_put(variables)
        self.tags = list(tags)
        self.sample_rate = int(sample_rate)
        self.chunk_samples = chunk_samples
        self.hop_samples = max(1, round(hop_seconds * self.sample_rate))
        self.lead_samples = int(lead_samples)
        self.batch_size = int(batch_size)
        self.workers = workers
        self.block_frames = int(block_frames)
        self.workdir = workdir
        self.model_name = model_name
        self.model_id = model_id or model_fingerprint(repr(model), variables)
        self._forward = compiled_forward(model)
        probabilities, embedding = jax.eval_shape(
            self._forward, self.variables,
            jax.ShapeDtypeStruct((self.batch_size, self.chunk_samples), np.float32))
        if probabilities.shape[-1] != len(self.tags):
            raise ValueError(f"the model has {probabilities.shape[-1]} outputs but "
                             f"{len(self.tags)} tag names were given")
        self.embedding_dim = int(embedding.shape[-1])

    @classmethod
    def from_workdir(cls, workdir: str | os.PathLike, *, which: str = "best",
                     hop_seconds: float | None = None, batch_size: int | None = None,
                     workers: int | None = None) -> "Tagger":
        """The tagger of a training run's best (or latest) checkpoint.

        Args:
          workdir: the run's work directory (`python -m tagjax.train --workdir`).
          which: "best" (by validation ROC-AUC; the latest if there is no best) or "latest".
          hop_seconds, batch_size, workers: as in `Tagger`.

        Raises:
          FileNotFoundError: the directory holds no `config.json` or no checkpoint.
          ValueError: the `config.json` is not a run's config (the message names it).
        """
        import json

        model, variables, run = rundir.restore(workdir, which=which)
        return cls(model, variables, tags=run.tags, sample_rate=run.train.sample_rate,
                   chunk_seconds=run.train.crop_seconds, hop_seconds=hop_seconds,
                   batch_size=batch_size, workers=workers, workdir=run.workdir,
                   model_id=model_fingerprint(json.dumps(run.saved, sort_keys=True), variables))

    @classmethod
    def pretrained(cls, name: str = "musicnn-mtt", *, hop_seconds: float | None = None,
                   batch_size: int | None = None, workers: int | None = None,
                   embedding: str | None = None, precision: str | None = "highest") -> "Tagger":
        """The tagger of a published model shipped with tagjax (`tj.models.pretrained`).

        Args:
          name: one of `tj.models.pretrained.available()`: "musicnn-mtt" (the default),
            "musicnn-msd", "vgg-mtt", "vgg-msd".
          hop_seconds, batch_size, workers: as in `Tagger`; chunks are the models' 3 s patches
            (187 frames), by default tiling each track's frames without overlap, as musicnn's
            own extractor does.
          embedding: for the musicnn models, what `embed` returns (`tj.models.MusicnnBackend`):
            "pooled_normalized" (the default: the 1506-d mean and max of the mid-end frames,
            standardised by the training statistics of the head's first batch norm, which
            matched ground-truth tags of nearest neighbours best), "pooled" (the same, raw)
            or "penultimate" (musicnn's 200-d penultimate layer).
          precision: "highest" (float32: the original's numbers on any backend) or None (the
            backend's default: faster on GPUs, in TF32; see `tj.models.pretrained.load`).

        Raises:
          tj.models.pretrained.UnknownPretrainedError: no such model (the message lists them).
        """
        from tagjax.models import pretrained

        description = pretrained.info(name)
        overrides = {} if embedding is None else {"embedding": embedding}
        if overrides and description.architecture != "musicnn":
            raise ValueError(f"{name} has one embedding (its last hidden layer); "
                             f"embedding={embedding!r} is for the musicnn models")
        model, variables, description = pretrained.load(name, precision=precision, **overrides)
        return cls(model, variables, tags=description.tags, sample_rate=description.sample_rate,
                   chunk_seconds=description.chunk_samples / description.sample_rate,
                   hop_seconds=hop_seconds, lead_samples=description.lead_samples,
                   batch_size=batch_size, workers=workers, model_name=name)

    @property
    def chunk_seconds(self) -> float:
        """The model's input length in seconds, context included."""
        return self.chunk_samples / self.sample_rate

    @property
    def span_seconds(self) -> float:
        """The stretch of track one chunk describes: its length less the lead context."""
        return (self.chunk_samples - self.lead_samples) / self.sample_rate

    @property
    def hop_seconds(self) -> float:
        return self.hop_samples / self.sample_rate

    # -- whole collections --------------------------------------------------------------------

    def tag(self, tracks, *, sample_rate: int | None = None, progress: bool = False):
        """Tag probabilities of tracks.

        Args:
          tracks: one track, a path or a 1-D `(samples,)` array, or a sequence of paths and
            1-D arrays. Arrays are mono float audio at `sample_rate`. A 2-D array is refused,
            since its shape cannot say whether it is soundfile's `(frames, channels)`,
            librosa's `(channels, frames)` or a `(tracks, samples)` batch: mix channels to mono
            first (`samples.mean(axis=1)` for soundfile's layout, `samples.mean(axis=0)` for
            librosa's) and pass a batch as `list(batch)`.
          sample_rate: the rate of the arrays, a whole number of Hz; None for the model's
            `self.sample_rate` (other rates are resampled with soxr, as files are).
          progress: show a progress bar.

        Returns:
          `(num_tags,)` for a single path or 1-D array, else `(num_tracks, num_tags)`.

        Raises:
          tj.data.AudioDecodeError: a file cannot be decoded (the message names it).
          ValueError: an array is not 1-D, is empty, is not float or holds non-finite values,
            or `sample_rate` is not a rate (the message names the track or the argument).
        """
        return self._collect(tracks, "probabilities", sample_rate, progress)

    def embed(self, tracks, *, sample_rate: int | None = None, progress: bool = False):
        """Track embeddings: the model's penultimate activation, averaged over each track's
        chunks like `tag`. Arguments and errors as `tag`; returns `(dim,)` or
        `(num_tracks, dim)`."""
        return self._collect(tracks, "embedding", sample_rate, progress)

    def _collect(self, tracks, field: str, sample_rate, progress):
        from tagjax.data import AudioDecodeError

        items, single = _track_list(tracks)
        rows = []
        for result in self.predict(items, sample_rate=sample_rate, progress=progress):
            if isinstance(result, TrackFailure):
                raise AudioDecodeError(result.source, result.reason)
            rows.append(getattr(result, field))
        width = len(self.tags) if field == "probabilities" else self.embedding_dim
        stacked = np.stack(rows) if rows else np.zeros((0, width), np.float32)
        return stacked[0] if single else stacked

    def predict(self, tracks: Sequence, *, sample_rate: int | None = None,
                progress: bool | None = False) -> Iterator[TrackResult | TrackFailure]:
        """Tags and embeds tracks, yielding one result per track, in order, as they finish.

        A file that cannot be decoded yields a `TrackFailure` and the others go on. Files are
        decoded in blocks and their chunks batched as they come, so memory stays bounded by
        the batch whatever a track's length.

        Args:
          tracks: as in `tag`: a path or a 1-D array (one track), or a sequence of paths and
            `(samples,)` arrays (at `sample_rate`); a 2-D array is refused.
          sample_rate: the rate of the arrays in Hz; None for the model's rate.
          progress: show a progress bar (None: only on a terminal).

        Yields:
          `TrackResult` or `TrackFailure`, in the order of `tracks`.

        Raises:
          ValueError: an array is not 1-D, is empty, is not float or holds non-finite values,
            or `sample_rate` is not a rate.
        """
        from tagjax.data.audio import checked_sample_rate

        array_rate = (self.sample_rate if sample_rate is None
                      else checked_sample_rate(sample_rate, "sample_rate"))
        items, _ = _track_list(tracks)
        items = [self._checked_array(item, i)
                 if not isinstance(item, str | os.PathLike) else os.fspath(item)
                 for i, item in enumerate(items)]
        yield from self._results(items, array_rate, progress, total=len(items))

    def predict_arrays(self, arrays: Iterable[np.ndarray], *, progress: bool | None = False
                       ) -> Iterator[TrackResult]:
        """`predict` for tracks that are already mono float32 arrays at `self.sample_rate`,
        read one by one as tagging needs them (a data set's split, say), and not checked.

        Args:
          arrays: an iterable of `(samples,)` float32 arrays, each non-empty.
          progress: show a progress bar (None: only on a terminal).

        Yields:
          `TrackResult`, in the order of `arrays`.
        """
        yield from self._results(arrays, self.sample_rate, progress, total=None)

    def _results(self, items: Iterable, array_rate: int, progress: bool | None,
                 total: int | None) -> Iterator[TrackResult | TrackFailure]:
        """Tagging in three stages: the chunk stream (`_chunk_stream`: tracks decoded and cut in
        threads), the batcher (`_batches`: chunks of any tracks into fixed-shape model calls)
        and the reassembler (`_reassemble`: each track's outputs into its result)."""
        import tqdm

        bar = tqdm.tqdm(total=total, unit="track", disable=None if progress is None
                        else not progress, desc="tagging")
        chunk_stream = self._chunk_stream(items, array_rate)
        try:
            for result in _reassemble(self._batches(chunk_stream), self.hop_seconds):
                bar.update(1)
                yield result
        finally:
            chunk_stream.close()  # stops the decoding threads if tagging stopped early
            bar.close()

    def _chunk_stream(self, items: Iterable, array_rate: int
                      ) -> Iterator["_TrackStart | _Chunk | _TrackEnd"]:
        """The chunk stream: for each track in input order, its start, its chunks as they are
        decoded and its end (its length, or why it could not be decoded)."""
        tracks_ahead = self._chunked(items, array_rate)
        try:
            for index, item, chunks in tracks_ahead:
                yield _TrackStart(index, item if isinstance(item, str) else None)
                n_chunks = 0
                for chunk, weight in chunks:
                    yield _Chunk(index, chunk, weight)
                    n_chunks += 1
                yield _TrackEnd(index, n_chunks, chunks.num_samples / self.sample_rate,
                                chunks.failure)
        finally:
            tracks_ahead.close()

    def _batches(self, events: Iterator) -> Iterator["_TrackStart | _ChunkOutput | _TrackEnd"]:
        """The batcher: the stream's chunks, whatever their tracks, into batches of
        `batch_size` (the last one zero-padded), one batch in the model while the previous
        one's outputs are read; each chunk comes back as a `_ChunkOutput`, in stream order, and
        the stream's other events pass through as they come."""
        in_flight = collections.deque()  # dispatched batches whose outputs are not yet read
        batch, rows = self._new_batch(), []
        for event in events:
            if not isinstance(event, _Chunk):
                yield event
                continue
            batch[len(rows)] = event.audio
            rows.append((event.track, event.weight))
            if len(rows) == self.batch_size:
                in_flight.append((self._forward(self.variables, batch), rows))
                batch, rows = self._new_batch(), []
                if len(in_flight) > 1:  # read the previous batch while this one runs
                    yield from _chunk_outputs(*in_flight.popleft())
        if rows:
            in_flight.append((self._forward(self.variables, batch), rows))
        while in_flight:
            yield from _chunk_outputs(*in_flight.popleft())

    def _new_batch(self) -> np.ndarray:
        # A fresh buffer per batch: jit may read a NumPy argument after dispatch returns.
        return np.zeros((self.batch_size, self.chunk_samples), np.float32)

    def _checked_array(self, array, index: int) -> np.ndarray:
        array = np.asarray(array)
        if array.ndim != 1:
            raise ValueError(f"track {index}: {_not_one_track(array.shape)}")
        if array.size == 0:
            raise ValueError(f"track {index}: the array is empty")
        if not np.issubdtype(array.dtype, np.floating):
            raise ValueError(f"track {index}: expected float audio in [-1, 1], got dtype "
                             f"{array.dtype}")
        if not np.isfinite(array).all():
            raise ValueError(f"track {index}: the audio holds NaN or infinite values")
        return array.astype(np.float32, copy=False)

    def _chunked(self, items: Iterable, array_rate: int) -> Iterator[tuple[int, object, "_Chunks"]]:
        """`(index, item, its chunks)` in order, each track decoded and chunked by a thread of a
        pool, at most `workers * _TRACKS_AHEAD_PER_WORKER` tracks and `batch_size` chunks per
        track ahead of the model."""
        stop = threading.Event()
        with concurrent.futures.ThreadPoolExecutor(self.workers,
                                                   thread_name_prefix="decode") as pool:
            ahead = collections.deque()
            try:
                for index, item in enumerate(items):
                    chunks = _Chunks(self.batch_size, stop)
                    chunks.future = pool.submit(self._produce_chunks, item, array_rate, chunks)
                    ahead.append((index, item, chunks))
                    if len(ahead) > self.workers * _TRACKS_AHEAD_PER_WORKER:
                        yield ahead.popleft()
                while ahead:
                    yield ahead.popleft()
            finally:
                stop.set()
                for *_, chunks in ahead:
                    chunks.future.cancel()

    def _produce_chunks(self, item, array_rate: int, chunks: "_Chunks") -> None:
        """Decodes one track block by block into `chunks` (in a decoding thread): its chunks,
        then its length, or why it cannot be decoded."""
        from tagjax.data import AudioDecodeError, stream_audio

        lengths = []

        def measured(blocks):
            for block in blocks:
                lengths.append(len(block))
                yield block

        try:
            if isinstance(item, np.ndarray):
                if array_rate != self.sample_rate:
                    import soxr

                    item = soxr.resample(item, array_rate, self.sample_rate,
                                         quality="HQ").astype(np.float32)
                # Views, so that chunking copies a block at a time, not the whole array.
                blocks = (item[i:i + self.block_frames]
                          for i in range(0, len(item), self.block_frames))
            else:
                blocks = stream_audio(item, sr=self.sample_rate, block_frames=self.block_frames)
            for chunk, weight in stream_chunks(measured(blocks), self.chunk_samples,
                                               self.hop_samples, self.lead_samples):
                if not chunks.put(("chunk", chunk, weight)):
                    return
            chunks.put(("end", sum(lengths)))
        except AudioDecodeError as error:
            chunks.put(("failed", error.reason))
        except Exception as error:  # one file that trips the decoder must not end a long run
            chunks.put(("failed", f"unexpected {type(error).__name__} while decoding: {error}"))


def _not_one_track(shape: tuple) -> str:
    """Why an array of `shape` is not one track, and what to pass instead."""
    message = f"expected mono audio of shape (samples,), got an array of shape {shape}"
    if len(shape) != 2:
        return message
    return (f"{message}, which could be soundfile's (frames, channels), librosa's (channels, "
            f"frames) or a batch of tracks: mix channels to mono first, samples.mean(axis=1) "
            f"for (frames, channels) or samples.mean(axis=0) for (channels, frames), and pass "
            f"several tracks as a list of 1-D arrays (list(batch))")


def _track_list(tracks) -> tuple[list, bool]:
    """`tracks` as a list of paths and arrays, and whether it was a single track (a path or a
    1-D array); a 2-D or other array is refused rather than read as rows."""
    if isinstance(tracks, str | os.PathLike):
        return [tracks], True
    if isinstance(tracks, np.ndarray) or (hasattr(tracks, "__array__")
                                          and hasattr(tracks, "ndim")):
        array = np.asarray(tracks)
        if array.ndim != 1:
            raise ValueError(_not_one_track(array.shape))
        return [array], True
    return list(tracks), False


class _Chunks:
    """One track's chunks, handed from the thread that decodes it to the loop that batches them,
    at most `maxsize` waiting at a time.

    Iterating gives `(chunk, weight)` until the track ends; then `num_samples` is its length, or
    `failure` says why it could not be decoded (after the chunks decoded before the failure).
    """

    def __init__(self, maxsize: int, stop: threading.Event):
        self._queue = queue.Queue(maxsize)
        self._stop = stop
        self.future = None
        self.num_samples = 0
        self.failure = None

    def put(self, message) -> bool:
        """Waits for room for `message`; False if tagging stopped meanwhile."""
        while not self._stop.is_set():
            try:
                self._queue.put(message, timeout=_QUEUE_POLL_SECONDS)
                return True
            except queue.Full:
                pass
        return False

    def __iter__(self) -> Iterator[tuple[np.ndarray, np.float32]]:
        while True:
            kind, *content = self._get()
            if kind == "chunk":
                yield tuple(content)
                continue
            if kind == "end":
                self.num_samples = content[0]
            else:
                self.failure = content[0]
            return

    def _get(self):
        while True:
            try:
                return self._queue.get(timeout=_QUEUE_POLL_SECONDS)
            except queue.Empty:
                if self.future.done() and self._queue.empty():
                    self.future.result()  # raises what broke the thread itself
                    raise RuntimeError(
                        "a decoding thread ended without finishing its track") from None


@dataclasses.dataclass(frozen=True)
class _TrackStart:
    track: int
    source: str | None  # the file, or None for an array


@dataclasses.dataclass(frozen=True)
class _Chunk:
    track: int
    audio: np.ndarray  # (chunk_samples,)
    weight: np.float32  # its share of real audio


@dataclasses.dataclass(frozen=True)
class _ChunkOutput:
    track: int
    weight: np.float32
    probabilities: np.ndarray  # (num_tags,)
    embedding: np.ndarray  # (dim,) float64


@dataclasses.dataclass(frozen=True)
class _TrackEnd:
    track: int
    n_chunks: int
    duration: float  # seconds decoded
    failure: str | None  # why it could not be decoded, if it could not


def _chunk_outputs(outputs, rows: list[tuple[int, np.float32]]) -> Iterator[_ChunkOutput]:
    probabilities, embeddings = (np.asarray(x) for x in outputs)
    for row, (track, weight) in enumerate(rows):
        yield _ChunkOutput(track, weight, probabilities[row], embeddings[row].astype(np.float64))


class _PendingTrack:
    """A track whose chunks are in the model: it is done once its end has been read and every
    chunk's output is back. The embeddings are summed as they come (weighted, in float64)
    rather than kept per chunk."""

    def __init__(self, start: _TrackStart, hop_seconds: float):
        self.index, self.source, self.hop_seconds = start.track, start.source, hop_seconds
        self.weights, self.probabilities = [], []
        self.embedding_sum = 0.0
        self.end = None

    def add(self, output: _ChunkOutput) -> None:
        self.weights.append(output.weight)
        self.probabilities.append(output.probabilities)
        self.embedding_sum = self.embedding_sum + np.float64(output.weight) * output.embedding

    @property
    def done(self) -> bool:
        return self.end is not None and len(self.weights) == self.end.n_chunks

    def outcome(self) -> TrackResult | TrackFailure:
        if self.end.failure is not None:
            source = self.source if self.source is not None else f"<array {self.index}>"
            return TrackFailure(self.index, source, self.end.failure)
        weights = np.asarray(self.weights, np.float32)
        probabilities = np.stack(self.probabilities).astype(np.float32)
        embedding = self.embedding_sum / np.asarray(weights, np.float64).sum()
        return TrackResult(
            index=self.index, source=self.source, duration=self.end.duration,
            probabilities=weighted_mean(probabilities, weights),
            embedding=np.asarray(embedding, np.float32), chunk_probabilities=probabilities,
            chunk_weights=weights,
            chunk_start_seconds=np.arange(len(weights)) * self.hop_seconds)


def _reassemble(events: Iterator, hop_seconds: float) -> Iterator[TrackResult | TrackFailure]:
    """The reassembler: each track's chunk outputs into its `TrackResult` (the chunks' weighted
    mean, `tagjax.chunking.weighted_mean`), yielded in input order as soon as a track and the
    tracks before it are complete."""
    pending: dict[int, _PendingTrack] = {}  # in input order
    for event in events:
        if isinstance(event, _TrackStart):
            pending[event.track] = _PendingTrack(event, hop_seconds)
        elif isinstance(event, _ChunkOutput):
            pending[event.track].add(event)
        else:
            pending[event.track].end = event
        while pending and (first := next(iter(pending.values()))).done:
            del pending[first.index]
            yield first.outcome()


# ----------------------------------------------------------------------------------------------
# Command line


DEFAULT_MODEL = "musicnn-mtt"


class _ListModels(argparse.Action):
    """`--list-models`: prints the pretrained models and exits, like `--help`."""

    def __init__(self, option_strings, dest, **kwargs):
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None):
        print(format_model_list())
        parser.exit()


def format_model_list() -> str:
    """The pretrained models: name, architecture, training data, published scores and tags."""
    import textwrap

    from tagjax.models import pretrained

    lines = []
    for name in pretrained.available():
        info = pretrained.info(name)
        default = " (default)" if name == DEFAULT_MODEL else ""
        lines.append(f"{name}{default}: {info.architecture}, trained on {info.dataset}; "
                     f"published test ROC-AUC {info.published_roc_auc:.4f}, PR-AUC "
                     f"{info.published_pr_auc:.4f}; {info.licence}")
        lines.extend(textwrap.wrap("tags: " + ", ".join(info.tags), width=96,
                                   initial_indent="  ", subsequent_indent="    "))
    return "\n".join(lines)


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    """The options that load a tagger, shared by `tag`, `index` and `similar`."""
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--model", metavar="NAME",
                        help=f"a pretrained model shipped with tagjax (default {DEFAULT_MODEL} "
                             "when no --workdir is given; see --list-models)")
    source.add_argument("--workdir", help="a training run's work directory, instead of a "
                                          "pretrained model")
    parser.add_argument("--list-models", action=_ListModels,
                        help="list the pretrained models with their tags and exit")
    parser.add_argument("--which", choices=("best", "latest"), default="best",
                        help="which checkpoint of the --workdir run (default: best)")
    parser.add_argument("--batch-size", type=positive_int, default=None,
                        help="chunks per model call (default: 32 on a GPU or TPU, 4 on CPU)")
    parser.add_argument("--hop", type=positive_float, default=None, metavar="SECONDS",
                        help="seconds between chunk starts (default: chunks tile the track "
                             "without overlap)")
    parser.add_argument("--workers", type=positive_int, default=None,
                        help="decoding threads (default: up to 4)")


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {text}")
    return value


def positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return value


def quiet_logging() -> None:
    """Orbax logs every restore at INFO through absl; a command line says what matters itself."""
    from absl import logging

    logging.set_verbosity(logging.WARNING)


def load_tagger(args, *, workdir: str | None = None, model_name: str | None = None) -> Tagger:
    """The tagger of a training run (`workdir`) or of a pretrained model (`model_name`, or
    `DEFAULT_MODEL` when neither is given), with the command line's other model options; or
    exit with the reason."""
    from tagjax.models.pretrained import UnknownPretrainedError

    quiet_logging()
    try:
        if workdir:
            return Tagger.from_workdir(workdir, which=args.which, hop_seconds=args.hop,
                                       batch_size=args.batch_size, workers=args.workers)
        return Tagger.pretrained(model_name or DEFAULT_MODEL, hop_seconds=args.hop,
                                 batch_size=args.batch_size, workers=args.workers)
    except (OSError, ValueError, UnknownPretrainedError) as error:
        # A missing or corrupt run, an unknown model name, an option the model cannot take.
        message = (error.args[0] if len(error.args) == 1 and isinstance(error.args[0], str)
                   else error)
        raise SystemExit(f"error: {message}") from None


def report_failure(failure: TrackFailure) -> None:
    print(f"error: skipped {failure.message}", file=sys.stderr)


def command_line_files(paths: Sequence[str]) -> tuple[list[str], int]:
    """The audio files of a command line's PATHs and the number of folders (or links) that
    could not be searched, each named on stderr with the reason; with no file at all, a line
    that says so."""
    skipped = []

    def report_skipped(path: str, reason: str) -> None:
        skipped.append(path)
        print(f"error: skipped {path}: {reason}", file=sys.stderr)

    files = find_audio_files(paths, on_skipped=report_skipped)
    if not files:
        could_not = f" ({len(skipped)} could not be searched)" if skipped else ""
        print(f"error: no audio files ({', '.join(AUDIO_EXTENSIONS)}) in {', '.join(paths)}"
              f"{could_not}", file=sys.stderr)
    return files, len(skipped)


def check_writable_folder(path: str, what: str) -> None:
    """Exits with one line unless a file can be created beside `path` (checked by creating
    and removing one, which also holds for root and read-only file systems)."""
    import tempfile

    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise SystemExit(f"error: the folder of {what} {path} does not exist: create it first")
    try:
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".tagjax-check-"):
            pass
    except OSError as error:
        raise SystemExit(f"error: cannot write {what} {path}: {os_error_reason(error)} in "
                         f"{folder}") from None


def _plot_paths(out: str, results: Sequence[TrackResult]) -> list[str]:
    """`out` for one track; `OUT-<track name>.png` (numbered when names repeat) for several."""
    if len(results) == 1:
        return [out]
    stem, ext = os.path.splitext(out)
    paths, seen = [], collections.Counter()
    for result in results:
        name = os.path.splitext(os.path.basename(result.source))[0]
        seen[name] += 1
        suffix = name if seen[name] == 1 else f"{name}-{seen[name]}"
        paths.append(f"{stem}-{suffix}{ext or '.png'}")
    return paths


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tagjax.tag",
        description="Tag audio files with a pretrained model (musicnn-mtt unless --model or "
                    "--workdir says otherwise). Prints each track's top tags; files that cannot "
                    "be decoded and folders that cannot be read are named on stderr and "
                    "skipped, and the exit status is 1 if any was.")
    parser.add_argument("paths", nargs="+", metavar="PATH",
                        help="audio files, or directories searched recursively for "
                             + ", ".join(AUDIO_EXTENSIONS))
    add_model_arguments(parser)
    parser.add_argument("--top", type=positive_int, default=5, help="tags per track (default 5)")
    parser.add_argument("--taggram", action="store_true",
                        help="also give each chunk's tags over time: its top tags in the table, "
                             "every tag's probability per chunk with --json or --csv")
    output = parser.add_mutually_exclusive_group()
    output.add_argument("--json", action="store_true", help="print JSON instead of a table")
    output.add_argument("--csv", action="store_true", help="print CSV instead of a table")
    parser.add_argument("--plot", metavar="OUT.png",
                        help="draw each track's mel spectrogram and tag probabilities over "
                             "time (several tracks: OUT-<track name>.png)")
    args = parser.parse_args(argv)

    files, skipped_folders = command_line_files(args.paths)
    if not files:
        return 1
    if args.plot:
        check_writable_folder(args.plot, "--plot")
    tagger = load_tagger(args, workdir=args.workdir, model_name=args.model)
    results, failures = [], []
    for result in tagger.predict(files, progress=None):
        if isinstance(result, TrackFailure):
            failures.append(result)
            report_failure(result)
        else:
            results.append(result)

    formatter = format_json if args.json else format_csv if args.csv else format_table
    if results or args.json or args.csv:
        print(formatter(results, tagger.tags, args.top, taggram=args.taggram,
                        span_seconds=tagger.span_seconds))
    if args.plot and results:
        from tagjax import plot

        for result, out in zip(results, _plot_paths(args.plot, results), strict=True):
            plot.plot_track(tagger, result, out, top=args.top)
            print(f"wrote {out}", file=sys.stderr)
    if failures:
        print(f"{len(failures)} of {len(files)} file(s) could not be tagged", file=sys.stderr)
    if skipped_folders:
        print(f"{skipped_folders} folder(s) could not be searched", file=sys.stderr)
    return 1 if failures or skipped_folders else 0


if __name__ == "__main__":
    sys.exit(main())
