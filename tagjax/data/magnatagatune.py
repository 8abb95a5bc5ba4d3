"""MagnaTagATune (Law et al., 2009) from a local copy of its files, as the TFDS data set
`magnatagatune`.

The annotations (`annotations_final.csv`: tab-separated, quoted; `clip_id`, 188 tag columns
of 0/1, `mp3_path` such as `f/artist-album-30-59.mp3`) and the mp3 folders `0`-`f` are read
from the manual directory (see `MANUAL_DOWNLOAD_INSTRUCTIONS`). The labels are the 50 most used
tags, in the order of `TOP50_TAGS` (the order of Won et al.'s `tags.npy`). The splits follow the
folders: `0`-`b` train, `c` valid, `d`-`f` test. Two configs:

- `clean` (default): the split of Lee et al. and Won et al.: only clips with at least one of
  the top-50 tags and at least 29.1 s of audio (15,247 / 1,529 / 4,332 on the full data);
- `full`: the folder rule only (18,706 / 1,825 / 5,329).

The clips are decoded in parallel (a progress bar per split), resampled to 16 kHz mono and
stored as int16 (see `tagjax.data.schema`). A clip whose file is missing (35644 in the public
copy) or cannot be decoded (55753 and 57881 are corrupt) is reported, listed under
`info.metadata["skipped"]` with the reason, and left out; the build goes on.

    builder = tj.data.get_builder("magnatagatune", manual_dir="~/data/mtat")
    source, tags = tj.data.get_source("magnatagatune", "train", manual_dir="~/data/mtat")
"""

import csv
import dataclasses
import os
from pathlib import Path

import numpy as np
import tensorflow_datasets as tfds

from tagjax.data import pooled_decoding, schema

ANNOTATIONS_FILE = "annotations_final.csv"

# The top-50 tags by count; the names are the CSV's column names.
TOP50_TAGS = (
    "guitar", "classical", "slow", "techno", "strings", "drums", "electronic", "rock", "fast",
    "piano", "ambient", "beat", "violin", "vocal", "synth", "female", "indian", "opera", "male",
    "singing", "vocals", "no vocals", "harpsichord", "loud", "quiet", "flute", "woman",
    "male vocal", "no vocal", "pop", "soft", "sitar", "solo", "man", "classic", "choir", "voice",
    "new age", "dance", "male voice", "female vocal", "beats", "harp", "cello", "no voice",
    "weird", "country", "metal", "female voice", "choral",
)  # fmt: skip

# The split of each clip follows the first folder of its `mp3_path` (16 folders, 0-f).
SPLIT_OF_FOLDER = {
    **{folder: "train" for folder in "0123456789ab"},
    "c": "valid",
    **{folder: "test" for folder in "def"},
}

# Lee et al. and Won et al. keep clips with at least 29.1 s of audio in the clean split.
CLEAN_MIN_SECONDS = 29.1

MANUAL_DOWNLOAD_INSTRUCTIONS = f"""\
MagnaTagATune must be downloaded by hand (it is licensed CC BY-NC-SA 3.0). From the
MagnaTagATune page of the MIREX wiki (https://www.music-ir.org/mirex/wiki/MagnaTagATune) or
https://mirg.city.ac.uk/codeapp/the-magnatagatune-dataset download:
  - mp3.zip.001, mp3.zip.002, mp3.zip.003 (the clips, about 3 GB in all);
  - {ANNOTATIONS_FILE} (the tag annotations).
Join and unzip the archive into the manual directory:
  cat mp3.zip.001 mp3.zip.002 mp3.zip.003 > mp3_all.zip && unzip mp3_all.zip -d <manual_dir>
and put {ANNOTATIONS_FILE} there too, so that <manual_dir> holds {ANNOTATIONS_FILE} and the
folders 0, 1, ..., f of mp3 files. Then pass manual_dir=<manual_dir>.
"""

@dataclasses.dataclass(frozen=True)
class Clip:
    """One row of `annotations_final.csv`, reduced to the top-50 tags.

    Attributes:
      clip_id: the clip's id.
      mp3_path: the file, relative to the manual directory (e.g. `f/artist-album-30-59.mp3`).
      labels: `(50,)` uint8 multi-hot over `TOP50_TAGS`.
    """

    clip_id: str
    mp3_path: str
    labels: np.ndarray

    @property
    def split(self) -> str:
        return SPLIT_OF_FOLDER[self.mp3_path.split("/", 1)[0]]


