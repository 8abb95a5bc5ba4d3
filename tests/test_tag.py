"""`tj.Tagger` and `python -m tagjax.tag` on the tiny trained run.

The run's accuracy is near chance, so these tests check the mechanics against references
computed here by other means: chunks cut by explicit slicing, the model applied directly to
them, soundfile's own decoding, and one track at a time against many tracks in shared batches.
"""

import csv
import functools
import io
import json
import os
import re
import threading

import jax
import matplotlib.image
import numpy as np
import permissions
import pytest
import signals
import soundfile

import tagjax as tj
from tagjax import chunking
from tagjax import tag as tag_cli
from tagjax.data import AudioDecodeError, load_audio

SR = 16000
CHUNK = SR  # the tiny run's crop_seconds is 1.0
# Float32 model outputs from differently composed batches agree to rounding (jax's tests use
# 1e-5 for float32); the averaging itself is done in float64.
RTOL, ATOL = 1e-5, 1e-6


@pytest.fixture(scope="module")
def taggers(trained_run):
    """`taggers(hop_seconds=None)`: taggers of the run (restored once; all share one compiled
    batch shape, as does the command line with `--batch-size 4`)."""
    restored = tj.Tagger.from_workdir(trained_run, batch_size=4, workers=2)

    @functools.cache
    def make(hop_seconds=None):
        if hop_seconds is None:
            return restored
        return tj.Tagger(restored.model, restored.variables, tags=restored.tags,
                         sample_rate=restored.sample_rate, chunk_seconds=restored.chunk_seconds,
                         hop_seconds=hop_seconds, batch_size=4, workers=2)

    return make


@pytest.fixture(scope="module")
def direct(taggers):
    """`direct(chunks (n, CHUNK))` -> the model's probabilities and embeddings of each chunk,
    applied one chunk at a time (one compilation, independent of the tagger's batching)."""
    tagger = taggers()
    model = tagger.model

    @jax.jit
    def one_chunk(chunk):
        logits = model.apply(tagger.variables, chunk, train=False)
        embedding = model.apply(tagger.variables, chunk, train=False, method=model.embed)
        return jax.nn.sigmoid(logits), embedding

    def apply(chunks):
        outputs = [one_chunk(chunk[None]) for chunk in np.asarray(chunks, np.float32)]
        return tuple(np.concatenate([np.asarray(o[i], np.float64) for o in outputs])
                     for i in range(2))

    return apply


def _reference_chunks(x: np.ndarray, chunk: int, hop: int):
    """Chunks and real-audio fractions by explicit slicing, one chunk at a time."""
    chunks, weights, start = [], [], 0
    while True:
        piece = x[start:start + chunk]
        chunks.append(np.pad(piece, (0, chunk - len(piece))))
        weights.append(len(piece) / chunk)
        if start + chunk >= len(x):
            return np.stack(chunks), np.array(weights)
        start += hop


def _direct(direct, x: np.ndarray, hop: int):
    """Per-chunk probabilities from the model applied directly to explicitly sliced chunks, and
    the weighted means of the probabilities and embeddings."""
    chunks, weights = _reference_chunks(x, CHUNK, hop)
    probabilities, embeddings = direct(chunks)
    mean = lambda v: (weights[:, None] * v).sum(0) / weights.sum()  # noqa: E731
    return probabilities, mean(probabilities), mean(embeddings)


@pytest.mark.parametrize("num_samples", [1, 99, 100, 101, 250, 300, 301])
@pytest.mark.parametrize("hop", [100, 40, 130])
def test_chunk_track_matches_explicit_slicing(num_samples, hop):
    x = np.random.default_rng(num_samples).standard_normal(num_samples).astype(np.float32)
    chunks, weights = chunking.chunk_track(x, 100, hop)
    expected_chunks, expected_weights = _reference_chunks(x, 100, hop)
    np.testing.assert_array_equal(chunks, expected_chunks)
    np.testing.assert_allclose(weights, expected_weights, rtol=1e-7)
    np.testing.assert_array_equal(chunking.tile_starts(num_samples, 100, hop),
                                  np.arange(len(expected_chunks)) * hop)


