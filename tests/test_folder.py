"""The `folder` data set: a folder of audio files and a CSV, checked against librosa.load."""

import os
import re
import shlex

import librosa
import numpy as np
import pytest
import signals
import soundfile

from tagjax.data import folder, get_builder, get_source, schema

# One int16 step: what storing float samples as int16 may change (rounding, at most half).
INT16_STEP = 1.0 / 32767

# (relative path, writer arguments, tags, split); every file differs in format, rate or channels.
GOOD_FILES = [
    ("a/chirp.wav", ("WAV", "PCM_16", 22050, 1, 2.0), ("rock", "guitar"), "train"),
    ("a/b/music.flac", ("FLAC", "PCM_16", 44100, 2, 3.0), ("jazz",), "train"),
    ("noise16k.wav", ("WAV", "FLOAT", 16000, 1, 1.5), (), "valid"),
    ("harmonic.mp3", ("MP3", "MPEG_LAYER_III", 44100, 1, 2.5), ("jazz", "piano"), "train"),
    ("clicks.ogg", ("OGG", "VORBIS", 48000, 2, 2.0), ("drums",), "valid"),
]
CORRUPT = "broken.wav"
MISSING = "gone/missing.flac"


def _write_audio(path, fmt, subtype, sr, channels, seconds, seed):
    mono = signals.music_like(sr, seconds, seed=seed)
    samples = mono if channels == 1 else np.stack([mono, 0.5 * np.roll(mono, 100)], axis=1)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    soundfile.write(path, samples, sr, format=fmt, subtype=subtype)


def _write_csv(path, rows, header="path,tags,split"):
    with open(path, "w") as file:
        file.write(header + "\n")
        for row in rows:
            file.write(",".join(row) + "\n")


@pytest.fixture(scope="module")
def music_folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("music")
    for seed, (relative, (fmt, subtype, sr, channels, seconds), _, _) in enumerate(GOOD_FILES):
        _write_audio(os.fspath(root / relative), fmt, subtype, sr, channels, seconds, seed)
    (root / CORRUPT).write_bytes(b"RIFF\x00\x00\x00\x00WAVEnot really audio" * 20)
    rows = [(path, ";".join(tags), split) for path, _, tags, split in GOOD_FILES]
    rows += [(CORRUPT, "rock", "train"), (MISSING, "jazz", "valid")]
    _write_csv(root / "tags.csv", rows)
    return root


