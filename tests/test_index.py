"""The index file (`tagjax.index`) and similarity search (`tagjax.similar`) on the tiny run.

Cosine similarity is checked against scikit-learn, ranking against NumPy's sort, the stored
embeddings against `Tagger.embed`, and an index extended in steps against one built at once.
"""

import dataclasses
import errno
import itertools
import json
import os
import pathlib
import re
import struct
import time
import zipfile

import numpy as np
import permissions
import pytest
import signals
import soundfile
from sklearn.metrics.pairwise import cosine_similarity as sklearn_cosine_similarity

import tagjax as tj
from tagjax import index as index_cli
from tagjax import similar
from tagjax import tag as tag_cli

SR = 16000


@pytest.fixture(scope="module")
def tagger(trained_run):
    return tj.Tagger.from_workdir(trained_run, batch_size=4, workers=2)


def _write_tracks(folder, n: int, start: int = 0) -> list[str]:
    os.makedirs(folder, exist_ok=True)
    paths = []
    for i in range(start, start + n):
        path = os.fspath(folder / f"track{i:02d}.wav")
        soundfile.write(path, signals.music_like(SR, 0.7 + 0.6 * (i % 4), seed=i), SR,
                        subtype="PCM_16")
        paths.append(path)
    return paths


# ----------------------------------------------------------------------------------------------
# Similarity


@pytest.mark.parametrize("m,n,d", itertools.product([1, 3], [1, 6], [2, 8]))
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_cosine_similarity_matches_scikit_learn(m, n, d, dtype):
    rng = np.random.default_rng(m * 100 + n * 10 + d)
    queries = rng.standard_normal((m, d)).astype(dtype)
    embeddings = rng.standard_normal((n, d)).astype(dtype)
    embeddings[0] = 0.0  # a zero vector: similarity 0, as in scikit-learn
    got = similar.cosine_similarity(queries, embeddings)
    assert got.shape == (m, n) and got.dtype == np.float32
    np.testing.assert_allclose(got, sklearn_cosine_similarity(queries, embeddings), rtol=1e-5,
                               atol=1e-6)


def test_cosine_similarity_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match=r"\(M, D\)"):
        similar.cosine_similarity(np.ones((2, 3)), np.ones((4, 5)))


@pytest.mark.parametrize("top,exclude", [(3, None), (3, 4), (20, 0), (1, 2)])
def test_nearest_is_the_descending_sort(top, exclude):
    similarities = np.array([0.1, 0.9, -0.3, 0.9, 0.5, 0.0])
    expected = [i for i in np.argsort(-similarities, kind="stable") if i != exclude][:top]
    np.testing.assert_array_equal(similar.nearest(similarities, top, exclude), expected)


def test_shared_top_tags_in_query_order():
    tags = ["rock", "pop", "jazz", "piano", "drums"]
    query = np.array([0.9, 0.1, 0.8, 0.7, 0.2])  # top 3: rock, jazz, piano
    other = np.array([0.2, 0.9, 0.95, 0.85, 0.1])  # top 3: jazz, pop, piano
    assert similar.shared_top_tags(query, other, tags, 3) == ["jazz", "piano"]
    assert similar.shared_top_tags(query, other, tags, 1) == []


# ----------------------------------------------------------------------------------------------
# The index


def test_index_holds_the_taggers_outputs_and_round_trips(tagger, tmp_path):
    paths = _write_tracks(tmp_path / "music", 4)
    index, counts = index_cli.build_index(tagger, paths)
    assert counts == {"added": 4, "updated": 0, "unchanged": 0, "failed": 0}
    np.testing.assert_allclose(index.embeddings, tagger.embed(paths), rtol=1e-6)
    np.testing.assert_allclose(index.probabilities, tagger.tag(paths), rtol=1e-6)
    np.testing.assert_allclose(index.durations, [soundfile.info(p).duration for p in paths])
    assert [os.stat(p).st_mtime_ns for p in paths] == index.mtimes_ns.tolist()

    out = tmp_path / "index.npz"
    index.save(out)
    with np.load(out, allow_pickle=False) as archive:
        assert archive["paths"].dtype.kind == "U" and archive["tags"].dtype.kind == "U"
        assert archive["embeddings"].shape == (4, tagger.embedding_dim)
        assert str(archive["model_id"]) == tagger.model_id
    loaded = index_cli.TrackIndex.load(out)
    for field in dataclasses.fields(index_cli.TrackIndex):
        np.testing.assert_array_equal(getattr(loaded, field.name), getattr(index, field.name))


