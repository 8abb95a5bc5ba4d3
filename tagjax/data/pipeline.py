"""The input pipeline: fixed-shape batches of audio crops (training) and chunks (evaluation).

Both loaders read a random-access data source of the shared schema (`get_source(...)[0]`:
examples with int16 `audio` of any length and uint8 `labels`) with grain's dataset API, crop or
cut the int16 samples first and convert only what is kept to float32 (`schema.int16_to_audio`),
and emit batches whose shapes never change, so a jitted step never recompiles.

Training, `train_loader`: every epoch is a new seeded shuffle of the whole split; each track
gives one crop of `crop_samples` at an offset drawn from the seed and the example's position in
the stream (tracks shorter than the crop are zero-padded at the end); the examples of the
stream are batched in order, so with `num_epochs` set the last partial batch is dropped. The
iterator's `get_state()` is a small JSON-serialisable dict, and a fresh iterator given it with
`set_state()` yields exactly the batches that would have followed, also with worker processes:

    loader = tj.data.train_loader(source, batch_size=16, crop_samples=3 * 16000, seed=0)
    iterator = iter(loader)
    batch = next(iterator)          # {"audio": (16, 48000) float32, "labels": (16, 50) float32}
    state = iterator.get_state()    # save with orbax: ocp.args.JsonSave(state), or
                                    # grain.checkpoint.CheckpointSave(iterator)
    iterator = iter(loader); iterator.set_state(state)   # resumes at the same batch

With `worker_count > 0` the examples are read and cropped in that many processes (grain's
`mp_prefetch`, "spawn" start method: the source must be picklable, as TFDS data sources are, and
a script must start them under `if __name__ == "__main__":`) and batched in this one, so the
batches are the same as with `worker_count=0` for any number of workers. A saved state restores
into a loader with the same `worker_count` (grain's state records each worker's position).
Close an iterator with workers (`iterator.close()`) when done with it. grain's index shuffle is
slow on tiny sources (measured here: 1.7 ms per example for 28 examples, 50 us for 1,600 and
5 us for 15,000), which matters only for toy data sets.

Evaluation, `eval_loader`: each track is cut into `n_chunks` chunks of `chunk_samples`, evenly
spaced from the start of the track to its end (chunk `k` starts at
`floor(k * (samples - chunk_samples) / (n_chunks - 1))`; Won et al. use 16 chunks); a track
shorter than a chunk gives `n_chunks` copies of itself, zero-padded. The chunks of consecutive
tracks are packed into full batches; each row carries its track's index in the source
(`track`), and rows that pad the last batch have `valid=False` and `track == num_tracks`, so
per-track predictions are a segment mean over the valid rows:

    loader = tj.data.eval_loader(source, batch_size=64, chunk_samples=3 * 16000, n_chunks=16)
    sums = jax.ops.segment_sum(probs * valid[:, None], track, num_segments=loader.num_tracks)

Sharding across hosts and devices: `shard_index`/`shard_count` default to
`jax.process_index()`/`jax.process_count()`. In training every host draws the same seeded
global stream and keeps every `shard_count`-th example from position `shard_index` (the stream
is first cut to a multiple of `shard_count`, so every host yields the same number of batches);
`batch_size` is the per-host batch. In evaluation each host evaluates every
`shard_count`-th track, padded with invalid rows so every host yields the same number of
batches. A host's batch becomes its part of the global batch on a mesh with a `data` axis:

    sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("data"))
    global_batch = jax.tree.map(
        lambda x: jax.make_array_from_process_local_data(sharding, x), batch)

which splits the host's rows evenly and in order over its devices (so `batch_size` must be a
multiple of the number of local devices); with one host this is `jax.device_put(batch,
sharding)`.
"""

import dataclasses
import math
from collections.abc import Iterator, Sequence
from typing import Any

import grain
import numpy as np

from tagjax.chunking import evenly_spaced_starts
from tagjax.data import schema

# Read-ahead of each process: threads reading the ArrayRecord files, and examples buffered.
_READ_THREADS = 4
_READ_BUFFER_EXAMPLES = 64


def _default_shard(shard_index: int | None, shard_count: int | None) -> tuple[int, int]:
    """`(shard_index, shard_count)`, defaulting to this JAX process among all of them."""
    if shard_index is None or shard_count is None:
        import jax

        shard_index = jax.process_index() if shard_index is None else shard_index
        shard_count = jax.process_count() if shard_count is None else shard_count
    if not 0 <= shard_index < shard_count:
        raise ValueError(
            f"shard_index must be in [0, shard_count), got {shard_index} of {shard_count}"
        )
    return int(shard_index), int(shard_count)


def _check_positive(**values: int) -> None:
    for name, value in values.items():
        if int(value) != value or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")


