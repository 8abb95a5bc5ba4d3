"""Zero-shot scoring of the pretrained models on synth/tiny, against scikit-learn's metrics."""

import numpy as np
import pytest
import sklearn.metrics

import tagjax as tj
from tagjax import zeroshot
from tagjax.data import schema


def test_tag_mapping_by_name_then_synonyms():
    model = ["guitar", "classic", "choral", "Rock", "vocal", "vocals"]
    mapping = zeroshot.tag_mapping(["rock", "classical", "choir", "vocal", "organ"], model)
    # The model's own name wins over synonyms; unmatched tags are left out.
    assert mapping == {"rock": [3], "classical": [1], "choir": [2], "vocal": [4]}
    scores = zeroshot.mapped_scores(np.array([[0.1, 0.2, 0.3, 0.4, 0.5, 0.9]]),
                                    {"x": [0, 2], "y": [5]})
    np.testing.assert_array_equal(scores, [[0.3, 0.9]])


def test_jamendo_tags_map_without_their_category_and_punctuation():
    model = ["Rock", "new age", "Hip-Hop", "voice", "guitar", "classic"]
    tags = ["genre---rock", "genre---newage", "genre---hiphop", "instrument---voice",
            "genre---classical", "mood/theme---happy"]
    assert zeroshot.tag_mapping(tags, model) == {
        "genre---rock": [0], "genre---newage": [1], "genre---hiphop": [2],
        "instrument---voice": [3], "genre---classical": [5]}


def test_zero_shot_scores_equal_scikit_learn(synth_tiny_dir):
    source, tags = tj.data.get_source("synth", "train", config="tiny", data_dir=synth_tiny_dir)
    tagger = tj.Tagger.pretrained("musicnn-mtt", batch_size=4)
    labels, scores, mapping = zeroshot.shared_tag_scores(tagger, source, tags)
    assert len(mapping) == 29 and not {"organ", "bass", "jazz"} & set(mapping)
    # The scores are the tagger's probabilities of the mapped tags, track by track.
    first = tagger.tag(schema.int16_to_audio(source[0]["audio"]))
    np.testing.assert_allclose(scores[0], [first[c].max() for c in mapping.values()], atol=1e-6)
    report = tj.metrics.tagging_report(labels, scores, list(mapping))
    for j, tag in enumerate(mapping):
        if len(np.unique(labels[:, j])) < 2:
            assert tag in report["excluded_tags"]
            continue
        assert report["per_tag"][tag]["roc_auc"] == pytest.approx(
            sklearn.metrics.roc_auc_score(labels[:, j], scores[:, j]), abs=1e-6)
        assert report["per_tag"][tag]["pr_auc"] == pytest.approx(
            sklearn.metrics.average_precision_score(labels[:, j], scores[:, j]), abs=1e-6)


def test_command_line(synth_tiny_dir, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("TFDS_DATA_DIR", synth_tiny_dir)
    out = tmp_path / "zeroshot.json"
    assert zeroshot.main(["--dataset-config", "tiny", "--split", "train", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "zero-shot over 29 shared tags" in printed and "not predicted by the model" in printed
    with pytest.raises(SystemExit, match="no pretrained model named 'nope'"):
        zeroshot.main(["--model", "nope"])
