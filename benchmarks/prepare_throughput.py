"""Data set preparation throughput: Apache Beam's DirectRunner against `DecodePool`.

Both build the same `folder` data set (generated mp3 clips like MTG-Jamendo's: 44.1 kHz stereo,
decoded, resampled to 16 kHz mono and written as ArrayRecord by TFDS) with the same number of
worker processes: once through the local path (`DecodePool`), once as a Beam pipeline on the
DirectRunner (`--direct_running_mode=multi_processing`). Each is timed on a few clips and on
many, so the table gives the whole build's clips/s, the clips/s between the two sizes (the rate
once started) and the fixed cost (starting the workers; for Beam also building its graph). The
two builds' examples are checked to be identical. Encoding mp3s takes longer than decoding them,
so `--unique` clips are encoded and the others are hard links to them (decoded all the same).

    pip install -e ".[beam]"
    python benchmarks/prepare_throughput.py [--clips 96] [--small 12] [--unique 24]
        [--seconds 20] [--workers 2] [--out benchmarks/results/prepare_throughput.json]
"""

import argparse
import json
import os
import platform
import tempfile
import time

import numpy as np
import soundfile

from tagjax.data import get_builder

SAMPLE_RATE = 44100  # MTG-Jamendo's mp3s


def _clip(seconds: float, seed: int) -> np.ndarray:
    """`(frames, 2)` float32: a few decaying partials and some noise, like a short piece."""
    rng = np.random.default_rng(seed)
    t = np.arange(round(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    x = sum(np.sin(2 * np.pi * f * t) * np.exp(-((t * 2) % 1.0) * 3) / (k + 1)
            for k, f in enumerate(rng.uniform(80, 2000, 6)))
    x = 0.2 * x + 0.02 * rng.standard_normal(len(t))
    return np.stack([x, np.roll(x, 37)], axis=1).astype(np.float32)


def _write_folder(root: str, clips: int, unique: int, seconds: float,
                  sizes: list[int]) -> dict[int, str]:
    """`clips` mp3 files (`unique` encoded, the others hard links to them) and, per size, a CSV
    listing the first `size` of them."""
    for i in range(clips):
        path = os.path.join(root, f"{i:05d}.mp3")
        if i < unique:
            soundfile.write(path, _clip(seconds, i), SAMPLE_RATE, format="MP3")
        else:
            os.link(os.path.join(root, f"{i % unique:05d}.mp3"), path)
    csvs = {}
    for size in sizes:
        csvs[size] = os.path.join(root, f"tags-{size}.csv")
        with open(csvs[size], "w") as file:
            file.write("path,tags\n")
            file.writelines(f"{i:05d}.mp3,{'odd' if i % 2 else 'even'}\n" for i in range(size))
    return csvs


def _build(root, csv_path, data_dir, workers, beam):
    kwargs = {"beam_options": ""} if beam else {}  # "": the DirectRunner in `workers` processes
    start = time.perf_counter()
    builder = get_builder("folder", directory=root, csv_path=csv_path, data_dir=data_dir,
                          decode_workers=workers, **kwargs)
    return builder, time.perf_counter() - start


def _table(result: dict) -> str:
    """The result as a Markdown table, with what was measured above it."""
    small, clips = result["small"], result["clips"]
    workers = result["rows"][0]["workers"]
    lines = [f"{clips} clips of {result['clip_seconds']:g} s ({result['clip_format']}), "
             f"{workers} worker processes; identical examples: {result['identical_examples']}; "
             f"load average at the end {result['machine']['load_average_at_end'][0]:.1f} on "
             f"{result['machine']['cpus']} CPUs", "",
             f"| method | {small} clips (s) | {clips} clips (s) | clips/s (whole build) "
             "| clips/s (once started) | fixed cost (s) |",
             "|---|---|---|---|---|---|"]
    for row in result["rows"]:
        lines.append(f"| {row['method']} | {row['seconds'][str(small)]} | "
                     f"{row['seconds'][str(clips)]} | {row['clips_per_s']} | "
                     f"{row['steady_clips_per_s'] or 'n/a'} | {row['fixed_cost_s'] or 'n/a'} |")
    return "\n".join(lines) + "\n"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=int, default=96)
    parser.add_argument("--small", type=int, default=12, help="clips of the small build")
    parser.add_argument("--unique", type=int, default=24, help="clips encoded (see above)")
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results",
                                                      "prepare_throughput.json"))
    args = parser.parse_args()
    os.environ.pop("TAGJAX_BEAM_OPTIONS", None)
    sizes = [args.small, args.clips]

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        root = os.path.join(tmp, "clips")
        os.makedirs(root)
        csvs = _write_folder(root, args.clips, args.unique, args.seconds, sizes)
        for method, beam in (("DecodePool", False), ("Beam DirectRunner", True)):
            times, builders = {}, {}
            for size in sizes:
                builders[size], times[size] = _build(
                    root, csvs[size], os.path.join(tmp, f"tfds-{method[:4]}-{size}"),
                    args.workers, beam)
            small, large = sizes
            # The rate between the two sizes; none when the difference is lost in the noise.
            extra = times[large] - times[small]
            steady = (large - small) / extra if extra > 0 else None
            rows.append({
                "method": method,
                "workers": args.workers,
                "seconds": {str(size): round(times[size], 2) for size in sizes},
                "clips_per_s": round(large / times[large], 2),
                "steady_clips_per_s": None if steady is None else round(steady, 2),
                "fixed_cost_s": None if steady is None else round(times[small] - small / steady,
                                                                  2),
                "builder": builders[large],
            })
            print(f"{method}: {times}", flush=True)
        pool, beam = rows[0].pop("builder"), rows[1].pop("builder")
        source_pool, source_beam = pool.as_data_source()["train"], beam.as_data_source()["train"]
        by_id = {source_beam[i]["id"]: source_beam[i]["audio"] for i in range(len(source_beam))}
        identical = len(by_id) == len(source_pool) and all(
            np.array_equal(by_id[source_pool[i]["id"]], source_pool[i]["audio"])
            for i in range(len(source_pool)))

    result = {
        "clips": args.clips, "small": args.small, "unique_clips": args.unique,
        "clip_seconds": args.seconds,
        "clip_format": f"mp3, {SAMPLE_RATE} Hz stereo -> 16 kHz mono int16",
        "identical_examples": identical, "rows": rows,
        "machine": {"cpus": os.cpu_count(), "load_average_at_end": os.getloadavg(),
                    "python": platform.python_version()},
    }
    table = _table(result)
    print("\n" + table)
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as file:
        json.dump(result, file, indent=2)
    with open(os.path.splitext(args.out)[0] + ".md", "w") as file:
        file.write(table)
    print(f"\nwritten to {args.out} and its .md")


if __name__ == "__main__":
    main()
