"""Runs the original musicnn graphs to make the parity fixtures of tagjax's pretrained models.

A maintainer's step, like `convert_musicnn.py` (TensorFlow and librosa needed; tagjax never
imports TensorFlow). From the repository root:

    pip download --no-deps musicnn==0.1.0 -d /tmp/musicnn
    pip install tensorflow-cpu librosa
    python tools/musicnn_fixtures.py /tmp/musicnn/musicnn-0.1.0-py3-none-any.whl

Each model's inference graph is cut from the wheel's own graph definition (`.meta`: the graph
the authors trained, not a re-implementation) and run with the checkpoint's variables fed by
name, on the log-mel input the released extractor computes, in float32: librosa's mel
spectrogram of the whole clip (16 kHz, n_fft 512, hop 256, 96 bands, centred), then
`log10(1 + 10000 S)`, cut into 187-frame patches. (The extractor casts the spectrogram to
float16 first; `--audio` reports how much that changes and how often it overflows.)

Writes, under `tests/fixtures/musicnn/`:
- `inputs.npz`: `audio` (clips, 96000) int16 (6 s at 16 kHz; the float audio is `audio / 32768`),
  `log_mel` (clips, 2, 187, 96) float32, the patches fed to the graphs, and `names`;
- `outputs_<model>.npz` for each model: `taggram` (clips, 2, 50), and for musicnn
  `penultimate` (clips, 2, 200), `max_pool` and `mean_pool` (clips, 2, 753); for the VGG
  `pool5` (clips, 2, 256), flattened as the graph flattens it.

The clips are made here, so the fixtures carry no one's recording: a `tj.data.synth` render
(General MIDI), a full-scale electronic loop (kick, bass, hi-hat: loud enough that the
original's float16 cast overflows) and a quiet decaying chord. With `--audio FILE...` it also
compares the graphs with tagjax (`tj.Tagger.pretrained`) on those files, prints the largest
differences and writes nothing.
"""

import argparse
import os
import sys
import tempfile
import zipfile

import numpy as np

SR = 16000
CLIP_SAMPLES = 96000  # 6 s: two 187-frame patches of the centred spectrogram (376 frames)
PATCH = 187
OUT_DIR = os.path.normpath(os.path.join(os.path.dirname(__file__), "..", "tests", "fixtures",
                                        "musicnn"))
MODELS = {"musicnn_mtt": "MTT_musicnn", "musicnn_msd": "MSD_musicnn", "vgg_mtt": "MTT_vgg",
          "vgg_msd": "MSD_vgg"}
OUTPUTS = {
    "musicnn": {"taggram": "model/Sigmoid:0",
                "penultimate": "model/batch_normalization_10/batchnorm/add_1:0",
                "max_pool": "model/Max:0", "mean_pool": "model/moments/Squeeze:0"},
    "vgg": {"taggram": "model/Sigmoid:0", "pool5": "model/max_pooling2d_4/MaxPool:0"},
}


# ----------------------------------------------------------------------------------------------
# The clips


def synth_clip(seed: int) -> np.ndarray:
    import tagjax as tj

    midi, _ = tj.data.synth.compose(seed)
    audio = tj.data.synth.render(midi, sr=SR)
    return _fit(audio / max(np.abs(audio).max(), 1e-9) * 0.9)


def loud_loop(seed: int) -> np.ndarray:
    """A full-scale 128 bpm loop: a pitch-swept kick, a sawtooth bass and noise hi-hats."""
    rng = np.random.default_rng(seed)
    t = np.arange(CLIP_SAMPLES) / SR
    beat = 60 / 128
    since_beat = t % beat
    kick = np.sin(2 * np.pi * (50 * since_beat + 100 * (1 - np.exp(-since_beat * 30)) / 30)) \
        * np.exp(-since_beat * 8)
    bass_f = 55 * 2 ** (np.floor(t / (2 * beat)) % 4 * 3 / 12)
    bass = 2 * ((t * bass_f) % 1) - 1
    since_half = (t + beat / 2) % beat
    hat = rng.standard_normal(len(t)) * np.exp(-since_half * 60)
    mix = 0.9 * kick + 0.45 * bass + 0.35 * hat
    return _fit(np.clip(mix, -1, 1))


def quiet_chord() -> np.ndarray:
    """A C major chord of decaying harmonic tones at -40 dBFS, struck twice."""
    t = np.arange(CLIP_SAMPLES) / SR
    since = t % 3.0
    tone = sum(np.sin(2 * np.pi * f * k * t) / k ** 1.5
               for f in (261.63, 329.63, 392.0) for k in range(1, 8))
    return _fit(0.01 * tone / np.abs(tone).max() * np.exp(-since * 1.5))


def _fit(audio: np.ndarray) -> np.ndarray:
    audio = np.asarray(audio, np.float64)[:CLIP_SAMPLES]
    audio = np.pad(audio, (0, CLIP_SAMPLES - len(audio)))
    # Stored as int16; the float clip is exactly int16 / 32768.
    return np.round(np.clip(audio, -1, 1 - 1 / 32768) * 32768).astype(np.int16)


# ----------------------------------------------------------------------------------------------
# The original graphs


def extractor_log_mel(audio: np.ndarray, float16: bool = False) -> np.ndarray:
    """`(frames, 96)` as `musicnn.extractor.batch_data` computes it, in float32 by default."""
    import librosa

    mel = librosa.feature.melspectrogram(y=audio, sr=SR, hop_length=256, n_fft=512,
                                         n_mels=96).T
    if float16:
        mel = mel.astype(np.float16)
        return np.log10(10000 * mel + 1)
    return np.log10(10000 * mel.astype(np.float64) + 1).astype(np.float32)


