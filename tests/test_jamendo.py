"""The `jamendo` builder on a fake copy of MTG-Jamendo in the real layout.

The fake tree is what the data set's scripts leave: audio folders `NN/` of `<id>.mp3` (one track
only as the audio-low `<id>.low.mp3`), and `data/splits/split-N/` with the subsets' TSVs in the
real format (tab-separated, header `TRACK_ID ARTIST_ID ALBUM_ID PATH DURATION TAGS`, one tag a
field), made as the data set's `split_filter_subset.py` makes them: each subset keeps its tags
and the tracks that have one. One file is corrupt and one is missing.
"""

import csv
import json
import os
import sys

import librosa
import numpy as np
import pytest
import signals
import soundfile

import tagjax.data
from tagjax.data import get_builder, get_source, jamendo, registry, schema

INT16_STEP = 1.0 / 32767

# track id: (PATH, seconds or "corrupt"/"missing"/"low", sample rate, tags)
TRACKS = {
    "track_0000214": ("14/214.mp3", 4.0, 16000, ["genre---rock", "instrument---guitar"]),
    "track_0003524": ("24/3524.mp3", 3.0, 22050, ["genre---pop", "mood/theme---happy"]),
    "track_0917538": ("38/917538.mp3", 3.5, 16000,
                      ["genre---easylistening", "genre---soundtrack", "instrument---piano"]),
    "track_1310775": ("75/1310775.mp3", "low", 16000, ["genre---rock", "mood/theme---film"]),
    "track_0004882": ("82/4882.mp3", 3.0, 16000, ["mood/theme---meditative"]),  # not in top 50
    "track_1092310": ("10/1092310.mp3", "corrupt", None, ["genre---techno"]),
    "track_0087483": ("83/87483.mp3", "missing", None, ["genre---dance"]),
    "track_1195900": ("00/1195900.mp3", 3.0, 16000, ["genre---pop", "mood/theme---happy"]),
    "track_0000301": ("01/301.mp3", 2.0, 16000,
                      ["genre---classical", "instrument---strings", "instrument---violin"]),
    "track_0000402": ("02/402.mp3", 2.0, 16000,
                      ["genre---electronic", "genre---techno", "instrument---synthesizer"]),
    "track_0000503": ("03/503.mp3", 2.0, 16000, ["genre---ambient", "mood/theme---relaxing"]),
    "track_0000604": ("04/604.mp3", 2.0, 16000,
                      ["genre---metal", "instrument---drums", "instrument---electricguitar"]),
    "track_0000705": ("05/705.mp3", 2.5, 22050,
                      ["genre---rock", "instrument---piano", "mood/theme---relaxing"]),
}
# The official splits of the fake tree: split -> tracks, for split-0, split-1 and split-2 (the
# one a tiny config trains on: a batch of 4 top-50 tracks, and tags with both classes in
# `valid` and `test`).
SPLITS = {
    0: {"train": ["track_0000214", "track_0003524", "track_1310775", "track_1092310"],
        "validation": ["track_0917538", "track_0087483"],
        "test": ["track_0004882", "track_1195900"]},
    1: {"train": ["track_0917538", "track_0004882"],
        "validation": ["track_0000214", "track_1092310", "track_1195900"],
        "test": ["track_0003524", "track_1310775", "track_0087483"]},
    2: {"train": ["track_0000214", "track_0917538", "track_0000301", "track_0000402",
                  "track_1092310"],
        "validation": ["track_0003524", "track_0000503"],
        "test": ["track_1310775", "track_0000604", "track_1195900", "track_0000705",
                 "track_0087483"]},
}  # fmt: skip
OUR_SPLIT = {"train": "train", "validation": "valid", "test": "test"}


def _subset_tags(subset, tags):
    keep = set(jamendo.TAGS[subset])
    return [tag for tag in tags if tag in keep]