@pytest.fixture(scope="module")
def built(music_folder, tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("tfds")
    builder = get_builder("folder", directory=music_folder, data_dir=data_dir, decode_workers=0)
    return builder, data_dir


def test_tags_are_the_sorted_union_of_the_csv(built):
    builder, _ = built
    expected = sorted({tag for _, _, tags, _ in GOOD_FILES for tag in tags} | {"rock", "jazz"})
    assert builder.info.metadata["tags"] == expected
    assert builder.info.metadata["sample_rate"] == schema.SAMPLE_RATE


def test_examples_match_librosa_and_the_csv(built, music_folder):
    builder, data_dir = built
    tags = builder.info.metadata["tags"]
    for split in ("train", "valid"):
        source, source_tags = get_source(
            "folder", split, directory=music_folder, data_dir=data_dir
        )
        assert source_tags == tags
        expected = {path: file_tags for path, _, file_tags, s in GOOD_FILES if s == split}
        examples = {source[i]["id"].decode(): source[i] for i in range(len(source))}
        assert set(examples) == set(expected)
        for path, file_tags in expected.items():
            example = examples[path]
            assert example["audio"].dtype == np.int16 and example["audio"].ndim == 1
            reference, _ = librosa.load(os.fspath(music_folder / path), sr=schema.SAMPLE_RATE)
            assert len(example["audio"]) == len(reference)
            np.testing.assert_allclose(
                schema.int16_to_audio(example["audio"]), reference, rtol=0, atol=INT16_STEP
            )
            np.testing.assert_array_equal(
                example["labels"], [int(tag in file_tags) for tag in tags]
            )


def test_undecodable_and_missing_files_are_reported_and_skipped(built, music_folder):
    builder, _ = built
    skipped = {record["key"]: record for record in builder.info.metadata["skipped"]}
    assert set(skipped) == {CORRUPT, MISSING}
    assert skipped[CORRUPT]["split"] == "train"
    assert skipped[CORRUPT]["path"] == os.path.join(music_folder, CORRUPT)
    assert skipped[MISSING]["reason"] == "no such file"
    assert skipped[CORRUPT]["reason"]  # libsndfile's own words
    assert builder.info.splits["train"].num_examples == 3
    assert builder.info.splits["valid"].num_examples == 2


def test_the_built_data_set_is_reused(built, music_folder):
    builder, data_dir = built
    again = get_builder("folder", directory=music_folder, data_dir=data_dir)
    assert again.data_dir == builder.data_dir
    assert again.info.metadata["skipped"] == builder.info.metadata["skipped"]


def test_unknown_split_is_named(built, music_folder):
    _, data_dir = built
    with pytest.raises(ValueError, match=r"no split 'test'.*\['train', 'valid'\]"):
        get_source("folder", "test", directory=music_folder, data_dir=data_dir)


def test_without_a_split_column_the_files_are_split_with_a_seed(tmp_path):
    paths = [f"track{i:02d}.wav" for i in range(20)]
    _write_csv(tmp_path / "t.csv", [(path, "a") for path in paths], header="path,tags")
    rows = folder.read_tag_csv(tmp_path, tmp_path / "t.csv")
    split_of = {row.path: row.split for row in rows}
    assert [row.path for row in rows] == paths
    assert sorted(split_of.values()) == ["test"] * 2 + ["train"] * 16 + ["valid"] * 2
    # The seed decides, not the order of the rows; another seed draws another split.
    _write_csv(tmp_path / "r.csv", [(path, "a") for path in reversed(paths)], header="path,tags")
    assert {row.path: row.split for row in folder.read_tag_csv(tmp_path, tmp_path / "r.csv")
            } == split_of
    other = folder.read_tag_csv(tmp_path, tmp_path / "t.csv", split_seed=1)
    assert {row.path: row.split for row in other} != split_of
    # One file each from three files; with fewer, every file is train.
    _write_csv(tmp_path / "3.csv", [("x.wav", "a"), ("y.wav", "b"), ("z.wav", "a")],
               header="path,tags")
    assert sorted(row.split for row in folder.read_tag_csv(tmp_path, tmp_path / "3.csv")) == [
        "test", "train", "valid"]
    _write_csv(tmp_path / "2.csv", [("x.wav", "a;b; a "), ("y.wav", "")], header="path,tags")
    rows = folder.read_tag_csv(tmp_path, tmp_path / "2.csv")
    assert rows == [
        folder.FolderRow("x.wav", ("a", "b"), "train"),
        folder.FolderRow("y.wav", (), "train"),
    ]
    # The seed is part of the data set's config: two seeds never share a build.
    (tmp_path / "tags.csv").write_bytes((tmp_path / "t.csv").read_bytes())
    assert folder.folder_config(tmp_path).name != folder.folder_config(tmp_path, split_seed=1).name
    with pytest.raises(ValueError, match="split_seed must be a whole number"):
        folder.folder_config(tmp_path, split_seed="1")


class _Stop(Exception):
    pass


def test_training_on_a_folder_without_a_split_column_is_one_command(tmp_path, capsys,
                                                                    monkeypatch):
    # The README's command on a folder of generated tracks tagged by a CSV without a split
    # column, with the tiny variant's sizes: it builds the data set with a seeded split, opens
    # its three splits and builds the model, stopped before its initialisation (compiling it
    # takes 30 s here; from there on training is the same for every data set: test_train).
    from tiny_overrides import tiny_overrides

    from tagjax import cli, train

    with open(os.path.join(os.path.dirname(os.path.dirname(__file__)), "README.md")) as f:
        [command] = [line.strip() for line in f
                     if line.strip().startswith("python -m tagjax.train")
                     and "--config.dataset.name=folder" in line]
    music, workdir, data_dir = tmp_path / "music", tmp_path / "run", tmp_path / "tfds"
    paths = [f"{'odd' if i % 2 else 'even'}/track{i:02d}.wav" for i in range(20)]
    for seed, path in enumerate(paths):
        _write_audio(os.fspath(music / path), "WAV", "PCM_16", 16000, 1, 1.5, seed)
    _write_csv(music / "tags.csv", [(path, path.split("/")[0]) for path in paths],
               header="path,tags")
    words = [word.replace("~/music", os.fspath(music)).replace("runs/my_music", str(workdir))
             for word in shlex.split(command)]
    assert words[:3] == ["python", "-m", "tagjax.train"]
    sizes = [f"--config.{key}={value}" for key, value in tiny_overrides("cnn_lstm").items()
             if not key.startswith("dataset.")]
    monkeypatch.setattr(train, "initial_variables", _stop)
    with pytest.raises(_Stop):
        cli.train_main([*words[3:], *sizes, f"--config.dataset.data_dir={data_dir}",
                        "--config.dataset.builder_kwargs={'decode_workers': 0}"])
    assert capsys.readouterr().out.startswith(f"training cnn_lstm in {workdir}\n")
    builder = get_builder("folder", directory=music, data_dir=data_dir, decode_workers=0)
    expected = folder.seeded_splits(paths, 0)
    for split in ("train", "valid", "test"):
        source = builder.as_data_source()[split]
        ids = sorted(source[i]["id"].decode() for i in range(len(source)))
        assert ids == sorted(path for path in paths if expected[path] == split), split
    assert [builder.info.splits[s].num_examples for s in ("train", "valid", "test")] == [16, 2, 2]


def _stop(model, config):
    assert config.dataset.name == "folder" and model.head.num_tags == 2  # even, odd
    raise _Stop


def test_an_explicit_tag_list_keeps_its_order_and_rejects_other_tags(tmp_path):
    rows = [folder.FolderRow("x.wav", ("b", "a"), "train")]
    assert folder.tag_vocabulary(rows, ["c", "b", "a"]) == ["c", "b", "a"]
    with pytest.raises(ValueError, match=r"not in the given tag list: \['b'\].*'x.wav'"):
        folder.tag_vocabulary(rows, ["a"])
    with pytest.raises(ValueError, match="repeats a tag"):
        folder.tag_vocabulary(rows, ["a", "b", "a"])


@pytest.mark.parametrize("kind", ["dotdot", "absolute", "symlink"])
def test_paths_outside_the_folder_are_rejected_naming_the_row(tmp_path, kind):
    root, outside = tmp_path / "root", tmp_path / "outside"
    root.mkdir()
    outside.mkdir()
    soundfile.write(outside / "x.wav", signals.noise(16000, 0.5), 16000)
    soundfile.write(root / "ok.wav", signals.noise(16000, 0.5), 16000)
    if kind == "dotdot":
        bad = "../outside/x.wav"
    elif kind == "absolute":
        bad = os.fspath(outside / "x.wav")
    else:
        os.symlink(outside / "x.wav", root / "link.wav")
        bad = "link.wav"
    _write_csv(root / "tags.csv", [("ok.wav", "a"), (bad, "b")], header="path,tags")
    with pytest.raises(ValueError, match=r"tags.csv, line 3: path .* outside the folder"):
        get_builder("folder", directory=root, data_dir=tmp_path / "tfds")


def test_an_absolute_path_inside_the_folder_is_accepted(tmp_path):
    _write_csv(tmp_path / "tags.csv", [(os.fspath(tmp_path / "sub" / "x.wav"), "a")], "path,tags")
    assert folder.read_tag_csv(tmp_path, tmp_path / "tags.csv")[0].path == "sub/x.wav"


@pytest.mark.parametrize(
    "header,rows,message",
    [
        ("path,labels", [("x.wav", "a")], r"lacks \['tags'\]"),
        ("path,tags", [("", "a")], "line 2: the row has no path"),
        ("path,tags", [("x.wav", "a"), ("./x.wav", "b")], "line 3: 'x.wav' is listed twice"),
        ("path,tags,split", [("x.wav", "a", "tr ain")], "split name 'tr ain'"),
        ("path,tags", [], "lists no files"),
        # A row with a field missing or one too many (an unquoted ',' in a tag) is refused.
        ("path,tags,split", [("x.wav", "a", "train"), ("y.wav", "b")], r"line 3: .* 2 field"),
        ("path,tags,split", [("x.wav", "a", "train", "b")], r"line 2: .* 4 field"),
        ("path,tags", [("x.wav", "a"), ("y.wav",)], r"line 3: .* 1 field"),
        ("path,tags", [("x.wav", "a"), ("y.wav", "a" * 200_000)], "line 3: field larger"),
        # A data set with no tag at all: nothing to learn.
        ("path,tags", [("x.wav", ""), ("y.wav", " ; ")], "'tags' field is empty on every row"),
        # TFDS reads `all` as every split together.
        ("path,tags,split", [("x.wav", "a", "valid"), ("y.wav", "a", "all")], "line 3: .*'all'"),
        ("path,tags,split", [("x.wav", "a", "ALL")], "line 2: split name 'all' is reserved"),
    ],
)
def test_malformed_csvs_are_rejected_naming_the_csv(tmp_path, header, rows, message):
    _write_csv(tmp_path / "tags.csv", rows, header)
    with pytest.raises(ValueError, match=message) as error:
        folder.read_tag_csv(tmp_path, tmp_path / "tags.csv")
    assert "tags.csv" in str(error.value)


def test_a_csv_that_is_not_utf8_is_named_with_the_line(tmp_path):
    (tmp_path / "tags.csv").write_bytes("path,tags\nx.wav,rock\ny.wav,café\n".encode("latin-1"))
    with pytest.raises(ValueError, match=r"tags\.csv, line 3: byte 10 \(0xe9\) is not UTF-8"):
        folder.folder_config(tmp_path)
    # UTF-8, with or without the byte order mark some editors write, is read.
    (tmp_path / "tags.csv").write_bytes("\ufeffpath,tags\ny.wav,café\n".encode())
    assert folder.read_tag_csv(tmp_path, tmp_path / "tags.csv")[0].tags == ("café",)


def test_tags_and_splits_that_differ_only_in_case_are_one(tmp_path, caplog):
    rows = [("x.wav", "Rock;jazz", "Train"), ("y.wav", "rock;ROCK", "train"), ("z.wav", "JAZZ", "")]
    _write_csv(tmp_path / "tags.csv", rows)
    with caplog.at_level("WARNING", logger=folder.logger.name):
        rows = folder.read_tag_csv(tmp_path, tmp_path / "tags.csv")
    assert rows == [
        folder.FolderRow("x.wav", ("Rock", "jazz"), "train"),
        folder.FolderRow("y.wav", ("Rock",), "train"),
        folder.FolderRow("z.wav", ("jazz",), "train"),
    ]
    folds = [record.getMessage() for record in caplog.records]
    assert len(folds) == 3  # once per spelling: rock, ROCK, JAZZ
    assert "line 3: tag 'rock' is taken as 'Rock' (first on line 2)" in folds[0]
    assert folder.tag_vocabulary(rows) == ["Rock", "jazz"]
    # A given tag list is matched without regard to case, and may not repeat a tag that way.
    assert folder.tag_vocabulary(rows, ["JAZZ", "rock"]) == ["JAZZ", "rock"]
    with pytest.raises(ValueError, match=r"repeats a tag \('rock', 'Rock'\)"):
        folder.tag_vocabulary(rows, ["rock", "jazz", "Rock"])


def test_missing_folder_and_csv_are_named(tmp_path):
    with pytest.raises(NotADirectoryError, match="nowhere"):
        folder.folder_config(tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError, match=r"tags\.csv"):
        folder.folder_config(tmp_path)
    with pytest.raises(ValueError, match="directory="):
        get_builder("folder", data_dir=tmp_path / "tfds")


def test_each_folder_and_each_edit_gets_its_own_config(tmp_path):
    for name in ("one", "two"):
        (tmp_path / name).mkdir()
        soundfile.write(tmp_path / name / "x.wav", signals.noise(16000, 0.5), 16000)
        _write_csv(tmp_path / name / "tags.csv", [("x.wav", "a")], header="path,tags")
    one = folder.folder_config(tmp_path / "one")
    assert one.name.startswith("one-")
    assert one.name != folder.folder_config(tmp_path / "two").name
    assert one.name == folder.folder_config(tmp_path / "one").name
    _write_csv(tmp_path / "one" / "tags.csv", [("x.wav", "b")], header="path,tags")
    assert one.name != folder.folder_config(tmp_path / "one").name
    assert folder.folder_config(tmp_path / "one", tags=["b", "a"]).vocabulary == ("b", "a")


def test_a_split_past_the_in_memory_shuffle_limit_builds_without_tensorflow(
    built, music_folder, tmp_path, monkeypatch
):
    # TFDS keeps 1 GB of examples in memory, then spills them to bucket files; a limit of 0
    # takes the spilling path from the first example, without writing gigabytes.
    from tensorflow_datasets.core import shuffle

    monkeypatch.setattr(shuffle, "MAX_MEM_BUFFER_SIZE", 0)
    spilled = get_builder("folder", directory=music_folder, data_dir=tmp_path, decode_workers=0)
    in_memory, _ = built
    for split in ("train", "valid"):
        expected = in_memory.as_data_source()[split]
        expected = {expected[i]["id"]: expected[i] for i in range(len(expected))}
        source = spilled.as_data_source()[split]
        assert len(source) == len(expected)
        for i in range(len(source)):
            example = source[i]
            np.testing.assert_array_equal(example["audio"], expected[example["id"]]["audio"])
            np.testing.assert_array_equal(example["labels"], expected[example["id"]]["labels"])
    assert not list(tmp_path.rglob("bucket_*.tmp"))  # the buckets are cleaned up


# A folder with the quirks that used to go wrong without a word: a float track peaking at 3.0,
# tags and splits that differ only in case, and a split none of whose files decode.
LOUD_PEAK = 3.0


@pytest.fixture(scope="module")
def quirky_folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("quirky")
    loud = signals.music_like(16000, 0.5, seed=1)
    soundfile.write(root / "loud.wav", loud * (LOUD_PEAK / np.abs(loud).max()), 16000, "FLOAT")
    soundfile.write(root / "quiet.wav", signals.music_like(16000, 0.5, seed=2), 16000)
    soundfile.write(root / "other.flac", signals.music_like(22050, 0.5, seed=3), 22050)
    (root / "bad.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEnot really audio" * 20)
    rows = [
        ("loud.wav", "Rock", "train"),
        ("quiet.wav", "rock;ROCK;Jazz", "Train"),
        ("other.flac", "jazz", "TRAIN"),
        ("bad.wav", "rock", "test"),
        ("gone.wav", "jazz", "Test"),
    ]
    _write_csv(root / "tags.csv", rows)
    builder = get_builder(
        "folder", directory=root, data_dir=tmp_path_factory.mktemp("tfds"), decode_workers=0
    )
    return root, builder


def _examples(builder, split):
    source = builder.as_data_source()[split]
    return {source[i]["id"].decode(): source[i] for i in range(len(source))}


def test_a_track_beyond_full_scale_is_scaled_down_by_its_peak_not_clipped(quirky_folder):
    root, builder = quirky_folder
    examples = _examples(builder, "train")
    reference, _ = librosa.load(os.fspath(root / "loud.wav"), sr=schema.SAMPLE_RATE)
    peak = np.abs(reference).max()
    assert peak == pytest.approx(LOUD_PEAK)
    assert builder.info.metadata["rescaled"] == [
        {"split": "train", "key": "loud.wav", "path": os.fspath(root / "loud.wav"), "peak": peak}
    ]
    stored = examples["loud.wav"]["audio"]
    np.testing.assert_allclose(
        schema.int16_to_audio(stored), reference / peak, rtol=0, atol=INT16_STEP
    )
    # Only the peak itself reaches full scale (clipping would flatten most of the track).
    assert np.sum(np.abs(stored) == 32767) == np.sum(np.abs(reference) == peak)
    # Tracks within full scale are stored as they are.
    for path in ("quiet.wav", "other.flac"):
        reference, _ = librosa.load(os.fspath(root / path), sr=schema.SAMPLE_RATE)
        np.testing.assert_allclose(
            schema.int16_to_audio(examples[path]["audio"]), reference, rtol=0, atol=INT16_STEP
        )


def test_case_folded_tags_and_splits_in_the_built_data_set(quirky_folder):
    _, builder = quirky_folder
    assert builder.info.metadata["tags"] == ["Jazz", "Rock"]  # first spellings, sorted
    labels = {key: list(example["labels"]) for key, example in _examples(builder, "train").items()}
    assert labels == {"loud.wav": [0, 1], "quiet.wav": [1, 1], "other.flac": [1, 0]}


def test_a_split_whose_files_all_fail_is_left_out_and_the_others_built(quirky_folder):
    root, builder = quirky_folder
    assert set(builder.info.splits) == {"train"}
    assert builder.info.splits["train"].num_examples == 3
    reason = "none of its 2 file(s) could be decoded"
    assert builder.info.metadata["left_out_splits"] == {"test": reason}
    skipped = {record["key"]: record for record in builder.info.metadata["skipped"]}
    assert set(skipped) == {"bad.wav", "gone.wav"}
    assert {record["split"] for record in skipped.values()} == {"test"}
    assert skipped["gone.wav"]["reason"] == "no such file"
    left_out = re.escape(f"no split 'test': it was left out because {reason}")
    with pytest.raises(ValueError, match=left_out):
        get_source("folder", "test", directory=root, data_dir=builder.data_dir_root)


def test_a_folder_where_no_file_decodes_is_an_error_listing_why(tmp_path):
    (tmp_path / "bad.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEnot really audio" * 20)
    _write_csv(tmp_path / "tags.csv", [("bad.wav", "a", "train"), ("gone.wav", "b", "valid")])
    with pytest.raises(
        ValueError, match=r"tags\.csv: none of the listed files .*bad\.wav \(.*gone\.wav \(no such"
    ):
        get_builder("folder", directory=tmp_path, data_dir=tmp_path / "tfds", decode_workers=0)


@pytest.mark.beam
@pytest.mark.parametrize("writer", ["local", "tfds_beam"])
def test_a_beam_build_holds_the_local_builds_examples(quirky_folder, tmp_path, writer):
    pytest.importorskip("apache_beam")
    from builds import BEAM_IN_PROCESS, BEAM_TFDS_WRITER, assert_same_build

    # A track rescaled, case-folded tags and splits, a split left out: all as built locally,
    # whether TFDS's local writer writes what the DirectRunner decoded or TFDS's Beam writer
    # writes the splits on the workers, as on a cluster runner.
    root, local = quirky_folder
    options = BEAM_IN_PROCESS if writer == "local" else BEAM_TFDS_WRITER
    beam_built = get_builder("folder", directory=root, data_dir=tmp_path, beam_options=options)
    assert_same_build(local, beam_built)
    assert beam_built.info.metadata["rescaled"][0]["key"] == "loud.wav"
    assert not list(beam_built.data_path.glob("beam-*"))  # reports and samples removed
