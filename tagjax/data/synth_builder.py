"""The TFDS builder of `synth`, the embedded default data set: made on first use, then cached.

`tfds.builder("synth/default")` (or `"synth/tiny"`) once this module is imported, which
`import tagjax.data` does. Examples follow `tagjax/data/schema.py`: int16 audio at 16 kHz, a
multi-hot `labels` vector over `synth.TAGS` (also in `info.metadata["tags"]`) and an `id`.
Clips are rendered in parallel on all cores by a process pool; TFDS writes them as ArrayRecord,
read back without TensorFlow through `builder.as_data_source()`.
"""

import dataclasses
import hashlib
import multiprocessing
import os
import re

import numpy as np
import tensorflow_datasets as tfds
import tqdm

from tagjax.data import schema, synth

_SPLITS = ("train", "valid", "test")


@dataclasses.dataclass(eq=False)
class SynthConfig(tfds.core.BuilderConfig):
    """A size of `synth`.

    Attributes:
      num_clips: clips in all splits together.
      clip_seconds: the length of every clip.
      split_fractions: the fractions of `train`, `valid` and `test`; clip `i` of the data set is
        composed from seed `i`, and the splits take consecutive seeds in that order.
      soundfont: the `.sf2` file the clips are rendered with; empty: the one pretty_midi ships.
      splits: the splits built (all three unless a config says otherwise).
    """

    num_clips: int = 2000
    clip_seconds: float = 8.0
    split_fractions: tuple[float, float, float] = (0.8, 0.1, 0.1)
    soundfont: str = ""
    splits: tuple[str, ...] = _SPLITS

    def split_seeds(self) -> dict[str, range]:
        """The seeds of each split built."""
        n_train = round(self.num_clips * self.split_fractions[0])
        n_valid = round(self.num_clips * self.split_fractions[1])
        bounds = (0, n_train, n_train + n_valid, self.num_clips)
        return {name: range(bounds[i], bounds[i + 1]) for i, name in enumerate(_SPLITS)
                if name in self.splits}


def other_soundfont_config(soundfont: str | os.PathLike, base: str = "default") -> SynthConfig:
    """The test split of config `base` (the same compositions and recording chains) rendered with
    another General MIDI SoundFont: how a model trained on the default SoundFont's timbres fares
    on other instruments playing the same music.

    Its name is `<base>-<file stem>-<8 hex digits of the file's digest>`, e.g.
    `default-fluidr3_gm-1a2b3c4d`, so each SoundFont is built (and cached) once::

        config = other_soundfont_config("/usr/share/sounds/sf2/FluidR3_GM.sf2")
        source, tags = tj.data.get_source("synth", "test", config=config)
    """
    path = os.path.abspath(os.path.expanduser(os.fspath(soundfont)))
    synth._soundfont_bytes(path)  # a clear error for a missing or non-SoundFont file
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 24), b""):
            digest.update(block)
    stem = re.sub(r"[^a-z0-9_]+", "_", os.path.splitext(os.path.basename(path))[0].lower())
    parent = next(c for c in Synth.BUILDER_CONFIGS if c.name == base)
    return SynthConfig(
        name=f"{base}-{stem}-{digest.hexdigest()[:8]}",
        description=f"The test split of synth/{base} rendered with {os.path.basename(path)}.",
        num_clips=parent.num_clips, clip_seconds=parent.clip_seconds,
        split_fractions=parent.split_fractions, soundfont=path, splits=("test",))


# Spawning a worker imports tagjax (a few seconds on two busy cores), so builds with less audio
# than this render in-process; about 1 s of CPU renders 100 s of audio.
_MIN_SECONDS_FOR_WORKERS = 600.0


def _cores() -> int:
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def _render_example(task: tuple[int, float, str | None]) -> tuple[int, np.ndarray, np.ndarray]:
    """`(seed, seconds, soundfont)` -> `(seed, int16 audio, uint8 multi-hot labels)`, in a worker
    process."""
    seed, seconds, soundfont = task
    audio, tags = synth.make_clip(seed, seconds, schema.SAMPLE_RATE, soundfont=soundfont)
    labels = np.zeros(len(synth.TAGS), np.uint8)
    labels[[synth.TAGS.index(tag) for tag in tags]] = 1
    return seed, schema.audio_to_int16(audio), labels