def write_tree(root, tracks=TRACKS, splits=SPLITS):
    """Writes a fake MTG-Jamendo copy into `root`: the audio files of `tracks` (as `TRACKS`)
    and the TSVs of every subset for the official splits `splits` (as `SPLITS`)."""
    for seed, (path, seconds, sr, _) in enumerate(tracks.values()):
        file = root / path
        file.parent.mkdir(exist_ok=True)
        if seconds == "corrupt":
            file.write_bytes(b"\xff\xfb\x90\x00" + os.urandom(3000))
        elif seconds == "low":
            low = root / path.replace(".mp3", ".low.mp3")
            soundfile.write(low, signals.music_like(sr, 3.0, seed=seed), sr, format="MP3")
        elif seconds != "missing":
            soundfile.write(file, signals.music_like(sr, seconds, seed=seed), sr, format="MP3")
    for index, parts in splits.items():
        folder = root / "data" / "splits" / f"split-{index}"
        folder.mkdir(parents=True)
        for subset, (stem, _) in jamendo.SUBSETS.items():
            for part, track_ids in parts.items():
                with open(folder / f"{stem}-{part}.tsv", "w", newline="") as file:
                    writer = csv.writer(file, delimiter="\t", lineterminator="\n")
                    writer.writerow(jamendo.HEADER)
                    for number, track_id in enumerate(track_ids):
                        path, _, _, tags = tracks[track_id]
                        kept = _subset_tags(subset, tags)
                        if kept:
                            writer.writerow([track_id, f"artist_{number:06d}",
                                             f"album_{number:06d}", path, "201.3", *kept])
    return root


@pytest.fixture(scope="module")
def manual_dir(tmp_path_factory):
    return write_tree(tmp_path_factory.mktemp("mtg-jamendo"))


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("tfds")


@pytest.fixture(scope="module")
def top50(manual_dir, data_dir):
    # Decode in worker processes here, and in this process for the excerpts.
    return get_builder("jamendo", config="top50", manual_dir=manual_dir, data_dir=data_dir,
                       decode_workers=2)


@pytest.fixture(scope="module")
def excerpts(manual_dir, data_dir):
    return get_builder("jamendo", config="moodtheme-split1-2s", manual_dir=manual_dir,
                       data_dir=data_dir, decode_workers=0)


def _decodable(track_id):
    return TRACKS[track_id][1] not in ("missing", "corrupt")


def _expected(subset, index, split):
    part = {ours: theirs for theirs, ours in OUR_SPLIT.items()}[split]
    return {track_id for track_id in SPLITS[index][part]
            if _decodable(track_id) and _subset_tags(subset, TRACKS[track_id][3])}


def _audio_file(root, track_id):
    path, seconds, _, _ = TRACKS[track_id]
    return root / (path.replace(".mp3", ".low.mp3") if seconds == "low" else path)


def test_tag_lists_have_the_data_sets_sizes():
    # The data set's README: 87 genre, 40 instrument and 56 mood/theme tags in the splits.
    sizes = {subset: len(tags) for subset, tags in jamendo.TAGS.items()}
    assert sizes == {"top50": 50, "genre": 87, "instrument": 40, "moodtheme": 56, "all": 183}
    assert set(jamendo.TAGS["top50"]) < set(jamendo.TAGS["all"])


def test_full_tracks_match_librosa_and_the_tsvs(top50, manual_dir, data_dir):
    assert top50.builder_config.name == "top50"
    for split in ("train", "valid", "test"):
        source, tags = get_source("jamendo", split, manual_dir=manual_dir, data_dir=data_dir)
        assert tags == list(jamendo.TOP50_TAGS)
        ids = [source[i]["id"].decode() for i in range(len(source))]
        assert set(ids) == _expected("top50", 0, split), split
        for i, track_id in enumerate(ids):
            example = source[i]
            np.testing.assert_array_equal(
                example["labels"], [int(tag in TRACKS[track_id][3]) for tag in tags])
            reference, _ = librosa.load(_audio_file(manual_dir, track_id), sr=schema.SAMPLE_RATE)
            assert example["audio"].dtype == np.int16
            assert len(example["audio"]) == len(reference)
            np.testing.assert_allclose(schema.int16_to_audio(example["audio"]), reference,
                                       rtol=0, atol=INT16_STEP)


