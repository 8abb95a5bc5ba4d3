"""Your own folder of audio files and a CSV of their tags, as the TFDS data set `folder`.

The CSV (default `tags.csv` in the folder, UTF-8) has a header row and the columns:
- `path`: the file, relative to the folder (an absolute path must lie inside it);
- `tags`: the file's tags separated by `;` (may be empty for some files, not for all);
- `split` (optional): the split the file belongs to (e.g. `train`, `valid`, `test`). Without
  this column the files are split at random, with a seed (`split_seed`, default 0): 10% of
  them `valid`, 10% `test` (at least one file each, from 3 files on) and the rest `train`,
  the splits that training reads.

    path,tags
    rock/song1.mp3,rock;guitar;male vocal
    jazz/take2.flac,jazz;piano

Case does not matter: split names are folded to lower case (`Train` is `train`), and tags that
differ only in case (`Rock`, `rock`) are one tag, spelt as it first appears in the CSV (or as in
the `tags` given to the builder). `all` is not a split name (TFDS reads it as every split).

The tag vocabulary is the sorted union of the tags in the CSV, or the `tags` given to the
builder (a tag in the CSV that is not in that list is then an error). A CSV that is not UTF-8,
has a row with more or fewer fields than its header, a row without a path, a path listed twice,
a path that resolves outside the folder (`..`, an absolute path elsewhere, a symlink out), a
split name that is not a word, or no tag at all is rejected before any work, with an error
naming the CSV and the line.

Every file is decoded with `load_audio`, resampled to 16 kHz mono and stored as int16 (see
`tagjax.data.schema`). A track that peaks beyond full scale (a float file with samples past
+-1) is never clipped: it is scaled down by its peak to fit, and listed with its peak under
`info.metadata["rescaled"]`. A file that cannot be decoded is reported (logged, and listed under
`info.metadata["skipped"]`) and left out; a split none of whose files decode is left out too
(TFDS cannot store an empty split), logged with the reasons and named with them under
`info.metadata["left_out_splits"]`, and the other splits are built; if no file decodes at all,
the build stops with an error listing why.

Each folder gets its own builder config, named after the folder and a hash of its resolved
path, the CSV's contents, the vocabulary and the size and modification time of every listed
file, so two folders (or one folder after an edit) never share a cache entry:

    builder = tj.data.get_builder("folder", directory="~/music", data_dir="/tmp/tfds")
    source, tags = tj.data.get_source("folder", "train", directory="~/music")
"""

import codecs
import csv
import dataclasses
import hashlib
import io
import logging
import os
import re
from pathlib import Path

import numpy as np
import tensorflow_datasets as tfds

from tagjax.data import decode_pool, pooled_decoding

DEFAULT_CSV_NAME = "tags.csv"
DEFAULT_SPLIT = "train"
# Without a `split` column: the fraction of the files in each held-out split (at least one file
# each from `len(HELD_OUT_SPLITS) + 1` files on); the others are `DEFAULT_SPLIT`.
HELD_OUT_SPLITS = ("valid", "test")
HELD_OUT_FRACTION = 0.1
_TAG_SEPARATOR = ";"
_SPLIT_NAME = re.compile(r"^[A-Za-z0-9_-]+$")
# Split names TFDS gives a meaning of its own (lower case, as split names are folded).
_RESERVED_SPLITS = ("all",)

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


