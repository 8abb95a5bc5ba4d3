"""Cutting tracks into the model's fixed-length chunks, and averaging chunk predictions back.

Three different things used to be called "chunk starts"; here each has its own name:

- `tile_starts`: where the chunks that tile a whole track at a hop start, in samples (how
  `tj.Tagger` and evaluation read a track: `chunk_track`, `stream_chunks`);
- `evenly_spaced_starts`: a fixed number of chunks spread from a track's start to its end, in
  samples (`tj.data.eval_loader`'s validation chunks, after Won et al.);
- `TrackResult.chunk_start_seconds` (`tagjax.results`): the tiles' starts of a tagged track in
  seconds.

NumPy only: no JAX, no data sets.
"""

import math
from collections.abc import Iterable, Iterator

import numpy as np


def tile_starts(num_samples: int, span_samples: int, hop_samples: int) -> np.ndarray:
    """Starts of the chunks that tile a track, `(n_chunks,)` int64.

    Chunk `k` starts at `k * hop_samples`; there are as many as it takes for the last one to
    reach the end of the track, `1 + ceil((num_samples - span_samples) / hop_samples)`, and
    one for a track no longer than a chunk.
    """
    if span_samples <= 0 or hop_samples <= 0:
        raise ValueError(f"span_samples and hop_samples must be > 0, got {span_samples} and "
                         f"{hop_samples}")
    n_chunks = 1 + math.ceil(max(num_samples - span_samples, 0) / hop_samples)
    return np.arange(n_chunks, dtype=np.int64) * hop_samples


def evenly_spaced_starts(num_samples: int, chunk_samples: int, n_chunks: int) -> np.ndarray:
    """`(n_chunks,)` int64 starts of evenly spaced chunks, first at 0 and last at the end.

    Chunk `k` starts at `floor(k * (num_samples - chunk_samples) / (n_chunks - 1))`; one chunk
    starts at 0. Requires `num_samples >= chunk_samples`.
    """
    if n_chunks == 1:
        return np.zeros(1, np.int64)
    return (np.arange(n_chunks, dtype=np.int64) * (num_samples - chunk_samples)
            // (n_chunks - 1))


def chunk_track(samples: np.ndarray, chunk_samples: int, hop_samples: int,
                lead_samples: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Cuts a track into chunks, zero-padding the end, with each chunk's share of real audio.

    A model may read `lead_samples` of context before the stretch of track it describes (an
    uncentred STFT reads `n_fft // 2` samples before its first frame's centre): chunk `k` then
    holds the track from `k * hop_samples - lead_samples`, with zeros before the track's start,
    and describes the `chunk_samples - lead_samples` samples from `k * hop_samples`.

    Args:
      samples: `(num_samples,)` mono audio.
      chunk_samples: samples per chunk, context included.
      hop_samples: samples between the starts of consecutive chunks (`chunk_samples -
        lead_samples` for chunks that tile the track without overlap).
      lead_samples: samples of context before each chunk's stretch (0: none).

    Returns:
      `chunks (n_chunks, chunk_samples)` float32 (a read-only view of the padded track) and
      `weights (n_chunks,)` float32, the fraction of each chunk's stretch that is real audio.
    """
    if not 0 <= lead_samples < chunk_samples:
        raise ValueError(f"lead_samples must be in [0, chunk_samples), got {lead_samples}")
    samples = np.asarray(samples, np.float32)
    span = chunk_samples - lead_samples
    starts = tile_starts(len(samples), span, hop_samples)
    real = np.clip(len(samples) - starts, 0, span)
    padding = int(starts[-1]) + span - len(samples)
    samples = np.pad(samples, (lead_samples, max(padding, 0)))
    chunks = np.lib.stride_tricks.sliding_window_view(samples, chunk_samples)[starts]
    return chunks, (real / span).astype(np.float32)


def stream_chunks(blocks: Iterable[np.ndarray], chunk_samples: int, hop_samples: int,
                  lead_samples: int = 0) -> Iterator[tuple[np.ndarray, np.float32]]:
    """`chunk_track` over a track that arrives in blocks, one chunk at a time.

    Holds at most a chunk and a block of the track: a chunk is yielded as soon as the track
    covers it, and the chunks that reach past its end once the blocks run out. The chunks and
    weights are `chunk_track`'s on the blocks joined, value for value.

    Args:
      blocks: the track's `(n,)` pieces, in order (empty ones allowed).
      chunk_samples, hop_samples, lead_samples: as in `chunk_track`.

    Yields:
      `(chunk (chunk_samples,) float32, weight float32)`, each chunk a new array.
    """
    if not 0 <= lead_samples < chunk_samples:
        raise ValueError(f"lead_samples must be in [0, chunk_samples), got {lead_samples}")
    if hop_samples <= 0:
        raise ValueError(f"hop_samples must be > 0, got {hop_samples}")
    span = chunk_samples - lead_samples
    # `buffer` holds the track from position `buffer_start` on (negative: the zeros of the lead);
    # the next chunk describes the track from `start` and reads it from `start - lead_samples`.
    buffer, buffer_start = np.zeros(lead_samples, np.float32), -lead_samples
    start, n_chunks, num_samples = 0, 0, 0
    for block in blocks:
        block = np.asarray(block, np.float32)
        num_samples += len(block)
        buffer = np.concatenate([buffer, block])
        while buffer_start + len(buffer) >= start + span:
            first = start - lead_samples - buffer_start
            yield buffer[first:first + chunk_samples].copy(), np.float32(1.0)
            start, n_chunks = start + hop_samples, n_chunks + 1
        unread = min(start - lead_samples - buffer_start, len(buffer))  # before the next chunk
        buffer, buffer_start = buffer[unread:], buffer_start + unread
    # The chunks that reach past the end: as many as `tile_starts` counts, zero-padded.
    while n_chunks == 0 or start - hop_samples + span < num_samples:
        first = start - lead_samples - buffer_start
        piece = buffer[first:first + chunk_samples]
        weight = np.float32(min(max(num_samples - start, 0), span) / span)
        yield np.pad(piece, (0, chunk_samples - len(piece))), weight
        start, n_chunks = start + hop_samples, n_chunks + 1


def weighted_mean(values: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """`sum_k w_k v_k / sum_k w_k` over the first axis: `(n, ...)` and `(n,)` -> `(...)`, summed
    in float64 and returned as float32. How a track's chunk predictions become the track's."""
    weights = np.asarray(weights, np.float64)
    mean = np.tensordot(weights, np.asarray(values, np.float64), axes=1) / weights.sum()
    return mean.astype(np.float32)