def test_missing_and_corrupt_tracks_are_reported_and_skipped(top50, manual_dir):
    skipped = {record["key"]: record for record in top50.info.metadata["skipped"]}
    assert set(skipped) == {"track_1092310", "track_0087483"}
    assert skipped["track_0087483"]["reason"] == "no such file"
    assert skipped["track_0087483"]["split"] == "valid"
    assert skipped["track_1092310"]["path"] == os.fspath(manual_dir / "10/1092310.mp3")
    assert skipped["track_1092310"]["split"] == "train"


def test_split_and_excerpt_configs(excerpts, manual_dir):
    # moodtheme on split 1: 2 s from the middle of each track, at the file's own rate, resampled.
    assert excerpts.info.metadata["tags"] == list(jamendo.MOODTHEME_TAGS)
    for split in ("train", "valid", "test"):
        source = excerpts.as_data_source()[split]
        ids = {source[i]["id"].decode() for i in range(len(source))}
        assert ids == _expected("moodtheme", 1, split), split
        for i in range(len(source)):
            example = source[i]
            native, sr = librosa.load(_audio_file(manual_dir, example["id"].decode()), sr=None)
            length = round(2.0 * sr)
            start = (len(native) - length) // 2
            reference = librosa.resample(native[start : start + length], orig_sr=sr,
                                         target_sr=schema.SAMPLE_RATE, res_type="soxr_hq")
            assert len(example["audio"]) == len(reference)
            np.testing.assert_allclose(schema.int16_to_audio(example["audio"]), reference,
                                       rtol=0, atol=INT16_STEP)


def test_training_config_names_the_subset(top50, manual_dir, data_dir):
    from tagjax import configs, train

    config = configs.get("cnn_lstm", "tiny")
    config.dataset.data_dir = str(data_dir)
    config.dataset.name, config.dataset.config = "jamendo", "top50"
    config.dataset.manual_dir = str(manual_dir)
    sources, tags = train._sources(config)
    assert tags == list(jamendo.TOP50_TAGS)
    assert {split: len(source) for split, source in sources.items()} == {
        split: len(_expected("top50", 0, split)) for split in ("train", "valid", "test")}


def test_train_and_zeroshot_end_saying_what_the_data_set_left_out(top50, manual_dir, data_dir,
                                                                  tmp_path, capsys, monkeypatch):
    # As `prepare` answers: the work done, one line saying how many files the data set left out
    # and where they are listed, and exit status 1; the reports list the files.
    from tagjax import cli, configs, train, zeroshot

    listing = os.path.join(top50.data_dir, "metadata.json")
    with open(listing) as f:
        expected = json.load(f)["skipped"]
    assert {record["key"] for record in expected} == {"track_1092310", "track_0087483"}
    notice = (f"note: the data set left out 2 file(s) it could not use; {listing} lists them "
              "with the reason")
    config = configs.get("cnn_lstm", "tiny")
    config.dataset.data_dir = str(data_dir)
    config.dataset.name, config.dataset.config = "jamendo", "top50"
    config.dataset.manual_dir = str(manual_dir)
    sources, _ = train._sources(config)
    assert train._skipped_files_record(sources) == {"skipped_files": expected,
                                                    "skipped_files_listed_in": listing}

    # The commands, without their minutes of training and compiling.
    monkeypatch.setattr(train, "train_and_evaluate", lambda config, workdir: (
        train._skipped_files_record(train._sources(config)[0])))
    code = cli.train_main(["--config", "cnn_lstm:tiny", "--workdir", str(tmp_path / "run"),
                           "--config.dataset.name=jamendo", "--config.dataset.config=top50",
                           f"--config.dataset.manual_dir={manual_dir}",
                           f"--config.dataset.data_dir={data_dir}"])
    assert code == cli.SKIPPED_FILES == 1
    assert capsys.readouterr().err.strip().splitlines()[-1] == notice
    monkeypatch.setattr(zeroshot, "zero_shot_report", lambda model, source, tags, **_: {})
    monkeypatch.setattr(zeroshot, "format_report", lambda report: "the report")
    out = tmp_path / "zeroshot.json"
    code = zeroshot.main(["--dataset", "jamendo", "--dataset-config", "top50", "--manual-dir",
                          str(manual_dir), "--data-dir", str(data_dir), "--out", str(out)])
    assert code == cli.SKIPPED_FILES
    assert capsys.readouterr().err.strip().splitlines()[-1] == notice
    with open(out) as f:
        assert json.load(f)["skipped_files"] == expected


