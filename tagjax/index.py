"""An index of a music collection: every track's embedding and tag probabilities, in one file.

    python -m tagjax.index PATH... --out INDEX.npz [--model NAME | --workdir RUN]
        [--batch-size N] [--hop S]

A new index is built with the pretrained model `musicnn-mtt` unless `--model` or `--workdir`
names another; an existing index is extended with its own model.

The index is a NumPy `.npz` archive readable with `np.load(path, allow_pickle=False)`:

    paths          (N,)   str      absolute paths of the tracks
    sizes          (N,)   int64    file sizes in bytes when embedded
    mtimes_ns      (N,)   int64    modification times (ns) when embedded
    durations      (N,)   float32  seconds of audio
    embeddings     (N, D) float32  the model's penultimate activation, averaged over chunks
    probabilities  (N, L) float32  tag probabilities
    tags           (L,)   str      tag names
    model_id       ()     str      fingerprint of the model (config and weights)
    workdir        ()     str      the training run's work directory ("" for a pretrained model)
    model_name     ()     str      the pretrained model's name ("" for a training run)
    hop_seconds    ()     float64  seconds between chunk starts
    format_version ()     int64

Running the command again on an existing index extends it: files already indexed with the same
path, size and modification time are skipped, changed files are embedded again in place, new
files are appended. An index only grows with the model that built it: another model (or the
same run after its best checkpoint changed) is refused, since embeddings of different models
are not comparable.
"""

import argparse
import contextlib
import dataclasses
import os
import pickle
import sys
import tempfile
import zipfile
import zlib
from collections.abc import Iterable, Sequence

import numpy as np

from tagjax import tag as tagging

FORMAT_VERSION = 2  # 2 added model_name; version 1 indexes (runs only) still load
_FIELDS = ("paths", "sizes", "mtimes_ns", "durations", "embeddings", "probabilities", "tags",
           "model_id", "workdir", "hop_seconds", "model_name", "format_version")


class IndexMismatchError(ValueError):
    """An index and a tagger that do not belong together (another model or chunk hop)."""