@pytest.mark.parametrize("num_samples", [0, 1, 99, 100, 101, 250, 301, 1000])
@pytest.mark.parametrize("hop,lead", [(100, 0), (40, 0), (130, 0), (70, 30), (100, 30)])
def test_stream_chunks_equal_chunk_track_for_any_split(num_samples, hop, lead):
    rng = np.random.default_rng(num_samples)
    x = rng.standard_normal(num_samples).astype(np.float32)
    expected_chunks, expected_weights = chunking.chunk_track(x, 100, hop, lead)
    # Blocks of 0 to 300 samples: empty ones, ones shorter than a hop, ones longer than a chunk.
    cuts = np.sort(rng.integers(0, num_samples + 1, size=rng.integers(0, 12)))
    blocks = np.split(x, cuts)
    streamed = list(chunking.stream_chunks(iter(blocks), 100, hop, lead))
    np.testing.assert_array_equal(np.stack([c for c, _ in streamed]), expected_chunks)
    np.testing.assert_array_equal(np.array([w for _, w in streamed]), expected_weights)
    assert all(c.dtype == np.float32 and w.dtype == np.float32 for c, w in streamed)


def test_weighted_mean_is_numpy_average():
    rng = np.random.default_rng(0)
    values, weights = rng.random((7, 3, 2)), rng.random(7)
    np.testing.assert_allclose(chunking.weighted_mean(values, weights),
                               np.average(values, axis=0, weights=weights), rtol=1e-6)


@pytest.mark.parametrize("hop_seconds", [None, 0.5])
@pytest.mark.parametrize("seconds", [0.4, 1.0, 3.3])
def test_tag_and_embed_equal_weighted_mean_of_direct_chunk_predictions(taggers, direct, seconds,
                                                                       hop_seconds):
    tagger = taggers(hop_seconds)
    x = signals.music_like(SR, seconds, seed=3)
    hop = CHUNK if hop_seconds is None else round(hop_seconds * SR)
    chunk_probabilities, probabilities, embedding = _direct(direct, x, hop)

    [result] = tagger.predict([x])

    np.testing.assert_allclose(result.chunk_probabilities, chunk_probabilities, RTOL, ATOL)
    np.testing.assert_allclose(result.probabilities, probabilities, RTOL, ATOL)
    np.testing.assert_allclose(result.embedding, embedding, RTOL, ATOL)
    np.testing.assert_allclose(tagger.tag(x), probabilities, RTOL, ATOL)
    np.testing.assert_allclose(tagger.embed(x), embedding, RTOL, ATOL)
    assert result.duration == len(x) / SR
    np.testing.assert_allclose(result.chunk_start_seconds,
                               np.arange(len(chunk_probabilities)) * hop / SR)


def test_short_track_is_the_model_on_the_zero_padded_chunk(taggers, direct):
    x = signals.harmonic(SR, 0.25)
    expected, _ = direct(np.pad(x, (0, CHUNK - len(x)))[None])
    np.testing.assert_allclose(taggers().tag(x), expected[0], RTOL, ATOL)


def test_many_tracks_in_shared_batches_equal_one_at_a_time(taggers):
    tracks = [signals.music_like(SR, s, seed=i) for i, s in enumerate([0.3, 2.5, 1.0, 3.7, 0.9])]
    one_at_a_time = np.stack([taggers().tag(x) for x in tracks])
    # 14 chunks in batches of 4: most batches mix chunks of two or three tracks.
    np.testing.assert_allclose(taggers().tag(tracks), one_at_a_time, RTOL, ATOL)
    embeddings = taggers().embed(tracks)
    np.testing.assert_allclose(embeddings, np.stack([taggers().embed(x) for x in tracks]),
                               RTOL, ATOL)