@pytest.mark.parametrize("name", ["top51", "top50-split5", "genre-0s", "top50-30"])
def test_unknown_configs_are_refused_with_the_naming_rule(name, tmp_path):
    with pytest.raises(ValueError, match=r"no config .*<subset>\[-split<N>\]"):
        get_builder("jamendo", config=name, manual_dir=tmp_path, data_dir=tmp_path)


def test_missing_splits_name_what_to_download(tmp_path):
    (tmp_path / "manual" / "00").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match=r"split-0.*autotagging_top50tags-train\.tsv"
                                                r"(.|\n)*download\.py"):
        get_builder("jamendo", manual_dir=tmp_path / "manual", data_dir=tmp_path / "tfds")


@pytest.mark.parametrize(
    "header,row,message",
    [
        ("TRACK_ID\tPATH\tTAGS", None, "the header must be TRACK_ID ARTIST_ID"),
        (None, ["track_1", "artist_1", "album_1", "/etc/passwd", "10.0", "genre---rock"],
         r"line 2: PATH '/etc/passwd' must lie inside"),
        (None, ["track_1", "artist_1", "album_1", "01/1.mp3", "10.0", "rock"],
         r"line 2: tags must read <category>---<tag>, got \['rock'\]"),
        (None, ["track_1", "artist_1", "album_1"], "line 2: 3 fields, at least 5 expected"),
    ],
)
def test_malformed_tsvs_are_rejected_naming_the_line(tmp_path, header, row, message):
    path = tmp_path / "autotagging_top50tags-train.tsv"
    lines = [header or "\t".join(jamendo.HEADER)] + (["\t".join(row)] if row else [])
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(ValueError, match=f"{path.name}.*{message}"):
        jamendo.read_split_tsv(path)


def test_a_tag_outside_the_subset_is_an_error_naming_the_track():
    index = {tag: i for i, tag in enumerate(jamendo.TOP50_TAGS)}
    with pytest.raises(ValueError, match=r"x\.tsv, track_1: tags \['genre---60s'\] are not"):
        jamendo.labels_of(("genre---rock", "genre---60s"), index, "x.tsv, track_1")


@pytest.mark.beam
def test_a_beam_build_holds_the_local_builds_examples(top50, manual_dir, tmp_path):
    pytest.importorskip("apache_beam")
    from builds import BEAM_WORKER_PROCESSES, assert_same_build

    beam_built = get_builder("jamendo", config="top50", manual_dir=manual_dir, data_dir=tmp_path,
                             beam_options=BEAM_WORKER_PROCESSES)
    assert_same_build(top50, beam_built)
    assert not list(beam_built.data_path.glob("beam-*"))  # the decoded samples are removed


