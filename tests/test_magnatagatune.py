"""The `magnatagatune` builder on a fake copy of the data in the real layout.

The fake tree has `annotations_final.csv` in the real format (tab-separated, quoted, `clip_id`,
188 tag columns holding the top 50 among others, `mp3_path`) and mp3 clips of 16 kHz mono
(like the real ones) or 22.05 kHz stereo in folders `0`-`f`, most 29.2 s long; one clip is too
short for the clean split, one has no top-50 tag, one file is corrupt and one is missing.
"""

import csv
import os

import librosa
import numpy as np
import pytest
import signals
import soundfile

from tagjax.data import get_builder, get_source, magnatagatune, schema

INT16_STEP = 1.0 / 32767

# The issue's list of the top-50 tags, in order: the spec this builder must follow.
TOP50 = [
    "guitar", "classical", "slow", "techno", "strings", "drums", "electronic", "rock", "fast",
    "piano", "ambient", "beat", "violin", "vocal", "synth", "female", "indian", "opera", "male",
    "singing", "vocals", "no vocals", "harpsichord", "loud", "quiet", "flute", "woman",
    "male vocal", "no vocal", "pop", "soft", "sitar", "solo", "man", "classic", "choir", "voice",
    "new age", "dance", "male voice", "female vocal", "beats", "harp", "cello", "no voice",
    "weird", "country", "metal", "female voice", "choral",
]  # fmt: skip
OTHER_TAGS = [f"other tag {i}" for i in range(188 - len(TOP50))]

# clip_id: (folder, seconds or "corrupt"/"missing", (sample rate, channels), tags)
CLIPS = {
    "2": ("0", 29.2, (16000, 1), ["guitar", "classical"]),
    "6": ("3", 29.2, (16000, 1), ["techno", "beat", "electronic", "other tag 7"]),
    "10": ("b", 29.2, (16000, 1), ["female voice", "choral", "no vocal"]),
    "14": ("5", 3.0, (16000, 1), ["rock"]),  # too short for the clean split
    "33": ("e", 29.05, (16000, 1), ["rock"]),  # just under 29.1 s
    "18": ("9", 3.0, (16000, 1), ["other tag 3"]),  # no top-50 tag
    "21": ("c", 29.2, (16000, 1), ["piano"]),
    "35644": ("c", "missing", None, ["rock"]),
    "55753": ("d", "corrupt", None, ["rock"]),
    "25": ("d", 29.2, (22050, 2), ["metal", "loud"]),  # resampled and mixed down
    "29": ("f", 29.2, (16000, 1), ["no vocals", "slow"]),
}
SPLIT_OF = {"0": "train", "3": "train", "5": "train", "9": "train", "b": "train",
            "c": "valid", "d": "test", "e": "test", "f": "test"}  # fmt: skip


def _mp3_path(clip_id):
    return f"{CLIPS[clip_id][0]}/artist-album-{clip_id}-0-29.mp3"


@pytest.fixture(scope="module")
def manual_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("mtat")
    header = ["clip_id", *np.random.default_rng(0).permutation(TOP50 + OTHER_TAGS), "mp3_path"]
    with open(root / "annotations_final.csv", "w", newline="") as file:
        writer = csv.writer(file, delimiter="\t", quoting=csv.QUOTE_ALL, lineterminator="\n")
        writer.writerow(header)
        for clip_id, (_, _, _, tags) in CLIPS.items():
            values = ["1" if name in tags else "0" for name in header[1:-1]]
            writer.writerow([clip_id, *values, _mp3_path(clip_id)])
    for seed, (clip_id, (_, seconds, rate_channels, _)) in enumerate(CLIPS.items()):
        path = root / _mp3_path(clip_id)
        path.parent.mkdir(exist_ok=True)
        if seconds == "corrupt":
            path.write_bytes(b"\xff\xfb\x90\x00" + os.urandom(3000))
        elif seconds != "missing":
            sr, channels = rate_channels
            mono = signals.music_like(sr, seconds, seed=seed)
            samples = mono if channels == 1 else np.stack([mono, np.roll(mono, 50)], axis=1)
            soundfile.write(path, samples, sr, format="MP3")
    return root


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("tfds")


@pytest.fixture(scope="module")
def clean(manual_dir, data_dir):
    # Decode in worker processes here, and in this process for "full".
    return get_builder("magnatagatune", manual_dir=manual_dir, data_dir=data_dir, decode_workers=2)


@pytest.fixture(scope="module")
def full(manual_dir, data_dir):
    return get_builder(
        "magnatagatune", config="full", manual_dir=manual_dir, data_dir=data_dir, decode_workers=0
    )


def _decodable(clip_id):
    return CLIPS[clip_id][1] not in ("missing", "corrupt")


