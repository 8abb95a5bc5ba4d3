"""Throughput of tagging a folder of music, end to end and per stage, in audio seconds per second.

    python benchmarks/tag_throughput.py --workdir RUN [--folder DIR] [--batch-size N]
        [--batch-sizes 2,4,8,16,32] [--workers N] [--repeats 3]
        [--out benchmarks/results/tag_throughput.json]

The folder (default `benchmarks/results/tag_folder`, made on first use) holds multi-minute
recordings in mp3, flac, ogg, wav and opus, the 30 s opus originals they were cut from, and three
broken files (a truncated mp3, a text file named .wav, an empty file) that must be named and
skipped. The music comes from the `immich-memories-music` package on PyPI (28 full-mix tracks of
about 30 s in five moods, generated with the ACE-Step model, 48 kHz stereo opus, MIT;
`pip install immich-memories-music`); each mood's tracks are joined into one recording of about
3 minutes. Without the package the recordings are rendered from `tj.data.synth` compositions
instead, and the JSON says which.

Stages, each over the whole folder, medians of `--repeats` runs with the variants of a stage
run in turn (the machine is shared), compilation timed apart:
- decode: `tj.data.load_audio` (libsndfile + soxr HQ to the model's rate, mono), one thread and
  in the tagger's pool of threads; peer: `librosa.load` (one thread).
- features: the model's log-mel front end alone (`frontend.log_mel`), jitted, in the tagger's
  batches; peer: `librosa.feature.melspectrogram` + `librosa.power_to_db` on batches of 32.
- model: the whole forward pass (log-mel, network, head; probabilities and embedding), jitted, at
  the tagger's batch size and the `--batch-sizes` sweep; peer: one chunk per call (batch 1).
- end to end: `Tagger.predict` over the folder (decoding in threads ahead of the model);
  peer: one file at a time, decoded then tagged with no overlap and its own padded batches.
Ratios are tagjax over peer (above 1: tagjax is faster).
"""

import argparse
import concurrent.futures
import json
import os
import platform
import statistics
import sys
import time

import numpy as np
import soundfile
import soxr

LIBROSA_BATCH = 32
RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
FORMATS = (  # (extension, soundfile format, subtype, sample rate) of the long recordings
    ("mp3", "MP3", "MPEG_LAYER_III", 44100),
    ("flac", "FLAC", "PCM_16", 44100),
    ("ogg", "OGG", "VORBIS", 44100),
    ("wav", "WAV", "PCM_16", 48000),
    ("opus", "OGG", "OPUS", 48000),
)


# ----------------------------------------------------------------------------------------------
# The folder


def _clips_by_group() -> tuple[dict[str, list[str]], str]:
    """Groups of audio files to join into recordings, and where they come from."""
    try:
        import immich_memories_music
    except ImportError:
        return {}, "synth"
    root = immich_memories_music.tracks_dir()
    groups = {mood: sorted(os.path.join(root, mood, name)
                           for name in os.listdir(os.path.join(root, mood)))
              for mood in sorted(os.listdir(root)) if os.path.isdir(os.path.join(root, mood))}
    return groups, "immich-memories-music (ACE-Step generated full mixes, MIT)"


def _synth_recording(seed: int, seconds: float, sr: int) -> np.ndarray:
    from tagjax.data import synth

    midi, _ = synth.compose(seed, seconds)
    mono = synth.render(midi, sr=sr)
    return np.stack([mono, mono], axis=1)


