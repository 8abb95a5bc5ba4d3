"""The published musicnn and VGG taggers against the original TensorFlow graphs.

The references are the fixtures of `tools/musicnn_fixtures.py`: the wheel's own graphs (`.meta`)
with their checkpoints, run on three 6 s clips (a General MIDI render, a full-scale electronic
loop, a quiet chord) through the released extractor's input (librosa's mel spectrogram,
`log10(1 + 10000 S)`, in float32). They are checked from the same log-mel input (the network
alone) and end to end from the audio (tagjax's own STFT and mel filterbank), for all four
models, jitted, at several batch sizes.
"""

import csv
import json
import os
import subprocess
import sys
import tomllib

import jax
import numpy as np
import pytest
import soundfile

import tagjax as tj
from tagjax import chunking
from tagjax import tag as tag_cli
from tagjax.models import pretrained

FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures", "musicnn")
NAMES = ["musicnn-mtt", "musicnn-msd", "vgg-mtt", "vgg-msd"]
SR = 16000
# The bar for tag probabilities, on any recording: 1e-4 (measured here: under 1e-6).
PROBABILITY_ATOL = 1e-4
# Hidden features, relative to their largest magnitude: a float32 dot product of K terms errs by
# about sqrt(K) u of its scale (u = 6e-8); the widest layer sums K = 7 x 561 products, so about
# 4e-6 per layer, and five layers lie in sequence before the pooled features (input norm, the
# front end, three mid-end layers): 2e-5. Allow 5e-5 (measured here: under 2e-6).
FEATURE_RTOL = 5e-5


def _outputs(name: str) -> dict[str, np.ndarray]:
    with np.load(os.path.join(FIXTURES, f"outputs_{name.replace('-', '_')}.npz")) as archive:
        return {key: archive[key] for key in archive.files}


@pytest.fixture(scope="module")
def inputs():
    with np.load(os.path.join(FIXTURES, "inputs.npz")) as archive:
        return {"audio": archive["audio"].astype(np.float32) / 32768.0,
                "log_mel": archive["log_mel"], "names": list(archive["names"])}


@pytest.fixture(scope="module")
def loaded():
    return {name: pretrained.load(name) for name in NAMES}


def _features(module, log_mel):
    """From the compressed log-mel patches: probabilities, musicnn's penultimate layer (the
    VGG's summary) and the summary."""
    summary = module.summary(module.frontend.network(log_mel, train=False), train=False)
    hidden = (module.head.penultimate(summary, train=False)
              if hasattr(module.head, "penultimate") else summary)
    return jax.nn.sigmoid(module.head(summary, train=False)), hidden, summary


def _assert_features_close(got, want):
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=0, atol=FEATURE_RTOL * np.abs(want).max())


# ----------------------------------------------------------------------------------------------
# The catalogue


def test_four_models_with_published_scores_and_tags():
    assert pretrained.available() == sorted(NAMES)
    # The scores the musicnn package reports for its models (`experiment.result`).
    published = {"musicnn-mtt": (0.9067, 0.3831), "vgg-mtt": (0.9030, 0.3823),
                 "musicnn-msd": (0.8802, 0.2891), "vgg-msd": (0.8768, 0.2819)}
    for name, (roc_auc, pr_auc) in published.items():
        info = pretrained.info(name)
        assert (round(info.published_roc_auc, 4), round(info.published_pr_auc, 4)) == (
            roc_auc, pr_auc)
        assert len(info.tags) == len(set(info.tags)) == 50
        assert info.chunk_samples == 186 * 256 + 512 and info.hop_samples == 187 * 256
        assert info.lead_samples == 256
    assert pretrained.info("musicnn-mtt").tags == pretrained.info("vgg-mtt").tags
    assert pretrained.info("musicnn-msd").tags == pretrained.info("vgg-msd").tags
    assert {"techno", "classical", "female vocal"} <= set(pretrained.info("musicnn-mtt").tags)
    assert {"rock", "Hip-Hop", "80s"} <= set(pretrained.info("musicnn-msd").tags)
    assert "Permission to use, copy, modify" in pretrained.license_text()


