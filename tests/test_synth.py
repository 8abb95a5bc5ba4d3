"""`tj.data.synth`: composition, tags, rendering and the TFDS builder of the embedded data set.

The tags are checked against what the MIDI holds, read through pretty_midi's General MIDI names
(a reference we did not write); rendering against closed-form pitches and librosa's resampler;
the builder against `compose` and `make_clip` of each example's seed.
"""

import collections
import os
import shutil
import subprocess
import sys

import librosa
import numpy as np
import pretty_midi
import pytest
import tensorflow_datasets as tfds

from tagjax.data import schema, synth, synth_builder

N_COMPOSED = 600  # compositions take ~4 ms each; rates are binomial with std <= 2 %
TINY = synth_builder.Synth.BUILDER_CONFIGS[1]

# Instrument tags by their General MIDI names (pretty_midi.program_to_instrument_name/_class).
_STRING_NAMES = {"Violin", "Viola", "Cello", "Contrabass", "Tremolo Strings", "Pizzicato Strings",
                 "String Ensemble 1", "String Ensemble 2", "Fiddle"}  # fmt: skip
INSTRUMENT_TAGS = {
    "piano": lambda name, family: name.endswith("Piano"),
    "harpsichord": lambda name, family: name == "Harpsichord",
    "organ": lambda name, family: name.endswith("Organ"),
    "guitar": lambda name, family: family == "Guitar",
    "bass": lambda name, family: family == "Bass",
    "violin": lambda name, family: name in ("Violin", "Fiddle"),
    "cello": lambda name, family: name == "Cello",
    "strings": lambda name, family: name in _STRING_NAMES,
    "harp": lambda name, family: name == "Orchestral Harp",
    "choir": lambda name, family: name in ("Choir Aahs", "Voice Oohs"),
    "flute": lambda name, family: name in ("Flute", "Piccolo"),
    "synth": lambda name, family: family in ("Synth Lead", "Synth Pad"),
    "sitar": lambda name, family: name == "Sitar",
}


def _kick_and_snare(instrument):
    names = [pretty_midi.note_number_to_drum_name(n.pitch) for n in instrument.notes]
    return any("Bass Drum" in name or "Snare" in name for name in names)


def _four_on_the_floor(instrument, tempo, seconds):
    """Kicks on every beat of the clip and nowhere else (give or take a drummer's 30 ms)."""
    beat = 60.0 / tempo
    kicks = np.array([n.start for n in instrument.notes if n.pitch in (35, 36)])
    if len(kicks) == 0:
        return False
    off_beat = np.abs(kicks - beat * np.round(kicks / beat))
    beats_hit = set(np.round(kicks / beat).astype(int))
    return off_beat.max() < 0.03 and beats_hit >= set(range(int(seconds / beat)))


@pytest.fixture(scope="module")
def compositions():
    return [synth.compose(seed) for seed in range(N_COMPOSED)]


def test_tag_vocabulary():
    assert len(synth.TAGS) >= 20
    assert len(set(synth.TAGS)) == len(synth.TAGS)
    for name in ("guitar", "classical", "slow", "techno", "strings", "drums", "electronic",
                 "rock", "fast", "piano", "ambient", "beat", "violin", "synth", "harpsichord",
                 "loud", "quiet", "flute", "sitar", "solo", "choir", "harp", "cello", "dance",
                 "organ", "bass"):  # fmt: skip
        assert name in synth.TAGS


def test_compose_is_deterministic_and_seeds_differ():
    def midi_bytes(midi):
        buffer = __import__("io").BytesIO()
        midi.write(buffer)
        return buffer.getvalue()

    first, again, other = synth.compose(7), synth.compose(7), synth.compose(8)
    assert first[1] == again[1]
    assert midi_bytes(first[0]) == midi_bytes(again[0])
    assert midi_bytes(first[0]) != midi_bytes(other[0])


@pytest.mark.parametrize("seed", [-1, 1.5])
def test_compose_rejects_bad_seeds(seed):
    with pytest.raises(ValueError, match="seed"):
        synth.compose(seed)