def test_file_and_the_same_samples_as_an_array_agree(taggers, tmp_path):
    tagger = taggers()
    x = signals.music_like(SR, 2.2, seed=5)
    wav = os.fspath(tmp_path / "track.wav")
    soundfile.write(wav, x, SR, subtype="PCM_16")
    samples, _ = soundfile.read(wav, dtype="float32")
    np.testing.assert_allclose(tagger.tag(wav), tagger.tag(samples), RTOL, ATOL)

    # Another rate and two channels: the file is downmixed and resampled by load_audio, the
    # array by Tagger.tag with sample_rate; both use soxr at librosa's quality.
    stereo = np.stack([x, 0.5 * x], axis=1)
    flac = os.fspath(tmp_path / "track.flac")
    soundfile.write(flac, stereo, SR, subtype="PCM_24")
    stereo_samples, _ = soundfile.read(flac, dtype="float32")
    wav_22k = os.fspath(tmp_path / "track22k.wav")
    soundfile.write(wav_22k, x, 22050, subtype="FLOAT")
    np.testing.assert_allclose(tagger.tag(flac), tagger.tag(stereo_samples.mean(axis=1)),
                               RTOL, ATOL)
    np.testing.assert_allclose(tagger.tag(wav_22k), tagger.tag(x, sample_rate=22050), RTOL, ATOL)


def test_input_forms_and_shapes(taggers, tmp_path):
    tagger = taggers()
    x = signals.noise(SR, 1.5)
    path = tmp_path / "noise.wav"
    soundfile.write(path, x, SR, subtype="FLOAT")
    num_tags = len(tagger.tags)
    assert tagger.tag(path).shape == (num_tags,)
    assert tagger.tag([path, x]).shape == (2, num_tags)
    assert tagger.tag(list(np.stack([x, x]))).shape == (2, num_tags)
    [result] = tagger.predict(x)  # a 1-D array is one track for predict too
    np.testing.assert_allclose(result.probabilities, tagger.tag(x), RTOL, ATOL)
    assert tagger.tag([]).shape == (0, num_tags)
    assert tagger.embed([x]).shape == (1, tagger.embedding_dim)
    # The tiny run's head has 8 hidden units.
    assert tagger.embedding_dim == 8


def test_bad_input_is_named(taggers, tmp_path):
    tagger = taggers()
    missing = os.fspath(tmp_path / "missing.mp3")
    with pytest.raises(AudioDecodeError, match=r"missing\.mp3"):
        tagger.tag(missing)
    x = signals.noise(SR, 1.0)
    with pytest.raises(ValueError, match=r"track 1: .*NaN"):
        tagger.tag([x, np.full(10, np.nan, np.float32)])
    with pytest.raises(ValueError, match="track 0: expected mono audio"):
        tagger.tag([np.stack([x, x])])
    with pytest.raises(ValueError, match="track 0: expected float audio"):
        tagger.tag([np.zeros(100, np.int16)])
    with pytest.raises(ValueError, match="track 0: the array is empty"):
        tagger.tag([np.zeros(0, np.float32)])


def test_two_dimensional_arrays_are_refused_with_what_to_pass(taggers, tmp_path):
    # soundfile.read gives (frames, channels): read as rows, 2 s of stereo was 32,000 tracks of
    # 2 samples. librosa gives (channels, frames), a batch (tracks, samples): the shape cannot
    # tell them apart, so any 2-D array is refused before any work, with what to pass instead.
    tagger = taggers()
    x = signals.music_like(SR, 2.0, seed=2)
    path = tmp_path / "stereo.flac"
    soundfile.write(path, np.stack([x, 0.5 * x], axis=1), SR, subtype="PCM_24")
    samples, _ = soundfile.read(path, dtype="float32")
    assert samples.shape == (2 * SR, 2)
    for array in (samples, samples.T):
        for call in (tagger.tag, tagger.embed, lambda a: list(tagger.predict(a))):
            with pytest.raises(ValueError, match=r"mean\(axis=1\).*list of 1-D arrays") as raised:
                call(array)
            assert str(array.shape) in str(raised.value)
    with pytest.raises(ValueError, match=r"track 1: .*\(32000, 2\).*mean\(axis=1\)"):
        tagger.tag([x, samples])
    # What the message says to pass works: the downmix is load_audio's, the list is per track.
    np.testing.assert_allclose(tagger.tag(samples.mean(axis=1)), tagger.tag(path), RTOL, ATOL)
    np.testing.assert_allclose(tagger.tag(list(samples.T)),
                               np.stack([tagger.tag(c) for c in samples.T]), RTOL, ATOL)