def test_extending_equals_building_at_once_and_skips_unchanged_files(tagger, tmp_path,
                                                                     monkeypatch):
    paths = _write_tracks(tmp_path / "music", 5)
    at_once, _ = index_cli.build_index(tagger, paths)

    embedded = []
    predict = tag_cli.Tagger.predict

    def recording_predict(self, tracks, **kwargs):
        embedded.append(list(tracks))
        return predict(self, tracks, **kwargs)

    monkeypatch.setattr(tag_cli.Tagger, "predict", recording_predict)
    first, _ = index_cli.build_index(tagger, paths[:3])
    extended, counts = index_cli.build_index(tagger, paths, first)
    assert embedded[-1] == paths[3:]
    assert counts == {"added": 2, "updated": 0, "unchanged": 3, "failed": 0}
    for field in dataclasses.fields(index_cli.TrackIndex):
        np.testing.assert_array_equal(getattr(extended, field.name), getattr(at_once, field.name))

    # A file that changed is embedded again, in its place; the rest are left alone.
    soundfile.write(paths[1], signals.chirp(SR, 2.0), SR, subtype="PCM_16")
    os.utime(paths[1], ns=(time.time_ns(), time.time_ns() + 10**9))
    changed, counts = index_cli.build_index(tagger, paths, extended)
    assert embedded[-1] == [paths[1]]
    assert counts == {"added": 0, "updated": 1, "unchanged": 4, "failed": 0}
    assert changed.paths.tolist() == paths
    np.testing.assert_allclose(changed.embeddings[1], tagger.embed(paths[1]), rtol=1e-6)
    np.testing.assert_array_equal(np.delete(changed.embeddings, 1, 0),
                                  np.delete(extended.embeddings, 1, 0))


def test_a_tagger_made_from_variables_indexes_and_extends(tagger, tmp_path):
    direct = tj.Tagger(tagger.model, tagger.variables, tags=tagger.tags,
                       sample_rate=tagger.sample_rate, chunk_seconds=tagger.chunk_seconds,
                       batch_size=4)
    paths = _write_tracks(tmp_path / "music", 2)
    index, _ = index_cli.build_index(direct, paths[:1])
    extended, counts = index_cli.build_index(direct, paths, index)
    assert counts["added"] == 1 and len(extended) == 2 and extended.model_id == direct.model_id


def test_another_model_or_hop_is_refused(tagger, tmp_path):
    index, _ = index_cli.build_index(tagger, _write_tracks(tmp_path / "music", 1))
    other = tj.Tagger(tagger.model, tagger.variables, tags=tagger.tags,
                      sample_rate=tagger.sample_rate, chunk_seconds=tagger.chunk_seconds,
                      batch_size=4, model_id="0123456789abcdef", workdir="/elsewhere")
    with pytest.raises(index_cli.IndexMismatchError, match="0123456789abcdef"):
        index_cli.build_index(other, [], index)
    overlapping = tj.Tagger(
        tagger.model, tagger.variables, tags=tagger.tags, sample_rate=tagger.sample_rate,
        chunk_seconds=tagger.chunk_seconds, hop_seconds=0.5, batch_size=4,
        model_id=tagger.model_id)
    with pytest.raises(index_cli.IndexMismatchError, match=r"--hop 1\.0"):
        index_cli.build_index(overlapping, [], index)