def _allow_grain_flag_reads() -> None:
    """Lets grain's worker processes start outside an absl app (flags never parsed).

    grain 0.2.18 reads an absl flag when it starts workers and raises `UnparsedFlagAccessError`
    in plain scripts and tests (google/grain#1355, fixed upstream in #1362); marking the flags
    parsed keeps every flag at its default, and an absl app parses them as usual.
    """
    from absl import flags

    if not flags.FLAGS.is_parsed():
        flags.FLAGS.mark_as_parsed()


def _read_options() -> grain.ReadOptions:
    return grain.ReadOptions(num_threads=_READ_THREADS, prefetch_buffer_size=_READ_BUFFER_EXAMPLES)


@dataclasses.dataclass(frozen=True)
class RandomCrop(grain.transforms.RandomMap):
    """A random `crop_samples` window of an example's int16 audio, as float32.

    Maps `{"audio": (samples,) int16, "labels": (num_tags,) uint8, ...}` to
    `{"audio": (crop_samples,) float32, "labels": (num_tags,) float32}`; audio shorter than the
    crop is zero-padded at the end.
    """

    crop_samples: int

    def random_map(self, example: dict[str, Any], rng: np.random.Generator) -> dict[str, Any]:
        audio = np.asarray(example["audio"])
        excess = len(audio) - self.crop_samples
        if excess >= 0:
            start = int(rng.integers(0, excess + 1))
            crop = audio[start : start + self.crop_samples]
        else:
            crop = np.pad(audio, (0, -excess))
        return {
            "audio": schema.int16_to_audio(crop),
            "labels": np.asarray(example["labels"], np.float32),
        }