def test_instrument_tags_follow_the_general_midi_programs(compositions):
    for seed, (midi, tags) in enumerate(compositions):
        pitched = [
            (pretty_midi.program_to_instrument_name(i.program),
             pretty_midi.program_to_instrument_class(i.program))
            for i in midi.instruments if not i.is_drum
        ]  # fmt: skip
        for tag, plays in INSTRUMENT_TAGS.items():
            assert (tag in tags) == any(plays(*p) for p in pitched), (seed, tag, pitched, tags)
        kit = any(i.is_drum and _kick_and_snare(i) for i in midi.instruments)
        assert ("drums" in tags) == kit, (seed, tags)


def test_tempo_dynamics_and_texture_tags_follow_the_midi(compositions):
    velocities = collections.defaultdict(list)
    for seed, (midi, tags) in enumerate(compositions):
        tempo = midi.get_tempo_changes()[1][0]
        assert ("slow" in tags) == (tempo < synth.SLOW_BELOW_BPM), (seed, tempo)
        assert ("fast" in tags) == (tempo > synth.FAST_ABOVE_BPM), (seed, tempo)
        # The tempo bands leave gaps around the thresholds, so no clip is a borderline case.
        assert abs(tempo - synth.SLOW_BELOW_BPM) > 3 and abs(tempo - synth.FAST_ABOVE_BPM) > 3
        kits = [i for i in midi.instruments if i.is_drum and _kick_and_snare(i)]
        beat = any(_four_on_the_floor(i, tempo, synth.CLIP_SECONDS) for i in kits)
        assert ("beat" in tags) == beat, (seed, tags)
        ensembles = ("String Ensemble", "Choir", "Voice")
        alone = len(midi.instruments) == 1 and not midi.instruments[0].is_drum
        name = pretty_midi.program_to_instrument_name(midi.instruments[0].program)
        assert ("solo" in tags) == (alone and not name.startswith(ensembles)), (seed, tags)
        level = "quiet" if "quiet" in tags else "loud" if "loud" in tags else "moderate"
        notes = [n.velocity for i in midi.instruments for n in i.notes]
        velocities[level].append(np.mean(notes))
        # Every part plays through the clip: some note of it sounds in every 2-second window.
        for instrument in midi.instruments:
            starts = np.array([n.start for n in instrument.notes])
            ends = np.array([n.end for n in instrument.notes])
            for window in np.arange(0.0, synth.CLIP_SECONDS - 1.0, 1.0):
                sounding = (starts < window + 2.0) & (ends > window)
                assert sounding.any(), (seed, instrument.program, window)
    assert max(velocities["quiet"]) < min(velocities["moderate"])
    assert max(velocities["moderate"]) < min(velocities["loud"])


def test_tag_rates_and_co_occurrence(compositions):
    counts = collections.Counter(tag for _, tags in compositions for tag in tags)
    rates = {tag: counts[tag] / N_COMPOSED for tag in synth.TAGS}
    # The design keeps every rate in [5 %, 60 %]; 1.5 % of slack is about two binomial stds.
    for tag, rate in rates.items():
        assert 0.035 <= rate <= 0.615, (tag, rate)
    for _, tags in compositions:
        tags = set(tags)
        assert tags <= set(synth.TAGS)
        assert not {"slow", "fast"} <= tags and not {"loud", "quiet"} <= tags
        assert "metal" not in tags or {"rock", "guitar", "drums"} <= tags
        assert "techno" not in tags or {"electronic", "dance", "beat", "synth"} <= tags
        assert "classical" not in tags or "drums" not in tags
        assert "indian" not in tags or "drums" not in tags  # tabla (hand percussion), no kit
        assert "solo" not in tags or "drums" not in tags
    # Tags co-occur: most clips carry several, as real tag sets do.
    assert np.mean([len(tags) for _, tags in compositions]) >= 3.0


def _peak_hz(audio, sr):
    spectrum = np.abs(np.fft.rfft(audio * np.hanning(len(audio))))
    return np.argmax(spectrum) * sr / len(audio)


