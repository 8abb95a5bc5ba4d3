"""MTG-Jamendo (Bogdanov et al., 2019) from a local copy of its files, as the TFDS data set
`jamendo`.

The manual directory holds what the data set's own scripts give (see
`MANUAL_DOWNLOAD_INSTRUCTIONS`): the audio folders `00`-`99` of `<id>.mp3` files (or the
low-quality `<id>.low.mp3`), and the repository's `data/` folder with the official splits
`data/splits/split-N/<subset>-{train,validation,test}.tsv`. Each TSV is tab-separated with the
header `TRACK_ID ARTIST_ID ALBUM_ID PATH DURATION TAGS`; from the sixth column on, each field is
one tag such as `genre---rock` (`PATH` is relative to the audio folder, e.g. `38/917538.mp3`).

Configs are named `<subset>[-split<N>][-<S>s]`:
- the subset, one of the data set's tag sets: `top50` (default; 50 tags), `genre` (87),
  `instrument` (40), `moodtheme` (56) or `all` (the 183 of the three categories);
- the official split `N` of 0-4 (default 0);
- full tracks (default), or an excerpt of `S` seconds from the middle of each track.

So `top50` is the top-50 subset on split 0 with full tracks, and `moodtheme-split3-30s` the
mood/theme subset on split 3 with 30 s excerpts. The splits are `train`, `valid` (the
`validation` TSV) and `test`; the labels follow the subset's tag list (`TAGS[subset]`, sorted, as
the data set's splits guarantee the same tags in every split). Full tracks (about 3,800 hours) take
about 440 GB as int16 at 16 kHz; 30 s excerpts about 53 GB.

Each track is decoded with `load_audio`, resampled to 16 kHz mono and stored as int16 (see
`tagjax.data.schema`). A track whose file is missing or cannot be decoded is reported (logged,
listed under `info.metadata["skipped"]` with the reason) and left out; the build goes on.

    builder = tj.data.get_builder("jamendo", config="top50", manual_dir="~/data/mtg-jamendo")
    source, tags = tj.data.get_source("jamendo", "train", config="genre-split1-30s",
                                      manual_dir="~/data/mtg-jamendo")
"""

import csv
import dataclasses
import os
import re
from pathlib import Path

import numpy as np
import tensorflow_datasets as tfds

from tagjax.data import pooled_decoding


def _tags(category: str, names: str) -> tuple[str, ...]:
    return tuple(f"{category}{name}" for name in names.split())


# The tags of the official splits (identical in split-0 to split-4), as the TSVs spell them.
GENRE_TAGS = _tags("genre---", """
60s 70s 80s 90s acidjazz alternative alternativerock ambient atmospheric blues bluesrock
bossanova breakbeat celtic chanson chillout choir classical classicrock club contemporary
country dance darkambient darkwave deephouse disco downtempo drumnbass dub dubstep easylistening
edm electronic electronica electropop ethno eurodance experimental folk funk fusion groove
grunge hard hardrock hiphop house idm improvisation indie industrial instrumentalpop
instrumentalrock jazz jazzfusion latin lounge medieval metal minimal newage newwave orchestral
pop popfolk poprock postrock progressive psychedelic punkrock rap reggae rnb rock rocknroll
singersongwriter soul soundtrack swing symphonic synthpop techno trance triphop world
worldfusion
""")
INSTRUMENT_TAGS = _tags("instrument---", """
accordion acousticbassguitar acousticguitar bass beat bell bongo brass cello clarinet
classicalguitar computer doublebass drummachine drums electricguitar electricpiano flute guitar
harmonica harp horn keyboard oboe orchestra organ pad percussion piano pipeorgan rhodes sampler
saxophone strings synthesizer trombone trumpet viola violin voice
""")
MOODTHEME_TAGS = _tags("mood/theme---", """
action adventure advertising background ballad calm children christmas commercial cool corporate
dark deep documentary drama dramatic dream emotional energetic epic fast film fun funny game
groovy happy heavy holiday hopeful inspiring love meditative melancholic melodic motivational
movie nature party positive powerful relaxing retro romantic sad sexy slow soft soundscape space
sport summer trailer travel upbeat uplifting
""")
# data/tags/top50.txt of the data set's repository.
TOP50_TAGS = (
    *_tags("genre---", """
alternative ambient atmospheric chillout classical dance downtempo easylistening electronic
experimental folk funk hiphop house indie instrumentalpop jazz lounge metal newage orchestral
pop popfolk poprock reggae rock soundtrack techno trance triphop world
"""),
    *_tags("instrument---", """
acousticguitar bass computer drummachine drums electricguitar electricpiano guitar keyboard
piano strings synthesizer violin voice
"""),
    *_tags("mood/theme---", "emotional energetic film happy relaxing"),
)