def train_loader(
    source: Sequence[dict[str, Any]],
    *,
    batch_size: int,
    crop_samples: int,
    seed: int,
    num_epochs: int | None = None,
    worker_count: int = 0,
    shard_index: int | None = None,
    shard_count: int | None = None,
) -> grain.IterDataset:
    """Shuffled batches of random crops, for training.

    Args:
      source: a random-access data source of the shared schema (`len`, `source[i]`).
      batch_size: examples per batch, on this host.
      crop_samples: samples per crop.
      seed: seeds the shuffle of every epoch and every crop offset, in [0, 2**32).
      num_epochs: passes over the data; `None` repeats forever.
      worker_count: processes that read and crop; 0 does it in this process (with reading
        threads).
      shard_index, shard_count: this host's share of the stream; default to
        `jax.process_index()` and `jax.process_count()`.

    Returns:
      An iterable; its iterator yields `{"audio": (batch_size, crop_samples) float32,
      "labels": (batch_size, num_tags) float32}` and has `get_state()` (a JSON-serialisable
      dict) and `set_state(state)`.

    Raises:
      ValueError: a size is not positive, the seed is out of range, the source is empty, or
        `num_epochs` epochs hold fewer examples per host than one batch.
    """
    _check_positive(batch_size=batch_size, crop_samples=crop_samples)
    if num_epochs is not None:
        _check_positive(num_epochs=num_epochs)
    if not 0 <= seed < 2**32:
        raise ValueError(f"seed must be in [0, 2**32), got {seed}")
    if worker_count < 0:
        raise ValueError(f"worker_count must be >= 0, got {worker_count}")
    shard_index, shard_count = _default_shard(shard_index, shard_count)
    if len(source) == 0:
        raise ValueError("the data source is empty")
    if num_epochs is not None and len(source) * num_epochs // shard_count < batch_size:
        raise ValueError(
            f"{num_epochs} epoch(s) of {len(source)} examples over {shard_count} host(s) give "
            f"fewer than one batch of {batch_size} per host"
        )
    stream = (
        grain.MapDataset.source(source)
        .shuffle(seed=seed)  # folds the epoch into the seed: a new order every epoch
        .random_map(RandomCrop(int(crop_samples)), seed=seed)
        .repeat(num_epochs)
    )
    if shard_count > 1:
        stream = stream[: len(stream) // shard_count * shard_count][shard_index::shard_count]
    elements = stream.to_iter_dataset(_read_options())
    if worker_count > 0:
        _allow_grain_flag_reads()
        # Workers take interleaved slices of the stream and the interleave restores its order,
        # so batching after `mp_prefetch` gives the same batches for any number of workers.
        elements = elements.mp_prefetch(grain.MultiprocessingOptions(num_workers=worker_count))
    return elements.batch(batch_size, drop_remainder=True)


@dataclasses.dataclass(frozen=True)
class EvenChunks(grain.transforms.Map):
    """Cuts a track into evenly spaced chunks, as float32 rows tagged with the track's index.

    Maps a track index `i` (or -1 for a padding track) to `{"audio": (n_chunks, chunk_samples)
    float32, "labels": (n_chunks, num_tags) float32, "track": (n_chunks,) int32, "valid":
    (n_chunks,) bool}` read from `source[i]`.
    """

    source: Sequence[dict[str, Any]]
    chunk_samples: int
    n_chunks: int
    num_tags: int

    def map(self, index: int) -> dict[str, np.ndarray]:
        if index < 0:
            return _padding_rows(self.n_chunks, self.chunk_samples, self.num_tags, len(self.source))
        example = self.source[index]
        audio = np.asarray(example["audio"])
        if len(audio) < self.chunk_samples:
            audio = np.pad(audio, (0, self.chunk_samples - len(audio)))
        starts = evenly_spaced_starts(len(audio), self.chunk_samples, self.n_chunks)
        chunks = audio[starts[:, None] + np.arange(self.chunk_samples)]
        labels = np.asarray(example["labels"], np.float32)
        return {
            "audio": schema.int16_to_audio(chunks),
            "labels": np.broadcast_to(labels, (self.n_chunks, len(labels))).copy(),
            "track": np.full(self.n_chunks, index, np.int32),
            "valid": np.ones(self.n_chunks, bool),
        }


def _padding_rows(rows: int, chunk_samples: int, num_tags: int, track: int):
    return {
        "audio": np.zeros((rows, chunk_samples), np.float32),
        "labels": np.zeros((rows, num_tags), np.float32),
        "track": np.full(rows, track, np.int32),
        "valid": np.zeros(rows, bool),
    }


@dataclasses.dataclass(frozen=True)
class _PadBatch(grain.transforms.Map):
    """Pads the last, short batch with invalid rows (`valid=False`, `track=num_tracks`)."""

    batch_size: int
    num_tracks: int

    def map(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        missing = self.batch_size - len(batch["valid"])
        if missing == 0:
            return batch
        padding = _padding_rows(
            missing, batch["audio"].shape[1], batch["labels"].shape[1], self.num_tracks
        )
        return {key: np.concatenate([batch[key], padding[key]]) for key in batch}


class EvalLoader:
    """Batches of evenly spaced chunks of every track, for evaluation (see `eval_loader`).

    Attributes:
      num_tracks: tracks in the source (on all hosts); `track` indexes them.
      tracks: the indices of the tracks this host evaluates.
      num_batches: batches per pass (the same on every host); also `len(loader)`.
    """

    def __init__(
        self,
        source: Sequence[dict[str, Any]],
        *,
        batch_size: int,
        chunk_samples: int,
        n_chunks: int,
        shard_index: int | None = None,
        shard_count: int | None = None,
    ):
        _check_positive(batch_size=batch_size, chunk_samples=chunk_samples, n_chunks=n_chunks)
        shard_index, shard_count = _default_shard(shard_index, shard_count)
        if len(source) == 0:
            raise ValueError("the data source is empty")
        self.source = source
        self.batch_size = int(batch_size)
        self.chunk_samples = int(chunk_samples)
        self.n_chunks = int(n_chunks)
        self.num_tracks = len(source)
        self.num_tags = len(source[0]["labels"])
        self.tracks = list(range(shard_index, self.num_tracks, shard_count))
        # Every host evaluates as many tracks (some of them padding) so all run the same steps.
        self._tracks_per_host = math.ceil(self.num_tracks / shard_count)
        self.num_batches = math.ceil(self._tracks_per_host * self.n_chunks / self.batch_size)

    def __len__(self) -> int:
        return self.num_batches

    def __iter__(self) -> Iterator[dict[str, np.ndarray]]:
        padded = self.tracks + [-1] * (self._tracks_per_host - len(self.tracks))
        chunks = grain.MapDataset.source(padded).map(
            EvenChunks(self.source, self.chunk_samples, self.n_chunks, self.num_tags)
        )
        batches = grain.experimental.RebatchIterDataset(
            chunks.to_iter_dataset(_read_options()), self.batch_size, drop_remainder=False
        ).map(_PadBatch(self.batch_size, self.num_tracks))
        return iter(batches)


def eval_loader(
    source: Sequence[dict[str, Any]],
    *,
    batch_size: int,
    chunk_samples: int,
    n_chunks: int,
    shard_index: int | None = None,
    shard_count: int | None = None,
) -> EvalLoader:
    """Batches of `n_chunks` evenly spaced chunks of every track, for evaluation.

    Args:
      source: a random-access data source of the shared schema.
      batch_size: rows (chunks) per batch, on this host.
      chunk_samples: samples per chunk.
      n_chunks: chunks per track.
      shard_index, shard_count: this host's share of the tracks; default to
        `jax.process_index()` and `jax.process_count()`.

    Returns:
      An `EvalLoader`: an iterable (one pass per `iter`) of `{"audio": (batch_size,
      chunk_samples) float32, "labels": (batch_size, num_tags) float32, "track": (batch_size,)
      int32, "valid": (batch_size,) bool}`, with `num_tracks`, `tracks` and `num_batches`.
    """
    return EvalLoader(
        source,
        batch_size=batch_size,
        chunk_samples=chunk_samples,
        n_chunks=n_chunks,
        shard_index=shard_index,
        shard_count=shard_count,
    )
