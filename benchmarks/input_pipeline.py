"""The input pipeline's throughput, and audio decoding against librosa.load.

1. Clips per second that `tj.data.train_loader` delivers from a prepared `synth` data set (no
   decoding: the int16 audio is read from ArrayRecord, cropped, converted and batched), for
   batches of 16 crops of 3 s and 8 s with 0 and 2 worker processes. The peers in the same run:
   a plain Python loop doing the same work (random index, read, crop, convert, stack) and, if
   given with `--train-clips-per-s`, the training step's appetite (clips per second it consumes,
   from the training benchmark). Start-up (first batch, including spawning workers) is reported
   apart from the steady rate, which is the median over repeats.
2. Seconds of audio decoded and resampled (to 16 kHz mono) per second by `tj.data.load_audio`
   and by `librosa.load` on the same 30 s, 44.1 kHz stereo wav, flac and mp3 files written by
   this script; medians over repeats, and the ratio of the two rates.

    python benchmarks/input_pipeline.py [--config auto|tiny|default] [--data-dir DIR]
        [--train-clips-per-s N] [--repeats 5] [--out benchmarks/results/input_pipeline.json]

`--config auto` uses synth's `default` config if it is already prepared in the data dir, else
`tiny` (built on first use).
"""

import argparse
import json
import os
import statistics
import tempfile
import time

import librosa
import numpy as np
import soundfile

from tagjax.data import get_source, load_audio, schema, train_loader

BATCH_SIZE = 16
CROP_SECONDS = (3.0, 8.0)
WORKER_COUNTS = (0, 2)
DECODE_SECONDS, DECODE_RATE = 30.0, 44100
FORMATS = (("wav", "WAV", "PCM_16"), ("flac", "FLAC", "PCM_16"), ("mp3", "MP3", "MPEG_LAYER_III"))


def _synth_config(requested: str, data_dir: str | None) -> str:
    if requested != "auto":
        return requested
    import tensorflow_datasets as tfds

    from tagjax.data import synth_builder  # noqa: F401 (registers synth)

    prepared = tfds.builder("synth/default", data_dir=data_dir).is_prepared()
    return "default" if prepared else "tiny"


def _pipeline_rate(source, crop_samples, worker_count, batches_per_repeat, repeats):
    """(first-batch seconds, median clips/s over repeats) of `train_loader`."""
    loader = train_loader(
        source, batch_size=BATCH_SIZE, crop_samples=crop_samples, seed=0,
        worker_count=worker_count, shard_index=0, shard_count=1,
    )  # fmt: skip
    start = time.perf_counter()
    iterator = iter(loader)
    next(iterator)
    startup = time.perf_counter() - start
    rates = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(batches_per_repeat):
            next(iterator)
        rates.append(batches_per_repeat * BATCH_SIZE / (time.perf_counter() - start))
    iterator.close()
    return startup, statistics.median(rates)


def _plain_loop_rate(source, crop_samples, batches_per_repeat, repeats):
    """Median clips/s of the same work done by a plain loop in this process."""
    rng = np.random.default_rng(0)

    def batch():
        audio, labels = [], []
        for index in rng.integers(len(source), size=BATCH_SIZE):
            example = source[int(index)]
            pcm = example["audio"]
            start = int(rng.integers(max(len(pcm) - crop_samples, 0) + 1))
            crop = pcm[start : start + crop_samples]
            audio.append(schema.int16_to_audio(np.pad(crop, (0, crop_samples - len(crop)))))
            labels.append(example["labels"].astype(np.float32))
        return np.stack(audio), np.stack(labels)

    rates = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(batches_per_repeat):
            batch()
        rates.append(batches_per_repeat * BATCH_SIZE / (time.perf_counter() - start))
    return statistics.median(rates)