def patches(log_mel: np.ndarray) -> np.ndarray:
    """Non-overlapping 187-frame patches `(n, 187, 96)`, the last partial one dropped, as the
    extractor cuts them."""
    n = (len(log_mel) - PATCH) // PATCH + 1
    return np.stack([log_mel[i * PATCH:(i + 1) * PATCH] for i in range(n)])


class OriginalGraph:
    """One model's inference subgraph from its `.meta`, with the checkpoint's variables."""

    def __init__(self, folder: str, architecture: str):
        import tensorflow as tf
        from tensorflow.python.framework import graph_util
        from tensorflow.python.training import py_checkpoint_reader

        meta = tf.compat.v1.MetaGraphDef()
        with open(os.path.join(folder, ".meta"), "rb") as f:
            meta.ParseFromString(f.read())
        self.outputs = OUTPUTS[architecture]
        wanted = sorted({name.split(":")[0] for name in self.outputs.values()})
        graph_def = graph_util.extract_sub_graph(meta.graph_def, wanted)
        for node in graph_def.node:
            # Shapes recorded by TF 1 that today's importer rejects; they are recomputed.
            if "_output_shapes" in node.attr:
                del node.attr["_output_shapes"]
        self.graph = tf.Graph()
        with self.graph.as_default():
            tf.compat.v1.import_graph_def(graph_def, name="")
        reader = py_checkpoint_reader.NewCheckpointReader(folder + os.sep)
        variables = [node.name for node in graph_def.node if node.op in ("VariableV2",
                                                                         "Variable")]
        self.feed = {f"{name}:0": reader.get_tensor(name) for name in variables}
        self.feed["model/Placeholder_2:0"] = False  # is_training
        self.session = tf.compat.v1.Session(graph=self.graph)

    def __call__(self, log_mel_patches: np.ndarray) -> dict[str, np.ndarray]:
        feed = {**self.feed, "model/Placeholder:0": np.asarray(log_mel_patches, np.float32)}
        names = list(self.outputs)
        values = self.session.run([self.outputs[name] for name in names], feed)
        out = {}
        for name, value in zip(names, values, strict=True):
            out[name] = np.asarray(value, np.float32).reshape(len(log_mel_patches), -1)
        return out


def load_graphs(wheel: str, tmp: str) -> dict[str, OriginalGraph]:
    with zipfile.ZipFile(wheel) as archive:
        archive.extractall(tmp)
    return {stem: OriginalGraph(os.path.join(tmp, "musicnn", folder),
                                "musicnn" if stem.startswith("musicnn") else "vgg")
            for stem, folder in MODELS.items()}


# ----------------------------------------------------------------------------------------------
# Fixtures and comparisons


def write_fixtures(graphs: dict[str, OriginalGraph]) -> None:
    clips = {"synth": synth_clip(3), "loud_loop": loud_loop(0), "quiet_chord": quiet_chord()}
    audio = np.stack(list(clips.values()))
    log_mel = np.stack([patches(extractor_log_mel(clip / 32768.0)) for clip in audio])
    os.makedirs(OUT_DIR, exist_ok=True)
    np.savez_compressed(os.path.join(OUT_DIR, "inputs.npz"), audio=audio, log_mel=log_mel,
                        names=np.asarray(list(clips), str))
    for stem, graph in graphs.items():
        outputs = graph(log_mel.reshape(-1, PATCH, 96))
        outputs = {k: v.reshape(*log_mel.shape[:2], -1) for k, v in outputs.items()}
        np.savez_compressed(os.path.join(OUT_DIR, f"outputs_{stem}.npz"), **outputs)
        print(f"{stem}: " + ", ".join(f"{k} {v.shape}" for k, v in outputs.items()))
    for name, clip in clips.items():
        half = extractor_log_mel(clip / 32768.0, float16=True)
        print(f"{name}: float16 cast overflows in {np.isinf(half).sum()} of {half.size} bins")


def compare(graphs: dict[str, OriginalGraph], files: list[str]) -> None:
    """The largest differences between the original graphs and tagjax on real files."""
    import tagjax as tj

    for stem, graph in graphs.items():
        name = stem.replace("_", "-")
        tagger = tj.Tagger.pretrained(name, batch_size=8)
        worst, worst16, nan16 = 0.0, 0.0, 0
        for path in files:
            audio = tj.data.load_audio(path, sr=SR)
            reference = graph(patches(extractor_log_mel(audio)))["taggram"]
            result = next(tagger.predict([audio]))
            ours = result.chunk_probabilities[:len(reference)]
            worst = max(worst, float(np.abs(ours - reference).max()))
            half = graph(patches(extractor_log_mel(audio, float16=True)))["taggram"]
            nan16 += int(np.isnan(half).any(axis=1).sum())
            finite = ~np.isnan(half).any(axis=1)
            if finite.any():
                worst16 = max(worst16, float(np.abs(half[finite] - reference[finite]).max()))
        print(f"{name}: {len(files)} files, largest |tagjax - original float32| = {worst:.2e}; "
              f"the original with its float16 cast: {nan16} NaN patches, largest difference "
              f"elsewhere {worst16:.2e}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("wheel", help="musicnn-0.1.0-py3-none-any.whl")
    parser.add_argument("--audio", nargs="+", metavar="FILE",
                        help="compare with tagjax on these files instead of writing fixtures")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        graphs = load_graphs(args.wheel, tmp)
        if args.audio:
            compare(graphs, args.audio)
        else:
            write_fixtures(graphs)
    return 0


if __name__ == "__main__":
    sys.exit(main())
