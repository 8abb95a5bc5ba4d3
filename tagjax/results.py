"""What tagging gives: a track's result or why it failed, and its formatting as a table, JSON
or CSV (`python -m tagjax.tag`'s outputs). NumPy only: the command line, the plot and indexes
read these without the model.
"""

import csv
import dataclasses
import io
import json
from collections.abc import Sequence

import numpy as np


@dataclasses.dataclass(frozen=True)
class TrackResult:
    """The tags and embedding of one track.

    Attributes:
      index: the track's position in the input.
      source: the file's path, or None for an array.
      duration: seconds of audio.
      probabilities: `(num_tags,)` tag probabilities, the weighted mean over the chunks.
      embedding: `(dim,)` the model's penultimate activation, the weighted mean over the chunks.
      chunk_probabilities: `(n_chunks, num_tags)` each chunk's tag probabilities.
      chunk_weights: `(n_chunks,)` the fraction of each chunk that is real audio.
      chunk_start_seconds: `(n_chunks,)` each chunk's start in seconds (the start of the
        stretch of track it describes).
    """

    index: int
    source: str | None
    duration: float
    probabilities: np.ndarray
    embedding: np.ndarray
    chunk_probabilities: np.ndarray
    chunk_weights: np.ndarray
    chunk_start_seconds: np.ndarray


@dataclasses.dataclass(frozen=True)
class TrackFailure:
    """A track that could not be tagged, and why.

    Attributes:
      index: the track's position in the input.
      source: the file's path.
      reason: what went wrong, in words.
    """

    index: int
    source: str
    reason: str

    @property
    def message(self) -> str:
        return f"{self.source}: {self.reason}"


def top_tags(probabilities: np.ndarray, tags: Sequence[str], k: int) -> list[tuple[str, float]]:
    """The `k` most probable tags, `[(tag, probability), ...]`, most probable first (ties in tag
    order)."""
    order = np.argsort(-np.asarray(probabilities), kind="stable")[:k]
    return [(tags[i], float(probabilities[i])) for i in order]


# ----------------------------------------------------------------------------------------------
# Output


def _duration(seconds: float) -> str:
    minutes, seconds = divmod(round(seconds), 60)
    return f"{minutes}:{seconds:02d}"


def chunk_times(result: TrackResult, span_seconds: float) -> tuple[np.ndarray, np.ndarray]:
    """`(starts, ends)` in seconds of the stretch of track each chunk describes (the last one
    ends with the track)."""
    starts = np.asarray(result.chunk_start_seconds, np.float64)
    return starts, np.minimum(starts + span_seconds, result.duration)


def format_table(results: Sequence[TrackResult], tags: Sequence[str], top: int, *,
                 taggram: bool = False, span_seconds: float = 0.0) -> str:
    """One line per track: its path, duration and top tags with their probabilities; with
    `taggram`, then one line per chunk with its time and top tags."""
    names = [r.source if r.source is not None else f"<array {r.index}>" for r in results]
    width = max([len("track"), *map(len, names)])
    lines = [f"{'track':<{width}}  {'length':>6}  top tags"]
    for name, result in zip(names, results, strict=True):
        best = "  ".join(f"{tag} {p:.2f}" for tag, p in top_tags(result.probabilities, tags, top))
        lines.append(f"{name:<{width}}  {_duration(result.duration):>6}  {best}")
        if taggram:
            for start, end, chunk in zip(*chunk_times(result, span_seconds),
                                         result.chunk_probabilities, strict=True):
                best = "  ".join(f"{tag} {p:.2f}" for tag, p in top_tags(chunk, tags, top))
                lines.append(f"  {_duration(start):>5}-{_duration(end):<5}  {best}")
    return "\n".join(lines)


def format_json(results: Sequence[TrackResult], tags: Sequence[str], top: int, *,
                taggram: bool = False, span_seconds: float = 0.0) -> str:
    """A JSON list: per track its path, duration in seconds and top tags (most probable first);
    with `taggram`, also every tag's probability in every chunk: `{"tags": [...], "start":
    [...], "end": [...], "probabilities": [[one per tag], one per chunk]}`."""
    tracks = []
    for r in results:
        track = {"path": r.source, "duration": round(r.duration, 3),
                 "tags": [{"tag": tag, "probability": round(p, 6)}
                          for tag, p in top_tags(r.probabilities, tags, top)]}
        if taggram:
            starts, ends = chunk_times(r, span_seconds)
            track["taggram"] = {
                "tags": list(tags), "start": [round(float(t), 3) for t in starts],
                "end": [round(float(t), 3) for t in ends],
                "probabilities": np.round(r.chunk_probabilities.astype(np.float64), 6).tolist()}
        tracks.append(track)
    return json.dumps(tracks, indent=2)


def format_csv(results: Sequence[TrackResult], tags: Sequence[str], top: int, *,
               taggram: bool = False, span_seconds: float = 0.0) -> str:
    """CSV with a header: one row per track and tag (path, duration, rank, tag, probability);
    with `taggram`, one row per chunk instead: path, start, end, then one column per tag."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    if taggram:
        writer.writerow(["path", "start", "end", *tags])
        for r in results:
            for start, end, chunk in zip(*chunk_times(r, span_seconds), r.chunk_probabilities,
                                         strict=True):
                writer.writerow([r.source, f"{start:.3f}", f"{end:.3f}",
                                 *(f"{p:.6f}" for p in chunk)])
        return out.getvalue().rstrip("\n")
    writer.writerow(["path", "duration", "rank", "tag", "probability"])
    for r in results:
        for rank, (tag, p) in enumerate(top_tags(r.probabilities, tags, top), start=1):
            writer.writerow([r.source, f"{r.duration:.3f}", rank, tag, f"{p:.6f}"])
    return out.getvalue().rstrip("\n")