@pytest.mark.parametrize("sample_rate", [True, 16000.5, 0, 10**12, "16000"])
def test_bad_sample_rate_is_named(taggers, sample_rate):
    with pytest.raises(ValueError, match="sample_rate"):
        taggers().tag(signals.noise(SR, 0.5), sample_rate=sample_rate)


def test_long_file_in_small_blocks_equals_the_whole_track(taggers, tmp_path):
    # A 44.1 kHz stereo file decoded 997 frames at a time, downmixed and resampled as it goes:
    # the chunks are the whole track's exactly (test_audio: stream_audio joins to load_audio;
    # above: stream_chunks equal chunk_track), so the model sees the same batches.
    restored = taggers()
    tagger = tj.Tagger(restored.model, restored.variables, tags=restored.tags,
                       sample_rate=restored.sample_rate, chunk_seconds=restored.chunk_seconds,
                       batch_size=4, workers=2, block_frames=997)
    stereo = np.stack([signals.music_like(44100, 12.3, seed=4),
                       signals.noise(44100, 12.3, seed=4)], axis=1)
    path = os.fspath(tmp_path / "long.flac")
    soundfile.write(path, stereo, 44100, subtype="PCM_24")
    cut = os.fspath(tmp_path / "cut.flac")
    data = (tmp_path / "long.flac").read_bytes()
    (tmp_path / "cut.flac").write_bytes(data[: len(data) // 2])

    whole = load_audio(path, sr=SR)
    [expected] = restored.predict([whole])
    streamed, failure, again = tagger.predict([path, cut, path])

    for result in (streamed, again):
        assert result.duration == expected.duration == len(whole) / SR
        np.testing.assert_array_equal(result.chunk_weights, expected.chunk_weights)
        np.testing.assert_allclose(result.chunk_probabilities, expected.chunk_probabilities,
                                   RTOL, ATOL)
        np.testing.assert_allclose(result.embedding, expected.embedding, RTOL, ATOL)
    # The cut file fails halfway (its 6th second), after its first chunks went through the
    # model, for the reason load_audio gives; the next track is not disturbed.
    assert isinstance(failure, tag_cli.TrackFailure) and failure.source == cut
    with pytest.raises(AudioDecodeError) as whole_file_error:
        load_audio(cut, sr=SR)
    assert failure.reason == whole_file_error.value.reason


def test_the_model_gets_chunks_while_the_file_decodes(taggers, tmp_path, monkeypatch):
    # Memory is bounded by the batch, not the track: at the k-th model call (k batches of B
    # chunks taken), the decoding thread has put at most B more chunks in the track's queue and
    # holds one more, and has decoded less than a chunk and a block beyond its last chunk: at
    # most (k B + B + 2) chunks and a block of the track, whatever its length (here 60 chunks).
    restored = taggers()
    block = 1600
    tagger = tj.Tagger(restored.model, restored.variables, tags=restored.tags,
                       sample_rate=restored.sample_rate, chunk_seconds=restored.chunk_seconds,
                       batch_size=4, workers=1, block_frames=block)
    path = tmp_path / "minute.wav"
    soundfile.write(path, signals.noise(SR, 60.0), SR, subtype="FLOAT")
    decoded = [0]
    stream_audio = tj.data.stream_audio

    def counted(*args, **kwargs):
        for samples in stream_audio(*args, **kwargs):
            decoded[0] += len(samples)
            yield samples

    monkeypatch.setattr(tj.data, "stream_audio", counted)
    decoded_at_call, forward = [], tagger._forward

    def recorded(variables, batch):
        decoded_at_call.append(decoded[0])
        return forward(variables, batch)

    tagger._forward = recorded
    [result] = tagger.predict([path])

    assert len(decoded_at_call) == 15 and decoded[0] == 60 * SR
    B = tagger.batch_size
    for k, samples in enumerate(decoded_at_call, start=1):
        assert samples <= (k * B + B + 2) * CHUNK + block
    np.testing.assert_allclose(result.probabilities, restored.tag(path), RTOL, ATOL)


def test_stopping_early_stops_the_decoding_threads(taggers, tmp_path):
    path = tmp_path / "long.wav"
    soundfile.write(path, signals.noise(SR, 30.0), SR)
    before = {t for t in threading.enumerate() if t.name.startswith("decode")}
    results = taggers().predict([path] * 6)
    next(results)
    # Threads blocked on full queues would hold `close` forever: it must return promptly.
    closing = threading.Thread(target=results.close, daemon=True)
    closing.start()
    closing.join(timeout=30)
    assert not closing.is_alive()
    assert {t for t in threading.enumerate() if t.name.startswith("decode")} <= before


def _write_folder(root) -> tuple[list[str], list[str]]:
    """A folder of good files (several formats, nested) and broken ones; their paths."""
    os.makedirs(root / "album" / "disc 2")
    good = {
        "a.wav": ("WAV", "PCM_16", SR), "album/b.flac": ("FLAC", "PCM_16", 44100),
        "album/c.ogg": ("OGG", "VORBIS", 44100), "album/disc 2/d.mp3": ("MP3", None, 44100),
    }
    for i, (name, (fmt, subtype, sr)) in enumerate(good.items()):
        x = signals.music_like(sr, 1.2 + 0.8 * i, seed=i)
        soundfile.write(root / name, x, sr, format=fmt, subtype=subtype)
    (root / "album" / "notes.wav").write_text("not audio at all\n")
    (root / "empty.mp3").write_bytes(b"")
    data = (root / "album" / "b.flac").read_bytes()
    (root / "album" / "cut.flac").write_bytes(data[: len(data) // 2])
    (root / "cover.jpg").write_bytes(b"\xff\xd8\xff")  # not an audio extension: not searched
    (root / "album" / "._b.flac").write_bytes(b"\x00\x05\x16\x07")  # hidden: not searched
    broken = ["album/cut.flac", "album/notes.wav", "empty.mp3"]
    return ([os.fspath(root / name) for name in sorted(good)],
            [os.fspath(root / name) for name in broken])


def test_predict_reports_broken_files_in_place(taggers, tmp_path):
    good, broken = _write_folder(tmp_path)
    files = tag_cli.find_audio_files([tmp_path])
    assert sorted(files) == sorted(good + broken)
    results = list(taggers().predict(files))
    assert [r.index for r in results] == list(range(len(files)))
    failed = {r.source: r.reason for r in results if isinstance(r, tag_cli.TrackFailure)}
    assert sorted(failed) == sorted(broken)
    assert "empty" in failed[os.fspath(tmp_path / "empty.mp3")]


def test_command_line_tags_a_folder_and_names_broken_files(trained_run, taggers, tmp_path,
                                                           capsys):
    good, broken = _write_folder(tmp_path / "music")
    status = tag_cli.main([os.fspath(tmp_path / "music"), "--workdir", trained_run, "--json",
                           "--top", "3", "--batch-size", "4"])
    out, err = capsys.readouterr()
    assert status == 1
    listed = json.loads(out)
    assert [track["path"] for track in listed] == sorted(good)
    for path in broken:
        assert path in err
    expected = taggers().tag(good)
    for track, probabilities in zip(listed, expected, strict=True):
        assert [t["tag"] for t in track["tags"]] == [
            tag for tag, _ in tag_cli.top_tags(probabilities, taggers().tags, 3)]
        np.testing.assert_allclose([t["probability"] for t in track["tags"]],
                                   np.sort(probabilities)[::-1][:3], atol=1e-5)


def test_command_line_csv_table_and_plot(trained_run, taggers, tmp_path, capsys, monkeypatch):
    # The restore is tested above; here the fixture's tagger saves two restores.
    monkeypatch.setattr(tag_cli.Tagger, "from_workdir", staticmethod(lambda *_, **__: taggers()))
    good, _ = _write_folder(tmp_path / "music")
    assert tag_cli.main([*good, "--workdir", trained_run, "--csv", "--top", "2",
                         "--batch-size", "4"]) == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert [(r["path"], r["rank"]) for r in rows] == [(p, str(k)) for p in good for k in (1, 2)]

    plot = os.fspath(tmp_path / "plot.png")
    assert tag_cli.main([good[-1], "--workdir", trained_run, "--plot", plot,
                         "--batch-size", "4"]) == 0
    out, _ = capsys.readouterr()
    assert out.splitlines()[0].split() == ["track", "length", "top", "tags"]
    assert out.splitlines()[1].startswith(good[-1])
    image = matplotlib.image.imread(plot)
    assert image.ndim == 3 and image.shape[0] == 600 and image.std() > 0.05


def test_command_line_with_nothing_to_tag(trained_run, tmp_path, capsys):
    assert tag_cli.main([os.fspath(tmp_path), "--workdir", trained_run]) == 1
    assert "no audio files" in capsys.readouterr().err


def test_plot_file_names_for_several_tracks():
    results = [tag_cli.TrackResult(i, source, 1.0, *(np.zeros(1),) * 5)
               for i, source in enumerate(["a/x.mp3", "b/x.wav", "y.flac"])]
    assert tag_cli._plot_paths("out.png", results[:1]) == ["out.png"]
    assert tag_cli._plot_paths("plots/out.png", results) == [
        "plots/out-x.png", "plots/out-x-2.png", "plots/out-y.png"]


def test_chunk_edges_cover_each_chunk():
    from tagjax import plot

    np.testing.assert_allclose(plot.chunk_edges(3, 3.0, 3.0), [0.0, 3.0, 6.0, 9.0])
    np.testing.assert_allclose(plot.chunk_edges(3, 3.0, 1.0), [1.0, 2.0, 3.0, 4.0])


def test_model_fingerprint_identifies_the_weights(taggers):
    copied = jax.tree_util.tree_map(np.array, taggers().variables)
    assert tag_cli.model_fingerprint("{}", copied) == tag_cli.model_fingerprint(
        "{}", taggers().variables)
    assert tag_cli.model_fingerprint("{}", copied) != tag_cli.model_fingerprint("{ }", copied)
    changed = jax.tree_util.tree_map(lambda a: a, taggers().variables)
    changed["params"]["head"] = jax.tree_util.tree_map(lambda a: a + 1e-3,
                                                       changed["params"]["head"])
    assert tag_cli.model_fingerprint("{}", changed) != tag_cli.model_fingerprint(
        "{}", taggers().variables)


# ----------------------------------------------------------------------------------------------
# Folders that cannot be searched, and mistakes caught before the work


def _os_walk_files(root) -> list[str]:
    """The reference listing: `os.walk` (sorted, no links followed), as find_audio_files did."""
    files = []
    for folder, dirs, names in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        files.extend(os.path.join(folder, n) for n in sorted(names)
                     if n.lower().endswith(tag_cli.AUDIO_EXTENSIONS) and not n.startswith("."))
    return files


def test_find_audio_files_lists_as_os_walk(tmp_path):
    good, broken = _write_folder(tmp_path)
    (tmp_path / "album" / "Loud.MP3").write_bytes(b"")
    assert tag_cli.find_audio_files([tmp_path]) == _os_walk_files(tmp_path)
    assert set(_os_walk_files(tmp_path)) == {*good, *broken, os.fspath(tmp_path / "album" /
                                                                          "Loud.MP3")}


def test_unreadable_folders_are_reported_not_passed_over(tmp_path, monkeypatch):
    (tmp_path / "open").mkdir()
    (tmp_path / "locked").mkdir()
    for name in ("open/a.wav", "locked/b.wav"):
        (tmp_path / name).write_bytes(b"")
    skipped = []
    with permissions.unreadable(tmp_path / "locked", monkeypatch):
        found = tag_cli.find_audio_files([tmp_path], on_skipped=lambda *a: skipped.append(a))
        assert found == [os.fspath(tmp_path / "open" / "a.wav")]
        assert skipped == [(os.fspath(tmp_path / "locked"), "permission denied")]
        with pytest.warns(UserWarning, match=r"locked: permission denied"):
            tag_cli.find_audio_files([tmp_path])


def test_symbolic_link_loops_are_reported_and_links_followed(tmp_path):
    (tmp_path / "music" / "album").mkdir(parents=True)
    (tmp_path / "elsewhere").mkdir()
    for name in ("music/a.wav", "music/album/b.flac", "elsewhere/c.mp3"):
        (tmp_path / name).write_bytes(b"")
    os.symlink(tmp_path / "music", tmp_path / "music" / "album" / "up")  # a loop
    os.symlink("itself.mp3", tmp_path / "music" / "itself.mp3")  # a link to itself
    os.symlink(tmp_path / "elsewhere", tmp_path / "music" / "linked")  # followed
    skipped = []
    found = tag_cli.find_audio_files([tmp_path / "music"],
                                     on_skipped=lambda *a: skipped.append(a))
    music = os.fspath(tmp_path / "music")
    assert found == [f"{music}/a.wav", f"{music}/album/b.flac", f"{music}/linked/c.mp3"]
    assert skipped == [(f"{music}/itself.mp3", "a symbolic link loop"),
                       (f"{music}/album/up", f"a symbolic link loop (it leads back to {music})")]


def test_command_line_names_unreadable_folders_and_loops(trained_run, taggers, tmp_path,
                                                         capsys, monkeypatch):
    monkeypatch.setattr(tag_cli.Tagger, "from_workdir", staticmethod(lambda *_, **__: taggers()))
    music = tmp_path / "music"
    (music / "locked").mkdir(parents=True)
    soundfile.write(music / "a.wav", signals.music_like(SR, 0.5), SR)
    soundfile.write(music / "locked" / "b.wav", signals.music_like(SR, 0.5), SR)
    os.symlink(music, music / "loop")
    with permissions.unreadable(music / "locked", monkeypatch):
        status = tag_cli.main([os.fspath(music), "--workdir", trained_run, "--csv"])
        out, err = capsys.readouterr()
        assert status == 1
        assert {row["path"] for row in csv.DictReader(io.StringIO(out))} == {
            os.fspath(music / "a.wav")}
        assert f"error: skipped {music / 'locked'}: permission denied" in err.splitlines()
        assert f"error: skipped {music / 'loop'}: a symbolic link loop" in err
        assert "2 folder(s) could not be searched" in err

        # A folder named on the command line that cannot be read says why.
        assert tag_cli.main([os.fspath(music / "locked"), "--workdir", trained_run]) == 1
        err = capsys.readouterr().err
        assert f"error: skipped {music / 'locked'}: permission denied" in err
        assert "no audio files" in err and "1 could not be searched" in err


def test_mistakes_are_one_line_before_any_work(trained_run, taggers, tmp_path, monkeypatch):
    track = os.fspath(tmp_path / "a.wav")
    soundfile.write(track, signals.music_like(SR, 0.5), SR)

    def no_work(*_, **__):
        raise AssertionError("nothing may be tagged")

    monkeypatch.setattr(tag_cli.Tagger, "predict", no_work)
    monkeypatch.setattr(tag_cli.Tagger, "from_workdir", staticmethod(lambda *_, **__: taggers()))
    with pytest.raises(SystemExit, match=r"^error: the folder of --plot .*missing/out\.png "
                                         r"does not exist"):
        tag_cli.main([track, "--workdir", trained_run, "--plot",
                      os.fspath(tmp_path / "missing" / "out.png")])
    (tmp_path / "readonly").mkdir()
    with permissions.unwritable(tmp_path / "readonly", monkeypatch), pytest.raises(
            SystemExit, match=r"^error: cannot write --plot .*: permission denied in .*readonly$"):
        tag_cli.main([track, "--workdir", trained_run, "--plot",
                      os.fspath(tmp_path / "readonly" / "out.png")])


@pytest.mark.parametrize("config,problem", [
    (b'{"train": {"sample_rate": 16000', r"not a readable run config \(Expecting"),
    (b"\xff\xfe\x00garbage", r"not a readable run config"),
    (b'["train", "tags"]', r'not a tagjax run config \(expected an object with "train"'),
    (b'{"train": {}, "tags": ["rock"]}', r"not the config of a model this tagjax builds"),
])
def test_a_corrupt_run_config_is_one_line(tmp_path, config, problem):
    workdir = tmp_path / "run"
    workdir.mkdir()
    (workdir / "config.json").write_bytes(config)
    track = tmp_path / "a.wav"
    soundfile.write(track, signals.music_like(SR, 0.5), SR)
    with pytest.raises(SystemExit) as exit_:
        tag_cli.main([os.fspath(track), "--workdir", os.fspath(workdir)])
    message = str(exit_.value.code)
    assert "\n" not in message
    assert re.match(rf"error: {re.escape(os.fspath(workdir / 'config.json'))}: {problem}",
                    message), message


# ----------------------------------------------------------------------------------------------
# Evaluation scores what the tagger gives; the plot draws what the front end computes


def test_evaluation_gives_each_track_the_taggers_probabilities(trained_run, direct):
    # The test report's `tagger` scores come from `train.evaluate_as_tagged`: on the run's test
    # clips it gives each track exactly what `tj.Tagger` gives those clips as arrays (the same
    # batch size, so the same compiled program), which is the weighted mean of the model
    # applied to each explicitly sliced chunk.
    from tagjax import metrics, rundir, train
    from tagjax.data import schema

    model, variables, run = rundir.restore(trained_run)
    sources, tags = train._sources(run.train, splits=("test",))
    source = sources["test"]
    report, probabilities = train.evaluate_as_tagged(model, variables, run.train, source, tags)

    clips = [schema.int16_to_audio(np.asarray(source[i]["audio"])) for i in range(len(source))]
    tagger = tj.Tagger.from_workdir(trained_run, batch_size=run.train.eval_batch_size)
    tagged = tagger.tag(clips)
    np.testing.assert_array_equal(probabilities, tagged)
    for clip, track_probabilities in zip(clips, probabilities, strict=True):
        _, expected, _ = _direct(direct, clip, CHUNK)
        np.testing.assert_allclose(track_probabilities, expected, RTOL, ATOL)
    labels = np.stack([np.asarray(source[i]["labels"]) for i in range(len(source))])
    expected_report = metrics.tagging_report(labels, tagged, tags)
    for key in ("roc_auc", "pr_auc", "excluded_tags", "num_examples"):
        assert report[key] == expected_report[key]
    # Training wrote the same scores of its best checkpoint into results.json.
    with open(os.path.join(trained_run, "results.json")) as f:
        written = json.load(f)
    assert written["tagger"] == {"roc_auc": report["roc_auc"], "pr_auc": report["pr_auc"]}


def test_plot_spectrogram_is_the_front_ends_own_with_its_padding():
    # short_res's front end pads its centred frames by reflection: the plot must show that
    # spectrogram (librosa's, with the same settings), not one padded with zeros.
    import types

    import librosa
    import ml_collections

    from tagjax import plot

    config = ml_collections.ConfigDict(dict(
        frontend=dict(name="short_chunk_resnet"), summary=dict(name="none"),
        head=dict(name="linear"), num_tags=3, sample_rate=SR))
    model = tj.models.build(config)
    frontend = model.frontend
    assert frontend.pad_mode == "reflect" and frontend.top_db is None
    # The log-mel needs no variables: a stand-in for the tagger carries the model.
    tagger = types.SimpleNamespace(model=model, variables={}, lead_samples=0, sample_rate=SR)
    x = signals.noise(SR, 1.3, seed=5)

    shown = plot.display_log_mel(tagger, x)

    def librosa_log_mel(pad_mode):
        mel = librosa.feature.melspectrogram(
            y=x.astype(np.float64), sr=SR, n_fft=frontend.n_fft, hop_length=frontend.hop_length,
            n_mels=frontend.n_mels, fmin=frontend.fmin, fmax=frontend.fmax, htk=frontend.htk,
            norm=frontend.mel_norm, center=True, pad_mode=pad_mode, power=2.0)
        return librosa.power_to_db(mel, ref=1.0, amin=1e-10, top_db=None).T

    # test_mel's bound for float32 log-mel against librosa: a thousandth of a dB.
    np.testing.assert_allclose(shown, librosa_log_mel("reflect"), rtol=0, atol=1e-3)
    # Zero padding would change the edge frames by decibels: the test tells the two apart.
    assert np.abs(shown[0] - librosa_log_mel("constant")[0]).max() > 1.0
    assert plot.spectrogram_frontend(tagger) is frontend
    positions, _ = plot._mel_axis(frontend)
    assert 0 < positions[0] < positions[-1] < frontend.n_mels