def _expected_ids(split, clean):
    return {
        clip_id
        for clip_id, (folder, seconds, _, tags) in CLIPS.items()
        if SPLIT_OF[folder] == split
        and _decodable(clip_id)
        and (not clean or (seconds >= 29.1 and set(tags) & set(TOP50)))
    }


def test_top50_tags_in_the_issues_order(clean):
    assert list(magnatagatune.TOP50_TAGS) == TOP50
    assert clean.info.metadata["tags"] == TOP50
    assert clean.builder_config.name == "clean"


@pytest.mark.parametrize("config", ["clean", "full"])
def test_splits_follow_folders_and_the_configs_rules(config, request, manual_dir):
    builder = request.getfixturevalue(config)
    for split in ("train", "valid", "test"):
        source = builder.as_data_source()[split]
        ids = {source[i]["id"].decode() for i in range(len(source))}
        assert ids == _expected_ids(split, clean=config == "clean"), split


def test_examples_match_librosa_and_the_annotations(full, manual_dir, data_dir):
    for split in ("train", "valid", "test"):
        source, tags = get_source(
            "magnatagatune", split, config="full", manual_dir=manual_dir, data_dir=data_dir
        )
        assert tags == TOP50
        for i in range(len(source)):
            example = source[i]
            clip_id = example["id"].decode()
            np.testing.assert_array_equal(
                example["labels"], [int(tag in CLIPS[clip_id][3]) for tag in TOP50]
            )
            reference, _ = librosa.load(manual_dir / _mp3_path(clip_id), sr=schema.SAMPLE_RATE)
            assert example["audio"].dtype == np.int16
            assert len(example["audio"]) == len(reference)
            np.testing.assert_allclose(
                schema.int16_to_audio(example["audio"]), reference, rtol=0, atol=INT16_STEP
            )


def test_missing_corrupt_and_short_clips_are_reported(clean, full, manual_dir):
    for builder in (clean, full):
        skipped = {record["key"]: record for record in builder.info.metadata["skipped"]}
        assert skipped["35644"]["reason"] == "no such file"
        assert skipped["35644"]["split"] == "valid"
        assert skipped["55753"]["path"] == os.fspath(manual_dir / _mp3_path("55753"))
        assert skipped["55753"]["split"] == "test"
    assert set(skipped) == {"35644", "55753"}  # full keeps every decodable clip
    clean_skipped = {record["key"]: record for record in clean.info.metadata["skipped"]}
    # Clips without a top-50 tag are filtered before decoding; short ones after, with a reason.
    assert set(clean_skipped) == {"35644", "55753", "14", "33"}
    assert clean_skipped["33"]["reason"].startswith("too short: 29.050 s")


def test_missing_annotations_name_the_files_to_download(tmp_path):
    (tmp_path / "manual").mkdir()
    (tmp_path / "manual" / "0").mkdir()
    with pytest.raises(FileNotFoundError, match=r"annotations_final\.csv(.|\n)*mp3\.zip\.001"):
        get_builder("magnatagatune", manual_dir=tmp_path / "manual", data_dir=tmp_path / "tfds")


def test_annotations_without_a_top50_column_are_rejected(tmp_path):
    path = tmp_path / "annotations_final.csv"
    path.write_text('"clip_id"\t"guitar"\t"mp3_path"\n"2"\t"1"\t"0/a.mp3"\n')
    with pytest.raises(ValueError, match=r"annotations_final\.csv: the header lacks .*'classical'"):
        magnatagatune.read_annotations(path)


@pytest.mark.parametrize(
    "row,message",
    [
        (["2", "2", "0/a.mp3"], "line 2: tag values must be 0 or 1"),
        (["2", "1", "g/a.mp3"], r"line 2: mp3_path 'g/a\.mp3' is not in a folder 0-f"),
        (["2", "1"], "line 2: 2 fields where the header has 3"),
    ],
)
def test_malformed_rows_are_rejected_naming_the_line(tmp_path, monkeypatch, row, message):
    monkeypatch.setattr(magnatagatune, "TOP50_TAGS", ("guitar",))
    path = tmp_path / "annotations_final.csv"
    path.write_text('"clip_id"\t"guitar"\t"mp3_path"\n' + "\t".join(f'"{v}"' for v in row) + "\n")
    with pytest.raises(ValueError, match=message):
        magnatagatune.read_annotations(path)


@pytest.mark.beam
def test_a_beam_build_holds_the_local_builds_examples(clean, manual_dir, tmp_path):
    pytest.importorskip("apache_beam")
    from builds import BEAM_IN_PROCESS, assert_same_build

    beam_built = get_builder("magnatagatune", manual_dir=manual_dir, data_dir=tmp_path,
                             beam_options=BEAM_IN_PROCESS)
    assert_same_build(clean, beam_built)  # the clean split's short clips skipped there too