def test_beam_options_without_beam_say_what_to_install(monkeypatch, manual_dir, tmp_path):
    # As if Beam were not installed: importing the module that imports it fails.
    monkeypatch.setitem(sys.modules, "tagjax.data.beam_decoding", None)
    monkeypatch.delattr(tagjax.data, "beam_decoding", raising=False)
    monkeypatch.setenv(registry.BEAM_OPTIONS_ENV, "--runner=DirectRunner")
    with pytest.raises(ValueError, match=r"\$TAGJAX_BEAM_OPTIONS asks for an Apache Beam build"
                                         r".*pip install 'tagjax\[beam\]'"):
        get_builder("jamendo", manual_dir=manual_dir, data_dir=tmp_path)
    # The data sets that do not decode audio build as they always do.
    assert registry._beam_options("synth", None, None) is None
    with pytest.raises(ValueError, match="'synth' is not built with Beam"):
        registry._beam_options("synth", "--runner=DirectRunner", None)


@pytest.mark.beam
def test_local_beam_options_run_as_many_processes_as_decode_workers():
    beam_decoding = pytest.importorskip("tagjax.data.beam_decoding")
    from apache_beam.options.pipeline_options import DirectOptions, StandardOptions

    direct = beam_decoding.pipeline_options("", local_workers=3).view_as(DirectOptions)
    assert (direct.direct_num_workers, direct.direct_running_mode) == (3, "multi_processing")
    chosen = beam_decoding.pipeline_options(
        "--direct_num_workers=1 --direct_running_mode=in_memory", local_workers=3
    ).view_as(DirectOptions)
    assert (chosen.direct_num_workers, chosen.direct_running_mode) == (1, "in_memory")
    cluster = beam_decoding.pipeline_options(
        "--runner=FlinkRunner --flink_master=localhost:8081", local_workers=3)
    assert cluster.view_as(StandardOptions).runner == "FlinkRunner"
    assert cluster.view_as(DirectOptions).direct_running_mode != "multi_processing"
    tfds_form = beam_decoding.pipeline_options("runner=DirectRunner,direct_num_workers=4", 3)
    assert tfds_form.view_as(DirectOptions).direct_num_workers == 4
    # TFDS's Beam writer on a cluster runner; on the DirectRunner only when asked for.
    assert beam_decoding.uses_tfds_beam_writer(cluster)
    for flags, expected in [("", False), ("--runner=DirectRunner", False),
                            ("--experiments=tfds_beam_writer", True)]:
        options = beam_decoding.pipeline_options(flags, local_workers=3)
        assert beam_decoding.uses_tfds_beam_writer(options) == expected, flags


@pytest.mark.beam
def test_direct_runner_decoding_yields_the_pools_results_in_order(tmp_path, monkeypatch):
    beam_decoding = pytest.importorskip("tagjax.data.beam_decoding")
    from builds import BEAM_IN_PROCESS

    from tagjax.data import decode_pool

    t = np.arange(8000) / 16000
    soundfile.write(tmp_path / "tone.wav", 0.5 * np.sin(2 * np.pi * 440 * t), 16000)
    soundfile.write(tmp_path / "loud.wav", 2.0 * np.sin(2 * np.pi * 220 * t), 16000,
                    subtype="FLOAT")
    jobs = [("tone", tmp_path / "tone.wav"), ("gone", tmp_path / "gone.wav"),
            ("loud", tmp_path / "loud.wav")]
    expected_rescaled, rescaled = [], []
    with decode_pool.DecodePool(0) as pool:
        expected = list(pool.decode(jobs, rescaled=expected_rescaled, progress=False))
    options = beam_decoding.pipeline_options(BEAM_IN_PROCESS, local_workers=1)
    with beam_decoding.DirectRunnerDecoding(options, tmp_path / "work") as decoding:
        # Both calls' jobs are taken before any is read: one pipeline decodes them.
        first = decoding.decode(jobs[:2], rescaled=rescaled)
        second = decoding.decode(jobs[2:], rescaled=rescaled)
        got = list(first) + list(second)
    assert [key for key, _ in got] == [key for key, _ in expected]
    for (_, result), (_, reference) in zip(got, expected, strict=True):
        if isinstance(reference, decode_pool.Skipped):
            assert result == reference
        else:
            np.testing.assert_array_equal(result, reference)
    assert rescaled == expected_rescaled and [r.key for r in rescaled] == ["loud"]
    assert not (tmp_path / "work").exists()

    # A pipeline that fails is an error where its results are read.
    def no_room(path, data):
        raise OSError(f"{path}: no space left on device")

    monkeypatch.setattr(beam_decoding, "_write_whole", no_room)
    with (beam_decoding.DirectRunnerDecoding(options, tmp_path / "work") as decoding,
          pytest.raises(RuntimeError, match="the Beam pipeline decoding the files failed")):
        list(decoding.decode(jobs))