def _decode_rates(directory, repeats):
    rng = np.random.default_rng(0)
    t = np.arange(int(DECODE_SECONDS * DECODE_RATE)) / DECODE_RATE
    tone = sum(np.sin(2 * np.pi * 220.0 * k * t) / k for k in range(1, 9))
    left = 0.2 * tone + 0.02 * rng.standard_normal(len(t))
    stereo = np.stack([left, np.roll(left, 441)], axis=1).astype(np.float32)
    rows = []
    for extension, fmt, subtype in FORMATS:
        path = os.path.join(directory, f"clip.{extension}")
        soundfile.write(path, stereo, DECODE_RATE, format=fmt, subtype=subtype)
        ours, theirs = [], []
        for _ in range(repeats):
            start = time.perf_counter()
            y_ours = load_audio(path, sr=schema.SAMPLE_RATE)
            ours.append(time.perf_counter() - start)
            start = time.perf_counter()
            y_theirs, _ = librosa.load(path, sr=schema.SAMPLE_RATE, mono=True)
            theirs.append(time.perf_counter() - start)
        seconds = len(y_ours) / schema.SAMPLE_RATE
        rows.append({
            "format": extension,
            "audio_seconds": seconds,
            "tagjax_audio_s_per_s": seconds / statistics.median(ours),
            "librosa_audio_s_per_s": seconds / statistics.median(theirs),
            "tagjax_over_librosa": statistics.median(theirs) / statistics.median(ours),
            "max_abs_diff": float(np.max(np.abs(y_ours - y_theirs))),
        })  # fmt: skip
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="auto", choices=("auto", "tiny", "default"))
    parser.add_argument("--data-dir", default=None, help="TFDS data dir (TFDS's default if unset)")
    parser.add_argument("--train-clips-per-s", type=float, default=None,
                        help="the training step's appetite, from the training benchmark")
    parser.add_argument("--batches", type=int, default=20, help="batches per timed repeat")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results",
                                                      "input_pipeline.json"))
    args = parser.parse_args()

    config = _synth_config(args.config, args.data_dir)
    source, _ = get_source("synth", "train", config=config, data_dir=args.data_dir)
    pipeline_rows = []
    for crop_seconds in CROP_SECONDS:
        crop_samples = round(crop_seconds * schema.SAMPLE_RATE)
        loop = _plain_loop_rate(source, crop_samples, args.batches, args.repeats)
        for worker_count in WORKER_COUNTS:
            startup, rate = _pipeline_rate(
                source, crop_samples, worker_count, args.batches, args.repeats
            )
            pipeline_rows.append({
                "crop_seconds": crop_seconds,
                "worker_count": worker_count,
                "startup_s": startup,
                "clips_per_s": rate,
                "plain_loop_clips_per_s": loop,
                "over_plain_loop": rate / loop,
                "over_train_appetite": (
                    None if args.train_clips_per_s is None else rate / args.train_clips_per_s
                ),
            })  # fmt: skip
    with tempfile.TemporaryDirectory() as directory:
        decode_rows = _decode_rates(directory, args.repeats)

    print(f"{os.cpu_count()} cores visible; synth/{config}: {len(source)} training clips; "
          f"batch {BATCH_SIZE}; medians of {args.repeats} repeats of {args.batches} batches")
    print(f"{'crop s':>6} {'workers':>7} {'start-up s':>10} {'clips/s':>9} "
          f"{'plain loop':>10} {'ratio':>6} {'/ appetite':>10}")
    for row in pipeline_rows:
        appetite = row["over_train_appetite"]
        print(f"{row['crop_seconds']:>6.0f} {row['worker_count']:>7d} {row['startup_s']:>10.2f} "
              f"{row['clips_per_s']:>9.0f} {row['plain_loop_clips_per_s']:>10.0f} "
              f"{row['over_plain_loop']:>6.2f} "
              f"{'n/a' if appetite is None else f'{appetite:.1f}':>10}")
    print(f"\ndecode + resample to 16 kHz mono, {DECODE_SECONDS:.0f} s at {DECODE_RATE} Hz stereo "
          "(audio seconds per second)")
    print(f"{'format':<6} {'tagjax':>9} {'librosa':>9} {'ratio':>6} {'max |diff|':>10}")
    for row in decode_rows:
        print(f"{row['format']:<6} {row['tagjax_audio_s_per_s']:>9.0f} "
              f"{row['librosa_audio_s_per_s']:>9.0f} {row['tagjax_over_librosa']:>6.2f} "
              f"{row['max_abs_diff']:>10.1e}")
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as file:
        json.dump({
            "synth_config": config, "train_clips": len(source), "batch_size": BATCH_SIZE,
            "repeats": args.repeats, "batches_per_repeat": args.batches,
            "train_clips_per_s": args.train_clips_per_s, "cpu_count": os.cpu_count(),
            "pipeline": pipeline_rows, "decode": decode_rows,
        }, file, indent=1)  # fmt: skip
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