class ClipRenderer:
    """Renders clips for every split of a build with one process pool, closed when they are done.

    Spawned workers rather than forked: the parent may already run JAX's threads, which a fork
    copies in whatever state they are. The workers run NumPy and the renderer only.

    Args:
      seconds: the clips' length.
      workers: processes; 1 renders in-process.
      n_uses: how many `render` calls the pool serves before it is closed.
      soundfont: the `.sf2` file; None: the one pretty_midi ships.
    """

    def __init__(self, seconds: float, workers: int, n_uses: int = 1,
                 soundfont: str | None = None):
        self.seconds = seconds
        self.soundfont = soundfont
        self.workers = workers
        self._remaining = n_uses
        self._pool = None

    def render(self, seeds, description: str = ""):
        """Yields `(seed, (samples,) int16, (len(synth.TAGS),) uint8)` for each seed, in order."""
        tasks = [(int(seed), self.seconds, self.soundfont) for seed in seeds]
        finished = False
        try:
            if self.workers <= 1:
                results = map(_render_example, tasks)
            else:
                if self._pool is None:
                    self._pool = multiprocessing.get_context("spawn").Pool(self.workers)
                results = self._pool.imap(_render_example, tasks, chunksize=4)
            yield from tqdm.tqdm(
                results, total=len(tasks), desc=description, unit=" clips", leave=False
            )
            finished = True
        finally:
            self._remaining -= 1
            if not finished or self._remaining <= 0:
                self.close()

    def close(self):
        """Stops the workers (if any)."""
        if self._pool is not None:
            self._pool.terminate()
            self._pool.join()
            self._pool = None


class Synth(tfds.core.GeneratorBasedBuilder):
    """`synth`: General MIDI music composed with pretty_midi, tagged by how it was composed."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "First release."}  # noqa: RUF012 (the TFDS convention)
    BUILDER_CONFIGS = [  # noqa: RUF012
        SynthConfig(
            name="default",
            description="2,000 clips of 8 s (1,600 / 200 / 200): trains in minutes on a CPU.",
            num_clips=2000,
            clip_seconds=synth.CLIP_SECONDS,
        ),
        SynthConfig(
            name="tiny",
            description="36 clips of 3 s (28 / 4 / 4), built in seconds, for tests.",
            num_clips=36,
            clip_seconds=3.0,
            split_fractions=(28 / 36, 4 / 36, 4 / 36),
        ),
    ]

    def __init__(self, *, file_format="array_record", **kwargs):
        # ArrayRecord is what `as_data_source()` reads with random access and without TensorFlow.
        super().__init__(file_format=file_format, **kwargs)

    def _info(self) -> tfds.core.DatasetInfo:
        return self.dataset_info_from_configs(
            description=__doc__.splitlines()[0],
            features=schema.features(len(synth.TAGS)),
            metadata=schema.metadata(list(synth.TAGS), schema.SAMPLE_RATE),
            supervised_keys=("audio", "labels"),
        )

    def _split_generators(self, dl_manager):
        del dl_manager  # nothing to download
        config = self.builder_config
        split_seeds = config.split_seeds()
        audio_seconds = sum(map(len, split_seeds.values())) * config.clip_seconds
        workers = _cores() if audio_seconds >= _MIN_SECONDS_FOR_WORKERS else 1
        renderer = ClipRenderer(config.clip_seconds, workers, n_uses=len(split_seeds),
                                soundfont=config.soundfont or None)
        return {
            name: self._generate_examples(renderer, name, seeds)
            for name, seeds in split_seeds.items()
        }

    def _generate_examples(self, renderer: ClipRenderer, split: str, seeds: range):
        description = f"Rendering synth/{self.builder_config.name} {split}"
        for seed, audio, labels in renderer.render(seeds, description):
            yield seed, {"audio": audio, "labels": labels, "id": f"synth-{seed:06d}"}
