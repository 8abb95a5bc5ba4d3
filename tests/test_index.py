"""The index file (`tagjax.index`) and similarity search (`tagjax.similar`) on the tiny run.

Cosine similarity is checked against scikit-learn, ranking against NumPy's sort, the stored
embeddings against `Tagger.embed`, and an index extended in steps against one built at once.
"""

import dataclasses
import itertools
import json
import os
import time

import numpy as np
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
