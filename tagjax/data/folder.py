"""Your own folder of audio files and a CSV of their tags, as the TFDS data set `folder`.

The CSV (default `tags.csv` in the folder) has a header row and the columns:
- `path`: the file, relative to the folder (an absolute path must lie inside it);
- `tags`: the file's tags separated by `;` (may be empty);
- `split` (optional): the split the file belongs to (e.g. `train`, `valid`, `test`); without
  this column every file is in the split `train`.

    path,tags
    rock/song1.mp3,rock;guitar;male vocal
    jazz/take2.flac,jazz;piano

The tag vocabulary is the sorted union of the tags in the CSV, or the `tags` given to the
builder (a tag in the CSV that is not in that list is then an error). Every file is decoded with
`load_audio`, resampled to 16 kHz mono and stored as int16 (see `tagjax.data.schema`); a path that
resolves outside the folder (`..`, an absolute path elsewhere, a symlink out) is rejected with an
error naming its row; a file that cannot be decoded is reported (logged, and listed under
`info.metadata["skipped"]`) and left out.

Each folder gets its own builder config, named after the folder and a hash of its resolved
path, the CSV's contents, the vocabulary and the size and modification time of every listed
file, so two folders (or one folder after an edit) never share a cache entry:

    builder = tj.data.get_builder("folder", directory="~/music", data_dir="/tmp/tfds")
    source, tags = tj.data.get_source("folder", "train", directory="~/music")
"""

import csv
import dataclasses
import hashlib
import logging
import os
import re
from pathlib import Path

import numpy as np
import tensorflow_datasets as tfds

from tagjax.data import decode_pool, schema

DEFAULT_CSV_NAME = "tags.csv"
DEFAULT_SPLIT = "train"
_TAG_SEPARATOR = ";"
_SPLIT_NAME = re.compile(r"^[A-Za-z0-9_-]+$")

logger = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class FolderRow:
    """One row of the folder's CSV.

    Attributes:
      path: the file, relative to the folder, with `/` separators (the example's `id`).
      tags: the file's tags.
      split: the split the file belongs to.
    """

    path: str
    tags: tuple[str, ...]
    split: str


def read_tag_csv(directory: str | os.PathLike, csv_path: str | os.PathLike) -> list[FolderRow]:
    """Reads and checks the folder's CSV.

    Args:
      directory: the folder that holds the audio files.
      csv_path: the CSV (header `path,tags` and optionally `split`).

    Returns:
      The rows, in the CSV's order.

    Raises:
      ValueError: the CSV lacks a column, a row has no path, a path resolves outside the
        folder, a path is listed twice, or a split name is not a word; the message names the
        CSV and the row.
      FileNotFoundError: the CSV does not exist.
    """
    root = Path(directory).expanduser().absolute()
    csv_path = Path(csv_path).expanduser()
    if not csv_path.is_file():
        raise FileNotFoundError(f"the folder's tag CSV {str(csv_path)!r} does not exist")
    resolved_root = root.resolve()
    rows, first_line = [], {}
    with open(csv_path, newline="", encoding="utf-8-sig") as file:
        reader = csv.DictReader(file)
        header = [name.strip() for name in reader.fieldnames or []]
        missing = {"path", "tags"} - set(header)
        if missing:
            raise ValueError(
                f"{csv_path}: the header must name the columns 'path' and 'tags' (and optionally "
                f"'split'); it lacks {sorted(missing)} (header: {header})"
            )
        reader.fieldnames = header
        for record in reader:
            line = reader.line_num
            where = f"{csv_path}, line {line}"
            path = (record["path"] or "").strip()
            if not path:
                raise ValueError(f"{where}: the row has no path")
            relative = _relative_path_inside(root, resolved_root, path, where)
            if relative in first_line:
                raise ValueError(
                    f"{where}: {relative!r} is listed twice (first on line {first_line[relative]})"
                )
            first_line[relative] = line
            split = (record.get("split") or "").strip() or DEFAULT_SPLIT
            if not _SPLIT_NAME.match(split):
                raise ValueError(
                    f"{where}: split name {split!r} must be letters, digits, '_' or '-'"
                )
            tags = tuple(
                dict.fromkeys(
                    tag.strip()
                    for tag in (record["tags"] or "").split(_TAG_SEPARATOR)
                    if tag.strip()
                )
            )
            rows.append(FolderRow(relative, tags, split))
    if not rows:
        raise ValueError(f"{csv_path}: the CSV lists no files")
    return rows


def _relative_path_inside(root: Path, resolved_root: Path, path: str, where: str) -> str:
    """The row's path relative to the folder; raises if it resolves (symlinks too) outside it."""
    candidate = Path(os.path.normpath(root / Path(path).expanduser()))
    resolved = candidate.resolve()
    if not (candidate.is_relative_to(root) and resolved.is_relative_to(resolved_root)):
        raise ValueError(
            f"{where}: path {path!r} resolves to {str(resolved)!r}, outside the folder "
            f"{str(resolved_root)!r}; only files inside the folder can be listed"
        )
    return candidate.relative_to(root).as_posix()


def tag_vocabulary(rows: list[FolderRow], tags: list[str] | None = None) -> list[str]:
    """The data set's tags: `tags` if given (checked against the rows), else the sorted union.

    Raises:
      ValueError: `tags` repeats a tag, or a row has a tag that is not in `tags`.
    """
    used = sorted({tag for row in rows for tag in row.tags})
    if tags is None:
        return used
    tags = [str(tag) for tag in tags]
    if len(set(tags)) != len(tags):
        raise ValueError(f"the tag list repeats a tag: {tags}")
    unknown = sorted(set(used) - set(tags))
    if unknown:
        row = next(row for row in rows if set(row.tags) & set(unknown))
        raise ValueError(
            f"the CSV uses tags that are not in the given tag list: {unknown} "
            f"(first in the row for {row.path!r})"
        )
    return tags