def _single_note(program, pitch, seconds=1.5, velocity=100):
    midi = pretty_midi.PrettyMIDI(initial_tempo=120)
    instrument = pretty_midi.Instrument(program=program)
    instrument.notes.append(pretty_midi.Note(velocity, pitch, 0.0, seconds))
    midi.instruments.append(instrument)
    return midi


@pytest.mark.parametrize("sr", [16000, 22050])
@pytest.mark.parametrize("program,pitch", [(0, 69), (40, 76), (52, 64)])
def test_render_plays_the_right_pitch(sr, program, pitch):
    audio = synth.render(_single_note(program, pitch), sr=sr)
    assert audio.dtype == np.float32 and audio.ndim == 1
    assert abs(len(audio) / sr - 1.5) < 0.1
    middle = audio[round(0.3 * sr) : round(1.2 * sr)]
    f0 = np.median(librosa.yin(middle, fmin=100, fmax=1000, sr=sr, frame_length=2048))
    # The SoundFont's samples are tuned by ear: the right note is within a quarter tone.
    assert abs(12 * np.log2(f0 / pretty_midi.note_number_to_hz(pitch))) < 0.5, f0


def test_render_resampling_matches_librosa():
    midi = synth.compose(3, seconds=2.0)[0]
    native = synth.render(midi, sr=48000)
    reference = librosa.resample(native, orig_sr=48000, target_sr=16000, res_type="soxr_hq")
    ours = synth.render(midi, sr=16000)
    assert abs(len(ours) - len(reference)) <= 1
    n = min(len(ours), len(reference))
    np.testing.assert_allclose(ours[:n], reference[:n], rtol=0, atol=1e-6)


def test_render_level_follows_velocity():
    quiet = synth.render(_single_note(0, 60, velocity=40))
    loud = synth.render(_single_note(0, 60, velocity=110))
    assert 20 * np.log10(np.sqrt(np.mean(loud**2)) / np.sqrt(np.mean(quiet**2))) > 6.0


def test_render_takes_any_soundfont_file(tmp_path):
    copy = tmp_path / "copy.sf2"
    shutil.copyfile(synth.DEFAULT_SOUNDFONT, copy)
    midi = _single_note(73, 72, seconds=0.5)
    np.testing.assert_array_equal(synth.render(midi, soundfont=copy), synth.render(midi))
    with pytest.raises(FileNotFoundError, match=r"missing\.sf2"):
        synth.render(midi, soundfont=tmp_path / "missing.sf2")
    not_a_soundfont = tmp_path / "notes.sf2"
    not_a_soundfont.write_bytes(b"RIFF\x00\x00\x00\x00WAVEfmt " + bytes(64))
    with pytest.raises(ValueError, match=r"notes\.sf2"):
        synth.render(midi, soundfont=not_a_soundfont)


def test_rendered_loudness_follows_the_dynamics_tags():
    levels = collections.defaultdict(list)
    for seed in range(48):
        audio, tags = synth.make_clip(seed, seconds=2.0)
        level = "quiet" if "quiet" in tags else "loud" if "loud" in tags else "moderate"
        levels[level].append(10 * np.log10(np.mean(audio.astype(np.float64) ** 2)))
    medians = {level: np.median(values) for level, values in levels.items()}
    assert medians["loud"] > medians["moderate"] + 3.0 > medians["quiet"] + 6.0, medians


def test_make_clip_is_exactly_as_long_as_asked_and_deterministic():
    audio, tags = synth.make_clip(11, seconds=1.25)
    again, same_tags = synth.make_clip(11, seconds=1.25)
    assert audio.shape == (20000,) and audio.dtype == np.float32
    assert np.sqrt(np.mean(audio**2)) > 1e-4 and tags == same_tags
    np.testing.assert_array_equal(audio, again)
    assert tags == synth.compose(11, seconds=1.25)[1]