@dataclasses.dataclass(frozen=True)
class TrackIndex:
    """Embeddings and tag probabilities of `N` tracks, with what identifies the model.

    Attributes:
      paths: `(N,)` str, absolute paths.
      sizes: `(N,)` int64, file sizes in bytes when the tracks were embedded.
      mtimes_ns: `(N,)` int64, modification times in nanoseconds then.
      durations: `(N,)` float32, seconds.
      embeddings: `(N, D)` float32.
      probabilities: `(N, L)` float32.
      tags: `(L,)` str, the tag names.
      model_id: the model's fingerprint (`tj.tag.model_fingerprint`).
      workdir: the training run's work directory ("" for a pretrained model).
      hop_seconds: seconds between chunk starts used for every track.
      model_name: the pretrained model's name ("" for a training run).
    """

    paths: np.ndarray
    sizes: np.ndarray
    mtimes_ns: np.ndarray
    durations: np.ndarray
    embeddings: np.ndarray
    probabilities: np.ndarray
    tags: np.ndarray
    model_id: str
    workdir: str
    hop_seconds: float
    model_name: str = ""

    def __len__(self) -> int:
        return len(self.paths)

    @classmethod
    def empty(cls, tagger: tagging.Tagger) -> "TrackIndex":
        """An index with no tracks, for `tagger`'s model."""
        return cls(paths=np.zeros(0, "U1"), sizes=np.zeros(0, np.int64),
                   mtimes_ns=np.zeros(0, np.int64), durations=np.zeros(0, np.float32),
                   embeddings=np.zeros((0, tagger.embedding_dim), np.float32),
                   probabilities=np.zeros((0, len(tagger.tags)), np.float32),
                   tags=np.asarray(tagger.tags, str), model_id=tagger.model_id or "",
                   workdir=tagger.workdir or "", hop_seconds=tagger.hop_seconds,
                   model_name=tagger.model_name or "")

    @property
    def model_description(self) -> str:
        """The index's model in words: a pretrained model's name or a run's directory."""
        if self.model_name:
            return f"pretrained model {self.model_name} ({self.model_id})"
        return f"model {self.model_id} (work directory {self.workdir})"

    def position(self, path: str | os.PathLike) -> int | None:
        """The row of `path` (made absolute), or None if it is not in the index."""
        rows = np.flatnonzero(self.paths == os.path.abspath(path))
        return int(rows[0]) if len(rows) else None

    def is_current(self, row: int) -> bool:
        """Whether the file of `row` still has the size and modification time it had when it
        was embedded."""
        try:
            size, mtime_ns = file_stamp(str(self.paths[row]))
        except OSError:
            return False
        return size == self.sizes[row] and mtime_ns == self.mtimes_ns[row]

    def check_compatible(self, tagger: tagging.Tagger) -> None:
        """Raises `IndexMismatchError` unless `tagger` is the model and hop of this index."""
        if tagger.model_id != self.model_id:
            theirs = (f"pretrained model {tagger.model_name} ({tagger.model_id})"
                      if tagger.model_name else
                      f"model {tagger.model_id} (work directory {tagger.workdir})")
            raise IndexMismatchError(
                f"the index was built with {self.model_description}, not {theirs}: embeddings "
                f"of different models cannot be compared; build a new index for this model")
        if not np.isclose(tagger.hop_seconds, self.hop_seconds):
            raise IndexMismatchError(
                f"the index was built with chunks every {self.hop_seconds} s, not "
                f"{tagger.hop_seconds} s: pass --hop {self.hop_seconds} or build a new index")

    def save(self, path: str | os.PathLike) -> None:
        """Writes the index to `path` atomically (a whole new file replaces the old one).

        A new file gets the permissions of any file the user creates (`0o666` less the umask);
        a replaced one keeps its own.
        """
        path = os.fspath(path)
        arrays = {field: getattr(self, field) for field in _FIELDS[:-1]}
        arrays["paths"] = np.asarray(self.paths, str)
        arrays["tags"] = np.asarray(self.tags, str)
        arrays["format_version"] = np.int64(FORMAT_VERSION)
        directory = os.path.dirname(os.path.abspath(path))
        try:
            mode = os.stat(path).st_mode & 0o7777
        except FileNotFoundError:
            mode = 0o666 & ~_umask()
        # The temporary file is created 0o600; it takes its final mode before it is renamed.
        descriptor, temporary = tempfile.mkstemp(dir=directory, suffix=".npz.tmp")
        try:
            with os.fdopen(descriptor, "wb") as f:
                np.savez(f, **arrays)
                f.flush()
                os.fsync(f.fileno())
            os.chmod(temporary, mode)
            os.replace(temporary, path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temporary)
            raise

    @classmethod
    def load(cls, path: str | os.PathLike) -> "TrackIndex":
        """Reads an index written by `save`.

        Raises:
          FileNotFoundError: no such file.
          ValueError: the file is not a tagjax index (the message names it and what is wrong).
        """
        path = os.fspath(path)
        try:
            archive = np.load(path, allow_pickle=False)
        except FileNotFoundError:
            raise
        except (OSError, ValueError, EOFError, zipfile.BadZipFile, pickle.UnpicklingError) as error:
            raise ValueError(f"{path}: not a readable tagjax index ({error})") from error
        if not isinstance(archive, np.lib.npyio.NpzFile):
            raise ValueError(f"{path}: not a tagjax index (a single array, not an .npz archive)")
        with archive:
            arrays = {}
            for field in _FIELDS:
                if field not in archive.files:
                    continue
                try:
                    arrays[field] = archive[field]
                except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error) as error:
                    raise ValueError(f"{path}: a damaged tagjax index: its {field} array cannot "
                                     f"be read ({error})") from error
        # A file without a version lacks the other fields too, and is refused below.
        version = arrays.get("format_version", np.int64(FORMAT_VERSION))
        if version.shape != () or version.dtype.kind not in "iu":
            raise ValueError(f"{path}: not a tagjax index (its format_version is "
                             f"{_describe(version)}, not an integer)")
        version = int(version)
        if version not in (1, FORMAT_VERSION):
            raise ValueError(f"{path}: index format version {version} is not one this "
                             f"tagjax reads (1 or {FORMAT_VERSION})")
        fields = [f for f in _FIELDS if version > 1 or f != "model_name"]
        missing = [field for field in fields if field not in arrays]
        if missing:
            raise ValueError(f"{path}: not a tagjax index (it lacks {', '.join(missing)})")
        for field in fields:
            ndim, kinds = _LAYOUT[field]
            if arrays[field].ndim != ndim or arrays[field].dtype.kind not in kinds:
                raise ValueError(f"{path}: not a tagjax index (its {field} is "
                                 f"{_describe(arrays[field])})")
        index = cls(**{field: arrays[field] for field in ("paths", "sizes", "mtimes_ns",
                                                          "durations", "embeddings",
                                                          "probabilities", "tags")},
                    model_id=str(arrays["model_id"]), workdir=str(arrays["workdir"]),
                    hop_seconds=float(arrays["hop_seconds"]),
                    model_name=str(arrays.get("model_name", "")))
        n = len(index.paths)
        if (index.probabilities.shape != (n, len(index.tags))
                or any(len(a) != n for a in (index.sizes, index.mtimes_ns, index.durations,
                                             index.embeddings))):
            raise ValueError(f"{path}: the index's arrays disagree in their number of tracks")
        if not (np.isfinite(index.hop_seconds) and index.hop_seconds > 0):
            raise ValueError(f"{path}: not a tagjax index (its hop_seconds is "
                             f"{index.hop_seconds})")
        return index

    def non_finite_rows(self) -> np.ndarray:
        """Rows whose embedding or tag probabilities hold NaN or infinite values, `(n,)` int64."""
        finite = (np.isfinite(self.embeddings).all(axis=1)
                  & np.isfinite(self.probabilities).all(axis=1))
        return np.flatnonzero(~finite)

    def updated(self, rows: Sequence[dict], removed: Iterable[str] = ()) -> "TrackIndex":
        """A new index with `rows` (dicts of one track's fields) replacing the tracks with the
        same paths in place, and the others appended in order, less the tracks of `removed`
        (paths)."""
        removed = set(removed)
        keep = np.asarray([str(path) not in removed for path in self.paths], bool)
        columns = {field: list(getattr(self, field)[keep]) for field in _FIELDS[:6]}
        where = {str(path): row for row, path in enumerate(columns["paths"])}
        for track in rows:
            row = where.get(track["paths"])
            if row is None:
                where[track["paths"]] = len(columns["paths"])
                for field in columns:
                    columns[field].append(track[field])
            else:
                for field in columns:
                    columns[field][row] = track[field]
        dtypes = {"sizes": np.int64, "mtimes_ns": np.int64, "durations": np.float32,
                  "embeddings": np.float32, "probabilities": np.float32}
        arrays = {"paths": np.asarray(columns["paths"], str).reshape(-1)}
        for field, dtype in dtypes.items():
            like = getattr(self, field)
            arrays[field] = np.asarray(columns[field], dtype).reshape(-1, *like.shape[1:])
        return dataclasses.replace(self, **arrays)