def make_folder(folder: str) -> dict:
    """Writes the benchmark's folder of recordings and broken files; returns its manifest."""
    groups, source = _clips_by_group()
    os.makedirs(os.path.join(folder, "recordings"), exist_ok=True)
    os.makedirs(os.path.join(folder, "broken"), exist_ok=True)
    recordings = []
    names = list(groups) if groups else [f"synth{i}" for i in range(len(FORMATS))]
    for i, name in enumerate(names):
        ext, fmt, subtype, sr = FORMATS[i % len(FORMATS)]
        if groups:
            parts = []
            for clip in groups[name]:
                audio, clip_sr = soundfile.read(clip, dtype="float32", always_2d=True)
                parts.append(soxr.resample(audio, clip_sr, sr) if clip_sr != sr else audio)
            audio = np.concatenate(parts)
        else:
            audio = _synth_recording(1000 + i, 150.0, sr)
        path = os.path.join(folder, "recordings", f"{name}.{ext}")
        with soundfile.SoundFile(path, "w", sr, audio.shape[1], format=fmt,
                                 subtype=subtype) as f:
            # libsndfile 1.2.2's Vorbis encoder crashes on one very large write; blocks do not.
            for start in range(0, len(audio), 1 << 16):
                f.write(audio[start:start + (1 << 16)])
        recordings.append(path)
    originals = []
    if groups:
        os.makedirs(os.path.join(folder, "clips"), exist_ok=True)
        for clips in groups.values():
            for clip in clips:
                path = os.path.join(folder, "clips", os.path.basename(clip))
                with open(clip, "rb") as src, open(path, "wb") as dst:
                    dst.write(src.read())
                originals.append(path)
    with open(recordings[0], "rb") as f:
        mp3 = f.read()
    with open(os.path.join(folder, "broken", "truncated.mp3"), "wb") as f:
        f.write(mp3[: len(mp3) * 2 // 5])
    with open(os.path.join(folder, "broken", "notes.wav"), "w") as f:
        f.write("These are my notes, not a recording.\n")
    open(os.path.join(folder, "broken", "empty.flac"), "wb").close()
    manifest = {"source": source, "recordings": recordings, "clips": originals,
                "broken": sorted(os.path.join(folder, "broken", name)
                                 for name in ("truncated.mp3", "notes.wav", "empty.flac"))}
    with open(os.path.join(folder, "manifest.json"), "w") as f:
        json.dump(manifest, f, indent=2)
    return manifest


# ----------------------------------------------------------------------------------------------
# Timing


class _Times(list):
    """Wall seconds of the runs of one variant, with the CPU seconds of this process (all its
    threads) in `.cpu`: less sensitive than wall time to other processes on a shared machine."""

    def __init__(self):
        super().__init__()
        self.cpu = []


def _alternated(variants: dict, repeats: int) -> dict[str, _Times]:
    """Times of each of `variants` (name -> function), run in turn `repeats` times, so that
    the load of a shared machine falls on all of them alike."""
    times = {name: _Times() for name in variants}
    for _ in range(repeats):
        for name, fn in variants.items():
            start, start_cpu = time.perf_counter(), time.process_time()
            fn()
            times[name].append(time.perf_counter() - start)
            times[name].cpu.append(time.process_time() - start_cpu)
    return times


def _decode_all(files, sr, workers: int, loader) -> None:
    def load(path):
        try:
            return loader(path, sr)
        except Exception:  # broken files fail in both peers; what they cost is timed
            return None

    if workers == 1:
        for path in files:
            load(path)
        return
    with concurrent.futures.ThreadPoolExecutor(workers) as pool:
        for _ in pool.map(load, files):
            pass


def _tj_load(path, sr):
    from tagjax.data import load_audio

    return load_audio(path, sr=sr)


def _librosa_load(path, sr):
    import librosa

    return librosa.load(path, sr=sr, mono=True)[0]


def _batches(chunks: np.ndarray, batch_size: int) -> list[np.ndarray]:
    """`chunks (n, samples)` in batches of `batch_size`, the last one zero-padded."""
    n = -(-len(chunks) // batch_size) * batch_size
    padded = np.zeros((n, chunks.shape[1]), np.float32)
    padded[: len(chunks)] = chunks
    return [padded[i:i + batch_size] for i in range(0, n, batch_size)]


def _stage(name, times, audio_seconds, peer=None, peer_times=None, compile_s=None):
    seconds = statistics.median(times)
    row = {"stage": name, "seconds": seconds, "seconds_all": list(times),
           "cpu_seconds": statistics.median(times.cpu), "cpu_seconds_all": times.cpu,
           "audio_seconds_per_second": audio_seconds / seconds}
    if compile_s is not None:
        row["compile_seconds"] = compile_s
    if peer is not None:
        peer_seconds = statistics.median(peer_times)
        row.update({"peer": peer, "peer_seconds": peer_seconds,
                    "peer_seconds_all": list(peer_times),
                    "peer_cpu_seconds": statistics.median(peer_times.cpu),
                    "peer_audio_seconds_per_second": audio_seconds / peer_seconds,
                    "speedup_over_peer": peer_seconds / seconds})
    return row


def _compile_seconds(fn, *args) -> float:
    import jax

    start = time.perf_counter()
    jax.block_until_ready(fn(*args))
    return time.perf_counter() - start


def run(args) -> dict:
    import jax
    import librosa

    import tagjax as tj
    from tagjax import chunking, xla_options
    from tagjax import tag as tagging
    from tagjax.data import load_audio

    tagging.quiet_logging()
    folder = args.folder
    manifest_path = os.path.join(folder, "manifest.json")
    if not os.path.exists(manifest_path):
        print(f"making the folder {folder} ...", file=sys.stderr)
        make_folder(folder)
    with open(manifest_path) as f:
        manifest = json.load(f)
    files = tagging.find_audio_files([folder])
    tagger = tj.Tagger.from_workdir(args.workdir, batch_size=args.batch_size,
                                    workers=args.workers)
    sr, repeats, batch_size = tagger.sample_rate, args.repeats, tagger.batch_size

    # What there is to tag: every decodable file and its length; the broken ones named.
    tracks, failures = {}, {}
    for path in files:
        try:
            tracks[path] = load_audio(path, sr=sr)
        except tj.data.AudioDecodeError as error:
            failures[path] = error.reason
    audio_seconds = sum(len(x) for x in tracks.values()) / sr
    chunks = np.concatenate([chunking.chunk_track(x, tagger.chunk_samples, tagger.hop_samples)[0]
                             for x in tracks.values()])
    print(f"{len(tracks)} tracks, {audio_seconds / 60:.1f} min of audio, {len(chunks)} chunks "
          f"of {tagger.chunk_seconds} s, {len(failures)} broken file(s)", file=sys.stderr)
    stages = []

    # Decode and resample.
    pool_name = f"decode ({tagger.workers} threads)"
    times = _alternated({
        "tagjax": lambda: _decode_all(files, sr, 1, _tj_load),
        "librosa": lambda: _decode_all(files, sr, 1, _librosa_load),
        "pool": lambda: _decode_all(files, sr, tagger.workers, _tj_load)}, repeats)
    stages.append(_stage("decode (1 thread)", times["tagjax"], audio_seconds, "librosa.load",
                         times["librosa"]))
    stages.append(_stage(pool_name, times["pool"], audio_seconds, "decode (1 thread)",
                         times["tagjax"]))
    decode_times = times

    # Features: the front end's log-mel alone, on the tagger's batches.
    frontend = tagger.model.frontend
    batches = _batches(chunks, batch_size)
    # librosa's vectorised path; one chunk per call costs it ~20x more in Python overhead.
    librosa_batches = _batches(chunks, LIBROSA_BATCH)
    log_mel = xla_options.jit(lambda v, a: tagger.model.apply(
        v, a, method=lambda module, x: module.frontend.log_mel(x)))
    compile_features = _compile_seconds(log_mel, tagger.variables, batches[0])

    def features():
        jax.block_until_ready([log_mel(tagger.variables, batch) for batch in batches])

    def librosa_features():
        for batch in librosa_batches:
            mel = librosa.feature.melspectrogram(
                y=batch, sr=sr, n_fft=frontend.n_fft, hop_length=frontend.hop_length,
                n_mels=frontend.n_mels, fmin=frontend.fmin, fmax=frontend.fmax,
                htk=frontend.htk, norm=frontend.mel_norm, center=True, pad_mode="constant")
            librosa.power_to_db(mel, top_db=frontend.top_db)

    times = _alternated({"tagjax": features, "librosa": librosa_features}, repeats)
    stages.append(_stage("features (log-mel)", times["tagjax"], audio_seconds,
                         "librosa melspectrogram", times["librosa"], compile_features))
    feature_seconds = statistics.median(times["tagjax"])
    feature_cpu = statistics.median(times["tagjax"].cpu)

    # The model: the whole forward pass (log-mel included) over all chunks, at several batch
    # sizes; the peer is one chunk per call.
    forward = tagging.compiled_forward(tagger.model)
    sizes = sorted({1, batch_size, *args.batch_sizes})
    batched = {size: _batches(chunks, size) for size in sizes}
    compile_model = {size: _compile_seconds(forward, tagger.variables, batched[size][0])
                     for size in sizes}

    def model(size):
        return lambda: jax.block_until_ready(
            [forward(tagger.variables, batch) for batch in batched[size]])

    times = _alternated({size: model(size) for size in sizes}, repeats)
    for size in sizes:
        stages.append(_stage(f"model (batch {size})", times[size], audio_seconds,
                             "model (batch 1)", times[1], compile_model[size]))
    model_seconds = statistics.median(times[batch_size])
    model_cpu = statistics.median(times[batch_size].cpu)

    # End to end, from the files; the peer takes one file at a time with no overlap.
    file_by_file_tagger = tj.Tagger(tagger.model, tagger.variables, tags=tagger.tags,
                                    sample_rate=sr, chunk_seconds=tagger.chunk_seconds,
                                    batch_size=batch_size, workers=1)

    def end_to_end():
        failed = [r for r in tagger.predict(files) if isinstance(r, tagging.TrackFailure)]
        assert len(failed) == len(failures)

    def file_by_file():
        for path in files:
            list(file_by_file_tagger.predict([path]))

    times = _alternated({"tagjax": end_to_end, "peer": file_by_file}, repeats)
    stages.append(_stage(f"end to end (Tagger.predict, batch {batch_size})", times["tagjax"],
                         audio_seconds, "file by file, no overlap", times["peer"]))
    decode_seconds = statistics.median(decode_times["pool"])

    return {
        "benchmark": "tag_throughput",
        "workdir": os.path.abspath(args.workdir), "model_id": tagger.model_id,
        "chunk_seconds": tagger.chunk_seconds, "batch_size": batch_size,
        "workers": tagger.workers, "repeats": repeats,
        "folder": os.path.abspath(folder), "music_source": manifest["source"],
        "tracks": len(tracks), "audio_seconds": audio_seconds, "chunks": len(chunks),
        "formats": sorted({os.path.splitext(p)[1] for p in tracks}),
        "broken_files": failures,
        "split_seconds": {
            "decode": decode_seconds, "features": feature_seconds,
            "model without features": model_seconds - feature_seconds,
            "end to end": statistics.median(times["tagjax"])},
        "split_cpu_seconds": {
            "decode": statistics.median(decode_times["tagjax"].cpu),
            "features": feature_cpu,
            "model without features": model_cpu - feature_cpu,
            "end to end": statistics.median(times["tagjax"].cpu)},
        # On a CPU both compete for the same cores (decoding threads, XLA's intra-op threads),
        # so the stage that costs more CPU time bounds the run.
        "bound_by": "decoding" if statistics.median(decode_times["tagjax"].cpu) > model_cpu
        else "the model",
        "stages": stages,
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(),
                    "python": platform.python_version(), "jax": jax.__version__,
                    "backend": jax.default_backend(), "devices": str(jax.devices())},
    }


def format_table(report: dict) -> str:
    lines = [f"{report['tracks']} tracks, {report['audio_seconds'] / 60:.1f} min of audio "
             f"({report['music_source']}), {len(report['broken_files'])} broken file(s) named and "
             f"skipped; batch {report['batch_size']}, {report['workers']} decoding threads",
             f"{'stage':<40} {'s':>7} {'cpu s':>7} {'audio s/s':>10} {'compile s':>9}  "
             f"{'peer':<26} {'peer s/s':>9} {'ratio':>6}"]
    for row in report["stages"]:
        compile_s = f"{row['compile_seconds']:.2f}" if "compile_seconds" in row else ""
        lines.append(f"{row['stage']:<40} {row['seconds']:>7.2f} {row['cpu_seconds']:>7.2f} "
                     f"{row['audio_seconds_per_second']:>10.1f} {compile_s:>9}  "
                     f"{row.get('peer', ''):<26} "
                     f"{row.get('peer_audio_seconds_per_second', 0):>9.1f} "
                     f"{row.get('speedup_over_peer', 0):>6.2f}")
    for key, label in (("split_seconds", "wall"), ("split_cpu_seconds", "CPU")):
        lines.append(f"one pass, {label} s: "
                     + ", ".join(f"{k} {v:.2f}" for k, v in report[key].items()))
    lines.append(f"bound by {report['bound_by']}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workdir", required=True, help="a training run's work directory")
    parser.add_argument("--folder", default=os.path.join(RESULTS, "tag_folder"),
                        help="the folder of music (made on first use)")
    parser.add_argument("--batch-size", type=int, default=None,
                        help="chunks per model call for the tagger (default: the Tagger's)")
    parser.add_argument("--batch-sizes", type=lambda text: [int(b) for b in text.split(",")],
                        default=[2, 4, 8, 16, 32], help="batch sizes of the model stage's sweep")
    parser.add_argument("--workers", type=int, default=None,
                        help="decoding threads (default: the tagger's, up to 4)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default=os.path.join(RESULTS, "tag_throughput.json"))
    args = parser.parse_args()
    report = run(args)
    print(format_table(report))
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(report, f, indent=2)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