def read_tag_csv(
    directory: str | os.PathLike, csv_path: str | os.PathLike, *, split_seed: int = 0
) -> list[FolderRow]:
    """Reads and checks the folder's CSV.

    Split names are folded to lower case; tags that differ only in case become the spelling
    first seen in the CSV (logged). Without a `split` column, the rows are split by
    `seeded_splits`.

    Args:
      directory: the folder that holds the audio files.
      csv_path: the CSV (UTF-8, header `path,tags` and optionally `split`).
      split_seed: the seed of the random split when the CSV has no `split` column.

    Returns:
      The rows, in the CSV's order.

    Raises:
      ValueError: the CSV is not UTF-8, lacks a column, has a row with more or fewer fields
        than the header, a row has no path, a path resolves outside the folder, a path is
        listed twice, a split name is not a word or is `all`, or no row has a tag; the message
        names the CSV and the line.
      FileNotFoundError: the CSV does not exist.
    """
    root = Path(directory).expanduser().absolute()
    csv_path = Path(csv_path).expanduser()
    if not csv_path.is_file():
        raise FileNotFoundError(f"the folder's tag CSV {str(csv_path)!r} does not exist")
    resolved_root = root.resolve()
    reader = csv.reader(io.StringIO(_read_utf8(csv_path), newline=""))
    records = _records(reader, csv_path)
    header = [name.strip() for name in next(records, [])]
    missing = {"path", "tags"} - set(header)
    if missing:
        raise ValueError(
            f"{csv_path}: the header must name the columns 'path' and 'tags' (and optionally "
            f"'split'); it lacks {sorted(missing)} (header: {header})"
        )
    rows, first_line = [], {}
    spelling = {}  # casefolded tag -> (its first spelling, the line it is first on)
    folded = set()  # spellings already reported as folded into another
    for fields in records:
        if not fields:  # a blank line
            continue
        line = reader.line_num
        where = f"{csv_path}, line {line}"
        if len(fields) != len(header):
            raise ValueError(
                f"{where}: the row has {len(fields)} field(s), the header {len(header)} "
                f"({','.join(header)}); quote a field that contains ','"
            )
        record = dict(zip(header, fields, strict=True))
        path = record["path"].strip()
        if not path:
            raise ValueError(f"{where}: the row has no path")
        relative = _relative_path_inside(root, resolved_root, path, where)
        if relative in first_line:
            raise ValueError(
                f"{where}: {relative!r} is listed twice (first on line {first_line[relative]})"
            )
        first_line[relative] = line
        split = record.get("split", "").strip().lower() or DEFAULT_SPLIT
        if not _SPLIT_NAME.match(split):
            raise ValueError(f"{where}: split name {split!r} must be letters, digits, '_' or '-'")
        if split in _RESERVED_SPLITS:
            raise ValueError(
                f"{where}: split name {split!r} is reserved (TFDS reads it as every split "
                "together); name the split differently"
            )
        tags = []
        for tag in record["tags"].split(_TAG_SEPARATOR):
            tag = tag.strip()
            if not tag:
                continue
            first, first_tag_line = spelling.setdefault(tag.casefold(), (tag, line))
            if first != tag and tag not in folded:
                folded.add(tag)
                logger.warning(
                    "%s: tag %r is taken as %r (first on line %d): tags that differ only in "
                    "case are one tag",
                    where,
                    tag,
                    first,
                    first_tag_line,
                )
            tags.append(first)
        rows.append(FolderRow(relative, tuple(dict.fromkeys(tags)), split))
    if not rows:
        raise ValueError(f"{csv_path}: the CSV lists no files")
    if not spelling:
        raise ValueError(
            f"{csv_path}: the 'tags' field is empty on every row, so there is nothing to learn; "
            f"give each file its tags, separated by {_TAG_SEPARATOR!r}"
        )
    if "split" not in header:
        split_of = seeded_splits([row.path for row in rows], split_seed)
        rows = [dataclasses.replace(row, split=split_of[row.path]) for row in rows]
    return rows


def seeded_splits(paths: list[str], seed: int) -> dict[str, str]:
    """`{path: split}`: `HELD_OUT_FRACTION` of the paths (rounded, at least one) in each of
    `HELD_OUT_SPLITS`, drawn at random with `seed`, and the others in `DEFAULT_SPLIT`; every
    path in `DEFAULT_SPLIT` when there are too few for one each.

    The draw depends on the set of paths and the seed only, not on their order in the CSV.
    """
    ordered = sorted(paths)
    held_out = max(1, round(HELD_OUT_FRACTION * len(ordered)))
    if len(ordered) <= len(HELD_OUT_SPLITS):
        held_out = 0
    shuffled = [ordered[i] for i in np.random.default_rng(seed).permutation(len(ordered))]
    split_of = dict.fromkeys(ordered, DEFAULT_SPLIT)
    for i, split in enumerate(HELD_OUT_SPLITS):
        for path in shuffled[i * held_out : (i + 1) * held_out]:
            split_of[path] = split
    return split_of