def read_annotations(path: str | os.PathLike) -> list[Clip]:
    """Reads `annotations_final.csv` (tab-separated, quoted) into clips with top-50 labels.

    Raises:
      FileNotFoundError: the file does not exist.
      ValueError: a column is missing, a row is malformed, a tag value is not 0/1 or an mp3 path
        is not in one of the folders 0-f; the message names the file and the line.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"{str(path)!r} does not exist; the manual directory must hold {ANNOTATIONS_FILE} and "
            f"the mp3 folders 0-f.\n{MANUAL_DOWNLOAD_INSTRUCTIONS}"
        )
    clips = []
    with open(path, newline="", encoding="utf-8") as file:
        reader = csv.reader(file, delimiter="\t", quotechar='"')
        header = next(reader, [])
        missing = [name for name in ("clip_id", *TOP50_TAGS, "mp3_path") if name not in header]
        if missing:
            raise ValueError(f"{path}: the header lacks the columns {missing}")
        id_column, path_column = header.index("clip_id"), header.index("mp3_path")
        tag_columns = [header.index(tag) for tag in TOP50_TAGS]
        for row in reader:
            where = f"{path}, line {reader.line_num}"
            if not row:
                continue
            if len(row) != len(header):
                raise ValueError(f"{where}: {len(row)} fields where the header has {len(header)}")
            values = [row[column].strip() for column in tag_columns]
            if not set(values) <= {"0", "1"}:
                raise ValueError(f"{where}: tag values must be 0 or 1, got {sorted(set(values))}")
            mp3_path = row[path_column].strip()
            if mp3_path.split("/", 1)[0] not in SPLIT_OF_FOLDER or "/" not in mp3_path:
                raise ValueError(f"{where}: mp3_path {mp3_path!r} is not in a folder 0-f")
            labels = np.array([value == "1" for value in values], np.uint8)
            clips.append(Clip(row[id_column].strip(), mp3_path, labels))
    return clips


@dataclasses.dataclass(eq=False)
class MagnatagatuneConfig(tfds.core.BuilderConfig):
    """Which clips a split keeps.

    Attributes:
      require_top50_tag: keep only clips with at least one of the top-50 tags.
      min_seconds: keep only clips with at least this much audio; `None` keeps any length.
    """

    require_top50_tag: bool = True
    min_seconds: float | None = CLEAN_MIN_SECONDS


class Magnatagatune(pooled_decoding.PooledDecoding, tfds.core.GeneratorBasedBuilder):
    """MagnaTagATune with its top-50 tags (see the module docstring).

    Args:
      decode_workers: processes that decode the clips; `None` uses every core, 0 none.
      **kwargs: passed to `tfds.core.GeneratorBasedBuilder` (`config`, `data_dir`, ...).
    """

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "First release."}  # noqa: RUF012 (TFDS reads a plain dict)
    MANUAL_DOWNLOAD_INSTRUCTIONS = MANUAL_DOWNLOAD_INSTRUCTIONS
    BUILDER_CONFIGS = [  # noqa: RUF012 (TFDS reads a plain list)
        MagnatagatuneConfig(
            name="clean",
            description=(
                "Lee et al.'s and Won et al.'s split: clips with a top-50 tag and at least "
                f"{CLEAN_MIN_SECONDS} s of audio."
            ),
            require_top50_tag=True,
            min_seconds=CLEAN_MIN_SECONDS,
        ),
        MagnatagatuneConfig(
            name="full",
            description="Every clip, split by folder (0-b train, c valid, d-f test).",
            require_top50_tag=False,
            min_seconds=None,
        ),
    ]

    def __init__(self, *, decode_workers: int | None = None, **kwargs):
        kwargs.setdefault("file_format", "array_record")
        super().__init__(**kwargs)
        self._init_decoding(decode_workers)

    def _info(self) -> tfds.core.DatasetInfo:
        return self._audio_info(
            TOP50_TAGS, "MagnaTagATune clips with their top-50 tags",
            homepage="https://mirg.city.ac.uk/codeapp/the-magnatagatune-dataset",
            citation=(
                "@inproceedings{law2009evaluation, title={Evaluation of algorithms using "
                "games: The case of music tagging}, author={Law, Edith and West, Kris and "
                "Mandel, Michael I and Bay, Mert and Downie, J Stephen}, booktitle={ISMIR}, "
                "year={2009}}"
            ),
        )

    def _split_generators(self, dl_manager):
        manual_dir = Path(dl_manager.manual_dir)
        clips = read_annotations(manual_dir / ANNOTATIONS_FILE)
        if self.builder_config.require_top50_tag:
            clips = [clip for clip in clips if clip.labels.any()]
        by_split = {"train": [], "valid": [], "test": []}
        for clip in clips:
            by_split[clip.split].append(clip)
        return {
            split: self._generate_examples(manual_dir, split, split_clips)
            for split, split_clips in by_split.items()
        }

    def _generate_examples(self, manual_dir: Path, split: str, clips: list[Clip]):
        min_seconds = self.builder_config.min_seconds
        min_samples = 0 if min_seconds is None else round(min_seconds * schema.SAMPLE_RATE)
        jobs = [(clip.clip_id, manual_dir / clip.mp3_path, clip.labels) for clip in clips]
        return self._examples(split, jobs, min_samples=min_samples)