def test_unknown_name_lists_the_models():
    with pytest.raises(pretrained.UnknownPretrainedError, match="musicnn-mtt, vgg-msd"):
        pretrained.info("musicnn")


def test_parameter_counts_are_the_originals(loaded):
    # musicnn's paper and its checkpoint: 792,079 values with the batch-norm statistics.
    for name, (_, variables, _) in loaded.items():
        count = sum(leaf.size for leaf in jax.tree.leaves(variables))
        assert count == (792_079 if name.startswith("musicnn") else 607_030)


def test_weight_files_are_package_data():
    # `pip install .` must ship the weights and their licence: pyproject's globs cover them.
    repository = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    with open(os.path.join(repository, "pyproject.toml"), "rb") as f:
        globs = tomllib.load(f)["tool"]["setuptools"]["package-data"]["tagjax.models"]
    weights = os.path.join(repository, "tagjax", "models", "weights")
    import fnmatch

    for name in os.listdir(weights):
        assert any(fnmatch.fnmatch(f"weights/{name}", glob) for glob in globs), name


def test_models_load_and_tag_without_network_or_tensorflow(tmp_path):
    # A fresh interpreter in which importing TensorFlow fails and every socket refuses.
    script = """
import builtins, socket, sys
real_import = builtins.__import__
def guarded(name, *args, **kwargs):
    if name.split(".")[0] in ("tensorflow", "torch"):
        raise ImportError(f"{name} may not be imported")
    return real_import(name, *args, **kwargs)
builtins.__import__ = guarded
def refuse(*args, **kwargs):
    raise OSError("no network")
socket.socket.connect = socket.socket.connect_ex = refuse
socket.create_connection = socket.getaddrinfo = refuse
import numpy as np
import tagjax as tj
audio = np.sin(2 * np.pi * 440 * np.arange(16000) / 16000).astype(np.float32)
for name in tj.models.pretrained.available():
    p = tj.Tagger.pretrained(name, batch_size=1).tag(audio)
    assert p.shape == (50,) and np.isfinite(p).all(), name
print("ok")
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          cwd=tmp_path, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().endswith("ok")


# ----------------------------------------------------------------------------------------------
# Parity with the original graphs


@pytest.mark.parametrize("name", NAMES)
def test_network_matches_original_graph_from_the_same_log_mel(loaded, inputs, name):
    model, variables, _ = loaded[name]
    want = _outputs(name)
    log_mel = inputs["log_mel"].reshape(-1, 187, 96)
    forward = jax.jit(lambda v, x: model.apply(v, x, method=_features))
    for batch in (1, 2, 6):  # one compilation per batch size, every patch checked in each
        rows = [forward(variables, log_mel[i:i + batch]) for i in range(0, len(log_mel), batch)]
        probabilities, embedding, summary = (np.concatenate([np.asarray(r[k]) for r in rows])
                                             for k in range(3))
        np.testing.assert_allclose(probabilities, want["taggram"].reshape(-1, 50), rtol=0,
                                   atol=PROBABILITY_ATOL)
        if name.startswith("musicnn"):
            _assert_features_close(embedding, want["penultimate"].reshape(-1, 200))
            # The summary is [mean, max] over frames of the 753 mid-end features.
            _assert_features_close(summary[:, :753], want["mean_pool"].reshape(-1, 753))
            _assert_features_close(summary[:, 753:], want["max_pool"].reshape(-1, 753))
        else:
            _assert_features_close(embedding, want["pool5"].reshape(-1, 256))


@pytest.mark.parametrize("name", NAMES)
def test_tagger_matches_original_graph_end_to_end_from_audio(inputs, name):
    # Each 6 s clip is two full 187-frame patches and a 2-frame remainder that the original
    # drops; here it is a third chunk, weighted by the 256 samples of track it describes.
    tagger = tj.Tagger.pretrained(name, batch_size=4, workers=2)
    want = _outputs(name)
    results = list(tagger.predict(list(inputs["audio"])))
    for result, taggram in zip(results, want["taggram"], strict=True):
        np.testing.assert_allclose(result.chunk_probabilities[:2], taggram, rtol=0,
                                   atol=PROBABILITY_ATOL)
        np.testing.assert_allclose(result.chunk_weights, [1, 1, 256 / 47872], rtol=1e-6)
        np.testing.assert_allclose(result.chunk_start_seconds, [0, 2.992, 5.984], rtol=1e-9)
    # One track at a time, in other batches: the same numbers.
    alone = tj.Tagger.pretrained(name, batch_size=1, workers=1)
    for audio, result in zip(inputs["audio"], results, strict=True):
        np.testing.assert_allclose(alone.tag(audio), result.probabilities, rtol=0, atol=1e-6)


def test_embeddings_are_the_original_layers(inputs, loaded):
    # The default: the pooled frames through the head's first batch norm, here computed with
    # NumPy from the original's pooled features and the converted batch-norm variables.
    want = _outputs("musicnn-mtt")
    _, variables, _ = loaded["musicnn-mtt"]
    norm = {key: np.asarray(value, np.float64) for key, value in (
        *variables["params"]["head"]["input_norm"].items(),
        *variables["batch_stats"]["head"]["input_norm"].items())}
    pooled = np.concatenate([want["mean_pool"], want["max_pool"]], axis=-1)
    normalized = ((pooled - norm["mean"]) / np.sqrt(norm["var"] + 1e-3) * norm["scale"]
                  + norm["bias"])
    for embedding, reference in (("pooled_normalized", normalized),
                                 ("penultimate", want["penultimate"]), ("pooled", pooled)):
        tagger = tj.Tagger.pretrained("musicnn-mtt", batch_size=4, embedding=embedding)
        assert tagger.embedding_dim == reference.shape[-1]
        for audio, per_chunk in zip(inputs["audio"], reference, strict=True):
            chunks, _ = chunking.chunk_track(audio, tagger.chunk_samples, tagger.hop_samples,
                                            tagger.lead_samples)
            _, got = tag_cli.compiled_forward(tagger.model)(tagger.variables, chunks[:2])
            _assert_features_close(got, per_chunk)
    default = tj.Tagger.pretrained("musicnn-mtt", batch_size=4)
    assert default.embedding_dim == 1506 and default.model_id == tj.Tagger.pretrained(
        "musicnn-mtt", batch_size=4, embedding="pooled_normalized").model_id
    assert tj.Tagger.pretrained("vgg-mtt", batch_size=4).embedding_dim == 256
    with pytest.raises(ValueError, match="musicnn models"):
        tj.Tagger.pretrained("vgg-mtt", embedding="pooled")


def test_float32_input_stays_finite_where_the_originals_float16_overflows(inputs):
    # The original casts the mel spectrogram to float16 before `10000 S`: on the loud loop the
    # product overflows (the graph then gives NaN); tagjax computes in float32.
    loud = inputs["audio"][inputs["names"].index("loud_loop")]
    mel = tj.features.melspectrogram(loud, n_fft=512, hop_length=256, n_mels=96)
    with np.errstate(over="ignore"):
        assert np.isinf(10000 * np.asarray(mel).astype(np.float16)).any()
    for name in NAMES:
        probabilities = tj.Tagger.pretrained(name, batch_size=4).tag(loud)
        assert np.isfinite(probabilities).all()


@pytest.mark.parametrize("num_samples", [1, 47871, 47872, 47873, 100_000])
@pytest.mark.parametrize("hop", [47872, 16000])
def test_chunks_with_lead_context_match_explicit_slicing(num_samples, hop):
    x = np.random.default_rng(num_samples).standard_normal(num_samples).astype(np.float32)
    chunk, lead = 48128, 256
    chunks, weights = chunking.chunk_track(x, chunk, hop, lead)
    padded = np.concatenate([np.zeros(lead, np.float32), x, np.zeros(2 * chunk, np.float32)])
    span = chunk - lead
    n = 1 + max(0, -(-(num_samples - span) // hop))
    assert chunks.shape == (n, chunk)
    for k in range(n):
        np.testing.assert_array_equal(chunks[k], padded[k * hop:k * hop + chunk])
        assert weights[k] == pytest.approx(min(max(num_samples - k * hop, 0), span) / span)


# ----------------------------------------------------------------------------------------------
# The command line


@pytest.fixture(scope="module")
def clip_files(inputs, tmp_path_factory):
    folder = tmp_path_factory.mktemp("clips")
    paths = []
    for name, audio in zip(inputs["names"], inputs["audio"], strict=True):
        path = os.fspath(folder / f"{name}.flac")
        soundfile.write(path, audio, SR, subtype="PCM_16")
        paths.append(path)
    broken = os.fspath(folder / "broken.mp3")
    with open(broken, "wb") as f:
        f.write(b"ID3 not really an mp3")
    return paths, broken


def test_tag_uses_musicnn_mtt_without_a_workdir(clip_files, capsys):
    paths, broken = clip_files
    assert tag_cli.main([*paths, "--json", "--top", "3", "--batch-size", "4"]) == 0
    printed = json.loads(capsys.readouterr().out)
    tagger = tj.Tagger.pretrained("musicnn-mtt", batch_size=4)
    for track, path in zip(printed, paths, strict=True):
        want = tag_cli.top_tags(tagger.tag(path), tagger.tags, 3)
        assert [t["tag"] for t in track["tags"]] == [tag for tag, _ in want]
    assert tag_cli.main([paths[0], broken, "--model", "vgg-msd", "--batch-size", "4"]) == 1
    captured = capsys.readouterr()
    assert "broken.mp3" in captured.err and "1 of 2 file(s)" in captured.err
    vgg = tj.Tagger.pretrained("vgg-msd", batch_size=4)
    best = tag_cli.top_tags(vgg.tag(paths[0]), vgg.tags, 1)[0][0]
    assert best in captured.out.splitlines()[1]


def test_taggram_json_and_csv_give_every_chunk(clip_files, capsys):
    paths, _ = clip_files
    tagger = tj.Tagger.pretrained("musicnn-mtt", batch_size=4)
    [result] = tagger.predict(paths[:1])
    assert tag_cli.main([paths[0], "--taggram", "--json", "--batch-size", "4"]) == 0
    [track] = json.loads(capsys.readouterr().out)
    taggram = track["taggram"]
    assert taggram["tags"] == tagger.tags
    np.testing.assert_allclose(taggram["start"], [0.0, 2.992, 5.984])
    np.testing.assert_allclose(taggram["end"], [2.992, 5.984, 6.0])
    np.testing.assert_allclose(taggram["probabilities"], result.chunk_probabilities, atol=1e-6)
    assert tag_cli.main([paths[0], "--taggram", "--csv", "--batch-size", "4"]) == 0
    rows = list(csv.reader(capsys.readouterr().out.splitlines()))
    assert rows[0] == ["path", "start", "end", *tagger.tags]
    assert [row[1] for row in rows[1:]] == ["0.000", "2.992", "5.984"]
    np.testing.assert_allclose(np.array([row[3:] for row in rows[1:]], float),
                               result.chunk_probabilities, atol=1e-6)
    assert tag_cli.main([paths[0], "--taggram", "--batch-size", "4"]) == 0
    table = capsys.readouterr().out.splitlines()
    assert len(table) == 1 + 1 + 3 and table[2].strip().startswith("0:00-0:03")


def test_model_options_answer_mistakes_in_one_line(capsys):
    with pytest.raises(SystemExit) as exit_info:
        tag_cli.main(["song.mp3", "--model", "musicnn"])
    assert "no pretrained model named 'musicnn'" in str(exit_info.value)
    assert "musicnn-mtt" in str(exit_info.value) and "\n" not in str(exit_info.value)
    with pytest.raises(SystemExit) as exit_info:
        tag_cli.main(["song.mp3", "--model", "vgg-mtt", "--workdir", "runs/x"])
    assert exit_info.value.code == 2
    assert "not allowed with" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        tag_cli.main(["--list-models"])
    assert exit_info.value.code == 0
    listing = capsys.readouterr().out
    for name in NAMES:
        assert name in listing
    assert "musicnn-mtt (default)" in listing and "techno" in listing and "Hip-Hop" in listing


def test_plot_of_a_pretrained_model(clip_files, tmp_path):
    import matplotlib.image

    from tagjax import plot

    paths, _ = clip_files
    out = os.fspath(tmp_path / "plot.png")
    assert tag_cli.main([paths[0], "--plot", out, "--batch-size", "4"]) == 0
    assert matplotlib.image.imread(out).shape[0] > 100
    tagger = tj.Tagger.pretrained("musicnn-mtt", batch_size=4)
    audio = tj.data.load_audio(paths[0])
    shown = plot.display_log_mel(tagger, audio)
    # What the model hears, framed like a centred spectrogram of the whole track.
    mel = tj.features.melspectrogram(audio, n_fft=512, hop_length=256, n_mels=96)
    # The same frames; only the last step differs (float32 log1p against float64 log10), by a
    # few units in the last place of values up to about 6.
    np.testing.assert_allclose(shown, np.log10(1 + 10000 * np.asarray(mel, np.float64)),
                               rtol=0, atol=4e-6)
    positions, labels = plot._mel_axis(plot.spectrogram_frontend(tagger))
    assert labels[:3] == ["100", "250", "500"] and labels[-1] == "4k"
    assert np.all(np.diff(positions) > 0) and 0 < positions[0] < positions[-1] < 96
    assert [plot.minutes_seconds(t) for t in (0, 59.6, 75, 3725)] == [
        "0:00", "1:00", "1:15", "1:02:05"]


def test_index_and_similar_with_a_pretrained_model(clip_files, tmp_path, capsys):
    from tagjax import index as index_cli
    from tagjax import similar

    paths, broken = clip_files
    out = os.fspath(tmp_path / "music.npz")
    # No --model or --workdir: musicnn-mtt; the broken file is named and skipped.
    assert index_cli.main([*paths[:2], broken, "--out", out, "--batch-size", "4"]) == 1
    assert "broken.mp3" in capsys.readouterr().err
    index = index_cli.TrackIndex.load(out)
    assert index.model_name == "musicnn-mtt" and index.workdir == "" and len(index) == 2
    tagger = tj.Tagger.pretrained("musicnn-mtt", batch_size=4)
    np.testing.assert_allclose(index.embeddings, tagger.embed(paths[:2]), rtol=0, atol=1e-5)
    # Extending uses the index's own model; another one is refused in one line.
    assert index_cli.main([paths[2], "--out", out, "--batch-size", "4"]) == 0
    assert len(index_cli.TrackIndex.load(out)) == 3
    with pytest.raises(SystemExit) as exit_info:
        index_cli.main([paths[2], "--out", out, "--model", "musicnn-msd"])
    assert "pretrained model musicnn-mtt" in str(exit_info.value)
    assert "pretrained model musicnn-msd" in str(exit_info.value)
    # A query outside the index is embedded with the index's model.
    query = os.fspath(tmp_path / "query.wav")
    soundfile.write(query, soundfile.read(paths[0])[0][: 4 * SR], SR)
    capsys.readouterr()
    assert similar.main([query, "--index", out, "--json", "--batch-size", "4"]) == 0
    answer = json.loads(capsys.readouterr().out)
    assert answer["neighbours"][0]["path"] == paths[0]


def test_indexes_of_format_1_still_load(tmp_path):
    from tagjax import index as index_cli

    n, path = 2, os.fspath(tmp_path / "old.npz")
    np.savez(path, paths=np.array(["/a.wav", "/b.wav"]), sizes=np.zeros(n, np.int64),
             mtimes_ns=np.zeros(n, np.int64), durations=np.ones(n, np.float32),
             embeddings=np.ones((n, 3), np.float32), probabilities=np.zeros((n, 2), np.float32),
             tags=np.array(["x", "y"]), model_id="abc", workdir="/runs/x", hop_seconds=3.0,
             format_version=1)
    index = index_cli.TrackIndex.load(path)
    assert index.model_name == "" and index.workdir == "/runs/x" and len(index) == 2