def test_prepare_command_lists_the_splits_and_exits_1_for_skipped_tracks(top50, manual_dir,
                                                                         data_dir, capsys):
    from tagjax import prepare

    code = prepare.main(["jamendo", "--config", "top50", "--manual_dir", str(manual_dir),
                         "--data_dir", str(data_dir)])
    out, err = capsys.readouterr()
    assert code == prepare.SKIPPED_FILES
    assert f"  train: {len(_expected('top50', 0, 'train'))} examples" in out
    assert "2 file(s) skipped" in err and "10/1092310.mp3" in err
    metadata = json.loads((top50.data_path / "metadata.json").read_text())
    assert {record["key"] for record in metadata["skipped"]} == {"track_1092310",
                                                                 "track_0087483"}


@pytest.mark.parametrize("args,message", [
    (["jamendoo"], "unknown data set 'jamendoo' (did you mean 'jamendo'?)"),
    (["jamendo", "--manual_dir", "/no/such/folder"], "--manual_dir '/no/such/folder' is not a"),
    (["jamendo", "--config", "top50-split9"], "has no config 'top50-split9'"),
])
def test_prepare_command_mistakes_are_one_line(args, message, capsys):
    from tagjax import prepare

    with pytest.raises(SystemExit) as exit_info:
        prepare.main(args)
    err = capsys.readouterr().err
    assert exit_info.value.code == 2
    assert err.startswith("error: ") and message in err and err.count("\n") == 1


# musicnn-mtt's tags that tag_mapping finds for the top 50, by the rule of `tag_mapping`: the
# name without its category as the model spells it, else spelt the same but for spaces
# (`newage`). Not `synthesizer` (the model says `synth`), nor `electricguitar`, `happy`, ...
TOP50_IN_MUSICNN_MTT = {
    "genre---ambient": ["ambient"], "genre---classical": ["classical"],
    "genre---dance": ["dance"], "genre---electronic": ["electronic"], "genre---metal": ["metal"],
    "genre---newage": ["new age"], "genre---pop": ["pop"], "genre---rock": ["rock"],
    "genre---techno": ["techno"], "instrument---drums": ["drums"],
    "instrument---guitar": ["guitar"], "instrument---piano": ["piano"],
    "instrument---strings": ["strings"], "instrument---violin": ["violin"],
    "instrument---voice": ["voice"],
}  # fmt: skip