@dataclasses.dataclass(eq=False)
class FolderConfig(tfds.core.BuilderConfig):
    """The folder, its CSV and its tag vocabulary; built by `Folder` from its arguments."""

    directory: str = ""
    csv_path: str = ""
    vocabulary: tuple[str, ...] = ()


def folder_config(
    directory: str | os.PathLike,
    csv_path: str | os.PathLike | None = None,
    tags: list[str] | None = None,
) -> FolderConfig:
    """The builder config of a folder, named after the folder and a hash of what it holds.

    Raises:
      NotADirectoryError: `directory` is not a directory.
      ValueError, FileNotFoundError: see `read_tag_csv` and `tag_vocabulary`.
    """
    root = Path(directory).expanduser().absolute()
    if not root.is_dir():
        raise NotADirectoryError(f"the audio folder {str(directory)!r} is not a directory")
    csv_path = root / DEFAULT_CSV_NAME if csv_path is None else Path(csv_path).expanduser()
    rows = read_tag_csv(root, csv_path)
    vocabulary = tag_vocabulary(rows, tags)
    digest = hashlib.sha256()
    digest.update(str(root.resolve()).encode())
    digest.update(csv_path.read_bytes())
    digest.update("\n".join(vocabulary).encode())
    for row in rows:
        try:
            stat = (root / row.path).stat()
            digest.update(f"{row.path}:{stat.st_size}:{stat.st_mtime_ns}".encode())
        except OSError:
            digest.update(f"{row.path}:missing".encode())
    slug = re.sub(r"[^\w]+", "_", root.resolve().name).strip("_") or "folder"
    return FolderConfig(
        name=f"{slug}-{digest.hexdigest()[:16]}",
        description=f"audio files of {root.resolve()} tagged by {csv_path}",
        directory=str(root),
        csv_path=str(csv_path.absolute()),
        vocabulary=tuple(vocabulary),
    )


class Folder(decode_pool.PooledDecoding, tfds.core.GeneratorBasedBuilder):
    """Your own folder of audio files with a CSV of tags (see the module docstring).

    Args:
      directory: the folder that holds the audio files (required).
      csv_path: the CSV; defaults to `tags.csv` in the folder.
      tags: the tag vocabulary, in order; defaults to the sorted union of the CSV's tags.
      decode_workers: processes that decode the files; `None` uses every core, 0 none.
      **kwargs: passed to `tfds.core.GeneratorBasedBuilder` (`data_dir`, `file_format`, ...).
    """

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "First release."}  # noqa: RUF012 (TFDS reads a plain dict)

    def __init__(
        self,
        *,
        directory: str | os.PathLike | None = None,
        csv_path: str | os.PathLike | None = None,
        tags: list[str] | None = None,
        decode_workers: int | None = None,
        config: FolderConfig | None = None,
        **kwargs,
    ):
        if directory is None:
            if not isinstance(config, FolderConfig):
                raise ValueError(
                    "the 'folder' data set needs the folder: pass directory=... (and optionally "
                    "csv_path=... and tags=[...]) to get_builder/get_source"
                )
            built = config
        else:
            built = folder_config(directory, csv_path, tags)
            if isinstance(config, FolderConfig) and config.name != built.name:
                raise ValueError(
                    f"config {config.name!r} does not describe the folder {directory!r} as it is "
                    f"now ({built.name!r})"
                )
            if config is not None and not isinstance(config, FolderConfig):
                raise ValueError(
                    "the 'folder' data set names its config itself from the folder; "
                    f"pass config=None, not {config!r}"
                )
        kwargs.setdefault("file_format", "array_record")
        super().__init__(config=built, **kwargs)
        self._init_decoding(decode_workers)

    def _info(self) -> tfds.core.DatasetInfo:
        config = self.builder_config
        metadata = schema.metadata(list(config.vocabulary))
        metadata["skipped"] = []
        return self.dataset_info_from_configs(
            description=(
                "Audio files of a folder, tagged by a CSV, resampled to "
                f"{schema.SAMPLE_RATE} Hz mono int16."
            ),
            features=schema.features(len(config.vocabulary)),
            metadata=metadata,
            supervised_keys=("audio", "labels"),
        )

    def _split_generators(self, dl_manager):
        del dl_manager  # the files are local
        config = self.builder_config
        rows = read_tag_csv(config.directory, config.csv_path)
        splits = {}
        for row in rows:
            splits.setdefault(row.split, []).append(row)
        return {
            name: self._generate_examples(name, split_rows) for name, split_rows in splits.items()
        }

    def _generate_examples(self, split: str, rows: list[FolderRow]):
        config = self.builder_config
        index = {tag: i for i, tag in enumerate(config.vocabulary)}
        tags_of = {row.path: row.tags for row in rows}
        jobs = [(row.path, os.path.join(config.directory, row.path)) for row in rows]
        skipped = []
        for key, result in self._decode(jobs, description=f"folder/{split}"):
            if isinstance(result, decode_pool.Skipped):
                skipped.append(result)
                continue
            labels = np.zeros(len(index), np.uint8)
            labels[[index[tag] for tag in tags_of[key]]] = 1
            yield key, {"audio": result, "labels": labels, "id": key}
        decode_pool.report_skipped(self.info.metadata, split, skipped, logger)
