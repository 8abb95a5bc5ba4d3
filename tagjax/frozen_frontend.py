"""Training on a frozen front end: its outputs computed once per run, read back every epoch.

A transplanted front end used as a black box (`freeze_frontend=True`) maps the same audio to the
same output at every step, so running it at every step repeats the most expensive work of
training: on a 2-core CPU the published musicnn reads about 45 s of audio per second, the LSTM
and MLP after it many times more. With `config.frozen_crops_per_clip = n > 0`, `train` computes
the front end's output once for

- training: `n` crops of every training clip, at offsets drawn from the run's seed (uniform
  over the clip, as `tj.data.train_loader`'s random crops); epoch `e` reads crop `e mod n` of
  every clip, in a new seeded order, so `n` epochs see every crop once;
- validation: the chunks that `tj.data.eval_loader` cuts, exactly;

and trains the summary and head on them. The test split is still tagged from its audio, the way
`Tagger` tags a file. Fewer distinct crops than fresh random crops every epoch is the price: a
larger `n` buys back variety for one more front-end pass over the training split.

The outputs are stored in the run's work directory, `frontend_outputs/<split>.npy` (training
crops in float16, which halves the disk for a relative rounding of 2**-11 far below what the
head learns from; validation chunks in float32), written batch by batch beside
`<split>.json`, which records the settings and how many rows are done: a killed run continues
after the last finished batch, and a store made with other settings is made again.
"""

import dataclasses
import hashlib
import json
import os
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import jax
import numpy as np

from tagjax.data import schema

DIRECTORY = "frontend_outputs"


def training_crops(lengths: Sequence[int], crop_samples: int, crops_per_clip: int,
                   seed: int) -> np.ndarray:
    """`(clips * crops_per_clip, 2)` int64 rows `(clip, start)`: crop `c` of clip `i` is row
    `i * crops_per_clip + c`, its start uniform in `[0, length - crop_samples]` (0 for a clip
    shorter than the crop, which is zero-padded)."""
    rows = []
    for clip, length in enumerate(lengths):
        excess = max(int(length) - crop_samples, 0)
        starts = np.random.default_rng([seed, clip]).integers(0, excess + 1, crops_per_clip)
        rows.extend((clip, int(start)) for start in starts)
    return np.asarray(rows, np.int64).reshape(-1, 2)


def evaluation_chunks(lengths: Sequence[int], chunk_samples: int, n_chunks: int) -> np.ndarray:
    """`(clips * n_chunks, 2)` int64 rows `(clip, start)`: the chunks `tj.data.eval_loader`
    cuts, track by track."""
    from tagjax.chunking import evenly_spaced_starts

    rows = []
    for clip, length in enumerate(lengths):
        starts = evenly_spaced_starts(max(int(length), chunk_samples), chunk_samples, n_chunks)
        rows.extend((clip, int(start)) for start in starts)
    return np.asarray(rows, np.int64).reshape(-1, 2)


def read_crops(source: Sequence[dict[str, Any]], rows: np.ndarray,
               crop_samples: int) -> np.ndarray:
    """The audio of `rows` (`(n, 2)` of `(clip, start)`) as float32 `(n, crop_samples)`,
    zero-padded where a clip ends before its crop does."""
    crops = np.zeros((len(rows), crop_samples), np.int16)
    for k, (clip, start) in enumerate(rows):
        audio = np.asarray(source[int(clip)]["audio"])[start:start + crop_samples]
        crops[k, :len(audio)] = audio
    return schema.int16_to_audio(crops)


def _open_store(path: str, settings: dict, shape: tuple, dtype) -> tuple[np.memmap, int]:
    """The memory-mapped store at `path` and its rows already done (0 for a new store)."""
    progress_path = path[:-len(".npy")] + ".json"
    try:
        with open(progress_path) as f:
            progress = json.load(f)
        if progress.get("settings") == settings:
            store = np.lib.format.open_memmap(path, mode="r+")
            if store.shape == shape and store.dtype == np.dtype(dtype):
                return store, int(progress["rows_done"])
    except (OSError, ValueError, KeyError):
        pass  # no store, or an unreadable one: made again
    store = np.lib.format.open_memmap(path, mode="w+", dtype=dtype, shape=shape)
    _write_progress(progress_path, settings, 0)
    return store, 0


def _write_progress(path: str, settings: dict, rows_done: int) -> None:
    temporary = path + ".tmp"
    with open(temporary, "w") as f:
        json.dump({"settings": settings, "rows_done": rows_done}, f)
    os.replace(temporary, path)