def test_experiments_train_and_score_zero_shot_on_the_subsets_tags_track_by_track(
    manual_dir, data_dir, tmp_path
):
    import jax
    import sklearn.metrics
    from tiny_overrides import as_set_arguments, tiny_overrides

    from tagjax import experiments, rundir

    # As a user types it, the zero-shot row first: it builds the data set from manual_dir (in
    # this process: worker processes take seconds to start). mfcc_bof compiles fastest of the
    # tiny configs (no LSTM; its k-means is compiled by test_train's run too).
    out, row = tmp_path / "experiments", "mfcc_bof"
    code = experiments.main(
        ["--out", str(out), "--configs", f"zeroshot,{row}", "--baseline", str(tmp_path / "no"),
         *as_set_arguments(tiny_overrides(row)), "--set", "num_epochs=1",
         "--config.dataset.name=jamendo", "--config.dataset.config=top50-split2",
         f"--config.dataset.manual_dir={manual_dir}", f"--config.dataset.data_dir={data_dir}",
         "--config.dataset.builder_kwargs={'decode_workers': 0}"])
    assert code == 1  # the tree's corrupt and missing tracks, as prepare answers

    source, tags = get_source("jamendo", "test", config="top50-split2", data_dir=data_dir)
    ids = [source[i]["id"].decode() for i in range(len(source))]
    assert set(ids) == _expected("top50", 2, "test")  # the missing track is left out
    labels = np.array([[tag in TRACKS[track_id][3] for tag in tags] for track_id in ids])
    one_class = {tag for tag, column in zip(tags, labels.T, strict=True)
                 if column.all() or not column.any()}

    # The trained run: one score per test track and tag, the mean over its evenly spaced
    # chunks; macro ROC-AUC and PR-AUC over the subset's tags that have both classes.
    report = json.loads((out / row / "results.json").read_text())
    assert report["num_examples"] == len(ids) and list(report["per_tag"]) == tags
    assert set(report["excluded_tags"]) == one_class
    model, variables, run = rundir.restore(out / row)
    chunk, n_chunks = round(run.train.crop_seconds * schema.SAMPLE_RATE), run.train.eval_chunks
    chunks = []
    for i in range(len(source)):
        audio = schema.int16_to_audio(source[i]["audio"])
        starts = [k * (len(audio) - chunk) // (n_chunks - 1) for k in range(n_chunks)]
        chunks += [audio[start : start + chunk] for start in starts]
    predict = jax.jit(lambda inputs: jax.nn.sigmoid(model.apply(variables, inputs, train=False)))
    scores = np.asarray(predict(np.stack(chunks))).reshape(len(source), n_chunks, -1).mean(1)
    evaluated = [j for j, tag in enumerate(tags) if tag not in one_class]
    assert report["roc_auc"] == pytest.approx(np.mean(
        [sklearn.metrics.roc_auc_score(labels[:, j], scores[:, j]) for j in evaluated]), abs=1e-6)
    assert report["pr_auc"] == pytest.approx(np.mean(
        [sklearn.metrics.average_precision_score(labels[:, j], scores[:, j])
         for j in evaluated]), abs=1e-6)

    # Zero-shot: the tags the published model predicts, scored where the test split has both
    # classes; the others are listed as not predicted.
    zero_shot = json.loads((out / "zeroshot" / "results.json").read_text())
    assert zero_shot["skipped_files"] == report["skipped_files"]
    assert {record["key"] for record in report["skipped_files"]} == {"track_1092310",
                                                                     "track_0087483"}
    assert zero_shot["mapping"] == TOP50_IN_MUSICNN_MTT
    assert zero_shot["unmatched"] == [tag for tag in tags if tag not in TOP50_IN_MUSICNN_MTT]
    assert zero_shot["num_examples"] == len(ids)
    assert set(zero_shot["excluded_tags"]) == one_class & set(TOP50_IN_MUSICNN_MTT)
    assert zero_shot["num_tags_evaluated"] == 5  # rock, metal, drums, pop, piano
    rows = (out / "experiments.md").read_text()
    for name, scored in (("zeroshot", zero_shot), (row, report)):
        assert f"| {name} | {scored['roc_auc']:.4f} | {scored['pr_auc']:.4f} |" in rows


@pytest.mark.parametrize("args,message", [
    (["--manual-dir", "/no/such/folder"], "--manual-dir /no/such/folder is not a folder"),
    ([], ".*does not hold them: pass manual_dir=.* \\(here: --manual-dir DIR\\)"),
])
def test_zeroshot_command_mistakes_on_jamendo_are_one_line(args, message, tmp_path, capsys):
    from tagjax import zeroshot

    with pytest.raises(SystemExit, match=f"^error: {message}$"):
        zeroshot.main(["--dataset", "jamendo", "--data-dir", str(tmp_path), *args])