def _records(reader, csv_path: Path):
    """The reader's rows; a row the csv module cannot parse is a ValueError naming its line."""
    while True:
        try:
            yield next(reader)
        except StopIteration:
            return
        except csv.Error as error:
            raise ValueError(f"{csv_path}, line {reader.line_num}: {error}") from None


def _read_utf8(csv_path: Path) -> str:
    """The CSV's text (a UTF-8 byte order mark dropped); raises naming the first bad line."""
    data = csv_path.read_bytes()
    if data.startswith(codecs.BOM_UTF8):
        data = data[len(codecs.BOM_UTF8) :]
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as error:
        line = data.count(b"\n", 0, error.start) + 1
        column = error.start - (data.rfind(b"\n", 0, error.start) + 1) + 1
        raise ValueError(
            f"{csv_path}, line {line}: byte {column} (0x{data[error.start]:02x}) is not UTF-8; "
            "save the CSV as UTF-8 (e.g. `iconv -f latin1 -t utf-8`)"
        ) from None


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

    Tags are matched without regard to case: a row's `rock` is the given tag `Rock`.

    Raises:
      ValueError: `tags` repeats a tag (also one that differs only in case), or a row has a tag
        that is not in `tags`.
    """
    used = sorted({tag for row in rows for tag in row.tags})
    if tags is None:
        return used
    tags = [str(tag) for tag in tags]
    first_spelling = {}
    for tag in tags:
        if tag.casefold() in first_spelling:
            first = first_spelling[tag.casefold()]
            raise ValueError(f"the tag list repeats a tag ({first!r}, {tag!r}): {tags}")
        first_spelling[tag.casefold()] = tag
    unknown = sorted(tag for tag in used if tag.casefold() not in first_spelling)
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
    split_seed: int = 0


def folder_config(
    directory: str | os.PathLike,
    csv_path: str | os.PathLike | None = None,
    tags: list[str] | None = None,
    split_seed: int = 0,
) -> FolderConfig:
    """The builder config of a folder, named after the folder and a hash of what it holds (and
    of `split_seed`, the seed of the split of a CSV without a `split` column).

    Raises:
      NotADirectoryError: `directory` is not a directory.
      ValueError, FileNotFoundError: see `read_tag_csv` and `tag_vocabulary`.
    """
    root = Path(directory).expanduser().absolute()
    if not root.is_dir():
        raise NotADirectoryError(f"the audio folder {str(directory)!r} is not a directory")
    csv_path = root / DEFAULT_CSV_NAME if csv_path is None else Path(csv_path).expanduser()
    if isinstance(split_seed, bool) or not isinstance(split_seed, int | np.integer):
        raise ValueError(f"split_seed must be a whole number, not {split_seed!r}")
    rows = read_tag_csv(root, csv_path, split_seed=split_seed)
    vocabulary = tag_vocabulary(rows, tags)
    digest = hashlib.sha256()
    digest.update(str(root.resolve()).encode())
    digest.update(f"split_seed={split_seed}".encode())
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
        split_seed=int(split_seed),
    )


class Folder(pooled_decoding.PooledDecoding, tfds.core.GeneratorBasedBuilder):
    """Your own folder of audio files with a CSV of tags (see the module docstring).

    Args:
      directory: the folder that holds the audio files (required).
      csv_path: the CSV; defaults to `tags.csv` in the folder.
      tags: the tag vocabulary, in order; defaults to the sorted union of the CSV's tags.
      split_seed: the seed of the random split of a CSV without a `split` column.
      decode_workers: processes that decode the files; `None` uses every core, 0 none.
      **kwargs: passed to `tfds.core.GeneratorBasedBuilder` (`data_dir`, `file_format`, ...).
    """

    VERSION = tfds.core.Version("1.2.0")
    RELEASE_NOTES = {  # noqa: RUF012 (TFDS reads a plain dict)
        "1.0.0": "First release.",
        "1.1.0": (
            "Tracks beyond full scale are scaled down by their peak, not clipped; split names "
            "and tags are case-insensitive; a split whose files all fail is left out."
        ),
        "1.2.0": "Without a split column, a seeded random split into train, valid and test.",
    }

    def __init__(
        self,
        *,
        directory: str | os.PathLike | None = None,
        csv_path: str | os.PathLike | None = None,
        tags: list[str] | None = None,
        split_seed: int = 0,
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
            built = folder_config(directory, csv_path, tags, split_seed)
            if isinstance(config, FolderConfig) and config.name != built.name:
                raise ValueError(
                    f"config {config.name!r} does not describe the folder {directory!r} as it is "
                    f"now ({built.name!r})"
                )
            if config is not None and not isinstance(config, FolderConfig):
                raise ValueError(
                    "the 'folder' data set names its config itself from the folder; "
                    f"pass config=None, not {config!r} (training: --config.dataset.config=default)"
                )
        kwargs.setdefault("file_format", "array_record")
        super().__init__(config=built, **kwargs)
        self._init_decoding(decode_workers)

    def _info(self) -> tfds.core.DatasetInfo:
        return self._audio_info(self.builder_config.vocabulary,
                                "Audio files of a folder, tagged by a CSV",
                                metadata={"rescaled": [], "left_out_splits": {}})

    def _split_generators(self, dl_manager):
        del dl_manager  # the files are local
        config = self.builder_config
        rows = read_tag_csv(config.directory, config.csv_path, split_seed=config.split_seed)
        splits = {}
        for row in rows:
            splits.setdefault(row.split, []).append(row)
        # TFDS cannot write a split with no examples (it stops the whole build), so each split
        # is decoded up to its first good file before any is written; one whose files all fail
        # is left out, saying why, and the others are built.
        generators, failures = {}, {}
        for name, split_rows in splits.items():
            jobs = [(row.path, os.path.join(config.directory, row.path)) for row in split_rows]
            rescaled = []
            probed = self._decode_until_first_example(jobs, rescaled)
            if isinstance(probed[-1][1], decode_pool.Skipped):
                failures[name] = [result for _, result in probed]
                continue
            labelled = [(key, path, self._labels(row)) for (key, path), row
                        in zip(jobs, split_rows, strict=True)]
            generators[name] = self._generate_examples(name, labelled, probed, rescaled)
        if not generators:
            raise ValueError(
                f"{config.csv_path}: none of the listed files could be decoded, so there is no "
                f"data set to build: {_failure_list(failures)}"
            )
        for name, skipped in failures.items():
            reason = f"none of its {len(skipped)} file(s) could be decoded"
            logger.error(
                "split %r of %s is left out: %s (each is listed below and in "
                "info.metadata['skipped']); the other splits are built",
                name,
                config.directory,
                reason,
            )
            self.info.metadata["left_out_splits"][name] = reason
            decode_pool.report_skipped(self.info.metadata, name, skipped, logger)
        return generators

    def _decode_until_first_example(
        self, jobs: list[tuple[str, str]], rescaled: list[decode_pool.Rescaled]
    ) -> list[tuple[str, np.ndarray | decode_pool.Skipped]]:
        """Decodes `jobs` in this process, in order, up to and including the first that works."""
        probed = []
        with decode_pool.DecodePool(0) as pool:
            for key, result in pool.decode(jobs, rescaled=rescaled, progress=False):
                probed.append((key, result))
                if not isinstance(result, decode_pool.Skipped):
                    break
        return probed

    def _labels(self, row: FolderRow) -> np.ndarray:
        """`(num_tags,)` uint8 multi-hot of the row's tags (matched without regard to case)."""
        index = {tag.casefold(): i for i, tag in enumerate(self.builder_config.vocabulary)}
        labels = np.zeros(len(index), np.uint8)
        labels[[index[tag.casefold()] for tag in row.tags]] = 1
        return labels

    def _generate_examples(
        self,
        split: str,
        jobs: list[tuple[str, str, np.ndarray]],
        decoded: list[tuple[str, np.ndarray | decode_pool.Skipped]],
        rescaled: list[decode_pool.Rescaled],
    ):
        """The split's examples: `jobs`, of which the first `len(decoded)` are decoded."""
        return self._examples(split, jobs, decoded=decoded, rescaled=rescaled)


def _failure_list(failures: dict[str, list[decode_pool.Skipped]], most: int = 5) -> str:
    """`key (reason); ...` for the first `most` files that failed, and how many more did."""
    records = [record for split_records in failures.values() for record in split_records]
    listed = "; ".join(f"{record.key} ({record.reason})" for record in records[:most])
    return listed + (f"; and {len(records) - most} more" if len(records) > most else "")