def compute_outputs(frontend_fn: Callable[[np.ndarray], Any], source: Sequence[dict[str, Any]],
                    rows: np.ndarray, *, crop_samples: int, batch_size: int, path: str,
                    settings: dict, dtype=np.float32,
                    progress: Callable[[int], None] | None = None) -> np.ndarray:
    """The front end's output for every row, computed where `path` does not hold it yet.

    Args:
      frontend_fn: audio `(batch_size, crop_samples)` -> output `(batch_size, ...)` (jitted).
      source: the split's random-access data source.
      rows: `(n, 2)` `(clip, start)` from `training_crops` or `evaluation_chunks`.
      crop_samples: samples per crop.
      batch_size: crops per call of `frontend_fn` (the last batch is zero-padded).
      path: the `.npy` file of the store.
      settings: JSON-serialisable; a store made with other settings is made again.
      dtype: of the stored outputs.
      progress: called with the number of rows computed after each batch.

    Returns:
      The read-only memory map `(n, ...)`.

    Raises:
      FloatingPointError: an output does not fit `dtype` (non-finite after the cast).
    """
    settings = {**settings, "rows": hashlib.sha256(rows.tobytes()).hexdigest()}
    output = jax.eval_shape(frontend_fn, jax.ShapeDtypeStruct((batch_size, crop_samples),
                                                              np.float32))
    store, done = _open_store(path, settings, (len(rows), *output.shape[1:]), dtype)
    for start in range(done, len(rows), batch_size):
        batch_rows = rows[start:start + batch_size]
        audio = read_crops(source, batch_rows, crop_samples)
        if len(audio) < batch_size:
            audio = np.pad(audio, ((0, batch_size - len(audio)), (0, 0)))
        outputs = np.asarray(frontend_fn(audio))[:len(batch_rows)].astype(dtype)
        if not np.isfinite(outputs).all():
            raise FloatingPointError(
                f"the front end's output for rows {start}-{start + len(batch_rows) - 1} of "
                f"{path} is not finite in {np.dtype(dtype).name}")
        store[start:start + len(batch_rows)] = outputs
        store.flush()
        _write_progress(path[:-len(".npy")] + ".json", settings, start + len(batch_rows))
        if progress is not None:
            progress(len(batch_rows))
    del store
    return np.load(path, mmap_mode="r")


class TrainingBatches:
    """Batches of stored training crops: epoch `e` reads crop `e mod crops_per_clip` of every
    clip in a new seeded order, dropping the last partial batch (as `tj.data.train_loader`).

    An iterator of `{"frontend_output": (batch_size, ...) float32, "labels": (batch_size,
    num_tags) float32}` with `get_state()` (a JSON-serialisable dict) and `set_state(state)`.
    """

    def __init__(self, outputs: np.ndarray, labels: np.ndarray, *, crops_per_clip: int,
                 batch_size: int, seed: int):
        self.outputs, self.labels = outputs, np.asarray(labels, np.float32)
        self.crops_per_clip, self.batch_size, self.seed = crops_per_clip, batch_size, seed
        self.num_clips = len(self.labels)
        self.epoch, self.position = 0, 0

    def __iter__(self) -> Iterator[dict[str, np.ndarray]]:
        return self

    def __next__(self) -> dict[str, np.ndarray]:
        if self.position + self.batch_size > self.num_clips:
            self.epoch, self.position = self.epoch + 1, 0
        order = np.random.default_rng([self.seed, self.epoch]).permutation(self.num_clips)
        clips = np.sort(order[self.position:self.position + self.batch_size])
        self.position += self.batch_size
        rows = clips * self.crops_per_clip + self.epoch % self.crops_per_clip
        # Sorted rows read the memory map front to back; the batch's order does not matter.
        return {"frontend_output": np.asarray(self.outputs[rows], np.float32),
                "labels": self.labels[clips]}

    def get_state(self) -> dict:
        return {"epoch": self.epoch, "position": self.position}

    def set_state(self, state: dict) -> None:
        self.epoch, self.position = int(state["epoch"]), int(state["position"])


def evaluation_batches(outputs: np.ndarray, labels: np.ndarray, n_chunks: int,
                       batch_size: int) -> Iterator[dict[str, np.ndarray]]:
    """Stored evaluation chunks in batches shaped as `tj.data.eval_loader`'s, with
    `frontend_output` in place of `audio` (the last batch padded with invalid rows)."""
    num_tracks = len(labels)
    for start in range(0, len(outputs), batch_size):
        stop = min(start + batch_size, len(outputs))
        rows = np.arange(start, start + batch_size)
        valid = rows < stop
        track = np.where(valid, rows // n_chunks, num_tracks).astype(np.int32)
        frontend_output = np.zeros((batch_size, *outputs.shape[1:]), np.float32)
        frontend_output[:stop - start] = outputs[start:stop]
        yield {"frontend_output": frontend_output,
               "labels": np.where(valid[:, None], labels[np.minimum(track, num_tracks - 1)],
                                  0).astype(np.float32),
               "track": track, "valid": valid}


def clip_lengths_and_labels(source: Sequence[dict[str, Any]]) -> tuple[list[int], np.ndarray]:
    """Every clip's length in samples, and the labels `(clips, num_tags)`."""
    lengths, labels = [], []
    for i in range(len(source)):
        example = source[i]
        lengths.append(len(example["audio"]))
        labels.append(np.asarray(example["labels"], np.float32))
    return lengths, np.stack(labels)


@dataclasses.dataclass(frozen=True)
class StoredOutputs:
    """A run's stored front-end outputs: training crops and validation chunks.

    Attributes:
      train: `(clips * crops_per_clip, ...)` from `training_crops`.
      train_labels: `(clips, num_tags)`.
      valid: `(tracks * n_chunks, ...)` from `evaluation_chunks`.
      valid_labels: `(tracks, num_tags)`.
    """

    train: np.ndarray
    train_labels: np.ndarray
    crops_per_clip: int
    batch_size: int
    valid: np.ndarray
    valid_labels: np.ndarray
    n_chunks: int
    eval_batch_size: int

    def training_batches(self, seed: int) -> TrainingBatches:
        return TrainingBatches(self.train, self.train_labels, crops_per_clip=self.crops_per_clip,
                               batch_size=self.batch_size, seed=seed)

    def validation_batches(self) -> Iterator[dict[str, np.ndarray]]:
        return evaluation_batches(self.valid, self.valid_labels, self.n_chunks,
                                  self.eval_batch_size)


def parameters_digest(tree) -> str:
    """A SHA-256 of a pytree's arrays (which front end made a store)."""
    digest = hashlib.sha256()
    for leaf in jax.tree.leaves(tree):
        digest.update(np.ascontiguousarray(np.asarray(leaf)).tobytes())
    return digest.hexdigest()