# subset -> (the stem of its TSVs in data/splits/split-N/, its tags)
SUBSETS = {
    "top50": ("autotagging_top50tags", TOP50_TAGS),
    "genre": ("autotagging_genre", GENRE_TAGS),
    "instrument": ("autotagging_instrument", INSTRUMENT_TAGS),
    "moodtheme": ("autotagging_moodtheme", MOODTHEME_TAGS),
    "all": ("autotagging", tuple(sorted(GENRE_TAGS + INSTRUMENT_TAGS + MOODTHEME_TAGS))),
}
TAGS = {subset: tags for subset, (_, tags) in SUBSETS.items()}
# tagjax's split name -> the one in the TSV's file name.
SPLIT_FILES = {"train": "train", "valid": "validation", "test": "test"}
NUM_OFFICIAL_SPLITS = 5
HEADER = ("TRACK_ID", "ARTIST_ID", "ALBUM_ID", "PATH", "DURATION", "TAGS")
LOW_QUALITY_SUFFIX = ".low.mp3"  # the audio-low archives' file names: `NN/<id>.low.mp3`

CONFIG_NAMING = (
    "<subset>[-split<N>][-<S>s]: subset top50, genre, instrument, moodtheme or all; official "
    f"split N of 0-{NUM_OFFICIAL_SPLITS - 1} (default 0); -<S>s stores an S-second excerpt from "
    "the middle of each track instead of the full track (e.g. top50, genre-split2, "
    "moodtheme-30s)"
)
_CONFIG_NAME = re.compile(
    rf"^({'|'.join(SUBSETS)})(?:-split([0-{NUM_OFFICIAL_SPLITS - 1}]))?(?:-([1-9][0-9]*)s)?$"
)

MANUAL_DOWNLOAD_INSTRUCTIONS = f"""\
MTG-Jamendo must be downloaded by hand (its audio is under Creative Commons licences, its
metadata CC BY-NC-SA 4.0); see https://github.com/MTG/mtg-jamendo-dataset.
  git clone https://github.com/MTG/mtg-jamendo-dataset
  cd mtg-jamendo-dataset && pip install -r scripts/requirements.txt
  python3 scripts/download/download.py --dataset raw_30s --type audio <manual_dir> --unpack --remove
(about 508 GB; `--type audio-low` gives 156 GB of mono `.low.mp3` files, also read here;
`--dataset autotagging_moodtheme` only the mood/theme tracks). Then put the repository's `data`
folder in <manual_dir> too (`ln -s $PWD/data <manual_dir>/data`), so that <manual_dir> holds
the audio folders 00, 01, ..., 99 and data/splits/split-0/, ..., split-{NUM_OFFICIAL_SPLITS - 1}/.
Then pass manual_dir=<manual_dir> (training: --config.dataset.manual_dir=<manual_dir>).
"""

@dataclasses.dataclass(frozen=True)
class Track:
    """One row of a split's TSV.

    Attributes:
      track_id: the track's id, e.g. `track_0917538`.
      path: its audio file relative to the audio folder, e.g. `38/917538.mp3`.
      tags: its tags, e.g. `("genre---rock", "instrument---guitar")`.
    """

    track_id: str
    path: str
    tags: tuple[str, ...]