def test_loading_something_else_names_the_file(tmp_path):
    text = tmp_path / "notes.npz"
    text.write_text("hello")
    with pytest.raises(ValueError, match=r"notes\.npz: not a readable tagjax index"):
        index_cli.TrackIndex.load(text)
    other = tmp_path / "other.npz"
    np.savez(other, embeddings=np.zeros((2, 3)))
    with pytest.raises(ValueError, match=r"other\.npz: not a tagjax index .*paths"):
        index_cli.TrackIndex.load(other)


# ----------------------------------------------------------------------------------------------
# The command lines


def test_index_and_similar_command_lines(trained_run, tagger, tmp_path, capsys, monkeypatch):
    paths = _write_tracks(tmp_path / "music", 6)
    (tmp_path / "music" / "broken.mp3").write_text("not an mp3")
    out = os.fspath(tmp_path / "collection.npz")

    assert index_cli.main([os.fspath(tmp_path / "music"), "--workdir", trained_run,
                           "--out", out, "--batch-size", "4"]) == 1
    captured = capsys.readouterr()
    assert "broken.mp3" in captured.err
    assert "6 tracks (6 added, 0 updated, 0 unchanged, 1 failed)" in captured.out
    index = index_cli.TrackIndex.load(out)
    # A second restore of the run gives the same model fingerprint.
    assert index.model_id == tagger.model_id and index.workdir == os.path.abspath(trained_run)

    # Extending without --workdir uses the run the index remembers.
    monkeypatch.setattr(tag_cli.Tagger, "from_workdir", staticmethod(lambda *_, **__: tagger))
    new = _write_tracks(tmp_path / "more", 1, start=6)
    assert index_cli.main([*paths, *new, "--out", out]) == 0
    assert "7 tracks (1 added, 0 updated, 6 unchanged, 0 failed)" in capsys.readouterr().out
    index = index_cli.TrackIndex.load(out)

    # A query in the index: no model is loaded, its own entry is left out.
    def no_model(*_, **__):
        raise AssertionError("a query in the index must not load the model")

    monkeypatch.setattr(tag_cli.Tagger, "from_workdir", staticmethod(no_model))
    assert similar.main([paths[2], "--index", out, "--top", "3", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    expected_similarity = sklearn_cosine_similarity(index.embeddings[2:3], index.embeddings)[0]
    expected = [i for i in np.argsort(-expected_similarity, kind="stable") if i != 2][:3]
    assert [n["path"] for n in listed["neighbours"]] == [str(index.paths[i]) for i in expected]
    np.testing.assert_allclose([n["similarity"] for n in listed["neighbours"]],
                               expected_similarity[expected], rtol=1e-5)
    tags = [str(t) for t in index.tags]
    assert [n["shared_tags"] for n in listed["neighbours"]] == [
        similar.shared_top_tags(index.probabilities[2], index.probabilities[i], tags, 5)
        for i in expected]

    # A new file is embedded with the index's model.
    monkeypatch.setattr(tag_cli.Tagger, "from_workdir", staticmethod(lambda *_, **__: tagger))
    query = _write_tracks(tmp_path / "query", 1, start=20)[0]
    assert similar.main([query, "--index", out, "--top", "7"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith(f"{query} (embedded now)")
    expected_similarity = sklearn_cosine_similarity(tagger.embed(query)[None],
                                                    index.embeddings)[0]
    ranked = [line.split()[2] for line in lines[2:]]
    assert ranked == [str(index.paths[i]) for i in np.argsort(-expected_similarity,
                                                              kind="stable")]


# ----------------------------------------------------------------------------------------------
# Nothing silently wrong: non-finite embeddings, damaged files, permissions, paths


def _small_index(n: int = 3, dim: int = 4, **fields) -> index_cli.TrackIndex:
    rng = np.random.default_rng(n)
    defaults = dict(
        paths=np.asarray([f"/music/track{i}.wav" for i in range(n)]),
        sizes=np.arange(n, dtype=np.int64), mtimes_ns=np.arange(n, dtype=np.int64),
        durations=np.ones(n, np.float32),
        embeddings=rng.standard_normal((n, dim)).astype(np.float32),
        probabilities=rng.uniform(size=(n, 2)).astype(np.float32),
        tags=np.asarray(["rock", "jazz"]), model_id="0123456789abcdef", workdir="",
        hop_seconds=1.0, model_name="musicnn-mtt")
    return index_cli.TrackIndex(**{**defaults, **fields})


def test_cosine_similarity_refuses_non_finite_values_as_scikit_learn():
    embeddings = np.ones((3, 4), np.float32)
    embeddings[1, 2] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        sklearn_cosine_similarity(embeddings[:1], embeddings)
    with pytest.raises(ValueError, match=r"embeddings holds NaN or infinite values in 1 of 3 rows "
                                         r"\(the first is row 1\)"):
        similar.cosine_similarity(embeddings[:1], embeddings)
    with pytest.raises(ValueError, match=r"queries holds NaN .* row 0"):
        similar.cosine_similarity(np.full((1, 4), np.inf), np.ones((3, 4)))


def _with_nan_embedding_for(monkeypatch, path: str) -> None:
    """The tagger's result for `path` gets a NaN embedding (a model that overflows)."""
    predict = tag_cli.Tagger.predict

    def predict_with_nan(self, tracks, **kwargs):
        for result in predict(self, tracks, **kwargs):
            if getattr(result, "source", None) == path:
                result = dataclasses.replace(result, embedding=np.full_like(result.embedding,
                                                                            np.nan))
            yield result

    monkeypatch.setattr(tag_cli.Tagger, "predict", predict_with_nan)


def test_non_finite_embeddings_are_failures_and_old_ones_are_embedded_again(tagger, tmp_path,
                                                                            monkeypatch):
    paths = _write_tracks(tmp_path / "music", 3)
    # An old index holding a NaN row (as an index built before this check may) and the track
    # that is about to come out NaN.
    good, _ = index_cli.build_index(tagger, paths)
    old = dataclasses.replace(good, embeddings=good.embeddings.copy())
    old.embeddings[0] = np.nan
    with monkeypatch.context() as patch:
        _with_nan_embedding_for(patch, paths[2])
        os.utime(paths[2], ns=(time.time_ns(), time.time_ns() + 10**9))  # changed: embedded
        failures = []
        index, counts = index_cli.build_index(tagger, paths, old, on_failure=failures.append)
    assert counts == {"added": 0, "updated": 1, "unchanged": 1, "failed": 1}
    assert [f.message for f in failures] == [
        f"{paths[2]}: the model's embedding or tag probabilities are NaN or infinite"]
    assert index.paths.tolist() == paths[:2]  # the changed track's stale entry is gone too
    np.testing.assert_array_equal(index.embeddings, good.embeddings[:2])


def test_similar_refuses_non_finite_embeddings(tagger, trained_run, tmp_path, monkeypatch):
    paths = _write_tracks(tmp_path / "music", 3)
    good, _ = index_cli.build_index(tagger, paths)
    broken = dataclasses.replace(good, embeddings=good.embeddings.copy())
    broken.embeddings[1, 3] = np.inf
    out = os.fspath(tmp_path / "broken.npz")
    broken.save(out)
    with pytest.raises(SystemExit, match=rf"^error: {re.escape(out)}: 1 track\(s\) have NaN or "
                                         rf"infinite .*the first: {re.escape(paths[1])}\).*"
                                         r"python -m tagjax\.index"):
        similar.main([paths[0], "--index", out])

    out = os.fspath(tmp_path / "good.npz")
    good.save(out)
    query = _write_tracks(tmp_path / "query", 1, start=9)[0]
    monkeypatch.setattr(tag_cli.Tagger, "from_workdir", staticmethod(lambda *_, **__: tagger))
    _with_nan_embedding_for(monkeypatch, query)
    with pytest.raises(SystemExit, match=rf"^error: cannot use the query {re.escape(query)}: "
                                         r"the model's embedding .* NaN or infinite$"):
        similar.main([query, "--index", out])


def test_saved_indexes_honour_the_umask(tmp_path):
    index = _small_index()
    previous = os.umask(0o022)
    try:
        for mask in (0o022, 0o027, 0o077, 0o002):
            os.umask(mask)
            reference = tmp_path / f"reference-{mask:o}.txt"
            reference.write_text("a file the user writes")
            index.save(tmp_path / f"index-{mask:o}.npz")
            mode = os.stat(tmp_path / f"index-{mask:o}.npz").st_mode & 0o777
            assert mode == os.stat(reference).st_mode & 0o777, oct(mode)
    finally:
        os.umask(previous)
    # A replaced index keeps the mode its owner gave it.
    os.chmod(tmp_path / "index-22.npz", 0o640)
    index.save(tmp_path / "index-22.npz")
    assert os.stat(tmp_path / "index-22.npz").st_mode & 0o777 == 0o640
    assert not list(tmp_path.glob("*.tmp"))


def _damage_member(path, member: str) -> None:
    """Flips the last byte of an archive member's data, so that its CRC no longer matches."""
    with zipfile.ZipFile(path) as archive:
        info = archive.getinfo(member)
    data = bytearray(pathlib.Path(path).read_bytes())
    name_length, extra_length = struct.unpack("<HH", data[info.header_offset + 26:
                                                          info.header_offset + 30])
    end = info.header_offset + 30 + name_length + extra_length + info.compress_size
    data[end - 1] ^= 0xFF
    pathlib.Path(path).write_bytes(bytes(data))


def test_a_damaged_index_is_named_in_one_line(tmp_path):
    path = os.fspath(tmp_path / "index.npz")
    _small_index().save(path)
    _damage_member(path, "embeddings.npy")
    with zipfile.ZipFile(path) as archive:  # the reference: zipfile's own check
        assert archive.testzip() == "embeddings.npy"
    with pytest.raises(ValueError, match=rf"^{re.escape(path)}: a damaged tagjax index: its "
                                         r"embeddings array cannot be read \(Bad CRC-32"):
        index_cli.TrackIndex.load(path)
    for main in (lambda: similar.main(["/music/track0.wav", "--index", path]),
                 lambda: index_cli.main([os.fspath(tmp_path), "--out", path])):
        with pytest.raises(SystemExit, match=rf"^error: {re.escape(path)}: a damaged") as exit_:
            main()
        assert "\n" not in str(exit_.value.code)


@pytest.mark.parametrize("field,value,problem", [
    ("format_version", np.array([2, 2]), "an array of shape (2,) and dtype int64"),
    ("format_version", np.array("2"), "'2' (<U1)"),
    ("hop_seconds", np.ones(3), "an array of shape (3,) and dtype float64"),
    ("model_id", np.arange(2), "an array of shape (2,) and dtype int64"),
    ("embeddings", np.ones(3, np.float32), "an array of shape (3,) and dtype float32"),
])
def test_an_index_with_fields_of_the_wrong_form_is_named(tmp_path, field, value, problem):
    path = os.fspath(tmp_path / "index.npz")
    _small_index().save(path)
    with np.load(path) as archive:
        arrays = dict(archive)
    np.savez(path, **{**arrays, field: value})
    with pytest.raises(ValueError, match=rf"^{re.escape(path)}: not a tagjax index \(its "
                                         rf"{field} is {re.escape(problem)}"):
        index_cli.TrackIndex.load(path)


def test_index_checks_its_output_before_the_work_and_keeps_finished_work(tagger, trained_run,
                                                                         tmp_path, monkeypatch):
    paths = _write_tracks(tmp_path / "music", 2)
    predict = tag_cli.Tagger.predict

    def no_work(*_, **__):
        raise AssertionError("nothing may be embedded")

    monkeypatch.setattr(tag_cli.Tagger, "from_workdir", staticmethod(lambda *_, **__: tagger))
    monkeypatch.setattr(tag_cli.Tagger, "predict", no_work)
    missing = os.fspath(tmp_path / "missing" / "index.npz")
    with pytest.raises(SystemExit, match=rf"^error: the folder of --out {re.escape(missing)} "
                                         r"does not exist: create it first$"):
        index_cli.main([*paths, "--workdir", trained_run, "--out", missing])
    (tmp_path / "readonly").mkdir()
    out = os.fspath(tmp_path / "readonly" / "index.npz")
    with permissions.unwritable(tmp_path / "readonly", monkeypatch), pytest.raises(
            SystemExit, match=rf"^error: cannot write --out {re.escape(out)}: permission "
                              r"denied in .*readonly$"):
        index_cli.main([*paths, "--workdir", trained_run, "--out", out])

    # The disk fills up after the work: the index is kept elsewhere, and the message says where.
    monkeypatch.setattr(tag_cli.Tagger, "predict", predict)
    save = index_cli.TrackIndex.save
    out = os.fspath(tmp_path / "index.npz")

    def full_disk(self, path):
        if os.fspath(path) == out:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), out)
        save(self, path)

    monkeypatch.setattr(index_cli.TrackIndex, "save", full_disk)
    with pytest.raises(SystemExit, match=r"^error: cannot write .*index\.npz \(no space left on "
                                         r"device\); the index of 2 tracks is saved in (\S+) "
                                         r"instead") as exit_:
        index_cli.main([*paths, "--workdir", trained_run, "--out", out])
    kept = re.search(r"saved in (\S+) instead", str(exit_.value.code)).group(1)
    try:
        np.testing.assert_allclose(index_cli.TrackIndex.load(kept).embeddings,
                                   tagger.embed(paths), rtol=1e-6)
    finally:
        os.remove(kept)


def test_commands_name_a_corrupt_run_config(tmp_path):
    workdir = tmp_path / "run"
    workdir.mkdir()
    (workdir / "config.json").write_text('{"train": ')
    config = re.escape(os.fspath(workdir / "config.json"))
    track = _write_tracks(tmp_path / "music", 1)[0]
    with pytest.raises(SystemExit, match=rf"^error: {config}: not a readable run config"):
        index_cli.main([track, "--workdir", os.fspath(workdir), "--out",
                        os.fspath(tmp_path / "index.npz")])
    out = os.fspath(tmp_path / "index.npz")
    _small_index(workdir=os.fspath(workdir), model_name="").save(out)
    with pytest.raises(SystemExit, match=rf"^error: {config}: not a readable run config"):
        similar.main([track, "--index", out])  # not in the index: embedded with the run


def test_index_names_unreadable_folders_and_says_so_in_its_status(tagger, trained_run, tmp_path,
                                                                   capsys, monkeypatch):
    monkeypatch.setattr(tag_cli.Tagger, "from_workdir", staticmethod(lambda *_, **__: tagger))
    paths = _write_tracks(tmp_path / "music", 1)
    _write_tracks(tmp_path / "music" / "locked", 1, start=1)
    out = os.fspath(tmp_path / "index.npz")
    with permissions.unreadable(tmp_path / "music" / "locked", monkeypatch):
        assert index_cli.main([os.fspath(tmp_path / "music"), "--workdir", trained_run,
                               "--out", out]) == 1
    captured = capsys.readouterr()
    assert f"error: skipped {tmp_path / 'music' / 'locked'}: permission denied" in captured.err
    assert "1 tracks (1 added, 0 updated, 0 unchanged, 0 failed)" in captured.out
    assert index_cli.TrackIndex.load(out).paths.tolist() == paths