def test_parallel_rendering_equals_serial():
    seeds = [5, 0, 17, 3, 9]
    serial = list(synth_builder.ClipRenderer(1.0, workers=1).render(seeds))
    parallel = list(synth_builder.ClipRenderer(1.0, workers=2).render(seeds))
    assert [s for s, _, _ in parallel] == seeds
    for (_, audio, labels), (_, audio_p, labels_p) in zip(serial, parallel, strict=True):
        np.testing.assert_array_equal(audio, audio_p)
        np.testing.assert_array_equal(labels, labels_p)


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("tfds")
    synth.load("train", config="tiny", data_dir=data_dir)
    return data_dir


def test_tiny_builder_splits_schema_and_metadata(tiny_dir):
    builder = synth.builder("tiny", tiny_dir)
    assert builder.name == "synth" and builder.builder_config.name == "tiny"
    assert builder.info.metadata["tags"] == list(synth.TAGS)
    assert builder.info.metadata["sample_rate"] == schema.SAMPLE_RATE
    sizes = {name: split.num_examples for name, split in builder.info.splits.items()}
    assert sizes == {name: len(seeds) for name, seeds in TINY.split_seeds().items()}
    assert sizes == {"train": 28, "valid": 4, "test": 4}
    assert any(f.endswith(".array_record-00000-of-00001") for f in os.listdir(builder.data_dir))
    seen = {}
    for split in ("train", "valid", "test"):
        source = synth.load(split, config="tiny", data_dir=tiny_dir)
        for i in range(len(source)):
            example = source[i]
            seed = int(example["id"].decode().removeprefix("synth-"))
            assert seed in TINY.split_seeds()[split]
            seen[seed] = example
            assert example["audio"].dtype == np.int16
            assert example["audio"].shape == (round(TINY.clip_seconds * schema.SAMPLE_RATE),)
            assert example["labels"].dtype == np.uint8 and example["labels"].shape == (32,)
            tags = synth.compose(seed, TINY.clip_seconds)[1]
            np.testing.assert_array_equal(
                example["labels"], [tag in tags for tag in synth.TAGS], err_msg=str(seed)
            )
    assert sorted(seen) == list(range(TINY.num_clips))
    audio, _ = synth.make_clip(3, TINY.clip_seconds)
    np.testing.assert_array_equal(seen[3]["audio"], schema.audio_to_int16(audio))


def test_second_use_is_a_cache_hit(tiny_dir, monkeypatch):
    def fail(*args, **kwargs):
        raise AssertionError("rendered again")

    monkeypatch.setattr(synth_builder.ClipRenderer, "render", fail)
    monkeypatch.setattr(synth, "make_clip", fail)
    assert len(synth.load("test", config="tiny", data_dir=tiny_dir)) == 4


def test_registered_with_tfds_and_readable_by_name(tiny_dir):
    assert "synth" in tfds.list_builders(with_community_datasets=False)
    builder = tfds.builder("synth/tiny", data_dir=os.fspath(tiny_dir))
    assert builder.info.file_format.value == "array_record"
    assert len(builder.as_data_source("valid")) == 4


_BUILD_IN_SUBPROCESS = """
import sys
import tagjax as tj
if sys.argv[1] == "build":
    print(len(tj.data.synth.load("valid", config="tiny")), end=" ")
print(tj.data.synth.builder("tiny").data_dir)
"""


@pytest.mark.parametrize("variable", ["HOME", "TFDS_DATA_DIR"])
def test_default_data_dir(tmp_path, variable):
    # TFDS reads its default data dir when it is imported, so each case runs in a new process.
    # One case builds the data set there; the other only asks where it would be built.
    build = variable == "TFDS_DATA_DIR"
    env = {k: v for k, v in os.environ.items() if k != "TFDS_DATA_DIR"}
    env[variable] = os.fspath(tmp_path)
    run = subprocess.run([sys.executable, "-c", _BUILD_IN_SUBPROCESS, "build" if build else "path"],
                         env=env, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-2000:]
    root = tmp_path / "tensorflow_datasets" if variable == "HOME" else tmp_path
    expected = root / "synth" / "tiny" / "1.0.0"
    assert run.stdout.splitlines()[-1].split() == (["4"] if build else []) + [os.fspath(expected)]
    if build:
        assert (expected / "dataset_info.json").is_file()