# Each field's number of axes and dtype kinds (`np.dtype.kind`).
_LAYOUT = {"paths": (1, "U"), "sizes": (1, "iu"), "mtimes_ns": (1, "iu"),
           "durations": (1, "fiu"), "embeddings": (2, "f"), "probabilities": (2, "f"),
           "tags": (1, "U"), "model_id": (0, "U"), "workdir": (0, "U"),
           "hop_seconds": (0, "fiu"), "model_name": (0, "U"), "format_version": (0, "iu")}


def _describe(array: np.ndarray) -> str:
    if array.ndim == 0:
        return f"{array.item()!r} ({array.dtype})"
    return f"an array of shape {array.shape} and dtype {array.dtype}"


def _umask() -> int:
    """The process's umask (reading it means setting it: set it straight back)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def file_stamp(path: str) -> tuple[int, int]:
    """`(size in bytes, modification time in ns)` of a file."""
    stat = os.stat(path)
    return stat.st_size, stat.st_mtime_ns


def build_index(tagger: tagging.Tagger, paths: Iterable[str | os.PathLike],
                index: TrackIndex | None = None, *, progress: bool | None = False,
                on_failure=None) -> tuple[TrackIndex, dict]:
    """Embeds the files of `paths` that `index` lacks or holds in an older version.

    Args:
      tagger: the model; it must be the index's model (`TrackIndex.check_compatible`).
      paths: audio files (made absolute); duplicates are embedded once.
      index: the index to extend, or None to start a new one.
      progress: show a progress bar (None: only on a terminal).
      on_failure: called with each `TrackFailure` as it happens.

    Returns:
      The new index and counts `{"added", "updated", "unchanged", "failed"}`. A track whose
      embedding or tag probabilities come out NaN or infinite is a failure, left out of the
      index (with its old entry, if any); an old entry that holds such values is embedded
      again.

    Raises:
      IndexMismatchError: `tagger` is not the index's model or hop.
    """
    index = TrackIndex.empty(tagger) if index is None else index
    index.check_compatible(tagger)
    known = {str(path): row for row, path in enumerate(index.paths)}
    non_finite = set(index.non_finite_rows().tolist())
    todo, stamps, counts = [], {}, {"added": 0, "updated": 0, "unchanged": 0, "failed": 0}
    for path in dict.fromkeys(os.path.abspath(p) for p in paths):
        row = known.get(path)
        if row is not None and row not in non_finite and index.is_current(row):
            counts["unchanged"] += 1
            continue
        try:
            # Stamped before decoding: a file that changes meanwhile is embedded again next time.
            stamps[path] = file_stamp(path)
        except OSError:
            stamps[path] = (-1, -1)
        todo.append(path)
    rows, removed = [], []
    for result in tagger.predict(todo, progress=progress):
        if not isinstance(result, tagging.TrackFailure) and not (
                np.isfinite(result.embedding).all() and np.isfinite(result.probabilities).all()):
            result = tagging.TrackFailure(result.index, result.source,
                                          "the model's embedding or tag probabilities are NaN "
                                          "or infinite")
            removed.append(result.source)
        if isinstance(result, tagging.TrackFailure):
            counts["failed"] += 1
            if on_failure is not None:
                on_failure(result)
            continue
        counts["updated" if result.source in known else "added"] += 1
        size, mtime_ns = stamps[result.source]
        rows.append({"paths": result.source, "sizes": size, "mtimes_ns": mtime_ns,
                     "durations": result.duration, "embeddings": result.embedding,
                     "probabilities": result.probabilities})
    return index.updated(rows, removed), counts


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tagjax.index",
        description="Embed audio files into an index for `python -m tagjax.similar`. An "
                    "existing index is extended: unchanged files are skipped. Files that cannot "
                    "be decoded and folders that cannot be read are named on stderr and "
                    "skipped; the exit status is 1 if any was.")
    parser.add_argument("paths", nargs="+", metavar="PATH",
                        help="audio files, or directories searched recursively for "
                             + ", ".join(tagging.AUDIO_EXTENSIONS))
    parser.add_argument("--out", required=True, metavar="INDEX",
                        help="the index file (.npz) to create or extend")
    tagging.add_model_arguments(parser)
    args = parser.parse_args(argv)

    index = None
    if os.path.exists(args.out):
        try:
            index = TrackIndex.load(args.out)
        except ValueError as error:
            raise SystemExit(f"error: {error}") from None
        if args.hop is None:
            args.hop = index.hop_seconds
    # Before any embedding: a missing or read-only folder would otherwise lose all that work.
    tagging.check_writable_folder(args.out, "--out")
    workdir, model_name = args.workdir, args.model
    if not (workdir or model_name) and index is not None:
        # Extending: the index's own model (another one would be refused anyway).
        workdir, model_name = index.workdir or None, index.model_name or None
    files, skipped_folders = tagging.command_line_files(args.paths)
    if not files:
        return 1
    tagger = tagging.load_tagger(args, workdir=workdir, model_name=model_name)
    try:
        index, counts = build_index(tagger, files, index, progress=None,
                                    on_failure=tagging.report_failure)
    except IndexMismatchError as error:
        raise SystemExit(f"error: {args.out}: {error}") from None
    _save_or_keep(index, args.out)
    print(f"{args.out}: {len(index)} tracks ({counts['added']} added, {counts['updated']} "
          f"updated, {counts['unchanged']} unchanged, {counts['failed']} failed)")
    if skipped_folders:
        print(f"{skipped_folders} folder(s) could not be searched", file=sys.stderr)
    return 1 if counts["failed"] or skipped_folders else 0


def _save_or_keep(index: TrackIndex, out: str) -> None:
    """Saves the index to `out`; if that fails (the folder went away, the disk filled up), to a
    new file in the temporary folder, and exits naming it: finished embeddings are never lost."""
    try:
        index.save(out)
        return
    except OSError as error:
        reason = tagging.os_error_reason(error)
    stem = os.path.splitext(os.path.basename(out))[0] or "index"
    descriptor, kept = tempfile.mkstemp(prefix=f"{stem}-", suffix=".npz")
    os.close(descriptor)
    index.save(kept)
    raise SystemExit(f"error: cannot write {out} ({reason}); the index of {len(index)} tracks "
                     f"is saved in {kept} instead: move it where you want it")


if __name__ == "__main__":
    sys.exit(main())