def read_split_tsv(path: str | os.PathLike) -> list[Track]:
    """Reads one of the data set's TSVs (`TRACK_ID ARTIST_ID ALBUM_ID PATH DURATION TAGS`).

    Raises:
      FileNotFoundError: the file does not exist (the message says what to download).
      ValueError: the header is not the data set's, a row has fewer than 5 fields, a path that
        is absolute or leaves the audio folder, a malformed tag or a repeated track id; the
        message names the file and the line.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"{str(path)!r} does not exist; the manual directory must hold the data set's "
            f"data/splits folder and its audio folders.\n{MANUAL_DOWNLOAD_INSTRUCTIONS}"
        )
    tracks, seen = [], {}
    with open(path, newline="", encoding="utf-8") as file:
        reader = csv.reader(file, delimiter="\t")
        header = tuple(next(reader, ()))
        if header[: len(HEADER)] != HEADER:
            raise ValueError(f"{path}: the header must be {' '.join(HEADER)}, got {header}")
        for row in reader:
            where = f"{path}, line {reader.line_num}"
            if not row:
                continue
            if len(row) < len(HEADER) - 1:
                raise ValueError(f"{where}: {len(row)} fields, at least 5 expected")
            track_id, audio_path = row[0].strip(), row[3].strip()
            parts = Path(audio_path).parts
            if not audio_path or Path(audio_path).is_absolute() or ".." in parts:
                raise ValueError(f"{where}: PATH {audio_path!r} must lie inside the audio folder")
            if track_id in seen:
                raise ValueError(f"{where}: {track_id} is listed twice (first on line "
                                 f"{seen[track_id]})")
            seen[track_id] = reader.line_num
            tags = tuple(tag.strip() for tag in row[len(HEADER) - 1 :] if tag.strip())
            malformed = [tag for tag in tags if "---" not in tag]
            if malformed:
                raise ValueError(f"{where}: tags must read <category>---<tag>, got {malformed}")
            tracks.append(Track(track_id, audio_path, tags))
    return tracks


@dataclasses.dataclass(eq=False)
class JamendoConfig(tfds.core.BuilderConfig):
    """Which tags, which official split and how much of each track.

    Attributes:
      subset: `top50`, `genre`, `instrument`, `moodtheme` or `all`.
      split_index: the official split, 0-4.
      excerpt_seconds: seconds stored from the middle of each track; `None` stores it whole.
    """

    subset: str = "top50"
    split_index: int = 0
    excerpt_seconds: int | None = None


def jamendo_config(name: str) -> JamendoConfig:
    """The config named `name` (see `CONFIG_NAMING`).

    Raises:
      ValueError: `name` does not follow `CONFIG_NAMING`.
    """
    match = _CONFIG_NAME.match(name)
    if match is None:
        raise ValueError(f"data set 'jamendo' has no config {name!r}; its configs are named "
                         f"{CONFIG_NAMING}")
    subset, split, seconds = match.groups()
    split_index = int(split or 0)
    excerpt = None if seconds is None else int(seconds)
    return JamendoConfig(
        name=name,
        description=(
            f"the {subset} subset ({len(TAGS[subset])} tags) on official split {split_index}, "
            + ("full tracks" if excerpt is None else f"{excerpt} s from the middle of each track")
        ),
        subset=subset,
        split_index=split_index,
        excerpt_seconds=excerpt,
    )


def audio_file(audio_dir: Path, relative_path: str) -> Path:
    """The track's file: `NN/<id>.mp3`, or the low-quality `NN/<id>.low.mp3` when only that one
    is there (the name as listed when neither is, so the report names what was looked for)."""
    path = audio_dir / relative_path
    if not path.exists() and relative_path.endswith(".mp3"):
        low = audio_dir / (relative_path[: -len(".mp3")] + LOW_QUALITY_SUFFIX)
        if low.exists():
            return low
    return path


def labels_of(tags: tuple[str, ...], index: dict[str, int], where: str) -> np.ndarray:
    """`(len(index),)` uint8 multi-hot of `tags`.

    Raises:
      ValueError: a tag is not in the subset's list (`where` names the track and file).
    """
    unknown = [tag for tag in tags if tag not in index]
    if unknown:
        raise ValueError(f"{where}: tags {unknown} are not among the subset's {len(index)} tags")
    labels = np.zeros(len(index), np.uint8)
    labels[[index[tag] for tag in tags]] = 1
    return labels


class Jamendo(pooled_decoding.PooledDecoding, tfds.core.GeneratorBasedBuilder):
    """MTG-Jamendo with the tags of one subset on one official split (see the module docstring).

    Args:
      config: a config name following `CONFIG_NAMING` (or a `JamendoConfig`); default `top50`.
      decode_workers: processes that decode the tracks; `None` uses every core, 0 none.
      **kwargs: passed to `tfds.core.GeneratorBasedBuilder` (`data_dir`, ...).
    """

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "First release."}  # noqa: RUF012 (TFDS reads a plain dict)
    MANUAL_DOWNLOAD_INSTRUCTIONS = MANUAL_DOWNLOAD_INSTRUCTIONS
    # The subsets on split 0 with full tracks; other splits and excerpts by name (see
    # `config_from_name`).
    BUILDER_CONFIGS = [jamendo_config(subset) for subset in SUBSETS]  # noqa: RUF012
    DEFAULT_BUILDER_CONFIG_NAME = "top50"
    CONFIG_NAME_RULE = (
        f"<subset>-split<N> (official split N of 0-{NUM_OFFICIAL_SPLITS - 1}; default 0) and "
        "<subset>[-split<N>]-<S>s (an S-second excerpt of each track)"
    )

    @classmethod
    def config_from_name(cls, name: str) -> JamendoConfig:
        """The config named `name` (see `CONFIG_NAMING`); raises ValueError otherwise."""
        return jamendo_config(name)

    def __init__(self, *, config=None, decode_workers: int | None = None, **kwargs):
        if isinstance(config, str) and config not in {c.name for c in self.BUILDER_CONFIGS}:
            config = jamendo_config(config)
        kwargs.setdefault("file_format", "array_record")
        super().__init__(config=config, **kwargs)
        self._init_decoding(decode_workers)

    def _info(self) -> tfds.core.DatasetInfo:
        return self._audio_info(
            TAGS[self.builder_config.subset], "MTG-Jamendo tracks with the tags of one subset",
            homepage="https://mtg.github.io/mtg-jamendo-dataset/",
            citation=(
                "@conference{bogdanov2019mtg, author={Bogdanov, Dmitry and Won, Minz and "
                "Tovstogan, Philip and Porter, Alastair and Serra, Xavier}, title={The "
                "MTG-Jamendo Dataset for Automatic Music Tagging}, booktitle={Machine Learning "
                "for Music Discovery Workshop, ICML}, year={2019}}"
            ),
        )

    def _split_generators(self, dl_manager):
        config = self.builder_config
        manual_dir = Path(dl_manager.manual_dir)
        stem, tags = SUBSETS[config.subset]
        split_dir = manual_dir / "data" / "splits" / f"split-{config.split_index}"
        index = {tag: i for i, tag in enumerate(tags)}
        generators = {}
        for split, file_part in SPLIT_FILES.items():
            tsv = split_dir / f"{stem}-{file_part}.tsv"
            jobs = [
                (track.track_id, audio_file(manual_dir, track.path),
                 labels_of(track.tags, index, f"{tsv}, {track.track_id}"))
                for track in read_split_tsv(tsv)
            ]
            if not jobs:
                raise ValueError(f"{tsv}: the split lists no tracks")
            generators[split] = self._generate_examples(split, jobs)
        return generators

    def _generate_examples(self, split: str, jobs: list[tuple[str, Path, np.ndarray]]):
        return self._examples(split, jobs, excerpt_seconds=self.builder_config.excerpt_seconds)
